//! The embedding job and search on SQLite, PostgreSQL (with `DATABASE_URL`)
//! and PostgreSQL with pgvector (with `PGVECTOR_URL`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use batch_core::CancellationToken;
use embedding::{
    ChunkVector, EMBED_JOB, EmbedError, EmbedHandler, EmbedInput, EmbedItem, EmbedOutput, EmbedSettings, Embedder,
    EntityVectors, HashingEmbedder, NearestQuery, PgVectors, ProviderLimits, Search, SearchError, SqliteVectors,
    VectorIndex, VectorQuery, estimate_tokens,
};
use entity_store::{EntityKey, EntityStore, Filter, NewEntity, PgStore, SqliteStore, UpsertOptions};
use job_queue::{EnqueueOptions, JobContext, JobHandler, Queue, Registry, WorkerConfig};
use serde_json::json;

struct Fixture {
    store: Arc<dyn EntityStore>,
    vectors: Arc<dyn VectorIndex>,
    url: String,
    _dir: Option<tempfile::TempDir>,
    cleanup: Option<scratch_pg::ScratchPg>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kb.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let url = format!("sqlite://{}", path.display());
    let vectors = SqliteVectors::new(sqlx::SqlitePool::connect(&url).await.unwrap()).await.unwrap();
    Fixture { store: Arc::new(store), vectors: Arc::new(vectors), url, _dir: Some(dir), cleanup: None }
}

impl scratch_pg::Fixture for Fixture {
    async fn open(backend: scratch_pg::Backend, test: &'static str) -> Option<Self> {
        match backend {
            scratch_pg::Backend::Sqlite => Some(sqlite().await),
            scratch_pg::Backend::Postgres { var: var @ "PGVECTOR_URL" } => postgres_at(var, "emb_pgv", test).await,
            scratch_pg::Backend::Postgres { var } => postgres_at(var, "emb_test", test).await,
        }
    }

    async fn finish(self) {
        if let Some(scratch) = self.cleanup {
            scratch.drop_database().await.unwrap();
        }
    }
}

/// A fresh database on the server at `$var`; on `PGVECTOR_URL` (the server
/// CI starts with the extension) searches run through pgvector.
async fn postgres_at(var: &str, prefix: &str, test: &str) -> Option<Fixture> {
    let scratch = scratch_pg::ScratchPg::from_env(var, prefix, test).await?;
    let db_url = scratch.url.clone();
    let store = PgStore::connect(&db_url).await.unwrap();
    let vectors = PgVectors::new(sqlx::PgPool::connect(&db_url).await.unwrap()).await.unwrap();
    if var == "PGVECTOR_URL" {
        assert!(vectors.uses_pgvector(), "the server at {var} has pgvector");
    }
    Some(Fixture {
        store: Arc::new(store),
        vectors: Arc::new(vectors),
        url: db_url,
        _dir: None,
        cleanup: Some(scratch),
    })
}

impl Fixture {
    fn handler(&self, embedder: Arc<dyn Embedder>, settings: EmbedSettings) -> EmbedHandler {
        EmbedHandler { store: self.store.clone(), vectors: self.vectors.clone(), embedder, settings }
    }

    async fn items(&self, keys: &[EntityKey]) -> Vec<EmbedItem> {
        let found = self.store.batch_get(keys).await.unwrap();
        keys.iter().map(|k| EmbedItem { key: k.clone(), content_hash: found[k].content_hash.clone() }).collect()
    }
}

fn context() -> JobContext {
    JobContext::standalone()
}

async fn run(handler: &EmbedHandler, items: Vec<EmbedItem>) -> EmbedOutput {
    handler.process(EmbedInput { items }, context()).await.unwrap()
}

const TOPICS: &[(&str, &str)] = &[
    ("bread", "Sourdough bread needs a lively starter, flour, water and a long cold proof."),
    ("rust", "The Rust borrow checker enforces ownership and lifetimes at compile time."),
    ("garden", "Tomatoes in the garden want sun, deep watering and support stakes."),
    ("tax", "The quarterly tax filing deadline is at the end of the month."),
    ("chess", "A chess opening like the Sicilian defence fights for the centre."),
];

async fn seed(fixture: &Fixture) -> Vec<EntityKey> {
    let mut entities: Vec<NewEntity> = TOPICS.iter().map(|(id, text)| NewEntity::new("note", *id, *text)).collect();
    entities.push(
        NewEntity::new("person", "ana", "Ana bakes sourdough bread every weekend.")
            .with_metadata(json!({"title": "Ana"})),
    );
    let long =
        (0..400).map(|i| format!("paragraph {i} about astronomy and distant galaxies.")).collect::<Vec<_>>().join(" ");
    entities.push(NewEntity::new("note", "long", long));
    fixture.store.batch_upsert(entities.clone(), &UpsertOptions::default()).await.unwrap();
    entities.iter().map(NewEntity::key).collect()
}

async fn embeds_once_skips_unchanged_and_stale_and_searches(fixture: &Fixture) {
    let keys = seed(fixture).await;
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::default());
    let handler = fixture.handler(embedder.clone(), EmbedSettings::default());
    let items = fixture.items(&keys).await;

    let first = run(&handler, items.clone()).await;
    assert_eq!((first.embedded, first.skipped, first.failed.len()), (7, 0, 0));
    let again = run(&handler, items.clone()).await;
    assert_eq!((again.embedded, again.skipped), (0, 7), "unchanged entities are not embedded again");

    // The rust note changes: a job queued with the old hash skips it, one with the new hash embeds it.
    fixture
        .store
        .batch_upsert(
            vec![NewEntity::new("note", "rust", "Rust traits and generics with the borrow checker.")],
            &UpsertOptions::default(),
        )
        .await
        .unwrap();
    let stale = run(&handler, items.iter().filter(|i| i.key.id == "rust").cloned().collect()).await;
    assert_eq!((stale.embedded, stale.skipped), (0, 1));
    let fresh = run(&handler, fixture.items(&[EntityKey::new("note", "rust")]).await).await;
    assert_eq!(fresh.embedded, 1);

    let search = Search { store: fixture.store.clone(), vectors: fixture.vectors.clone(), embedder: Some(embedder) };
    let hits = search.vector("borrow checker in rust", 3, None).await.unwrap();
    assert_eq!(hits[0].key, EntityKey::new("note", "rust"), "{hits:?}");
    assert!(hits[0].snippet.contains("borrow checker"));
    let long_hit = search.vector("distant galaxies astronomy", 1, None).await.unwrap();
    assert_eq!(long_hit[0].key.id, "long");
    assert!(long_hit[0].snippet.chars().count() <= 200, "snippets are cut");

    let people = Filter::parse(r#"entity_type = "person""#).unwrap();
    let filtered = search.vector("sourdough bread", 5, Some(&people)).await.unwrap();
    assert_eq!(filtered.iter().map(|h| h.key.id.as_str()).collect::<Vec<_>>(), vec!["ana"]);
    let text = search.text("sourdough", 5, None).await.unwrap();
    assert!(text.iter().any(|h| h.key.id == "bread"));
    let hybrid = search.hybrid("sourdough bread starter", 3, None).await.unwrap();
    assert_eq!(hybrid[0].key.id, "bread", "{hybrid:?}");

    fixture.vectors.remove(&[EntityKey::new("note", "bread")]).await.unwrap();
    let after = search.vector("sourdough bread starter", 7, None).await.unwrap();
    assert!(after.iter().all(|h| h.key.id != "bread"), "removed vectors are not found");
}

async fn many_queries_in_one_pass_rank_as_one_at_a_time(fixture: &Fixture) {
    let keys = seed(fixture).await;
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::default());
    let handler = fixture.handler(embedder.clone(), EmbedSettings::default());
    run(&handler, fixture.items(&keys).await).await;
    let texts: Vec<String> =
        ["borrow checker", "sourdough bread", "galaxies", "ana"].iter().map(|t| (*t).to_owned()).collect();
    let vectors = embedder.embed_batch(&texts).await.unwrap();
    let notes: std::collections::HashSet<EntityKey> =
        keys.iter().filter(|k| k.entity_type == "note").cloned().collect();
    let queries: Vec<NearestQuery<'_>> = vectors
        .iter()
        .enumerate()
        .map(|(i, vector)| NearestQuery { vector, k: 1 + i % 3, allowed: (i % 2 == 1).then_some(&notes) })
        .collect();
    let together = fixture.vectors.nearest_many(embedder.model_id(), &queries).await.unwrap();
    for (query, found) in queries.iter().zip(&together) {
        let alone: Vec<_> = fixture
            .vectors
            .nearest(embedder.model_id(), query.vector, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(|hit| query.allowed.is_none_or(|allowed| allowed.contains(&hit.key)))
            .take(query.k)
            .collect();
        assert_eq!(found, &alone);
        assert_eq!(found.len(), query.k);
    }
}

async fn queries_sharing_a_filter_read_its_matches_once(fixture: &Fixture) {
    let keys = seed(fixture).await;
    // No floor: the shared pass (raw hits) and the one-query search rank alike.
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::default().with_min_similarity(-1.0));
    run(&fixture.handler(embedder.clone(), EmbedSettings::default()), fixture.items(&keys).await).await;
    let search = Search { store: fixture.store.clone(), vectors: fixture.vectors.clone(), embedder: Some(embedder) };
    let notes = Filter::parse(r#"entity_type = "note""#).unwrap();
    let people = Filter::parse(r#"entity_type = "person""#).unwrap();
    let queries = [
        VectorQuery { text: "borrow checker", k: 2, filter: Some(&notes) },
        VectorQuery { text: "sourdough bread", k: 2, filter: Some(&people) },
        VectorQuery { text: "galaxies", k: 2, filter: Some(&notes) },
        VectorQuery { text: "chess", k: 2, filter: None },
    ];
    let before = fixture.store.statements();
    let together = search.nearest_many(&queries).await.unwrap();
    assert_eq!(
        fixture.store.statements() - before,
        3,
        "two distinct filters, one read each, and one check that the hits still exist"
    );
    for (query, found) in queries.iter().zip(together) {
        let alone = search.vector(query.text, query.k, query.filter).await.unwrap();
        let found: Vec<&EntityKey> = found.iter().map(|hit| &hit.key).collect();
        assert_eq!(found, alone.iter().map(|hit| &hit.key).collect::<Vec<_>>(), "{}", query.text);
    }
}

/// Vectors are stored in half precision: components chosen exactly
/// representable there (0.6 and 0.8 are not) read back exactly.
async fn stored_vectors_read_back_as_written(fixture: &Fixture) {
    let written = vec![
        EntityVectors {
            key: EntityKey::new("note", "b"),
            content_hash: "hb".into(),
            text_hash: Some("tb".into()),
            chunks: vec![
                ChunkVector { chunk: 0, span: 0..5, vector: vec![0.625, 0.78125] },
                ChunkVector { chunk: 1, span: 5..9, vector: vec![1.0, 0.0] },
            ],
        },
        EntityVectors {
            key: EntityKey::new("note", "a"),
            content_hash: "ha".into(),
            text_hash: None,
            chunks: vec![ChunkVector { chunk: 0, span: 0..3, vector: vec![0.0, -1.0] }],
        },
    ];
    fixture.vectors.replace("m", &written).await.unwrap();
    let keys = [EntityKey::new("note", "b"), EntityKey::new("note", "none"), EntityKey::new("note", "a")];
    assert_eq!(fixture.vectors.vectors("m", &keys).await.unwrap(), written, "in the order asked, absent keys left out");
    assert!(fixture.vectors.vectors("other-model", &keys).await.unwrap().is_empty());
}

/// Fails any batch holding a text with "POISON"; records batch shapes.
struct Picky {
    inner: HashingEmbedder,
    batches: Mutex<Vec<Vec<usize>>>,
}

#[async_trait::async_trait]
impl Embedder for Picky {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn limits(&self) -> ProviderLimits {
        ProviderLimits { max_inputs: 8, max_request_tokens: 100_000, max_input_tokens: 512 }
    }
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.batches.lock().unwrap().push(texts.iter().map(|t| estimate_tokens(t)).collect());
        if texts.iter().any(|t| t.contains("POISON")) {
            return Err(EmbedError::Provider("refused a poisoned text".into()));
        }
        self.inner.embed_batch(texts).await
    }
}

async fn a_failing_text_fails_its_entity_alone_and_batches_respect_budgets(fixture: &Fixture) {
    let mut entities: Vec<NewEntity> =
        (0..20).map(|i| NewEntity::new("note", format!("short{i}"), format!("short note number {i}"))).collect();
    entities.push(NewEntity::new("note", "poison", "this one has POISON in it"));
    entities.push(NewEntity::new("note", "big", "word ".repeat(150)));
    fixture.store.batch_upsert(entities.clone(), &UpsertOptions::default()).await.unwrap();
    let keys: Vec<EntityKey> = entities.iter().map(NewEntity::key).collect();
    let picky = Arc::new(Picky { inner: HashingEmbedder::default(), batches: Mutex::new(Vec::new()) });
    let settings = EmbedSettings { padded_token_budget: 300, ..EmbedSettings::default() };
    let handler = fixture.handler(picky.clone(), settings);
    let output = run(&handler, fixture.items(&keys).await).await;
    assert_eq!(output.embedded, 21);
    assert_eq!(output.failed.len(), 1);
    assert_eq!(output.failed[0].key.id, "poison");
    assert!(output.failed[0].reason.contains("refused a poisoned text"));
    for batch in picky.batches.lock().unwrap().iter() {
        let longest = batch.iter().max().copied().unwrap_or(0).max(1);
        assert!(batch.len() <= 8, "{batch:?}");
        assert!(batch.len() == 1 || longest * batch.len() <= 300, "padded budget exceeded: {batch:?}");
    }
    let hashes = fixture.vectors.hashes(picky.model_id(), &keys).await.unwrap();
    assert_eq!(hashes.len(), 21, "every entity but the poisoned one has vectors");
}

async fn the_embed_job_runs_on_a_real_queue(fixture: &Fixture) {
    let keys = seed(fixture).await;
    let queue = Queue::connect(&fixture.url).await.unwrap();
    let handler = fixture.handler(Arc::new(HashingEmbedder::default()), EmbedSettings::default());
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        queue
            .worker(
                Registry::new().with(EMBED_JOB, handler),
                WorkerConfig { concurrency: 1, ..WorkerConfig::default() },
            )
            .run(shutdown.clone()),
    );
    let input = EmbedInput { items: fixture.items(&keys).await };
    let id = queue.enqueue(EMBED_JOB, &input, EnqueueOptions::default()).await.unwrap();
    let output: EmbedOutput = queue.wait_output(id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(output.embedded, keys.len());
    let job = queue.get(id).await.unwrap().unwrap();
    assert_eq!((job.progress.current, job.progress.total), (keys.len() as u64, keys.len() as u64));
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

async fn embed_stale_queues_exactly_what_is_missing(fixture: &Fixture) {
    let keys = seed(fixture).await;
    let queue = Queue::connect(&fixture.url).await.unwrap();
    let embedder = HashingEmbedder::default();
    let model = embedder.model_id().to_owned();
    let stale = |q: &Queue| {
        let q = q.clone();
        let model = model.clone();
        async move { embedding::embed_stale(&q, fixture.store.as_ref(), fixture.vectors.as_ref(), &model, 3).await.unwrap() }
    };
    assert_eq!(stale(&queue).await, 3, "7 entities in jobs of 3");
    assert_eq!(stale(&queue).await, 3, "the same stale set gives the same dedup keys");
    assert_eq!(queue.list(&job_queue::JobFilter::default()).await.unwrap().len(), 3, "no duplicate jobs");

    let shutdown = CancellationToken::new();
    let handler = fixture.handler(Arc::new(embedder), EmbedSettings::default());
    let worker = tokio::spawn(
        queue.worker(Registry::new().with(EMBED_JOB, handler), WorkerConfig::default()).run(shutdown.clone()),
    );
    for job in queue.list(&job_queue::JobFilter::default()).await.unwrap() {
        queue.wait(job.id, Duration::from_secs(30)).await.unwrap();
    }
    assert_eq!(stale(&queue).await, 0, "everything is embedded");
    fixture
        .store
        .batch_upsert(vec![NewEntity::new("note", "chess", "Endgames with rooks.")], &UpsertOptions::default())
        .await
        .unwrap();
    assert_eq!(stale(&queue).await, 1, "one changed entity, one job");
    let other_model = HashingEmbedder::new(128);
    let all =
        embedding::embed_stale(&queue, fixture.store.as_ref(), fixture.vectors.as_ref(), other_model.model_id(), 100)
            .await
            .unwrap();
    assert_eq!(all, 1, "a new model makes every entity stale: one job of up to 100");
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(keys.len(), 7);
}

/// A model whose tokenizer sees three tokens where the estimate sees one,
/// and which refuses (like the real one) anything over its window.
struct Dense {
    inner: HashingEmbedder,
    longest_seen: Mutex<usize>,
}

#[async_trait::async_trait]
impl Embedder for Dense {
    fn model_id(&self) -> &'static str {
        "dense-test"
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn limits(&self) -> ProviderLimits {
        ProviderLimits { max_inputs: 32, max_request_tokens: 100_000, max_input_tokens: 100 }
    }
    fn count_tokens(&self, text: &str) -> usize {
        3 * estimate_tokens(text)
    }
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        for (index, text) in texts.iter().enumerate() {
            let tokens = self.count_tokens(text);
            let mut longest = self.longest_seen.lock().unwrap();
            *longest = (*longest).max(tokens);
            if tokens > 100 {
                return Err(EmbedError::TooLong { index, tokens, limit: 100 });
            }
        }
        self.inner.embed_batch(texts).await
    }
}

async fn chunks_fit_the_models_own_token_count(fixture: &Fixture) {
    let text = (0..600).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let entity = NewEntity::new("note", "dense", text);
    fixture.store.batch_upsert(vec![entity.clone()], &UpsertOptions::default()).await.unwrap();
    let dense = Arc::new(Dense { inner: HashingEmbedder::default(), longest_seen: Mutex::new(0) });
    // The estimate-based chunk size (200) is far over what this model takes.
    let handler = fixture.handler(dense.clone(), EmbedSettings::default());
    let output = run(&handler, fixture.items(&[entity.key()]).await).await;
    assert!(output.failed.is_empty(), "{:?}", output.failed);
    assert_eq!(output.embedded, 1);
    let longest = *dense.longest_seen.lock().unwrap();
    assert!(longest <= 100 && longest > 50, "chunks re-cut to fit, not to nothing: longest {longest}");
}

/// Deleted documents never take a place in a ranking: `k` live hits come
/// back while that many live documents have vectors, and the deleted
/// ones' vectors are gone afterwards.
async fn deleted_entities_take_no_place_in_a_ranking(fixture: &Fixture) {
    let keys = seed(fixture).await;
    // No similarity floor: every live note is a hit, however far.
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::default().with_min_similarity(-1.0));
    let handler = fixture.handler(embedder.clone(), EmbedSettings::default());
    run(&handler, fixture.items(&keys).await).await;
    let deleted: Vec<EntityKey> =
        keys.iter().filter(|k| ["bread", "rust", "garden"].contains(&k.id.as_str())).cloned().collect();
    fixture.store.batch_delete(&deleted).await.unwrap();
    let search = Search { store: fixture.store.clone(), vectors: fixture.vectors.clone(), embedder: Some(embedder) };
    let live = keys.len() - deleted.len();
    for k in 1..=keys.len() {
        let hits = search.vector("sourdough bread starter", k, None).await.unwrap();
        assert_eq!(hits.len(), k.min(live), "limit {k}");
        assert!(hits.iter().all(|hit| !deleted.contains(&hit.key)), "limit {k}: {hits:?}");
    }
    let left = fixture.vectors.hashes(HashingEmbedder::default().model_id(), &deleted).await.unwrap();
    assert!(left.is_empty(), "the deleted documents' vectors are gone: {left:?}");
}

/// Vectors follow the text they embed: a metadata-only change, or the same
/// content written again, embeds nothing and leaves nothing stale; a
/// changed body embeds that entity alone.
async fn a_metadata_only_change_embeds_nothing(fixture: &Fixture) {
    let keys = seed(fixture).await;
    let embedder = HashingEmbedder::default();
    let model = embedder.model_id().to_owned();
    let handler = fixture.handler(Arc::new(embedder), EmbedSettings::default());
    assert_eq!(run(&handler, fixture.items(&keys).await).await.embedded, 7);
    let retitled: Vec<NewEntity> = TOPICS
        .iter()
        .map(|(id, text)| NewEntity::new("note", *id, *text).with_metadata(json!({"status": "reviewed"})))
        .collect();
    let report = fixture.store.batch_upsert(retitled.clone(), &UpsertOptions::default()).await.unwrap();
    assert_eq!(report.succeeded.len(), TOPICS.len());
    let changed: Vec<EntityKey> = retitled.iter().map(NewEntity::key).collect();
    let out = run(&handler, fixture.items(&changed).await).await;
    assert_eq!((out.embedded, out.skipped), (0, TOPICS.len()), "metadata alone embeds nothing");
    let queue = Queue::connect(&fixture.url).await.unwrap();
    let stale = embedding::embed_stale(&queue, fixture.store.as_ref(), fixture.vectors.as_ref(), &model, 10);
    assert_eq!(stale.await.unwrap(), 0, "and leaves nothing stale");

    let edited =
        NewEntity::new("note", "rust", "Rust lifetimes, explained again.").with_metadata(json!({"status": "reviewed"}));
    fixture.store.batch_upsert(vec![edited], &UpsertOptions::default()).await.unwrap();
    let out = run(&handler, fixture.items(&changed).await).await;
    assert_eq!((out.embedded, out.skipped), (1, TOPICS.len() - 1), "a new body embeds that entity");
    let search = Search {
        store: fixture.store.clone(),
        vectors: fixture.vectors.clone(),
        embedder: Some(Arc::new(HashingEmbedder::default())),
    };
    assert_eq!(search.vector("lifetimes explained", 1, None).await.unwrap()[0].key.id, "rust");
}

/// A query like no document finds nothing in any mode (the similarity
/// floor); words of unspaced scripts are found by text and hybrid search.
async fn nothing_matches_nonsense_and_every_script_is_found(fixture: &Fixture) {
    let keys = seed(fixture).await;
    let texts = [
        ("zh", "物竞天择，适者生存。"),
        ("ja", "しりとりは言葉遊びです"),
        ("ko", "한국어를 배우는 것은 재미있습니다"),
        ("th", "ภาษาไทยเป็นภาษาราชการ"),
        ("ar", "اللغة العربية جميلة"),
    ];
    let notes: Vec<NewEntity> = texts.iter().map(|(id, text)| NewEntity::new("note", *id, *text)).collect();
    fixture.store.batch_upsert(notes.clone(), &UpsertOptions::default()).await.unwrap();
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::default());
    let handler = fixture.handler(embedder.clone(), EmbedSettings::default());
    let all: Vec<EntityKey> = keys.iter().cloned().chain(notes.iter().map(NewEntity::key)).collect();
    run(&handler, fixture.items(&all).await).await;
    let search = Search { store: fixture.store.clone(), vectors: fixture.vectors.clone(), embedder: Some(embedder) };
    for query in ["zzzqqq", "xylophone quasar"] {
        assert!(search.vector(query, 10, None).await.unwrap().is_empty(), "vector: {query}");
        assert!(search.text(query, 10, None).await.unwrap().is_empty(), "text: {query}");
        assert!(search.hybrid(query, 10, None).await.unwrap().is_empty(), "hybrid: {query}");
    }
    let queries = [
        ("zh", "适者生存"),
        ("ja", "しりとり"),
        ("ko", "한국어"),
        ("th", "ภาษาไทย"),
        ("ar", "العربية"),
        ("bread", "sourdough starter"),
    ];
    for (id, query) in queries {
        let hybrid = search.hybrid(query, 5, None).await.unwrap();
        assert_eq!(hybrid.first().map(|h| h.key.id.as_str()), Some(id), "hybrid {query}: {hybrid:?}");
        assert!(hybrid[0].score <= 2.0 / (embedding::RRF_K + 1.0), "{hybrid:?}");
        let text = search.text(query, 5, None).await.unwrap();
        assert_eq!(text.first().map(|h| h.key.id.as_str()), Some(id), "text {query}: {text:?}");
        assert!((text[0].score - 1.0).abs() < 1e-12, "the best text hit scores 1: {text:?}");
    }
}

/// Without an embedding model: vector search says so, by name, for every
/// query; hybrid search is text search alone, every script included.
async fn without_a_model_vector_search_says_so_and_hybrid_is_text(fixture: &Fixture) {
    seed(fixture).await;
    let notes =
        vec![NewEntity::new("note", "zh", "物竞天择，适者生存。"), NewEntity::new("note", "ar", "اللغة العربية جميلة")];
    fixture.store.batch_upsert(notes, &UpsertOptions::default()).await.unwrap();
    let search = Search { store: fixture.store.clone(), vectors: fixture.vectors.clone(), embedder: None };
    for query in ["sourdough starter", "适者生存", "zzzqqq"] {
        let err = search.vector(query, 5, None).await.unwrap_err();
        assert!(matches!(err, SearchError::NoEmbedder), "{query}: {err}");
        assert!(err.to_string().contains("none is configured"), "{err}");
        let err = search.nearest_many(&[VectorQuery { text: query, k: 5, filter: None }]).await.unwrap_err();
        assert!(matches!(err, SearchError::NoEmbedder), "{query}: {err}");
        let hybrid = search.hybrid(query, 5, None).await.unwrap();
        let text = search.text(query, 5, None).await.unwrap();
        let keys = |hits: &[embedding::SearchHit]| hits.iter().map(|h| (h.key.clone(), h.score)).collect::<Vec<_>>();
        assert_eq!(keys(&hybrid), keys(&text), "{query}");
    }
    assert_eq!(search.hybrid("适者生存", 5, None).await.unwrap()[0].key.id, "zh");
    assert_eq!(search.hybrid("العربية", 5, None).await.unwrap()[0].key.id, "ar");
}

/// A second handle on the same database, as another process has.
async fn other_handle(fixture: &Fixture) -> Arc<dyn VectorIndex> {
    if fixture.url.starts_with("sqlite") {
        Arc::new(SqliteVectors::new(sqlx::SqlitePool::connect(&fixture.url).await.unwrap()).await.unwrap())
    } else {
        Arc::new(PgVectors::new(sqlx::PgPool::connect(&fixture.url).await.unwrap()).await.unwrap())
    }
}

fn axis(i: usize) -> Vec<f32> {
    (0..4).map(|j| if i == j { 1.0 } else { 0.0 }).collect()
}

fn on_axis(id: &str, i: usize) -> EntityVectors {
    EntityVectors {
        key: EntityKey::new("note", id),
        content_hash: format!("hash-{id}-{i}"),
        text_hash: None,
        chunks: vec![ChunkVector { chunk: 0, span: 0..1, vector: axis(i) }],
    }
}

/// Search keeps a copy of the vectors in memory; every kind of change made
/// elsewhere (another handle, or plain SQL from another program) shows in
/// the next search: added, replaced, removed.
async fn a_search_sees_every_change_made_elsewhere(fixture: &Fixture) {
    let (writer, reader) = (fixture.vectors.clone(), other_handle(fixture).await);
    let top = |hits: Vec<embedding::VectorHit>| hits.into_iter().map(|h| h.key.id).collect::<Vec<_>>();
    writer.replace("m", &[on_axis("x", 0), on_axis("y", 1)]).await.unwrap();
    assert_eq!(top(reader.nearest("m", &axis(0), 1).await.unwrap()), ["x"]);
    // Replaced: x now points elsewhere.
    writer.replace("m", &[on_axis("x", 2)]).await.unwrap();
    assert_eq!(top(reader.nearest("m", &axis(2), 1).await.unwrap()), ["x"]);
    let best = reader.nearest("m", &axis(0), 1).await.unwrap();
    assert!(best.first().is_none_or(|hit| hit.score < 0.5), "x's old vector is still searched: {best:?}");
    // Removed.
    writer.remove(&[EntityKey::new("note", "x")]).await.unwrap();
    assert!(!top(reader.nearest("m", &axis(2), 5).await.unwrap()).contains(&"x".to_owned()));
    // Written by another program, straight into the table.
    let blob: Vec<u8> = axis(3).iter().flat_map(|v| v.to_le_bytes()).collect();
    let insert = "INSERT INTO entity_vectors (entity_type, id, model_id, chunk, dimensions, content_hash, span_start, span_end, vector)
                  VALUES ('note', 'z', 'm', 0, 4, 'h', 0, 1, ";
    if fixture.url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&fixture.url).await.unwrap();
        sqlx::query(&format!("{insert} ?)")).bind(&blob).execute(&pool).await.unwrap();
    } else {
        let pool = sqlx::PgPool::connect(&fixture.url).await.unwrap();
        sqlx::query(&format!("{insert} $1)")).bind(&blob).execute(&pool).await.unwrap();
        // With pgvector the database ranks by its `embedding` column, which such a writer fills too.
        let pgvector: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                            WHERE table_name = 'entity_vectors' AND column_name = 'embedding')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if pgvector {
            sqlx::query("UPDATE entity_vectors SET embedding = '[0,0,0,1]' WHERE id = 'z'")
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    assert_eq!(top(reader.nearest("m", &axis(3), 1).await.unwrap()), ["z"]);
}

scratch_pg::backends!(
    Fixture;
    [pgvector_backend = Backend::Postgres { var: "PGVECTOR_URL" }]
    a_metadata_only_change_embeds_nothing,
    nothing_matches_nonsense_and_every_script_is_found,
    without_a_model_vector_search_says_so_and_hybrid_is_text,
    deleted_entities_take_no_place_in_a_ranking,
    embeds_once_skips_unchanged_and_stale_and_searches,
    stored_vectors_read_back_as_written,
    many_queries_in_one_pass_rank_as_one_at_a_time,
    queries_sharing_a_filter_read_its_matches_once,
    a_failing_text_fails_its_entity_alone_and_batches_respect_budgets,
    the_embed_job_runs_on_a_real_queue,
    embed_stale_queues_exactly_what_is_missing,
    chunks_fit_the_models_own_token_count,
    a_search_sees_every_change_made_elsewhere,
);

/// A vector row another program wrote with a column of the wrong type is
/// `StoreError::Corrupt` naming the column, not a panic or a bare driver error.
#[tokio::test]
async fn a_vector_row_that_does_not_decode_is_corrupt() {
    let fixture = sqlite().await;
    let pool = sqlx::SqlitePool::connect(&fixture.url).await.unwrap();
    sqlx::query(
        "INSERT INTO entity_vectors (entity_type, id, model_id, chunk, dimensions, content_hash, span_start, span_end, vector)
         VALUES ('note', 'bad', 'm', 0, 2, 'h', 'not a number', 3, x'0000803f0000803f')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let key = entity_store::EntityKey::new("note", "bad");
    let err = fixture.vectors.vectors("m", &[key]).await.unwrap_err();
    assert!(matches!(err, entity_store::StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("column"), "{err}");
}
