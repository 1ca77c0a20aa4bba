//! What the queue needs from a database; one implementation per backend.

use std::time::Duration;

use batch_core::Progress;
use serde_json::Value;

use crate::Result;
use crate::model::{AfterFailure, Job, JobFilter, JobId, JobState, NewJob};

pub(crate) const COLUMNS: &str = "id, job_type, input, priority, state, run_at, attempt, max_attempts, \
     progress_current, progress_total, progress_message, output, last_error, source, metadata, dedup_key, \
     batch_id, worker_id, created_at, started_at, finished_at, heartbeat_at";

/// A job the caller holds: every write of a running job is fenced by its
/// attempt, so a worker that lost its lease cannot overwrite a newer attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Held {
    pub id: JobId,
    pub attempt: i32,
}

/// A finished handler's result, waiting to be written.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub held: Held,
    pub job_type: String,
    pub output: Value,
    pub progress: Progress,
}

#[async_trait::async_trait]
pub(crate) trait QueueStore: Send + Sync + 'static {
    /// One statement; a dedup conflict returns the existing job's id.
    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>>;

    /// Claims up to `limit` runnable jobs of `types` (only those whose
    /// dedup key starts with `key_prefix`, when given), highest priority first.
    async fn claim(
        &self,
        types: &[String],
        key_prefix: Option<&str>,
        limit: usize,
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Job>>;

    /// Extends the leases of `held`; returns those still running under them
    /// (the others were cancelled or taken over).
    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<JobId>>;

    /// Completes many jobs in one statement; returns the ids whose write
    /// applied (the others were stale attempts or cancelled).
    async fn complete_many(&self, done: &[Completion]) -> Result<Vec<JobId>>;

    /// Marks the attempt failed: to be retried, or dead.
    async fn fail(&self, held: Held, error: &str, after: AfterFailure) -> Result<bool>;

    async fn save_progress(&self, held: Held, progress: &Progress) -> Result<bool>;

    /// Gives running jobs back to the queue without counting the attempt.
    async fn release(&self, held: &[Held]) -> Result<()>;

    /// Gives running job `id` back to the queue, its attempt not counted,
    /// if `worker` (a process that has ended) still holds it; true if it did.
    async fn release_orphan(&self, id: JobId, worker: &str) -> Result<bool>;

    /// Cancels a queued, failed or running job; returns its state before.
    async fn cancel(&self, id: JobId) -> Result<Option<JobState>>;

    /// Dead, failed or cancelled -> queued, attempts reset.
    async fn retry(&self, id: JobId) -> Result<bool>;

    async fn get(&self, id: JobId) -> Result<Option<Job>>;

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>>;

    /// (job type, state, jobs) for every type and state that has jobs.
    async fn counts(&self) -> Result<Vec<(String, JobState, i64)>>;

    /// Jobs queued, running or waiting for a retry (of `job_type`, if
    /// given), in one statement so a job moving between those states is
    /// never missed.
    async fn unfinished(&self, job_type: Option<&str>) -> Result<i64>;

    /// (state, jobs, sum of progress current, sum of progress total).
    async fn batch_counts(&self, batch_id: JobId) -> Result<Vec<(JobState, i64, i64, i64)>>;

    /// Running jobs whose lease expired, except the caller's own `held`
    /// ones (a worker that can ask is alive; after a database outage its
    /// next heartbeat renews them): failed (to be retried now) or dead when
    /// out of attempts. Returns (id, job type, new state).
    async fn reap_expired(&self, held: &[JobId]) -> Result<Vec<(JobId, String, JobState)>>;

    /// Queued jobs of types nobody handles, older than `created_before`: dead.
    async fn bury_unhandled(&self, known: &[String], created_before: i64) -> Result<Vec<(JobId, String)>>;

    /// Deletes terminal jobs finished before `finished_before` (micros).
    async fn purge(&self, finished_before: i64) -> Result<u64>;

    /// Waits until someone may have queued work (PostgreSQL NOTIFY), or
    /// forever when the backend cannot tell (SQLite: the caller polls).
    async fn wait_for_enqueue(&self);

    /// Statements sent since the store was opened.
    fn statements(&self) -> u64;
}
