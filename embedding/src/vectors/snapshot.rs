//! Search over an in-memory copy of one model's vectors, quantised to 8
//! bits: one byte a component (a quarter of `f32`), scanned with integer
//! dot products. The copy is loaded once and used until the vector table's
//! generation moves (a counter every write to the table bumps, in the same
//! transaction: migration 2003), so a search reads one row, not the table.
//!
//! Quantisation is symmetric per vector (the largest component maps to
//! ±127), as in Jacob et al., "Quantization and Training of Neural Networks
//! for Efficient Integer-Arithmetic-Only Inference" (CVPR 2018), without
//! the zero point: unit vectors are centred. A score is the cosine to
//! within about 1%; what that costs the ranking is measured by `cargo xtask
//! bench tools` (recall@10 against the exact scan).

use super::exact::{TopK, same_dimensions};
use super::{NearestQuery, VectorHit, decode_into};
use entity_store::{EntityKey, StoreError};
use futures::TryStreamExt;
use sqlx::Row;
use std::ops::Range;
use std::sync::Arc;

/// One model's vectors of one dimension, as of one generation of the table.
pub(super) struct Snapshot {
    generation: i64,
    model_id: String,
    dimensions: usize,
    /// Entities in table order; entity `e` owns chunks `starts[e]..starts[e + 1]`.
    keys: Vec<EntityKey>,
    starts: Vec<usize>,
    /// Per chunk: its position in the entity and its byte span.
    chunks: Vec<(u32, Range<usize>)>,
    /// `dimensions` codes per chunk.
    codes: Vec<i8>,
    /// Per chunk: the value of code 1.
    scales: Vec<f32>,
}

impl Snapshot {
    fn new(generation: i64, model_id: &str, dimensions: usize) -> Self {
        Self {
            generation,
            model_id: model_id.to_owned(),
            dimensions,
            keys: Vec::new(),
            starts: vec![0],
            chunks: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
        }
    }

    /// Adds one chunk; chunks come ordered by entity. A vector of another
    /// length (a damaged row) is left out with a warning naming it, as a
    /// search cannot score it.
    fn push(&mut self, key: (&str, &str), chunk: u32, span: Range<usize>, vector: &[f32]) {
        let (entity_type, id) = key;
        if vector.len() != self.dimensions {
            let (model_id, length, dimensions) = (&self.model_id, vector.len(), self.dimensions);
            tracing::warn!(
                entity_type,
                id,
                model_id,
                length,
                dimensions,
                "vector of the wrong length left out of search"
            );
            return;
        }
        if !self.keys.last().is_some_and(|last| last.entity_type == entity_type && last.id == id) {
            if !self.keys.is_empty() {
                self.starts.push(self.chunks.len());
            }
            self.keys.push(EntityKey::new(entity_type, id));
        }
        self.chunks.push((chunk, span));
        self.scales.push(quantise(vector, &mut self.codes));
    }

    fn finish(mut self) -> Self {
        if !self.keys.is_empty() {
            self.starts.push(self.chunks.len());
        }
        self
    }

    pub(super) fn is_current(&self, generation: i64, model_id: &str, dimensions: usize) -> bool {
        self.generation == generation && self.model_id == model_id && self.dimensions == dimensions
    }

    /// Each query's top `k` entities by their best chunk, best first (ties by key).
    pub(super) fn nearest(&self, query: &NearestQuery<'_>) -> Vec<VectorHit> {
        let mut top = TopK::new(query.k);
        if query.k == 0 || query.vector.len() != self.dimensions {
            return Vec::new();
        }
        let mut query_codes = Vec::with_capacity(self.dimensions);
        let query_scale = quantise(query.vector, &mut query_codes);
        for (entity, key) in self.keys.iter().enumerate() {
            if !query.allows(key) {
                continue;
            }
            let mut best: Option<(f32, usize)> = None;
            for chunk in self.starts[entity]..self.starts[entity + 1] {
                let codes = &self.codes[chunk * self.dimensions..(chunk + 1) * self.dimensions];
                let score = dot_i8(codes, &query_codes) as f32 * self.scales[chunk] * query_scale;
                if best.is_none_or(|(top, _)| score > top) {
                    best = Some((score, chunk));
                }
            }
            if let Some((score, chunk)) = best {
                let (position, span) = &self.chunks[chunk];
                top.offer_if_better(score, || VectorHit {
                    key: key.clone(),
                    score,
                    chunk: *position,
                    span: span.clone(),
                });
            }
        }
        top.into_sorted()
    }
}

/// Appends the 8-bit codes of `vector` to `codes`; returns the value of code 1.
fn quantise(vector: &[f32], codes: &mut Vec<i8>) -> f32 {
    let largest = vector.iter().fold(0f32, |max, v| max.max(v.abs()));
    if largest == 0.0 || !largest.is_finite() {
        codes.extend(std::iter::repeat_n(0, vector.len()));
        return 0.0;
    }
    let scale = largest / 127.0;
    codes.extend(vector.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8));
    scale
}

/// Integer dot product; written plainly so the compiler vectorises it.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
}

/// The table's generation (both backends).
pub(super) const GENERATION: &str = "SELECT generation FROM entity_vectors_generation WHERE id = 1";

/// The current snapshot of one vector table, shared by the searches of a process.
#[derive(Default)]
pub(super) struct SnapshotCache(tokio::sync::Mutex<Option<Arc<Snapshot>>>);

impl SnapshotCache {
    /// Every query's top hits from the snapshot of `generation` (the
    /// backend's [`GENERATION`]), loading it when stale from `rows`: the
    /// backend's `entity_type, id, chunk, span_start, span_end, vector` of
    /// one dimension, ordered by entity.
    pub(super) async fn search<R, S>(
        &self,
        model_id: &str,
        queries: &[NearestQuery<'_>],
        generation: impl std::future::Future<Output = Result<i64, sqlx::Error>>,
        rows: impl FnOnce(usize) -> S,
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
        let Some(dimensions) = same_dimensions(queries) else { return Ok(vec![Vec::new(); queries.len()]) };
        let generation = generation.await?;
        let snapshot = self
            .get(generation, model_id, dimensions, || async {
                let (mut snapshot, mut rows, mut vector) =
                    (Snapshot::new(generation, model_id, dimensions), rows(dimensions), Vec::new());
                while let Some(row) = rows.try_next().await? {
                    vector.clear();
                    decode_into(row.try_get::<&[u8], _>(5)?, &mut vector);
                    let key = (row.try_get::<&str, _>(0)?, row.try_get::<&str, _>(1)?);
                    let span = row.try_get::<i64, _>(3)? as usize..row.try_get::<i64, _>(4)? as usize;
                    snapshot.push(key, row.try_get::<i64, _>(2)? as u32, span, &vector);
                }
                Ok(snapshot.finish())
            })
            .await?;
        Ok(nearest_all(&snapshot, queries).await)
    }

    /// The snapshot for `generation`, loaded by `load` when the one held is
    /// older or of another model (searches that arrive meanwhile wait for
    /// that one load).
    pub(super) async fn get<F, Fut>(
        &self,
        generation: i64,
        model_id: &str,
        dimensions: usize,
        load: F,
    ) -> Result<Arc<Snapshot>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Snapshot, StoreError>>,
    {
        let mut held = self.0.lock().await;
        if let Some(snapshot) = held.as_ref().filter(|s| s.is_current(generation, model_id, dimensions)) {
            return Ok(snapshot.clone());
        }
        // The old copy goes first, so two never sit in memory at once.
        *held = None;
        let snapshot = Arc::new(load().await?);
        *held = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// Every query against `snapshot`, as many at once as there are cores (a
/// scan is CPU work: one thread made a batch of queries wait on each other),
/// yielding between rounds: a scan takes milliseconds, and a batch of many
/// must not hold a runtime thread throughout.
async fn nearest_all(snapshot: &Snapshot, queries: &[NearestQuery<'_>]) -> Vec<Vec<VectorHit>> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut results = Vec::with_capacity(queries.len());
    for round in queries.chunks(cores) {
        let Some((first, others)) = round.split_first() else { continue };
        std::thread::scope(|scope| {
            let others: Vec<_> = others.iter().map(|query| scope.spawn(|| snapshot.nearest(query))).collect();
            results.push(snapshot.nearest(first));
            for other in others {
                results.push(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
        });
        tokio::task::yield_now().await;
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_a_unit_vectors_dot_products_within_a_percent() {
        // (a, b): unit vectors of several shapes, from spread to one-hot.
        let spread: Vec<f32> = (0..384).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let peaked: Vec<f32> = (0..384).map(|i| if i == 7 { 10.0 } else { (i % 5) as f32 * 0.01 }).collect();
        let negative: Vec<f32> = spread.iter().map(|v| -v * 0.5 + 0.1).collect();
        let unit = |v: &[f32]| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / norm).collect::<Vec<f32>>()
        };
        let vectors = [unit(&spread), unit(&peaked), unit(&negative)];
        for a in &vectors {
            for b in &vectors {
                let exact: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let (mut ca, mut cb) = (Vec::new(), Vec::new());
                let (sa, sb) = (quantise(a, &mut ca), quantise(b, &mut cb));
                let approx = dot_i8(&ca, &cb) as f32 * sa * sb;
                assert!((approx - exact).abs() <= 0.01, "exact {exact}, from codes {approx}");
            }
        }
    }

    #[test]
    fn a_zero_or_broken_vector_scores_zero_instead_of_nan() {
        for vector in [vec![0.0f32; 8], vec![f32::NAN; 8], vec![f32::INFINITY; 8]] {
            let mut codes = Vec::new();
            let scale = quantise(&vector, &mut codes);
            assert_eq!((scale, codes), (0.0, vec![0i8; 8]), "{vector:?}");
        }
    }
}
