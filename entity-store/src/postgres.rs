//! PostgreSQL: a connection pool that many processes may share. Chunks go
//! as `UNNEST` arrays, one bind per column whatever the batch size.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row};

use crate::filter::{Bind, Dialect, Filter, RenderedFilter};
use crate::model::{Change, DeleteReport, Entity, EntityKey, NewEntity, TextHit, UpsertOptions, UpsertReport, key_at};
use crate::upsert::{StoredState, UpsertBackend, WriteOutcome, WrittenRow, batch_upsert, delete_report};
use crate::validate::{DEFAULT_MAX_CONTENT_BYTES, Prepared, metadata_json};
use crate::{EntityStore, READ_CHUNK, Result, StoreError};

mod search;

/// The store's tables on PostgreSQL; the database may also hold other crates'.
pub(crate) const MIGRATIONS: sql_migrations::Embedded = sql_migrations::embed!(
    "migrations/postgres",
    ["0001_entities.sql", "0002_source_form.sql", "0003_own_tokens.sql", "0004_search_watermark.sql"]
);

const COLUMNS: &str = "e.entity_type, e.id, e.content, e.metadata, e.content_hash, e.created_at, e.updated_at, e.version, e.revision, e.frontmatter";

/// Chunks prepared at once; rows of different chunks never overlap. Their
/// writes still take turns on the revision lock (see `write`).
const PARALLEL_CHUNKS: usize = 4;

/// The key of the transaction-level advisory lock that every entity write
/// (upsert, delete) takes before drawing revisions, so revisions commit in
/// the order they are drawn. Any fixed number unused by other code on the
/// same database; changing it lets old and new writers interleave.
const ENTITY_WRITE_LOCK: i64 = 7_301_202_611;

/// Entities in a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    statements: Arc<AtomicU64>,
    max_content_bytes: usize,
}

impl PgStore {
    /// Connects to `url` and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        // One plain connection first: an unreachable server then fails at once
        // with its reason, not after the pool's 30 s "timed out" with none.
        sqlx::Connection::close(<sqlx::PgConnection as sqlx::Connection>::connect(url).await?).await?;
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        Self::from_pool(pool).await
    }

    /// Migrates through `pool` and uses it; the pool may be shared with the queue.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        MIGRATIONS.migrator().await?.run(&pool).await?;
        Ok(Self { pool, statements: Arc::new(AtomicU64::new(0)), max_content_bytes: DEFAULT_MAX_CONTENT_BYTES })
    }

    /// Refuses content over `limit` bytes (default [`DEFAULT_MAX_CONTENT_BYTES`](crate::DEFAULT_MAX_CONTENT_BYTES)) as a per-item failure.
    #[must_use]
    pub fn with_max_content_bytes(mut self, limit: usize) -> Self {
        self.max_content_bytes = limit;
        self
    }

    /// The connection pool, for crates that keep their tables beside the store's.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// `columns` of the live entities matching `filter`, ordered by type
    /// and id (bytewise), after `after`.
    async fn find_rows(
        &self,
        columns: &str,
        filter: &Filter,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<PgRow>> {
        let rendered = RenderedFilter::new(filter, Dialect::Postgres, 1);
        let next = rendered.binds.len() + 1;
        let (after_type, after_id, limit_at) = (next, next + 1, next + 2);
        let sql = format!(
            "SELECT {columns} FROM entities AS e WHERE NOT e.deleted AND {}
               AND (e.entity_type COLLATE \"C\", e.id COLLATE \"C\") > (${after_type}, ${after_id})
             ORDER BY e.entity_type COLLATE \"C\", e.id COLLATE \"C\" LIMIT ${limit_at}",
            rendered.sql
        );
        // '' sorts before every key: no `after` is the first page.
        let (after_type, after_id) = after.map_or(("", ""), |key| (key.entity_type.as_str(), key.id.as_str()));
        self.count();
        Ok(bind_all(sqlx::query(&sql), &rendered.binds)
            .bind(after_type)
            .bind(after_id)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?)
    }

    fn key_columns(keys: &[EntityKey]) -> (Vec<&str>, Vec<&str>) {
        keys.iter().map(|k| (k.entity_type.as_str(), k.id.as_str())).unzip()
    }

    fn entity_from_row(row: &PgRow) -> Result<Entity> {
        let entity_type: String = row.try_get(0)?;
        let id: String = row.try_get(1)?;
        let metadata = match row.try_get::<Value, _>(3)? {
            Value::Object(map) => map,
            other => {
                return Err(StoreError::Corrupt {
                    key: EntityKey::new(entity_type, id).to_string(),
                    reason: format!("metadata is not a JSON object: {other}"),
                });
            }
        };
        Ok(Entity {
            entity_type,
            id,
            content: row.try_get(2)?,
            metadata,
            content_hash: row.try_get(4)?,
            created_at: row.try_get(5)?,
            updated_at: row.try_get(6)?,
            version: row.try_get(7)?,
            revision: row.try_get(8)?,
            frontmatter: row.try_get(9)?,
        })
    }
}

#[async_trait::async_trait]
impl UpsertBackend for PgStore {
    type Conn = PoolConnection<Postgres>;

    fn parallel_chunks(&self) -> usize {
        PARALLEL_CHUNKS
    }

    async fn connection(&self) -> Result<Self::Conn, sqlx::Error> {
        self.pool.acquire().await
    }

    const BEGIN: &'static str = "BEGIN";

    async fn execute(&self, conn: &mut Self::Conn, sql: &'static str) -> Result<(), sqlx::Error> {
        self.count();
        sqlx::query(sql).execute(&mut **conn).await.map(drop)
    }

    async fn write(
        &self,
        conn: &mut Self::Conn,
        rows: &[&Prepared],
        now: DateTime<Utc>,
    ) -> Result<WriteOutcome, sqlx::Error> {
        let types: Vec<&str> = rows.iter().map(|p| p.entity_type.as_str()).collect();
        let ids: Vec<&str> = rows.iter().map(|p| p.id.as_str()).collect();
        let contents: Vec<&str> = rows.iter().map(|p| p.content.as_str()).collect();
        let metadata: Vec<String> = rows.iter().map(|p| metadata_json(&p.metadata)).collect();
        let hashes: Vec<&str> = rows.iter().map(|p| p.content_hash.as_str()).collect();
        let expected: Vec<Option<i64>> = rows.iter().map(|p| p.expected_version).collect();
        let frontmatter: Vec<Option<&str>> = rows.iter().map(|p| p.frontmatter.as_deref()).collect();
        self.count();
        // Writers take turns on a transaction-level advisory lock before
        // drawing revisions, so revisions commit in order and a reader of
        // `changes_since` can never pass a revision that commits later.
        // Existing rows are locked (in key order, so writers never deadlock)
        // and read at their latest version before the write decides; the
        // compare-and-set in DO UPDATE then only trips on a row another
        // writer inserted meanwhile, which the caller writes again.
        let written = sqlx::query(
            "WITH input AS (
                SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $8::text[])
                    AS i(entity_type, id, content, metadata, content_hash, expected_version, frontmatter)
                WHERE (SELECT TRUE FROM pg_advisory_xact_lock($9))
             ),
             locked AS (
                SELECT e.entity_type, e.id, e.version, e.content_hash, e.deleted
                FROM entities AS e JOIN input AS i ON e.entity_type = i.entity_type AND e.id = i.id
                ORDER BY e.entity_type, e.id
                FOR UPDATE OF e
             )
             INSERT INTO entities (entity_type, id, content, metadata, content_hash, frontmatter, created_at, updated_at, version, revision, deleted)
             SELECT i.entity_type, i.id, i.content, i.metadata::json, i.content_hash, i.frontmatter, $7, $7,
                    COALESCE(e.version, 0) + 1, nextval('entity_revision'), FALSE
             FROM input AS i
             LEFT JOIN locked AS e ON e.entity_type = i.entity_type AND e.id = i.id
             WHERE (e.id IS NULL OR e.deleted OR e.content_hash <> i.content_hash)
               AND (i.expected_version IS NULL
                    OR (CASE WHEN e.id IS NULL OR e.deleted THEN 0 ELSE e.version END) = i.expected_version)
             ORDER BY i.entity_type, i.id
             ON CONFLICT (entity_type, id) DO UPDATE SET
                content = EXCLUDED.content,
                metadata = EXCLUDED.metadata,
                content_hash = EXCLUDED.content_hash,
                frontmatter = EXCLUDED.frontmatter,
                updated_at = EXCLUDED.updated_at,
                created_at = CASE WHEN entities.deleted THEN EXCLUDED.created_at ELSE entities.created_at END,
                version = entities.version + 1,
                revision = EXCLUDED.revision,
                deleted = FALSE
             WHERE entities.version = EXCLUDED.version - 1
             RETURNING entity_type, id, version, created_at = updated_at AS created",
        )
        .bind(types)
        .bind(ids)
        .bind(contents)
        .bind(metadata)
        .bind(hashes)
        .bind(expected)
        .bind(now)
        .bind(frontmatter)
        .bind(ENTITY_WRITE_LOCK)
        .fetch_all(&mut **conn)
        .await?;
        let written = written
            .iter()
            .map(|row| Ok(WrittenRow { key: key_at(row)?, version: row.try_get(2)?, created: row.try_get(3)? }))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(WriteOutcome { written, states: HashMap::new() })
    }

    async fn read_state(
        &self,
        conn: &mut Self::Conn,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, StoredState>, sqlx::Error> {
        let (types, ids) = Self::key_columns(keys);
        self.count();
        let rows = sqlx::query(
            "SELECT e.entity_type, e.id, e.version, e.content_hash, e.deleted
             FROM UNNEST($1::text[], $2::text[]) AS k(entity_type, id)
             JOIN entities AS e ON e.entity_type = k.entity_type AND e.id = k.id",
        )
        .bind(types)
        .bind(ids)
        .fetch_all(&mut **conn)
        .await?;
        rows.iter()
            .map(|row| {
                let state =
                    StoredState { version: row.try_get(2)?, content_hash: row.try_get(3)?, deleted: row.try_get(4)? };
                Ok((key_at(row)?, state))
            })
            .collect()
    }
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for bind in binds {
        query = match bind {
            Bind::Text(s) => query.bind(s.as_str()),
            Bind::Integer(n) => query.bind(*n),
            Bind::Time(t) => query.bind(*t),
            Bind::Json(v) => query.bind(v.to_string()),
        };
    }
    query
}

#[async_trait::async_trait]
impl EntityStore for PgStore {
    async fn batch_get(&self, keys: &[EntityKey]) -> Result<HashMap<EntityKey, Entity>> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(READ_CHUNK) {
            let (types, ids) = Self::key_columns(chunk);
            self.count();
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM UNNEST($1::text[], $2::text[]) AS k(entity_type, id)
                 JOIN entities AS e ON e.entity_type = k.entity_type AND e.id = k.id WHERE NOT e.deleted"
            ))
            .bind(types)
            .bind(ids)
            .fetch_all(&self.pool)
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
            let (types, ids) = Self::key_columns(chunk);
            self.count();
            let rows = sqlx::query(
                "SELECT e.entity_type, e.id FROM UNNEST($1::text[], $2::text[]) AS k(entity_type, id)
                 JOIN entities AS e ON e.entity_type = k.entity_type AND e.id = k.id WHERE NOT e.deleted",
            )
            .bind(types)
            .bind(ids)
            .fetch_all(&self.pool)
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
            let (types, ids) = Self::key_columns(chunk);
            self.count();
            let rows = sqlx::query(
                "UPDATE entities AS e SET deleted = TRUE, content = '', metadata = '{}', content_hash = '', frontmatter = NULL,
                        version = e.version + 1, updated_at = $3, revision = nextval('entity_revision')
                 FROM UNNEST($1::text[], $2::text[]) AS k(entity_type, id)
                 WHERE e.entity_type = k.entity_type AND e.id = k.id AND NOT e.deleted
                   AND (SELECT TRUE FROM pg_advisory_xact_lock($4))
                 RETURNING e.entity_type, e.id",
            )
            .bind(types)
            .bind(ids)
            .bind(Utc::now())
            .bind(ENTITY_WRITE_LOCK)
            .fetch_all(&self.pool)
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
             WHERE e.entity_type = $1 AND e.id COLLATE \"C\" > $2 AND NOT e.deleted ORDER BY e.id COLLATE \"C\" LIMIT $3"
        ))
        .bind(entity_type)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::entity_from_row).collect()
    }

    async fn list_hashes(&self, after: Option<&EntityKey>, limit: usize) -> Result<Vec<(EntityKey, String)>> {
        self.count();
        let rows = sqlx::query(
            "SELECT entity_type, id, content_hash FROM entities
             WHERE NOT deleted AND (entity_type COLLATE \"C\", id COLLATE \"C\") > ($1, $2)
             ORDER BY entity_type COLLATE \"C\", id COLLATE \"C\" LIMIT $3",
        )
        .bind(after.map_or("", |k| k.entity_type.as_str()))
        .bind(after.map_or("", |k| k.id.as_str()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| Ok::<_, sqlx::Error>((key_at(r)?, r.try_get(2)?))).collect::<Result<_, _>>()?)
    }

    async fn count(&self, entity_type: Option<&str>) -> Result<u64> {
        self.count();
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM entities WHERE NOT deleted AND ($1::text IS NULL OR entity_type = $1)",
        )
        .bind(entity_type)
        .fetch_one(&self.pool)
        .await?;
        Ok(count as u64)
    }

    async fn entity_types(&self) -> Result<Vec<String>> {
        self.count();
        Ok(sqlx::query_scalar("SELECT DISTINCT entity_type FROM entities WHERE NOT deleted ORDER BY entity_type")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn changes_since(&self, revision: i64, limit: usize) -> Result<Vec<Change>> {
        self.count();
        let rows = sqlx::query(
            "SELECT entity_type, id, revision, version, deleted, content_hash FROM entities WHERE revision > $1 ORDER BY revision LIMIT $2",
        )
        .bind(revision)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(crate::model::change_at).collect::<Result<_, _>>()?)
    }

    async fn current_revision(&self) -> Result<i64> {
        self.count();
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0)::int8 FROM entities").fetch_one(&self.pool).await?)
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
        search::search_text(self, query, limit).await
    }

    async fn refresh_search_index(&self) -> Result<u64> {
        search::refresh(self).await
    }

    fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}
