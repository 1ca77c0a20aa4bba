//! The queue suite (enqueue, dedup, counts, lists, batches, the database's
//! own checks), on SQLite and on PostgreSQL (with `DATABASE_URL`). The
//! worker's own behaviour is in `worker.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use batch_core::RetryPolicy;
use common::TestDb;
use common::workers::*;
use job_queue::{EnqueueOptions, JobFilter, JobState, NewJob, Registry, WorkerConfig};
use serde_json::json;

fn with_priority(priority: i32) -> EnqueueOptions {
    EnqueueOptions { priority, ..EnqueueOptions::default() }
}

async fn higher_priority_runs_first(db: &TestDb) {
    let queue = db.queue().await;
    for (name, priority) in [("low", 1), ("mid", 5), ("high", 10), ("mid2", 5)] {
        queue.enqueue("record", &name, with_priority(priority)).await.unwrap();
    }
    let recorder = Recorder::default();
    let worker = spawn_worker(
        &queue,
        Registry::new().with("record", recorder.clone()),
        WorkerConfig { concurrency: 1, ..fast_config() },
    );
    wait_for(|| recorder.0.lock().unwrap().len() == 4).await;
    stop(worker).await;
    assert_eq!(*recorder.0.lock().unwrap(), vec!["high", "mid", "mid2", "low"]);
}

async fn dedup_key_returns_the_unfinished_job(db: &TestDb) {
    let queue = db.queue().await;
    let keyed = EnqueueOptions { dedup_key: Some("sync:/notes".into()), ..EnqueueOptions::default() };
    let first = queue.enqueue("record", &"a", keyed.clone()).await.unwrap();
    let second = queue.enqueue("record", &"b", keyed.clone()).await.unwrap();
    assert_eq!(first, second);
    let many = queue
        .enqueue_many(vec![
            NewJob::new("record", json!("c")).with_options(keyed.clone()),
            NewJob::new("record", json!("d")),
            NewJob::new("record", json!("e"))
                .with_options(EnqueueOptions { dedup_key: Some("other".into()), ..EnqueueOptions::default() }),
            NewJob::new("record", json!("f"))
                .with_options(EnqueueOptions { dedup_key: Some("other".into()), ..EnqueueOptions::default() }),
        ])
        .await
        .unwrap();
    assert_eq!(many[0], first);
    assert_ne!(many[1], first);
    assert_eq!(many[2], many[3]);

    let worker = spawn_worker(&queue, Registry::new().with("record", Recorder::default()), fast_config());
    queue.wait(first, WAIT).await.unwrap();
    let third = queue.enqueue("record", &"g", keyed).await.unwrap();
    assert_ne!(third, first, "a finished job does not block its key");
    queue.wait(third, WAIT).await.unwrap();
    stop(worker).await;
}

async fn enqueue_many_is_one_statement_and_keeps_order(db: &TestDb) {
    let queue = db.queue().await;
    let before = queue.statements();
    let jobs: Vec<NewJob> = (0..500).map(|i| NewJob::new("record", json!(i.to_string()))).collect();
    let ids = queue.enqueue_many(jobs).await.unwrap();
    assert_eq!(queue.statements() - before, 1);
    assert_eq!(ids.len(), 500);
    let listed = queue
        .list(&JobFilter { state: Some(JobState::Queued), limit: Some(1000), ..JobFilter::default() })
        .await
        .unwrap();
    assert_eq!(listed.len(), 500);
    let job = queue.get(ids[17]).await.unwrap().unwrap();
    assert_eq!(job.input, json!("17"));
    assert_eq!((job.priority, job.attempt, job.max_attempts), (5, 0, 3));

    let bad = queue.enqueue("record", &"x", with_priority(11)).await.unwrap_err();
    assert!(bad.to_string().contains("priority 11 is outside 1-10"), "{bad}");
}

async fn counts_by_type_and_state(db: &TestDb) {
    let queue = db.queue().await;
    let first = queue.enqueue("a", &(), EnqueueOptions::default()).await.unwrap();
    queue.enqueue("a", &(), EnqueueOptions::default()).await.unwrap();
    queue.enqueue("b", &(), EnqueueOptions::default()).await.unwrap();
    assert!(queue.cancel(first).await.unwrap());
    let counts = queue.counts().await.unwrap();
    let a: Vec<(JobState, u64)> = counts["a"].iter().map(|(s, n)| (*s, *n)).collect();
    assert_eq!(a, [(JobState::Queued, 1), (JobState::Cancelled, 1)]);
    assert_eq!(counts["b"].get(&JobState::Queued), Some(&1));
    assert_eq!(counts.len(), 2);
}

async fn unfinished_counts_queued_running_and_retrying_jobs(db: &TestDb) {
    let queue = db.queue().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let flaky = Flaky { calls: Arc::default(), succeed: Arc::default(), retryable: true };
    let registry = Registry::new()
        .with("gated", Gated { name: "gated", release: release.clone(), returned: Arc::default() })
        .with("flaky", flaky)
        .with("quick", Slow { name: "quick", delay: Duration::ZERO });
    let config = WorkerConfig {
        retry: RetryPolicy { base_delay: Duration::from_secs(3600), ..RetryPolicy::default() },
        ..fast_config()
    };
    let worker = spawn_worker(&queue, registry, config);
    let running = queue.enqueue("gated", &(), EnqueueOptions::default()).await.unwrap();
    let retrying = queue.enqueue("flaky", &(), EnqueueOptions::default()).await.unwrap();
    let done = queue.enqueue("quick", &(), EnqueueOptions::default()).await.unwrap();
    queue.enqueue("unhandled", &(), EnqueueOptions::default()).await.unwrap();
    let cancelled = queue.enqueue("unhandled", &(), EnqueueOptions::default()).await.unwrap();
    assert!(queue.cancel(cancelled).await.unwrap());
    wait_for_job(&queue, running, |j| j.state == JobState::Running).await;
    wait_for_job(&queue, retrying, |j| j.state == JobState::Failed).await;
    queue.wait(done, WAIT).await.unwrap();

    assert_eq!(queue.unfinished(None).await.unwrap(), 3, "running, waiting for a retry, queued");
    assert_eq!(queue.unfinished(Some("flaky")).await.unwrap(), 1);
    assert_eq!(queue.unfinished(Some("unhandled")).await.unwrap(), 1, "the cancelled one is finished");
    assert_eq!(queue.unfinished(Some("quick")).await.unwrap(), 0);
    release.notify_one();
    queue.wait(running, WAIT).await.unwrap();
    assert_eq!(queue.unfinished(Some("gated")).await.unwrap(), 0);
    stop(worker).await;
}

async fn batches_report_totals_and_old_jobs_are_purged(db: &TestDb) {
    let queue = db.queue().await;
    let batch = uuid::Uuid::now_v7();
    let in_batch = EnqueueOptions { batch_id: Some(batch), source: Some("test".into()), ..EnqueueOptions::default() };
    let jobs: Vec<NewJob> =
        (0..3).map(|i| NewJob::new("record", json!(i.to_string())).with_options(in_batch.clone())).collect();
    let ids = queue.enqueue_many(jobs).await.unwrap();
    queue.cancel(ids[2]).await.unwrap();
    let status = queue.batch_status(batch).await.unwrap();
    assert_eq!(status.total, 3);
    assert!(!status.finished);
    let worker = spawn_worker(&queue, Registry::new().with("record", Recorder::default()), fast_config());
    for id in &ids[..2] {
        queue.wait(*id, WAIT).await.unwrap();
    }
    stop(worker).await;
    let status = queue.batch_status(batch).await.unwrap();
    assert!(status.finished);
    assert_eq!(status.by_state.get(&JobState::Completed), Some(&2));
    assert_eq!(status.by_state.get(&JobState::Cancelled), Some(&1));
    let listed = queue
        .list(&JobFilter { batch_id: Some(batch), source: Some("test".into()), ..JobFilter::default() })
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);

    let unfinished = queue.enqueue("record", &"later", EnqueueOptions::default()).await.unwrap();
    assert_eq!(queue.purge_finished(Duration::from_secs(3600)).await.unwrap(), 0, "nothing is an hour old");
    assert_eq!(queue.purge_finished(Duration::ZERO).await.unwrap(), 3);
    assert!(queue.get(ids[0]).await.unwrap().is_none());
    assert!(queue.get(unfinished).await.unwrap().is_some(), "unfinished jobs are kept");
}

async fn transactional_enqueue_commits_or_rolls_back_with_the_caller(db: &TestDb) {
    let queue = db.queue().await;
    let jobs = vec![NewJob::new("record", json!("in a transaction"))];
    for commit in [false, true] {
        let ids = if db.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            let ids = job_queue::sqlite_enqueue_in(&mut tx, &jobs).await.unwrap();
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            ids
        } else {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            let ids = job_queue::pg_enqueue_in(&mut tx, &jobs).await.unwrap();
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            ids
        };
        let stored = queue.get(ids[0]).await.unwrap();
        assert_eq!(stored.is_some(), commit, "commit = {commit}");
    }
}

/// After a large enqueue the planner knows the table's size (PostgreSQL:
/// servers may run without autovacuum), so a claim walks the runnable index
/// instead of sorting every queued job.
async fn a_large_enqueue_leaves_fresh_statistics(db: &TestDb) {
    if !db.url.starts_with("postgres") {
        return; // SQLite's planner needs no statistics for these indexes.
    }
    let queue = db.queue().await;
    queue.enqueue_many((0..1500).map(|i| NewJob::new("record", json!(i))).collect()).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'jobs'").fetch_one(&pool).await.unwrap();
    assert!(rows >= 1000.0, "the planner believes the jobs table holds {rows} rows after 1,500 were enqueued");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM jobs WHERE state IN ('queued', 'failed') AND run_at <= 9000000000000000000 AND job_type = 'record'
         ORDER BY priority DESC, run_at, id LIMIT 100",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(plan.iter().any(|line| line.contains("jobs_runnable")), "the claim's order comes from its index: {plan:?}");
    assert!(!plan.iter().any(|line| line.contains("Sort")), "no sort of the queued jobs: {plan:?}");
    pool.close().await;
}

/// `list` picks one folder's jobs by dedup-key prefix (a prefix with SQL
/// wildcards in it matches only itself) and pages newest first.
async fn list_by_dedup_prefix_and_page(db: &TestDb) {
    let queue = db.queue().await;
    let keyed = |key: &str| EnqueueOptions { dedup_key: Some(key.into()), ..EnqueueOptions::default() };
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(queue.enqueue("record", &i, keyed(&format!("folder:4:/a/b:{i}"))).await.unwrap());
    }
    queue.enqueue("record", &"other", keyed("folder:6:/a/b:c:0")).await.unwrap();
    queue.enqueue("record", &"wild", keyed("folder:4:/a%b:0")).await.unwrap();
    queue.enqueue("record", &"unkeyed", EnqueueOptions::default()).await.unwrap();
    let page = |offset, limit| JobFilter {
        dedup_prefix: Some("folder:4:/a/b:".into()),
        limit: Some(limit),
        offset: Some(offset),
        ..JobFilter::default()
    };
    let ids = |jobs: Vec<job_queue::Job>| jobs.into_iter().map(|job| job.id).collect::<Vec<_>>();
    let newest_first: Vec<_> = mine.iter().rev().copied().collect();
    assert_eq!(ids(queue.list(&page(0, 100)).await.unwrap()), newest_first);
    assert_eq!(ids(queue.list(&page(0, 2)).await.unwrap()), newest_first[..2]);
    assert_eq!(ids(queue.list(&page(2, 2)).await.unwrap()), newest_first[2..4]);
    assert_eq!(ids(queue.list(&page(4, 2)).await.unwrap()), newest_first[4..]);
    let wild = JobFilter { dedup_prefix: Some("folder:4:/a%".into()), ..JobFilter::default() };
    assert_eq!(queue.list(&wild).await.unwrap().len(), 1, "% is a character, not a wildcard");
}

/// The state column holds only `JobState`'s states, whoever writes it
/// (migration 1002: a CHECK on both backends; SQLite rebuilds the table for it); every known
/// state is accepted.
async fn the_database_refuses_a_state_the_queue_does_not_know(db: &TestDb) {
    let queue = db.queue().await;
    let id = queue.enqueue("record", &"x", EnqueueOptions::default()).await.unwrap();
    let set = |state: &str| {
        let (url, state, id) = (db.url.clone(), state.to_owned(), id.to_string());
        async move {
            if url.starts_with("postgres") {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let id: uuid::Uuid = id.parse().unwrap();
                let done =
                    sqlx::query("UPDATE jobs SET state = $1 WHERE id = $2").bind(state).bind(id).execute(&pool).await;
                pool.close().await;
                done.map(drop)
            } else {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let done =
                    sqlx::query("UPDATE jobs SET state = ?1 WHERE id = ?2").bind(state).bind(id).execute(&pool).await;
                pool.close().await;
                done.map(drop)
            }
        }
    };
    for state in JobState::ALL {
        set(state.as_str()).await.unwrap_or_else(|err| panic!("{state} refused: {err}"));
    }
    for unknown in ["done", "QUEUED", ""] {
        let err = set(unknown).await.expect_err(unknown);
        assert!(err.to_string().contains("jobs_state_known"), "{unknown}: {err}");
    }
    assert_eq!(queue.get(id).await.unwrap().unwrap().state, JobState::Dead, "the last known state stands");
}

/// Enqueueing with a dedup key while a worker keeps finishing that key's
/// job always gives an id: a job that ends between the insert and the
/// lookup is inserted again inside the queue, never handed to the caller.
async fn an_enqueue_racing_a_finishing_job_always_gets_an_id(db: &TestDb) {
    let queue = db.queue().await;
    let worker = spawn_worker(&queue, Registry::new().with("record", Recorder::default()), fast_config());
    let keyed = EnqueueOptions { dedup_key: Some("hot".into()), ..EnqueueOptions::default() };
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let (queue, keyed) = (queue.clone(), keyed.clone());
            tokio::spawn(async move {
                let mut last = None;
                for round in 0..150 {
                    let id = queue.enqueue("record", &format!("{caller}-{round}"), keyed.clone()).await.unwrap();
                    last = Some(id);
                }
                last.unwrap()
            })
        })
        .collect();
    for caller in callers {
        let last = caller.await.unwrap();
        queue.wait(last, WAIT).await.unwrap();
    }
    stop(worker).await;
}

async fn an_oversized_input_is_refused_and_nothing_of_its_batch_is_queued(db: &TestDb) {
    let queue = db.queue().await;
    let big = "x".repeat(job_queue::MAX_INPUT_BYTES);
    let jobs = vec![NewJob::new("small", json!(1)), NewJob::new("big", json!({ "text": big }))];
    let err = queue.enqueue_many(jobs).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("job 1") && message.contains("\"big\"") && message.contains("bytes"), "{message}");
    let all = queue.list(&JobFilter { limit: Some(10), ..JobFilter::default() }).await.unwrap();
    assert!(all.is_empty(), "the valid job of the batch was not queued either: {all:?}");
}

scratch_pg::backends!(
    TestDb;
    higher_priority_runs_first,
    dedup_key_returns_the_unfinished_job,
    enqueue_many_is_one_statement_and_keeps_order,
    counts_by_type_and_state,
    unfinished_counts_queued_running_and_retrying_jobs,
    batches_report_totals_and_old_jobs_are_purged,
    transactional_enqueue_commits_or_rolls_back_with_the_caller,
    a_large_enqueue_leaves_fresh_statistics,
    list_by_dedup_prefix_and_page,
    the_database_refuses_a_state_the_queue_does_not_know,
    an_enqueue_racing_a_finishing_job_always_gets_an_id,
    an_oversized_input_is_refused_and_nothing_of_its_batch_is_queued,
);
