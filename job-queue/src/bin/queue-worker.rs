//! A worker process for scale-out tests and benchmarks: runs `noop` jobs and
//! `record` jobs (which insert their job id into `side_effects`) from the
//! queue at `--url` until `--idle-exit` passes with no work.
//!
//! `queue-worker --url postgres://... [--concurrency N] [--idle-exit MS]`

use std::time::Duration;

use batch_core::CancellationToken;
use job_queue::{JobContext, JobError, JobHandler, NoopHandler, Queue, Registry, WorkerConfig};

/// Writes one row per run, so a test can count how often each job ran.
struct Record {
    pool: sqlx::PgPool,
}

#[async_trait::async_trait]
impl JobHandler for Record {
    type Input = serde_json::Value;
    type Output = ();
    async fn process(&self, _input: serde_json::Value, ctx: JobContext) -> Result<(), JobError> {
        sqlx::query("INSERT INTO side_effects (job_id, worker_pid) VALUES ($1, $2)")
            .bind(ctx.job_id)
            .bind(i64::from(std::process::id()))
            .execute(&self.pool)
            .await
            .map_err(|e| JobError::retryable(e.to_string()))?;
        Ok(())
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = flag(&args, "--url").ok_or("--url is required")?;
    let concurrency: usize = flag(&args, "--concurrency").map_or(Ok(16), |c| c.parse())?;
    let idle_exit = Duration::from_millis(flag(&args, "--idle-exit").map_or(Ok(1000), |c| c.parse())?);
    let queue = Queue::connect(&url).await?;
    let mut registry = Registry::new().with("noop", NoopHandler);
    if url.starts_with("postgres") {
        // Several of these processes share one server: a side effect is one
        // small insert, so a few connections serve every concurrent job.
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(3).connect(&url).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS side_effects (job_id UUID NOT NULL, worker_pid BIGINT NOT NULL)")
            .execute(&pool)
            .await?;
        registry.register("record", Record { pool });
    }
    let shutdown = CancellationToken::new();
    let config = WorkerConfig { concurrency, ..WorkerConfig::default() };
    let worker = tokio::spawn(queue.worker(registry, config).run(shutdown.clone()));
    // Exit once nothing is queued or running for `idle_exit`.
    let mut idle_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if queue.unfinished(None).await? > 0 {
            idle_since = tokio::time::Instant::now();
        } else if idle_since.elapsed() >= idle_exit {
            break;
        }
    }
    shutdown.cancel();
    worker.await??;
    Ok(())
}
