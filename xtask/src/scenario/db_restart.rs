//! `db-restart`: PostgreSQL goes down for a few seconds in the middle of a
//! sync, twice: once under a separate `directory-sync worker` process, once
//! under the foreground `directory-sync sync` command. The worker must
//! survive, reconnect and finish the job; the command must say that the
//! database is unreachable, wait for it and finish, not hang or die. Then,
//! with the server down, commands must fail at once with a clear message
//! and exit code 2. Afterwards folder and database must agree.
//!
//! The server is the one behind `DATABASE_URL`, stopped and started with
//! Debian's `pg_ctlcluster VERSION main` (or `SCENARIO_PG_CTL`, a command
//! given `stop` or `start` as its last argument). Needs permission to do so.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use directory_sync::{Database, layout::Layout};
use job_queue::JobState;

use super::sync_worker::{self, SyncBinary};
use super::{Checks, agreement};
use crate::bench::sync::{TYPES, generate, note_path, note_text};

const OUTAGE: Duration = Duration::from_secs(4);

pub fn run(quick: bool) -> Result<()> {
    let server = std::env::var("DATABASE_URL").context("db-restart needs DATABASE_URL (PostgreSQL)")?;
    let notes = if quick { 2_000 } else { 10_000 };
    let pg = PgControl::detect()?;
    let scratch = tempfile::tempdir()?;
    let binary = SyncBinary::build(scratch.path().join("workers.log"))?;
    let mut checks = Checks::default();
    let runtime = tokio::runtime::Runtime::new()?;
    let checks_ref = &mut checks;
    runtime.block_on(crate::scratch::with_scratch_pg(&server, "scenario_restart", |url| async move {
        let folder = scratch.path().join("vault");
        generate(&folder, notes)?;
        let db = Database::open(&url).await?;
        let layout = Layout::new("note", TYPES.map(str::to_owned).to_vec());
        under_worker(&binary, &pg, &db, &url, &folder, checks_ref).await?;
        agree(&db, &folder, &layout, "after the worker's outage", checks_ref).await?;
        for i in 0..notes {
            std::fs::write(folder.join(note_path(i)), note_text(i, "edited before the second outage\n\n"))?;
        }
        under_command(&binary, &pg, &db, &url, &folder, checks_ref).await?;
        agree(&db, &folder, &layout, "after the command's outage", checks_ref).await?;
        while_down(&binary, &pg, &url, &folder, checks_ref)?;
        Ok(())
    }))?;
    checks.finish()
}

async fn under_worker(
    binary: &SyncBinary,
    pg: &PgControl,
    db: &Database,
    url: &str,
    folder: &Path,
    checks: &mut Checks,
) -> Result<()> {
    let job = binary.enqueue_sync(url, folder)?;
    let mut worker = binary.spawn_worker(url)?;
    sync_worker::wait_for_claim(db, job, worker.child.id()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sync_worker::sync_in_progress(db).await? {
        ensure!(Instant::now() < deadline, "the worker's sync job reported no progress in 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let moment = sync_worker::moment_of(db, worker.child.id()).await?;
    println!("     worker: PostgreSQL stopped for {OUTAGE:?} during {}", moment.as_deref().unwrap_or("no job"));
    pg.outage(OUTAGE)?;
    let back = Instant::now();
    let finished = sync_worker::wait_until_idle(db, job, Duration::from_secs(300)).await?;
    println!("     worker: every job done {:.1?} after the server came back", back.elapsed());
    checks.check(finished == JobState::Completed, &format!("the worker's sync job {}", finished.as_str()));
    checks.check(worker.child.try_wait()?.is_none(), "the worker survived the outage");
    let stopped = worker.stop()?;
    checks.check(stopped.success(), &format!("the worker stopped cleanly afterwards ({stopped})"));
    if !stopped.success() {
        binary.print_log_tail();
    }
    Ok(())
}

async fn under_command(
    binary: &SyncBinary,
    pg: &PgControl,
    db: &Database,
    url: &str,
    folder: &Path,
    checks: &mut Checks,
) -> Result<()> {
    let started = Instant::now();
    let mut command = Command::new(&binary.path)
        .args(["--json", "--database", url, "sync"])
        .arg(folder)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = read_all_later(command.stdout.take().context("no stdout")?);
    let stderr = read_all_later(command.stderr.take().context("no stderr")?);
    // The outage starts once the command's sync job is under way.
    while !sync_worker::sync_in_progress(db).await? {
        ensure!(command.try_wait()?.is_none(), "the sync command ended before the outage; make the folder bigger");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("     command: PostgreSQL stopped for {OUTAGE:?} while `directory-sync sync` runs");
    pg.outage(OUTAGE)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = command.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            command.kill()?;
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (stdout, stderr) = (join(stdout), join(stderr));
    println!("     command: ended {:.1?} after it started; it said:", started.elapsed());
    for line in stderr.lines().filter(|line| !line.starts_with("Importing") && !line.starts_with("Exporting")) {
        println!("     | {line}");
    }
    checks.check(status.is_some(), "the sync command did not hang");
    checks.check(status.is_some_and(|s| s.success()), &format!("the sync command succeeded ({status:?})"));
    checks.check(
        stderr.contains("database unreachable") && stderr.contains("database reachable again"),
        "the command said the database was unreachable, and when it was back",
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
    checks.check(
        summary["failed"].as_array().is_some_and(Vec::is_empty),
        &format!("its summary lists no failed file ({})", summary["failed"]),
    );
    Ok(())
}

/// With the server down, a command fails fast and names the problem.
fn while_down(binary: &SyncBinary, pg: &PgControl, url: &str, folder: &Path, checks: &mut Checks) -> Result<()> {
    pg.stop()?;
    for args in [&["status"][..], &["sync"][..]] {
        let started = Instant::now();
        let output = Command::new(&binary.path).args(["--database", url]).args(args).arg(folder).output()?;
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or_default().to_owned();
        checks.check(
            output.status.code() == Some(2) && first.contains("opening the database") && took < Duration::from_secs(40),
            &format!(
                "`{}` with the server down: exit {:?} after {took:.1?}: {first}",
                args.join(" "),
                output.status.code()
            ),
        );
    }
    pg.start()
}

async fn agree(db: &Database, folder: &Path, layout: &Layout, when: &str, checks: &mut Checks) -> Result<()> {
    let found = agreement::compare(db, folder, layout).await?;
    checks.check(
        found.problems.is_empty(),
        &format!(
            "{when}: {} files and {} entities agree, sync state too ({})",
            found.files,
            found.entities,
            found.sample()
        ),
    );
    checks.check(found.unfinished_jobs() == 0, &format!("{when}: every job completed ({})", found.jobs_summary()));
    Ok(())
}

fn read_all_later(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

fn join(reader: std::thread::JoinHandle<String>) -> String {
    reader.join().unwrap_or_default()
}

/// Stops and starts the server; starts it again if dropped while stopped.
struct PgControl {
    command: Vec<String>,
    stopped: std::cell::Cell<bool>,
}

impl PgControl {
    fn detect() -> Result<Self> {
        let command = if let Ok(given) = std::env::var("SCENARIO_PG_CTL") {
            given.split_whitespace().map(str::to_owned).collect()
        } else {
            let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
                .context("no /etc/postgresql: set SCENARIO_PG_CTL")?
                .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            let [version] = versions.as_slice() else {
                bail!("PostgreSQL versions {versions:?} in /etc/postgresql: set SCENARIO_PG_CTL")
            };
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"].map(str::to_owned).to_vec()
        };
        ensure!(!command.is_empty(), "SCENARIO_PG_CTL is empty");
        Ok(Self { command, stopped: std::cell::Cell::new(false) })
    }

    fn run(&self, action: &str) -> Result<()> {
        let status = Command::new(&self.command[0]).args(&self.command[1..]).arg(action).status()?;
        ensure!(status.success(), "`{} {action}` failed: {status}", self.command.join(" "));
        Ok(())
    }

    fn stop(&self) -> Result<()> {
        self.stopped.set(true);
        self.run("stop")
    }

    fn start(&self) -> Result<()> {
        self.run("start")?;
        self.stopped.set(false);
        Ok(())
    }

    /// Down for `down_for`, then up again (the start waits until it accepts connections).
    fn outage(&self, down_for: Duration) -> Result<()> {
        self.stop()?;
        std::thread::sleep(down_for);
        self.start()
    }
}

impl Drop for PgControl {
    fn drop(&mut self) {
        if self.stopped.get() {
            let _ = self.run("start");
        }
    }
}
