//! The worker pool: claims several jobs per statement, runs their handlers
//! with a concurrency limit, keeps their leases alive, writes progress at
//! about one write a second, retries with backoff and shuts down gracefully.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use batch_core::{CancellationToken, Progress, ProgressReporter, ProgressUpdate, RetryPolicy};
use futures::FutureExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::handler::{ErasedHandler, JobContext, Registry};
use crate::model::{Job, JobEventKind, JobId, JobState, from_micros, now_micros};
use crate::store::{Completion, Held};
use crate::{Queue, Result};

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

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map_or_else(|_| "host".to_owned(), |h| h.trim().to_owned())
}

/// `host:pid` of this process: the default worker id, and the start of any
/// holder name that [`local_process_ended`] should be able to judge.
pub fn process_tag() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// Whether `holder` (`host:pid`, anything after) names a process of this
/// machine that no longer runs (Linux: no `/proc/PID`). Unknown hosts,
/// other formats and systems without `/proc` are never judged ended.
pub fn local_process_ended(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    let proc = std::path::Path::new("/proc");
    host == hostname()
        && proc.join("self").exists()
        && pid.parse::<u32>().is_ok_and(|pid| pid != std::process::id() && !proc.join(pid.to_string()).exists())
}

/// Jobs this worker holds: attempt (for fencing) and cancel token.
type HeldJobs = Arc<Mutex<HashMap<JobId, (i32, CancellationToken)>>>;

pub struct Worker {
    queue: Queue,
    registry: Registry,
    config: WorkerConfig,
}

impl Worker {
    pub(crate) fn new(queue: Queue, registry: Registry, config: WorkerConfig) -> Self {
        Self { queue, registry, config }
    }

    /// Runs until `shutdown` fires, then stops claiming, lets running jobs
    /// finish within `shutdown_timeout` and releases the rest.
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
        let mut tasks = JoinSet::new();
        let mut enqueued = self.queue.enqueue_signal();
        let mut last_maintenance: Option<Instant> = None;
        let mut failures = 0u32;
        // Claimed jobs waiting for a free slot; see `claim_size`.
        let mut buffer: VecDeque<Job> = VecDeque::new();
        let pace = Arc::new(Pace::default());
        let running_by_type = RunningByType::default();

        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            if last_maintenance.is_none_or(|at| at.elapsed() >= self.config.poll_interval) {
                self.maintain(&types, &held).await;
                last_maintenance = Some(Instant::now());
            }
            while tasks.len() < self.config.concurrency {
                let Some(job) = buffer.pop_front() else { break };
                running_by_type.add(&job.job_type, 1);
                self.start(job, &held, &completions, &pace, &running_by_type, &mut tasks);
            }
            enqueued.borrow_and_update();
            if buffer.is_empty() && tasks.len() < self.config.concurrency && !types.is_empty() {
                let size = pace.claim_size(self.config.concurrency);
                match self.claim(&types, size, &running_by_type).await {
                    Ok(jobs) => {
                        failures = 0;
                        let claimed = jobs.len();
                        {
                            let mut held = held.lock().unwrap_or_else(PoisonError::into_inner);
                            for job in &jobs {
                                held.insert(job.id, (job.attempt, CancellationToken::new()));
                            }
                        }
                        buffer.extend(jobs);
                        if claimed > 0 {
                            continue; // Start them, and claim again if there may be more.
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
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = enqueued.changed() => {}
                () = self.queue.store().wait_for_enqueue() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }

        self.shut_down(&held, &mut tasks).await;
        // Every sender is gone once the tasks are: the completer writes what
        // is left and ends.
        drop(completions);
        let _ = completer.await;
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
        Ok(())
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
    async fn claim(&self, types: &[String], size: usize, running: &RunningByType) -> Result<Vec<Job>> {
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
            let free = limit.saturating_sub(running.get(job_type));
            if free > 0 && types.contains(job_type) && !scoped.contains(job_type) {
                jobs.extend(store.claim(std::slice::from_ref(job_type), None, free, worker, lease).await?);
            }
        }
        Ok(jobs)
    }

    fn start(
        &self,
        job: Job,
        held: &HeldJobs,
        completions: &CompletionSender,
        pace: &Arc<Pace>,
        running_by_type: &RunningByType,
        tasks: &mut JoinSet<()>,
    ) {
        let token = held.lock().unwrap_or_else(PoisonError::into_inner).get(&job.id).map(|(_, token)| token.clone());
        let (Some(token), Some(handler)) = (token, self.registry.get(&job.job_type)) else { return };
        if token.is_cancelled() {
            // Cancelled (or taken over) while it waited in the buffer.
            held.lock().unwrap_or_else(PoisonError::into_inner).remove(&job.id);
            running_by_type.add(&job.job_type, -1);
            return;
        }
        self.queue.track_running(job.id, token.clone());
        let run = JobRun {
            queue: self.queue.clone(),
            config: self.config.clone(),
            held: held.clone(),
            token,
            completions: completions.clone(),
            pace: pace.clone(),
            running_by_type: running_by_type.clone(),
        };
        tasks.spawn(run.execute(handler, job));
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
        let remaining: Vec<Held> = {
            let held = held.lock().unwrap_or_else(PoisonError::into_inner);
            held.iter()
                .map(|(id, (attempt, token))| {
                    token.cancel();
                    Held { id: *id, attempt: *attempt }
                })
                .collect()
        };
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

async fn heartbeat_loop(queue: Queue, held: HeldJobs, config: WorkerConfig, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.heartbeat) => {}
        }
        let snapshot: Vec<Held> = held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, (attempt, _))| Held { id: *id, attempt: *attempt })
            .collect();
        if snapshot.is_empty() {
            continue;
        }
        match queue.store().heartbeat(&snapshot, config.lease).await {
            Ok(alive) => {
                let held = held.lock().unwrap_or_else(PoisonError::into_inner);
                for job in snapshot.iter().filter(|h| !alive.contains(&h.id)) {
                    // Cancelled elsewhere, or the lease was lost: stop the handler,
                    // unless the job was claimed again meanwhile (a newer attempt).
                    if let Some((attempt, token)) = held.get(&job.id)
                        && *attempt == job.attempt
                    {
                        token.cancel();
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed"),
        }
    }
}

/// How long handlers take, to size claims: quick jobs are claimed in big
/// batches (few statements per job), slow ones no more than there are free
/// slots, so other workers get their share.
#[derive(Default)]
struct Pace {
    /// Exponentially weighted mean handler time, in microseconds.
    mean_micros: std::sync::atomic::AtomicU64,
}

impl Pace {
    /// Enough jobs to keep every slot busy for about this long.
    const BUFFER_TIME: Duration = Duration::from_millis(20);
    const MAX_CLAIM: usize = 1000;

    fn record(&self, took: Duration) {
        let took = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.mean_micros.load(std::sync::atomic::Ordering::Relaxed);
        let new = if old == 0 { took.max(1) } else { (old * 7 + took) / 8 };
        self.mean_micros.store(new.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    fn claim_size(&self, concurrency: usize) -> usize {
        let mean = self.mean_micros.load(std::sync::atomic::Ordering::Relaxed);
        if mean == 0 {
            return concurrency;
        }
        let per_slot = (Self::BUFFER_TIME.as_micros() as u64 / mean) as usize;
        (concurrency * per_slot).clamp(concurrency, Self::MAX_CLAIM.max(concurrency))
    }
}

type CompletionSender = tokio::sync::mpsc::UnboundedSender<Completion>;

/// Writes finished jobs in batches: whatever piled up while the previous
/// write ran goes in the next statement.
async fn completion_loop(queue: Queue, mut pending: tokio::sync::mpsc::UnboundedReceiver<Completion>) {
    const MAX_BATCH: usize = 1000;
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let applied = persist(|| queue.store().complete_many(&batch)).await.unwrap_or_default();
        let applied: std::collections::HashSet<JobId> = applied.into_iter().collect();
        for done in &batch {
            if applied.contains(&done.held.id) {
                queue.emit(done.held.id, &done.job_type, JobEventKind::Completed);
            } else {
                tracing::debug!(id = %done.held.id, "result discarded: the job was cancelled or taken over");
            }
        }
    }
}

/// One claimed job being run.
struct JobRun {
    queue: Queue,
    config: WorkerConfig,
    held: HeldJobs,
    token: CancellationToken,
    completions: CompletionSender,
    pace: Arc<Pace>,
    running_by_type: RunningByType,
}

/// Jobs started and not yet finished, per type.
#[derive(Clone, Default)]
struct RunningByType(Arc<Mutex<HashMap<String, usize>>>);

impl RunningByType {
    fn add(&self, job_type: &str, delta: isize) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(job_type.to_owned()).or_default();
        *count = count.saturating_add_signed(delta);
    }

    fn get(&self, job_type: &str) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(job_type).copied().unwrap_or(0)
    }
}

impl JobRun {
    async fn execute(self, handler: Arc<dyn ErasedHandler>, job: Job) {
        let held = Held { id: job.id, attempt: job.attempt };
        self.queue.emit(job.id, &job.job_type, JobEventKind::Started { attempt: job.attempt });
        let reporter =
            Arc::new(JobProgress::new(self.queue.clone(), held, job.job_type.clone(), self.config.progress_interval));
        let ctx =
            JobContext { job_id: job.id, attempt: job.attempt, progress: reporter.clone(), cancel: self.token.clone() };
        let started = Instant::now();
        let outcome = AssertUnwindSafe(handler.call(job.input.clone(), ctx)).catch_unwind().await;
        self.pace.record(started.elapsed());
        let progress = reporter.finish();
        match outcome {
            Ok(Ok(output)) => {
                if self.token.is_cancelled() {
                    // Finished as the cancel came: its result is discarded, but what it
                    // reported last (how it ended) is kept, as for a job that stopped.
                    persist(|| self.queue.store().save_progress(held, &progress)).await;
                }
                let completion = Completion { held, job_type: job.job_type.clone(), output, progress };
                if self.completions.send(completion).is_err() {
                    tracing::warn!(id = %job.id, "worker stopped before the result was written; the lease will expire");
                }
            }
            Ok(Err(error)) => {
                if self.token.is_cancelled() {
                    // Stopped because it was cancelled (written by `Queue::cancel`, here or
                    // elsewhere) or taken over: its state is not this worker's to write. It
                    // keeps the progress it reached (the attempt still fences the write).
                    persist(|| self.queue.store().save_progress(held, &progress)).await;
                } else {
                    self.fail(&job, held, error.message, error.retryable).await;
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                self.fail(&job, held, format!("handler panicked: {message}"), true).await;
            }
        }
        self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&job.id);
        self.queue.untrack_running(job.id);
        self.running_by_type.add(&job.job_type, -1);
    }

    async fn fail(&self, job: &Job, held: Held, error: String, retryable: bool) {
        let retry_at = (retryable && job.attempt < job.max_attempts)
            .then(|| now_micros() + self.config.retry.delay_after(job.attempt.max(1) as u32).as_micros() as i64);
        // Said at once, before the write: on a full disk or a lost database the write may
        // never get through, and a waiting caller should still hear why the attempt failed.
        if !self.token.is_cancelled() {
            self.queue.emit(job.id, &job.job_type, JobEventKind::Failed { attempt: job.attempt, error: error.clone() });
        }
        let stored = persist(|| self.queue.store().fail(held, &error, retry_at)).await;
        if stored != Some(true) {
            return;
        }
        let kind = match retry_at {
            Some(at) => JobEventKind::Retrying { error, retry_at: from_micros(at) },
            None => JobEventKind::Dead { error },
        };
        self.queue.emit(job.id, &job.job_type, kind);
    }
}

/// Writes a job's outcome, retrying through short database outages; `None`
/// when it kept failing, in which case the lease expiry hands the job to
/// another attempt.
async fn persist<T, F, Fut>(write: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    // About half a minute of retries: a database restart should not cost a finished job its result.
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        ..RetryPolicy::default()
    };
    let outcome = batch_core::retry(&policy, &CancellationToken::new(), |_| {
        let attempt = write();
        async move { attempt.await.map_err(|e| batch_core::ItemError::retryable(e.to_string())) }
    })
    .await;
    outcome.map_err(|error| tracing::warn!(reason = %error.reason, "could not record a job outcome")).ok()
}

/// The progress reporter handed to handlers: every update goes to
/// subscribers at once, the database gets at most one write per interval.
/// An update that falls inside an interval is written when the interval ends
/// (a trailing write), so other processes never keep showing a stale step
/// while the handler is quiet.
struct JobProgress {
    queue: Queue,
    held: Held,
    job_type: String,
    interval: Duration,
    state: Arc<Mutex<ProgressState>>,
}

#[derive(Default)]
struct ProgressState {
    latest: Progress,
    written_at: Option<Instant>,
    trailing_write_pending: bool,
    finished: bool,
}

enum ProgressWrite {
    Now,
    After(Duration),
    AlreadyPending,
}

impl ProgressState {
    fn plan_write(&mut self, interval: Duration) -> ProgressWrite {
        if self.trailing_write_pending {
            return ProgressWrite::AlreadyPending;
        }
        let wait = self.written_at.and_then(|at| interval.checked_sub(at.elapsed())).filter(|wait| !wait.is_zero());
        if let Some(wait) = wait {
            self.trailing_write_pending = true;
            return ProgressWrite::After(wait);
        }
        self.written_at = Some(Instant::now());
        ProgressWrite::Now
    }

    /// The progress a trailing write should store, or `None` once the job
    /// has finished (its outcome carries the final progress).
    fn take_trailing(&mut self) -> Option<Progress> {
        self.trailing_write_pending = false;
        if self.finished {
            return None;
        }
        self.written_at = Some(Instant::now());
        Some(self.latest.clone())
    }
}

impl JobProgress {
    fn new(queue: Queue, held: Held, job_type: String, interval: Duration) -> Self {
        Self { queue, held, job_type, interval, state: Arc::default() }
    }

    /// The last progress reported; no progress write happens after this.
    fn finish(&self) -> Progress {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.finished = true;
        state.latest.clone()
    }
}

impl ProgressReporter for JobProgress {
    fn report(&self, update: &ProgressUpdate) {
        let plan = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.latest = update.progress.clone();
            state.plan_write(self.interval)
        };
        self.queue.emit(self.held.id, &self.job_type, JobEventKind::Progress { progress: update.progress.clone() });
        let (queue, held) = (self.queue.clone(), self.held);
        match plan {
            ProgressWrite::Now => {
                let progress = update.progress.clone();
                tokio::spawn(async move { save_progress(&queue, held, &progress).await });
            }
            ProgressWrite::After(delay) => {
                let state = self.state.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let trailing = state.lock().unwrap_or_else(PoisonError::into_inner).take_trailing();
                    if let Some(progress) = trailing {
                        save_progress(&queue, held, &progress).await;
                    }
                });
            }
            ProgressWrite::AlreadyPending => {}
        }
    }
}

async fn save_progress(queue: &Queue, held: Held, progress: &Progress) {
    queue.count_progress_write();
    if let Err(error) = queue.store().save_progress(held, progress).await {
        tracing::debug!(%error, "progress write failed; the next one will catch up");
    }
}
