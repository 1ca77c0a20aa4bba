//! The part of `batch_upsert` both backends share: dedup, validation,
//! chunking, per-item fallback, atomic mode and reconciliation of rows a
//! statement did not write.

use std::collections::HashMap;
use std::sync::Arc;

use batch_core::{
    BatchReport, BatchRunner, ChunkLimits, ErrorPolicy, Failure, ItemError, NoProgress, ProgressReporter,
    ProgressTracker, RunnerConfig, Success, chunk_by_bytes,
};
use chrono::{DateTime, Utc};

use crate::Result;
use crate::model::{EntityKey, NewEntity, UpsertOptions, UpsertReport, UpsertStatus, Upserted};
use crate::validate::{Prepared, prepare};

/// Largest chunk in bytes, so one statement never carries unbounded data.
const CHUNK_BYTES: usize = 32 * 1024 * 1024;
/// Attempts for rows that lost a race with another writer.
const RACE_ATTEMPTS: usize = 5;

/// A row written by an upsert statement.
pub(crate) struct WrittenRow {
    pub key: EntityKey,
    pub version: i64,
    pub created: bool,
}

/// What a write statement did: the rows it wrote, and the stored state of
/// rows it did not write where the backend read it anyway (so they need not
/// be read again to be accounted for).
#[derive(Default)]
pub(crate) struct WriteOutcome {
    pub written: Vec<WrittenRow>,
    pub states: HashMap<EntityKey, StoredState>,
}

/// The stored state of a key, tombstones included.
pub(crate) struct StoredState {
    pub version: i64,
    pub content_hash: String,
    pub deleted: bool,
}

/// What a backend provides; `Conn` is a connection or a transaction.
#[async_trait::async_trait]
pub(crate) trait UpsertBackend: Send + Sync {
    type Conn: Send;

    /// Chunks written at once outside atomic mode.
    fn parallel_chunks(&self) -> usize;

    async fn connection(&self) -> Result<Self::Conn, sqlx::Error>;
    /// How the backend starts a write transaction (SQLite takes the write lock at once).
    const BEGIN: &'static str;

    /// Runs one statement without results (`BEGIN`, `COMMIT`, `ROLLBACK`).
    async fn execute(&self, conn: &mut Self::Conn, sql: &'static str) -> Result<(), sqlx::Error>;

    /// Inserts or updates every row whose hash differs and whose expected
    /// version (if any) matches, in as few statements as the backend can;
    /// returns the rows written (and any states it read).
    async fn write(
        &self,
        conn: &mut Self::Conn,
        rows: &[&Prepared],
        now: DateTime<Utc>,
    ) -> Result<WriteOutcome, sqlx::Error>;

    /// One statement: version, hash and tombstone flag of `keys`.
    async fn read_state(
        &self,
        conn: &mut Self::Conn,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, StoredState>, sqlx::Error>;
}

type ItemResult = (EntityKey, Result<Upserted, String>);

pub(crate) async fn batch_upsert<B: UpsertBackend>(
    backend: &B,
    entities: Vec<NewEntity>,
    options: &UpsertOptions,
    max_content_bytes: usize,
) -> Result<UpsertReport> {
    let started = tokio::time::Instant::now();
    let mut report = UpsertReport::default();
    let entities = last_wins(entities);
    let progress: Arc<dyn ProgressReporter> = options.progress.clone().unwrap_or_else(|| Arc::new(NoProgress));
    let tracker = ProgressTracker::new(entities.len() as u64, progress);
    let limits = ChunkLimits { max_items: options.batch_size.max(1), max_bytes: CHUNK_BYTES };
    let cancel = options.cancel.clone().unwrap_or_default();
    if options.atomic {
        // All or nothing: every item is checked before anything is written.
        let (valid, invalid) = prepare_all(entities, max_content_bytes);
        report.failed.extend(invalid.into_iter().map(|(key, reason)| Failure { key, reason }));
        tracker.advance(0, report.failed.len() as u64);
        let chunks = chunk_by_bytes(valid, limits, |p| p.content.len() + p.id.len() + 64);
        if report.failed.is_empty() {
            atomic(backend, chunks, &tracker, &cancel, &mut report).await?;
        } else {
            let reason = "not written: the atomic batch has invalid items";
            report.rolled_back.extend(chunks.into_iter().flatten().map(|p| key_of(&p)));
            tracing::debug!(reason, "atomic upsert refused before writing");
        }
    } else {
        // Each chunk is checked (and hashed) when it starts, so with more
        // chunks in flight than connections one is checked while another is
        // written: hashing 10,000 notes of 2 KB took ~40 ms, all of it
        // before the first write when done up front.
        let chunks = chunk_by_bytes(entities, limits, |e| e.content.len() + e.id.len() + 64);
        let chunk_keys: Vec<Vec<EntityKey>> =
            chunks.iter().map(|chunk| chunk.iter().map(NewEntity::key).collect()).collect();
        let runner = BatchRunner::new(RunnerConfig {
            max_parallel: backend.parallel_chunks() + 1,
            policy: ErrorPolicy::ContinueOnError,
            ..RunnerConfig::default()
        });
        // A lost connection is the call's failure, not its items': the caller tries again later.
        let lost: std::sync::Mutex<Option<sqlx::Error>> = std::sync::Mutex::new(None);
        let connections = Connections::new(backend);
        let chunk_report = runner
            .run(chunks.into_iter().enumerate(), |chunk: Vec<NewEntity>| {
                let (tracker, lost, cancel, connections) = (&tracker, &lost, &cancel, &connections);
                async move {
                    // Checked before a chunk starts, never during one: a
                    // statement dropped half-way may still commit.
                    if cancel.is_cancelled() {
                        return Ok(None);
                    }
                    let (valid, invalid) = prepare_all(chunk, max_content_bytes);
                    let mut invalid: Vec<ItemResult> =
                        invalid.into_iter().map(|(key, reason)| (key, Err(reason))).collect();
                    let written =
                        if valid.is_empty() { Ok(Vec::new()) } else { write_chunk_or_items(connections, &valid).await };
                    match written.map(|mut results| {
                        results.append(&mut invalid);
                        results
                    }) {
                        Ok(results) => {
                            let failed = results.iter().filter(|(_, r)| r.is_err()).count() as u64;
                            tracker.advance(results.len() as u64 - failed, failed);
                            Ok(Some(results))
                        }
                        Err(error) => {
                            let reason = error.to_string();
                            lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(error);
                            Err(ItemError::permanent(reason))
                        }
                    }
                }
            })
            .await;
        if let Some(error) = lost.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            return Err(error.into());
        }
        for success in chunk_report.succeeded {
            match success.outcome {
                Some(results) => add_results(&mut report, results),
                None => report.cancelled.extend(chunk_keys[success.key].iter().cloned()),
            }
        }
    }
    tracker.finish();
    report.duration = started.elapsed();
    Ok(report)
}

/// The entities that pass validation, prepared, and the keys of the others
/// with the reason.
fn prepare_all(entities: Vec<NewEntity>, max_content_bytes: usize) -> (Vec<Prepared>, Vec<(EntityKey, String)>) {
    let mut valid = Vec::with_capacity(entities.len());
    let mut invalid = Vec::new();
    for entity in entities {
        let key = entity.key();
        match prepare(entity, max_content_bytes) {
            Ok(prepared) => valid.push(prepared),
            Err(error) => invalid.push((key, error.to_string())),
        }
    }
    (valid, invalid)
}

/// Later duplicates replace earlier ones, keeping the position of the last.
fn last_wins(entities: Vec<NewEntity>) -> Vec<NewEntity> {
    let mut last_index: HashMap<EntityKey, usize> = HashMap::with_capacity(entities.len());
    for (index, entity) in entities.iter().enumerate() {
        last_index.insert(entity.key(), index);
    }
    if last_index.len() == entities.len() {
        return entities;
    }
    entities
        .into_iter()
        .enumerate()
        .filter(|(index, entity)| last_index.get(&entity.key()) == Some(index))
        .map(|(_, entity)| entity)
        .collect()
}

pub(crate) fn key_of(prepared: &Prepared) -> EntityKey {
    EntityKey::new(&prepared.entity_type, &prepared.id)
}

fn add_results(report: &mut UpsertReport, results: Vec<ItemResult>) {
    for (key, result) in results {
        match result {
            Ok(outcome) => report.succeeded.push(Success { key, outcome }),
            Err(reason) => report.failed.push(Failure { key, reason }),
        }
    }
}

/// One statement for the chunk; if it fails, each item alone so one bad row
/// never sinks its neighbours. A lost connection is no row's fault: it is
/// the error, and no item is reported failed for it.
async fn write_chunk_or_items<B: UpsertBackend>(
    connections: &Connections<'_, B>,
    chunk: &[Prepared],
) -> Result<Vec<ItemResult>, sqlx::Error> {
    match connections.write(chunk).await {
        Ok(results) => Ok(results),
        Err(error) if is_connection_error(&error) => Err(error),
        Err(chunk_error) if chunk.len() > 1 => {
            tracing::warn!(error = %chunk_error, items = chunk.len(), "chunk failed; retrying item by item");
            let mut results = Vec::with_capacity(chunk.len());
            for item in chunk {
                match connections.write(std::slice::from_ref(item)).await {
                    Ok(mut one) => results.append(&mut one),
                    Err(error) if is_connection_error(&error) => return Err(error),
                    Err(error) => results.push((key_of(item), Err(describe(&error)))),
                }
            }
            Ok(results)
        }
        Err(error) => Ok(chunk.iter().map(|item| (key_of(item), Err(describe(&error)))).collect()),
    }
}

/// The database went away (I/O, a pool that cannot connect, SQLSTATE class
/// 08 "connection exception", 57P shutdowns), as opposed to refusing a row.
fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => format!("database refused the row: {}", db.message()),
        other => format!("database error: {other}"),
    }
}

/// Where chunks get their connection: the pool, for each chunk; or, for a
/// backend of one writer connection, one connection held from chunk to
/// chunk. Handing a connection back makes sqlx ping it first: with a chunk
/// of 500 that was a fifth of SQLite's time. It is handed back (letting
/// other writers of the store in) at least every [`HOLD_AT_MOST`].
struct Connections<'a, B: UpsertBackend> {
    backend: &'a B,
    held: Option<tokio::sync::Mutex<Held<B::Conn>>>,
}

struct Held<C> {
    conn: Option<C>,
    since: tokio::time::Instant,
}

/// Longest a batch keeps the single writer connection between chunks.
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(100);

impl<'a, B: UpsertBackend> Connections<'a, B> {
    fn new(backend: &'a B) -> Self {
        let hold = backend.parallel_chunks() == 1;
        let held = hold.then(|| tokio::sync::Mutex::new(Held { conn: None, since: tokio::time::Instant::now() }));
        Self { backend, held }
    }

    async fn write(&self, rows: &[Prepared]) -> Result<Vec<ItemResult>, sqlx::Error> {
        let Some(held) = &self.held else {
            let mut conn = self.backend.connection().await?;
            return write_on(self.backend, &mut conn, rows).await;
        };
        let mut guard = held.lock().await;
        let held = &mut *guard;
        if held.since.elapsed() >= HOLD_AT_MOST {
            held.conn = None;
        }
        let conn = match &mut held.conn {
            Some(conn) => conn,
            slot @ None => {
                held.since = tokio::time::Instant::now();
                slot.insert(self.backend.connection().await?)
            }
        };
        let written = write_on(self.backend, conn, rows).await;
        if written.as_ref().is_err_and(is_connection_error) {
            held.conn = None;
        }
        written
    }
}

/// Writes `rows` and accounts for the ones the statement did not write:
/// unchanged, a version conflict, or a lost race (written again).
async fn write_on<B: UpsertBackend>(
    backend: &B,
    conn: &mut B::Conn,
    rows: &[Prepared],
) -> Result<Vec<ItemResult>, sqlx::Error> {
    let mut results = Vec::with_capacity(rows.len());
    let mut pending: Vec<&Prepared> = rows.iter().collect();
    for attempt in 1..=RACE_ATTEMPTS {
        let outcome = backend.write(conn, &pending, Utc::now()).await?;
        let mut written: HashMap<EntityKey, WrittenRow> =
            outcome.written.into_iter().map(|w| (w.key.clone(), w)).collect();
        let mut stored = outcome.states;
        let missing: Vec<EntityKey> =
            pending.iter().map(|p| key_of(p)).filter(|k| !written.contains_key(k) && !stored.contains_key(k)).collect();
        if !missing.is_empty() {
            stored.extend(backend.read_state(conn, &missing).await?);
        }
        let mut raced = Vec::new();
        for item in pending {
            let key = key_of(item);
            if let Some(row) = written.remove(&key) {
                let status = if row.created { UpsertStatus::Created } else { UpsertStatus::Updated };
                let content_hash = item.content_hash.clone();
                results.push((key, Ok(Upserted { status, version: row.version, content_hash })));
                continue;
            }
            let state = stored.get(&key);
            let live_version = state.map_or(0, |s| if s.deleted { 0 } else { s.version });
            match (item.expected_version, state) {
                (Some(expected), _) if expected != live_version => results.push((
                    key,
                    Err(format!("version conflict: expected version {expected}, stored version is {live_version}")),
                )),
                (_, Some(s)) if !s.deleted && s.content_hash == item.content_hash => {
                    let (status, version, content_hash) = (UpsertStatus::Unchanged, s.version, s.content_hash.clone());
                    results.push((key, Ok(Upserted { status, version, content_hash })));
                }
                _ if attempt == RACE_ATTEMPTS => {
                    results.push((key, Err("not written: another writer kept changing this entity".to_owned())));
                }
                _ => raced.push(item),
            }
        }
        if raced.is_empty() {
            break;
        }
        pending = raced;
    }
    Ok(results)
}

async fn atomic<B: UpsertBackend>(
    backend: &B,
    chunks: Vec<Vec<Prepared>>,
    tracker: &ProgressTracker,
    cancel: &batch_core::CancellationToken,
    report: &mut UpsertReport,
) -> Result<()> {
    let mut conn = backend.connection().await?;
    backend.execute(&mut conn, B::BEGIN).await?;
    let cancelled = |report: &mut UpsertReport| report.cancelled.extend(chunks.iter().flatten().map(key_of));
    let mut results: Vec<ItemResult> = Vec::new();
    let mut failure: Option<(Vec<EntityKey>, String)> = None;
    for chunk in &chunks {
        if cancel.is_cancelled() {
            backend.execute(&mut conn, "ROLLBACK").await?;
            cancelled(report);
            return Ok(());
        }
        match write_on(backend, &mut conn, chunk).await {
            Ok(mut chunk_results) => {
                tracker.advance(chunk_results.len() as u64, 0);
                results.append(&mut chunk_results);
                if results.iter().any(|(_, r)| r.is_err()) {
                    break;
                }
            }
            Err(error) => {
                failure = Some((chunk.iter().map(key_of).collect(), describe(&error)));
                break;
            }
        }
    }
    let item_failed = results.iter().any(|(_, r)| r.is_err());
    if failure.is_none() && !item_failed && cancel.is_cancelled() {
        backend.execute(&mut conn, "ROLLBACK").await?;
        cancelled(report);
        return Ok(());
    }
    if failure.is_none() && !item_failed {
        backend.execute(&mut conn, "COMMIT").await?;
        add_results(report, results);
        return Ok(());
    }
    backend.execute(&mut conn, "ROLLBACK").await?;
    let mut failed_keys = std::collections::HashSet::new();
    for (key, result) in results {
        if let Err(reason) = result {
            failed_keys.insert(key.clone());
            report.failed.push(Failure { key, reason });
        }
    }
    if let Some((keys, reason)) = failure {
        for key in keys {
            failed_keys.insert(key.clone());
            report.failed.push(Failure { key, reason: format!("atomic batch failed in this item's chunk: {reason}") });
        }
    }
    report.rolled_back.extend(chunks.iter().flatten().map(key_of).filter(|k| !failed_keys.contains(k)));
    Ok(())
}

/// Reports for keyed deletes share the batch-core report type.
pub(crate) fn delete_report(
    keys: &[EntityKey],
    deleted: &std::collections::HashSet<EntityKey>,
) -> BatchReport<EntityKey, crate::model::Deleted> {
    let mut report = BatchReport::default();
    for key in keys {
        let outcome =
            if deleted.contains(key) { crate::model::Deleted::Deleted } else { crate::model::Deleted::NotFound };
        report.succeeded.push(Success { key: key.clone(), outcome });
    }
    report
}
