//! Exact nearest-neighbour scoring in the process: every stored chunk
//! scored against every query (dot product of unit vectors = cosine), the
//! best chunk per entity kept, the top k entities per query.

use super::{NearestQuery, VectorHit, key_of};
use entity_store::{EntityKey, StoreError};
use futures::TryStreamExt;
use sqlx::Row;

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The best `k` hits offered, best first (ties by key).
pub(super) struct TopK {
    pub(super) k: usize,
    pub(super) hits: Vec<VectorHit>,
}

impl TopK {
    pub(super) fn new(k: usize) -> Self {
        Self { k, hits: Vec::new() }
    }

    pub(super) fn offer(&mut self, hit: VectorHit) {
        self.hits.push(hit);
        // Trim now and then, not per offer: amortised O(log k) per hit.
        if self.hits.len() >= self.k.saturating_mul(2).max(64) {
            self.trim();
        }
    }

    pub(super) fn trim(&mut self) {
        self.hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
        self.hits.truncate(self.k);
    }

    pub(super) fn into_sorted(mut self) -> Vec<VectorHit> {
        self.trim();
        self.hits
    }
}

/// The chunk of the current entity scoring best so far, per query.
pub(super) type EntityBest = Vec<Option<(f32, u32, std::ops::Range<usize>)>>;

/// Scores rows of `entity_type, id, chunk, span_start, span_end, vector`,
/// ordered by entity, against every query as they stream in: each vector
/// is decoded once, each entity's best chunk per query is kept, then each
/// query's top `k`.
pub(super) async fn best_chunks<R, S>(
    rows: &mut S,
    queries: &[NearestQuery<'_>],
) -> Result<Vec<Vec<VectorHit>>, StoreError>
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
        let (entity_type, id) = (row.try_get::<&str, _>(0)?, row.try_get::<&str, _>(1)?);
        let same_entity = current.as_ref().is_some_and(|(key, _, _)| key.entity_type == entity_type && key.id == id);
        if !same_entity {
            flush(current.take(), &mut tops);
            let key = key_of(&row)?;
            let wanted = queries.iter().map(|q| q.allows(&key)).collect();
            current = Some((key, wanted, vec![None; queries.len()]));
        }
        let Some((_, wanted, best)) = current.as_mut() else { continue };
        vector.clear();
        super::decode_into(row.try_get::<&[u8], _>(5)?, &mut vector);
        let chunk = row.try_get::<i64, _>(2)? as u32;
        let span = row.try_get::<i64, _>(3)? as usize..row.try_get::<i64, _>(4)? as usize;
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
pub(super) fn flush(entity: Option<(EntityKey, Vec<bool>, EntityBest)>, tops: &mut [TopK]) {
    let Some((key, _, best)) = entity else { return };
    for (top, best) in tops.iter_mut().zip(best) {
        if let Some((score, chunk, span)) = best {
            top.offer(VectorHit { key: key.clone(), score, chunk, span });
        }
    }
}

/// The queries' common length (one model makes them all), if any.
pub(super) fn same_dimensions(queries: &[NearestQuery<'_>]) -> Option<usize> {
    let first = queries.first()?.vector.len();
    queries.iter().all(|q| q.vector.len() == first).then_some(first)
}
