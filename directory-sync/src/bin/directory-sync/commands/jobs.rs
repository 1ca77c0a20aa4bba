//! `jobs list|show|cancel|retry`.

use crate::cli::JobsAction;
use crate::display::Output;
use crate::open::open_existing_database;
use anyhow::{Result, bail};
use directory_sync::jobs::JobView;
use job_queue::{JobFilter, JobState};
use serde_json::json;
use std::path::Path;

pub(crate) async fn jobs(database: Option<&str>, folder: &Path, action: JobsAction, output: Output) -> Result<i32> {
    let db = open_existing_database(database, folder).await?;
    let print = |value: serde_json::Value, text: String| {
        if output.json { outln!("{value}") } else { outln!("{text}") }
    };
    match action {
        JobsAction::List { state, limit } => {
            let state = state.map(|s| s.parse::<JobState>()).transpose().map_err(anyhow::Error::msg)?;
            let jobs = db.queue.list(&JobFilter { state, limit: Some(limit), ..Default::default() }).await?;
            let text: Vec<String> = jobs
                .iter()
                .map(|j| format!("{} {:<17} {:<9} {}", j.id, j.job_type, j.state.as_str(), j.progress.message))
                .collect();
            let now = chrono::Utc::now();
            let views: Vec<JobView> = jobs.iter().map(|job| JobView::new(job, now)).collect();
            print(serde_json::to_value(&views)?, text.join("\n"));
        }
        JobsAction::Show { id } => {
            let Some(job) = db.queue.get(id).await? else { bail!("no job {id}") };
            let view = JobView::new(&job, chrono::Utc::now()).with_result(&job);
            print(serde_json::to_value(&view)?, serde_json::to_string_pretty(&view)?);
        }
        JobsAction::Cancel { id } => {
            let done = db.queue.cancel(id).await?;
            print(
                json!({"cancelled": done}),
                if done { format!("cancelled {id}") } else { format!("{id} was not running or queued") },
            );
            return Ok(i32::from(!done));
        }
        JobsAction::Retry { id } => {
            let done = db.queue.retry(id).await?;
            print(
                json!({"retried": done}),
                if done { format!("queued {id} again") } else { format!("{id} is not failed or dead") },
            );
            return Ok(i32::from(!done));
        }
    }
    Ok(0)
}
