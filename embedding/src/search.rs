//! Vector, text and hybrid (reciprocal rank fusion) search, one hit per entity.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use entity_store::{EntityKey, EntityStore, Filter};

use crate::provider::Embedder;
use crate::vectors::{NearestQuery, VectorHit, VectorIndex};

/// The reciprocal-rank-fusion constant k of Cormack, Clarke and Büttcher,
/// "Reciprocal Rank Fusion outperforms Condorcet and individual Rank
/// Learning Methods" (SIGIR 2009): a hit at rank r (from 1) of a ranking
/// adds 1 / (k + r) to its score.
pub const RRF_K: f64 = 60.0;
const SNIPPET_CHARS: usize = 200;
/// Rounds of removing deleted entities' vectors before a ranking is returned.
const MAX_STALE_ROUNDS: usize = 3;

/// One entity found by a search, best first in a result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The entity found.
    pub key: EntityKey,
    /// Higher is better; the scale depends on the mode:
    /// - vector: cosine similarity of the query and the entity's best
    ///   chunk, in [-1, 1], never under the model's
    ///   [`min_similarity`](crate::Embedder::min_similarity);
    /// - text: the backend's relevance divided by the best hit's, in
    ///   [0, 1], 1.0 for the best ([`entity_store::TextHit`]);
    /// - hybrid: reciprocal-rank fusion of both rankings, the sum over the
    ///   rankings that found the entity of 1 / ([`RRF_K`] + rank), rank from
    ///   1: at most 2 / 61 ≈ 0.0328, and an entity neither side found is
    ///   not a hit.
    pub score: f64,
    /// The start of the best-matching chunk (about 200 characters).
    pub snippet: String,
}

/// A query of [`Search::nearest_many`].
#[derive(Debug, Clone, Copy)]
pub struct VectorQuery<'a> {
    /// The query, embedded by the search's embedder.
    pub text: &'a str,
    /// Most hits returned.
    pub k: usize,
    /// Only entities that match this filter, when given.
    pub filter: Option<&'a Filter>,
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The entity store failed.
    #[error(transparent)]
    Store(#[from] entity_store::StoreError),
    /// The vector table failed (its database, or a row that does not decode).
    #[error("vector index: {0}")]
    Vectors(#[source] entity_store::StoreError),
    /// The query could not be embedded.
    #[error(transparent)]
    Embed(#[from] crate::provider::EmbedError),
    /// Queueing embedding jobs failed.
    #[error(transparent)]
    Queue(#[from] job_queue::QueueError),
    /// Vector search was asked for where no embedding model is configured.
    #[error(
        "vector search needs an embedding model, and none is configured here (text and hybrid search work without one)"
    )]
    NoEmbedder,
}

/// Vector, full-text and hybrid search over one store.
pub struct Search {
    /// The entities searched.
    pub store: Arc<dyn EntityStore>,
    /// Their vectors.
    pub vectors: Arc<dyn VectorIndex>,
    /// Embeds queries; must be the model the vectors were made with.
    /// `None`: no vectors are kept, vector search fails with
    /// [`SearchError::NoEmbedder`] and hybrid search is text search alone.
    pub embedder: Option<Arc<dyn Embedder>>,
}

impl Search {
    /// The embedding model, or [`SearchError::NoEmbedder`].
    pub fn embedder(&self) -> Result<&Arc<dyn Embedder>, SearchError> {
        self.embedder.as_ref().ok_or(SearchError::NoEmbedder)
    }

    /// Entities whose best chunk is nearest to `query` by cosine.
    pub async fn vector(&self, query: &str, k: usize, filter: Option<&Filter>) -> Result<Vec<SearchHit>, SearchError> {
        let hits = self.nearest_many(&[VectorQuery { text: query, k, filter }]).await?.pop().unwrap_or_default();
        self.vector_hits(hits).await
    }

    /// The nearest entities of several queries, with one embedding call
    /// and (where the index scans) one pass over the stored vectors.
    pub async fn nearest_many(&self, queries: &[VectorQuery<'_>]) -> Result<Vec<Vec<VectorHit>>, SearchError> {
        let texts: Vec<String> = queries.iter().map(|q| q.text.to_owned()).collect();
        let embedder = self.embedder()?;
        let vectors = embedder.embed_batch(&texts).await?;
        // Each distinct filter is read once, however many queries share it.
        let mut filters: Vec<Option<&Filter>> = Vec::new();
        let mut allowed = Vec::new();
        let mut allowed_of = Vec::with_capacity(queries.len());
        for query in queries {
            let index = if let Some(index) = filters.iter().position(|seen| *seen == query.filter) {
                index
            } else {
                allowed.push(self.allowed(query.filter).await?);
                filters.push(query.filter);
                filters.len() - 1
            };
            allowed_of.push(index);
        }
        let nearest: Vec<NearestQuery<'_>> = queries
            .iter()
            .zip(&vectors)
            .zip(&allowed_of)
            .map(|((query, vector), &index)| NearestQuery { vector, k: query.k, allowed: allowed[index].as_ref() })
            .collect();
        // Vectors of entities deleted since they were embedded would take
        // places in the top k: they are removed when found, and the
        // ranking read again (a few rounds at most: each removes them all).
        let model = embedder.model_id();
        for _ in 0..MAX_STALE_ROUNDS {
            let results = self.vectors.nearest_many(model, &nearest).await.map_err(SearchError::Vectors)?;
            let found: Vec<EntityKey> = results.iter().flatten().map(|hit| hit.key.clone()).collect();
            let alive = self.store.exists(&found).await?;
            let dead: Vec<EntityKey> = found.into_iter().filter(|key| !alive.contains(key)).collect();
            if dead.is_empty() {
                return Ok(results);
            }
            self.vectors.remove(&dead).await.map_err(SearchError::Vectors)?;
        }
        let results = self.vectors.nearest_many(model, &nearest).await.map_err(SearchError::Vectors)?;
        let found: Vec<EntityKey> = results.iter().flatten().map(|hit| hit.key.clone()).collect();
        let alive = self.store.exists(&found).await?;
        Ok(results.into_iter().map(|hits| hits.into_iter().filter(|hit| alive.contains(&hit.key)).collect()).collect())
    }

    /// Vector hits as search hits, each with the snippet of its best chunk.
    /// Hits under the model's similarity floor are dropped.
    pub async fn vector_hits(&self, hits: Vec<VectorHit>) -> Result<Vec<SearchHit>, SearchError> {
        let floor = self.embedder()?.min_similarity();
        let hits: Vec<VectorHit> = hits.into_iter().filter(|hit| hit.score >= floor).collect();
        let spans: HashMap<EntityKey, std::ops::Range<usize>> =
            hits.iter().map(|h| (h.key.clone(), h.span.clone())).collect();
        let scored = hits.into_iter().map(|h| (h.key, f64::from(h.score))).collect();
        self.with_snippets(scored, &spans).await
    }

    /// Entities ranked by the store's full-text index.
    pub async fn text(&self, query: &str, k: usize, filter: Option<&Filter>) -> Result<Vec<SearchHit>, SearchError> {
        let allowed = self.allowed(filter).await?;
        let wanted = if allowed.is_some() { 10_000 } else { k };
        let hits = self.store.search_text(query, wanted).await?;
        let scored = hits
            .into_iter()
            .filter(|h| allowed.as_ref().is_none_or(|a| a.contains(&h.key)))
            .take(k)
            .map(|h| (h.key, h.score))
            .collect();
        self.with_snippets(scored, &HashMap::new()).await
    }

    /// How many vector hits [`hybrid`](Self::hybrid) fuses for `k` results.
    pub fn hybrid_depth(k: usize) -> usize {
        (k * 4).max(20)
    }

    /// Vector and text rankings fused by reciprocal rank; without an
    /// embedding model, the text ranking alone (its scores are then
    /// [`text`](Self::text)'s).
    pub async fn hybrid(&self, query: &str, k: usize, filter: Option<&Filter>) -> Result<Vec<SearchHit>, SearchError> {
        if self.embedder.is_none() {
            return self.text(query, k, filter).await;
        }
        let depth = Self::hybrid_depth(k);
        let nearest = self.nearest_many(&[VectorQuery { text: query, k: depth, filter }]).await?;
        self.hybrid_with(query, k, filter, nearest.into_iter().next().unwrap_or_default()).await
    }

    /// [`hybrid`](Self::hybrid) with the vector side already found (by
    /// [`nearest_many`](Self::nearest_many), [`hybrid_depth`](Self::hybrid_depth) deep).
    pub async fn hybrid_with(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
        nearest: Vec<VectorHit>,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let depth = Self::hybrid_depth(k);
        let (vector, text) = tokio::try_join!(self.vector_hits(nearest), self.text(query, depth, filter))?;
        let mut fused: HashMap<EntityKey, (f64, String)> = HashMap::new();
        for list in [vector, text] {
            for (rank, hit) in list.into_iter().enumerate() {
                let entry = fused.entry(hit.key).or_insert((0.0, hit.snippet));
                entry.0 += 1.0 / (RRF_K + rank as f64 + 1.0);
            }
        }
        let mut hits: Vec<SearchHit> =
            fused.into_iter().map(|(key, (score, snippet))| SearchHit { key, score, snippet }).collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
        hits.truncate(k);
        Ok(hits)
    }

    async fn allowed(&self, filter: Option<&Filter>) -> Result<Option<HashSet<EntityKey>>, SearchError> {
        let Some(filter) = filter else { return Ok(None) };
        let matches = self.store.find_keys(filter, 1_000_000).await?;
        Ok(Some(matches.into_iter().collect()))
    }

    async fn with_snippets(
        &self,
        scored: Vec<(EntityKey, f64)>,
        spans: &HashMap<EntityKey, std::ops::Range<usize>>,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let keys: Vec<EntityKey> = scored.iter().map(|(k, _)| k.clone()).collect();
        let entities = self.store.batch_get(&keys).await?;
        Ok(scored
            .into_iter()
            .filter_map(|(key, score)| {
                let entity = entities.get(&key)?;
                let text = spans.get(&key).and_then(|span| entity.content.get(span.clone())).unwrap_or(&entity.content);
                let snippet: String = text.chars().take(SNIPPET_CHARS).collect();
                Some(SearchHit { key, score, snippet })
            })
            .collect())
    }
}
