//! `batch_delete`: a dry run by default; deleting needs the count of what
//! the selection matches, so a selection that grew since the preview
//! deletes nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::select::Selection;
use crate::{BatchTools, Call, DocumentRef, ItemError, ToolError, invalid};

/// Arguments of `batch_delete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// Which documents.
    #[serde(flatten)]
    pub selection: Selection,
    /// Only report what would be deleted (default true).
    #[serde(default = "crate::yes")]
    pub dry_run: bool,
    /// Required to delete: the number of documents the selection matches.
    #[serde(default)]
    pub confirm_count: Option<usize>,
    /// Refuse selections larger than this (default 1000).
    #[serde(default = "crate::default_max_documents")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_documents: usize,
}

/// What `batch_delete` did, or would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeleteOutput {
    /// Whether this was only a report.
    pub dry_run: bool,
    /// Documents the selection matches.
    pub matched: usize,
    /// The matched documents (what was, or would be, deleted).
    pub documents: Vec<DocumentRef>,
    /// Documents deleted (0 in a dry run).
    pub deleted: usize,
    /// Documents not deleted, and ids that named nothing.
    pub errors: Vec<ItemError>,
}

/// Deletes per statement; a cancellation stops between them.
const DELETE_CHUNK: usize = 500;

impl BatchTools {
    /// Deletes the selected documents, or reports what it would delete.
    pub async fn batch_delete(&self, args: DeleteArgs, call: &Call) -> Result<DeleteOutput, ToolError> {
        args.selection.check(args.max_documents)?;
        let selected = self.select(&args.selection, args.max_documents).await?;
        let documents: Vec<DocumentRef> = selected.entities.iter().map(|e| DocumentRef::from(e.key())).collect();
        let matched = documents.len();
        let mut output =
            DeleteOutput { dry_run: args.dry_run, matched, documents, deleted: 0, errors: selected.missing };
        if args.dry_run {
            return Ok(output);
        }
        match args.confirm_count {
            Some(count) if count == matched => {}
            Some(count) => {
                return Err(invalid(format!(
                    "confirm_count is {count} but the selection matches {matched} documents; nothing deleted"
                )));
            }
            None => return Err(invalid(format!("set confirm_count to {matched} to delete; nothing deleted"))),
        }
        if call.cancel.is_cancelled() {
            return Err(ToolError::Cancelled);
        }
        let keys: Vec<_> = selected.entities.iter().map(entity_store::Entity::key).collect();
        // In chunks, so a cancellation stops between them and says what stays.
        let tracker = batch_core::ProgressTracker::new(keys.len() as u64, call.progress.clone());
        for (index, chunk) in keys.chunks(DELETE_CHUNK).enumerate() {
            if call.cancel.is_cancelled() {
                let rest = keys[index * DELETE_CHUNK..].iter();
                output.errors.extend(
                    rest.map(|key| ItemError {
                        item: key.id.clone(),
                        reason: "cancelled before it was deleted".into(),
                    }),
                );
                break;
            }
            let report = self.store.batch_delete(chunk).await?;
            output.deleted += report.succeeded.iter().filter(|d| d.outcome == entity_store::Deleted::Deleted).count();
            output.errors.extend(report.failed.into_iter().map(|f| ItemError { item: f.key.id, reason: f.reason }));
            tracker.advance(chunk.len() as u64, 0);
        }
        tracker.finish();
        Ok(output)
    }
}
