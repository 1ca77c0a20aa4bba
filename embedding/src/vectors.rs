//! Where vectors live: a table beside the entities, one implementation per
//! backend. Search is exact cosine over the model's vectors.

use std::collections::{HashMap, HashSet};

use entity_store::EntityKey;
use futures::TryStreamExt;
use sqlx::{PgPool, Row, SqlitePool};

/// One chunk's vector, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkVector {
    pub chunk: u32,
    pub span: std::ops::Range<usize>,
    pub vector: Vec<f32>,
}

/// All vectors of one entity for one model, replaced as a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityVectors {
    pub key: EntityKey,
    /// The entity's content hash when these vectors were made or last
    /// found current.
    pub content_hash: String,
    /// The hash of the text embedded ([`crate::job::text_hash`]); `None`
    /// when unknown (vectors imported from a file, or made before it was kept).
    pub text_hash: Option<String>,
    pub chunks: Vec<ChunkVector>,
}

/// The best chunk of one entity for a query.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub key: EntityKey,
    pub score: f32,
    pub chunk: u32,
    pub span: std::ops::Range<usize>,
}

#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync {
    /// Replaces the vectors of each entity (for `model_id`) in one transaction.
    async fn replace(&self, model_id: &str, entities: &[EntityVectors]) -> Result<(), sqlx::Error>;
    /// Removes every vector of these entities, all models.
    async fn remove(&self, keys: &[EntityKey]) -> Result<u64, sqlx::Error>;
    /// The content hash each of `keys` has vectors for under `model_id`.
    async fn hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, sqlx::Error>;
    /// The text hash each of `keys` has vectors for under `model_id`
    /// (keys whose vectors have none are absent).
    async fn text_hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, sqlx::Error>;
    /// Marks the vectors of each key as current for its new content hash:
    /// the entity changed, the text it embeds did not.
    async fn retag(&self, model_id: &str, current: &[(EntityKey, String)]) -> Result<(), sqlx::Error>;
    /// The stored vectors of `keys` under `model_id`, chunks in order
    /// (keys without vectors are absent): what an export carries.
    async fn vectors(&self, model_id: &str, keys: &[EntityKey]) -> Result<Vec<EntityVectors>, sqlx::Error>;
    /// Top `k` entities by their best chunk's cosine with `query` (which must be L2-normalised).
    async fn nearest(&self, model_id: &str, query: &[f32], k: usize) -> Result<Vec<VectorHit>, sqlx::Error>;
    /// [`nearest`](Self::nearest) for several queries, each limited to its
    /// `allowed` entities if given. Backends that scan override this to read
    /// the vectors once for all queries.
    async fn nearest_many(
        &self,
        model_id: &str,
        queries: &[NearestQuery<'_>],
    ) -> Result<Vec<Vec<VectorHit>>, sqlx::Error> {
        nearest_each(self, model_id, queries).await
    }
}

/// [`VectorIndex::nearest_many`] as one [`VectorIndex::nearest`] per query.
async fn nearest_each<V: VectorIndex + ?Sized>(
    index: &V,
    model_id: &str,
    queries: &[NearestQuery<'_>],
) -> Result<Vec<Vec<VectorHit>>, sqlx::Error> {
    let mut results = Vec::with_capacity(queries.len());
    for query in queries {
        // Without a way to filter in the index, the whole ranking (bounded: no sentinel that overflows a LIMIT).
        let wanted = if query.allowed.is_some() { i64::MAX as usize } else { query.k };
        let hits = index.nearest(model_id, query.vector, wanted).await?;
        results.push(hits.into_iter().filter(|hit| query.allows(&hit.key)).take(query.k).collect());
    }
    Ok(results)
}

/// One query of [`VectorIndex::nearest_many`].
#[derive(Debug, Clone, Copy)]
pub struct NearestQuery<'a> {
    /// L2-normalised.
    pub vector: &'a [f32],
    pub k: usize,
    /// Only these entities, when given (a filter's matches).
    pub allowed: Option<&'a HashSet<EntityKey>>,
}

impl NearestQuery<'_> {
    fn allows(&self, key: &EntityKey) -> bool {
        self.allowed.is_none_or(|allowed| allowed.contains(key))
    }
}

fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Rows of (entity_type, id, content_hash, chunk, span_start, span_end,
/// vector, text_hash), ordered by key and chunk, grouped per entity.
fn group_vectors<R: Row>(rows: &[R]) -> Vec<EntityVectors>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut grouped: Vec<EntityVectors> = Vec::new();
    for row in rows {
        let key = key_of(row);
        let chunk = ChunkVector {
            chunk: row.get::<i64, _>(3) as u32,
            span: row.get::<i64, _>(4) as usize..row.get::<i64, _>(5) as usize,
            vector: decode(&row.get::<Vec<u8>, _>(6)),
        };
        match grouped.last_mut() {
            Some(last) if last.key == key => last.chunks.push(chunk),
            _ => grouped.push(EntityVectors {
                key,
                content_hash: row.get(2),
                text_hash: row.get(7),
                chunks: vec![chunk],
            }),
        }
    }
    grouped
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The best `k` hits offered, best first (ties by key).
struct TopK {
    k: usize,
    hits: Vec<VectorHit>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self { k, hits: Vec::new() }
    }

    fn offer(&mut self, hit: VectorHit) {
        self.hits.push(hit);
        // Trim now and then, not per offer: amortised O(log k) per hit.
        if self.hits.len() >= self.k.saturating_mul(2).max(64) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        self.hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
        self.hits.truncate(self.k);
    }

    fn into_sorted(mut self) -> Vec<VectorHit> {
        self.trim();
        self.hits
    }
}

/// The chunk of the current entity scoring best so far, per query.
type EntityBest = Vec<Option<(f32, u32, std::ops::Range<usize>)>>;

/// Scores rows of `entity_type, id, chunk, span_start, span_end, vector`,
/// ordered by entity, against every query as they stream in: each vector
/// is decoded once, each entity's best chunk per query is kept, then each
/// query's top `k`.
async fn best_chunks<R, S>(rows: &mut S, queries: &[NearestQuery<'_>]) -> Result<Vec<Vec<VectorHit>>, sqlx::Error>
where
    R: Row,
    S: futures::Stream<Item = Result<R, sqlx::Error>> + Unpin,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let mut tops: Vec<TopK> = queries.iter().map(|q| TopK::new(q.k)).collect();
    let mut current: Option<(EntityKey, Vec<bool>, EntityBest)> = None;
    let mut vector = Vec::new();
    while let Some(row) = rows.try_next().await? {
        let same_entity = current
            .as_ref()
            .is_some_and(|(key, _, _)| key.entity_type == row.get::<&str, _>(0) && key.id == row.get::<&str, _>(1));
        if !same_entity {
            flush(current.take(), &mut tops);
            let key = key_of(&row);
            let wanted = queries.iter().map(|q| q.allows(&key)).collect();
            current = Some((key, wanted, vec![None; queries.len()]));
        }
        let Some((_, wanted, best)) = current.as_mut() else { continue };
        vector.clear();
        vector.extend(row.get::<&[u8], _>(5).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        let (chunk, span) = (row.get::<i64, _>(2) as u32, row.get::<i64, _>(3) as usize..row.get::<i64, _>(4) as usize);
        for ((query, wanted), best) in queries.iter().zip(wanted.iter()).zip(best.iter_mut()) {
            if !wanted {
                continue;
            }
            let score = dot(&vector, query.vector);
            if best.as_ref().is_none_or(|(top, _, _)| score > *top) {
                *best = Some((score, chunk, span.clone()));
            }
        }
    }
    flush(current, &mut tops);
    Ok(tops.into_iter().map(TopK::into_sorted).collect())
}

/// Offers an entity's best chunk to each query's top k.
fn flush(entity: Option<(EntityKey, Vec<bool>, EntityBest)>, tops: &mut [TopK]) {
    let Some((key, _, best)) = entity else { return };
    for (top, best) in tops.iter_mut().zip(best) {
        if let Some((score, chunk, span)) = best {
            top.offer(VectorHit { key: key.clone(), score, chunk, span });
        }
    }
}

fn keys_json(keys: &[EntityKey]) -> String {
    serde_json::Value::Array(keys.iter().map(|k| serde_json::json!([k.entity_type, k.id])).collect()).to_string()
}

fn key_of<R: Row>(row: &R) -> EntityKey
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    EntityKey::new(row.get::<String, _>(0), row.get::<String, _>(1))
}

/// Vectors in the SQLite file (e.g. the entity store's).
pub struct SqliteVectors {
    pool: SqlitePool,
}

impl SqliteVectors {
    pub async fn new(pool: SqlitePool) -> Result<Self, sqlx::migrate::MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        Ok(Self { pool })
    }
}

impl SqliteVectors {
    /// `column` (`content_hash` or `text_hash`) of each of `keys` that has
    /// vectors under `model_id` and a value there.
    async fn stored_hashes(
        &self,
        column: &'static str,
        model_id: &str,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, String>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT DISTINCT v.entity_type, v.id, v.{column} FROM json_each(?2) AS k
             JOIN entity_vectors AS v ON v.entity_type = k.value ->> 0 AND v.id = k.value ->> 1 AND v.model_id = ?1
             WHERE v.{column} IS NOT NULL"
        ))
        .bind(model_id)
        .bind(keys_json(keys))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (key_of(r), r.get(2))).collect())
    }
}

#[async_trait::async_trait]
impl VectorIndex for SqliteVectors {
    async fn replace(&self, model_id: &str, entities: &[EntityVectors]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
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
        tx.commit().await
    }

    async fn remove(&self, keys: &[EntityKey]) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM entity_vectors
             WHERE (entity_type, id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
        )
        .bind(keys_json(keys))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, sqlx::Error> {
        self.stored_hashes("content_hash", model_id, keys).await
    }

    async fn text_hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, sqlx::Error> {
        self.stored_hashes("text_hash", model_id, keys).await
    }

    async fn retag(&self, model_id: &str, current: &[(EntityKey, String)]) -> Result<(), sqlx::Error> {
        // One UPDATE by primary key per entity, in one transaction: SQLite
        // planned the UPDATE … FROM json_each form as a scan per entity
        // (~1 ms each for 1,000 entities).
        let mut tx = self.pool.begin().await?;
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
        tx.commit().await
    }

    async fn vectors(&self, model_id: &str, keys: &[EntityKey]) -> Result<Vec<EntityVectors>, sqlx::Error> {
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
        Ok(group_vectors(&rows))
    }

    async fn nearest(&self, model_id: &str, query: &[f32], k: usize) -> Result<Vec<VectorHit>, sqlx::Error> {
        let one = NearestQuery { vector: query, k, allowed: None };
        Ok(self.nearest_many(model_id, &[one]).await?.pop().unwrap_or_default())
    }

    async fn nearest_many(
        &self,
        model_id: &str,
        queries: &[NearestQuery<'_>],
    ) -> Result<Vec<Vec<VectorHit>>, sqlx::Error> {
        let Some(dimensions) = same_dimensions(queries) else { return Ok(vec![Vec::new(); queries.len()]) };
        let mut rows = sqlx::query(
            "SELECT entity_type, id, chunk, span_start, span_end, vector FROM entity_vectors
             WHERE model_id = ? AND dimensions = ? ORDER BY entity_type, id",
        )
        .bind(model_id)
        .bind(dimensions as i64)
        .fetch(&self.pool);
        best_chunks(&mut rows, queries).await
    }
}

/// Vectors in PostgreSQL. With the pgvector extension available, vectors
/// are also stored as `vector` and the database ranks them (`<=>`), so only
/// the top hits cross the network; without it, the same exact search runs
/// here over the stored bytes.
pub struct PgVectors {
    pool: PgPool,
    pgvector: bool,
}

impl PgVectors {
    /// Migrates, and turns pgvector on when the server has it.
    pub async fn new(pool: PgPool) -> Result<Self, sqlx::migrate::MigrateError> {
        let mut vectors = Self::exact_only(pool).await?;
        vectors.pgvector = enable_pgvector(&vectors.pool).await;
        Ok(vectors)
    }

    /// Never uses pgvector, even where it is installed.
    pub async fn exact_only(pool: PgPool) -> Result<Self, sqlx::migrate::MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        Ok(Self { pool, pgvector: false })
    }

    /// Whether search runs in the database through pgvector.
    pub fn uses_pgvector(&self) -> bool {
        self.pgvector
    }
}

/// Creates the extension and the `embedding` column if the server offers
/// pgvector; any refusal (not installed, no permission) means exact search here.
async fn enable_pgvector(pool: &PgPool) -> bool {
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
fn vector_literal(vector: &[f32]) -> String {
    let parts: Vec<String> = vector.iter().map(f32::to_string).collect();
    format!("[{}]", parts.join(","))
}

fn key_columns(keys: &[EntityKey]) -> (Vec<&str>, Vec<&str>) {
    keys.iter().map(|k| (k.entity_type.as_str(), k.id.as_str())).unzip()
}

impl PgVectors {
    /// `column` (`content_hash` or `text_hash`) of each of `keys` that has
    /// vectors under `model_id` and a value there.
    async fn stored_hashes(
        &self,
        column: &'static str,
        model_id: &str,
        keys: &[EntityKey],
    ) -> Result<HashMap<EntityKey, String>, sqlx::Error> {
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
        Ok(rows.iter().map(|r| (key_of(r), r.get(2))).collect())
    }
}

#[async_trait::async_trait]
impl VectorIndex for PgVectors {
    async fn replace(&self, model_id: &str, entities: &[EntityVectors]) -> Result<(), sqlx::Error> {
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
                .bind(rows.iter().map(|(_, c)| vector_literal(&c.vector)).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await
    }

    async fn remove(&self, keys: &[EntityKey]) -> Result<u64, sqlx::Error> {
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

    async fn hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, sqlx::Error> {
        self.stored_hashes("content_hash", model_id, keys).await
    }

    async fn text_hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, sqlx::Error> {
        self.stored_hashes("text_hash", model_id, keys).await
    }

    async fn retag(&self, model_id: &str, current: &[(EntityKey, String)]) -> Result<(), sqlx::Error> {
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

    async fn vectors(&self, model_id: &str, keys: &[EntityKey]) -> Result<Vec<EntityVectors>, sqlx::Error> {
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
        Ok(group_vectors(&rows))
    }

    async fn nearest(&self, model_id: &str, query: &[f32], k: usize) -> Result<Vec<VectorHit>, sqlx::Error> {
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
    ) -> Result<Vec<Vec<VectorHit>>, sqlx::Error> {
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
    async fn pgvector_nearest(&self, model_id: &str, query: &NearestQuery<'_>) -> Result<Vec<VectorHit>, sqlx::Error> {
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
        Ok(rows
            .iter()
            .map(|row| VectorHit {
                key: key_of(row),
                score: (1.0 - row.get::<f64, _>(5)) as f32,
                chunk: row.get::<i64, _>(2) as u32,
                span: row.get::<i64, _>(3) as usize..row.get::<i64, _>(4) as usize,
            })
            .collect())
    }

    /// One pass over the stored vectors for all queries.
    async fn exact_many(
        &self,
        model_id: &str,
        queries: &[NearestQuery<'_>],
    ) -> Result<Vec<Vec<VectorHit>>, sqlx::Error> {
        let Some(dimensions) = same_dimensions(queries) else { return Ok(vec![Vec::new(); queries.len()]) };
        let mut rows = sqlx::query(
            "SELECT entity_type, id, chunk, span_start, span_end, vector FROM entity_vectors
             WHERE model_id = $1 AND dimensions = $2 ORDER BY entity_type, id",
        )
        .bind(model_id)
        .bind(dimensions as i64)
        .fetch(&self.pool);
        best_chunks(&mut rows, queries).await
    }
}

/// The queries' common length (one model makes them all), if any.
fn same_dimensions(queries: &[NearestQuery<'_>]) -> Option<usize> {
    let first = queries.first()?.vector.len();
    queries.iter().all(|q| q.vector.len() == first).then_some(first)
}
