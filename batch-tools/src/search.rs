//! `batch_search`: many queries in one call, run `max_parallel` at a time.

use batch_core::{BatchRunner, RunnerConfig};
use embedding::{Search, SearchError, VectorHit, VectorQuery};
use entity_store::Filter;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BatchTools, Call, ItemError, MAX_QUERIES_PER_CALL, ToolError, invalid};

/// Arguments of `batch_search`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// The queries, answered in the same order (1 to 1,000).
    #[schemars(length(min = 1, max = 1000))]
    pub queries: Vec<SearchQuery>,
    /// Queries running at once (1-32, default 4).
    #[serde(default = "default_parallel")]
    #[schemars(range(min = 1, max = 32))]
    pub max_parallel: usize,
}

/// One query of `batch_search`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// What to look for.
    pub query: String,
    /// How to search (default `hybrid`).
    #[serde(default)]
    pub search_type: SearchType,
    /// Hits to return (1-100, default 10).
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: usize,
    /// Entity-store filter the hits must match.
    #[serde(default)]
    pub filter: Option<String>,
}

/// How a query searches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchType {
    /// Nearest by embedding; score: cosine similarity in [-1, 1], hits
    /// under the model's similarity floor dropped. An error for the query
    /// where no embedding model is configured.
    Vector,
    /// The full-text index (any word may match); score: relevance relative
    /// to the best hit, in [0, 1].
    Text,
    /// Both, fused by reciprocal rank; score: sum of 1 / (60 + rank) over
    /// the rankings that found the document (at most about 0.033). Where no
    /// embedding model is configured: the text ranking alone, with its scores.
    #[default]
    Hybrid,
}

/// What `batch_search` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchOutput {
    /// One entry per query that ran, in the order given.
    pub results: Vec<QueryResults>,
    /// Queries that ran.
    pub processed: usize,
    /// Queries that failed (`query N`, counted from 0) and why.
    pub errors: Vec<ItemError>,
}

/// The hits of one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueryResults {
    /// Position of the query in the call.
    pub index: usize,
    /// The query's text.
    pub query: String,
    /// Best first.
    pub hits: Vec<Hit>,
    /// Set when nothing matched, saying so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One document found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hit {
    /// Its collection.
    pub collection: String,
    /// Its id.
    pub id: String,
    /// Higher is better; its scale depends on `search_type` (see there).
    pub score: f64,
    /// The start of the best-matching part.
    pub snippet: String,
}

/// A query's vector hits, found ahead, or why they could not be.
type Nearest = Result<Vec<VectorHit>, String>;

/// A query that can be answered: some text to look for, a limit of 1 to 100.
fn valid_query(query: &SearchQuery) -> Result<(), String> {
    if query.query.trim().is_empty() {
        return Err("the query is empty: give some words to look for".into());
    }
    let limit = query.limit;
    if (1..=100).contains(&limit) { Ok(()) } else { Err(format!("limit is {limit}, must be 1 to 100")) }
}

fn default_parallel() -> usize {
    4
}

fn default_limit() -> usize {
    10
}

impl SearchArgs {
    /// The call's limits, checked before anything runs.
    pub fn check(&self) -> Result<(), ToolError> {
        if self.queries.is_empty() || self.queries.len() > MAX_QUERIES_PER_CALL {
            return Err(invalid(format!("give 1 to {MAX_QUERIES_PER_CALL} queries, not {}", self.queries.len())));
        }
        if !(1..=32).contains(&self.max_parallel) {
            return Err(invalid(format!("max_parallel is {}, must be 1 to 32", self.max_parallel)));
        }
        Ok(())
    }
}

impl BatchTools {
    /// Runs the queries, embedding all vector queries in one call.
    pub async fn batch_search(&self, args: SearchArgs, call: &Call) -> Result<SearchOutput, ToolError> {
        args.check()?;
        let config =
            RunnerConfig { max_parallel: args.max_parallel, cancel: call.cancel.clone(), ..Default::default() };
        let runner = BatchRunner::new(config).with_progress(call.progress.clone());
        if call.cancel.is_cancelled() {
            return Err(ToolError::Cancelled);
        }
        let filters: Vec<ParsedFilter> =
            args.queries.iter().map(|query| parse_filter(query.filter.as_deref())).collect();
        let nearest = self.nearest_for(&args.queries, &filters).await;
        let items = args.queries.into_iter().zip(filters).zip(nearest).enumerate();
        // Each query is its own task: ranking is CPU work, and the runner's
        // futures would otherwise share one thread.
        let report = runner
            .run(items, |((query, filter), nearest)| {
                let tools = self.clone();
                async move {
                    tokio::spawn(async move { tools.one_search(query, filter, nearest).await })
                        .await
                        .map_err(|err| batch_core::ItemError::permanent(format!("the search failed: {err}")))?
                }
            })
            .await;
        if call.cancel.is_cancelled() {
            return Err(ToolError::Cancelled);
        }
        let mut results: Vec<QueryResults> = report
            .succeeded
            .into_iter()
            .map(|done| {
                let (query, hits) = done.outcome;
                let note = hits.is_empty().then(|| format!("nothing matched {query:?}"));
                QueryResults { index: done.key, query, hits, note }
            })
            .collect();
        // The runner reports in completion order; callers get the order given.
        results.sort_by_key(|r| r.index);
        let mut failed = report.failed;
        failed.sort_by_key(|failure| failure.key);
        let errors: Vec<ItemError> = failed
            .into_iter()
            .map(|failure| ItemError { item: format!("query {}", failure.key), reason: failure.reason })
            .collect();
        Ok(SearchOutput { processed: results.len(), results, errors })
    }

    /// The vector side of every vector and hybrid query that can run, found
    /// together: one embedding call and one pass over the vectors instead
    /// of one per query. `None` for the other queries.
    async fn nearest_for<'a>(&self, queries: &'a [SearchQuery], filters: &'a [ParsedFilter]) -> Vec<Option<Nearest>> {
        if self.search.embedder.is_none() {
            // Hybrid is text alone then (`Search::hybrid`); vector says why it cannot run.
            let refused = |query: &SearchQuery| query.search_type == SearchType::Vector;
            return queries.iter().map(|q| refused(q).then(|| Err(SearchError::NoEmbedder.to_string()))).collect();
        }
        let mut wanted: Vec<(usize, VectorQuery<'a>)> = Vec::new();
        for (index, (query, filter)) in queries.iter().zip(filters).enumerate() {
            let Ok(filter) = filter else { continue }; // its error is reported when it runs
            let k = match query.search_type {
                SearchType::Text => continue,
                SearchType::Vector => query.limit,
                SearchType::Hybrid => Search::hybrid_depth(query.limit),
            };
            if valid_query(query).is_ok() {
                wanted.push((index, VectorQuery { text: &query.query, k, filter: filter.as_ref() }));
            }
        }
        let mut nearest = vec![None; queries.len()];
        if wanted.is_empty() {
            return nearest;
        }
        let vector_queries: Vec<VectorQuery<'_>> = wanted.iter().map(|(_, query)| *query).collect();
        match self.search.nearest_many(&vector_queries).await {
            Ok(found) => {
                for ((index, _), hits) in wanted.iter().zip(found) {
                    nearest[*index] = Some(Ok(hits));
                }
            }
            // One query can fail the shared pass (its text refused by the
            // model, say): then each runs alone, so it fails alone.
            Err(err) if wanted.len() == 1 => nearest[wanted[0].0] = Some(Err(err.to_string())),
            Err(_) => {
                for (index, query) in &wanted {
                    let alone = self.search.nearest_many(std::slice::from_ref(query)).await;
                    nearest[*index] =
                        Some(alone.map(|mut found| found.pop().unwrap_or_default()).map_err(|err| err.to_string()));
                }
            }
        }
        nearest
    }

    async fn one_search(
        &self,
        query: SearchQuery,
        filter: ParsedFilter,
        nearest: Option<Nearest>,
    ) -> Result<(String, Vec<Hit>), batch_core::ItemError> {
        valid_query(&query).map_err(batch_core::ItemError::permanent)?;
        let filter = filter.map_err(batch_core::ItemError::permanent)?;
        let (search, text, k, filter) = (&self.search, query.query.as_str(), query.limit, filter.as_ref());
        let hits = match (query.search_type, nearest) {
            (_, Some(Err(reason))) => return Err(batch_core::ItemError::permanent(reason)),
            (SearchType::Text, _) => search.text(text, k, filter).await,
            (SearchType::Vector, Some(Ok(nearest))) => search.vector_hits(nearest).await,
            (SearchType::Vector, None) => search.vector(text, k, filter).await,
            (SearchType::Hybrid, Some(Ok(nearest))) => search.hybrid_with(text, k, filter, nearest).await,
            (SearchType::Hybrid, None) => search.hybrid(text, k, filter).await,
        }
        .map_err(|err| batch_core::ItemError::permanent(err.to_string()))?;
        let hits = hits
            .into_iter()
            .map(|hit| Hit { collection: hit.key.entity_type, id: hit.key.id, score: hit.score, snippet: hit.snippet })
            .collect();
        Ok((query.query, hits))
    }
}

/// A query's filter, parsed once for both passes; the error names the filter.
type ParsedFilter = Result<Option<Filter>, String>;

fn parse_filter(text: Option<&str>) -> ParsedFilter {
    text.map(Filter::parse).transpose().map_err(|err| format!("filter: {err}"))
}
