//! What the command line, the dashboard and the MCP tools show of a job:
//! its state and progress, never its input (which can hold documents), and
//! its result only where asked.

use chrono::{DateTime, Utc};
use job_queue::{Job, JobId, JobState};
use serde::Serialize;

/// A job as people and assistants see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// The job's id.
    pub id: JobId,
    /// Its type (`directory-sync`, `embed`...).
    pub job_type: String,
    /// Where it is in its life.
    pub state: JobState,
    /// The folder a sync, import or export works on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// One line of what a finished sync, import or export did
    /// ("12 imported, 3 exported, 1 failed...").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// 1 to 10, higher runs first.
    pub priority: i32,
    /// The attempt running or last run, from 1.
    pub attempt: i32,
    /// Attempts in all before it is dead.
    pub max_attempts: i32,
    /// Items done and in all (0 while unknown).
    pub current: u64,
    /// Items in all (0 while unknown).
    pub total: u64,
    /// What it is doing, in words.
    pub message: String,
    /// Items per second since the job started, while it runs.
    pub throughput: Option<f64>,
    /// Seconds left at that rate, while it runs and its total is known.
    pub eta_seconds: Option<f64>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// Not started before this time.
    pub run_at: DateTime<Utc>,
    /// When its last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The job's result (its summary), where asked for ([`JobView::with_result`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl JobView {
    /// The view of `job` at `now` (for throughput and ETA), without its result.
    pub fn new(job: &Job, now: DateTime<Utc>) -> Self {
        let progress = &job.progress;
        let elapsed = job.started_at.map(|at| (now - at).num_milliseconds() as f64 / 1000.0).filter(|s| *s > 0.0);
        let throughput = elapsed.filter(|_| job.state == JobState::Running).map(|s| progress.current as f64 / s);
        let eta_seconds = throughput
            .filter(|rate| *rate > 0.0 && progress.total > 0)
            .map(|rate| progress.total.saturating_sub(progress.current) as f64 / rate);
        Self {
            id: job.id,
            job_type: job.job_type.clone(),
            state: job.state,
            folder: job.input.get("folder").and_then(serde_json::Value::as_str).map(str::to_owned),
            summary: job
                .output
                .as_ref()
                .and_then(|output| serde_json::from_value::<crate::SyncSummary>(output.clone()).ok())
                .map(|summary| summary.headline()),
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            current: progress.current,
            total: progress.total,
            message: progress.message.clone(),
            throughput,
            eta_seconds,
            error: job.last_error.clone(),
            run_at: job.run_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            result: None,
        }
    }

    /// The same view with the job's result, when it has one.
    #[must_use]
    pub fn with_result(mut self, job: &Job) -> Self {
        self.result.clone_from(&job.output);
        self
    }
}
