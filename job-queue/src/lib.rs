//! A persistent priority job queue on SQLite (embedded default) or
//! PostgreSQL (many worker processes): typed handlers, progress that other
//! processes can see, cancel, retry with backoff, leases that rescue the jobs
//! of a crashed worker, dedup keys, batches and an event stream.
//!
//! ```no_run
//! use job_queue::{EnqueueOptions, JobContext, JobError, JobHandler, Queue, Registry, WorkerConfig};
//!
//! struct Greet;
//!
//! #[async_trait::async_trait]
//! impl JobHandler for Greet {
//!     type Input = String;
//!     type Output = String;
//!     async fn process(&self, name: String, _ctx: JobContext) -> Result<String, JobError> {
//!         Ok(format!("hello {name}"))
//!     }
//! }
//!
//! # async fn demo() -> Result<(), job_queue::QueueError> {
//! let queue = Queue::connect("sqlite://jobs.db").await?;
//! let id = queue.enqueue("greet", &"ana", EnqueueOptions::default()).await?;
//! let worker = queue.worker(Registry::new().with("greet", Greet), WorkerConfig::default());
//! let shutdown = batch_core::CancellationToken::new();
//! tokio::spawn(worker.run(shutdown.clone()));
//! let greeting: String = queue.wait_output(id, std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod enqueue;
mod handler;
mod model;
mod postgres;
mod sqlite;
mod store;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use batch_core::CancellationToken;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

pub use enqueue::MAX_INPUT_BYTES;
pub use handler::{JobContext, JobError, JobHandler, NoopHandler, Registry};
pub use model::{
    BatchStatus, EnqueueOptions, Job, JobEvent, JobEventKind, JobFilter, JobId, JobState, NewJob, PRIORITY_RANGE,
};
pub use postgres::{CHANNEL as PG_CHANNEL, enqueue_in as pg_enqueue_in};
pub use sqlite::enqueue_in as sqlite_enqueue_in;
pub use worker::{ClaimOnly, Worker, WorkerConfig, local_process_ended, process_tag};

use store::QueueStore;

/// Failures of the queue itself.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database failed (connection, constraint, lock...).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Creating or upgrading the tables failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A job of an enqueue call was refused; nothing of the call was queued.
    #[error("job {index} ({job_type:?}) is invalid: {reason}")]
    InvalidJob {
        /// Its position in the call, from 0.
        index: usize,
        /// Its type.
        job_type: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// An input or output does not serialise to JSON.
    #[error("input cannot be serialised: {0}")]
    Serialize(String),
    /// The job is not in a state that allows the call (e.g. retrying a running job).
    #[error("{0}")]
    Conflict(String),
    /// No job has this id.
    #[error("no job {0}")]
    NotFound(JobId),
    /// [`Queue::wait`] gave up before the job ended.
    #[error("job {0} did not finish in time")]
    Timeout(JobId),
    /// [`Queue::wait`] saw the job end other than completed.
    #[error("job {id} ended {state}: {error}")]
    JobFailed {
        /// The job.
        id: JobId,
        /// The state it ended in (`dead` or `cancelled`).
        state: JobState,
        /// Its last error.
        error: String,
    },
    /// A stored job row does not decode.
    #[error("corrupt job row: {0}")]
    Corrupt(String),
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
}

impl QueueError {
    /// The database could not be reached (down, restarting, network gone):
    /// worth waiting out, unlike a bad query or a bad job.
    pub fn is_unreachable(&self) -> bool {
        match self {
            QueueError::Database(err) => is_unreachable(err),
            _ => false,
        }
    }
}

/// Connection-level failures; SQLSTATE class 08 is "connection exception",
/// 57P01-57P03 are shutdowns and "cannot connect now" (starting up).
pub fn is_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// The queue's result type.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// A handle on the queue; cheap to clone and share.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn QueueStore>,
    events: broadcast::Sender<JobEvent>,
    /// Bumped on every enqueue in this process, to wake its workers at once.
    enqueued: watch::Sender<u64>,
    /// Tokens of the jobs running in this process, for immediate cancel.
    running: Mutex<HashMap<JobId, CancellationToken>>,
    /// Progress writes sent to the database by this process's workers.
    progress_writes: std::sync::atomic::AtomicU64,
}

impl Queue {
    /// Opens `sqlite://path` (created if missing) or connects to `postgres://...`.
    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::new(Box::new(sqlite::SqliteQueueStore::connect(url).await?)))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::new(Box::new(postgres::PgQueueStore::connect(url).await?)))
        } else {
            Err(QueueError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// Uses an existing SQLite pool (e.g. the entity store's file).
    pub async fn from_sqlite_pool(pool: sqlx::SqlitePool) -> Result<Self> {
        Ok(Self::new(Box::new(sqlite::SqliteQueueStore::from_pool(pool).await?)))
    }

    /// Uses an existing PostgreSQL pool (e.g. the entity store's), migrating its tables.
    pub async fn from_pg_pool(pool: sqlx::PgPool) -> Result<Self> {
        Ok(Self::new(Box::new(postgres::PgQueueStore::from_pool(pool).await?)))
    }

    fn new(store: Box<dyn QueueStore>) -> Self {
        let (events, _) = broadcast::channel(1024);
        let (enqueued, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                store,
                events,
                enqueued,
                running: Mutex::new(HashMap::new()),
                progress_writes: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn store(&self) -> &dyn QueueStore {
        self.inner.store.as_ref()
    }

    pub(crate) fn emit(&self, job_id: JobId, job_type: &str, kind: JobEventKind) {
        // Nobody listening is fine.
        let _ = self.inner.events.send(JobEvent { job_id, job_type: job_type.to_owned(), kind });
    }

    pub(crate) fn enqueue_signal(&self) -> watch::Receiver<u64> {
        self.inner.enqueued.subscribe()
    }

    pub(crate) fn track_running(&self, id: JobId, token: CancellationToken) {
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).insert(id, token);
    }

    pub(crate) fn untrack_running(&self, id: JobId) {
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Whether a worker of this process is running job `id` now. Once it is
    /// not, what its handler reached is stored (a stopped job's progress is
    /// written before the worker lets go of it).
    pub fn runs_here(&self, id: JobId) -> bool {
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&id)
    }

    /// Enqueues one job; returns its id (or, with a dedup key that has an
    /// unfinished job, that job's id).
    pub async fn enqueue<T: Serialize + ?Sized>(
        &self,
        job_type: &str,
        input: &T,
        options: EnqueueOptions,
    ) -> Result<JobId> {
        let input = serde_json::to_value(input).map_err(|e| QueueError::Serialize(e.to_string()))?;
        let ids = self.enqueue_many(vec![NewJob::new(job_type, input).with_options(options)]).await?;
        ids.into_iter().next().ok_or_else(|| QueueError::Corrupt("enqueue returned no id".to_owned()))
    }

    /// Enqueues many jobs in one statement; ids in the order given.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        let ids = self.store().enqueue_many(&jobs).await?;
        self.inner.enqueued.send_modify(|n| *n += 1);
        if self.inner.events.receiver_count() > 0 {
            for (id, job) in ids.iter().zip(&jobs) {
                self.emit(*id, &job.job_type, JobEventKind::Queued);
            }
        }
        Ok(ids)
    }

    /// The job, if it exists (finished jobs stay until the retention removes them).
    pub async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.store().get(id).await
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.store().list(filter).await
    }

    /// Jobs running under workers of this machine whose process has ended
    /// (killed): gives them back to the queue now, the killed attempt not
    /// counted (the process died, not the job), instead of waiting for
    /// their leases to expire. Returns (job, worker) for each one.
    pub async fn take_over_orphans(&self) -> Result<Vec<(JobId, String)>> {
        let running = self
            .list(&JobFilter { state: Some(JobState::Running), limit: Some(10_000), ..JobFilter::default() })
            .await?;
        let mut taken = Vec::new();
        for job in running {
            if let Some(worker) = job.worker_id.filter(|w| crate::worker::local_process_ended(w))
                && self.store().release_orphan(job.id, &worker).await?
            {
                taken.push((job.id, worker));
            }
        }
        Ok(taken)
    }

    /// Cancels a queued, failed or running job. A running handler's token
    /// fires (here at once; in another process at its next heartbeat) and
    /// whatever it returns is discarded. False if the job had already ended.
    pub async fn cancel(&self, id: JobId) -> Result<bool> {
        // A job running here is stopped first: on SQLite a long transaction
        // of its own holds the one write lock the cancel needs. Its worker
        // then leaves the job's state to this write.
        let token = self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned();
        if let Some(token) = token {
            token.cancel();
        }
        let Some(_before) = self.store().cancel(id).await? else {
            return Ok(false);
        };
        let job_type = self.get(id).await?.map(|j| j.job_type).unwrap_or_default();
        self.emit(id, &job_type, JobEventKind::Cancelled);
        Ok(true)
    }

    /// Queues a dead, failed or cancelled job again with fresh attempts.
    pub async fn retry(&self, id: JobId) -> Result<bool> {
        let retried = self.store().retry(id).await?;
        if retried {
            self.inner.enqueued.send_modify(|n| *n += 1);
        }
        Ok(retried)
    }

    /// Events of this process: enqueues, starts, progress, outcomes.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// Waits until the job ends (completed, cancelled or dead) and returns it.
    pub async fn wait(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let mut events = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.get(id).await?.ok_or(QueueError::NotFound(id))?;
            if job.state.is_terminal() {
                return Ok(job);
            }
            // Events cover this process; polling covers workers elsewhere.
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Err(QueueError::Timeout(id)),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = next_event_for(&mut events, id) => {}
            }
        }
    }

    /// Waits for the job and returns its output, or why it has none.
    pub async fn wait_output<T: DeserializeOwned>(&self, id: JobId, timeout: Duration) -> Result<T> {
        let job = self.wait(id, timeout).await?;
        if job.state != JobState::Completed {
            return Err(QueueError::JobFailed {
                id,
                state: job.state,
                error: job.last_error.unwrap_or_else(|| "cancelled".to_owned()),
            });
        }
        let output = job.output.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(output).map_err(|e| QueueError::Serialize(e.to_string()))
    }

    /// How many jobs each type has in each state.
    pub async fn counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<JobState, u64>>> {
        let mut counts: std::collections::BTreeMap<String, std::collections::BTreeMap<JobState, u64>> =
            std::collections::BTreeMap::new();
        for (job_type, state, jobs) in self.store().counts().await? {
            counts.entry(job_type).or_default().insert(state, jobs as u64);
        }
        Ok(counts)
    }

    /// How many jobs (of `job_type`, if given) are queued, running or
    /// waiting for a retry: zero means the queue has drained. One statement,
    /// so a job moving from one of those states to another is counted.
    pub async fn unfinished(&self, job_type: Option<&str>) -> Result<u64> {
        Ok(self.store().unfinished(job_type).await?.max(0) as u64)
    }

    /// Totals, states and overall progress of the jobs of one batch.
    pub async fn batch_status(&self, batch_id: uuid::Uuid) -> Result<BatchStatus> {
        let mut status = BatchStatus::default();
        for (state, jobs, current, total) in self.store().batch_counts(batch_id).await? {
            status.total += jobs as u64;
            status.by_state.insert(state, jobs as u64);
            status.progress.current += current as u64;
            status.progress.total += total as u64;
        }
        status.finished = status.by_state.keys().all(|s| s.is_terminal());
        Ok(status)
    }

    /// Deletes completed, cancelled and dead jobs that finished over `age` ago.
    pub async fn purge_finished(&self, age: Duration) -> Result<u64> {
        let cutoff = model::now_micros() - age.as_micros() as i64;
        self.store().purge(cutoff).await
    }

    /// A worker pool running `registry`'s handlers on this queue.
    pub fn worker(&self, registry: Registry, config: WorkerConfig) -> Worker {
        Worker::new(self.clone(), registry, config)
    }

    /// Progress writes this process's workers sent to the database.
    pub fn progress_writes(&self) -> u64 {
        self.inner.progress_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_progress_write(&self) {
        self.inner.progress_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Statements this handle sent to the database.
    pub fn statements(&self) -> u64 {
        self.store().statements()
    }
}

async fn next_event_for(events: &mut broadcast::Receiver<JobEvent>, id: JobId) {
    loop {
        match events.recv().await {
            Ok(event) if event.job_id == id => return,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// A migration file added to the folder but not to `embed!` would never run.
#[cfg(test)]
#[test]
fn every_migration_file_is_embedded() {
    for migrations in [sqlite::MIGRATIONS, postgres::MIGRATIONS] {
        assert_eq!(migrations.unlisted().unwrap(), Vec::<String>::new(), "{migrations:?}");
    }
}
