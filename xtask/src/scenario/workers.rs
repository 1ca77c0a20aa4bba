//! `workers`: 1, 2 and 4 `queue-worker` processes drain the same mix of
//! no-op and DB-writing jobs from one PostgreSQL. Every job must complete
//! exactly once (one side-effect row per writing job); jobs/s is reported
//! for each process count.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use job_queue::{NewJob, Queue};

use super::Checks;

pub fn run(quick: bool) -> Result<()> {
    let url = std::env::var("DATABASE_URL").context("the workers scenario needs DATABASE_URL (PostgreSQL)")?;
    let jobs = if quick { 2_000 } else { 10_000 };
    let worker = super::workspace_binary("job-queue", "queue-worker")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut checks = Checks::default();
    let mut rates = Vec::new();
    for processes in [1, 2, 4] {
        let rate = runtime.block_on(drain(&url, &worker, processes, jobs, &mut checks))?;
        rates.push((processes, rate));
    }
    for (processes, rate) in &rates {
        println!("     {processes} process(es): {rate:.0} jobs/s");
    }
    checks.finish()
}

async fn drain(url: &str, worker: &PathBuf, processes: usize, jobs: usize, checks: &mut Checks) -> Result<f64> {
    crate::scratch::with_scratch_pg(url, "scenario_workers", |db_url| async move {
        drain_on(&db_url, worker, processes, jobs, checks).await
    })
    .await
}

async fn drain_on(url: &str, worker: &PathBuf, processes: usize, jobs: usize, checks: &mut Checks) -> Result<f64> {
    let queue = Queue::connect(url).await?;
    let pool = sqlx::PgPool::connect(url).await?;
    sqlx::query("CREATE TABLE side_effects (job_id UUID NOT NULL, worker_pid BIGINT NOT NULL)").execute(&pool).await?;
    let batch: Vec<NewJob> =
        (0..jobs).map(|i| NewJob::new(if i % 2 == 0 { "noop" } else { "record" }, serde_json::json!(i))).collect();
    queue.enqueue_many(batch).await?;

    let started = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(worker)
                .args(["--url", url, "--concurrency", "16", "--idle-exit", "500"])
                .spawn()
                .context("starting queue-worker")
        })
        .collect::<Result<_>>()?;
    let mut all_ok = true;
    for mut child in children {
        all_ok &= tokio::task::spawn_blocking(move || child.wait()).await??.success();
    }
    // The workers idle for 500 ms before exiting; first start to last completion is the work.
    // The queue stores times as microseconds since the epoch.
    let last: f64 =
        sqlx::query_scalar("SELECT COALESCE((MAX(finished_at) - MIN(started_at))::float8 / 1e6, 0) FROM jobs")
            .fetch_one(&pool)
            .await?;
    let elapsed = if last > 0.0 { last } else { started.elapsed().as_secs_f64() };

    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'completed'").fetch_one(&pool).await?;
    let (runs, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT job_id) FROM side_effects").fetch_one(&pool).await?;
    let writers = jobs as i64 / 2;
    checks.check(all_ok, &format!("{processes} worker process(es) exited cleanly"));
    checks.check(completed == jobs as i64, &format!("{completed} of {jobs} jobs completed ({processes} processes)"));
    checks.check(
        runs == writers && distinct == writers,
        &format!("{runs} side effects for {writers} writing jobs, {distinct} distinct: each exactly once"),
    );
    pool.close().await;
    Ok(jobs as f64 / elapsed)
}
