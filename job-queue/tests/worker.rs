//! The worker suite (progress, cancel, retries, panics, leases, shutdown,
//! claims and limits), on SQLite and on PostgreSQL (with `DATABASE_URL`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batch_core::{Progress, ProgressUpdate};
use common::TestDb;
use common::workers::*;
use job_queue::{
    ClaimOnly, EnqueueOptions, JobContext, JobError, JobEventKind, JobHandler, JobState, NewJob, Registry, WorkerConfig,
};
use serde_json::json;

/// Reports progress `steps` times as fast as it can, then returns.
struct Chatty {
    steps: u64,
}

#[async_trait::async_trait]
impl JobHandler for Chatty {
    type Input = ();
    type Output = u64;
    async fn process(&self, (): (), ctx: JobContext) -> Result<u64, JobError> {
        let started = std::time::Instant::now();
        for i in 1..=self.steps {
            let progress = Progress { current: i, total: self.steps, failed: 0, message: format!("step {i}") };
            ctx.progress.report(&ProgressUpdate::new(progress, started.elapsed(), i == self.steps));
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(self.steps)
    }
}

async fn progress_reaches_subscribers_and_is_throttled_in_the_database(db: &TestDb) {
    let queue = db.queue().await;
    let observer = db.queue().await; // another handle, as `status` in another process would be
    let mut events = queue.subscribe();
    let id = queue.enqueue("chatty", &(), EnqueueOptions::default()).await.unwrap();
    let config = WorkerConfig {
        heartbeat: Duration::from_secs(3600),
        poll_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let (before, writes_before) = (queue.statements(), queue.progress_writes());
    let started = std::time::Instant::now();
    let worker = spawn_worker(&queue, Registry::new().with("chatty", Chatty { steps: 1000 }), config);

    let mut seen_in_database = 0;
    for _ in 0..100 {
        let job = observer.get(id).await.unwrap().unwrap();
        if job.state == JobState::Completed {
            break;
        }
        seen_in_database = seen_in_database.max(job.progress.current);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = queue.wait(id, WAIT).await.unwrap();
    let ran_for = started.elapsed();
    let statements = queue.statements() - before;
    let progress_writes = queue.progress_writes() - writes_before;
    stop(worker).await;

    assert_eq!(job.progress.current, 1000, "final progress is stored");
    assert_eq!(job.output, Some(json!(1000)));
    assert!(seen_in_database > 0, "another handle saw progress while the job ran");
    // 1,000 reports in ~1 s with a 1 s interval: the first written at once,
    // the burst's last one when the interval ends; a slow run adds one a second.
    let allowed_writes = 2 + ran_for.as_secs();
    assert!(progress_writes <= allowed_writes, "{progress_writes} progress writes in {ran_for:?}");
    let others = statements - progress_writes;
    assert!(others <= 7, "{others} statements besides progress writes: claims, polls, the completion");
    let mut progress_events = 0;
    loop {
        match events.try_recv() {
            Ok(event) if matches!(event.kind, JobEventKind::Progress { .. }) => progress_events += 1,
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    assert!(progress_events >= 900, "subscribers see every update ({progress_events})");
}

/// Reports two steps back to back, then goes quiet until cancelled.
struct BurstThenQuiet;

#[async_trait::async_trait]
impl JobHandler for BurstThenQuiet {
    type Input = ();
    type Output = ();
    async fn process(&self, (): (), ctx: JobContext) -> Result<(), JobError> {
        for current in 1..=2 {
            let progress = Progress { current, total: 10, failed: 0, message: format!("step {current}") };
            ctx.progress.report(&ProgressUpdate::new(progress, Duration::ZERO, false));
        }
        ctx.cancel.cancelled().await;
        Err(JobError::permanent("cancelled"))
    }
}

async fn the_last_update_of_a_burst_reaches_the_database(db: &TestDb) {
    let queue = db.queue().await;
    let observer = db.queue().await;
    let id = queue.enqueue("burst", &(), EnqueueOptions::default()).await.unwrap();
    let config = WorkerConfig { progress_interval: Duration::from_millis(300), ..fast_config() };
    let worker = spawn_worker(&queue, Registry::new().with("burst", BurstThenQuiet), config);
    // Step 1 is written at once, step 2 falls inside the interval: without a
    // trailing write the database would show step 1 for as long as the job is quiet.
    wait_for_job(&observer, id, |job| job.progress.current == 2 && job.progress.message == "step 2").await;
    assert!(queue.cancel(id).await.unwrap());
    stop(worker).await;
}

/// When cancelled, reports a burst of steps, then its last word, and stops.
struct LastWord;

#[async_trait::async_trait]
impl JobHandler for LastWord {
    type Input = ();
    type Output = ();
    async fn process(&self, (): (), ctx: JobContext) -> Result<(), JobError> {
        ctx.cancel.cancelled().await;
        for current in 1..=300 {
            let progress = Progress { current, total: 301, failed: 0, message: format!("step {current}") };
            ctx.progress.report(&ProgressUpdate::new(progress, Duration::ZERO, false));
        }
        let last = Progress { current: 301, total: 301, failed: 0, message: "the last word".into() };
        ctx.progress.report(&ProgressUpdate::new(last, Duration::ZERO, true));
        Err(JobError::permanent("cancelled"))
    }
}

/// A job's last progress (how a cancelled job ended) is what stays in the
/// database: a progress write planned before it, still waiting for a
/// connection, never lands after it. With no interval, every step of the
/// burst is a write of its own.
async fn a_cancelled_jobs_last_word_is_not_overwritten_by_earlier_steps(db: &TestDb) {
    let queue = db.queue().await;
    let observer = db.queue().await;
    let config = WorkerConfig { progress_interval: Duration::ZERO, ..fast_config() };
    let worker = spawn_worker(&queue, Registry::new().with("last-word", LastWord), config);
    for round in 0..3 {
        let id = queue.enqueue("last-word", &(), EnqueueOptions::default()).await.unwrap();
        wait_for_job(&observer, id, |job| job.state == JobState::Running).await;
        assert!(queue.cancel(id).await.unwrap());
        wait_for_job(&observer, id, |job| job.progress.current == 301).await;
        // Whatever was still on its way has landed by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let job = observer.get(id).await.unwrap().unwrap();
        assert_eq!(job.progress.message, "the last word", "round {round}: {:?}", job.progress);
    }
    stop(worker).await;
}

/// Waits for cancellation (or, if `ignore_cancel`, sleeps and succeeds anyway).
struct Patient {
    saw_cancel: Arc<AtomicBool>,
    started: Arc<AtomicUsize>,
    ignore_cancel: bool,
}

#[async_trait::async_trait]
impl JobHandler for Patient {
    type Input = ();
    type Output = &'static str;
    async fn process(&self, (): (), ctx: JobContext) -> Result<&'static str, JobError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        if self.ignore_cancel {
            // Sees the cancel, and returns a result anyway.
            ctx.cancel.cancelled().await;
            self.saw_cancel.store(true, Ordering::SeqCst);
            return Ok("finished anyway");
        }
        tokio::select! {
            () = ctx.cancel.cancelled() => {
                self.saw_cancel.store(true, Ordering::SeqCst);
                Err(JobError::permanent("stopped"))
            }
            () = tokio::time::sleep(Duration::from_secs(60)) => Ok("too late"),
        }
    }
}

fn patient(ignore_cancel: bool) -> (Patient, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let saw = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    (Patient { saw_cancel: saw.clone(), started: started.clone(), ignore_cancel }, saw, started)
}

async fn cancel_reaches_queued_and_running_jobs(db: &TestDb) {
    let queue = db.queue().await;
    let queued = queue.enqueue("patient", &(), EnqueueOptions::default()).await.unwrap();
    assert!(queue.cancel(queued).await.unwrap());
    assert_eq!(queue.get(queued).await.unwrap().unwrap().state, JobState::Cancelled);
    assert!(!queue.cancel(queued).await.unwrap(), "already ended");

    let (handler, saw_cancel, started) = patient(false);
    let worker = spawn_worker(&queue, Registry::new().with("patient", handler), fast_config());
    let running = queue.enqueue("patient", &(), EnqueueOptions::default()).await.unwrap();
    wait_for(|| started.load(Ordering::SeqCst) == 1).await;
    assert!(queue.cancel(running).await.unwrap());
    wait_for(|| saw_cancel.load(Ordering::SeqCst)).await;
    let job = queue.wait(running, WAIT).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.last_error, None, "the handler's error after cancel is discarded");
    stop(worker).await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "the cancelled queued job never ran");
}

async fn cancel_from_another_handle_and_ignored_cancel(db: &TestDb) {
    let queue = db.queue().await;
    let other = db.queue().await; // stands for another process
    let (handler, _, started) = patient(false);
    let worker = spawn_worker(&queue, Registry::new().with("patient", handler), fast_config());
    let id = queue.enqueue("patient", &(), EnqueueOptions::default()).await.unwrap();
    wait_for(|| started.load(Ordering::SeqCst) == 1).await;
    assert!(other.cancel(id).await.unwrap());
    // Noticed at the next heartbeat, then the handler stops.
    wait_for_job(&queue, id, |j| j.state == JobState::Cancelled).await;
    stop(worker).await;

    let (stubborn, returned, started) = patient(true);
    let worker = spawn_worker(&queue, Registry::new().with("patient", stubborn), fast_config());
    let id = queue.enqueue("patient", &(), EnqueueOptions::default()).await.unwrap();
    wait_for(|| started.load(Ordering::SeqCst) == 1).await;
    assert!(queue.cancel(id).await.unwrap(), "the job was running: the cancel takes effect");
    wait_for(|| returned.load(Ordering::SeqCst)).await;
    stop(worker).await; // writes (or fences off) whatever the handler returned
    let job = queue.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.output, None, "the result of an ignored cancel is discarded");
}

/// A cancel from this process fires the handler's token before its own write;
/// a handler that returns a result at once must not slip its completion in
/// first. Many jobs at once, so the cancels queue for connections while the
/// completer is free to write.
async fn a_local_cancel_wins_over_a_result_returned_at_once(db: &TestDb) {
    const JOBS: usize = 24;
    let queue = db.queue().await;
    let (stubborn, _, started) = patient(true);
    let config = WorkerConfig { concurrency: JOBS, ..fast_config() };
    let worker = spawn_worker(&queue, Registry::new().with("patient", stubborn), config);
    let jobs: Vec<_> = (0..JOBS).map(|_| job_queue::NewJob::new("patient", json!(null))).collect();
    let ids = queue.enqueue_many(jobs).await.unwrap();
    wait_for(|| started.load(Ordering::SeqCst) == JOBS).await;
    let cancelled = futures::future::join_all(ids.iter().map(|id| queue.cancel(*id))).await;
    for (id, cancelled) in ids.iter().zip(cancelled) {
        assert!(cancelled.unwrap(), "job {id}: the cancel of a running job must take effect");
    }
    stop(worker).await;
    for id in &ids {
        let job = queue.get(*id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Cancelled, "job {id}");
        assert_eq!(job.output, None, "job {id}: the result of an ignored cancel is discarded");
    }
}

async fn retries_back_off_then_die_and_can_be_retried(db: &TestDb) {
    let queue = db.queue().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let succeed = Arc::new(AtomicBool::new(false));
    let registry = Registry::new()
        .with("flaky", Flaky { calls: calls.clone(), succeed: succeed.clone(), retryable: true })
        .with("hopeless", Flaky { calls: Arc::default(), succeed: Arc::default(), retryable: false });
    let mut events = queue.subscribe();
    let worker = spawn_worker(&queue, registry, fast_config());
    let id = queue.enqueue("flaky", &(), EnqueueOptions::default()).await.unwrap();
    let job = queue.wait(id, WAIT).await.unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Dead, 3));
    assert_eq!(job.last_error.as_deref(), Some("flaky call 3"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let (mut failed, mut retrying, mut dead) = (0, 0, 0);
    // The events follow the database writes; read until the last one.
    while dead == 0 {
        let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
        match event.kind {
            JobEventKind::Failed { .. } if event.job_id == id => failed += 1,
            JobEventKind::Retrying { .. } if event.job_id == id => retrying += 1,
            JobEventKind::Dead { .. } if event.job_id == id => dead += 1,
            _ => {}
        }
    }
    assert_eq!((failed, retrying, dead), (3, 2, 1));

    succeed.store(true, Ordering::SeqCst);
    assert!(queue.retry(id).await.unwrap());
    let output: usize = queue.wait_output(id, WAIT).await.unwrap();
    assert_eq!(output, 4);
    let retried = queue.get(id).await.unwrap().unwrap();
    assert_eq!(retried.last_error, None, "a retried job that then completed shows no earlier error");

    let hopeless = queue.enqueue("hopeless", &(), EnqueueOptions::default()).await.unwrap();
    let job = queue.wait(hopeless, WAIT).await.unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Dead, 1), "a permanent error is not retried");
    stop(worker).await;
}

struct Panicky;

#[async_trait::async_trait]
impl JobHandler for Panicky {
    type Input = u32;
    type Output = u32;
    async fn process(&self, n: u32, _ctx: JobContext) -> Result<u32, JobError> {
        assert!(n != 13, "thirteen is unlucky");
        Ok(n)
    }
}

async fn a_panicking_handler_fails_its_job_and_the_worker_lives_on(db: &TestDb) {
    let queue = db.queue().await;
    let worker = spawn_worker(&queue, Registry::new().with("panicky", Panicky), fast_config());
    let bad =
        queue.enqueue("panicky", &13, EnqueueOptions { max_attempts: 2, ..EnqueueOptions::default() }).await.unwrap();
    let job = queue.wait(bad, WAIT).await.unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert!(job.last_error.unwrap().contains("handler panicked: thirteen is unlucky"));
    let good = queue.enqueue("panicky", &7, EnqueueOptions::default()).await.unwrap();
    assert_eq!(queue.wait_output::<u32>(good, WAIT).await.unwrap(), 7);
    stop(worker).await;
}

async fn unknown_types_and_malformed_input_die_with_a_reason(db: &TestDb) {
    let queue = db.queue().await;
    let orphan = queue.enqueue("nobody-handles-this", &1, EnqueueOptions::default()).await.unwrap();
    let malformed = queue.enqueue("panicky", &json!({"not": "a number"}), EnqueueOptions::default()).await.unwrap();
    let config = WorkerConfig { unhandled_grace: Some(Duration::ZERO), ..fast_config() };
    let worker = spawn_worker(&queue, Registry::new().with("panicky", Panicky), config);
    let job = queue.wait(orphan, WAIT).await.unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.last_error.as_deref(), Some("no handler is registered for job type \"nobody-handles-this\""));
    let job = queue.wait(malformed, WAIT).await.unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Dead, 1));
    assert!(job.last_error.unwrap().starts_with("input does not match the job type"));
    stop(worker).await;
}

async fn an_expired_lease_is_rescued_and_the_stale_attempt_fenced(db: &TestDb) {
    let queue = db.queue().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let returned = Arc::new(AtomicBool::new(false));
    // Worker A stops heartbeating (hung) while its handler still runs; its
    // one slot stays busy, so only B can take the job over.
    let hung = WorkerConfig {
        concurrency: 1,
        lease: Duration::from_millis(300),
        heartbeat: Duration::from_secs(3600),
        worker_id: "hung".into(),
        ..fast_config()
    };
    let a = spawn_worker(
        &queue,
        Registry::new().with("slow", Gated { name: "from A", release: release.clone(), returned: returned.clone() }),
        hung,
    );
    let id = queue.enqueue("slow", &(), EnqueueOptions::default()).await.unwrap();
    wait_for_job(&queue, id, |j| j.state == JobState::Running).await;
    let b = spawn_worker(
        &queue,
        Registry::new().with("slow", Slow { name: "from B", delay: Duration::ZERO }),
        WorkerConfig { worker_id: "healthy".into(), ..fast_config() },
    );
    let job = queue.wait(id, WAIT).await.unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempt, 2, "the rescue counts as an attempt");
    assert_eq!(job.output, Some(json!("from B")));
    release.notify_one(); // A's handler finishes late and tries to complete
    wait_for(|| returned.load(Ordering::SeqCst)).await;
    stop(a).await; // flushes A's completion write
    stop(b).await;
    let job = queue.get(id).await.unwrap().unwrap();
    assert_eq!(job.output, Some(json!("from B")), "the stale attempt's result was fenced off");
}

/// After a database outage longer than the lease, a live worker's leases
/// have expired; it must not rescue its own job from itself (its next
/// heartbeat renews the lease), or the job loses an attempt per outage.
async fn a_worker_does_not_rescue_its_own_jobs(db: &TestDb) {
    let queue = db.queue().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let returned = Arc::new(AtomicBool::new(false));
    let late_heartbeat = WorkerConfig {
        concurrency: 1,
        // Expired as soon as it is taken: the worker holds a job whose lease ran out.
        lease: Duration::from_millis(1),
        heartbeat: Duration::from_secs(3600),
        ..fast_config()
    };
    let worker = spawn_worker(
        &queue,
        Registry::new().with("slow", Gated { name: "done", release: release.clone(), returned: returned.clone() }),
        late_heartbeat,
    );
    let id = queue.enqueue("slow", &(), EnqueueOptions::default()).await.unwrap();
    wait_for_job(&queue, id, |j| j.state == JobState::Running).await;
    // Many maintenance rounds (one reap statement each poll interval) pass with the lease expired.
    let seen = queue.statements();
    wait_for(|| queue.statements() >= seen + 20).await;
    let job = queue.get(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Running, 1), "{:?}", job.last_error);
    release.notify_one();
    let job = queue.wait(id, WAIT).await.unwrap();
    assert_eq!((job.state, job.attempt, job.output), (JobState::Completed, 1, Some(json!("done"))));
    stop(worker).await;
}

async fn graceful_shutdown_finishes_quick_jobs_and_releases_slow_ones(db: &TestDb) {
    let queue = db.queue().await;
    let registry = Registry::new()
        .with("quick", Slow { name: "quick", delay: Duration::from_millis(100) })
        .with("slow", Slow { name: "slow", delay: Duration::from_secs(30) });
    let config = WorkerConfig { shutdown_timeout: Duration::from_millis(500), ..fast_config() };
    let worker = spawn_worker(&queue, registry, config);
    let mut events = queue.subscribe();
    let quick = queue.enqueue("quick", &(), EnqueueOptions::default()).await.unwrap();
    let slow = queue.enqueue("slow", &(), EnqueueOptions::default()).await.unwrap();
    // Both handlers run (a claimed job shows `running` a moment before a slot starts it).
    let mut started = std::collections::HashSet::new();
    while started.len() < 2 {
        let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
        if matches!(event.kind, job_queue::JobEventKind::Started { .. }) {
            started.insert(event.job_id);
        }
    }
    assert_eq!(started, [quick, slow].into());
    stop(worker).await;
    assert_eq!(queue.get(quick).await.unwrap().unwrap().state, JobState::Completed);
    let slow = queue.get(slow).await.unwrap().unwrap();
    assert_eq!((slow.state, slow.attempt), (JobState::Queued, 0), "released without using up an attempt");
}

/// A job still running at shutdown is asked to stop; one that stops at
/// once (a transaction rolled back at a chunk boundary) goes back to the
/// queue with its attempt returned, neither dead nor left running; one
/// that finishes anyway as it stops is completed, not run again.
async fn a_job_stopped_by_shutdown_goes_back_to_the_queue(db: &TestDb) {
    let queue = db.queue().await;
    let stopping = Patient { saw_cancel: Arc::default(), started: Arc::default(), ignore_cancel: false };
    let finishing = Patient { saw_cancel: Arc::default(), started: Arc::default(), ignore_cancel: true };
    let (stopped_saw, finished_saw) = (stopping.saw_cancel.clone(), finishing.saw_cancel.clone());
    let started = [stopping.started.clone(), finishing.started.clone()];
    let registry = Registry::new().with("stops", stopping).with("finishes", finishing);
    let config = WorkerConfig { shutdown_timeout: Duration::from_millis(200), ..fast_config() };
    let worker = spawn_worker(&queue, registry, config);
    let one = EnqueueOptions { max_attempts: 1, ..EnqueueOptions::default() };
    let stops = queue.enqueue("stops", &(), one.clone()).await.unwrap();
    let finishes = queue.enqueue("finishes", &(), one).await.unwrap();
    // Their handlers run (a claimed job shows `running` a moment before a slot starts it).
    wait_for(|| started.iter().all(|count| count.load(Ordering::SeqCst) == 1)).await;
    stop(worker).await;
    assert!(stopped_saw.load(Ordering::SeqCst) && finished_saw.load(Ordering::SeqCst), "both were asked to stop");
    let stops = queue.get(stops).await.unwrap().unwrap();
    assert_eq!((stops.state, stops.attempt), (JobState::Queued, 0), "{stops:?}");
    assert_eq!(queue.get(finishes).await.unwrap().unwrap().state, JobState::Completed);
}

/// Counts how many run at once.
struct Gauged {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl JobHandler for Gauged {
    type Input = ();
    type Output = ();
    async fn process(&self, (): (), _ctx: JobContext) -> Result<(), JobError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn a_type_limit_caps_its_jobs_but_not_others(db: &TestDb) {
    let queue = db.queue().await;
    let (heavy_peak, light_peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let registry = Registry::new()
        .with("heavy", Gauged { now: Arc::default(), peak: heavy_peak.clone() })
        .with("light", Gauged { now: Arc::default(), peak: light_peak.clone() });
    let mut ids = Vec::new();
    for job_type in ["heavy", "light"] {
        let jobs = (0..4).map(|_| NewJob::new(job_type, json!(null))).collect();
        ids.extend(queue.enqueue_many(jobs).await.unwrap());
    }
    let config = WorkerConfig { type_limits: [("heavy".to_owned(), 1)].into(), ..fast_config() };
    let worker = spawn_worker(&queue, registry, config);
    for id in ids {
        assert_eq!(queue.wait(id, WAIT).await.unwrap().state, JobState::Completed);
    }
    stop(worker).await;
    assert_eq!(heavy_peak.load(Ordering::SeqCst), 1, "the limited type ran one at a time");
    assert!(light_peak.load(Ordering::SeqCst) >= 2, "other types still ran in parallel");
}

/// Takes a while and records which worker ran it.
struct Timed {
    worker: &'static str,
    ran: Arc<Mutex<Vec<&'static str>>>,
}

#[async_trait::async_trait]
impl JobHandler for Timed {
    type Input = ();
    type Output = ();
    async fn process(&self, (): (), _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.ran.lock().unwrap().push(self.worker);
        Ok(())
    }
}

/// Quick jobs are claimed ahead of the slots, slow ones only for free
/// slots: a worker that knows its jobs are slow leaves the rest to others.
async fn slow_jobs_are_claimed_only_for_free_slots(db: &TestDb) {
    let queue = db.queue().await;
    let ran: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let config = WorkerConfig { concurrency: 2, ..fast_config() };
    let first =
        spawn_worker(&queue, Registry::new().with("slow", Timed { worker: "first", ran: ran.clone() }), config.clone());
    // The first worker learns how long these jobs take.
    let warm_up = queue.enqueue("slow", &(), EnqueueOptions::default()).await.unwrap();
    assert_eq!(queue.wait(warm_up, WAIT).await.unwrap().state, JobState::Completed);
    let ids = queue.enqueue_many((0..8).map(|_| NewJob::new("slow", json!(null))).collect()).await.unwrap();
    let second =
        spawn_worker(&queue, Registry::new().with("slow", Timed { worker: "second", ran: ran.clone() }), config);
    for id in ids {
        assert_eq!(queue.wait(id, WAIT).await.unwrap().state, JobState::Completed);
    }
    stop(first).await;
    stop(second).await;
    let ran = ran.lock().unwrap();
    let by_second = ran.iter().filter(|w| **w == "second").count();
    assert!(by_second >= 2, "the second worker ran {by_second} of 8 jobs: the first held them ahead ({ran:?})");
}

/// A job cancelled mid-run keeps the progress it had reached, even when
/// the throttle had not written it yet.
async fn a_cancelled_job_keeps_the_progress_it_reached(db: &TestDb) {
    let queue = db.queue().await;
    let observer = db.queue().await;
    let id = queue.enqueue("burst", &(), EnqueueOptions::default()).await.unwrap();
    // Step 1 is written at once; step 2 only at the interval's end, an hour away.
    let config = WorkerConfig { progress_interval: Duration::from_secs(3600), ..fast_config() };
    let worker = spawn_worker(&queue, Registry::new().with("burst", BurstThenQuiet), config);
    wait_for_job(&observer, id, |job| job.progress.current == 1).await;
    assert!(observer.cancel(id).await.unwrap());
    wait_for_job(&observer, id, |job| job.progress.current == 2).await;
    let job = observer.get(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.progress.message.as_str()), (JobState::Cancelled, "step 2"));
    stop(worker).await;
}

/// `runs_here` says whether this process's worker still holds a job; once
/// it does not, a cancelled job's progress is already stored (a command
/// stopped by Ctrl-C tells how far the job got from that).
async fn once_let_go_a_cancelled_jobs_progress_is_stored(db: &TestDb) {
    let queue = db.queue().await;
    let id = queue.enqueue("burst", &(), EnqueueOptions::default()).await.unwrap();
    let config = WorkerConfig { progress_interval: Duration::from_secs(3600), ..fast_config() };
    let worker = spawn_worker(&queue, Registry::new().with("burst", BurstThenQuiet), config);
    wait_for_job(&queue, id, |job| job.progress.current == 1).await;
    assert!(queue.runs_here(id), "running in this process");
    assert!(queue.cancel(id).await.unwrap());
    wait_for(|| !queue.runs_here(id)).await;
    let job = queue.get(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.progress.current), (JobState::Cancelled, 2), "{job:?}");
    stop(worker).await;
}

/// A scoped worker (a command running its own folder's jobs) claims jobs
/// whose dedup key starts with its prefix and any job of its free types;
/// every other job stays queued for other workers.
async fn a_scoped_worker_claims_only_its_own_jobs(db: &TestDb) {
    let queue = db.queue().await;
    let keyed = |key: &str| EnqueueOptions { dedup_key: Some(key.into()), ..EnqueueOptions::default() };
    let mine = queue.enqueue("record", &"mine", keyed("folder:4:/a/b:sync")).await.unwrap();
    let free = queue.enqueue("embed", &"free", EnqueueOptions::default()).await.unwrap();
    let other = queue.enqueue("record", &"other", keyed("folder:6:/a/b:c:sync")).await.unwrap();
    let unkeyed = queue.enqueue("record", &"unkeyed", EnqueueOptions::default()).await.unwrap();
    let registry = Registry::new().with("record", Recorder::default()).with("embed", Recorder::default());
    let scope = ClaimOnly { dedup_prefix: Some("folder:4:/a/b:".into()), types: vec!["embed".into()] };
    let worker = spawn_worker(&queue, registry, WorkerConfig { claim_only: Some(scope), ..fast_config() });
    for id in [mine, free] {
        assert_eq!(queue.wait(id, WAIT).await.unwrap().state, JobState::Completed);
    }
    // A few more polls, then the others must still be waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(worker).await;
    for id in [other, unkeyed] {
        assert_eq!(queue.get(id).await.unwrap().unwrap().state, JobState::Queued);
    }
}

scratch_pg::backends!(
    TestDb;
    progress_reaches_subscribers_and_is_throttled_in_the_database,
    the_last_update_of_a_burst_reaches_the_database,
    a_cancelled_jobs_last_word_is_not_overwritten_by_earlier_steps,
    cancel_reaches_queued_and_running_jobs,
    cancel_from_another_handle_and_ignored_cancel,
    a_local_cancel_wins_over_a_result_returned_at_once,
    retries_back_off_then_die_and_can_be_retried,
    a_panicking_handler_fails_its_job_and_the_worker_lives_on,
    unknown_types_and_malformed_input_die_with_a_reason,
    an_expired_lease_is_rescued_and_the_stale_attempt_fenced,
    a_worker_does_not_rescue_its_own_jobs,
    graceful_shutdown_finishes_quick_jobs_and_releases_slow_ones,
    a_job_stopped_by_shutdown_goes_back_to_the_queue,
    a_type_limit_caps_its_jobs_but_not_others,
    slow_jobs_are_claimed_only_for_free_slots,
    a_cancelled_job_keeps_the_progress_it_reached,
    once_let_go_a_cancelled_jobs_progress_is_stored,
    a_scoped_worker_claims_only_its_own_jobs,
);
