//! `directory-sync`: keep a folder of markdown files and a database in step.
//!
//! Exit codes: 0 all done, 1 some items failed, 2 usage, configuration or
//! fatal errors (one line on stderr).

use crate::cli::{Cli, Command};
use crate::commands::dashboard::dashboard;
use crate::commands::folder_job::run_job;
use crate::commands::jobs::jobs;
use crate::commands::search::search;
use crate::commands::serve::serve;
use crate::commands::status::status;
use crate::commands::tool::tool;
use crate::commands::watch::watch;
use crate::commands::worker::worker;
use crate::display::Output;
use crate::open::{close_databases, folder_or_cwd};
use anyhow::Result;
use clap::Parser;
use directory_sync::{Direction, ExportInput, FolderJob, ImportInput, SyncInput};
use std::time::Duration;

/// `println!` that ends the process quietly when stdout is closed (`| head`):
/// exit 0, the reader has what it wanted; never a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(err) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::closed_output(&err);
        }
    }};
}

/// `eprintln!` that never panics: a closed stderr loses the line, nothing else.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Stdout is gone: a closed pipe ends the command quietly, any other
/// failure to write says so and exits 2.
fn closed_output(err: &std::io::Error) -> ! {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    errln!("directory-sync: cannot write to standard output: {err}");
    std::process::exit(2);
}

mod cli;
mod commands;
mod display;
mod open;
mod stop;

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let outcome = runtime.block_on(run(cli));
    runtime.block_on(close_databases());
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            errln!("directory-sync: {}", describe(&err));
            std::process::exit(2);
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// line already holds (wrapped database errors repeat their source's).
fn describe(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

async fn run(cli: Cli) -> Result<i32> {
    let output = Output { json: cli.json, quiet: cli.quiet };
    match cli.command {
        Command::Sync(job) => {
            let allow_mass_delete = job.allow_mass_delete;
            let work = FolderJob::Sync(SyncInput { folder: None, direction: Direction::Both, allow_mass_delete });
            run_job(cli.database.as_deref(), &job, work, output).await
        }
        Command::Import { job, files } => {
            let paths = (!files.is_empty()).then_some(files);
            let work = FolderJob::Import(ImportInput { folder: None, paths, allow_mass_delete: job.allow_mass_delete });
            run_job(cli.database.as_deref(), &job, work, output).await
        }
        Command::Export { job, only } => {
            let work = FolderJob::Export(ExportInput { folder: None, entity_types: only });
            run_job(cli.database.as_deref(), &job, work, output).await
        }
        Command::Watch(job) => watch(cli.database.as_deref(), &job, output).await,
        Command::Status { path } => status(cli.database.as_deref(), &folder_or_cwd(path)?, output).await,
        Command::Search { query, mode, limit, path } => {
            search(cli.database.as_deref(), &folder_or_cwd(path)?, &query, mode, limit, output).await
        }
        Command::Jobs { action, path } => jobs(cli.database.as_deref(), &folder_or_cwd(path)?, action, output).await,
        Command::Tool { name, arguments, options } => {
            tool(cli.database.as_deref(), &options, &name, &arguments, output).await
        }
        Command::Serve { http, token, folders, no_worker, options } => {
            serve(cli.database.as_deref(), &options, &folders, http, token, !no_worker).await
        }
        Command::Dashboard { addr, path, token } => {
            dashboard(cli.database.as_deref(), &folder_or_cwd(path)?, &addr, token).await
        }
        Command::Worker { concurrency, lease_secs, options } => {
            let lease = Duration::from_secs(lease_secs);
            worker(cli.database.as_deref(), &options, concurrency, lease).await
        }
    }
}
