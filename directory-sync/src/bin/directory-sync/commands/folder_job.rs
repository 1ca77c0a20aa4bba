//! `sync`, `import` and `export`: queue the folder's job, run it on an
//! in-process worker (or leave it to workers with `--detach`) and follow it
//! to its summary.

use crate::cli::JobArgs;
use crate::display::{Display, Output, furthest, print_summary, reached, through_outages};
use crate::open::{command_worker_config, existing_folder, folder_config, open_database, registry_for};
use crate::stop::{COMMAND_SHUTDOWN, STOP_GRACE, interrupted, stop_signal};
use anyhow::{Context, Result, bail};
use batch_core::CancellationToken;
use directory_sync::{Database, DirectorySyncPlugin, FolderJob, Folders, SyncSummary};
use embedding::EMBED_JOB;
use job_queue::{JobEventKind, JobId, JobState, WorkerConfig};
use serde_json::json;
use std::time::{Duration, Instant};

pub(crate) async fn run_job(database: Option<&str>, job: &JobArgs, work: FolderJob, output: Output) -> Result<i32> {
    let db = open_database(database, &existing_folder(&job.path)?).await?;
    let config = folder_config(job, &db, output).await?;
    let plugin = DirectorySyncPlugin::new(config.clone(), db.store.clone(), db.state.clone(), db.queue.clone())?;
    let new_job = plugin.job(work);
    let mut events = db.queue.subscribe();
    let id = db.queue.enqueue_many(vec![new_job]).await?.remove(0);
    if job.detach {
        if output.json {
            outln!("{}", json!({ "job_id": id }));
        } else {
            outln!("queued job {id}");
        }
        return Ok(0);
    }
    let registry = registry_for(&db, Folders::Fixed(plugin.syncer().clone())).await?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(db.queue.worker(registry, command_worker_config(Some(&plugin))).run(shutdown.clone()));
    let (interrupt, queue, stop) = (shutdown.clone(), db.queue.clone(), stop_signal()?);
    let stopped = stop.token.clone();
    let stopping = stop.wait();
    tokio::spawn(async move {
        stopping.await;
        // Bounded: on a full disk or a lost database the cancel itself may never get through.
        let _ = tokio::time::timeout(STOP_GRACE, queue.cancel(id)).await;
        interrupt.cancel();
    });
    let display = Display::for_database(output, &db);
    announce_joined_job(&db, id, &display).await;
    let finished = follow(&db, id, &mut events, &display, &stopped).await;
    let summary = match finished {
        // Also when this attempt queued none: an earlier, interrupted attempt may have.
        Ok(summary) => wait_for_embedding(&db, &mut events, &display, &stopped).await.map(|()| summary),
        Err(err) => Err(err),
    };
    shutdown.cancel();
    // The worker gives its jobs back on the way out; bounded, as that is a write too.
    match tokio::time::timeout(STOP_GRACE + COMMAND_SHUTDOWN, worker).await {
        Ok(joined) => joined??,
        Err(_) => {
            display.notice("the worker did not stop in time; its jobs go back to the queue when their lease ends");
        }
    }
    display.clear();
    if stopped.is_cancelled() {
        return interrupted(&db, summary.err(), &stop).await;
    }
    let summary = summary?;
    print_summary(&summary, output);
    Ok(i32::from(!summary.failed.is_empty()))
}

/// Jobs left running by killed processes of this machine (this folder's,
/// or embedding the command will wait for) are taken over now; a job this
/// command joined that runs elsewhere is followed, and the user told whose
/// it is and how long its lease can hold.
pub(crate) async fn announce_joined_job(db: &Database, id: JobId, display: &Display) {
    let taken = db.queue.take_over_orphans().await.unwrap_or_else(|err| {
        display.notice(&format!("cannot look at the running jobs: {err}"));
        Vec::new()
    });
    for (job, worker) in &taken {
        display.notice(&format!("job {job} was left running by {worker}, which has ended; taking it over"));
    }
    if let Ok(Some(job)) = db.queue.get(id).await
        && job.state == JobState::Running
        && !taken.iter().any(|(job, _)| *job == id)
        && job.worker_id.as_deref() != Some(job_queue::process_tag().as_str())
    {
        let worker = job.worker_id.unwrap_or_default();
        let lease = WorkerConfig::default().lease.as_secs();
        display.notice(&format!(
            "job {id} is already running in worker {worker}; following it (if that worker is gone, it is taken over when its lease ends, within {lease}s)"
        ));
    }
}

/// How long a command waits for its failed job's next attempt to start
/// (a retry normally starts within seconds) before it gives up with the
/// job's error.
pub(crate) const RETRY_PATIENCE: Duration = Duration::from_secs(30);

/// Storage faults that no retry in the next moments will cure.
pub(crate) fn is_storage_fault(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    ["disk is full", "no space left", "disk full", "readonly database", "read-only", "disk i/o error"]
        .iter()
        .any(|fault| error.contains(fault))
}

/// Shows job `id`'s progress until it ends; its summary, or why it failed.
/// Ends early, with an error, after `stopped` fires (plus [`STOP_GRACE`]),
/// when the job failed on a storage fault, or when a retry does not start
/// within [`RETRY_PATIENCE`].
pub(crate) async fn follow(
    db: &Database,
    id: JobId,
    events: &mut tokio::sync::broadcast::Receiver<job_queue::JobEvent>,
    display: &Display,
    stopped: &CancellationToken,
) -> Result<SyncSummary> {
    let mut failed_since: Option<Instant> = None;
    // A failure already stored when we came (a joined job waiting for its retry) is not ours to end on.
    let mut attempt_at_start: Option<i32> = None;
    // The last progress event: it runs ahead of the stored progress.
    let mut seen = batch_core::Progress::default();
    loop {
        if stopped.is_cancelled() {
            let ended = tokio::time::timeout(STOP_GRACE, async {
                loop {
                    // Ended, and let go by this process's worker: its progress is stored then.
                    let here = db.queue.runs_here(id);
                    match db.queue.get(id).await {
                        Ok(Some(job)) if job.state.is_terminal() && !here => return Some(job),
                        Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                        _ => return None,
                    }
                }
            })
            .await;
            let stored = ended.ok().flatten().map(|job| job.progress).unwrap_or_default();
            let reached = reached(furthest(&seen, &stored));
            bail!("interrupted: job {id} stopped {reached}; what it wrote is kept, run the command again to go on");
        }
        // Also look at the stored job now and then: another process may run it.
        let event = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
        if let Ok(Ok(event)) = &event
            && event.job_id == id
        {
            if let JobEventKind::Progress { progress } = &event.kind {
                display.progress(progress);
                seen.clone_from(progress);
                continue;
            }
            // A storage fault may keep the failure from ever being written: end on the event.
            if let JobEventKind::Failed { error, .. } = &event.kind
                && is_storage_fault(error)
            {
                let _ = tokio::time::timeout(STOP_GRACE, db.queue.cancel(id)).await;
                bail!("job {id} failed: {error}");
            }
        } else if let Ok(Ok(_)) = event {
            continue;
        }
        let read = tokio::select! {
            read = through_outages(display, || db.queue.get(id)) => read?,
            () = stopped.cancelled() => continue,
        };
        let Some(job) = read else { bail!("job {id} disappeared") };
        let first_attempt = *attempt_at_start.get_or_insert(job.attempt);
        match job.state {
            JobState::Completed => {
                // Its last progress, which a quick job may not have sent as an event.
                display.progress(&job.progress);
                return serde_json::from_value(job.output.unwrap_or_default()).context("reading the job's summary");
            }
            JobState::Cancelled => {
                let why = job.last_error.filter(|e| !e.is_empty()).map(|e| format!(" ({e})")).unwrap_or_default();
                bail!(
                    "job {id} was cancelled {}{why}; what it wrote is kept, run the command again to do the rest",
                    reached(furthest(&seen, &job.progress))
                )
            }
            JobState::Dead => {
                let error = job.last_error.unwrap_or_default();
                bail!("job {id} failed for good {}: {error}", reached(furthest(&seen, &job.progress)))
            }
            JobState::Failed => {
                let error = job.last_error.unwrap_or_default();
                let waited = failed_since.get_or_insert_with(Instant::now).elapsed();
                if (is_storage_fault(&error) && job.attempt > first_attempt) || waited >= RETRY_PATIENCE {
                    let _ = tokio::time::timeout(STOP_GRACE, db.queue.cancel(id)).await;
                    bail!("job {id} failed: {error}");
                }
                display.progress(&job.progress);
            }
            _ => {
                failed_since = None;
                display.progress(&job.progress);
            }
        }
    }
}

/// Waits until no embedding job is queued, running or waiting for a retry,
/// counting again when one ends here (or each second, for jobs other
/// processes run).
pub(crate) async fn wait_for_embedding(
    db: &Database,
    events: &mut tokio::sync::broadcast::Receiver<job_queue::JobEvent>,
    display: &Display,
    stopped: &CancellationToken,
) -> Result<()> {
    loop {
        let pending = tokio::select! {
            pending = through_outages(display, || db.queue.unfinished(Some(EMBED_JOB))) => pending?,
            () = stopped.cancelled() => bail!("interrupted while waiting for embedding; the jobs stay queued"),
        };
        if pending == 0 {
            return Ok(());
        }
        display.message(&format!("Embedding: {pending} jobs left"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let event = tokio::select! {
                () = stopped.cancelled() => break,
                event = tokio::time::timeout_at(deadline, events.recv()) => event,
            };
            let Ok(Ok(event)) = event else { break };
            let ended =
                matches!(event.kind, JobEventKind::Completed | JobEventKind::Dead { .. } | JobEventKind::Cancelled);
            if event.job_type == EMBED_JOB && ended {
                break;
            }
        }
    }
}
