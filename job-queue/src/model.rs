//! Jobs, their states, options, filters and events.

use std::fmt;
use std::str::FromStr;

use batch_core::Progress;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A job's id: a UUIDv7, so ids sort by creation time.
pub type JobId = Uuid;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker (not before `run_at`).
    Queued,
    /// Held by a worker under a lease.
    Running,
    /// Its handler succeeded; `output` holds the result.
    Completed,
    /// Failed and will be retried after its backoff (`run_at`).
    Failed,
    /// Cancelled by a caller; a running handler was asked to stop.
    Cancelled,
    /// Out of attempts, or failed in a way no retry can fix.
    Dead,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 6] =
        [Self::Queued, Self::Running, Self::Completed, Self::Failed, Self::Cancelled, Self::Dead];

    /// The name stored in the database and shown to people (`queued`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Dead => "dead",
        }
    }

    /// Completed, cancelled or dead: nothing more will happen to the job.
    pub fn is_terminal(self) -> bool {
        Self::ENDED.contains(&self)
    }

    // The state machine's sets, named once; both backends' SQL is written
    // from them (`sql_in`), and `tests::the_sets_partition_the_states` holds
    // them to the transitions below.
    //
    //   queued --claim--> running --complete--> completed
    //   failed --claim--> running --fail--> failed (Retry { at }) | dead (Dead)
    //                     running --release (shutdown)--> queued
    //   queued | running | failed --cancel--> cancelled
    //   failed | dead | cancelled --retry--> queued

    /// Not ended: at most one such job per dedup key.
    pub const UNFINISHED: [JobState; 3] = [Self::Queued, Self::Running, Self::Failed];
    /// Completed, cancelled or dead.
    pub const ENDED: [JobState; 3] = [Self::Completed, Self::Cancelled, Self::Dead];
    /// What a worker may claim (once `run_at` has come).
    pub const CLAIMABLE: [JobState; 2] = [Self::Queued, Self::Failed];
    /// What `cancel` stops: every unfinished state.
    pub const CANCELLABLE: [JobState; 3] = Self::UNFINISHED;
    /// What `retry` queues again.
    pub const RETRYABLE: [JobState; 3] = [Self::Failed, Self::Cancelled, Self::Dead];
    /// Whose progress a worker may still write: a cancelled job keeps the progress it reached.
    pub const PROGRESS_WRITABLE: [JobState; 2] = [Self::Running, Self::Cancelled];
}

/// `('a', 'b')`: `states` as an SQL list, for `state IN` on either backend.
pub(crate) fn sql_in(states: &[JobState]) -> String {
    let quoted: Vec<String> = states.iter().map(|state| format!("'{}'", state.as_str())).collect();
    format!("({})", quoted.join(", "))
}

/// What becomes of a job whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Queued again (state `failed`) to run at this time (micros since the epoch).
    Retry { at: i64 },
    /// No attempt left, or a failure no retry can fix.
    Dead,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Which handler runs it.
    pub job_type: String,
    /// The handler's input, as JSON.
    pub input: Value,
    /// 1-10, higher runs first.
    pub priority: i32,
    /// Where it is in its life.
    pub state: JobState,
    /// Not claimed before this time (a retry's backoff, a scheduled job).
    pub run_at: DateTime<Utc>,
    /// Attempts started so far (1 during the first run).
    pub attempt: i32,
    /// Attempts in all before it is `dead`.
    pub max_attempts: i32,
    /// The last progress written (about once a second while running).
    pub progress: Progress,
    /// The handler's result once completed.
    pub output: Option<Value>,
    /// The last attempt's error, while failed or dead.
    pub last_error: Option<String>,
    /// Who enqueued it (free text, e.g. a plugin's name).
    pub source: Option<String>,
    /// Caller's data kept with the job, as JSON.
    pub metadata: Value,
    /// At most one unfinished job holds a given key.
    pub dedup_key: Option<String>,
    /// The batch it belongs to, for [`Queue::batch_status`](crate::Queue::batch_status).
    pub batch_id: Option<Uuid>,
    /// The worker that holds it, while running.
    pub worker_id: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (completed, cancelled or dead).
    pub finished_at: Option<DateTime<Utc>>,
    /// Its worker's last heartbeat, while running.
    pub heartbeat_at: Option<DateTime<Utc>>,
}

impl Job {
    /// Percent done, when the job reported a total.
    pub fn percent(&self) -> Option<f64> {
        self.progress.percent()
    }
}

/// Lowest and highest priority; higher runs first.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = 1..=10;

/// How to enqueue a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnqueueOptions {
    /// 1-10, higher runs first (default 5).
    pub priority: i32,
    /// Not before this time (default now).
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts in all, the first included (default 3).
    pub max_attempts: i32,
    /// At most one unfinished job per key: enqueueing again returns its id.
    pub dedup_key: Option<String>,
    /// Groups jobs whose totals [`Queue::batch_status`](crate::Queue::batch_status) reports.
    pub batch_id: Option<Uuid>,
    /// Who enqueues it (free text).
    pub source: Option<String>,
    /// Caller's data kept with the job (default `{}`).
    pub metadata: Value,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        Self {
            priority: 5,
            run_at: None,
            max_attempts: 3,
            dedup_key: None,
            batch_id: None,
            source: None,
            metadata: Value::Object(serde_json::Map::new()),
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// Which handler runs it.
    pub job_type: String,
    /// The handler's input (at most 1 MiB of JSON).
    pub input: Value,
    /// Priority, schedule, attempts, dedup key...
    pub options: EnqueueOptions,
}

impl NewJob {
    /// A job of `job_type` with default options.
    pub fn new(job_type: impl Into<String>, input: Value) -> Self {
        Self { job_type: job_type.into(), input, options: EnqueueOptions::default() }
    }

    /// With these options.
    #[must_use]
    pub fn with_options(mut self, options: EnqueueOptions) -> Self {
        self.options = options;
        self
    }
}

/// Which jobs `list` returns; unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Only jobs of this batch.
    pub batch_id: Option<Uuid>,
    /// Only jobs from this source.
    pub source: Option<String>,
    /// Only jobs whose dedup key starts with this (e.g. one folder's jobs).
    pub dedup_prefix: Option<String>,
    /// Most jobs returned (default 100), newest first.
    pub limit: Option<u32>,
    /// Jobs skipped first, for paging (default 0).
    pub offset: Option<u32>,
}

/// Something that happened to a job, seen by `subscribe`rs in this process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// Its type.
    pub job_type: String,
    /// What happened.
    pub kind: JobEventKind,
}

/// What happened to a job (`event` names it in JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEventKind {
    /// Enqueued.
    Queued,
    /// A worker started an attempt.
    Started {
        /// The attempt, from 1.
        attempt: i32,
    },
    /// Its handler reported progress.
    Progress {
        /// The counts reported.
        progress: Progress,
    },
    /// Its handler succeeded.
    Completed,
    /// An attempt failed (sent before the failure is written); a `Retrying`
    /// or `Dead` event follows once it is.
    Failed {
        /// The attempt that failed.
        attempt: i32,
        /// Its error.
        error: String,
    },
    /// Failed; will be retried at `retry_at`.
    Retrying {
        /// The error of the attempt that failed.
        error: String,
        /// When the next attempt may start.
        retry_at: DateTime<Utc>,
    },
    /// Cancelled.
    Cancelled,
    /// Out of attempts, or failed permanently.
    Dead {
        /// The last error.
        error: String,
    },
}

/// The totals of a batch of jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchStatus {
    /// Jobs in the batch.
    pub total: u64,
    /// Jobs per state (states with none are absent).
    pub by_state: std::collections::BTreeMap<JobState, u64>,
    /// Sums of the jobs' progress.
    pub progress: Progress,
    /// Every job is terminal.
    pub finished: bool,
}

impl BatchStatus {
    /// Percent of the batch's jobs that have ended (completed, cancelled or
    /// dead); a running job counts as not done, whatever its progress (the
    /// summed progress of the jobs is in [`progress`](Self::progress)).
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| {
            let done = self.by_state.iter().filter(|(s, _)| s.is_terminal()).map(|(_, n)| *n).sum::<u64>();
            done as f64 / self.total as f64 * 100.0
        })
    }
}

pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(crate) fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::UNIX_EPOCH)
}

pub(crate) fn now_micros() -> i64 {
    micros(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The named sets agree with each other and with the transitions drawn
    /// on `JobState`: every state is unfinished or ended, never both; what
    /// is claimed, cancelled or retried is where the drawing says.
    #[test]
    fn the_sets_partition_the_states() {
        for state in JobState::ALL {
            let (unfinished, ended) = (JobState::UNFINISHED.contains(&state), JobState::ENDED.contains(&state));
            assert!(unfinished != ended, "{state} is exactly one of unfinished and ended");
            assert_eq!(state.is_terminal(), ended, "{state}");
        }
        assert!(JobState::CLAIMABLE.iter().all(|s| JobState::UNFINISHED.contains(s) && *s != JobState::Running));
        assert_eq!(JobState::CANCELLABLE, JobState::UNFINISHED);
        assert!(!JobState::RETRYABLE.contains(&JobState::Completed), "a completed job is never run again");
        assert!(JobState::RETRYABLE.iter().all(|s| *s == JobState::Failed || JobState::ENDED.contains(s)));
        assert_eq!(sql_in(&JobState::CLAIMABLE), "('queued', 'failed')");
    }

    /// The migrations' partial indexes and their `ON CONFLICT` targets use
    /// the same set as the Rust (SQLite and PostgreSQL match the text).
    #[test]
    fn the_migrations_spell_the_sets_as_the_code_does() {
        for schema in
            [include_str!("../migrations/sqlite/1001_jobs.sql"), include_str!("../migrations/postgres/1001_jobs.sql")]
        {
            assert!(schema.contains(&format!("state IN {}", sql_in(&JobState::UNFINISHED))), "{schema}");
            assert!(schema.contains(&format!("state IN {}", sql_in(&JobState::CLAIMABLE))), "{schema}");
        }
        for check in [
            include_str!("../migrations/sqlite/1002_state_check.sql"),
            include_str!("../migrations/postgres/1002_state_check.sql"),
        ] {
            assert!(check.contains(&sql_in(&JobState::ALL)), "{check}");
        }
    }
}
