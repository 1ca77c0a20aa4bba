//! Vectors in a SQLite table beside the entities, searched exactly in the process.

use super::snapshot::{GENERATION, SnapshotCache};
use super::{EntityVectors, NearestQuery, VectorHit, VectorIndex, encode, group_vectors, key_of, keys_json};
use entity_store::{EntityKey, StoreError};
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;

/// Vectors in the SQLite file (e.g. the entity store's).
/// The vector table on SQLite, beside the store's.
pub(crate) const MIGRATIONS: sql_migrations::Embedded =
    sql_migrations::embed!("migrations/sqlite", ["2001_vectors.sql", "2002_text_hash.sql", "2003_generation.sql"]);

/// Vectors in SQLite, beside the entities; search scans an 8-bit copy of
/// them in memory (see `snapshot.rs`).
pub struct SqliteVectors {
    pool: SqlitePool,
    snapshot: SnapshotCache,
}

impl SqliteVectors {
    /// Migrates the vector table through `pool` (the store's file) and uses it.
    pub async fn new(pool: SqlitePool) -> Result<Self, StoreError> {
        MIGRATIONS.migrator().await?.run(&pool).await?;
        Ok(Self { pool, snapshot: SnapshotCache::default() })
    }

    /// A transaction holding the write lock from its start: SQLite does not
    /// wait for the lock when a deferred transaction that has read asks to
    /// write while another process writes; it fails at once.
    async fn write_transaction(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

impl SqliteVectors {
    /// `column` (`content_hash` or `text_hash`) of each of `keys` that has
    /// vectors under `model_id` and a value there.
    pub(super) async fn stored_hashes(
        &self,
        column: &'static str,
        model_id: &str,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, String>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT DISTINCT v.entity_type, v.id, v.{column} FROM json_each(?2) AS k
             JOIN entity_vectors AS v ON v.entity_type = k.value ->> 0 AND v.id = k.value ->> 1 AND v.model_id = ?1
             WHERE v.{column} IS NOT NULL"
        ))
        .bind(model_id)
        .bind(keys_json(keys))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((key_of(r)?, r.try_get(2)?))).collect()
    }
}

#[async_trait::async_trait]
impl VectorIndex for SqliteVectors {
    async fn replace(&self, model_id: &str, entities: &[EntityVectors]) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        let keys: Vec<EntityKey> = entities.iter().map(|e| e.key.clone()).collect();
        sqlx::query(
            // Row-value IN lets SQLite look each key up in the primary key.
            "DELETE FROM entity_vectors WHERE model_id = ?1
             AND (entity_type, id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?2))",
        )
        .bind(model_id)
        .bind(keys_json(&keys))
        .execute(&mut *tx)
        .await?;
        for entity in entities {
            for chunk in &entity.chunks {
                sqlx::query(
                    "INSERT INTO entity_vectors (entity_type, id, model_id, chunk, dimensions, content_hash, span_start, span_end, vector, text_hash)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&entity.key.entity_type)
                .bind(&entity.key.id)
                .bind(model_id)
                .bind(i64::from(chunk.chunk))
                .bind(chunk.vector.len() as i64)
                .bind(&entity.content_hash)
                .bind(chunk.span.start as i64)
                .bind(chunk.span.end as i64)
                .bind(encode(&chunk.vector))
                .bind(entity.text_hash.as_deref())
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(tx.commit().await?)
    }

    async fn remove(&self, keys: &[EntityKey]) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM entity_vectors
             WHERE (entity_type, id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
        )
        .bind(keys_json(keys))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, StoreError> {
        self.stored_hashes("content_hash", model_id, keys).await
    }

    async fn text_hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, StoreError> {
        self.stored_hashes("text_hash", model_id, keys).await
    }

    async fn retag(&self, model_id: &str, current: &[(EntityKey, String)]) -> Result<(), StoreError> {
        // One UPDATE by primary key per entity, in one transaction: SQLite
        // planned the UPDATE … FROM json_each form as a scan per entity
        // (~1 ms each for 1,000 entities).
        let mut tx = self.write_transaction().await?;
        for (key, hash) in current {
            sqlx::query(
                "UPDATE entity_vectors SET content_hash = ?1 WHERE entity_type = ?2 AND id = ?3 AND model_id = ?4",
            )
            .bind(hash)
            .bind(&key.entity_type)
            .bind(&key.id)
            .bind(model_id)
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx.commit().await?)
    }

    async fn vectors(&self, model_id: &str, keys: &[EntityKey]) -> Result<Vec<EntityVectors>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.entity_type, v.id, v.content_hash, v.chunk, v.span_start, v.span_end, v.vector, v.text_hash
             FROM json_each(?2) AS k
             JOIN entity_vectors AS v ON v.entity_type = k.value ->> 0 AND v.id = k.value ->> 1 AND v.model_id = ?1
             ORDER BY k.key, v.chunk",
        )
        .bind(model_id)
        .bind(keys_json(keys))
        .fetch_all(&self.pool)
        .await?;
        group_vectors(&rows)
    }

    async fn nearest(&self, model_id: &str, query: &[f32], k: usize) -> Result<Vec<VectorHit>, StoreError> {
        let one = NearestQuery { vector: query, k, allowed: None };
        Ok(self.nearest_many(model_id, &[one]).await?.pop().unwrap_or_default())
    }

    async fn nearest_many(
        &self,
        model_id: &str,
        queries: &[NearestQuery<'_>],
    ) -> Result<Vec<Vec<VectorHit>>, StoreError> {
        let generation = sqlx::query_scalar(GENERATION).fetch_one(&self.pool);
        let rows = |dimensions: usize| {
            sqlx::query(
                "SELECT entity_type, id, chunk, span_start, span_end, vector FROM entity_vectors
                 WHERE model_id = ? AND dimensions = ? ORDER BY entity_type, id",
            )
            .bind(model_id)
            .bind(dimensions as i64)
            .fetch(&self.pool)
        };
        self.snapshot.search(model_id, queries, generation, rows).await
    }
}
