//! Batch tools over the entity store, for AI assistants and scripts: many
//! documents per call, each item with its own result, progress and
//! cancellation. These are the library side of the tools the
//! `directory-sync serve` MCP server publishes; their argument types carry
//! JSON Schemas ([`schemars`]) for that.
//!
//! Built so far: [`BatchTools::batch_search`], [`BatchTools::batch_add`],
//! [`BatchTools::batch_update`], [`BatchTools::batch_delete`],
//! [`BatchTools::batch_enhance`] (with an [`Enhancer`]),
//! [`BatchTools::batch_extract`], [`BatchTools::batch_export`] and
//! [`BatchTools::batch_import`]: all eight tools. File
//! paths are confined to a [`FilesRoot`].
//! A "collection" is an entity type; filters are the entity-store filter
//! language ([`entity_store::Filter`]), never SQL.
//!
//! ```no_run
//! # async fn demo(tools: batch_tools::BatchTools) -> Result<(), batch_tools::ToolError> {
//! use batch_tools::{Call, DeleteArgs};
//! let args: DeleteArgs = serde_json::from_value(serde_json::json!({
//!     "filter": "metadata.status = \"obsolete\"",
//! })).map_err(|e| batch_tools::ToolError::Invalid(e.to_string()))?;
//! let preview = tools.batch_delete(args, &Call::default()).await?; // dry run by default
//! println!("{} documents would be deleted", preview.matched);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod add;
pub mod background;
mod delete;
mod enhance;
mod export;
mod extract;
mod files;
mod formats;
mod import;
mod search;
mod select;
mod update;

use std::sync::Arc;

use batch_core::{CancellationToken, NoProgress, ProgressReporter};
use embedding::Search;
use entity_store::{EntityKey, EntityStore};
use job_queue::Queue;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use add::{AddArgs, AddDocument, AddOutput};
pub use delete::{DeleteArgs, DeleteOutput};
pub use enhance::{
    ChatEnhancer, Corpus, EnhanceArgs, EnhanceError, EnhanceField, EnhanceInput, EnhanceOutput, Enhancement, Enhancer,
    LocalEnhancer,
};
pub use export::{ExportArgs, ExportOutput, ExportedFile};
pub use extract::{ExtractArgs, ExtractOutput};
pub use files::FilesRoot;
pub use formats::{Format, RecordChunk, RecordEmbedding};
pub use import::{ImportArgs, ImportOutput, Validation};
pub use search::{Hit, QueryResults, SearchArgs, SearchOutput, SearchQuery, SearchType};
pub use update::{UpdateArgs, UpdateOutput};

/// Most documents one call may add; more is several calls.
pub const MAX_DOCUMENTS_PER_CALL: usize = 10_000;
/// Most queries one `batch_search` call may hold.
pub const MAX_QUERIES_PER_CALL: usize = 1_000;

/// Why a call as a whole failed (bad arguments, an unreachable database).
/// Problems with single items are in the output's `errors` instead.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments are wrong; nothing was done.
    #[error("invalid arguments: {0}")]
    Invalid(String),
    /// The entity store failed.
    #[error(transparent)]
    Store(#[from] entity_store::StoreError),
    /// The job queue failed.
    #[error(transparent)]
    Queue(#[from] job_queue::QueueError),
    /// Search or embedding failed.
    #[error(transparent)]
    Search(#[from] embedding::SearchError),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file, relative to the files root.
        path: String,
        /// Why, naming the cause.
        reason: String,
    },
    /// The call was cancelled before it finished.
    #[error("cancelled")]
    Cancelled,
}

/// A document's address: its collection (entity type) and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct DocumentRef {
    /// Its collection (entity type).
    pub collection: String,
    /// Its id.
    pub id: String,
}

impl From<EntityKey> for DocumentRef {
    fn from(key: EntityKey) -> Self {
        Self { collection: key.entity_type, id: key.id }
    }
}

/// An item that was not done, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ItemError {
    /// The item: a document id, or `query N` / `document N` by position.
    pub item: String,
    /// Why, naming the cause.
    pub reason: String,
}

/// Progress and cancellation for one call.
#[derive(Clone)]
pub struct Call {
    /// Told as the call advances.
    pub progress: Arc<dyn ProgressReporter>,
    /// Stops the call at its next chunk.
    pub cancel: CancellationToken,
}

impl Default for Call {
    fn default() -> Self {
        Self { progress: Arc::new(NoProgress), cancel: CancellationToken::new() }
    }
}

/// The tools, over one store, its search and its job queue (for embedding jobs).
#[derive(Clone)]
pub struct BatchTools {
    store: Arc<dyn EntityStore>,
    search: Arc<Search>,
    queue: Queue,
    files: FilesRoot,
    enhancer: Arc<dyn Enhancer>,
    /// `batch_extract` may fetch loopback, private and link-local addresses.
    private_urls: bool,
}

impl BatchTools {
    /// File paths (export, import, extract) are relative to `files`, and stay in it.
    pub fn new(search: Arc<Search>, queue: Queue, files: FilesRoot) -> Self {
        Self {
            store: search.store.clone(),
            search,
            queue,
            files,
            enhancer: enhance::default_enhancer(),
            private_urls: false,
        }
    }

    /// Lets `batch_extract` fetch loopback, private and link-local
    /// addresses (refused by default: see `extract`'s URL policy).
    #[must_use]
    pub fn allowing_private_urls(mut self, allow: bool) -> Self {
        self.private_urls = allow;
        self
    }

    /// `batch_enhance` uses `enhancer` instead of the [`LocalEnhancer`].
    #[must_use]
    pub fn with_enhancer(mut self, enhancer: Arc<dyn Enhancer>) -> Self {
        self.enhancer = enhancer;
        self
    }

    /// Upserts new documents and says, in the order given, which were
    /// written (with the content hash to embed them at), how many were
    /// already as given, and which the store refused.
    /// Writes `entities`, stopping at a chunk boundary when the call is
    /// cancelled: an atomic write then keeps nothing and is the error
    /// `Cancelled`; otherwise what was written is reported, and the rest is
    /// in `cancelled`.
    async fn write(
        &self,
        entities: Vec<entity_store::NewEntity>,
        options: &entity_store::UpsertOptions,
        call: &Call,
    ) -> Result<WriteOutcome, ToolError> {
        let position: std::collections::HashMap<EntityKey, usize> =
            entities.iter().enumerate().map(|(index, entity)| (entity.key(), index)).collect();
        let options = entity_store::UpsertOptions { cancel: Some(call.cancel.clone()), ..options.clone() };
        let mut report = self.store.batch_upsert(entities, &options).await?;
        if options.atomic && !report.cancelled.is_empty() {
            return Err(ToolError::Cancelled);
        }
        // Chunks may finish in any order; callers list what was written as they gave it.
        report.succeeded.sort_by_key(|done| position.get(&done.key).copied());
        let total = report.succeeded.len();
        let written: Vec<embedding::EmbedItem> = report
            .succeeded
            .into_iter()
            .filter(|done| done.outcome.status != entity_store::UpsertStatus::Unchanged)
            .map(|done| embedding::EmbedItem { key: done.key, content_hash: done.outcome.content_hash })
            .collect();
        let unchanged = total - written.len();
        let mut failed = report.failed;
        failed.extend(report.cancelled.into_iter().map(cancelled_item));
        Ok(WriteOutcome { written, unchanged, failed, rolled_back: !report.rolled_back.is_empty() })
    }

    /// Queues embedding jobs for these entities (key and content hash);
    /// returns the job ids. None for a cancelled call: its client gave up
    /// the work (the `embed_stale` reconciler embeds what was written).
    /// None without an embedding model: nothing keeps vectors then.
    async fn queue_embeddings(&self, items: Vec<embedding::EmbedItem>, call: &Call) -> Result<Vec<String>, ToolError> {
        if items.is_empty() || call.cancel.is_cancelled() || self.search.embedder.is_none() {
            return Ok(Vec::new());
        }
        let jobs = embedding::embed_jobs(&items, EMBED_BATCH, "batch-tools");
        let ids = self.queue.enqueue_many(jobs).await?;
        Ok(ids.iter().map(ToString::to_string).collect())
    }
}

/// What [`BatchTools::write`] did.
/// An item a cancelled call did not get to.
fn cancelled_item<K>(key: K) -> batch_core::Failure<K> {
    batch_core::Failure { key, reason: "cancelled before it was written".into() }
}

struct WriteOutcome {
    /// Created or updated, in the order given: what to embed.
    written: Vec<embedding::EmbedItem>,
    /// Already stored exactly as given.
    unchanged: usize,
    failed: Vec<batch_core::Failure<EntityKey>>,
    /// An atomic write that wrote nothing because of `failed`.
    rolled_back: bool,
}

/// The tools by name, with what they do: the names MCP clients and the CLI use.
pub const TOOLS: &[(&str, &str)] = &[
    (
        "batch_search",
        "Run many searches (vector, text or hybrid; with filters) in one call. Scores: vector = cosine similarity in [-1, 1] (hits under the model's similarity floor dropped); text = relevance relative to the best hit, in [0, 1]; hybrid = reciprocal-rank fusion, sum of 1/(60 + rank) (at most ~0.033). A query that matches nothing says so in its `note`. Words of Chinese, Japanese, Korean and Thai are found inside unspaced text.",
    ),
    ("batch_add", "Add many documents in one call: all or nothing by default, long ones split, embedding queued."),
    (
        "batch_update",
        "Merge metadata into, or rewrite with a template, the documents a filter or id list selects (max_documents).",
    ),
    (
        "batch_delete",
        "Delete what a filter or id list selects: a dry run by default; confirm_count must equal the match count.",
    ),
    (
        "batch_enhance",
        "Fill title, tags and context (summary) of the documents a filter or id list selects, batch_size per model call.",
    ),
    (
        "batch_extract",
        "Add documents from files (markdown, text, HTML) and URLs, with shared metadata; ids come from the sources.",
    ),
    (
        "batch_export",
        "Export the documents a filter selects to json, jsonl, csv or parquet files (chunk_size documents per file).",
    ),
    (
        "batch_import",
        "Import documents from json, jsonl, csv or parquet files, with a field mapping; checked before anything is written.",
    ),
];

/// The JSON Schema (2020-12) of a tool's arguments (`None` for an unknown
/// tool), portable to strict tool-calling dialects: no `format` on
/// integers (`uint64` is not a JSON Schema format), and an optional field
/// is simply not required rather than typed `[X, "null"]`.
pub fn input_schema(tool: &str) -> Option<schemars::Schema> {
    derived_schema(tool).map(portable_schema)
}

/// `schema` made portable to strict tool-calling dialects, as
/// [`input_schema`] does for the batch tools' (for other tools' schemas).
pub fn portable_schema(mut schema: schemars::Schema) -> schemars::Schema {
    if let Some(object) = schema.as_object_mut() {
        object.values_mut().for_each(portable);
    }
    schema
}

fn portable(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("format").and_then(|f| f.as_str()).is_some_and(|f| f.starts_with("int") || f.starts_with("uint"))
            {
                map.shift_remove("format");
            }
            if let Some(serde_json::Value::Array(types)) = map.get("type")
                && types.len() == 2
                && types.iter().any(|t| t == "null")
            {
                let single = types.iter().find(|t| *t != "null").cloned().unwrap_or_default();
                map.insert("type".into(), single);
            }
            // An optional field's `default: null` no longer fits its type.
            if map.get("default").is_some_and(serde_json::Value::is_null)
                && map.get("type").is_some_and(|t| t != "null")
            {
                map.shift_remove("default");
            }
            // `Option<Struct>`: `anyOf: [{$ref}, {type: null}]` becomes the reference alone.
            if let Some(serde_json::Value::Array(options)) = map.get("anyOf")
                && options.len() == 2
                && options.iter().any(|o| o.get("type").is_some_and(|t| t == "null"))
                && let Some(only) = options.iter().find(|o| o.get("type").is_none_or(|t| t != "null")).cloned()
            {
                map.shift_remove("anyOf");
                if let serde_json::Value::Object(only) = only {
                    map.extend(only);
                }
            }
            map.values_mut().for_each(portable);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(portable),
        _ => {}
    }
}

fn derived_schema(tool: &str) -> Option<schemars::Schema> {
    Some(match tool {
        "batch_search" => schemars::schema_for!(SearchArgs),
        "batch_add" => schemars::schema_for!(AddArgs),
        "batch_update" => schemars::schema_for!(UpdateArgs),
        "batch_delete" => schemars::schema_for!(DeleteArgs),
        "batch_enhance" => schemars::schema_for!(EnhanceArgs),
        "batch_extract" => schemars::schema_for!(ExtractArgs),
        "batch_export" => schemars::schema_for!(ExportArgs),
        "batch_import" => schemars::schema_for!(ImportArgs),
        _ => return None,
    })
}

/// A tool call with its arguments parsed: what [`BatchTools::call`] runs,
/// and what a background call is checked as before it is queued.
#[derive(Debug, Clone)]
pub enum ToolCall {
    /// `batch_search`
    Search(SearchArgs),
    /// `batch_add`
    Add(AddArgs),
    /// `batch_update`
    Update(UpdateArgs),
    /// `batch_delete`
    Delete(DeleteArgs),
    /// `batch_enhance`
    Enhance(EnhanceArgs),
    /// `batch_extract`
    Extract(ExtractArgs),
    /// `batch_export`
    Export(ExportArgs),
    /// `batch_import`
    Import(ImportArgs),
}

impl ToolCall {
    /// Tool `name` with JSON `arguments`; an unknown tool or arguments that
    /// do not fit its schema are [`ToolError::Invalid`].
    pub fn parse(name: &str, arguments: serde_json::Value) -> Result<Self, ToolError> {
        fn parse<T: serde::de::DeserializeOwned>(tool: &str, arguments: serde_json::Value) -> Result<T, ToolError> {
            serde_json::from_value(arguments).map_err(|err| invalid(format!("{tool}: {err}")))
        }
        Ok(match name {
            "batch_search" => Self::Search(parse(name, arguments)?),
            "batch_add" => Self::Add(parse(name, arguments)?),
            "batch_update" => Self::Update(parse(name, arguments)?),
            "batch_delete" => Self::Delete(parse(name, arguments)?),
            "batch_enhance" => Self::Enhance(parse(name, arguments)?),
            "batch_extract" => Self::Extract(parse(name, arguments)?),
            "batch_export" => Self::Export(parse(name, arguments)?),
            "batch_import" => Self::Import(parse(name, arguments)?),
            other => {
                let known: Vec<&str> = TOOLS.iter().map(|(name, _)| *name).collect();
                return Err(invalid(format!("unknown tool `{other}`; the tools are {}", known.join(", "))));
            }
        })
    }

    /// What can be checked of the call before it runs, without the store:
    /// the same refusals the tool itself gives first.
    pub fn check(&self) -> Result<(), ToolError> {
        match self {
            Self::Search(args) => args.check(),
            Self::Add(args) => args.check(),
            Self::Update(args) => args.check(),
            Self::Delete(args) => args.selection.check(args.max_documents),
            Self::Enhance(args) => args.check(),
            Self::Extract(args) => args.check(),
            Self::Export(args) => args.check(),
            Self::Import(args) => args.check(),
        }
    }

    /// True when a cancelled call leaves the store as it found it: it
    /// writes nothing (a search, a dry run) or writes in one transaction
    /// that a cancel rolls back (`batch_add` with `atomic`, `batch_extract`
    /// without `continue_on_error`). The others keep what they wrote
    /// before the chunk where they stopped.
    pub fn cancel_writes_nothing(&self) -> bool {
        match self {
            Self::Search(_) => true,
            Self::Add(args) => args.atomic,
            Self::Delete(args) => args.dry_run,
            Self::Extract(args) => !args.continue_on_error,
            Self::Update(_) | Self::Enhance(_) | Self::Export(_) | Self::Import(_) => false,
        }
    }
}

impl BatchTools {
    /// Runs tool `name` on JSON `arguments` and returns its output as JSON;
    /// an unknown tool or arguments that do not fit its schema are
    /// [`ToolError::Invalid`].
    pub async fn call(
        &self,
        name: &str,
        arguments: serde_json::Value,
        call: &Call,
    ) -> Result<serde_json::Value, ToolError> {
        self.run(ToolCall::parse(name, arguments)?, call).await
    }

    /// [`ToolCall::check`], and the call's paths confined to these tools'
    /// files root: a call to be run later is refused now where it would
    /// be refused then.
    pub fn check(&self, tool: &ToolCall) -> Result<(), ToolError> {
        tool.check()?;
        match tool {
            ToolCall::Export(args) => self.files.resolve(&args.path).map(drop),
            ToolCall::Import(args) => self.files.resolve(&args.path).map(drop),
            ToolCall::Extract(args) => args.files.iter().try_for_each(|file| self.files.resolve(file).map(drop)),
            _ => Ok(()),
        }
    }

    /// Runs a parsed call; its output as JSON.
    pub async fn run(&self, tool: ToolCall, call: &Call) -> Result<serde_json::Value, ToolError> {
        fn json<T: Serialize>(output: T) -> serde_json::Value {
            serde_json::to_value(output).unwrap_or(serde_json::Value::Null)
        }
        Ok(match tool {
            ToolCall::Search(args) => json(self.batch_search(args, call).await?),
            ToolCall::Add(args) => json(self.batch_add(args, call).await?),
            ToolCall::Update(args) => json(self.batch_update(args, call).await?),
            ToolCall::Delete(args) => json(self.batch_delete(args, call).await?),
            ToolCall::Enhance(args) => json(self.batch_enhance(args, call).await?),
            ToolCall::Extract(args) => json(self.batch_extract(args, call).await?),
            ToolCall::Export(args) => json(self.batch_export(args, call).await?),
            ToolCall::Import(args) => json(self.batch_import(args, call).await?),
        })
    }
}

/// Entities per embedding job.
const EMBED_BATCH: usize = 200;

/// Serde default for flags that are on unless turned off.
fn yes() -> bool {
    true
}

/// Serde default for `max_documents`.
fn default_max_documents() -> usize {
    1000
}

fn invalid(reason: impl Into<String>) -> ToolError {
    ToolError::Invalid(reason.into())
}

#[cfg(test)]
mod schema_tests {
    use serde_json::Value;

    use super::{TOOLS, input_schema};

    fn walk<'a>(value: &'a Value, path: &str, visit: &mut dyn FnMut(&str, &'a serde_json::Map<String, Value>)) {
        match value {
            Value::Object(map) => {
                visit(path, map);
                for (key, child) in map {
                    walk(child, &format!("{path}/{key}"), visit);
                }
            }
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, item)| walk(item, &format!("{path}/{i}"), visit));
            }
            _ => {}
        }
    }

    #[test]
    fn every_schema_is_portable_to_strict_dialects() {
        for (tool, _) in TOOLS {
            let schema = Value::from(input_schema(tool).unwrap());
            walk(&schema, tool, &mut |path, map| {
                assert!(!map.get("format").is_some_and(|f| f.as_str().is_some_and(|f| f.contains("int"))), "{path}");
                assert!(!map.get("type").is_some_and(Value::is_array), "{path}: a type union");
                let typed = map.get("type").is_some_and(|t| t != "null");
                assert!(!(typed && map.get("default").is_some_and(Value::is_null)), "{path}: a null default");
                let null_option = |o: &Value| o.get("type").is_some_and(|t| t == "null");
                assert!(
                    !map.get("anyOf").and_then(Value::as_array).is_some_and(|o| o.iter().any(null_option)),
                    "{path}"
                );
            });
        }
    }

    #[test]
    fn every_limit_is_in_the_schema() {
        let at = |tool: &str, pointer: &str| Value::from(input_schema(tool).unwrap()).pointer(pointer).cloned();
        let cases = [
            ("batch_add", "/properties/documents/maxItems", Value::from(10_000)),
            ("batch_add", "/properties/collection/pattern", Value::from("^[a-z0-9-]{1,64}$")),
            ("batch_search", "/properties/queries/maxItems", Value::from(1_000)),
            ("batch_search", "/properties/max_parallel/maximum", Value::from(32)),
            ("batch_search", "/$defs/SearchQuery/properties/limit/maximum", Value::from(100)),
            ("batch_update", "/properties/max_documents/maximum", Value::from(10_000)),
            ("batch_update", "/properties/document_ids/maxItems", Value::from(10_000)),
            ("batch_delete", "/properties/max_documents/maximum", Value::from(10_000)),
            ("batch_enhance", "/properties/batch_size/maximum", Value::from(1_000)),
            ("batch_extract", "/properties/urls/maxItems", Value::from(10_000)),
        ];
        for (tool, pointer, expected) in cases {
            assert_eq!(at(tool, pointer), Some(expected), "{tool}{pointer}");
        }
    }
}
