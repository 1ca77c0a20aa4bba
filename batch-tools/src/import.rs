//! `batch_import`: documents from files in the four export formats, with a
//! field mapping. Two passes over the files: the first checks every row
//! and writes nothing, so a file with more bad rows than
//! `validation.max_errors` leaves the store untouched; the second streams
//! the good rows into the store a page at a time. Vectors in the file are
//! kept when they were made by the current model for the same content;
//! the rest is queued for embedding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use batch_core::ProgressTracker;
use embedding::{ChunkVector, EntityVectors};
use entity_store::{NewEntity, UpsertOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::export::file_error;
use crate::formats::{self, Format, Record, RecordEmbedding};
use crate::{BatchTools, Call, DocumentRef, ItemError, ToolError, invalid};

/// Documents written per round trip.
const PAGE: usize = 500;
/// Most errors listed in an output; the count goes on.
const ERRORS_SHOWN: usize = 1_000;

/// Arguments of `batch_import`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportArgs {
    /// A file, or a folder whose files of `format` are read in name order;
    /// relative to the server's files root.
    pub path: String,
    /// Default: from each file's extension.
    #[serde(default)]
    pub format: Option<Format>,
    /// Collection (entity type) of rows that name none (default `document`).
    #[serde(default)]
    #[schemars(pattern(r"^[a-z0-9-]{1,64}$"))]
    pub collection: Option<String>,
    /// Source field -> target: `id`, `content`, `collection`, `metadata`,
    /// `embedding`, `metadata.NAME`, or `""` to drop the field. Unmapped
    /// fields keep their names; names that are no document field go into
    /// metadata.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// How many bad rows to tolerate.
    #[serde(default)]
    pub validation: Validation,
    /// Queue embedding for imported documents the file has no usable vectors for (default true).
    #[serde(default = "crate::yes")]
    pub generate_embeddings: bool,
}

/// Tolerance of bad rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// Bad rows tolerated (skipped and reported); with more, nothing is
    /// imported (default 0).
    #[serde(default)]
    pub max_errors: usize,
}

/// What `batch_import` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImportOutput {
    /// Documents written (created or updated).
    pub processed: usize,
    /// Rows identical to what is stored.
    pub unchanged: usize,
    /// Bad rows (`file: row N`) and documents the store refused.
    pub errors: Vec<ItemError>,
    /// All errors, also those beyond the ones listed.
    pub error_count: usize,
    /// True when the errors exceeded `validation.max_errors` and nothing was written.
    pub aborted: bool,
    /// Documents whose vectors came from the file.
    pub vectors_kept: usize,
    /// Ids of the embedding jobs queued.
    pub embedding_jobs: Vec<String>,
    /// Files read, relative to the files root.
    pub files: Vec<String>,
}

/// The fields a row's value can go to.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Collection,
    Id,
    Content,
    Metadata,
    Embedding,
    MetadataKey(String),
    Drop,
}

impl Target {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "collection" => Target::Collection,
            "id" => Target::Id,
            "content" => Target::Content,
            "metadata" => Target::Metadata,
            "embedding" => Target::Embedding,
            "" => Target::Drop,
            other => match other.strip_prefix("metadata.") {
                Some(key) if !key.is_empty() => Target::MetadataKey(key.to_owned()),
                _ => {
                    return Err(format!(
                        "mapping target {other:?}: use id, content, collection, metadata, embedding, metadata.NAME or \"\""
                    ));
                }
            },
        })
    }

    /// Where a field named `name` goes when the mapping does not say.
    fn by_name(name: &str) -> Self {
        Target::parse(name).ok().filter(|t| *t != Target::Drop).unwrap_or_else(|| Target::MetadataKey(name.to_owned()))
    }
}

/// Turns rows into records.
#[derive(Clone)]
struct Mapper {
    mapping: BTreeMap<String, Target>,
    collection: String,
}

impl Mapper {
    fn record(&self, fields: Map<String, Value>) -> Result<Record, String> {
        let mut record = Record {
            collection: self.collection.clone(),
            id: String::new(),
            content: String::new(),
            metadata: Map::new(),
            embedding: None,
        };
        let mut content = None;
        let mut metadata_keys = Map::new();
        for (name, value) in fields {
            let target = self.mapping.get(&name).cloned().unwrap_or_else(|| Target::by_name(&name));
            match target {
                Target::Collection => record.collection = text(&name, value)?,
                Target::Id => record.id = text(&name, value)?,
                Target::Content => content = Some(text(&name, value)?),
                Target::Metadata => record.metadata = metadata(&name, value)?,
                Target::Embedding => record.embedding = embedding(&name, value)?,
                Target::MetadataKey(key) => {
                    metadata_keys.insert(key, value);
                }
                Target::Drop => {}
            }
        }
        record.content = content.ok_or("no content field (map one to `content`)")?;
        record.metadata.extend(metadata_keys);
        entity_store::validate_entity_type(&record.collection).map_err(|err| format!("collection: {err}"))?;
        if record.id.is_empty() {
            record.id = uuid::Uuid::now_v7().to_string();
        }
        entity_store::validate_id(&record.id).map_err(|err| format!("id: {err}"))?;
        Ok(record)
    }
}

fn text(name: &str, value: Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(format!("{name}: expected text, got {other}")),
    }
}

/// A metadata object, or its JSON text (CSV, Parquet); empty text is none.
fn metadata(name: &str, value: Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        Value::String(text) if text.trim().is_empty() => Ok(Map::new()),
        Value::String(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(format!("{name}: the JSON is not an object")),
            Err(err) => Err(format!("{name}: not JSON: {err}")),
        },
        other => Err(format!("{name}: expected an object, got {other}")),
    }
}

fn embedding(name: &str, value: Value) -> Result<Option<RecordEmbedding>, String> {
    let value = match value {
        Value::Null => return Ok(None),
        Value::String(text) if text.trim().is_empty() => return Ok(None),
        Value::String(text) => serde_json::from_str(&text).map_err(|err| format!("{name}: not JSON: {err}"))?,
        other => other,
    };
    serde_json::from_value(value).map(Some).map_err(|err| format!("{name}: {err}"))
}

/// A file to read and its format.
#[derive(Clone)]
struct Source {
    path: PathBuf,
    shown: String,
    format: Format,
}

impl ImportArgs {
    /// What can be checked without the files: the mapping and the collection.
    pub fn check(&self) -> Result<(), ToolError> {
        for target in self.mapping.values() {
            Target::parse(target).map_err(invalid)?;
        }
        let collection = self.collection.as_deref().unwrap_or(crate::add::DEFAULT_COLLECTION);
        entity_store::validate_entity_type(collection).map_err(|err| invalid(format!("collection: {err}")))
    }
}

impl BatchTools {
    /// Reads records from files into documents.
    pub async fn batch_import(&self, args: ImportArgs, call: &Call) -> Result<ImportOutput, ToolError> {
        args.check()?;
        let mut mapping = BTreeMap::new();
        for (source, target) in &args.mapping {
            mapping.insert(source.clone(), Target::parse(target).map_err(invalid)?);
        }
        let collection = args.collection.clone().unwrap_or_else(|| crate::add::DEFAULT_COLLECTION.to_owned());
        entity_store::validate_entity_type(&collection).map_err(|err| invalid(format!("collection: {err}")))?;
        let mapper = Mapper { mapping, collection };
        let sources = self.sources(&args)?;
        let mut output = ImportOutput {
            processed: 0,
            unchanged: 0,
            errors: Vec::new(),
            error_count: 0,
            aborted: false,
            vectors_kept: 0,
            embedding_jobs: Vec::new(),
            files: sources.iter().map(|s| s.shown.clone()).collect(),
        };
        let tracker = ProgressTracker::new(0, call.progress.clone());
        tracker.set_message("checking");
        let (good, bad) = check(&sources, &mapper, args.validation.max_errors).await?;
        output.error_count = bad.len();
        output.errors = bad.into_iter().take(ERRORS_SHOWN).collect();
        if output.error_count > args.validation.max_errors {
            output.aborted = true;
            return Ok(output);
        }
        tracker.set_total(good as u64);
        tracker.set_message("importing");
        let (pages, mut receiver) = tokio::sync::mpsc::channel::<Vec<Record>>(2);
        let reader = tokio::task::spawn_blocking(move || send_pages(&sources, &mapper, &pages));
        while let Some(page) = receiver.recv().await {
            if call.cancel.is_cancelled() {
                return Err(ToolError::Cancelled);
            }
            let done = page.len() as u64;
            self.import_page(page, args.generate_embeddings, &mut output, call).await?;
            tracker.advance(done, 0);
        }
        reader.await.map_err(|err| invalid(err.to_string()))??;
        tracker.finish();
        Ok(output)
    }

    /// The files `args.path` names, each with its format.
    fn sources(&self, args: &ImportArgs) -> Result<Vec<Source>, ToolError> {
        let path = self.files.resolve(&args.path)?;
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|err| file_error(&args.path, &err))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|file| file.is_file() && !is_hidden(file))
                .filter(|file| match args.format {
                    Some(format) => Format::of_path(file) == Some(format),
                    None => Format::of_path(file).is_some(),
                })
                .collect();
            files.sort();
            if let Some(outside) = files.iter().find(|file| !self.files.contains(file)) {
                return Err(invalid(format!(
                    "{:?} in folder {:?} is a link that leads outside the files root; refused",
                    self.files.relative(outside),
                    args.path
                )));
            }
            files
        } else if path.is_file() {
            vec![path]
        } else {
            return Err(invalid(format!("path {:?}: no such file or folder", args.path)));
        };
        if files.is_empty() {
            return Err(invalid(format!("folder {:?} holds no json, jsonl, csv or parquet file", args.path)));
        }
        files
            .into_iter()
            .map(|path| {
                let shown = self.files.relative(&path);
                let format = args.format.or_else(|| Format::of_path(&path)).ok_or_else(|| {
                    invalid(format!("cannot tell the format of {shown:?}: give `format` (json, jsonl, csv, parquet)"))
                })?;
                Ok(Source { path, shown, format })
            })
            .collect()
    }

    async fn import_page(
        &self,
        page: Vec<Record>,
        embed: bool,
        output: &mut ImportOutput,
        call: &Call,
    ) -> Result<(), ToolError> {
        // Without a model here, a file's vectors have no model to match.
        let model = self.search.embedder.as_ref().map(|embedder| embedder.model_id());
        let mut from_file = std::collections::HashMap::new();
        let mut entities = Vec::with_capacity(page.len());
        for record in page {
            let entity = NewEntity::new(&record.collection, &record.id, record.content)
                .with_metadata(Value::Object(record.metadata));
            if let Some(stored) = record.embedding.filter(|e| Some(e.model.as_str()) == model) {
                from_file.insert(entity.key(), stored);
            }
            entities.push(entity);
        }
        let written = self.write(entities, &UpsertOptions::default(), call).await?;
        output.processed += written.written.len();
        output.unchanged += written.unchanged;
        for failure in written.failed {
            output.error_count += 1;
            if output.errors.len() < ERRORS_SHOWN {
                let item = DocumentRef::from(failure.key);
                output
                    .errors
                    .push(ItemError { item: format!("{}/{}", item.collection, item.id), reason: failure.reason });
            }
        }
        // A file's vectors are kept when they are this model's, for exactly the content written.
        let (vectors, to_embed): (Vec<_>, Vec<_>) = written
            .written
            .into_iter()
            .partition(|item| from_file.get(&item.key).is_some_and(|stored| stored.content_hash == item.content_hash));
        let vectors: Vec<EntityVectors> = vectors
            .into_iter()
            .filter_map(|item| {
                let stored = from_file.remove(&item.key)?;
                let chunks = stored
                    .chunks
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| ChunkVector { chunk: i as u32, span: c.start..c.end, vector: c.vector })
                    .collect();
                Some(EntityVectors { key: item.key, content_hash: item.content_hash, text_hash: None, chunks })
            })
            .collect();
        if let (Some(model), false) = (model, vectors.is_empty()) {
            self.search.vectors.replace(model, &vectors).await.map_err(embedding::SearchError::Vectors)?;
            output.vectors_kept += vectors.len();
        }
        if embed {
            output.embedding_jobs.extend(self.queue_embeddings(to_embed, call).await?);
        }
        Ok(())
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.'))
}

/// The first pass: counts the good rows and lists the bad ones (stops
/// listing past `max_errors + 1`; more would not change the outcome).
async fn check(sources: &[Source], mapper: &Mapper, max_errors: usize) -> Result<(usize, Vec<ItemError>), ToolError> {
    let (sources, mapper) = (sources.to_vec(), mapper.clone());
    let checked = tokio::task::spawn_blocking(move || {
        let mut good = 0;
        let mut bad = Vec::new();
        for source in &sources {
            let read = formats::read_rows(source.format, &source.path, &mut |(label, row)| {
                match row.and_then(|fields| mapper.record(fields)) {
                    Ok(_) => good += 1,
                    Err(reason) => bad.push(ItemError { item: format!("{}: {label}", source.shown), reason }),
                }
                bad.len() <= max_errors.max(ERRORS_SHOWN)
            });
            read.map_err(|reason| ToolError::File { path: source.shown.clone(), reason })?;
        }
        Ok::<_, ToolError>((good, bad))
    });
    checked.await.map_err(|err| invalid(err.to_string()))?
}

/// The second pass: good rows as records, a page at a time, into `pages`
/// (bounded: reading waits while the store catches up).
fn send_pages(
    sources: &[Source],
    mapper: &Mapper,
    pages: &tokio::sync::mpsc::Sender<Vec<Record>>,
) -> Result<(), ToolError> {
    let mut page = Vec::with_capacity(PAGE);
    let mut open = true;
    for source in sources {
        let read = formats::read_rows(source.format, &source.path, &mut |(_, row)| {
            if let Ok(record) = row.and_then(|fields| mapper.record(fields)) {
                page.push(record);
            }
            if page.len() == PAGE {
                open = pages.blocking_send(std::mem::take(&mut page)).is_ok();
            }
            open
        });
        read.map_err(|reason| ToolError::File { path: source.shown.clone(), reason })?;
    }
    if open && !page.is_empty() {
        let _ = pages.blocking_send(page);
    }
    Ok(())
}
