//! `watch`: a sync, then an import job for every burst of file changes.

use crate::cli::JobArgs;
use crate::display::Output;
use crate::open::{command_worker_config, existing_folder, folder_config, open_database, registry_for};
use crate::stop::{COMMAND_SHUTDOWN, STOP_GRACE, stop_signal};
use anyhow::Result;
use batch_core::CancellationToken;
use directory_sync::{Database, DirectorySyncPlugin, Folders, SyncConfig, SyncSummary};
use embedding::EMBED_JOB;
use job_queue::JobEventKind;
use serde_json::json;
use std::time::Duration;

pub(crate) async fn watch(database: Option<&str>, job: &JobArgs, output: Output) -> Result<i32> {
    let db = open_database(database, &existing_folder(&job.path)?).await?;
    let config = SyncConfig {
        initial_sync_delay: Duration::ZERO,
        watch_enabled: true,
        ..folder_config(job, &db, output).await?
    };
    let plugin = DirectorySyncPlugin::new(config.clone(), db.store.clone(), db.state.clone(), db.queue.clone())?;
    let mut registry = registry_for(&db, Folders::Fixed(plugin.syncer().clone())).await?;
    plugin.register(&mut registry).await?;
    let shutdown = CancellationToken::new();
    let stop = stop_signal()?;
    let stopped = stop.wait();
    tokio::pin!(stopped);
    let mut events = db.queue.subscribe();
    let worker = tokio::spawn(db.queue.worker(registry, command_worker_config(Some(&plugin))).run(shutdown.clone()));
    let _ = db.queue.take_over_orphans().await;
    let watching = plugin.start_watch(shutdown.clone())?;
    if !output.quiet {
        errln!("watching {} (Ctrl-C to stop)", config.sync_path.display());
    }
    if let Some(why) = plugin.watch_polling() {
        errln!("directory-sync: {why}");
    }
    loop {
        tokio::select! {
            () = &mut stopped => break,
            event = events.recv() => {
                let Ok(event) = event else { continue };
                report_event(&db, &event, output).await;
            }
        }
    }
    shutdown.cancel();
    watching.await??;
    if tokio::time::timeout(STOP_GRACE + COMMAND_SHUTDOWN, worker).await.is_err() {
        errln!("the worker did not stop in time; its jobs go back to the queue when their lease ends");
    }
    let left = tokio::time::timeout(STOP_GRACE, db.queue.unfinished(None)).await.ok().and_then(Result::ok);
    if !output.quiet {
        match left {
            Some(0) | None => errln!("stopped watching"),
            Some(left) => errln!(
                "stopped watching; {left} jobs stay queued for the next `watch` or `sync` of this folder or a `directory-sync worker`"
            ),
        }
    }
    Ok(0)
}

/// One line per finished job: its summary (for sync jobs), or that it finished.
pub(crate) async fn report_event(db: &Database, event: &job_queue::JobEvent, output: Output) {
    let (state, error) = match &event.kind {
        JobEventKind::Completed => ("completed", None),
        JobEventKind::Dead { error } => ("dead", Some(error.clone())),
        _ => return,
    };
    let summary = db
        .queue
        .get(event.job_id)
        .await
        .ok()
        .flatten()
        .and_then(|job| job.output)
        .filter(|_| event.job_type != EMBED_JOB)
        .and_then(|out| serde_json::from_value::<SyncSummary>(out).ok());
    if output.json {
        let mut line = json!({ "job_id": event.job_id, "job_type": event.job_type, "state": state, "error": error });
        if let (Some(summary), Some(fields)) = (&summary, line.as_object_mut())
            && let Ok(serde_json::Value::Object(summary)) = serde_json::to_value(summary)
        {
            fields.extend(summary);
        }
        outln!("{line}");
    } else if !output.quiet {
        match (summary, error) {
            (_, Some(error)) => outln!("{} {} failed: {error}", event.job_type, event.job_id),
            (Some(summary), None) => outln!("{}: {}", event.job_type, summary.headline()),
            (None, None) => outln!("{} {} completed", event.job_type, event.job_id),
        }
    }
}
