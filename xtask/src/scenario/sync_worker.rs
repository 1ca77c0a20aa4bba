//! Driving the real `directory-sync` binary from scenarios: queueing a
//! sync, starting and stopping `worker` processes, and waiting for their
//! jobs through the database.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use directory_sync::Database;
use job_queue::{JobFilter, JobId, JobState};

use crate::bench::sync::TYPES;

/// Short, so a dead worker's job is claimed again quickly.
const LEASE_SECS: &str = "2";

/// The binary, and a log its workers' stderr goes to.
pub struct SyncBinary {
    pub path: PathBuf,
    pub log: PathBuf,
}

impl SyncBinary {
    /// Builds the binary (in xtask's profile); workers log to `log`.
    pub fn build(log: PathBuf) -> Result<Self> {
        Ok(Self { path: super::workspace_binary("directory-sync", "directory-sync")?, log })
    }

    /// Queues a sync of `folder` with `sync --detach` and returns its job.
    pub fn enqueue_sync(&self, url: &str, folder: &Path) -> Result<JobId> {
        let output = Command::new(&self.path)
            .args(["--json", "--database", url, "sync", "--detach", "--entity-types", &TYPES.join(",")])
            .arg(folder)
            .output()?;
        anyhow::ensure!(output.status.success(), "sync --detach failed: {}", String::from_utf8_lossy(&output.stderr));
        let queued: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let id = queued["job_id"].as_str().context("sync --detach printed no job_id")?;
        Ok(id.parse()?)
    }

    /// Starts a worker with a short lease.
    pub fn spawn_worker(&self, url: &str) -> Result<WorkerProcess> {
        let mut log = std::fs::File::options().create(true).append(true).open(&self.log)?;
        let mut child = Command::new(&self.path)
            .args(["--database", url, "worker", "--lease-secs", LEASE_SECS])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting a worker")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (ready, ready_seen) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("worker running") {
                    let _ = ready.send(());
                }
                let _ = writeln!(log, "{line}");
            }
        });
        Ok(WorkerProcess { child, ready: ready_seen })
    }

    /// The end of the workers' log, after a failure.
    pub fn print_log_tail(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(20)..] {
            println!("     | {line}");
        }
    }
}

/// A `directory-sync worker` child; its stderr goes to the log.
pub struct WorkerProcess {
    pub child: Child,
    /// Fires once the worker has said it runs (its signal handlers are in place).
    ready: std::sync::mpsc::Receiver<()>,
}

impl WorkerProcess {
    /// Waits until it runs, sends SIGINT and waits for it to exit.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        self.ready.recv_timeout(Duration::from_secs(60)).context("the worker never said it runs")?;
        Command::new("kill").args(["-INT", &self.child.id().to_string()]).status()?;
        Ok(self.child.wait()?)
    }
}

/// The jobs worker `pid` is running and how far they got, or `None` if it runs none.
pub async fn moment_of(db: &Database, pid: u32) -> Result<Option<String>> {
    let filter = JobFilter { state: Some(JobState::Running), limit: Some(1000), ..JobFilter::default() };
    let suffix = format!(":{pid}");
    let running: Vec<String> = db
        .queue
        .list(&filter)
        .await?
        .into_iter()
        .filter(|job| job.worker_id.as_deref().is_some_and(|w| w.ends_with(&suffix)))
        .map(|job| format!("{} at {:?}", job.job_type, job.progress.message))
        .collect();
    Ok((!running.is_empty()).then(|| running.join(", ")))
}

/// Whether a sync job is running and has reported progress: the moment an
/// outage lands mid-job rather than before the work starts.
pub async fn sync_in_progress(db: &Database) -> Result<bool> {
    let filter = JobFilter {
        state: Some(JobState::Running),
        job_type: Some(directory_sync::SYNC_JOB.to_owned()),
        ..JobFilter::default()
    };
    Ok(db.queue.list(&filter).await?.iter().any(|job| !job.progress.message.is_empty()))
}

/// Waits for `job` to end and then for the jobs it queued (embedding).
pub async fn wait_until_idle(db: &Database, job: JobId, timeout: Duration) -> Result<JobState> {
    let deadline = Instant::now() + timeout;
    let state = db.queue.wait(job, timeout).await?.state;
    loop {
        if db.queue.unfinished(None).await? == 0 {
            return Ok(state);
        }
        anyhow::ensure!(Instant::now() < deadline, "jobs still pending after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until worker `pid` runs `job` (true), or the job has ended (false).
pub async fn wait_for_claim(db: &Database, job: JobId, pid: u32) -> Result<bool> {
    let suffix = format!(":{pid}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current = db.queue.get(job).await?.context("the sync job disappeared")?;
        let ours =
            current.state == JobState::Running && current.worker_id.as_deref().is_some_and(|w| w.ends_with(&suffix));
        if ours || current.state.is_terminal() {
            return Ok(ours);
        }
        anyhow::ensure!(Instant::now() < deadline, "worker {pid} never claimed job {job}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
