//! The worker pool: claims several jobs per statement, runs their handlers
//! with a concurrency limit, keeps their leases alive, writes progress at
//! about one write a second, retries with backoff and shuts down gracefully.

mod buffer;
mod completion;
mod lease;
mod pace;
mod progress;
mod run;

use crate::handler::Registry;
use crate::model::{Job, JobEventKind, JobId, JobState, now_micros};
use crate::store::Held;
use crate::{Queue, Result};
use batch_core::{CancellationToken, RetryPolicy};
use buffer::Buffer;
use completion::completion_loop;
use lease::heartbeat_loop;
pub use lease::{local_process_ended, process_tag};
use pace::Pace;
use run::{HeldByType, Slots};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Handlers running at once.
    pub concurrency: usize,
    /// A claimed job is this worker's until its lease expires.
    pub lease: Duration,
    /// Leases are renewed (and cancellations from other processes noticed)
    /// this often.
    pub heartbeat: Duration,
    /// Backstop for wake-ups this process cannot see (other processes on
    /// SQLite, a lost NOTIFY); also how often expired leases are reaped.
    pub poll_interval: Duration,
    /// Backoff between attempts of a failed job.
    pub retry: RetryPolicy,
    /// Most time between progress writes to the database for one job.
    pub progress_interval: Duration,
    /// On shutdown, running jobs get this long to finish before they are
    /// given back to the queue.
    pub shutdown_timeout: Duration,
    /// Queued jobs of a type no handler of this worker knows die after this
    /// long (`None`: leave them for other workers forever).
    pub unhandled_grace: Option<Duration>,
    /// Most jobs of a type running at once in this worker, for handlers that
    /// use the whole machine (an embedding model). Jobs of a limited type are
    /// claimed only as slots of their type free up, never ahead.
    pub type_limits: std::collections::BTreeMap<String, usize>,
    /// Completed, cancelled and dead jobs are deleted this long after they
    /// finished (`None`: keep them).
    pub retention: Option<Duration>,
    /// Names this worker in the jobs it holds (`host:pid:random` by default).
    pub worker_id: String,
    /// When set, this worker claims only some jobs: a command that runs
    /// its own work in its own process leaves every other job to the
    /// workers meant for it.
    pub claim_only: Option<ClaimOnly>,
}

/// What a scoped worker may claim (see [`WorkerConfig::claim_only`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimOnly {
    /// Jobs of other types only when their dedup key starts with this
    /// (e.g. the jobs of one folder); none when absent.
    pub dedup_prefix: Option<String>,
    /// Any job of these types (e.g. the embedding a command queued).
    pub types: Vec<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy {
                max_attempts: u32::MAX,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(300),
                multiplier: 2.0,
                jitter: 0.2,
            },
            progress_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(10),
            unhandled_grace: Some(Duration::from_secs(300)),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            type_limits: std::collections::BTreeMap::new(),
            worker_id: process_tag(),
            claim_only: None,
        }
    }
}

/// Jobs this worker holds: attempt (for fencing) and cancel token.
type HeldJobs = Arc<Mutex<HashMap<JobId, (i32, CancellationToken)>>>;

/// Claims jobs of its registry's types and runs them; see [`Queue::worker`](crate::Queue::worker) and [`Worker::run`].
pub struct Worker {
    queue: Queue,
    registry: Registry,
    config: WorkerConfig,
}

impl Worker {
    /// How long jobs asked to stop at shutdown get to reach a chunk boundary.
    const STOP_GRACE: Duration = Duration::from_secs(2);

    pub(crate) fn new(queue: Queue, registry: Registry, config: WorkerConfig) -> Self {
        Self { queue, registry, config }
    }

    /// Runs until `shutdown` fires, then stops claiming, lets running jobs
    /// finish within `shutdown_timeout` and releases the rest.
    ///
    /// `concurrency` slots each take their next job from a local buffer;
    /// this loop keeps the buffer filled ahead of need (see [`Pace`]), so a
    /// claim runs while the slots still have work, and does the periodic
    /// maintenance.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let types = self.registry.job_types();
        let held: HeldJobs = Arc::default();
        let heartbeat_stop = CancellationToken::new();
        // If this future is dropped (the worker aborted), the heartbeat stops
        // too, so its leases expire as a crashed worker's would.
        let _heartbeat_guard = heartbeat_stop.clone().drop_guard();
        let heartbeat =
            tokio::spawn(heartbeat_loop(self.queue.clone(), held.clone(), self.config.clone(), heartbeat_stop.clone()));
        let (completions, pending) = tokio::sync::mpsc::unbounded_channel();
        let completer = tokio::spawn(completion_loop(self.queue.clone(), pending));
        let slots = Arc::new(Slots {
            queue: self.queue.clone(),
            registry: self.registry.clone(),
            config: self.config.clone(),
            held: held.clone(),
            stopping: shutdown.clone(),
            completions,
            pace: Pace::default(),
            buffer: Buffer::default(),
            held_by_type: HeldByType::default(),
        });
        let mut tasks = JoinSet::new();
        for _ in 0..self.config.concurrency.max(1) {
            tasks.spawn(slots.clone().run_slot());
        }
        let mut enqueued = self.queue.enqueue_signal();
        let mut last_maintenance: Option<Instant> = None;
        let mut failures = 0u32;

        while !shutdown.is_cancelled() {
            if last_maintenance.is_none_or(|at| at.elapsed() >= self.config.poll_interval) {
                self.maintain(&types, &held).await;
                last_maintenance = Some(Instant::now());
            }
            enqueued.borrow_and_update();
            if let Some(size) = self.refill_size(&slots).filter(|_| !types.is_empty()) {
                match self.claim(&types, size, &slots.held_by_type).await {
                    Ok(jobs) => {
                        failures = 0;
                        let claimed = jobs.len();
                        {
                            let mut held = held.lock().unwrap_or_else(PoisonError::into_inner);
                            for job in &jobs {
                                held.insert(job.id, (job.attempt, CancellationToken::new()));
                                slots.held_by_type.add(&job.job_type, 1);
                            }
                        }
                        slots.buffer.push(jobs);
                        if claimed > 0 {
                            continue; // Claim again at once if the buffer is still low.
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        let delay = RetryPolicy { max_delay: Duration::from_secs(10), ..self.config.retry }
                            .delay_after(failures);
                        tracing::warn!(%error, ?delay, "claiming jobs failed; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = slots.buffer.wanted.notified() => {}
                _ = enqueued.changed() => {}
                () = self.queue.store().wait_for_enqueue() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }

        self.shut_down(&held, &mut tasks).await;
        // Every sender is gone once the slots are: the completer writes what
        // is left and ends.
        drop(slots);
        let _ = completer.await;
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
        Ok(())
    }

    /// How many jobs to claim now, if any: enough for the free slots and
    /// for [`Pace::ahead`] more, once the buffer is at its low-water mark.
    fn refill_size(&self, slots: &Slots) -> Option<usize> {
        let concurrency = self.config.concurrency.max(1);
        let ahead = slots.pace.ahead(concurrency);
        let low_water = ahead / 2;
        slots.buffer.set_low_water(low_water);
        // Held jobs are buffered or running: the rest of the slots are free.
        let buffered = slots.buffer.len();
        let held = slots.held.lock().unwrap_or_else(PoisonError::into_inner).len();
        let free = concurrency.saturating_sub(held.saturating_sub(buffered));
        let want = (free + ahead).saturating_sub(buffered).min(Pace::MAX_CLAIM.max(concurrency));
        (want > 0 && buffered <= low_water).then_some(want)
    }

    async fn maintain(&self, types: &[String], held: &HeldJobs) {
        let own: Vec<JobId> = held.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
        match self.queue.store().reap_expired(&own).await {
            Ok(reaped) => {
                for (id, job_type, state) in reaped {
                    tracing::warn!(%id, %job_type, %state, "lease expired; job rescued");
                    let error = "lease expired: its worker stopped".to_owned();
                    let kind = if state == JobState::Dead {
                        JobEventKind::Dead { error }
                    } else {
                        JobEventKind::Retrying { error, retry_at: chrono::Utc::now() }
                    };
                    self.queue.emit(id, &job_type, kind);
                }
            }
            Err(error) => tracing::warn!(%error, "reaping expired leases failed"),
        }
        if let Some(age) = self.config.retention {
            match self.queue.purge_finished(age).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "deleted finished jobs past retention"),
                Err(error) => tracing::warn!(%error, "deleting old jobs failed"),
            }
        }
        let Some(grace) = self.config.unhandled_grace else {
            return;
        };
        let created_before = now_micros() - grace.as_micros() as i64;
        match self.queue.store().bury_unhandled(types, created_before).await {
            Ok(buried) => {
                for (id, job_type) in buried {
                    let error = format!("no handler is registered for job type {job_type:?}");
                    self.queue.emit(id, &job_type, JobEventKind::Dead { error });
                }
            }
            Err(error) => tracing::warn!(%error, "checking for unhandled job types failed"),
        }
    }

    /// Claims jobs of unlimited types (`size` of them) and, for each limited
    /// type, as many as it has free slots.
    async fn claim(&self, types: &[String], size: usize, held_by_type: &HeldByType) -> Result<Vec<Job>> {
        let store = self.queue.store();
        let (worker, lease) = (&self.config.worker_id, self.config.lease);
        // A scoped worker claims its own jobs apart from the types it takes freely.
        let (scoped, only): (Vec<String>, Option<&str>) = match &self.config.claim_only {
            None => (Vec::new(), None),
            Some(scope) => {
                (types.iter().filter(|t| !scope.types.contains(*t)).cloned().collect(), scope.dedup_prefix.as_deref())
            }
        };
        let unlimited: Vec<String> = types
            .iter()
            .filter(|t| !self.config.type_limits.contains_key(*t) && !scoped.contains(*t))
            .cloned()
            .collect();
        let mut jobs =
            if unlimited.is_empty() { Vec::new() } else { store.claim(&unlimited, None, size, worker, lease).await? };
        if let Some(prefix) = only.filter(|_| !scoped.is_empty()) {
            jobs.extend(store.claim(&scoped, Some(prefix), size, worker, lease).await?);
        }
        for (job_type, limit) in &self.config.type_limits {
            let free = limit.saturating_sub(held_by_type.get(job_type));
            if free > 0 && types.contains(job_type) && !scoped.contains(job_type) {
                jobs.extend(store.claim(std::slice::from_ref(job_type), None, free, worker, lease).await?);
            }
        }
        Ok(jobs)
    }

    async fn shut_down(&self, held: &HeldJobs, tasks: &mut JoinSet<()>) {
        let deadline = tokio::time::sleep(self.config.shutdown_timeout);
        tokio::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                () = &mut deadline => break,
                _ = tasks.join_next() => {}
            }
        }
        // Still running: asked to stop at their next chunk, so a transaction
        // is rolled back (on SQLite it holds the one write lock the release
        // needs); each puts its job back in the queue as it stops.
        for (_, token) in held.lock().unwrap_or_else(PoisonError::into_inner).values() {
            token.cancel();
        }
        let grace = tokio::time::sleep(Self::STOP_GRACE);
        tokio::pin!(grace);
        while !tasks.is_empty() {
            tokio::select! {
                () = &mut grace => break,
                _ = tasks.join_next() => {}
            }
        }
        let remaining: Vec<Held> = held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, (attempt, _))| Held { id: *id, attempt: *attempt })
            .collect();
        tasks.abort_all();
        if !remaining.is_empty() {
            tracing::info!(jobs = remaining.len(), "shutting down: giving running jobs back to the queue");
            if let Err(error) = self.queue.store().release(&remaining).await {
                tracing::warn!(%error, "releasing jobs failed; their leases will expire");
            }
            for held in &remaining {
                self.queue.untrack_running(held.id);
            }
        }
    }
}
