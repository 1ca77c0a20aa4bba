//! Suite `queue`: the job queue on each backend, default worker settings.
//!
//! - burn-down of pre-inserted no-op jobs by one worker, against a baseline
//!   that claims and completes one job per statement; timed by the
//!   handlers' own count, then the worker's stop (which commits the last
//!   completions), not by polling, and failing if any job ran twice;
//! - `enqueue_many` throughput;
//! - enqueue-to-start latency with an idle worker (same process: woken by
//!   the in-process signal; other processes on PostgreSQL by NOTIFY);
//! - database writes per second caused by a job reporting progress
//!   1,000 times a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use anyhow::Result;
use batch_core::{CancellationToken, Progress, ProgressUpdate};
use job_queue::{
    EnqueueOptions, JobContext, JobError, JobEventKind, JobHandler, JobState, NewJob, NoopHandler, Queue, Registry,
    WorkerConfig,
};

use super::{BenchResult, Direction, Measurement, Target};

/// Reports progress every millisecond for `seconds`.
struct Chatty {
    seconds: u64,
}

#[async_trait::async_trait]
impl JobHandler for Chatty {
    type Input = ();
    type Output = ();
    async fn process(&self, (): (), ctx: JobContext) -> Result<(), JobError> {
        let started = Instant::now();
        let total = self.seconds * 1000;
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        for current in 1..=total {
            interval.tick().await;
            let progress = Progress { current, total, failed: 0, message: String::new() };
            ctx.progress.report(&ProgressUpdate::new(progress, started.elapsed(), false));
        }
        Ok(())
    }
}

/// A no-op that counts its runs, so the burn-down is timed by the worker's
/// own progress instead of polling the database (a `batch_status` every
/// 20 ms cost about a quarter of a core on PostgreSQL and slowed what it
/// measured), and a job run twice shows.
struct CountingNoop {
    runs: Arc<AtomicUsize>,
    expected: usize,
    all_ran: Arc<Notify>,
}

#[async_trait::async_trait]
impl JobHandler for CountingNoop {
    type Input = serde_json::Value;
    type Output = ();
    async fn process(&self, _input: serde_json::Value, _ctx: JobContext) -> Result<(), JobError> {
        if self.runs.fetch_add(1, Ordering::SeqCst) + 1 == self.expected {
            self.all_ran.notify_one();
        }
        Ok(())
    }
}

pub fn run(quick: bool) -> Result<Vec<BenchResult>> {
    let jobs = if quick { 5_000 } else { 20_000 };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let sqlite_url = format!("sqlite://{}", dir.path().join("queue.db").display());
        let mut results = backend("sqlite", &sqlite_url, jobs, Target::ValueAtLeast(20_000.0), quick).await?;
        match std::env::var("DATABASE_URL") {
            Ok(url) => {
                let pg = crate::scratch::with_scratch_pg(&url, "bench_queue", |database_url| async move {
                    // Issue 23: 30x in every repetition (graphile_worker_rs tuned: 20-29x).
                    backend("postgres", &database_url, jobs, Target::RatioAtLeast(30.0), quick).await
                });
                results.extend(pg.await?);
            }
            Err(_) => eprintln!("queue: PostgreSQL part SKIPPED (no DATABASE_URL)"),
        }
        Ok(results)
    })
}

fn noop_jobs(count: usize, batch: uuid::Uuid) -> Vec<NewJob> {
    let options = EnqueueOptions { batch_id: Some(batch), ..EnqueueOptions::default() };
    (0..count).map(|i| NewJob::new("noop", serde_json::json!(i)).with_options(options.clone())).collect()
}

async fn backend(name: &str, url: &str, jobs: usize, burn_target: Target, quick: bool) -> Result<Vec<BenchResult>> {
    let queue = Queue::connect(url).await?;
    let settings = format!("{jobs} no-op jobs, one worker in this process, WorkerConfig::default()");

    // Baseline: one claim and one completion statement per job.
    let baseline_jobs = jobs / 4;
    queue.enqueue_many(noop_jobs(baseline_jobs, uuid::Uuid::now_v7())).await?;
    let started = Instant::now();
    let drained = one_at_a_time(url, baseline_jobs).await?;
    let baseline = drained as f64 / started.elapsed().as_secs_f64();

    let batch = uuid::Uuid::now_v7();
    let started = Instant::now();
    queue.enqueue_many(noop_jobs(jobs, batch)).await?;
    let enqueue_rate = jobs as f64 / started.elapsed().as_secs_f64();

    let runs = Arc::new(AtomicUsize::new(0));
    let all_ran = Arc::new(Notify::new());
    let handler = CountingNoop { runs: runs.clone(), expected: jobs, all_ran: all_ran.clone() };
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        queue.worker(Registry::new().with("noop", handler), WorkerConfig::default()).run(shutdown.clone()),
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(300), all_ran.notified())
        .await
        .map_err(|_| anyhow::anyhow!("burn-down did not finish: {} of {jobs} jobs ran", runs.load(Ordering::SeqCst)))?;
    // Done when the last completions are committed, not when the handlers
    // return: a stopping worker writes its pending completions before `run`
    // returns, so its end is that moment (no polling).
    shutdown.cancel();
    worker.await??;
    let burn = jobs as f64 / started.elapsed().as_secs_f64();
    let status = queue.batch_status(batch).await?;
    let completed = status.by_state.get(&JobState::Completed).copied().unwrap_or(0);
    anyhow::ensure!(completed == jobs as u64, "burn-down left jobs unfinished: {status:?}");
    let ran = runs.load(Ordering::SeqCst);
    anyhow::ensure!(ran == jobs, "{ran} handler runs for {jobs} jobs: a job ran twice");

    let (p50, p99) = latency(&queue, if quick { 50 } else { 200 }).await?;
    let writes_per_second = progress_writes(&queue, if quick { 2 } else { 4 }).await?;

    Ok(vec![
        Measurement {
            suite: "queue",
            name: &format!("{name} no-op burn-down"),
            unit: "jobs/s",
            value: burn,
            baseline: Some(("claim+complete one per statement", baseline)),
            direction: Direction::HigherIsBetter,
            target: burn_target,
            settings: settings.clone(),
        }
        .finish(),
        Measurement {
            suite: "queue",
            name: &format!("{name} enqueue_many"),
            unit: "jobs/s",
            value: enqueue_rate,
            baseline: None,
            direction: Direction::HigherIsBetter,
            target: Target::ValueAtLeast(50_000.0),
            settings: format!("{jobs} jobs in one call"),
        }
        .finish(),
        Measurement {
            suite: "queue",
            name: &format!("{name} enqueue-to-start p50"),
            unit: "ms",
            value: p50,
            baseline: None,
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(1.0),
            settings: "idle worker in the same process".to_owned(),
        }
        .finish(),
        Measurement {
            suite: "queue",
            name: &format!("{name} enqueue-to-start p99"),
            unit: "ms",
            value: p99,
            baseline: None,
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(20.0),
            settings: "idle worker in the same process".to_owned(),
        }
        .finish(),
        Measurement {
            suite: "queue",
            name: &format!("{name} progress writes"),
            unit: "writes/s",
            value: writes_per_second,
            baseline: None,
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(2.0),
            settings: "one job reporting progress 1,000 times a second".to_owned(),
        }
        .finish(),
    ])
}

/// The naive worker: claim one job, complete it, repeat, on one connection.
async fn one_at_a_time(url: &str, jobs: usize) -> Result<usize> {
    let mut done = 0;
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        while done < jobs {
            let id: Option<String> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1 WHERE id = (
                    SELECT id FROM jobs WHERE state IN ('queued', 'failed') ORDER BY priority DESC, run_at, id LIMIT 1)
                 RETURNING id",
            )
            .fetch_optional(&pool)
            .await?;
            let Some(id) = id else { break };
            sqlx::query("UPDATE jobs SET state = 'completed' WHERE id = ?").bind(id).execute(&pool).await?;
            done += 1;
        }
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        while done < jobs {
            let id: Option<uuid::Uuid> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1 WHERE id = (
                    SELECT id FROM jobs WHERE state IN ('queued', 'failed') ORDER BY priority DESC, run_at, id
                    LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id",
            )
            .fetch_optional(&pool)
            .await?;
            let Some(id) = id else { break };
            sqlx::query("UPDATE jobs SET state = 'completed' WHERE id = $1").bind(id).execute(&pool).await?;
            done += 1;
        }
    }
    Ok(done)
}

/// p50 and p99 in ms from `enqueue` returning to the job's start event.
async fn latency(queue: &Queue, samples: usize) -> Result<(f64, f64)> {
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        queue.worker(Registry::new().with("noop", NoopHandler), WorkerConfig::default()).run(shutdown.clone()),
    );
    let mut events = queue.subscribe();
    // One job first, so the samples measure a running worker, not its start-up.
    let warm_up = queue.enqueue("noop", &0, EnqueueOptions::default()).await?;
    loop {
        let event = events.recv().await?;
        if event.job_id == warm_up && event.kind == JobEventKind::Completed {
            break;
        }
    }
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let id = queue.enqueue("noop", &0, EnqueueOptions::default()).await?;
        let enqueued = Instant::now();
        loop {
            let event = events.recv().await?;
            if event.job_id == id && matches!(event.kind, JobEventKind::Started { .. }) {
                latencies.push(enqueued.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        // Spaced out, so each sample starts from an idle worker rather than a queue backlog.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    worker.await??;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

async fn progress_writes(queue: &Queue, seconds: u64) -> Result<f64> {
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        queue.worker(Registry::new().with("chatty", Chatty { seconds }), WorkerConfig::default()).run(shutdown.clone()),
    );
    let before = queue.progress_writes();
    let id = queue.enqueue("chatty", &(), EnqueueOptions::default()).await?;
    let job = queue.wait(id, Duration::from_secs(seconds * 10 + 10)).await?;
    anyhow::ensure!(job.state == JobState::Completed, "progress job ended {}", job.state);
    let writes = queue.progress_writes() - before + 1; // + the final write with the completion
    shutdown.cancel();
    worker.await??;
    Ok(writes as f64 / seconds as f64)
}
