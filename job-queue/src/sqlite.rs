//! SQLite: the embedded default. One file, may be shared with the entity
//! store; other processes on the same file are seen by polling.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use batch_core::Progress;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::enqueue::PreparedJob;
use crate::model::{AfterFailure, Job, JobFilter, JobId, JobState, NewJob, from_micros, now_micros, sql_in};
use crate::store::{COLUMNS, Completion, Held, QueueStore};
use crate::{QueueError, Result};

pub(crate) struct SqliteQueueStore {
    pool: SqlitePool,
    statements: Arc<AtomicU64>,
}

/// The queue's tables on SQLite; the database may also hold other crates'.
pub(crate) const MIGRATIONS: sql_migrations::Embedded =
    sql_migrations::embed!("migrations/sqlite", ["1001_jobs.sql", "1002_state_check.sql"]);

impl SqliteQueueStore {
    pub async fn open(options: SqliteConnectOptions) -> Result<Self> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Self::from_pool(pool).await
    }

    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(SqliteConnectOptions::from_str(url)?).await
    }

    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        MIGRATIONS.migrator().await?.run(&pool).await?;
        Ok(Self { pool, statements: Arc::new(AtomicU64::new(0)) })
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }
}

fn parse_id(text: &str) -> Result<JobId> {
    JobId::parse_str(text).map_err(|e| QueueError::Corrupt(format!("bad job id {text:?}: {e}")))
}

fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| QueueError::Corrupt(format!("bad JSON in job row: {e}")))
}

fn job_from_row(row: &SqliteRow) -> Result<Job> {
    let state: String = row.try_get("state")?;
    Ok(Job {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        job_type: row.try_get("job_type")?,
        input: parse_json(&row.try_get::<String, _>("input")?)?,
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
        output: row.try_get::<Option<String>, _>("output")?.as_deref().map(parse_json).transpose()?,
        last_error: row.try_get("last_error")?,
        source: row.try_get("source")?,
        metadata: parse_json(&row.try_get::<String, _>("metadata")?)?,
        dedup_key: row.try_get("dedup_key")?,
        batch_id: row.try_get::<Option<String>, _>("batch_id")?.as_deref().map(parse_id).transpose()?,
        worker_id: row.try_get("worker_id")?,
        created_at: from_micros(row.try_get("created_at")?),
        started_at: row.try_get::<Option<i64>, _>("started_at")?.map(from_micros),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(from_micros),
        heartbeat_at: row.try_get::<Option<i64>, _>("heartbeat_at")?.map(from_micros),
    })
}

fn held_json(held: &[Held]) -> String {
    Value::Array(held.iter().map(|h| serde_json::json!([h.id.to_string(), h.attempt])).collect()).to_string()
}

/// Enqueues `jobs` on `conn`, e.g. `&mut *transaction`, so the jobs exist
/// exactly when the caller's other writes commit.
pub async fn enqueue_in(conn: &mut SqliteConnection, jobs: &[NewJob]) -> Result<Vec<JobId>> {
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
async fn enqueue_round(conn: &mut SqliteConnection, jobs: &[&PreparedJob<'_>]) -> Result<Vec<Option<JobId>>> {
    let payload = Value::Array(
        jobs.iter()
            .map(|j| {
                let o = &j.job.options;
                serde_json::json!([
                    j.id.to_string(),
                    j.job.job_type,
                    j.job.input.to_string(),
                    o.priority,
                    j.run_at,
                    o.max_attempts,
                    o.dedup_key,
                    o.batch_id.map(|b| b.to_string()),
                    o.source,
                    o.metadata.to_string()
                ])
            })
            .collect(),
    )
    .to_string();
    let inserted: Vec<String> = sqlx::query_scalar(
        &format!("INSERT INTO jobs (id, job_type, input, priority, state, run_at, max_attempts, dedup_key, batch_id, source, metadata, created_at)
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, 'queued', j.value ->> 4, j.value ->> 5,
                j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9, ?2
         FROM json_each(?1) AS j WHERE TRUE ORDER BY j.key
         ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND state IN {unfinished} DO NOTHING
         RETURNING id", unfinished = sql_in(&JobState::UNFINISHED)),
    )
    .bind(&payload)
    .bind(now_micros())
    .fetch_all(&mut *conn)
    .await?;
    let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
    let mut ids: Vec<Option<JobId>> = jobs.iter().map(|j| Some(j.id)).collect();
    let conflicted: Vec<(usize, &str)> = jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| !inserted.contains(&j.id.to_string()))
        .filter_map(|(i, j)| j.job.options.dedup_key.as_deref().map(|k| (i, k)))
        .collect();
    if !conflicted.is_empty() {
        let keys = Value::from(conflicted.iter().map(|(_, k)| *k).collect::<Vec<_>>()).to_string();
        let existing: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT dedup_key, id FROM jobs WHERE state IN {unfinished}
             AND dedup_key IN (SELECT value FROM json_each(?))",
            unfinished = sql_in(&JobState::UNFINISHED)
        ))
        .bind(keys)
        .fetch_all(&mut *conn)
        .await?;
        let existing: std::collections::HashMap<String, String> = existing.into_iter().collect();
        for (index, key) in conflicted {
            ids[index] = existing.get(key).map(|id| parse_id(id)).transpose()?;
        }
    }
    Ok(ids)
}

#[async_trait::async_trait]
impl QueueStore for SqliteQueueStore {
    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        self.count();
        let mut conn = self.pool.acquire().await?;
        enqueue_in(&mut conn, jobs).await
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
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = ?1,
                    lease_expires_at = ?2, started_at = ?3, heartbeat_at = ?3
             WHERE id IN (
                SELECT id FROM jobs
                WHERE state IN {claimable} AND run_at <= ?3
                  AND job_type IN (SELECT value FROM json_each(?4))
                  AND (?6 IS NULL OR substr(dedup_key, 1, length(?6)) = ?6)
                ORDER BY priority DESC, run_at, id LIMIT ?5
             )
             RETURNING *",
            claimable = sql_in(&JobState::CLAIMABLE)
        ))
        .bind(worker)
        .bind(now + lease.as_micros() as i64)
        .bind(now)
        .bind(Value::from(types.to_vec()).to_string())
        .bind(limit as i64)
        .bind(key_prefix)
        .fetch_all(&self.pool)
        .await?;
        let mut jobs: Vec<Job> = rows.iter().map(job_from_row).collect::<Result<_>>()?;
        jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
        Ok(jobs)
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<JobId>> {
        let now = now_micros();
        self.count();
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = ?1, heartbeat_at = ?2
             WHERE state = 'running' AND EXISTS (
                SELECT 1 FROM json_each(?3) AS h WHERE h.value ->> 0 = jobs.id AND h.value ->> 1 = jobs.attempt)
             RETURNING id",
        )
        .bind(now + lease.as_micros() as i64)
        .bind(now)
        .bind(held_json(held))
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|id| parse_id(id)).collect()
    }

    async fn complete_many(&self, done: &[Completion]) -> Result<Vec<JobId>> {
        let payload = Value::Array(
            done.iter()
                .map(|c| {
                    serde_json::json!([
                        c.held.id.to_string(),
                        c.held.attempt,
                        c.output.to_string(),
                        c.progress.current,
                        c.progress.total,
                        c.progress.message
                    ])
                })
                .collect(),
        )
        .to_string();
        self.count();
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'completed', output = c.output, progress_current = c.current,
                    progress_total = c.total, progress_message = c.message, finished_at = ?2, lease_expires_at = NULL
             FROM (SELECT j.value ->> 0 AS id, j.value ->> 1 AS attempt, j.value ->> 2 AS output,
                          j.value ->> 3 AS current, j.value ->> 4 AS total, j.value ->> 5 AS message
                   FROM json_each(?1) AS j) AS c
             WHERE jobs.id = c.id AND jobs.attempt = c.attempt AND jobs.state = 'running'
             RETURNING jobs.id",
        )
        .bind(payload)
        .bind(now_micros())
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|id| parse_id(id)).collect()
    }

    async fn fail(&self, held: Held, error: &str, after: AfterFailure) -> Result<bool> {
        // NULL: dead; a time: failed, to run again then.
        let retry_at = match after {
            AfterFailure::Retry { at } => Some(at),
            AfterFailure::Dead => None,
        };
        self.count();
        let done = sqlx::query(
            "UPDATE jobs SET state = CASE WHEN ?4 IS NULL THEN 'dead' ELSE 'failed' END,
                    run_at = COALESCE(?4, run_at), last_error = ?3,
                    finished_at = CASE WHEN ?4 IS NULL THEN ?5 END,
                    lease_expires_at = NULL, worker_id = NULL
             WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
        )
        .bind(held.id.to_string())
        .bind(held.attempt)
        .bind(error)
        .bind(retry_at)
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn save_progress(&self, held: Held, progress: &Progress) -> Result<bool> {
        self.count();
        let done = sqlx::query(&format!(
            "UPDATE jobs SET progress_current = ?3, progress_total = ?4, progress_message = ?5
             WHERE id = ?1 AND attempt = ?2 AND state IN {progress_writable}",
            progress_writable = sql_in(&JobState::PROGRESS_WRITABLE)
        ))
        .bind(held.id.to_string())
        .bind(held.attempt)
        .bind(progress.current as i64)
        .bind(progress.total as i64)
        .bind(&progress.message)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, held: &[Held]) -> Result<()> {
        self.count();
        sqlx::query(
            "UPDATE jobs SET state = 'queued', attempt = attempt - 1, worker_id = NULL, lease_expires_at = NULL
             WHERE state = 'running' AND EXISTS (
                SELECT 1 FROM json_each(?1) AS h WHERE h.value ->> 0 = jobs.id AND h.value ->> 1 = jobs.attempt)",
        )
        .bind(held_json(held))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_orphan(&self, id: JobId, worker: &str) -> Result<bool> {
        self.count();
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempt = attempt - 1, worker_id = NULL, lease_expires_at = NULL
                         WHERE id = $1 AND state = 'running' AND worker_id = $2",
        )
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel(&self, id: JobId) -> Result<Option<JobState>> {
        // One writer at a time: read and write in one immediate transaction.
        let mut conn = self.pool.acquire().await?;
        self.count();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result: Result<Option<JobState>> = async {
            self.count();
            let before: Option<String> = sqlx::query_scalar(&format!(
                "SELECT state FROM jobs WHERE id = ?1 AND state IN {cancellable}",
                cancellable = sql_in(&JobState::CANCELLABLE)
            ))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
            if before.is_some() {
                self.count();
                sqlx::query(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?2, lease_expires_at = NULL WHERE id = ?1",
                )
                .bind(id.to_string())
                .bind(now_micros())
                .execute(&mut *conn)
                .await?;
            }
            before.map(|s| s.parse().map_err(QueueError::Corrupt)).transpose()
        }
        .await;
        self.count();
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        sqlx::query(end).execute(&mut *conn).await?;
        result
    }

    async fn retry(&self, id: JobId) -> Result<bool> {
        self.count();
        let done = sqlx::query(
            &format!("UPDATE jobs SET state = 'queued', attempt = 0, run_at = ?2, finished_at = NULL, output = NULL, last_error = NULL,
                    worker_id = NULL, lease_expires_at = NULL
             WHERE id = ?1 AND state IN {retryable}", retryable = sql_in(&JobState::RETRYABLE)),
        )
        .bind(id.to_string())
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.count();
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.count();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR job_type = ?2)
               AND (?3 IS NULL OR batch_id = ?3) AND (?4 IS NULL OR source = ?4)
               AND (?6 IS NULL OR substr(dedup_key, 1, length(?6)) = ?6)
             ORDER BY created_at DESC, id DESC LIMIT ?5 OFFSET ?7"
        ))
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.job_type.as_deref())
        .bind(filter.batch_id.map(|b| b.to_string()))
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
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT job_type, state, COUNT(*) FROM jobs GROUP BY job_type, state ORDER BY job_type, state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(t, s, n)| Ok((t, s.parse().map_err(QueueError::Corrupt)?, n))).collect()
    }

    async fn unfinished(&self, job_type: Option<&str>) -> Result<i64> {
        self.count();
        let jobs = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM jobs WHERE state IN {unfinished} AND (?1 IS NULL OR job_type = ?1)",
            unfinished = sql_in(&JobState::UNFINISHED)
        ))
        .bind(job_type)
        .fetch_one(&self.pool)
        .await?;
        Ok(jobs)
    }

    async fn batch_counts(&self, batch_id: JobId) -> Result<Vec<(JobState, i64, i64, i64)>> {
        self.count();
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*), COALESCE(SUM(progress_current), 0), COALESCE(SUM(progress_total), 0)
             FROM jobs WHERE batch_id = ? GROUP BY state",
        )
        .bind(batch_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(s, n, c, t)| Ok((s.parse().map_err(QueueError::Corrupt)?, n, c, t))).collect()
    }

    async fn reap_expired(&self, held: &[JobId]) -> Result<Vec<(JobId, String, JobState)>> {
        self.count();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "UPDATE jobs SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'failed' END,
                    last_error = 'lease expired: worker ' || COALESCE(worker_id, '?') || ' stopped heartbeating',
                    run_at = ?1, finished_at = CASE WHEN attempt >= max_attempts THEN ?1 END,
                    worker_id = NULL, lease_expires_at = NULL
             WHERE state = 'running' AND lease_expires_at < ?1
                   AND id NOT IN (SELECT value FROM json_each(?2))
             RETURNING id, job_type, state",
        )
        .bind(now_micros())
        .bind(Value::Array(held.iter().map(|id| Value::String(id.to_string())).collect()).to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(id, t, s)| Ok((parse_id(&id)?, t, s.parse().map_err(QueueError::Corrupt)?))).collect()
    }

    async fn bury_unhandled(&self, known: &[String], created_before: i64) -> Result<Vec<(JobId, String)>> {
        self.count();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "UPDATE jobs SET state = 'dead', finished_at = ?3,
                    last_error = 'no handler is registered for job type \"' || job_type || '\"'
             WHERE state = 'queued' AND created_at < ?1 AND job_type NOT IN (SELECT value FROM json_each(?2))
             RETURNING id, job_type",
        )
        .bind(created_before)
        .bind(Value::from(known.to_vec()).to_string())
        .bind(now_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(id, t)| Ok((parse_id(&id)?, t))).collect()
    }

    async fn purge(&self, finished_before: i64) -> Result<u64> {
        self.count();
        let done = sqlx::query(&format!(
            "DELETE FROM jobs WHERE state IN {ended} AND finished_at < ?",
            ended = sql_in(&JobState::ENDED)
        ))
        .bind(finished_before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn wait_for_enqueue(&self) {
        // Other processes cannot signal us; the worker's poll interval covers them.
        std::future::pending::<()>().await;
    }

    fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}
