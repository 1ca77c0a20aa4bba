//! `batch_update`: metadata merged into, and content rewritten by a small
//! template for, every selected document, up to a safety limit.

use entity_store::{Entity, NewEntity, UpsertOptions, UpsertStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::select::Selection;
use crate::{BatchTools, Call, DocumentRef, ItemError, ToolError, invalid};

/// Arguments of `batch_update`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// Which documents.
    #[serde(flatten)]
    pub selection: Selection,
    /// Merged into each document's metadata; a `null` value removes the key.
    #[serde(default)]
    pub metadata_updates: Map<String, Value>,
    /// New content from `{{content}}` (the current content) and
    /// `{{metadata.key}}` (a metadata value; nested keys with dots).
    #[serde(default)]
    pub content_template: Option<String>,
    /// Queue embedding again for documents whose content changed (default true).
    #[serde(default = "crate::yes")]
    pub regenerate_embeddings: bool,
    /// Refuse selections larger than this (default 1000).
    #[serde(default = "crate::default_max_documents")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_documents: usize,
}

/// What `batch_update` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UpdateOutput {
    /// Documents the selection matched.
    pub matched: usize,
    /// Documents changed.
    pub updated: Vec<DocumentRef>,
    /// Matched documents the update left as they were.
    pub unchanged: usize,
    /// Documents not updated, and ids that named nothing.
    pub errors: Vec<ItemError>,
    /// Ids of the embedding jobs queued for changed content.
    pub embedding_jobs: Vec<String>,
}

impl UpdateArgs {
    /// What can be checked without the store: something to update, a
    /// template and a selection that parse.
    pub fn check(&self) -> Result<(), ToolError> {
        if self.metadata_updates.is_empty() && self.content_template.is_none() {
            return Err(invalid("nothing to update: give metadata_updates or content_template"));
        }
        self.content_template.as_deref().map(Template::parse).transpose()?;
        self.selection.check(self.max_documents)
    }
}

impl BatchTools {
    /// Merges metadata into, or rewrites the content of, the selected documents.
    pub async fn batch_update(&self, args: UpdateArgs, call: &Call) -> Result<UpdateOutput, ToolError> {
        args.check()?;
        let template = args.content_template.as_deref().map(Template::parse).transpose()?;
        let selected = self.select(&args.selection, args.max_documents).await?;
        let matched = selected.entities.len(); // unknown ids are errors, not matches
        let writes: Vec<NewEntity> =
            selected.entities.iter().map(|entity| updated(entity, &args.metadata_updates, template.as_ref())).collect();
        if call.cancel.is_cancelled() {
            return Err(ToolError::Cancelled);
        }
        // What to embed again if its write goes through: documents whose content changed.
        let planned: Vec<(entity_store::EntityKey, Option<String>)> = writes
            .iter()
            .zip(&selected.entities)
            .map(|(write, before)| {
                let metadata = write.metadata.as_object().cloned().unwrap_or_default();
                let new_hash = (write.content != before.content)
                    .then(|| entity_store::content_hash(&metadata, &write.content, write.frontmatter.as_deref()));
                (write.key(), new_hash)
            })
            .collect();
        // Each write expects the version it was computed from: a document
        // changed meanwhile fails as a conflict instead of losing that change.
        let options = UpsertOptions {
            progress: Some(call.progress.clone()),
            cancel: Some(call.cancel.clone()),
            ..Default::default()
        };
        let report = self.store.batch_upsert(writes, &options).await?;
        let changed: std::collections::HashSet<_> = report
            .succeeded
            .iter()
            .filter(|done| done.outcome.status == UpsertStatus::Updated)
            .map(|done| done.key.clone())
            .collect();
        let mut updated_refs = Vec::new();
        let mut embed = Vec::new();
        for (key, new_hash) in planned.into_iter().filter(|(key, _)| changed.contains(key)) {
            if let Some(content_hash) = new_hash {
                embed.push(embedding::EmbedItem { key: key.clone(), content_hash });
            }
            updated_refs.push(DocumentRef::from(key));
        }
        let embedding_jobs =
            if args.regenerate_embeddings { self.queue_embeddings(embed, call).await? } else { Vec::new() };
        let mut errors = selected.missing;
        errors.extend(report.failed.into_iter().map(|f| ItemError { item: f.key.id, reason: f.reason }));
        errors.extend(
            report
                .cancelled
                .into_iter()
                .map(|key| ItemError { item: key.id, reason: "cancelled before it was written".into() }),
        );
        Ok(UpdateOutput {
            matched,
            unchanged: report.succeeded.len() - updated_refs.len(),
            updated: updated_refs,
            errors,
            embedding_jobs,
        })
    }
}

/// `entity` with `updates` merged in and `template` applied.
fn updated(entity: &Entity, updates: &Map<String, Value>, template: Option<&Template>) -> NewEntity {
    let mut metadata = entity.metadata.clone();
    for (key, value) in updates {
        if value.is_null() {
            metadata.shift_remove(key);
        } else {
            metadata.insert(key.clone(), value.clone());
        }
    }
    let content = template.map_or_else(|| entity.content.clone(), |t| t.render(&entity.content, &metadata));
    NewEntity::new(&entity.entity_type, &entity.id, content)
        .with_metadata(Value::Object(metadata))
        .with_frontmatter(entity.frontmatter.clone())
        .expecting_version(entity.version)
}

/// A content template: literal text and `{{content}}` / `{{metadata.a.b}}` slots.
#[derive(Debug)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Content,
    Metadata(Vec<String>),
}

impl Template {
    fn parse(text: &str) -> Result<Self, ToolError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            parts.push(Part::Text(rest[..open].to_owned()));
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| invalid("content_template: `{{` without `}}`"))?;
            let name = after[..close].trim();
            parts.push(match name {
                "content" => Part::Content,
                _ => match name.strip_prefix("metadata.") {
                    Some(path) if path.split('.').all(|k| !k.is_empty()) => {
                        Part::Metadata(path.split('.').map(str::to_owned).collect())
                    }
                    _ => {
                        return Err(invalid(format!(
                            "content_template: unknown slot `{{{{{name}}}}}`; use {{{{content}}}} or {{{{metadata.key}}}}"
                        )));
                    }
                },
            });
            rest = &after[close + 2..];
        }
        parts.push(Part::Text(rest.to_owned()));
        Ok(Self { parts })
    }

    /// Missing metadata renders as nothing; strings as themselves, other values as JSON.
    fn render(&self, content: &str, metadata: &Map<String, Value>) -> String {
        let mut out = String::with_capacity(content.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Content => out.push_str(content),
                Part::Metadata(path) => {
                    let mut value = metadata.get(&path[0]);
                    for key in &path[1..] {
                        value = value.and_then(|v| v.get(key));
                    }
                    match value {
                        Some(Value::String(text)) => out.push_str(text),
                        Some(Value::Null) | None => {}
                        Some(other) => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn templates_fill_content_and_metadata_slots() {
        let template = Template::parse(
            "# {{ metadata.title }}\n{{content}}\n(by {{metadata.who.name}}, {{metadata.n}}{{metadata.none}})",
        )
        .unwrap();
        let metadata = json!({"title": "Plan", "who": {"name": "Ada"}, "n": 3}).as_object().unwrap().clone();
        assert_eq!(template.render("body", &metadata), "# Plan\nbody\n(by Ada, 3)");
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, expected) in
            [("{{content", "without"), ("{{title}}", "unknown slot `{{title}}`"), ("{{metadata.}}", "unknown slot")]
        {
            let err = Template::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
