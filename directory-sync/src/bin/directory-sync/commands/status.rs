//! `status`: the folder's sync state and the queue's job counts.

use crate::display::{Output, job_line};
use crate::open::open_existing_database;
use anyhow::Result;
use directory_sync::{EmbedderSetting, SyncConfig, SyncSummary, Syncer};
use job_queue::{JobFilter, JobState};
use serde_json::json;
use std::path::Path;

pub(crate) async fn status(database: Option<&str>, folder: &Path, output: Output) -> Result<i32> {
    let db = open_existing_database(database, folder).await?;
    let config = SyncConfig::for_folder(&folder.canonicalize()?)?;
    let embedder = config.embedder;
    let syncer = Syncer::new(config, db.store.clone(), db.state.clone(), None)?;
    let status = syncer.folder_status().await?;
    let running = db.queue.list(&JobFilter { state: Some(JobState::Running), ..Default::default() }).await?;
    let queued =
        db.queue.list(&JobFilter { state: Some(JobState::Queued), limit: Some(20), ..Default::default() }).await?;
    let recent = db.queue.list(&JobFilter { limit: Some(10), ..Default::default() }).await?;
    // True counts, of every type: the lists above are cut.
    let counts = db.queue.counts().await?;
    let in_state = |state: JobState| counts.values().filter_map(|by| by.get(&state)).sum::<u64>();
    let last = status.last_summary.clone().and_then(|value| serde_json::from_value::<SyncSummary>(value).ok());
    if output.json {
        let jobs = |jobs: &[job_queue::Job]| {
            jobs.iter()
                .map(|j| json!({"id": j.id, "type": j.job_type, "state": j.state.as_str(), "progress": j.progress, "error": j.last_error}))
                .collect::<Vec<_>>()
        };
        outln!(
            "{}",
            json!({
                "folder": status.folder, "entities": status.entities, "not_in_folder": status.not_in_folder,
                "conflicts": status.conflicts, "embedder": embedder,
                "last_sync": status.last_sync, "last_summary": status.last_summary,
                "job_counts": counts,
                "running": jobs(&running), "queued": jobs(&queued), "recent": jobs(&recent),
            })
        );
        return Ok(0);
    }
    outln!("folder: {}", status.folder.display());
    match (&status.last_sync, &last) {
        (Some(at), Some(summary)) => outln!("last sync: {at}: {}", summary.headline()),
        (Some(at), None) => outln!("last sync: {at}"),
        (None, _) => outln!("last sync: never"),
    }
    if let Some(summary) = &last {
        for problem in summary.failed.iter().take(5) {
            outln!("  failed {}: {}", problem.path, problem.error);
        }
        if summary.failed.len() > 5 {
            outln!("  and {} more failures (--json lists them)", summary.failed.len() - 5);
        }
    }
    let counts: Vec<String> = status.entities.iter().map(|(t, n)| format!("{t} {n}")).collect();
    outln!("entities: {}", counts.join(", "));
    if status.not_in_folder > 0 {
        outln!("not yet in the folder: {} entities (run `directory-sync export` to write them)", status.not_in_folder);
    }
    outln!(
        "jobs: {} running, {} queued, {} waiting to retry, {} dead",
        in_state(JobState::Running),
        in_state(JobState::Queued),
        in_state(JobState::Failed),
        in_state(JobState::Dead)
    );
    for job in running.iter().chain(&recent).take(10) {
        let percent = job.percent().map(|p| format!(" {p:.0}%")).unwrap_or_default();
        outln!("  {} {:<17} {:<9}{percent} {}", job.id, job.job_type, job.state.as_str(), job_line(job));
    }
    match embedder {
        EmbedderSetting::None => {
            outln!("vectors: none (search is text search; `sync --embedder lexical` keeps lexical vectors)");
        }
        EmbedderSetting::Lexical => outln!("vectors: lexical (hashed words and trigrams, not semantic)"),
    }
    outln!("conflicts: {}", status.conflicts.len());
    for conflict in &status.conflicts {
        outln!("  {} (your version: {})", conflict.path, conflict.conflict_path);
    }
    Ok(0)
}
