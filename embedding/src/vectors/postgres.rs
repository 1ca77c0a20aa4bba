//! Vectors in a PostgreSQL table: ranked in the database where pgvector
//! is installed, exactly in the process otherwise.

use super::snapshot::{GENERATION, SnapshotCache};
use super::{ChunkVector, EntityVectors, NearestQuery, VectorHit, VectorIndex, decode, encode, group_vectors, key_of};
use entity_store::{EntityKey, StoreError};
use sqlx::{PgPool, Row};
use std::collections::HashMap;

/// The vector table on PostgreSQL, beside the store's.
pub(crate) const MIGRATIONS: sql_migrations::Embedded =
    sql_migrations::embed!("migrations/postgres", ["2001_vectors.sql", "2002_text_hash.sql", "2003_generation.sql"]);

/// Vectors in PostgreSQL. With the pgvector extension available, vectors
/// are also stored as `vector` and the database ranks them (`<=>`), so only
/// the top hits cross the network; without it, the same exact search runs
/// here over the stored bytes.
pub struct PgVectors {
    pool: PgPool,
    pgvector: bool,
    snapshot: SnapshotCache,
}

impl PgVectors {
    /// Migrates, and turns pgvector on when the server has it.
    pub async fn new(pool: PgPool) -> Result<Self, StoreError> {
        let mut vectors = Self::exact_only(pool).await?;
        vectors.pgvector = enable_pgvector(&vectors.pool).await;
        Ok(vectors)
    }

    /// Never uses pgvector, even where it is installed.
    pub async fn exact_only(pool: PgPool) -> Result<Self, StoreError> {
        MIGRATIONS.migrator().await?.run(&pool).await?;
        Ok(Self { pool, pgvector: false, snapshot: SnapshotCache::default() })
    }

    /// Whether search runs in the database through pgvector.
    pub fn uses_pgvector(&self) -> bool {
        self.pgvector
    }
}

/// Creates the extension and the `embedding` column if the server offers
/// pgvector; any refusal (not installed, no permission) means exact search here.
pub(super) async fn enable_pgvector(pool: &PgPool) -> bool {
    let available: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')")
            .fetch_one(pool)
            .await
            .unwrap_or(false);
    if !available {
        return false;
    }
    let setup = "CREATE EXTENSION IF NOT EXISTS vector;
                 ALTER TABLE entity_vectors ADD COLUMN IF NOT EXISTS embedding vector;";
    match sqlx::raw_sql(setup).execute(pool).await {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!("pgvector is available but cannot be used, searching exactly instead: {err}");
            false
        }
    }
}

/// pgvector's text form of a vector: `[0.1,0.2]`.
pub(super) fn vector_literal(vector: &[f32]) -> String {
    let parts: Vec<String> = vector.iter().map(f32::to_string).collect();
    format!("[{}]", parts.join(","))
}

pub(super) fn key_columns(keys: &[EntityKey]) -> (Vec<&str>, Vec<&str>) {
    keys.iter().map(|k| (k.entity_type.as_str(), k.id.as_str())).unzip()
}

impl PgVectors {
    /// `column` (`content_hash` or `text_hash`) of each of `keys` that has
    /// vectors under `model_id` and a value there.
    pub(super) async fn stored_hashes(
        &self,
        column: &'static str,
        model_id: &str,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, String>, StoreError> {
        let (types, ids) = key_columns(keys);
        let rows = sqlx::query(&format!(
            "SELECT DISTINCT v.entity_type, v.id, v.{column}
             FROM UNNEST($2::text[], $3::text[]) AS k(entity_type, id)
             JOIN entity_vectors AS v ON v.entity_type = k.entity_type AND v.id = k.id AND v.model_id = $1
             WHERE v.{column} IS NOT NULL"
        ))
        .bind(model_id)
        .bind(types)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((key_of(r)?, r.try_get(2)?))).collect()
    }
}

#[async_trait::async_trait]
impl VectorIndex for PgVectors {
    async fn replace(&self, model_id: &str, entities: &[EntityVectors]) -> Result<(), StoreError> {
        let keys: Vec<EntityKey> = entities.iter().map(|e| e.key.clone()).collect();
        let (types, ids) = key_columns(&keys);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM entity_vectors AS v USING UNNEST($2::text[], $3::text[]) AS k(entity_type, id)
             WHERE v.model_id = $1 AND v.entity_type = k.entity_type AND v.id = k.id",
        )
        .bind(model_id)
        .bind(types)
        .bind(ids)
        .execute(&mut *tx)
        .await?;
        let rows: Vec<(&EntityVectors, &ChunkVector)> =
            entities.iter().flat_map(|e| e.chunks.iter().map(move |c| (e, c))).collect();
        if !rows.is_empty() {
            sqlx::query(
                "INSERT INTO entity_vectors (entity_type, id, model_id, chunk, dimensions, content_hash, span_start, span_end, vector, text_hash)
                 SELECT t, i, $1, c, d, h, s, e, v, x
                 FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::int8[], $8::int8[], $9::bytea[], $10::text[])
                      AS r(t, i, c, d, h, s, e, v, x)",
            )
            .bind(model_id)
            .bind(rows.iter().map(|(e, _)| e.key.entity_type.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(e, _)| e.key.id.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| i64::from(c.chunk)).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| c.vector.len() as i64).collect::<Vec<_>>())
            .bind(rows.iter().map(|(e, _)| e.content_hash.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| c.span.start as i64).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| c.span.end as i64).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| encode(&c.vector)).collect::<Vec<_>>())
            .bind(rows.iter().map(|(e, _)| e.text_hash.as_deref()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            if self.pgvector {
                sqlx::query(
                    "UPDATE entity_vectors AS v SET embedding = r.e::vector
                     FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::text[]) AS r(t, i, c, e)
                     WHERE v.model_id = $1 AND v.entity_type = r.t AND v.id = r.i AND v.chunk = r.c",
                )
                .bind(model_id)
                .bind(rows.iter().map(|(e, _)| e.key.entity_type.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|(e, _)| e.key.id.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|(_, c)| i64::from(c.chunk)).collect::<Vec<_>>())
                // The values the blob holds (half precision), so pgvector ranks
                // exactly what the exact scan would.
                .bind(rows.iter().map(|(_, c)| vector_literal(&decode(&encode(&c.vector)))).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(tx.commit().await?)
    }

    async fn remove(&self, keys: &[EntityKey]) -> Result<u64, StoreError> {
        let (types, ids) = key_columns(keys);
        let done = sqlx::query(
            "DELETE FROM entity_vectors AS v USING UNNEST($1::text[], $2::text[]) AS k(entity_type, id)
             WHERE v.entity_type = k.entity_type AND v.id = k.id",
        )
        .bind(types)
        .bind(ids)
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
        let keys: Vec<EntityKey> = current.iter().map(|(key, _)| key.clone()).collect();
        let (types, ids) = key_columns(&keys);
        let hashes: Vec<&str> = current.iter().map(|(_, hash)| hash.as_str()).collect();
        sqlx::query(
            "UPDATE entity_vectors AS v SET content_hash = k.hash
             FROM UNNEST($2::text[], $3::text[], $4::text[]) AS k(entity_type, id, hash)
             WHERE v.entity_type = k.entity_type AND v.id = k.id AND v.model_id = $1",
        )
        .bind(model_id)
        .bind(types)
        .bind(ids)
        .bind(hashes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn vectors(&self, model_id: &str, keys: &[EntityKey]) -> Result<Vec<EntityVectors>, StoreError> {
        let (types, ids) = key_columns(keys);
        let rows = sqlx::query(
            "SELECT v.entity_type, v.id, v.content_hash, v.chunk, v.span_start, v.span_end, v.vector, v.text_hash
             FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS k(entity_type, id, ord)
             JOIN entity_vectors AS v ON v.entity_type = k.entity_type AND v.id = k.id AND v.model_id = $1
             ORDER BY k.ord, v.chunk",
        )
        .bind(model_id)
        .bind(types)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        group_vectors(&rows)
    }

    async fn nearest(&self, model_id: &str, query: &[f32], k: usize) -> Result<Vec<VectorHit>, StoreError> {
        let one = NearestQuery { vector: query, k, allowed: None };
        if self.pgvector {
            return self.pgvector_nearest(model_id, &one).await;
        }
        Ok(self.exact_many(model_id, &[one]).await?.pop().unwrap_or_default())
    }

    async fn nearest_many(
        &self,
        model_id: &str,
        queries: &[NearestQuery<'_>],
    ) -> Result<Vec<Vec<VectorHit>>, StoreError> {
        if self.pgvector {
            // The database ranks each query, a filter's matches included; nothing to share.
            let mut results = Vec::with_capacity(queries.len());
            for query in queries {
                results.push(self.pgvector_nearest(model_id, query).await?);
            }
            return Ok(results);
        }
        self.exact_many(model_id, queries).await
    }
}

impl PgVectors {
    /// Each entity's best chunk, then the top `k`, ranked by pgvector;
    /// limited in the query to the `allowed` entities when given, so `k`
    /// stays the real bound (cosine distance is 1 - cosine).
    pub(super) async fn pgvector_nearest(
        &self,
        model_id: &str,
        query: &NearestQuery<'_>,
    ) -> Result<Vec<VectorHit>, StoreError> {
        let (types, ids): (Vec<&str>, Vec<&str>) = query
            .allowed
            .map(|allowed| allowed.iter().map(|k| (k.entity_type.as_str(), k.id.as_str())).unzip())
            .unwrap_or_default();
        let rows = sqlx::query(
            "SELECT entity_type, id, chunk, span_start, span_end, distance FROM (
                 SELECT DISTINCT ON (entity_type, id) entity_type, id, chunk, span_start, span_end,
                        embedding <=> $3::vector AS distance
                 FROM entity_vectors
                 WHERE model_id = $1 AND dimensions = $2 AND embedding IS NOT NULL
                   AND ($5 = FALSE OR (entity_type, id) IN (SELECT * FROM UNNEST($6::text[], $7::text[])))
                 ORDER BY entity_type, id, distance, chunk) AS best
             ORDER BY distance, entity_type, id LIMIT $4",
        )
        .bind(model_id)
        .bind(query.vector.len() as i64)
        .bind(vector_literal(query.vector))
        .bind(i64::try_from(query.k).unwrap_or(i64::MAX))
        .bind(query.allowed.is_some())
        .bind(types)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(VectorHit {
                    key: key_of(row)?,
                    score: (1.0 - row.try_get::<f64, _>(5)?) as f32,
                    chunk: row.try_get::<i64, _>(2)? as u32,
                    span: row.try_get::<i64, _>(3)? as usize..row.try_get::<i64, _>(4)? as usize,
                })
            })
            .collect()
    }

    /// One pass over the stored vectors for all queries.
    pub(super) async fn exact_many(
        &self,
        model_id: &str,
        queries: &[NearestQuery<'_>],
    ) -> Result<Vec<Vec<VectorHit>>, StoreError> {
        let generation = sqlx::query_scalar(GENERATION).fetch_one(&self.pool);
        let rows = |dimensions: usize| {
            sqlx::query(
                "SELECT entity_type, id, chunk, span_start, span_end, vector FROM entity_vectors
                 WHERE model_id = $1 AND dimensions = $2 ORDER BY entity_type, id",
            )
            .bind(model_id)
            .bind(dimensions as i64)
            .fetch(&self.pool)
        };
        self.snapshot.search(model_id, queries, generation, rows).await
    }
}
