//! Where vectors live: a table beside the entities, one implementation per
//! backend. Search is exact cosine over the model's vectors.

mod exact;
mod postgres;
mod snapshot;
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
    /// The vector, L2-normalised. Stored in half precision (IEEE 754 binary16,
    /// 2 bytes a component): read back, each component has a relative error
    /// of at most 2^-11.
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

/// The last byte of a stored vector in the compact form: IEEE 754 half
/// precision (binary16), 2 bytes a component, little-endian. The tag makes
/// the length odd, so a vector stored before as 4-byte `f32`s (always a
/// multiple of 4 bytes) still reads as what it is.
const HALF_TAG: u8 = 0x01;

/// A vector as stored: half precision, half the bytes of `f32`. Components
/// of L2-normalised vectors lie in [-1, 1], where binary16 keeps a relative
/// error under 2^-11, so a cosine moves by about 10^-3 at most and rankings
/// only between near ties (measured in the note of issue 23).
pub(crate) fn encode(vector: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(vector.len() * 2 + 1);
    for &value in vector {
        bytes.extend_from_slice(&half::f16::from_f32(value).to_le_bytes());
    }
    bytes.push(HALF_TAG);
    bytes
}

/// Appends the components of a stored vector (either form) to `out`.
pub(crate) fn decode_into(bytes: &[u8], out: &mut Vec<f32>) {
    if bytes.len() % 2 == 1 && bytes.last() == Some(&HALF_TAG) {
        out.extend(bytes[..bytes.len() - 1].chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()));
    } else {
        out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    }
}

fn decode(bytes: &[u8]) -> Vec<f32> {
    let mut vector = Vec::with_capacity(bytes.len() / 2);
    decode_into(bytes, &mut vector);
    vector
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

#[cfg(test)]
mod encoding_tests {
    use super::{decode, encode};

    /// Deterministic unit vectors (a 64-bit LCG: no randomness in tests).
    fn unit_vectors(count: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        (0..count)
            .map(|_| {
                let v: Vec<f32> = (0..dims).map(|_| next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn the_compact_form_is_half_the_bytes_and_close_to_the_original() {
        for dims in [1, 3, 64, 384, 1536] {
            for v in unit_vectors(20, dims, dims as u64) {
                let stored = encode(&v);
                assert_eq!(stored.len(), dims * 2 + 1, "{dims} dims");
                let back = decode(&stored);
                assert_eq!(back.len(), dims);
                for (a, b) in v.iter().zip(&back) {
                    // binary16: 11 significant bits; below 2^-14 the spacing is 2^-24.
                    assert!((a - b).abs() <= a.abs() * 2f32.powi(-11) + 2f32.powi(-24), "{a} stored as {b}");
                }
                assert!((dot(&v, &back) - 1.0).abs() < 1e-3, "cosine with itself {}", dot(&v, &back));
                assert_eq!(encode(&back), stored, "storing a vector read back changes nothing");
            }
        }
    }

    #[test]
    fn vectors_stored_as_f32_before_still_read() {
        for v in [vec![0.5_f32, -0.25, 0.125], vec![1.0], unit_vectors(1, 384, 7).remove(0), Vec::new()] {
            let old: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(decode(&old), v, "an f32 blob is read exactly");
        }
    }

    /// What half precision costs search: the top 10 of 50 queries over
    /// 2,000 vectors of 384 dimensions, stored compactly, against exact f32.
    #[test]
    fn half_precision_keeps_the_top_ten() {
        let stored = unit_vectors(2_000, 384, 1);
        let compact: Vec<Vec<f32>> = stored.iter().map(|v| decode(&encode(v))).collect();
        let queries = unit_vectors(50, 384, 2);
        let top = |vectors: &[Vec<f32>], q: &[f32]| {
            let mut scored: Vec<(f32, usize)> = vectors.iter().enumerate().map(|(i, v)| (dot(v, q), i)).collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.into_iter().take(10).map(|(_, i)| i).collect::<Vec<_>>()
        };
        let (mut kept, mut total) = (0, 0);
        for q in &queries {
            let exact = top(&stored, q);
            let half = top(&compact, q);
            kept += exact.iter().filter(|i| half.contains(i)).count();
            total += exact.len();
        }
        let recall = kept as f64 / total as f64;
        println!("recall@10 of half precision against f32: {recall:.4}");
        assert!(recall >= 0.99, "recall@10 {recall:.4}");
    }
}
