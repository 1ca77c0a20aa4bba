//! The batch tools through their library API on real SQLite and PostgreSQL
//! (with `DATABASE_URL`): per-item results, the safety rules, limits,
//! progress and cancellation.

use std::sync::Arc;
use std::time::Duration;

use batch_core::{CancellationToken, ProgressReporter, ProgressUpdate};
use batch_tools::{BatchTools, Call, FilesRoot, ToolError};
use embedding::{
    EMBED_JOB, EmbedHandler, EmbedSettings, HashingEmbedder, PgVectors, Search, SqliteVectors, VectorIndex,
};
use entity_store::{EntityKey, EntityStore, PgStore, SqliteStore};
use job_queue::{Queue, Registry, WorkerConfig};
use serde_json::{Value, json};

struct Fixture {
    tools: BatchTools,
    store: Arc<dyn EntityStore>,
    queue: Queue,
    vectors: Arc<dyn VectorIndex>,
    /// The files root of the file tools.
    files: tempfile::TempDir,
    _dir: Option<tempfile::TempDir>,
    cleanup: Option<scratch_pg::ScratchPg>,
}

impl scratch_pg::Fixture for Fixture {
    async fn open(backend: scratch_pg::Backend, test: &'static str) -> Option<Self> {
        match backend {
            scratch_pg::Backend::Sqlite => Some(Self::sqlite().await),
            scratch_pg::Backend::Postgres { var } => Self::postgres(var, test).await,
        }
    }

    async fn finish(self) {
        if let Some(scratch) = self.cleanup {
            scratch.drop_database().await.unwrap();
        }
    }
}

impl Fixture {
    fn new(store: Arc<dyn EntityStore>, vectors: Arc<dyn VectorIndex>, queue: Queue) -> Self {
        let embedder = Arc::new(HashingEmbedder::default());
        let search = Arc::new(Search { store: store.clone(), vectors: vectors.clone(), embedder: Some(embedder) });
        let files = tempfile::tempdir().unwrap();
        let tools = BatchTools::new(search, queue.clone(), FilesRoot::new(files.path()).unwrap());
        Self { tools, store, queue, vectors, files, _dir: None, cleanup: None }
    }

    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tools.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        let queue = Queue::from_sqlite_pool(store.pool().clone()).await.unwrap();
        let vectors = SqliteVectors::new(store.pool().clone()).await.unwrap();
        Self { _dir: Some(dir), ..Self::new(Arc::new(store), Arc::new(vectors), queue) }
    }

    async fn postgres(var: &str, test: &str) -> Option<Self> {
        let scratch = scratch_pg::ScratchPg::from_env(var, "tools_test", test).await?;
        let store = PgStore::connect(&scratch.url).await.unwrap();
        let queue = Queue::from_pg_pool(store.pool().clone()).await.unwrap();
        let vectors = PgVectors::new(store.pool().clone()).await.unwrap();
        Some(Self { cleanup: Some(scratch), ..Self::new(Arc::new(store), Arc::new(vectors), queue) })
    }

    /// Runs the queued embedding jobs `ids` on a real worker.
    async fn embed(&self, ids: &[String]) {
        let handler = EmbedHandler {
            store: self.store.clone(),
            vectors: self.vectors.clone(),
            embedder: Arc::new(HashingEmbedder::default()),
            settings: EmbedSettings::default(),
        };
        let config = WorkerConfig { poll_interval: Duration::from_millis(50), ..WorkerConfig::default() };
        let stop = CancellationToken::new();
        let worker =
            tokio::spawn(self.queue.worker(Registry::new().with(EMBED_JOB, handler), config).run(stop.clone()));
        for id in ids {
            let job = self.queue.wait(id.parse().unwrap(), Duration::from_secs(30)).await.unwrap();
            assert_eq!(job.state, job_queue::JobState::Completed, "{job:?}");
        }
        stop.cancel();
        worker.await.unwrap().unwrap();
    }
}

fn args<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn recipes() -> Value {
    json!([
        {"id": "bread", "content": "Sourdough bread needs flour, water, salt and a starter.", "metadata": {"kind": "baking", "minutes": 240}},
        {"id": "cake", "content": "A sponge cake needs eggs, sugar and flour, whisked until airy.", "metadata": {"kind": "baking", "minutes": 60}},
        {"id": "soup", "content": "Tomato soup simmers tomatoes, onion and garlic in stock.", "metadata": {"kind": "cooking", "minutes": 40}},
        {"id": "salad", "content": "A green salad of lettuce, cucumber and a lemon dressing.", "metadata": {"kind": "cooking", "minutes": 10}},
    ])
}

async fn add_then_search_many_queries_at_once(f: &Fixture) {
    let added = f
        .tools
        .batch_add(args(json!({"documents": recipes(), "collection": "recipe"})), &Call::default())
        .await
        .unwrap();
    assert_eq!(added.processed, 4);
    assert!(added.errors.is_empty() && !added.rolled_back);
    assert!(!added.embedding_jobs.is_empty(), "embedding was queued");
    f.embed(&added.embedding_jobs).await;

    let queries = json!({"max_parallel": 2, "queries": [
        {"query": "sourdough starter", "search_type": "text", "limit": 2},
        {"query": "tomato garlic soup", "search_type": "vector", "limit": 1},
        {"query": "flour", "search_type": "hybrid", "filter": "metadata.kind = \"baking\""},
        {"query": "anything", "filter": "metadata.kind =="},
        {"query": "anything", "limit": 0},
        {"query": "  ", "search_type": "hybrid"},
    ]});
    let out = f.tools.batch_search(args(queries), &Call::default()).await.unwrap();
    assert_eq!(out.processed, 3);
    assert_eq!(out.results.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2], "in the order given");
    assert_eq!(out.results[0].hits[0].id, "bread");
    assert_eq!(out.results[1].hits.len(), 1);
    assert_eq!(out.results[1].hits[0].id, "soup");
    let baking: Vec<&str> = out.results[2].hits.iter().map(|h| h.id.as_str()).collect();
    assert!(!baking.is_empty() && baking.iter().all(|id| ["bread", "cake"].contains(id)), "{baking:?}");
    assert_eq!(out.errors.len(), 3);
    assert_eq!(out.errors[0].item, "query 3");
    assert!(out.errors[0].reason.contains("filter"), "{}", out.errors[0].reason);
    assert!(out.errors[1].reason.contains("limit"), "{}", out.errors[1].reason);
    assert!(out.errors[2].reason.contains("empty"), "an empty query is an error, not ten unrelated hits");
}

async fn atomic_add_writes_nothing_when_one_document_is_bad(f: &Fixture) {
    let mut docs = recipes();
    docs.as_array_mut().unwrap().push(json!({"id": "../escape", "content": "x"}));
    let out = f.tools.batch_add(args(json!({"documents": docs.clone()})), &Call::default()).await.unwrap();
    assert!(out.rolled_back && out.processed == 0 && out.embedding_jobs.is_empty());
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].item, "../escape");
    assert_eq!(f.store.count(None).await.unwrap(), 0, "nothing of the atomic batch was kept");

    let out = f.tools.batch_add(args(json!({"documents": docs, "atomic": false})), &Call::default()).await.unwrap();
    assert_eq!((out.processed, out.errors.len(), out.rolled_back), (4, 1, false));
    assert_eq!(f.store.count(Some("document")).await.unwrap(), 4);
}

async fn long_documents_are_split_into_parts(f: &Fixture) {
    let long = "word ".repeat(100);
    let call = json!({"documents": [{"id": "long", "content": long, "metadata": {"source": "test"}}],
                      "chunk_size": 120, "chunk_overlap": 20, "generate_embeddings": false});
    let out = f.tools.batch_add(args(call), &Call::default()).await.unwrap();
    assert!(out.processed >= 5, "{out:?}");
    assert!(out.embedding_jobs.is_empty());
    let part = f.store.get(&EntityKey::new("document", "long-part-2")).await.unwrap().unwrap();
    assert_eq!(part.metadata["parent_id"], "long");
    assert_eq!(part.metadata["part"], 2);
    assert_eq!(part.metadata["parts"], out.processed);
    assert_eq!(part.metadata["source"], "test");
    assert!(part.content.chars().count() <= 120);
}

async fn update_merges_metadata_applies_the_template_and_keeps_the_limit(f: &Fixture) {
    f.tools
        .batch_add(args(json!({"documents": recipes(), "generate_embeddings": false})), &Call::default())
        .await
        .unwrap();
    let call = json!({"filter": "metadata.kind = \"baking\"", "metadata_updates": {"oven": true, "minutes": null},
                      "content_template": "# {{metadata.kind}}\n{{content}}"});
    let out = f.tools.batch_update(args(call), &Call::default()).await.unwrap();
    assert_eq!(out.matched, 2);
    assert_eq!(out.updated.len(), 2);
    assert_eq!(out.embedding_jobs.len(), 1, "the changed content is embedded again");
    let bread = f.store.get(&EntityKey::new("document", "bread")).await.unwrap().unwrap();
    assert_eq!(bread.metadata.get("oven"), Some(&json!(true)));
    assert!(bread.metadata.get("minutes").is_none(), "null removes a key");
    assert!(bread.content.starts_with("# baking\nSourdough"), "{}", bread.content);

    let call = json!({"document_ids": ["soup", "nope"], "metadata_updates": {"kind": "cooking"}});
    let out = f.tools.batch_update(args(call), &Call::default()).await.unwrap();
    assert_eq!(
        (out.matched, out.updated.len(), out.unchanged),
        (1, 0, 1),
        "an unknown id is an error, not a match: {out:?}"
    );
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].item, "nope");

    let call = json!({"filter": "version >= 1", "metadata_updates": {"x": 1}, "max_documents": 3});
    let err = f.tools.batch_update(args(call), &Call::default()).await.unwrap_err();
    assert!(matches!(&err, ToolError::Invalid(m) if m.contains("more than 3")), "{err}");
    let untouched = f.store.get(&EntityKey::new("document", "salad")).await.unwrap().unwrap();
    assert!(untouched.metadata.get("x").is_none(), "a refused update changes nothing");
}

async fn delete_is_a_dry_run_until_the_count_is_confirmed(f: &Fixture) {
    f.tools
        .batch_add(args(json!({"documents": recipes(), "generate_embeddings": false})), &Call::default())
        .await
        .unwrap();
    let selection = json!({"filter": "metadata.kind = \"cooking\""});
    let preview = f.tools.batch_delete(args(selection.clone()), &Call::default()).await.unwrap();
    assert!(preview.dry_run);
    assert_eq!(preview.matched, 2);
    let ids: Vec<&str> = preview.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["salad", "soup"]);
    assert_eq!(f.store.count(None).await.unwrap(), 4, "a dry run deletes nothing");

    for confirm in [json!(null), json!(3)] {
        let mut call = selection.clone();
        call["dry_run"] = json!(false);
        call["confirm_count"] = confirm;
        let err = f.tools.batch_delete(args(call), &Call::default()).await.unwrap_err();
        assert!(matches!(&err, ToolError::Invalid(m) if m.contains("nothing deleted")), "{err}");
        assert_eq!(f.store.count(None).await.unwrap(), 4);
    }
    let mut call = selection;
    call["dry_run"] = json!(false);
    call["confirm_count"] = json!(2);
    let done = f.tools.batch_delete(args(call), &Call::default()).await.unwrap();
    assert_eq!(done.deleted, 2);
    assert_eq!(f.store.count(None).await.unwrap(), 2);
}

async fn bad_arguments_are_refused_before_anything_runs(f: &Fixture) {
    let call = Call::default();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"filter": "id = \"a\"", "document_ids": ["a"]}), "not both"),
        (json!({}), "give `filter` or `document_ids`"),
        (json!({"filter": "colour = \"red\""}), "unknown field"),
    ];
    for (value, expected) in cases {
        let err = f.tools.batch_delete(args(value), &call).await.unwrap_err();
        assert!(matches!(&err, ToolError::Invalid(m) if m.contains(expected)), "{expected}: {err}");
    }
    let err = f.tools.batch_add(args(json!({"documents": []})), &call).await.unwrap_err();
    assert!(matches!(err, ToolError::Invalid(_)));
    let err =
        f.tools.batch_add(args(json!({"documents": recipes(), "collection": "Bad Type"})), &call).await.unwrap_err();
    assert!(matches!(&err, ToolError::Invalid(m) if m.contains("collection")), "{err}");
    let err = f.tools.batch_update(args(json!({"filter": "version > 0"})), &call).await.unwrap_err();
    assert!(matches!(&err, ToolError::Invalid(m) if m.contains("nothing to update")), "{err}");
    let unknown = serde_json::from_value::<batch_tools::DeleteArgs>(json!({"filter": "version > 0", "dryrun": false}));
    assert!(unknown.unwrap_err().to_string().contains("dryrun"), "misspelt arguments are not ignored");
}

/// Cancels the call after its first finished item.
struct CancelAfterFirst(CancellationToken);

impl ProgressReporter for CancelAfterFirst {
    fn report(&self, update: &ProgressUpdate) {
        if update.progress.current >= 1 {
            self.0.cancel();
        }
    }
}

async fn a_cancelled_search_stops_and_says_so(f: &Fixture) {
    let cancel = CancellationToken::new();
    let call = Call { progress: Arc::new(CancelAfterFirst(cancel.clone())), cancel };
    let queries: Vec<Value> = (0..50).map(|i| json!({"query": format!("query {i}"), "search_type": "text"})).collect();
    let out = f.tools.batch_search(args(json!({"queries": queries, "max_parallel": 1})), &call).await;
    assert!(matches!(out, Err(ToolError::Cancelled)), "{out:?}");
}

/// Every document as (collection/id, content, metadata), sorted.
async fn snapshot(f: &Fixture) -> Vec<(String, String, serde_json::Map<String, Value>)> {
    let filter = entity_store::Filter::all();
    let mut all: Vec<_> = f
        .store
        .find(&filter, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (format!("{}/{}", e.entity_type, e.id), e.content, e.metadata))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

async fn delete_everything(f: &Fixture) {
    let keys: Vec<EntityKey> = f
        .store
        .find(&entity_store::Filter::all(), 10_000)
        .await
        .unwrap()
        .iter()
        .map(entity_store::Entity::key)
        .collect();
    f.store.batch_delete(&keys).await.unwrap();
    f.vectors.remove(&keys).await.unwrap();
}

async fn export_then_import_round_trips_every_format(f: &Fixture) {
    let mut docs = recipes();
    // What CSV must quote, and text that is not ASCII.
    docs.as_array_mut().unwrap().push(json!({"id": "tricky", "content": "a, \"quoted\"\nsecond line; naïve café 🚀",
        "metadata": {"nested": {"list": [1, 2.5, null]}, "comma": "x,y"}}));
    let added =
        f.tools.batch_add(args(json!({"documents": docs, "collection": "recipe"})), &Call::default()).await.unwrap();
    f.embed(&added.embedding_jobs).await;
    let before = snapshot(f).await;
    for format in ["json", "jsonl", "csv", "parquet"] {
        let path = format!("out/all.{format}");
        let call = json!({"path": path, "include_embeddings": true});
        let exported = f.tools.batch_export(args(call), &Call::default()).await.unwrap();
        assert_eq!((exported.exported, exported.with_embeddings), (5, 5), "{format}");
        assert_eq!(exported.files.len(), 1);
        assert_eq!(exported.files[0].path, path);
        assert!(f.files.path().join(&path).is_file(), "{format}");
        delete_everything(f).await;
        assert_eq!(f.store.count(None).await.unwrap(), 0);

        let imported = f.tools.batch_import(args(json!({"path": path})), &Call::default()).await.unwrap();
        assert_eq!(
            (imported.processed, imported.error_count, imported.aborted),
            (5, 0, false),
            "{format}: {imported:?}"
        );
        assert_eq!(imported.vectors_kept, 5, "{format}: the file's vectors are used, not embedded again");
        assert!(imported.embedding_jobs.is_empty(), "{format}");
        assert_eq!(snapshot(f).await, before, "{format}: the documents came back as they were");
        let search = json!({"queries": [{"query": "tomato garlic soup", "search_type": "vector", "limit": 1}]});
        let hits = f.tools.batch_search(args(search), &Call::default()).await.unwrap();
        assert_eq!(hits.results[0].hits[0].id, "soup", "{format}: the imported vectors search");
    }
}

async fn cancelled_export_and_import_leave_no_file_and_say_so(f: &Fixture) {
    let docs: Vec<Value> =
        (0..1_200).map(|i| json!({"id": format!("d{i:04}"), "content": format!("doc {i}")})).collect();
    f.tools.batch_add(args(json!({"documents": docs, "generate_embeddings": false})), &Call::default()).await.unwrap();
    let out = f.tools.batch_export(args(json!({"path": "all.jsonl"})), &cancelling_call()).await;
    assert!(matches!(out, Err(ToolError::Cancelled)), "{out:?}");
    let left: Vec<_> = std::fs::read_dir(f.files.path()).unwrap().collect();
    assert!(left.is_empty(), "no file, not even a temporary one: {left:?}");

    f.tools.batch_export(args(json!({"path": "all.jsonl"})), &Call::default()).await.unwrap();
    delete_everything(f).await;
    let import = json!({"path": "all.jsonl", "generate_embeddings": false});
    let out = f.tools.batch_import(args(import), &cancelling_call()).await;
    assert!(matches!(out, Err(ToolError::Cancelled)), "{out:?}");
    let imported = f.store.count(None).await.unwrap();
    assert!(imported < 1_200, "stopped before the end: {imported}");
}

async fn chunked_export_writes_several_files_and_import_reads_the_folder(f: &Fixture) {
    f.tools
        .batch_add(args(json!({"documents": recipes(), "generate_embeddings": false})), &Call::default())
        .await
        .unwrap();
    let call = json!({"path": "parts/recipes.jsonl", "chunk_size": 3, "filter": "metadata.minutes >= 10"});
    let exported = f.tools.batch_export(args(call), &Call::default()).await.unwrap();
    let files: Vec<(&str, usize)> = exported.files.iter().map(|file| (file.path.as_str(), file.documents)).collect();
    assert_eq!(files, [("parts/recipes-00001.jsonl", 3), ("parts/recipes-00002.jsonl", 1)]);
    let again =
        f.tools.batch_export(args(json!({"path": "parts/recipes.jsonl", "chunk_size": 3})), &Call::default()).await;
    assert!(matches!(&again, Err(ToolError::File { reason, .. }) if reason.contains("overwrite")), "{again:?}");
    let before = snapshot(f).await;
    delete_everything(f).await;
    let call = json!({"path": "parts", "generate_embeddings": false});
    let imported = f.tools.batch_import(args(call), &Call::default()).await.unwrap();
    assert_eq!(imported.files, ["parts/recipes-00001.jsonl", "parts/recipes-00002.jsonl"]);
    assert_eq!(imported.processed, 4);
    assert_eq!(snapshot(f).await, before);
}

async fn import_maps_fields_and_checks_every_row_before_writing(f: &Fixture) {
    let csv = "title,body,ref,rating\nBread,Flour and water,bread,5\nShort row,only three,fields\nCake,Eggs and sugar,../cake,4\nSoup,Tomatoes,soup,3\n";
    std::fs::write(f.files.path().join("books.csv"), csv).unwrap();
    let mapping = json!({"body": "content", "ref": "id", "rating": "metadata.stars"});
    let strict = json!({"path": "books.csv", "mapping": mapping, "collection": "book", "generate_embeddings": false});
    let out = f.tools.batch_import(args(strict.clone()), &Call::default()).await.unwrap();
    assert!(out.aborted, "{out:?}");
    assert_eq!(out.error_count, 2);
    let items: Vec<&str> = out.errors.iter().map(|e| e.item.as_str()).collect();
    assert_eq!(items, ["books.csv: row 3", "books.csv: row 4"]);
    assert!(out.errors[1].reason.contains("id"), "{}", out.errors[1].reason);
    assert_eq!(f.store.count(None).await.unwrap(), 0, "over max_errors: nothing written");

    let mut tolerant = strict;
    tolerant["validation"] = json!({"max_errors": 2});
    let out = f.tools.batch_import(args(tolerant), &Call::default()).await.unwrap();
    assert_eq!((out.processed, out.error_count, out.aborted), (2, 2, false), "{out:?}");
    let bread = f.store.get(&EntityKey::new("book", "bread")).await.unwrap().unwrap();
    assert_eq!(bread.content, "Flour and water");
    assert_eq!(
        Value::Object(bread.metadata),
        json!({"title": "Bread", "stars": "5"}),
        "unmapped columns go to metadata"
    );

    std::fs::write(f.files.path().join("broken.json"), "[{\"content\": \"a\"}, 7, {\"content\": ").unwrap();
    let out = f
        .tools
        .batch_import(args(json!({"path": "broken.json", "validation": {"max_errors": 5}})), &Call::default())
        .await;
    assert!(
        matches!(&out, Err(ToolError::File { path, .. }) if path == "broken.json"),
        "a cut-off file is refused: {out:?}"
    );
    let bad_mapping = json!({"path": "books.csv", "mapping": {"body": "contents"}});
    let err = f.tools.batch_import(args(bad_mapping), &Call::default()).await.unwrap_err();
    assert!(matches!(&err, ToolError::Invalid(m) if m.contains("contents")), "{err}");
}

async fn file_paths_stay_inside_the_files_root(f: &Fixture) {
    for path in ["../outside.json", "/tmp/outside.json", "a/../../outside.csv"] {
        let err = f.tools.batch_export(args(json!({"path": path})), &Call::default()).await.unwrap_err();
        assert!(matches!(&err, ToolError::Invalid(m) if m.contains("outside the files root")), "{path}: {err}");
        let err = f.tools.batch_import(args(json!({"path": path})), &Call::default()).await.unwrap_err();
        assert!(matches!(&err, ToolError::Invalid(m) if m.contains("outside the files root")), "{path}: {err}");
    }
    let err = f.tools.batch_export(args(json!({"path": "notes.txt"})), &Call::default()).await.unwrap_err();
    assert!(matches!(&err, ToolError::Invalid(m) if m.contains("format")), "{err}");

    // A folder given by name may hold a link that leads out: it is refused, nothing is read.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.json");
    std::fs::write(&secret, r#"[{"id": "leak", "content": "secret"}]"#).unwrap();
    let data = f.files.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("fine.json"), r#"[{"id": "fine", "content": "ok"}]"#).unwrap();
    std::os::unix::fs::symlink(&secret, data.join("leak.json")).unwrap();
    let before = f.store.count(None).await.unwrap();
    let err = f.tools.batch_import(args(json!({"path": "data"})), &Call::default()).await.unwrap_err();
    assert!(matches!(&err, ToolError::Invalid(m) if m.contains("leak.json") && m.contains("outside")), "{err}");
    assert_eq!(f.store.count(None).await.unwrap(), before, "nothing imported");
}

fn notes() -> Value {
    json!([
        {"id": "sourdough", "content": "# Sourdough Basics\n\nA starter of flour and water ferments for days.\nFeed the starter daily.\n\n## Baking\nBake the sourdough hot."},
        {"id": "sponge", "content": "Sponge cake notes\n\nWhisk eggs and sugar until airy, then fold in flour.", "metadata": {"title": "Kept title"}},
        {"id": "stock", "content": "- a list first\n\nStock simmers bones and onion for hours; skim the stock often."},
    ])
}

async fn enhance_fills_what_is_missing_with_the_local_enhancer(f: &Fixture) {
    let add = json!({"documents": notes(), "collection": "note", "generate_embeddings": false});
    f.tools.batch_add(args(add), &Call::default()).await.unwrap();
    let out = f
        .tools
        .batch_enhance(args(json!({"filter": "entity_type = \"note\"", "batch_size": 2})), &Call::default())
        .await
        .unwrap();
    assert_eq!(
        (out.matched, out.updated.len(), out.errors.len(), out.enhancer.as_str()),
        (3, 3, 0, "local"),
        "{out:?}"
    );
    let sourdough = f.store.get(&EntityKey::new("note", "sourdough")).await.unwrap().unwrap().metadata;
    assert_eq!(sourdough["title"], "Sourdough Basics");
    assert_eq!(sourdough["context"], "A starter of flour and water ferments for days. Feed the starter daily.");
    let tags: Vec<&str> = sourdough["tags"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(tags[..2], ["sourdough", "starter"], "words frequent here and rare elsewhere lead: {tags:?}");
    assert_eq!(sourdough["enhanced_by"], "local");
    let sponge = f.store.get(&EntityKey::new("note", "sponge")).await.unwrap().unwrap().metadata;
    assert_eq!(sponge["title"], "Kept title", "a value already there is kept");
    let stock = f.store.get(&EntityKey::new("note", "stock")).await.unwrap().unwrap().metadata;
    assert_eq!(stock["context"], "Stock simmers bones and onion for hours; skim the stock often.");

    let again = f
        .tools
        .batch_enhance(
            args(json!({"document_ids": ["sourdough", "stock", "gone"], "collection": "note"})),
            &Call::default(),
        )
        .await
        .unwrap();
    assert_eq!((again.updated.len(), again.unchanged), (0, 2), "nothing missing, nothing asked of the enhancer");
    assert_eq!(again.errors[0].item, "gone");
    let titles = json!({"document_ids": ["sponge"], "collection": "note", "fields": ["title"], "overwrite": true});
    f.tools.batch_enhance(args(titles), &Call::default()).await.unwrap();
    let sponge = f.store.get(&EntityKey::new("note", "sponge")).await.unwrap().unwrap().metadata;
    assert_eq!(sponge["title"], "Sponge cake notes", "overwrite replaces");
}

/// An OpenAI-compatible chat endpoint on localhost that labels each
/// document it is sent, and answers for one too few when a document says
/// "SHORT"; records the batch sizes it saw.
async fn chat_server() -> (String, Arc<std::sync::Mutex<Vec<usize>>>) {
    let batches: Arc<std::sync::Mutex<Vec<usize>>> = Arc::default();
    let seen = batches.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            async move {
                let request: Value = serde_json::from_str(&body).unwrap();
                let user = request["messages"][1]["content"].as_str().unwrap();
                let documents: Vec<Value> = serde_json::from_str(user).unwrap();
                seen.lock().unwrap().push(documents.len());
                let mut answers: Vec<Value> = documents
                    .iter()
                    .map(|d| json!({"title": format!("Model title {}", d["index"]), "tags": ["model"], "context": "From the model."}))
                    .collect();
                if user.contains("SHORT") {
                    answers.pop();
                }
                let content = json!({"documents": answers}).to_string();
                let reply = json!({"choices": [{"message": {"role": "assistant", "content": content}}]});
                ([(axum::http::header::CONTENT_TYPE, "application/json")], reply.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, batches)
}

async fn enhance_asks_a_chat_model_in_batches(f: &Fixture) {
    let (url, batches) = chat_server().await;
    let chat = batch_tools::ChatEnhancer::new(&url, "test-model", "NO_SUCH_KEY_VARIABLE").unwrap();
    let tools = f.tools.clone().with_enhancer(Arc::new(chat));
    let mut docs = notes();
    docs.as_array_mut().unwrap().push(json!({"id": "short", "content": "SHORT answer expected"}));
    let add = json!({"documents": docs, "collection": "note", "generate_embeddings": false});
    tools.batch_add(args(add), &Call::default()).await.unwrap();
    let call = json!({"filter": "entity_type = \"note\"", "batch_size": 2, "fields": ["title", "context"]});
    let out = tools.batch_enhance(args(call), &Call::default()).await.unwrap();
    assert_eq!(out.enhancer, "chat:test-model");
    assert_eq!(*batches.lock().unwrap(), [2, 2], "batch_size documents per call");
    // The batch holding "short" (short, sourdough by id order) was answered for one too few: both fail, named.
    let failed: Vec<&str> = out.errors.iter().map(|e| e.item.as_str()).collect();
    assert_eq!(failed, ["short", "sourdough"], "{out:?}");
    assert!(out.errors[0].reason.contains("answered for 1"), "{}", out.errors[0].reason);
    let stock = f.store.get(&EntityKey::new("note", "stock")).await.unwrap().unwrap().metadata;
    assert_eq!((stock["title"].as_str(), stock["context"].as_str()), (Some("Model title 1"), Some("From the model.")));
    assert!(stock.get("tags").is_none(), "only the fields asked for");
    let sourdough = f.store.get(&EntityKey::new("note", "sourdough")).await.unwrap().unwrap().metadata;
    assert!(sourdough.get("title").is_none(), "a failed batch writes nothing");
}

/// A web server on localhost with pages of every kind `batch_extract` meets.
async fn web_server() -> String {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/page.html",
            get(|| async {
                ([(CONTENT_TYPE, "text/html")], "<title>Web Page</title><p>Hello from the <i>web</i>.</p>")
            }),
        )
        .route("/notes.txt", get(|| async { ([(CONTENT_TYPE, "text/plain; charset=utf-8")], "plain words") }))
        .route("/moved", get(|| async { axum::response::Redirect::temporary("/notes.txt") }))
        .route("/missing", get(|| async { (axum::http::StatusCode::NOT_FOUND, "gone") }))
        .route("/doc.pdf", get(|| async { ([(CONTENT_TYPE, "application/pdf")], "%PDF-1.4") }))
        .route("/huge", get(|| async { ([(CONTENT_TYPE, "text/plain")], "x".repeat(5_000)) }))
        .route(
            "/slow",
            get(|| async {
                // Never answers: only the client's timeout ends the wait.
                std::future::pending::<()>().await;
                ([(CONTENT_TYPE, "text/plain")], "never")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Without `allowing_private_urls`, every spelling of a loopback or private
/// address is refused before a connection is opened; with it, a redirect
/// is followed but the document keeps the id of the URL given.
async fn extract_refuses_private_addresses_before_connecting(f: &Fixture) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let urls: Vec<String> = ["127.0.0.1", "localhost", "2130706433", "127.1", "0.0.0.0", "[::1]", "[::ffff:127.0.0.1]"]
        .iter()
        .map(|host| format!("http://{host}:{port}/x.txt"))
        .collect();
    let call = json!({"urls": urls, "collection": "source", "timeout_secs": 2, "generate_embeddings": false});
    let out = f.tools.batch_extract(args(call), &Call::default()).await.unwrap();
    assert!(out.added.is_empty(), "{out:?}");
    assert_eq!(out.errors.len(), urls.len(), "{out:?}");
    for error in &out.errors {
        assert!(error.reason.contains("refused"), "{}: {}", error.item, error.reason);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0, "no connection was opened");

    let web = web_server().await;
    let tools = f.tools.clone().allowing_private_urls(true);
    let call = json!({"urls": [format!("{web}/moved")], "collection": "source", "generate_embeddings": false});
    let out = tools.batch_extract(args(call), &Call::default()).await.unwrap();
    let host = web.trim_start_matches("http://").replace(':', "_");
    let ids: Vec<&str> = out.added.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [format!("{host}/moved")], "the id is the URL given, not where it redirected: {out:?}");
}

async fn extract_reads_files_and_urls_within_limits(f: &Fixture) {
    let root = f.files.path();
    std::fs::create_dir_all(root.join("docs/deeper")).unwrap();
    std::fs::write(root.join("docs/guide.md"), "---\ntitle: The Guide\ntags: [a, b]\n---\n# Guide\nRead me.\n")
        .unwrap();
    std::fs::write(
        root.join("docs/deeper/page.html"),
        "<html><title>Deep</title><body><h2>Deep page</h2></body></html>",
    )
    .unwrap();
    std::fs::write(root.join("docs/.hidden.md"), "hidden").unwrap();
    std::fs::write(root.join("docs/image.png"), [0x89, b'P', b'N', b'G']).unwrap();
    std::fs::write(root.join("todo.txt"), "buy flour").unwrap();
    std::fs::write(root.join("big.txt"), "y".repeat(5_000)).unwrap();
    std::fs::write(root.join("binary.md"), [0xff, 0xfe, 0x00]).unwrap();
    let web = web_server().await;
    // The test's web server is on loopback: allowed here, refused by default (see the next test).
    let tools = f.tools.clone().allowing_private_urls(true);
    let call = json!({
        "files": ["docs", "todo.txt", "big.txt", "binary.md"],
        "urls": [format!("{web}/page.html"), format!("{web}/notes.txt"), format!("{web}/missing"),
                 format!("{web}/doc.pdf"), format!("{web}/huge"), format!("{web}/slow")],
        "collection": "source", "shared_metadata": {"project": "kitchen", "title": "shared loses"},
        "max_bytes": 4096, "timeout_secs": 1, "generate_embeddings": false,
    });
    let out = tools.batch_extract(args(call.clone()), &Call::default()).await.unwrap();
    let mut ids: Vec<&str> = out.added.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    let host = web.trim_start_matches("http://").replace(':', "_");
    let (page_id, notes_id) = (format!("{host}/page.html"), format!("{host}/notes.txt"));
    let mut expected = vec!["docs/deeper/page", "docs/guide", "todo", page_id.as_str(), notes_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{out:?}");
    let mut failed: Vec<(&str, &str)> = out.errors.iter().map(|e| (e.item.as_str(), e.reason.as_str())).collect();
    failed.sort_unstable();
    let reasons: Vec<String> = failed.iter().map(|(item, reason)| format!("{item}: {reason}")).collect();
    assert_eq!(failed.len(), 6, "{reasons:#?}");
    for (item, expected) in [
        ("big.txt", "max_bytes"),
        ("binary.md", "UTF-8"),
        ("/missing", "404"),
        ("/doc.pdf", "application/pdf"),
        ("/huge", "max_bytes"),
        ("/slow", "timed out"),
    ] {
        assert!(reasons.iter().any(|r| r.contains(item) && r.contains(expected)), "{item}: {expected} in {reasons:#?}");
    }
    let guide = f.store.get(&EntityKey::new("source", "docs/guide")).await.unwrap().unwrap();
    assert_eq!(guide.content, "# Guide\nRead me.\n");
    assert_eq!(guide.metadata["title"], "The Guide", "frontmatter is metadata, and wins over shared_metadata");
    assert_eq!(guide.metadata["project"], "kitchen");
    assert_eq!(guide.metadata["source"], "docs/guide.md");
    let page = f.store.get(&EntityKey::new("source", &page_id)).await.unwrap().unwrap();
    assert_eq!(page.metadata["title"], "Web Page");
    assert!(page.content.contains("Hello from the") && !page.content.contains("<p>"), "{}", page.content);

    let again = tools.batch_extract(args(call.clone()), &Call::default()).await.unwrap();
    assert_eq!((again.processed, again.unchanged), (0, 5), "extracting again changes nothing");
    let mut strict = call;
    strict["collection"] = json!("strict");
    strict["continue_on_error"] = json!(false);
    let out = tools.batch_extract(args(strict), &Call::default()).await.unwrap();
    assert!(out.processed == 0 && !out.errors.is_empty(), "{out:?}");
    assert_eq!(f.store.count(Some("strict")).await.unwrap(), 0, "one failure, nothing written");
    #[cfg(unix)]
    {
        let fifo = root.join("pipe.txt");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let out = tools.batch_extract(args(json!({"files": ["pipe.txt"]})), &Call::default()).await.unwrap();
        assert!(out.errors[0].reason.contains("not a regular file"), "a fifo is refused, not read forever: {out:?}");
    }
    let outside = tools.batch_extract(args(json!({"files": ["../etc"]})), &Call::default()).await.unwrap_err();
    assert!(matches!(&outside, ToolError::Invalid(m) if m.contains("outside the files root")), "{outside}");
    let scheme =
        tools.batch_extract(args(json!({"urls": ["file:///etc/passwd"]})), &Call::default()).await.unwrap_err();
    assert!(matches!(&scheme, ToolError::Invalid(m) if m.contains("http")), "{scheme}");
}

/// Every file `batch_export` writes has the mode any program's would: a
/// new one 0666 less the umask, a replaced one its own mode.
async fn exported_files_get_the_usual_mode(f: &Fixture) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    f.tools.batch_add(args(json!({"documents": recipes(), "collection": "recipe"})), &Call::default()).await.unwrap();
    let probe = f.files.path().join("probe");
    std::fs::File::create(&probe).unwrap();
    let usual = mode(&probe);
    for format in ["json", "parquet"] {
        let path = format!("modes/new.{format}");
        f.tools.batch_export(args(json!({"path": path})), &Call::default()).await.unwrap();
        assert_eq!(mode(&f.files.path().join(&path)), usual, "{format}: a new file");
        for kept in [0o664, 0o640] {
            std::fs::set_permissions(f.files.path().join(&path), std::fs::Permissions::from_mode(kept)).unwrap();
            f.tools.batch_export(args(json!({"path": path, "overwrite": true})), &Call::default()).await.unwrap();
            assert_eq!(mode(&f.files.path().join(&path)), kept, "{format}: a replaced file keeps its mode");
        }
    }
}

/// Files whose names differ only by extension each get a document of
/// their own, named with the extension; none is written over another.
async fn extract_gives_files_of_one_stem_distinct_ids(f: &Fixture) {
    let root = f.files.path();
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(root.join("a/notes.md"), "---\ntitle: md\n---\nfrom markdown\n").unwrap();
    std::fs::write(root.join("a/notes.txt"), "from text").unwrap();
    std::fs::write(root.join("a/notes.html"), "<html><body><p>from html</p></body></html>").unwrap();
    std::fs::write(root.join("a/other.md"), "alone").unwrap();
    let call = json!({"files": ["a"], "collection": "src", "generate_embeddings": false});
    let out = f.tools.batch_extract(args(call), &Call::default()).await.unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let mut ids: Vec<&str> = out.added.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a/notes.html", "a/notes.md", "a/notes.txt", "a/other"]);
    let md = f.store.get(&EntityKey::new("src", "a/notes.md")).await.unwrap().unwrap();
    assert_eq!(md.content, "from markdown\n");
    assert_eq!(md.frontmatter.as_deref(), Some("---\ntitle: md\n---\n"), "the file's own frontmatter text is kept");
    let txt = f.store.get(&EntityKey::new("src", "a/notes.txt")).await.unwrap().unwrap();
    assert_eq!(txt.content, "from text");
}

/// A call its client cancels once some work is done, at a deterministic point.
fn cancelling_call() -> Call {
    let cancel = CancellationToken::new();
    Call { progress: Arc::new(CancelAfterFirst(cancel.clone())), cancel }
}

fn many(count: usize) -> Value {
    let docs: Vec<Value> =
        (0..count).map(|i| json!({"id": format!("d{i:05}"), "content": format!("text {i}")})).collect();
    Value::Array(docs)
}

/// A cancellation stops every long tool at a chunk boundary: an atomic
/// call keeps nothing, another keeps what it wrote and names the rest, and
/// no embedding job is queued for a call its client gave up.
async fn cancellation_stops_long_calls_between_chunks(f: &Fixture) {
    const N: usize = 3000;
    let atomic = json!({"documents": many(N), "collection": "doc", "atomic": true});
    let refused = f.tools.batch_add(args(atomic), &cancelling_call()).await;
    assert!(matches!(refused, Err(ToolError::Cancelled)), "{refused:?}");
    assert_eq!(f.store.count(None).await.unwrap(), 0, "a cancelled atomic add writes nothing");

    let plain = json!({"documents": many(N), "collection": "part", "atomic": false});
    let added = f.tools.batch_add(args(plain), &cancelling_call()).await.unwrap();
    let written = f.store.count(Some("part")).await.unwrap() as usize;
    assert!(written > 0 && written < N, "stopped at a chunk boundary: {written} of {N}");
    assert_eq!(added.added.len(), written, "what is reported written is what was written");
    let cancelled = added.errors.iter().filter(|e| e.reason.contains("cancelled")).count();
    assert_eq!(written + cancelled, N, "every document is written or named as cancelled");
    assert!(added.embedding_jobs.is_empty(), "no embedding for a call its client gave up");
    assert!(f.queue.counts().await.unwrap().is_empty(), "nothing queued");

    let all = json!({"documents": many(N), "collection": "doc", "generate_embeddings": false});
    f.tools.batch_add(args(all), &Call::default()).await.unwrap();
    let filter = "entity_type = \"doc\"";
    let update = json!({"filter": filter, "metadata_updates": {"seen": true}, "max_documents": 10_000});
    let updated = f.tools.batch_update(args(update), &cancelling_call()).await.unwrap();
    let cancelled = updated.errors.iter().filter(|e| e.reason.contains("cancelled")).count();
    assert!(!updated.updated.is_empty() && cancelled > 0, "{} updated, {cancelled} cancelled", updated.updated.len());
    assert_eq!(updated.updated.len() + cancelled, N);
    let seen_filter = entity_store::Filter::parse("metadata.seen = true").unwrap();
    let seen = f.store.find_keys(&seen_filter, 10 * N).await.unwrap().len();
    assert_eq!(seen, updated.updated.len(), "what is reported updated is what was updated");
    assert!(updated.embedding_jobs.is_empty());

    let enhance = json!({"filter": filter, "batch_size": 100, "max_documents": 10_000, "fields": ["title"]});
    let out = f.tools.batch_enhance(args(enhance), &cancelling_call()).await;
    assert!(matches!(out, Err(ToolError::Cancelled)), "{out:?}");
    let enhanced_filter = entity_store::Filter::parse("metadata.enhanced_by exists").unwrap();
    let enhanced = f.store.find_keys(&enhanced_filter, 10 * N).await.unwrap().len();
    assert!(enhanced > 0 && enhanced < N, "enhancing stopped between batches: {enhanced} of {N}");

    std::fs::create_dir_all(f.files.path().join("many")).unwrap();
    for i in 0..200 {
        std::fs::write(f.files.path().join(format!("many/{i:03}.txt")), format!("text {i}")).unwrap();
    }
    let extract = json!({"files": ["many"], "collection": "extracted", "generate_embeddings": false});
    let out = f.tools.batch_extract(args(extract), &cancelling_call()).await;
    assert!(matches!(out, Err(ToolError::Cancelled)), "{out:?}");
    assert_eq!(f.store.count(Some("extracted")).await.unwrap(), 0, "an extract cancelled while reading writes nothing");

    let delete = json!({"filter": filter, "dry_run": false, "confirm_count": N, "max_documents": 10_000});
    let deleted = f.tools.batch_delete(args(delete), &cancelling_call()).await.unwrap();
    let left = f.store.count(Some("doc")).await.unwrap() as usize;
    assert!(deleted.deleted > 0 && left > 0, "{} deleted, {left} left", deleted.deleted);
    assert_eq!(deleted.deleted + left, N);
    assert_eq!(deleted.errors.iter().filter(|e| e.reason.contains("cancelled")).count(), left);
}

/// An export asked for vectors says why documents came without one.
async fn export_says_why_vectors_are_missing(f: &Fixture) {
    f.tools.batch_add(args(json!({"documents": recipes()})), &Call::default()).await.unwrap();
    let call = json!({"path": "fresh.jsonl", "include_embeddings": true});
    let out = f.tools.batch_export(args(call), &Call::default()).await.unwrap();
    assert_eq!(out.with_embeddings, 0, "the embedding jobs have not run");
    let note = out.note.expect("a note says why");
    assert!(note.contains(&format!("{} of {}", out.exported, out.exported)) && note.contains("queued"), "{note}");
    let plain = f.tools.batch_export(args(json!({"path": "plain.jsonl"})), &Call::default()).await.unwrap();
    assert_eq!(plain.note, None, "no vectors asked, nothing to say");
}

scratch_pg::backends!(
    Fixture;
    export_says_why_vectors_are_missing,
    cancellation_stops_long_calls_between_chunks,
    extract_gives_files_of_one_stem_distinct_ids,
    exported_files_get_the_usual_mode,
    add_then_search_many_queries_at_once,
    atomic_add_writes_nothing_when_one_document_is_bad,
    long_documents_are_split_into_parts,
    update_merges_metadata_applies_the_template_and_keeps_the_limit,
    delete_is_a_dry_run_until_the_count_is_confirmed,
    bad_arguments_are_refused_before_anything_runs,
    a_cancelled_search_stops_and_says_so,
    export_then_import_round_trips_every_format,
    chunked_export_writes_several_files_and_import_reads_the_folder,
    cancelled_export_and_import_leave_no_file_and_say_so,
    import_maps_fields_and_checks_every_row_before_writing,
    file_paths_stay_inside_the_files_root,
    enhance_fills_what_is_missing_with_the_local_enhancer,
    enhance_asks_a_chat_model_in_batches,
    extract_reads_files_and_urls_within_limits,
    extract_refuses_private_addresses_before_connecting,
);

/// The hashing embedder, except that it refuses any text with "poison" in it
/// (as a provider refuses a text it cannot take).
struct Picky(HashingEmbedder);

#[async_trait::async_trait]
impl embedding::Embedder for Picky {
    fn model_id(&self) -> &str {
        self.0.model_id()
    }
    fn dimensions(&self) -> usize {
        self.0.dimensions()
    }
    fn limits(&self) -> embedding::ProviderLimits {
        self.0.limits()
    }
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, embedding::EmbedError> {
        if texts.iter().any(|text| text.contains("poison")) {
            return Err(embedding::EmbedError::Provider("this text is refused".into()));
        }
        self.0.embed_batch(texts).await
    }
}

/// Vector queries of one call share one pass over the vectors; a query
/// that fails it fails alone, its neighbours are answered; a query that
/// matches nothing says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_vector_query_fails_alone() {
    let f = Fixture::sqlite().await;
    let search = Arc::new(Search {
        store: f.store.clone(),
        vectors: f.vectors.clone(),
        embedder: Some(Arc::new(Picky(HashingEmbedder::default()))),
    });
    let tools = BatchTools::new(search, f.queue.clone(), FilesRoot::new(f.files.path()).unwrap());
    let docs = json!({"documents": [{"id": "b", "content": "sourdough bread"}], "generate_embeddings": false});
    tools.batch_add(args(docs), &Call::default()).await.unwrap();
    let queries = json!({"queries": [
        {"query": "sourdough bread", "search_type": "text"},
        {"query": "poison pill", "search_type": "vector"},
        {"query": "bread", "search_type": "hybrid"},
        {"query": "sourdough", "search_type": "vector"},
        {"query": "zzzqqq", "search_type": "hybrid"},
    ]});
    let out = tools.batch_search(args(queries), &Call::default()).await.unwrap();
    let failed: Vec<&str> = out.errors.iter().map(|e| e.item.as_str()).collect();
    assert_eq!(failed, ["query 1"], "{:?}", out.errors);
    assert!(out.errors[0].reason.contains("refused"), "{:?}", out.errors);
    let answered: Vec<usize> = out.results.iter().map(|r| r.index).collect();
    assert_eq!(answered, [0, 2, 3, 4]);
    assert_eq!(out.results[1].hits.first().map(|h| h.id.as_str()), Some("b"), "hybrid still finds by text");
    assert_eq!(out.results[0].note, None);
    assert!(out.results[3].hits.is_empty(), "nonsense finds nothing: {:?}", out.results[3]);
    assert_eq!(out.results[3].note.as_deref(), Some("nothing matched \"zzzqqq\""), "and says so");
}

/// Without an embedding model every tool works on text alone: writes queue
/// no embedding jobs, a file's vectors are not kept, hybrid queries are
/// text queries, and what needs vectors says so instead of running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_tools_work_on_text_and_say_what_needs_vectors() {
    let f = Fixture::sqlite().await;
    let search = Arc::new(Search { store: f.store.clone(), vectors: f.vectors.clone(), embedder: None });
    let tools = BatchTools::new(search, f.queue.clone(), FilesRoot::new(f.files.path()).unwrap());
    let docs = json!({"documents": [{"id": "b", "content": "sourdough bread"}, {"id": "c", "content": "sponge cake"}]});
    let added = tools.batch_add(args(docs), &Call::default()).await.unwrap();
    assert_eq!(added.added.len(), 2);
    assert!(added.embedding_jobs.is_empty(), "{added:?}");
    assert_eq!(f.queue.unfinished(Some(embedding::EMBED_JOB)).await.unwrap(), 0);

    let queries = json!({"queries": [
        {"query": "sourdough", "search_type": "vector"},
        {"query": "sourdough", "search_type": "hybrid"},
        {"query": "cake"},
    ]});
    let out = tools.batch_search(args(queries), &Call::default()).await.unwrap();
    let failed: Vec<&str> = out.errors.iter().map(|e| e.item.as_str()).collect();
    assert_eq!(failed, ["query 0"], "{:?}", out.errors);
    assert!(out.errors[0].reason.contains("needs an embedding model"), "{:?}", out.errors);
    let found: Vec<&str> = out.results.iter().map(|r| r.hits[0].id.as_str()).collect();
    assert_eq!(found, ["b", "c"], "{:?}", out.results);

    let err = tools
        .batch_export(args(json!({"path": "all.jsonl", "include_embeddings": true})), &Call::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Invalid(_)) && err.to_string().contains("include_embeddings"), "{err}");
    assert!(!f.files.path().join("all.jsonl").exists(), "nothing half-written");

    // A file exported elsewhere with vectors: its text is imported, its vectors are not kept.
    // The hash is the one the content will have, so with this model here the vectors would be kept.
    let hash = entity_store::content_hash(&serde_json::Map::new(), "rye loaf", None);
    let vector = embedding::HashingEmbedder::default().embed("rye loaf");
    let record = json!({"collection": "note", "id": "d", "content": "rye loaf", "metadata": {},
        "embedding": {"model": "hashing-v1-384", "content_hash": hash, "chunks": [{"start": 0, "end": 8, "vector": vector}]}});
    std::fs::write(f.files.path().join("in.jsonl"), format!("{record}\n")).unwrap();
    let imported = tools.batch_import(args(json!({"path": "in.jsonl"})), &Call::default()).await.unwrap();
    assert_eq!((imported.processed, imported.vectors_kept), (1, 0), "{imported:?}");
    assert!(imported.embedding_jobs.is_empty(), "{imported:?}");
    let rye = json!({"queries": [{"query": "rye"}]});
    assert_eq!(tools.batch_search(args(rye), &Call::default()).await.unwrap().results[0].hits[0].id, "d");
    // The control: with the model, the same record's vectors are kept.
    std::fs::write(f.files.path().join("in.jsonl"), format!("{}\n", record.to_string().replace("\"d\"", "\"e\"")))
        .unwrap();
    let kept = f.tools.batch_import(args(json!({"path": "in.jsonl"})), &Call::default()).await.unwrap();
    assert_eq!((kept.processed, kept.vectors_kept), (1, 1), "{kept:?}");
}
