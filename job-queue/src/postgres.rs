//! PostgreSQL: many worker processes on many machines share one database.
//! Claims use `FOR UPDATE SKIP LOCKED`; enqueues wake workers by NOTIFY.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use batch_core::Progress;
use sqlx::postgres::{PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::Mutex;

use crate::enqueue::PreparedJob;
use crate::model::{AfterFailure, Job, JobFilter, JobId, JobState, NewJob, from_micros, now_micros, sql_in};
use crate::store::{COLUMNS, Completion, Held, QueueStore};
use crate::{QueueError, Result};

/// The queue's tables on PostgreSQL; the database may also hold other crates'.
pub(crate) const MIGRATIONS: sql_migrations::Embedded =
    sql_migrations::embed!("migrations/postgres", ["1001_jobs.sql", "1002_state_check.sql"]);

/// The NOTIFY channel enqueues signal on.
pub const CHANNEL: &str = "job_queue_enqueued";

pub(crate) struct PgQueueStore {
    pool: PgPool,
    /// For a worker's own bookkeeping (claims, completions, heartbeats,
    /// progress): commits without waiting for the WAL flush. A PostgreSQL
    /// crash can lose the last moments of these, which only re-runs or
    /// re-queues jobs, as a worker crash does; enqueues, cancels and retries
    /// go through `pool` and are durable at commit.
    work_pool: PgPool,
    listener: Mutex<Option<PgListener>>,
    statements: Arc<AtomicU64>,
}

impl PgQueueStore {
    pub async fn connect(url: &str) -> Result<Self> {
        // One plain connection first: an unreachable server then fails at once
        // with its reason, not after the pool's 30 s "timed out" with none.
        sqlx::Connection::close(<sqlx::PgConnection as sqlx::Connection>::connect(url).await?).await?;
        let pool = PgPoolOptions::new().max_connections(10).connect(url).await?;
        Self::from_pool(pool).await
    }

    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        MIGRATIONS.migrator().await?.run(&pool).await?;
        let work_pool = PgPoolOptions::new()
            .max_connections(4)
            // No ping before each statement: it was a round trip per claim on
            // the enqueue-to-start path. A connection the server dropped fails
            // its statement, which the worker retries as any failed write.
            .test_before_acquire(false)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("SET synchronous_commit = off").execute(conn).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        Ok(Self { pool, work_pool, listener: Mutex::new(None), statements: Arc::new(AtomicU64::new(0)) })
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }
}

fn job_from_row(row: &PgRow) -> Result<Job> {
    let state: String = row.try_get("state")?;
    Ok(Job {
        id: row.try_get("id")?,
        job_type: row.try_get("job_type")?,
        input: row.try_get("input")?,
        priority: row.try_get("priority")?,
        state: state.parse().map_err(QueueError::Corrupt)?,
        run_at: from_micros(row.try_get("run_at")?),
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        progress: Progress {
            current: row.try_get::<i64, _>("progress_current")? as u64,
            total: row.try_get::<i64, _>("progress_total")? as u64,
            failed: 0,
            message: row.try_get("progress_message")?,
        },
        output: row.try_get("output")?,
        last_error: row.try_get("last_error")?,
        source: row.try_get("source")?,
        metadata: row.try_get("metadata")?,
        dedup_key: row.try_get("dedup_key")?,
        batch_id: row.try_get("batch_id")?,
        worker_id: row.try_get("worker_id")?,
        created_at: from_micros(row.try_get("created_at")?),
        started_at: row.try_get::<Option<i64>, _>("started_at")?.map(from_micros),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(from_micros),
        heartbeat_at: row.try_get::<Option<i64>, _>("heartbeat_at")?.map(from_micros),
    })
}

/// Enqueues `jobs` on `executor`, e.g. inside the caller's transaction, so
/// the jobs exist exactly when the caller's other writes commit. Workers are
/// woken by NOTIFY at commit.
pub async fn enqueue_in(conn: &mut sqlx::PgConnection, jobs: &[NewJob]) -> Result<Vec<JobId>> {
    let prepared = crate::enqueue::prepare(jobs)?;
    if prepared.unique.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = vec![None; prepared.unique.len()];
    for _ in 0..crate::enqueue::ENQUEUE_ROUNDS {
        let pending: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let round: Vec<&PreparedJob<'_>> = pending.iter().map(|&i| &prepared.unique[i]).collect();
        for (slot, id) in pending.into_iter().zip(enqueue_round(conn, &round).await?) {
            ids[slot] = id;
        }
    }
    prepared.resolve(&ids)
}

/// One insert of `jobs`: each one's id, the existing job's for a dedup
/// key already taken, `None` when that job finished in between (the next
/// round inserts it again).
///
/// The existing jobs are looked up by a second statement: under READ
/// COMMITTED it takes a fresh snapshot, so it sees a job another caller
/// committed while the insert waited on it. A lookup inside the insert's
/// statement would not: that job is newer than the statement's snapshot,
/// and callers racing on one key then missed it round after round.
async fn enqueue_round(conn: &mut sqlx::PgConnection, jobs: &[&PreparedJob<'_>]) -> Result<Vec<Option<JobId>>> {
    let inserted: Vec<JobId> = sqlx::query_scalar(&format!(
        "WITH inserted AS (
            INSERT INTO jobs (id, job_type, input, priority, state, run_at, max_attempts, dedup_key, batch_id, source, metadata, created_at)
            SELECT id, job_type, input::jsonb, priority, 'queued', run_at, max_attempts, dedup_key, batch_id, source, metadata::jsonb, $11
            FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::int8[], $6::int4[],
                        $7::text[], $8::uuid[], $9::text[], $10::text[]) WITH ORDINALITY
                AS i(id, job_type, input, priority, run_at, max_attempts, dedup_key, batch_id, source, metadata, ord)
            ORDER BY ord
            ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND state IN {unfinished} DO NOTHING
            RETURNING id
         ),
         notified AS (SELECT pg_notify($12, '') AS done)
         SELECT inserted.id FROM inserted CROSS JOIN notified",
        unfinished = sql_in(&JobState::UNFINISHED)
    ))
    .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job.job_type.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job.input.to_string()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job.options.priority).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.run_at).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job.options.max_attempts).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job.options.dedup_key.as_deref()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job.options.batch_id).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job.options.source.as_deref()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job.options.metadata.to_string()).collect::<Vec<_>>())
    .bind(now_micros())
    .bind(CHANNEL)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: std::collections::HashSet<JobId> = inserted.into_iter().collect();
    let taken: Vec<&str> =
        jobs.iter().filter(|j| !inserted.contains(&j.id)).filter_map(|j| j.job.options.dedup_key.as_deref()).collect();
    let mut existing = std::collections::HashMap::new();
    if !taken.is_empty() {
        let rows = sqlx::query(&format!(
            "SELECT dedup_key, id FROM jobs WHERE dedup_key = ANY($1) AND state IN {}",
            sql_in(&JobState::UNFINISHED)
        ))
        .bind(&taken)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            existing.insert(row.try_get::<String, _>("dedup_key")?, row.try_get::<JobId, _>("id")?);
        }
    }
    Ok(jobs
        .iter()
        .map(|j| {
            if inserted.contains(&j.id) {
                Some(j.id)
            } else {
                j.job.options.dedup_key.as_deref().and_then(|key| existing.get(key).copied())
            }
        })
        .collect())
}

/// An `enqueue_many` of this many jobs or more is followed by `ANALYZE`:
/// without statistics a claim of 1,000 among 20,000 new jobs sorted them
/// all (45 ms in EXPLAIN ANALYZE, against 3 ms through the index).
const ANALYZE_AFTER: usize = 1000;

#[async_trait::async_trait]
impl QueueStore for PgQueueStore {
    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        self.count();
        let mut conn = self.pool.acquire().await?;
        let ids = enqueue_in(&mut conn, jobs).await?;
        if jobs.len() >= ANALYZE_AFTER {
            // Fresh statistics, so claims use the runnable index instead of
            // sorting every queued row (a server may run without autovacuum,
            // and it would be late anyway). Only the columns claims filter on:
            // 37 ms for 20,000 jobs, against 140 ms with the JSON columns.
            // A failure only costs speed.
            self.count();
            if let Err(error) =
                sqlx::query("ANALYZE jobs (state, run_at, priority, job_type)").execute(&mut *conn).await
            {
                tracing::warn!(%error, "analyzing the jobs table after a large enqueue failed");
            }
        }
        Ok(ids)
    }

    async fn claim(
        &self,
        types: &[String],
        key_prefix: Option<&str>,
        limit: usize,
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        let now = now_micros();
        self.count();
        let rows = sqlx::query(&format!(
            // The picked ids as an array, not a join: the planner then looks
            // each row up by primary key instead of hashing the whole table
            // (EXPLAIN ANALYZE, 1,000 of 20,000 jobs: 21 ms against 31 ms).
            "UPDATE jobs AS j SET state = 'running', attempt = j.attempt + 1, worker_id = $4,
                    lease_expires_at = $5, started_at = $1, heartbeat_at = $1
             WHERE j.id = ANY(ARRAY(
                SELECT id FROM jobs
                WHERE state IN {claimable} AND run_at <= $1 AND job_type = ANY($2)
                  AND ($6::text IS NULL OR left(dedup_key, length($6)) = $6)
                ORDER BY priority DESC, run_at, id
                LIMIT $3
                FOR UPDATE SKIP LOCKED
             ))
             RETURNING j.*",
            claimable = sql_in(&JobState::CLAIMABLE)
        ))
        .bind(now)
        .bind(types)
        .bind(limit as i64)
        .bind(worker)
        .bind(now + lease.as_micros() as i64)
        .bind(key_prefix)
        .fetch_all(&self.work_pool)
        .await?;
        let mut jobs: Vec<Job> = rows.iter().map(job_from_row).collect::<Result<_>>()?;
        jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
        Ok(jobs)
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<JobId>> {
        let now = now_micros();
        self.count();
        let rows = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1, heartbeat_at = $2
             FROM UNNEST($3::uuid[], $4::int4[]) AS h(id, attempt)
             WHERE jobs.id = h.id AND jobs.attempt = h.attempt AND jobs.state = 'running'
             RETURNING jobs.id",
        )
        .persistent(false) // Planned per call, as in `complete_many`.
        .bind(now + lease.as_micros() as i64)
        .bind(now)
        .bind(held.iter().map(|h| h.id).collect::<Vec<_>>())
        .bind(held.iter().map(|h| h.attempt).collect::<Vec<_>>())
        .fetch_all(&self.work_pool)
        .await?;
        Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    async fn complete_many(&self, done: &[Completion]) -> Result<Vec<JobId>> {
        self.count();
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'completed', output = c.output::jsonb, progress_current = c.current,
                    progress_total = c.total, progress_message = c.message, finished_at = $7, lease_expires_at = NULL
             FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::int8[], $5::int8[], $6::text[])
                  AS c(id, attempt, output, current, total, message)
             WHERE jobs.id = ANY($1) AND jobs.id = c.id AND jobs.attempt = c.attempt AND jobs.state = 'running'
             RETURNING jobs.id",
        )
        // Planned with these arrays, not as a cached generic plan: that one
        // guesses 10 elements and joined 1,000 completions to the table row
        // by row (600 ms a statement in the server's log, against 20 ms).
        .persistent(false)
        .bind(done.iter().map(|c| c.held.id).collect::<Vec<_>>())
        .bind(done.iter().map(|c| c.held.attempt).collect::<Vec<_>>())
        .bind(done.iter().map(|c| c.output.to_string()).collect::<Vec<_>>())
        .bind(done.iter().map(|c| c.progress.current as i64).collect::<Vec<_>>())
        .bind(done.iter().map(|c| c.progress.total as i64).collect::<Vec<_>>())
        .bind(done.iter().map(|c| c.progress.message.as_str()).collect::<Vec<_>>())
        .bind(now_micros())
        .fetch_all(&self.work_pool)
        .await?;
        Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    async fn fail(&self, held: Held, error: &str, after: AfterFailure) -> Result<bool> {
        // NULL: dead; a time: failed, to run again then.
        let retry_at = match after {
            AfterFailure::Retry { at } => Some(at),
            AfterFailure::Dead => None,
        };
        self.count();
        let done = sqlx::query(
            "UPDATE jobs SET state = CASE WHEN $4::int8 IS NULL THEN 'dead' ELSE 'failed' END,
                    run_at = COALESCE($4, run_at), last_error = $3,
                    finished_at = CASE WHEN $4::int8 IS NULL THEN $5 END,
                    lease_expires_at = NULL, worker_id = NULL
             WHERE id = $1 AND attempt = $2 AND state = 'running'",
        )
        .bind(held.id)
        .bind(held.attempt)
        .bind(error)
        .bind(retry_at)
        .bind(now_micros())
        .execute(&self.work_pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn save_progress(&self, held: Held, progress: &Progress) -> Result<bool> {
        self.count();
        let done = sqlx::query(&format!(
            "UPDATE jobs SET progress_current = $3, progress_total = $4, progress_message = $5
             WHERE id = $1 AND attempt = $2 AND state IN {progress_writable}",
            progress_writable = sql_in(&JobState::PROGRESS_WRITABLE)
        ))
        .bind(held.id)
        .bind(held.attempt)
        .bind(progress.current as i64)
        .bind(progress.total as i64)
        .bind(&progress.message)
        .execute(&self.work_pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, held: &[Held]) -> Result<()> {
        self.count();
        sqlx::query(
            "UPDATE jobs SET state = 'queued', attempt = jobs.attempt - 1, worker_id = NULL, lease_expires_at = NULL
             FROM UNNEST($1::uuid[], $2::int4[]) AS h(id, attempt)
             WHERE jobs.id = h.id AND jobs.attempt = h.attempt AND jobs.state = 'running'",
        )
        .persistent(false) // Planned per call, as in `complete_many`.
        .bind(held.iter().map(|h| h.id).collect::<Vec<_>>())
        .bind(held.iter().map(|h| h.attempt).collect::<Vec<_>>())
        .execute(&self.work_pool)
        .await?;
        Ok(())
    }

    async fn release_orphan(&self, id: JobId, worker: &str) -> Result<bool> {
        self.count();
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempt = attempt - 1, worker_id = NULL, lease_expires_at = NULL
                         WHERE id = $1 AND state = 'running' AND worker_id = $2",
        )
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel(&self, id: JobId) -> Result<Option<JobState>> {
        self.count();
        let before: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE jobs AS j SET state = 'cancelled', finished_at = $2, lease_expires_at = NULL
             FROM (SELECT id, state FROM jobs WHERE id = $1 FOR UPDATE) AS old
             WHERE j.id = old.id AND old.state IN {cancellable}
             RETURNING old.state",
            cancellable = sql_in(&JobState::CANCELLABLE)
        ))
        .bind(id)
        .bind(now_micros())
        .fetch_optional(&self.pool)
        .await?;
        before.map(|s| s.parse().map_err(QueueError::Corrupt)).transpose()
    }

    async fn retry(&self, id: JobId) -> Result<bool> {
        self.count();
        let done = sqlx::query(
            &format!("UPDATE jobs SET state = 'queued', attempt = 0, run_at = $2, finished_at = NULL, output = NULL, last_error = NULL,
                    worker_id = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state IN {retryable}", retryable = sql_in(&JobState::RETRYABLE)),
        )
        .bind(id)
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.count();
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.count();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs
             WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR job_type = $2)
               AND ($3::uuid IS NULL OR batch_id = $3) AND ($4::text IS NULL OR source = $4)
               AND ($6::text IS NULL OR left(dedup_key, length($6)) = $6)
             ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $7"
        ))
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.job_type.as_deref())
        .bind(filter.batch_id)
        .bind(filter.source.as_deref())
        .bind(i64::from(filter.limit.unwrap_or(100)))
        .bind(filter.dedup_prefix.as_deref())
        .bind(i64::from(filter.offset.unwrap_or(0)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn counts(&self) -> Result<Vec<(String, JobState, i64)>> {
        self.count();
        let rows = sqlx::query(
            "SELECT job_type, state, COUNT(*)::int8 FROM jobs GROUP BY job_type, state ORDER BY job_type, state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((r.try_get(0)?, r.try_get::<String, _>(1)?.parse().map_err(QueueError::Corrupt)?, r.try_get(2)?))
            })
            .collect()
    }

    async fn unfinished(&self, job_type: Option<&str>) -> Result<i64> {
        self.count();
        let jobs = sqlx::query_scalar(&format!(
            "SELECT COUNT(*)::int8 FROM jobs
             WHERE state IN {unfinished} AND ($1::text IS NULL OR job_type = $1)",
            unfinished = sql_in(&JobState::UNFINISHED)
        ))
        .bind(job_type)
        .fetch_one(&self.pool)
        .await?;
        Ok(jobs)
    }

    async fn batch_counts(&self, batch_id: JobId) -> Result<Vec<(JobState, i64, i64, i64)>> {
        self.count();
        let rows = sqlx::query(
            "SELECT state, COUNT(*)::int8, COALESCE(SUM(progress_current), 0)::int8, COALESCE(SUM(progress_total), 0)::int8
             FROM jobs WHERE batch_id = $1 GROUP BY state",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)?.parse().map_err(QueueError::Corrupt)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                ))
            })
            .collect()
    }

    async fn reap_expired(&self, held: &[JobId]) -> Result<Vec<(JobId, String, JobState)>> {
        self.count();
        let rows = sqlx::query(
            "UPDATE jobs SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'failed' END,
                    last_error = 'lease expired: worker ' || COALESCE(worker_id, '?') || ' stopped heartbeating',
                    run_at = $1, finished_at = CASE WHEN attempt >= max_attempts THEN $1 END,
                    worker_id = NULL, lease_expires_at = NULL
             WHERE state = 'running' AND lease_expires_at < $1 AND NOT (id = ANY($2))
             RETURNING id, job_type, state",
        )
        .bind(now_micros())
        .bind(held)
        .fetch_all(&self.work_pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get::<String, _>(2)?.parse().map_err(QueueError::Corrupt)?))
            })
            .collect()
    }

    async fn bury_unhandled(&self, known: &[String], created_before: i64) -> Result<Vec<(JobId, String)>> {
        self.count();
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'dead', finished_at = $3,
                    last_error = 'no handler is registered for job type \"' || job_type || '\"'
             WHERE state = 'queued' AND created_at < $1 AND NOT (job_type = ANY($2))
             RETURNING id, job_type",
        )
        .bind(created_before)
        .bind(known)
        .bind(now_micros())
        .fetch_all(&self.work_pool)
        .await?;
        Ok(rows.iter().map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, _>>()?)
    }

    async fn purge(&self, finished_before: i64) -> Result<u64> {
        self.count();
        let done = sqlx::query(&format!(
            "DELETE FROM jobs WHERE state IN {ended} AND finished_at < $1",
            ended = sql_in(&JobState::ENDED)
        ))
        .bind(finished_before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn wait_for_enqueue(&self) {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => match listener.listen(CHANNEL).await {
                    Ok(()) => *guard = Some(listener),
                    Err(error) => tracing::warn!(%error, "LISTEN failed; polling only"),
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot open a LISTEN connection; polling only");
                }
            }
        }
        if let Some(listener) = guard.as_mut() {
            if let Err(error) = listener.recv().await {
                tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                *guard = None;
            }
        } else {
            drop(guard);
            std::future::pending::<()>().await;
        }
    }

    fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}
