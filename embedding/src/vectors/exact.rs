//! What every scan in the process shares: the top k of the entities'
//! best chunks, and the queries' common dimension.

use super::{NearestQuery, VectorHit};

/// The best `k` hits offered, best first (ties by key).
pub(super) struct TopK {
    pub(super) k: usize,
    pub(super) hits: Vec<VectorHit>,
    /// The k-th best score at the last trim: a lower one can never enter.
    floor: Option<f32>,
}

impl TopK {
    pub(super) fn new(k: usize) -> Self {
        Self { k, hits: Vec::new(), floor: None }
    }

    /// Offers the hit `make` builds, built only when its score can still enter.
    pub(super) fn offer_if_better(&mut self, score: f32, make: impl FnOnce() -> VectorHit) {
        if self.floor.is_none_or(|floor| score >= floor) {
            self.offer(make());
        }
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
        if self.k > 0 && self.hits.len() == self.k {
            self.floor = Some(self.hits[self.k - 1].score);
        }
    }

    pub(super) fn into_sorted(mut self) -> Vec<VectorHit> {
        self.trim();
        self.hits
    }
}

/// The queries' common length (one model makes them all), if any.
pub(super) fn same_dimensions(queries: &[NearestQuery<'_>]) -> Option<usize> {
    let first = queries.first()?.vector.len();
    queries.iter().all(|q| q.vector.len() == first).then_some(first)
}
