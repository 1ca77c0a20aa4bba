//! `worker`: runs jobs of every type for any folder until stopped.

use crate::cli::ToolOptions;
use crate::display::finished_line;
use crate::open::{open_tools, registry_for, worker_config};
use crate::stop::{COMMAND_SHUTDOWN, stop_signal};
use anyhow::Result;
use batch_core::CancellationToken;
use batch_tools::background::{TOOL_JOB, ToolJobHandler};
use directory_sync::Folders;
use job_queue::{JobEventKind, WorkerConfig};
use std::time::Duration;

pub(crate) async fn worker(
    database: Option<&str>,
    options: &ToolOptions,
    concurrency: usize,
    lease: Duration,
) -> Result<i32> {
    // Handlers first: a stop request during start-up still shuts down cleanly.
    let stop = stop_signal()?;
    let (db, tools) = open_tools(database, options).await?;
    let mut registry = registry_for(&db, Folders::Any(db.clone())).await?;
    registry.register(TOOL_JOB, ToolJobHandler::new(tools));
    let shutdown = CancellationToken::new();
    // Renew well within the lease, so one late heartbeat does not lose the job.
    let heartbeat = (lease / 3).min(Duration::from_secs(1));
    // On a stop, running jobs get a moment, then go back to the queue for other workers.
    let config = WorkerConfig { concurrency, lease, heartbeat, shutdown_timeout: COMMAND_SHUTDOWN, ..worker_config() };
    let mut events = db.queue.subscribe();
    let running = tokio::spawn(db.queue.worker(registry, config).run(shutdown.clone()));
    errln!("worker running on {} (Ctrl-C or SIGTERM to stop)", db.backend);
    // One line per job this worker ends: id, type, state, folder, result or error.
    let queue = db.queue.clone();
    let lines = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let ended = matches!(
                event.kind,
                JobEventKind::Completed
                    | JobEventKind::Retrying { .. }
                    | JobEventKind::Dead { .. }
                    | JobEventKind::Cancelled
            );
            if let (true, Ok(Some(job))) = (ended, queue.get(event.job_id).await) {
                errln!("{}", finished_line(&job));
            }
        }
    });
    stop.wait().await;
    lines.abort();
    shutdown.cancel();
    running.await??;
    errln!("worker stopped; jobs it was running went back to the queue");
    Ok(0)
}
