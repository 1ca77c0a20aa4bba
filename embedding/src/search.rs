//! Vector, text and hybrid (reciprocal rank fusion) search, one hit per entity.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use entity_store::{EntityKey, EntityStore, Filter};

use crate::provider::Embedder;
use crate::vectors::VectorIndex;

/// Standard RRF constant: dampens the weight of top ranks.
const RRF_K: f64 = 60.0;
const SNIPPET_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub key: EntityKey,
    pub score: f64,
    pub snippet: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] entity_store::StoreError),
    #[error("vector index: {0}")]
    Vectors(#[from] sqlx::Error),
    #[error(transparent)]
    Embed(#[from] crate::provider::EmbedError),
    #[error(transparent)]
    Queue(#[from] job_queue::QueueError),
}

pub struct Search {
    pub store: Arc<dyn EntityStore>,
    pub vectors: Arc<dyn VectorIndex>,
    pub embedder: Arc<dyn Embedder>,
}

impl Search {
    /// Entities whose best chunk is nearest to `query` by cosine.
    pub async fn vector(&self, query: &str, k: usize, filter: Option<&Filter>) -> Result<Vec<SearchHit>, SearchError> {
        let allowed = self.allowed(filter).await?;
        let query_vector = self.embedder.embed_batch(&[query.to_owned()]).await?.pop().unwrap_or_default();
        let wanted = if allowed.is_some() { usize::MAX } else { k };
        let hits = self.vectors.nearest(self.embedder.model_id(), &query_vector, wanted).await?;
        let hits: Vec<_> =
            hits.into_iter().filter(|h| allowed.as_ref().is_none_or(|a| a.contains(&h.key))).take(k).collect();
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

    /// Vector and text rankings fused by reciprocal rank.
    pub async fn hybrid(&self, query: &str, k: usize, filter: Option<&Filter>) -> Result<Vec<SearchHit>, SearchError> {
        let depth = (k * 4).max(20);
        let (vector, text) = tokio::try_join!(self.vector(query, depth, filter), self.text(query, depth, filter))?;
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
        let matches = self.store.find(filter, 1_000_000).await?;
        Ok(Some(matches.into_iter().map(|e| e.key()).collect()))
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
