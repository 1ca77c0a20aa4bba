//! Where vectors live: a table beside the entities, one implementation per
//! backend. Search is exact cosine over the model's vectors.

mod exact;
mod postgres;
mod sqlite;

#[cfg(test)]
pub(crate) use postgres::MIGRATIONS as POSTGRES_MIGRATIONS;
pub use postgres::PgVectors;
#[cfg(test)]
pub(crate) use sqlite::MIGRATIONS as SQLITE_MIGRATIONS;
pub use sqlite::SqliteVectors;

use entity_store::{EntityKey, StoreError};
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// One chunk's vector, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkVector {
    /// The chunk's position in the entity, from 0.
    pub chunk: u32,
    /// Byte range of the chunk in the entity's content.
    pub span: std::ops::Range<usize>,
    /// The vector, L2-normalised.
    pub vector: Vec<f32>,
}

/// All vectors of one entity for one model, replaced as a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityVectors {
    /// The entity.
    pub key: EntityKey,
    /// The entity's content hash when these vectors were made or last
    /// found current.
    pub content_hash: String,
    /// The hash of the text embedded ([`crate::job::text_hash`]); `None`
    /// when unknown (vectors imported from a file, or made before it was kept).
    pub text_hash: Option<String>,
    /// One vector per chunk, in order.
    pub chunks: Vec<ChunkVector>,
}

/// The best chunk of one entity for a query.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    /// The entity.
    pub key: EntityKey,
    /// Cosine similarity of the query and that chunk, in [-1, 1].
    pub score: f32,
    /// The best chunk's position, from 0.
    pub chunk: u32,
    /// Its byte range in the content.
    pub span: std::ops::Range<usize>,
}

/// Where vectors are kept and searched; errors are the store's ([`StoreError::Corrupt`] for a row that does not decode).
#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync {
    /// Replaces the vectors of each entity (for `model_id`) in one transaction.
    async fn replace(&self, model_id: &str, entities: &[EntityVectors]) -> Result<(), StoreError>;
    /// Removes every vector of these entities, all models.
    async fn remove(&self, keys: &[EntityKey]) -> Result<u64, StoreError>;
    /// The content hash each of `keys` has vectors for under `model_id`.
    async fn hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, StoreError>;
    /// The text hash each of `keys` has vectors for under `model_id`
    /// (keys whose vectors have none are absent).
    async fn text_hashes(&self, model_id: &str, keys: &[EntityKey]) -> Result<HashMap<EntityKey, String>, StoreError>;
    /// Marks the vectors of each key as current for its new content hash:
    /// the entity changed, the text it embeds did not.
    async fn retag(&self, model_id: &str, current: &[(EntityKey, String)]) -> Result<(), StoreError>;
    /// The stored vectors of `keys` under `model_id`, chunks in order
    /// (keys without vectors are absent): what an export carries.
    async fn vectors(&self, model_id: &str, keys: &[EntityKey]) -> Result<Vec<EntityVectors>, StoreError>;
    /// Top `k` entities by their best chunk's cosine with `query` (which must be L2-normalised).
    async fn nearest(&self, model_id: &str, query: &[f32], k: usize) -> Result<Vec<VectorHit>, StoreError>;
    /// [`nearest`](Self::nearest) for several queries, each limited to its
    /// `allowed` entities if given. Backends that scan override this to read
    /// the vectors once for all queries.
    async fn nearest_many(
        &self,
        model_id: &str,
        queries: &[NearestQuery<'_>],
    ) -> Result<Vec<Vec<VectorHit>>, StoreError> {
        nearest_each(self, model_id, queries).await
    }
}

/// [`VectorIndex::nearest_many`] as one [`VectorIndex::nearest`] per query.
async fn nearest_each<V: VectorIndex + ?Sized>(
    index: &V,
    model_id: &str,
    queries: &[NearestQuery<'_>],
) -> Result<Vec<Vec<VectorHit>>, StoreError> {
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
    /// Most hits returned.
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
fn group_vectors<R: Row>(rows: &[R]) -> Result<Vec<EntityVectors>, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut grouped: Vec<EntityVectors> = Vec::new();
    for row in rows {
        let key = key_of(row)?;
        let chunk = ChunkVector {
            chunk: row.try_get::<i64, _>(3)? as u32,
            span: row.try_get::<i64, _>(4)? as usize..row.try_get::<i64, _>(5)? as usize,
            vector: decode(&row.try_get::<Vec<u8>, _>(6)?),
        };
        match grouped.last_mut() {
            Some(last) if last.key == key => last.chunks.push(chunk),
            _ => grouped.push(EntityVectors {
                key,
                content_hash: row.try_get(2)?,
                text_hash: row.try_get(7)?,
                chunks: vec![chunk],
            }),
        }
    }
    Ok(grouped)
}

fn keys_json(keys: &[EntityKey]) -> String {
    serde_json::Value::Array(keys.iter().map(|k| serde_json::json!([k.entity_type, k.id])).collect()).to_string()
}

fn key_of<R: Row>(row: &R) -> Result<EntityKey, StoreError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(EntityKey::new(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?))
}
