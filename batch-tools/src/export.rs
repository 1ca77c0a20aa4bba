//! `batch_export`: the documents a filter selects (all by default) to
//! files, page by page, so memory does not grow with the collection. Each
//! file is written under a temporary name and renamed when complete: a
//! failed or cancelled export leaves no half-written file.

use std::path::{Path, PathBuf};

use batch_core::ProgressTracker;
use entity_store::{Entity, EntityKey, Filter};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::formats::{self, Format, Record, RecordChunk, RecordEmbedding, RecordWriter};
use crate::{BatchTools, Call, ToolError, invalid};

/// Documents read from the store per round trip.
const PAGE: usize = 500;

/// Arguments of `batch_export`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportArgs {
    /// The file to write, relative to the server's files root. With
    /// `chunk_size`, files are named `{stem}-00001.{ext}`, `{stem}-00002.{ext}`, ...
    pub path: String,
    /// Default: from the path's extension.
    #[serde(default)]
    pub format: Option<Format>,
    /// Entity-store filter; default: every document.
    #[serde(default)]
    pub filter: Option<String>,
    /// Include each document's stored vectors (current model), so an import
    /// need not embed again.
    #[serde(default)]
    pub include_embeddings: bool,
    /// Documents per file; default: one file.
    #[serde(default)]
    pub chunk_size: Option<usize>,
    /// Replace existing files (default false: refuse).
    #[serde(default)]
    pub overwrite: bool,
}

/// What `batch_export` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExportOutput {
    /// Documents written.
    pub exported: usize,
    /// The files written.
    pub files: Vec<ExportedFile>,
    /// Documents exported with their vectors (with `include_embeddings`).
    pub with_embeddings: usize,
    /// With `include_embeddings`: why some documents came without a vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExportedFile {
    /// Relative to the files root.
    pub path: String,
    /// Documents in it.
    pub documents: usize,
}

/// The file being written and where it goes when complete.
struct OpenFile {
    writer: Box<dyn RecordWriter>,
    temp: tempfile::TempPath,
    target: PathBuf,
    documents: usize,
}

impl ExportArgs {
    /// What can be checked without the store or the files: a format, a
    /// chunk size and a filter that parses.
    pub fn check(&self) -> Result<(), ToolError> {
        if self.format.is_none() && Format::of_path(std::path::Path::new(&self.path)).is_none() {
            return Err(invalid(format!(
                "cannot tell the format of {:?}: give `format` (json, jsonl, csv, parquet)",
                self.path
            )));
        }
        if self.chunk_size == Some(0) {
            return Err(invalid("chunk_size must be at least 1"));
        }
        if let Some(text) = &self.filter {
            Filter::parse(text).map_err(|err| invalid(format!("filter: {err}")))?;
        }
        Ok(())
    }
}

impl BatchTools {
    /// Writes the selected documents to files under the files root.
    pub async fn batch_export(&self, args: ExportArgs, call: &Call) -> Result<ExportOutput, ToolError> {
        args.check()?;
        if args.include_embeddings && self.search.embedder.is_none() {
            return Err(invalid(
                "include_embeddings: no embedding model is configured here, so there are no vectors to export"
                    .to_owned(),
            ));
        }
        let target = self.files.resolve(&args.path)?;
        let format = match args.format {
            Some(format) => format,
            None => Format::of_path(&target).ok_or_else(|| {
                invalid(format!("cannot tell the format of {:?}: give `format` (json, jsonl, csv, parquet)", args.path))
            })?,
        };
        let (filter, total) = match args.filter.as_deref() {
            Some(text) => (Filter::parse(text).map_err(|err| invalid(format!("filter: {err}")))?, None),
            None => (Filter::all(), Some(self.store.count(None).await?)),
        };
        let tracker = ProgressTracker::new(total.unwrap_or(0), call.progress.clone());
        tracker.set_message("exporting");
        let mut output = ExportOutput { exported: 0, files: Vec::new(), with_embeddings: 0, note: None };
        let mut open: Option<OpenFile> = None;
        let mut after: Option<EntityKey> = None;
        loop {
            if call.cancel.is_cancelled() {
                return Err(ToolError::Cancelled);
            }
            let page = self.store.find_after(&filter, after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key());
            let page_len = page.len() as u64;
            let mut records = self.records(page, args.include_embeddings).await?;
            output.with_embeddings += records.iter().filter(|r| r.embedding.is_some()).count();
            while !records.is_empty() {
                let file = if let Some(file) = open.take() {
                    file
                } else {
                    let name = file_name(&target, format, args.chunk_size.map(|_| output.files.len() + 1));
                    start_file(&name, format, args.include_embeddings, args.overwrite).await?
                };
                let room = args.chunk_size.map_or(records.len(), |size| size - file.documents).min(records.len());
                let rest = records.split_off(room);
                let written = records.len();
                let file = write(file, records).await?;
                output.exported += written;
                records = rest;
                if args.chunk_size.is_some_and(|size| file.documents == size) {
                    output.files.push(self.finish_file(file).await?);
                } else {
                    open = Some(file);
                }
            }
            tracker.advance(page_len, 0);
        }
        let last_file = match open {
            Some(file) => Some(file),
            // Nothing matched: still one (empty) file, so the caller finds what it asked for.
            None if output.files.is_empty() => {
                let name = file_name(&target, format, args.chunk_size.map(|_| 1));
                Some(start_file(&name, format, args.include_embeddings, args.overwrite).await?)
            }
            None => None,
        };
        if let Some(file) = last_file {
            output.files.push(self.finish_file(file).await?);
        }
        tracker.finish();
        if args.include_embeddings && output.with_embeddings < output.exported {
            output.note = Some(format!(
                "{} of {} documents have no vector of this model ({}) for their current content yet: their embedding jobs are queued or not run (a `directory-sync worker` runs them); they were exported without one",
                output.exported - output.with_embeddings,
                output.exported,
                self.search.embedder()?.model_id()
            ));
        }
        Ok(output)
    }

    /// A page of entities as records, with their vectors when asked.
    async fn records(&self, page: Vec<Entity>, include_embeddings: bool) -> Result<Vec<Record>, ToolError> {
        let mut vectors = std::collections::HashMap::new();
        if include_embeddings {
            let model = self.search.embedder()?.model_id().to_owned();
            let keys: Vec<EntityKey> = page.iter().map(Entity::key).collect();
            let stored = self.search.vectors.vectors(&model, &keys).await.map_err(embedding::SearchError::Vectors)?;
            for entity in stored {
                let chunks = entity
                    .chunks
                    .into_iter()
                    .map(|c| RecordChunk { start: c.span.start, end: c.span.end, vector: c.vector })
                    .collect();
                let embedding = RecordEmbedding { model: model.clone(), content_hash: entity.content_hash, chunks };
                vectors.insert(entity.key, embedding);
            }
        }
        Ok(page
            .into_iter()
            .map(|entity| {
                let embedding = vectors.remove(&entity.key()).filter(|e| e.content_hash == entity.content_hash);
                Record {
                    collection: entity.entity_type,
                    id: entity.id,
                    content: entity.content,
                    metadata: entity.metadata,
                    embedding,
                }
            })
            .collect())
    }

    async fn finish_file(&self, file: OpenFile) -> Result<ExportedFile, ToolError> {
        let OpenFile { writer, temp, target, documents } = file;
        let shown = self.files.relative(&target);
        let finished = blocking(move || {
            writer.finish()?;
            temp.persist(&target).map_err(|err| err.error)
        })
        .await;
        finished.map_err(|err| file_error(&shown, &err))?;
        Ok(ExportedFile { path: shown, documents })
    }
}

/// `target`, or `{stem}-{n:05}.{ext}` beside it for the n-th of several files.
fn file_name(target: &Path, format: Format, number: Option<usize>) -> PathBuf {
    let Some(number) = number else { return target.to_owned() };
    let stem = target.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!("{stem}-{number:05}.{}", format.extension()))
}

async fn start_file(
    target: &Path,
    format: Format,
    with_embeddings: bool,
    overwrite: bool,
) -> Result<OpenFile, ToolError> {
    let target = target.to_owned();
    let shown = target.display().to_string();
    let opened = blocking(move || {
        if !overwrite && target.exists() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists (set overwrite to replace it)"));
        }
        let folder = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder)?;
        // A new file gets 0666 less the umask, as any program's would; one
        // replaced keeps its mode (tempfile's own default is 0600).
        let temp = tempfile::Builder::new()
            .prefix(".batch-export-")
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(folder)?;
        if let Ok(existing) = std::fs::metadata(&target) {
            temp.as_file().set_permissions(existing.permissions())?;
        }
        let (file, temp) = temp.into_parts();
        let writer = formats::writer(format, file, with_embeddings)?;
        Ok(OpenFile { writer, temp, target, documents: 0 })
    })
    .await;
    opened.map_err(|err| file_error(&shown, &err))
}

async fn write(mut file: OpenFile, records: Vec<Record>) -> Result<OpenFile, ToolError> {
    let shown = file.target.display().to_string();
    let written = blocking(move || {
        file.writer.write(&records)?;
        file.documents += records.len();
        Ok(file)
    })
    .await;
    written.map_err(|err| file_error(&shown, &err))
}

pub(crate) fn file_error(path: &str, err: &std::io::Error) -> ToolError {
    ToolError::File { path: path.to_owned(), reason: err.to_string() }
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
}
