//! Choosing documents by filter or by ids, with a safety limit: what
//! `batch_update` and `batch_delete` act on.

use entity_store::{Entity, EntityKey, Filter};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BatchTools, ItemError, ToolError, invalid};

/// Documents to act on: a filter, or ids in one collection. Exactly one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Entity-store filter, e.g. `entity_type = "note" and metadata.status = "draft"`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Ids of documents in `collection` (at most `max_documents`).
    #[serde(default)]
    #[schemars(length(min = 1, max = 10000))]
    pub document_ids: Option<Vec<String>>,
    /// The collection of `document_ids` (default `document`).
    #[serde(default)]
    #[schemars(pattern(r"^[a-z0-9-]{1,64}$"))]
    pub collection: Option<String>,
}

/// What a selection found: the documents, and ids that named nothing.
pub(crate) struct Selected {
    pub entities: Vec<Entity>,
    pub missing: Vec<ItemError>,
}

impl Selection {
    /// What can be checked without the store: `filter` or `document_ids`
    /// (not both), a filter that parses, at most `max` ids, `max` in range.
    pub(crate) fn check(&self, max: usize) -> Result<(), ToolError> {
        if !(1..=crate::MAX_DOCUMENTS_PER_CALL).contains(&max) {
            return Err(invalid(format!("max_documents is {max}, must be 1 to {}", crate::MAX_DOCUMENTS_PER_CALL)));
        }
        match (&self.filter, &self.document_ids) {
            (Some(text), None) => Filter::parse(text).map(drop).map_err(|err| invalid(format!("filter: {err}"))),
            (None, Some(ids)) if ids.len() > max => {
                Err(invalid(format!("{} ids given; at most {max} (max_documents)", ids.len())))
            }
            (None, Some(_)) => Ok(()),
            (Some(_), Some(_)) => Err(invalid("give `filter` or `document_ids`, not both")),
            (None, None) => Err(invalid("give `filter` or `document_ids`")),
        }
    }
}

impl BatchTools {
    /// The selected documents, refusing more than `max`.
    pub(crate) async fn select(&self, selection: &Selection, max: usize) -> Result<Selected, ToolError> {
        selection.check(max)?;
        match (&selection.filter, &selection.document_ids) {
            (Some(text), None) => {
                let filter = Filter::parse(text).map_err(|err| invalid(format!("filter: {err}")))?;
                // The store returns them ordered by collection and id.
                let entities = self.store.find(&filter, max.saturating_add(1)).await?;
                if entities.len() > max {
                    return Err(invalid(format!(
                        "the filter matches more than {max} documents (max_documents); narrow it or raise the limit"
                    )));
                }
                Ok(Selected { entities, missing: Vec::new() })
            }
            (None, Some(ids)) => {
                let collection = selection.collection.as_deref().unwrap_or(crate::add::DEFAULT_COLLECTION);
                let mut seen = std::collections::HashSet::new();
                let keys: Vec<EntityKey> =
                    ids.iter().filter(|id| seen.insert(id.as_str())).map(|id| EntityKey::new(collection, id)).collect();
                let mut found = self.store.batch_get(&keys).await?;
                let mut entities = Vec::with_capacity(found.len());
                let mut missing = Vec::new();
                for key in keys {
                    match found.remove(&key) {
                        Some(entity) => entities.push(entity),
                        None => {
                            missing.push(ItemError { item: key.id, reason: format!("no document in {collection}") });
                        }
                    }
                }
                Ok(Selected { entities, missing })
            }
            // Refused by `check`.
            _ => Err(invalid("give `filter` or `document_ids`")),
        }
    }
}
