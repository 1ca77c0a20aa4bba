//! `batch_add`: many documents in one call, split when long, all or nothing
//! by default, embedding queued for what was written.

use entity_store::{NewEntity, UpsertOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{BatchTools, Call, DocumentRef, ItemError, MAX_DOCUMENTS_PER_CALL, ToolError, invalid};

/// The collection when none is named.
pub const DEFAULT_COLLECTION: &str = "document";

/// Arguments of `batch_add`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddArgs {
    /// The documents (1 to 10,000; the whole call at most 16 MiB of JSON).
    #[schemars(length(min = 1, max = 10000))]
    pub documents: Vec<AddDocument>,
    /// The entity type to add to (default `document`): lowercase letters, digits and `-`.
    #[serde(default = "default_collection")]
    #[schemars(pattern(r"^[a-z0-9-]{1,64}$"))]
    pub collection: String,
    /// Queue embedding for the written documents (default true).
    #[serde(default = "crate::yes")]
    pub generate_embeddings: bool,
    /// Split documents longer than this many characters into parts
    /// `{id}-part-{n}` (each with `parent_id`, `part` and `parts` metadata).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub chunk_size: Option<usize>,
    /// Characters each part repeats from the end of the previous one.
    #[serde(default)]
    pub chunk_overlap: usize,
    /// All or nothing (default true): one bad document keeps the whole call from writing.
    #[serde(default = "crate::yes")]
    pub atomic: bool,
}

/// One document to add.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDocument {
    /// Default: a new UUID v7.
    #[serde(default)]
    pub id: Option<String>,
    /// The content (markdown); long content is split into parts.
    pub content: String,
    /// Its metadata (default none).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// What `batch_add` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AddOutput {
    /// Documents written (parts count one each), created or updated.
    pub processed: usize,
    /// The documents written.
    pub added: Vec<DocumentRef>,
    /// Documents given with content identical to what is stored: nothing written.
    pub unchanged: usize,
    /// Documents not written, and why.
    pub errors: Vec<ItemError>,
    /// True when an atomic call wrote nothing because of `errors`.
    pub rolled_back: bool,
    /// Ids of the embedding jobs queued for them.
    pub embedding_jobs: Vec<String>,
}

pub(crate) fn default_collection() -> String {
    DEFAULT_COLLECTION.to_owned()
}

impl AddArgs {
    /// The call's limits and names, checked before anything is written.
    pub fn check(&self) -> Result<(), ToolError> {
        if self.documents.is_empty() || self.documents.len() > MAX_DOCUMENTS_PER_CALL {
            return Err(invalid(format!("give 1 to {MAX_DOCUMENTS_PER_CALL} documents, not {}", self.documents.len())));
        }
        entity_store::validate_entity_type(&self.collection).map_err(|err| invalid(format!("collection: {err}")))?;
        if let Some(size) = self.chunk_size
            && (size == 0 || self.chunk_overlap >= size)
        {
            return Err(invalid(format!("chunk_size {size} must be above 0 and above chunk_overlap")));
        }
        Ok(())
    }
}

impl BatchTools {
    /// Adds or replaces documents, all or nothing unless `atomic` is false.
    pub async fn batch_add(&self, args: AddArgs, call: &Call) -> Result<AddOutput, ToolError> {
        args.check()?;
        let entities = entities_for(&args);
        let options =
            UpsertOptions { atomic: args.atomic, progress: Some(call.progress.clone()), ..Default::default() };
        if call.cancel.is_cancelled() {
            return Err(ToolError::Cancelled);
        }
        let written = self.write(entities, &options, call).await?;
        let added: Vec<DocumentRef> = written.written.iter().map(|item| DocumentRef::from(item.key.clone())).collect();
        let embedding_jobs =
            if args.generate_embeddings { self.queue_embeddings(written.written, call).await? } else { Vec::new() };
        let errors = written
            .failed
            .into_iter()
            .map(|failure| ItemError { item: failure.key.id, reason: failure.reason })
            .collect();
        Ok(AddOutput {
            processed: added.len(),
            added,
            unchanged: written.unchanged,
            errors,
            rolled_back: written.rolled_back,
            embedding_jobs,
        })
    }
}

/// The entities to write: one per document, or one per part of a long one.
fn entities_for(args: &AddArgs) -> Vec<NewEntity> {
    let mut entities = Vec::with_capacity(args.documents.len());
    for document in &args.documents {
        let id = document.id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let parts = match args.chunk_size {
            Some(size) => split_text(&document.content, size, args.chunk_overlap),
            None => vec![document.content.as_str()],
        };
        if parts.len() <= 1 {
            let metadata = Value::Object(document.metadata.clone());
            entities.push(NewEntity::new(&args.collection, id, document.content.clone()).with_metadata(metadata));
            continue;
        }
        for (index, part) in parts.iter().enumerate() {
            let mut metadata = document.metadata.clone();
            metadata.insert("parent_id".into(), id.clone().into());
            metadata.insert("part".into(), (index + 1).into());
            metadata.insert("parts".into(), parts.len().into());
            let part_id = format!("{id}-part-{}", index + 1);
            entities.push(NewEntity::new(&args.collection, part_id, *part).with_metadata(Value::Object(metadata)));
        }
    }
    entities
}

/// Pieces of at most `size` characters, each starting `overlap` characters
/// before the previous one ended, cut after whitespace where there is some
/// in the second half of a piece.
fn split_text(text: &str, size: usize, overlap: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text.char_indices().map(|(at, _)| at).chain([text.len()]).collect();
    let chars = bounds.len() - 1;
    if chars <= size {
        return vec![text];
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    loop {
        let mut end = (start + size).min(chars);
        if end < chars {
            let piece = &text[bounds[start]..bounds[end]];
            let half = bounds[start + size / 2] - bounds[start];
            if let Some(cut) = piece.rfind(char::is_whitespace).filter(|&cut| cut > half) {
                // Just after the whitespace character found.
                end = bounds.partition_point(|&b| b <= bounds[start] + cut);
            }
        }
        pieces.push(&text[bounds[start]..bounds[end]]);
        if end == chars {
            return pieces;
        }
        start = end.saturating_sub(overlap).max(start + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::split_text;

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(split_text("abc", 10, 2), vec!["abc"]);
    }

    #[test]
    fn pieces_respect_size_overlap_and_cover_the_text() {
        let text = "one two three four five six seven eight nine ten ünïcödé 名前 🚀 end";
        for (size, overlap) in [(10, 0), (10, 3), (7, 6), (20, 5)] {
            let pieces = split_text(text, size, overlap);
            assert!(pieces.iter().all(|p| p.chars().count() <= size), "{size}/{overlap}: {pieces:?}");
            assert!(text.starts_with(pieces[0]) && text.ends_with(pieces[pieces.len() - 1]));
            let mut covered = 0;
            for piece in &pieces {
                let at = text[..].find(piece).unwrap();
                assert!(at <= covered, "a gap before {piece:?}");
                covered = covered.max(at + piece.len());
            }
            assert_eq!(covered, text.len());
        }
    }
}
