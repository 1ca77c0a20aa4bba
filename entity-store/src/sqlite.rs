//! The embedded default: one SQLite file in WAL mode with a single writer
//! connection and a small pool of readers.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool};

use crate::filter::{Bind, Dialect, Filter, RenderedFilter};
use crate::model::{Change, DeleteReport, Entity, EntityKey, NewEntity, TextHit, UpsertOptions, UpsertReport, key_at};
use crate::upsert::{batch_upsert, delete_report};
use crate::validate::DEFAULT_MAX_CONTENT_BYTES;
use crate::{EntityStore, READ_CHUNK, Result, StoreError};

mod upsert;

/// The store's tables on SQLite; the database may also hold the job queue's.
pub(crate) const MIGRATIONS: sql_migrations::Embedded = sql_migrations::embed!(
    "migrations/sqlite",
    ["0001_entities.sql", "0002_search_watermark.sql", "0003_source_form.sql", "0004_contentless_search.sql"]
);

const COLUMNS: &str = "e.entity_type, e.id, e.content, e.metadata, e.content_hash, e.created_at, e.updated_at, e.version, e.revision, e.frontmatter";

/// How often the background checkpointer moves the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL pages (4 KiB, so 64 MiB) above which the writer checkpoints itself
/// after a commit: the hard bound on the WAL when writes outpace the
/// background checkpointer (SQLite's own default is 1,000 pages).
const WRITER_CHECKPOINT_PAGES: &str = "16384";
/// The writer's page cache (`PRAGMA cache_size`, negative: KiB), 8 MiB
/// against SQLite's 2 MiB: what a chunk of a batch writes stays in it for
/// the next statements. It fills as used and stays filled while the store
/// is open, so it is part of every process's peak memory: 64 MiB (all of a
/// 10,000-note batch, so the search refresh never read the rows back from
/// the WAL; 50 ms of its 200) made a 50,000-document import peak at 3x the
/// memory of a 5,000-document one, against the 1.3x `bench tools` allows.
const WRITER_CACHE: &str = "-8192";

/// Entities in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    statements: Arc<AtomicU64>,
    max_content_bytes: usize,
    /// Keeps the background checkpointer running while any clone lives.
    _checkpointer: Arc<()>,
    checkpointer: SqlitePool,
    /// Whether the next chunk of an upsert tries a plain insert first: set
    /// while chunks turn out to be new keys only (see `upsert`).
    insert_first: Arc<AtomicBool>,
}

/// Moves committed WAL frames into the database every [`CHECKPOINT_EVERY`]
/// until the store is dropped. PASSIVE never blocks readers or the writer;
/// what it cannot copy yet waits for the next round.
async fn checkpoint_while_alive(pool: SqlitePool, alive: std::sync::Weak<()>) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if alive.strong_count() == 0 || pool.is_closed() {
            break;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::debug!(%error, "background WAL checkpoint failed; the next round retries");
        }
    }
    pool.close().await;
}

/// Timestamps as fixed-width UTC text, so text order is time order.
pub(crate) fn format_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_time(text: &str, key: &EntityKey) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: format!("bad timestamp {text:?}: {e}") })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
        Self::connect_with(options).await
    }

    /// Opens a `sqlite:` URL (`sqlite://file.db`, `sqlite::memory:` is not
    /// shared between connections: use a file).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        Self::connect_with(options).await
    }

    /// Opens with these options (WAL, `synchronous = NORMAL`, a 10 s busy timeout and foreign keys are set on top) and migrates.
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Copying the WAL into the database cost about a quarter of a large
        // batch's time on the writer: a background task does it on a
        // connection of its own, the writer only past a high bound.
        let writer_options =
            options.clone().pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES).pragma("cache_size", WRITER_CACHE);
        // A local file cannot drop the connection: no ping before each chunk takes it.
        let writer =
            SqlitePoolOptions::new().max_connections(1).test_before_acquire(false).connect_with(writer_options).await?;
        MIGRATIONS.migrator().await?.run(&writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options.clone().read_only(true)).await?;
        let alive = Arc::new(());
        let checkpointer = SqlitePoolOptions::new().max_connections(1).connect_lazy_with(options);
        tokio::spawn(checkpoint_while_alive(checkpointer.clone(), Arc::downgrade(&alive)));
        Ok(Self {
            writer,
            reader,
            statements: Arc::new(AtomicU64::new(0)),
            max_content_bytes: DEFAULT_MAX_CONTENT_BYTES,
            _checkpointer: alive,
            checkpointer,
            insert_first: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Refuses content over `limit` bytes (default [`DEFAULT_MAX_CONTENT_BYTES`](crate::DEFAULT_MAX_CONTENT_BYTES)) as a per-item failure.
    #[must_use]
    pub fn with_max_content_bytes(mut self, limit: usize) -> Self {
        self.max_content_bytes = limit;
        self
    }

    /// The writer pool, for callers that share the file (e.g. the job queue).
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// The search index's watermark, the latest revision, and how many rows are past the watermark.
    async fn unindexed(&self, conn: &mut sqlx::SqliteConnection) -> Result<(i64, i64, i64)> {
        self.count();
        Ok(sqlx::query_as(
            "SELECT s.revision, m.latest, (SELECT COUNT(*) FROM entities WHERE revision > s.revision)
             FROM search_indexed AS s, (SELECT COALESCE(MAX(revision), 0) AS latest FROM entities) AS m",
        )
        .fetch_one(conn)
        .await?)
    }

    /// `columns` of the live entities matching `filter`, ordered by type
    /// and id, after `after`.
    async fn find_rows(
        &self,
        columns: &str,
        filter: &Filter,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<SqliteRow>> {
        let rendered = RenderedFilter::new(filter, Dialect::Sqlite, 1);
        let sql = format!(
            "SELECT {columns} FROM entities AS e WHERE NOT e.deleted AND {} AND (e.entity_type, e.id) > (?, ?)
             ORDER BY e.entity_type, e.id LIMIT ?",
            rendered.sql
        );
        // '' sorts before every key: no `after` is the first page.
        let (after_type, after_id) = after.map_or(("", ""), |key| (key.entity_type.as_str(), key.id.as_str()));
        self.count();
        Ok(bind_all(sqlx::query(&sql), &rendered.binds)
            .bind(after_type)
            .bind(after_id)
            .bind(limit as i64)
            .fetch_all(&self.reader)
            .await?)
    }

    fn keys_json(keys: &[EntityKey]) -> String {
        Value::Array(
            keys.iter().map(|k| Value::Array(vec![k.entity_type.clone().into(), k.id.clone().into()])).collect(),
        )
        .to_string()
    }

    fn entity_from_row(row: &SqliteRow) -> Result<Entity> {
        let key = key_at(row)?;
        let metadata_text: String = row.try_get(3)?;
        let metadata: Map<String, Value> = serde_json::from_str(&metadata_text).map_err(|e| StoreError::Corrupt {
            key: key.to_string(),
            reason: format!("metadata is not a JSON object: {e}"),
        })?;
        Ok(Entity {
            content: row.try_get(2)?,
            metadata,
            content_hash: row.try_get(4)?,
            created_at: parse_time(&row.try_get::<String, _>(5)?, &key)?,
            updated_at: parse_time(&row.try_get::<String, _>(6)?, &key)?,
            version: row.try_get(7)?,
            revision: row.try_get(8)?,
            frontmatter: row.try_get(9)?,
            entity_type: key.entity_type,
            id: key.id,
        })
    }
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for bind in binds {
        query = match bind {
            Bind::Text(s) => query.bind(s.as_str()),
            Bind::Integer(n) => query.bind(*n),
            Bind::Time(t) => query.bind(format_time(*t)),
            Bind::Json(v) => query.bind(v.to_string()),
        };
    }
    query
}

/// FTS5 query from free text: any word may match; a word of an unspaced
/// script matches when all its pairs are present ([`crate::terms`]).
fn fts_query(text: &str) -> Option<String> {
    crate::terms::render_query(text, |term| Some(format!("\"{}\"", term.replace('"', "\"\""))), " AND ", " OR ")
}

/// Rows read and indexed per statement by `refresh_search_index` (3 binds a
/// row, under SQLite's 32,766 bind parameters).
const INDEX_CHUNK: usize = 1000;

/// SQL: the title as text to index, as PostgreSQL's `->>` gives it
/// (`json_extract` gives JSON `true` and `false` as 1 and 0).
const TITLE_TEXT: &str = "CASE json_type(metadata, '$.title') WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
     ELSE CAST(title AS TEXT) END";

/// SQL: the row's title and content are ASCII (as many characters as bytes).
const ASCII_ONLY: &str = "octet_length(content) = length(content)
     AND coalesce(octet_length(title) = length(title), TRUE)";

#[async_trait::async_trait]
impl EntityStore for SqliteStore {
    async fn close(&self) {
        // Readers and the checkpointer first: the writer, closing last, checkpoints and removes the WAL.
        self.reader.close().await;
        self.checkpointer.close().await;
        self.writer.close().await;
    }

    async fn batch_get(&self, keys: &[EntityKey]) -> Result<HashMap<EntityKey, Entity>> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(READ_CHUNK) {
            self.count();
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM json_each(?) AS j
                 JOIN entities AS e ON e.entity_type = j.value ->> 0 AND e.id = j.value ->> 1
                 WHERE NOT e.deleted"
            ))
            .bind(Self::keys_json(chunk))
            .fetch_all(&self.reader)
            .await?;
            for row in &rows {
                let entity = Self::entity_from_row(row)?;
                found.insert(entity.key(), entity);
            }
        }
        Ok(found)
    }

    async fn exists(&self, keys: &[EntityKey]) -> Result<HashSet<EntityKey>> {
        let mut found = HashSet::with_capacity(keys.len());
        for chunk in keys.chunks(READ_CHUNK) {
            self.count();
            let rows = sqlx::query(
                "SELECT e.entity_type, e.id FROM json_each(?) AS j
                 JOIN entities AS e ON e.entity_type = j.value ->> 0 AND e.id = j.value ->> 1
                 WHERE NOT e.deleted",
            )
            .bind(Self::keys_json(chunk))
            .fetch_all(&self.reader)
            .await?;
            found.extend(rows.iter().map(key_at).collect::<Result<Vec<_>, _>>()?);
        }
        Ok(found)
    }

    async fn batch_upsert(&self, entities: Vec<NewEntity>, options: &UpsertOptions) -> Result<UpsertReport> {
        batch_upsert(self, entities, options, self.max_content_bytes).await
    }

    async fn batch_delete(&self, keys: &[EntityKey]) -> Result<DeleteReport> {
        let started = tokio::time::Instant::now();
        let mut deleted = HashSet::new();
        for chunk in keys.chunks(READ_CHUNK) {
            self.count();
            let rows = sqlx::query(
                "UPDATE entities SET deleted = 1, content = '', metadata = '{}', content_hash = '', frontmatter = NULL,
                        version = version + 1, updated_at = ?1, revision = m.base + k.ord
                 FROM (SELECT j.value ->> 0 AS entity_type, j.value ->> 1 AS id, j.key AS ord FROM json_each(?2) AS j) AS k,
                      (SELECT COALESCE(MAX(revision), 0) + 1 AS base FROM entities) AS m
                 WHERE entities.entity_type = k.entity_type AND entities.id = k.id AND NOT entities.deleted
                 RETURNING entity_type, id",
            )
            .bind(format_time(Utc::now()))
            .bind(Self::keys_json(chunk))
            .fetch_all(&self.writer)
            .await?;
            deleted.extend(rows.iter().map(key_at).collect::<Result<Vec<_>, _>>()?);
        }
        let mut report = delete_report(keys, &deleted);
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn list(&self, entity_type: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entity>> {
        self.count();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM entities AS e
             WHERE e.entity_type = ? AND e.id > ? AND NOT e.deleted ORDER BY e.id LIMIT ?"
        ))
        .bind(entity_type)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(Self::entity_from_row).collect()
    }

    async fn list_hashes(&self, after: Option<&EntityKey>, limit: usize) -> Result<Vec<(EntityKey, String)>> {
        self.count();
        let rows = sqlx::query(
            "SELECT entity_type, id, content_hash FROM entities
             WHERE NOT deleted AND (entity_type, id) > (?1, ?2) ORDER BY entity_type, id LIMIT ?3",
        )
        .bind(after.map_or("", |k| k.entity_type.as_str()))
        .bind(after.map_or("", |k| k.id.as_str()))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(|r| Ok::<_, sqlx::Error>((key_at(r)?, r.try_get(2)?))).collect::<Result<_, _>>()?)
    }

    async fn count(&self, entity_type: Option<&str>) -> Result<u64> {
        self.count();
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM entities WHERE NOT deleted AND (?1 IS NULL OR entity_type = ?1)")
                .bind(entity_type)
                .fetch_one(&self.reader)
                .await?;
        Ok(count as u64)
    }

    async fn entity_types(&self) -> Result<Vec<String>> {
        self.count();
        Ok(sqlx::query_scalar("SELECT DISTINCT entity_type FROM entities WHERE NOT deleted ORDER BY entity_type")
            .fetch_all(&self.reader)
            .await?)
    }

    async fn changes_since(&self, revision: i64, limit: usize) -> Result<Vec<Change>> {
        self.count();
        let rows = sqlx::query(
            "SELECT entity_type, id, revision, version, deleted, content_hash FROM entities WHERE revision > ? ORDER BY revision LIMIT ?",
        )
        .bind(revision)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(crate::model::change_at).collect::<Result<_, _>>()?)
    }

    async fn current_revision(&self) -> Result<i64> {
        self.count();
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM entities").fetch_one(&self.reader).await?)
    }

    async fn find_after(&self, filter: &Filter, after: Option<&EntityKey>, limit: usize) -> Result<Vec<Entity>> {
        let rows = self.find_rows(COLUMNS, filter, after, limit).await?;
        rows.iter().map(Self::entity_from_row).collect()
    }

    async fn find_keys_after(
        &self,
        filter: &Filter,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<EntityKey>> {
        let rows = self.find_rows("e.entity_type, e.id", filter, after, limit).await?;
        Ok(rows.iter().map(key_at).collect::<Result<_, _>>()?)
    }

    async fn search_text(&self, query: &str, limit: usize) -> Result<Vec<TextHit>> {
        let Some(fts) = fts_query(query) else {
            return Ok(Vec::new());
        };
        self.refresh_search_index().await?;
        self.count();
        let rows = sqlx::query(
            "SELECT e.entity_type, e.id, -bm25(entities_fts, 2.0, 1.0) AS score
             FROM entities_fts JOIN entities AS e ON e.rowid = entities_fts.rowid
             WHERE entities_fts MATCH ? AND NOT e.deleted ORDER BY score DESC LIMIT ?",
        )
        .bind(fts)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        let hit =
            |r: &SqliteRow| -> Result<TextHit, sqlx::Error> { Ok(TextHit { key: key_at(r)?, score: r.try_get(2)? }) };
        Ok(crate::relative_scores(rows.iter().map(hit).collect::<Result<_, _>>()?))
    }

    async fn refresh_search_index(&self) -> Result<u64> {
        // A cheap look first, on a reader: most calls find nothing to do,
        // and searches at once must not queue for the one writer to learn it.
        let unindexed = {
            let mut reader = self.reader.acquire().await?;
            self.unindexed(&mut reader).await?.2
        };
        if unindexed == 0 {
            return Ok(0);
        }
        let mut conn = self.writer.acquire().await?;
        // The write lock up front: FTS5 writes its shadow tables from inside
        // the statement, after the statement has begun reading, and SQLite
        // refuses such an upgrade at once ("database is locked", no busy
        // wait) while another process refreshes. Inside the lock the
        // watermark is read again, so two refreshes never index a row twice.
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let (indexed, latest, changed) = self.unindexed(&mut tx).await?;
        if changed == 0 {
            return Ok(0);
        }
        // Bounded by `latest`: rows another process writes meanwhile are left
        // for the next refresh, never skipped.
        // A row at version 1 was written once, after the last refresh, so it
        // has nothing in the index to delete; deleting it anyway would leave
        // a tombstone in the contentless index for every new row.
        self.count();
        sqlx::query(
            "DELETE FROM entities_fts WHERE rowid IN
                (SELECT rowid FROM entities WHERE revision > ?1 AND revision <= ?2 AND version > 1)",
        )
        .bind(indexed)
        .bind(latest)
        .execute(&mut *tx)
        .await?;
        // Rows with text in unspaced scripts are indexed as their
        // characters and pairs (`crate::terms`), which FTS5's tokenizer
        // cannot do; the rest go from the table to the index inside SQLite.
        // One pass finds the rows that may need it: those not ASCII alone
        // (a plain scan comparing a text's bytes and characters; asking for
        // the script ranges with a GLOB cost ~0.4 ms per 2 KB row).
        self.count();
        let others_json: String = sqlx::query_scalar(&format!(
            "SELECT json_group_array(rowid) FROM entities
             WHERE revision > ?1 AND revision <= ?2 AND NOT deleted AND NOT ({ASCII_ONLY})"
        ))
        .bind(indexed)
        .bind(latest)
        .fetch_one(&mut *tx)
        .await?;
        let others: Vec<i64> =
            serde_json::from_str(&others_json).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
        self.count();
        sqlx::query(&format!(
            "INSERT INTO entities_fts (rowid, title, content)
             SELECT rowid, {TITLE_TEXT}, content FROM entities
             WHERE revision > ?1 AND revision <= ?2 AND NOT deleted
               AND rowid NOT IN (SELECT value FROM json_each(?3))"
        ))
        .bind(indexed)
        .bind(latest)
        .bind(&others_json)
        .execute(&mut *tx)
        .await?;
        for chunk in others.chunks(INDEX_CHUNK) {
            self.count();
            // One JSON row per chunk: rows of a result cross from sqlx's
            // SQLite thread one at a time, each a wake-up of this one. The
            // title passes a subquery so that a JSON title (an object) is
            // its text here, not JSON nested in the array.
            let json: String = sqlx::query_scalar(&format!(
                "SELECT json_group_array(json_array(rowid, title, content)) FROM (
                    SELECT e.rowid, {TITLE_TEXT} AS title, e.content
                    FROM json_each(?) AS j JOIN entities AS e ON e.rowid = j.value)"
            ))
            .bind(serde_json::json!(chunk).to_string())
            .fetch_one(&mut *tx)
            .await?;
            let rows: Vec<(i64, Option<String>, String)> =
                serde_json::from_str(&json).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            let texts: Vec<(i64, Option<Cow<'_, str>>, Cow<'_, str>)> = rows
                .iter()
                .map(|(rowid, title, content)| {
                    (*rowid, title.as_deref().map(crate::terms::index_text), crate::terms::index_text(content))
                })
                .collect();
            let mut insert = sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO entities_fts (rowid, title, content) ");
            insert.push_values(&texts, |mut row, (rowid, title, content)| {
                row.push_bind(*rowid).push_bind(title.as_deref()).push_bind(content.as_ref());
            });
            self.count();
            insert.build().execute(&mut *tx).await?;
        }
        self.count();
        sqlx::query("UPDATE search_indexed SET revision = ?").bind(latest).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(changed as u64)
    }

    fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}
