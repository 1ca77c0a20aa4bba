//! Real worker processes on one PostgreSQL database.

mod common;

use std::process::Command;

use job_queue::{NewJob, Queue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_run_every_job_exactly_once() {
    let postgres = scratch_pg::Backend::Postgres { var: "DATABASE_URL" };
    let test = "four_worker_processes_run_every_job_exactly_once";
    let Some(db) = <common::TestDb as scratch_pg::Fixture>::open(postgres, test).await else {
        return;
    };
    let queue: Queue = db.queue().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE side_effects (job_id UUID NOT NULL, worker_pid BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let jobs: Vec<NewJob> = (0..2000).map(|i| NewJob::new("record", serde_json::json!(i))).collect();
    queue.enqueue_many(jobs).await.unwrap();

    let workers: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_queue-worker"))
                .args(["--url", &db.url, "--concurrency", "8", "--idle-exit", "1000"])
                .spawn()
                .unwrap()
        })
        .collect();
    let mut pids = std::collections::HashSet::new();
    for mut worker in workers {
        pids.insert(i64::from(worker.id()));
        let status = tokio::task::spawn_blocking(move || worker.wait()).await.unwrap().unwrap();
        assert!(status.success(), "worker exited with {status}");
    }

    let (runs, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT job_id) FROM side_effects").fetch_one(&pool).await.unwrap();
    assert_eq!((runs, distinct), (2000, 2000), "every job ran exactly once");
    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'completed'").fetch_one(&pool).await.unwrap();
    assert_eq!(completed, 2000);
    let busy_workers: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT worker_pid) FROM side_effects").fetch_one(&pool).await.unwrap();
    assert!(busy_workers >= 2, "work was shared between processes ({busy_workers} of 4 did some)");
    assert!(pids.len() == 4);
    pool.close().await;
    db.drop_database().await;
}
