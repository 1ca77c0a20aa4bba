//! Entities, keys, options and reports.

use std::fmt;
use std::sync::Arc;

use batch_core::{BatchReport, ProgressReporter};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The primary key of an entity. Keys are Unicode text in NFC (Unicode
/// Standard Annex #15): [`EntityKey::new`] and deserialization normalize,
/// so `café` typed on Linux and `café` named by macOS (NFD, `e` and a
/// combining accent) are one entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "KeyFields")]
pub struct EntityKey {
    /// Lowercase ASCII letters, digits and `-` (at most 64 bytes), NFC.
    pub entity_type: String,
    /// Unique within the type (for notes, the path without `.md`), NFC.
    pub id: String,
}

impl EntityKey {
    /// A key, both parts normalised to NFC.
    pub fn new(entity_type: impl Into<String>, id: impl Into<String>) -> Self {
        Self { entity_type: nfc(entity_type.into()), id: nfc(id.into()) }
    }
}

#[derive(Deserialize)]
struct KeyFields {
    entity_type: String,
    id: String,
}

impl From<KeyFields> for EntityKey {
    fn from(fields: KeyFields) -> Self {
        Self::new(fields.entity_type, fields.id)
    }
}

/// `text` in Unicode normalization form C; free when it already is (ASCII always is).
pub fn nfc(text: String) -> String {
    use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
    if text.is_ascii() || is_nfc_quick(text.chars()) == IsNormalized::Yes { text } else { text.nfc().collect() }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.entity_type, self.id)
    }
}

/// The key in the first two columns of a row (entity type, id); a row
/// that does not hold one is an error (a `StoreError::Corrupt`), not a panic.
pub(crate) fn key_at<R: sqlx::Row>(row: &R) -> Result<EntityKey, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(EntityKey::new(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?))
}

/// A `changes_since` row (entity type, id, revision, version, deleted,
/// content hash) as a [`Change`].
pub(crate) fn change_at<R: sqlx::Row>(row: &R) -> Result<Change, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(Change {
        key: key_at(row)?,
        revision: row.try_get(2)?,
        version: row.try_get(3)?,
        deleted: row.try_get(4)?,
        content_hash: row.try_get(5)?,
    })
}

/// A stored entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// The type, as in [`EntityKey::entity_type`].
    pub entity_type: String,
    /// The id, as in [`EntityKey::id`].
    pub id: String,
    /// The markdown body, without frontmatter.
    pub content: String,
    /// The frontmatter as JSON, keys in the file's order.
    pub metadata: Map<String, Value>,
    /// BLAKE3 of the content and metadata (hex), equal for equal entities.
    pub content_hash: String,
    /// When the entity was first written.
    pub created_at: DateTime<Utc>,
    /// When its content or metadata last changed.
    pub updated_at: DateTime<Utc>,
    /// Starts at 1, grows by one on every real change.
    pub version: i64,
    /// Store-wide stamp of the last change; grows across all entities.
    pub revision: i64,
    /// The text that preceded the content in the file it came from, exactly
    /// as written (byte-order mark, frontmatter block with its comments,
    /// quoting, key order and line endings): see
    /// [`markdown::Document::frontmatter`](crate::markdown::Document::frontmatter).
    /// Rendering from it gives that file back byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontmatter: Option<String>,
}

impl Entity {
    /// Its type and id.
    pub fn key(&self) -> EntityKey {
        EntityKey::new(&self.entity_type, &self.id)
    }
}

/// An entity to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEntity {
    /// The type, as in [`EntityKey::entity_type`].
    pub entity_type: String,
    /// The id, as in [`EntityKey::id`].
    pub id: String,
    /// The markdown body, without frontmatter.
    pub content: String,
    /// Must be a JSON object.
    pub metadata: Value,
    /// Write only if the stored version is this (0: only if absent).
    /// A mismatch fails the item as a conflict.
    #[serde(default)]
    pub expected_version: Option<i64>,
    /// The source form of a file's head (see [`Entity::frontmatter`]).
    /// Writers that change only metadata pass the stored one on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontmatter: Option<String>,
}

impl NewEntity {
    /// An entity with empty metadata; type and id are normalised to NFC.
    pub fn new(entity_type: impl Into<String>, id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            entity_type: nfc(entity_type.into()),
            id: nfc(id.into()),
            content: content.into(),
            metadata: Value::Object(Map::new()),
            expected_version: None,
            frontmatter: None,
        }
    }

    /// With this metadata (a JSON object, else the item fails).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// With the text that preceded the content in its file.
    #[must_use]
    pub fn with_frontmatter(mut self, frontmatter: Option<String>) -> Self {
        self.frontmatter = frontmatter;
        self
    }

    /// Written only if the stored version is `version` (0: only if absent).
    #[must_use]
    pub fn expecting_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Its type and id.
    pub fn key(&self) -> EntityKey {
        EntityKey::new(&self.entity_type, &self.id)
    }
}

/// The hash that decides whether a write changes anything: BLAKE3 over the
/// canonical metadata JSON (keys sorted), a newline and the content; when
/// the entity holds its file's source form, then a NUL byte (which neither
/// can hold) and that text, so a comment added to a frontmatter is a change.
pub fn content_hash(metadata: &Map<String, Value>, content: &str, frontmatter: Option<&str>) -> String {
    let mut hasher = blake3::Hasher::new();
    write_canonical_object(&mut hasher, metadata);
    hasher.update(b"\n");
    hasher.update(content.as_bytes());
    if let Some(frontmatter) = frontmatter {
        hasher.update(b"\0");
        hasher.update(frontmatter.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

/// Writes `value` as JSON with object keys sorted at every level, whatever
/// map order serde_json was built with, straight into the hasher (no
/// string is built: this runs for every item of every write).
fn write_canonical(out: &mut blake3::Hasher, value: &Value) {
    match value {
        Value::Object(map) => write_canonical_object(out, map),
        Value::Array(items) => {
            out.update(b"[");
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.update(b",");
                }
                write_canonical(out, item);
            }
            out.update(b"]");
        }
        scalar => write_json(out, scalar),
    }
}

fn write_canonical_object(out: &mut blake3::Hasher, map: &Map<String, Value>) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_unstable();
    out.update(b"{");
    for (index, key) in keys.into_iter().enumerate() {
        if index > 0 {
            out.update(b",");
        }
        write_json(out, key);
        out.update(b":");
        write_canonical(out, &map[key]);
    }
    out.update(b"}");
}

fn write_json(out: &mut blake3::Hasher, value: &(impl Serialize + ?Sized)) {
    // Serializing a string or a JSON scalar cannot fail, nor can writing to a hasher.
    serde_json::to_writer(out, value).expect("JSON scalars serialize into a hasher");
}

/// How `batch_upsert` writes.
#[derive(Clone)]
pub struct UpsertOptions {
    /// Entities per statement (default 500).
    pub batch_size: usize,
    /// One transaction for the whole call: any failure keeps nothing.
    pub atomic: bool,
    /// Told after each chunk (entities written of the call's total).
    pub progress: Option<Arc<dyn ProgressReporter>>,
    /// Checked between chunks: once cancelled, no further chunk starts and
    /// the items not written are in the report's `cancelled`; an atomic
    /// call writes nothing then.
    pub cancel: Option<batch_core::CancellationToken>,
}

impl Default for UpsertOptions {
    fn default() -> Self {
        Self { batch_size: 500, atomic: false, progress: None, cancel: None }
    }
}

impl fmt::Debug for UpsertOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpsertOptions")
            .field("batch_size", &self.batch_size)
            .field("atomic", &self.atomic)
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel.as_ref().map(batch_core::CancellationToken::is_cancelled))
            .finish()
    }
}

/// What happened to one written entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsertStatus {
    /// Not stored before (or only as a tombstone).
    Created,
    /// Stored with another content hash; replaced.
    Updated,
    /// Same content hash: nothing written, version and revision untouched.
    Unchanged,
}

/// One successful item of an upsert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upserted {
    /// What the write did.
    pub status: UpsertStatus,
    /// The entity's version after the call.
    pub version: i64,
    /// The stored [`content_hash`], so a caller need not hash again.
    pub content_hash: String,
}

/// Every item of a `batch_upsert`: succeeded (created / updated / unchanged)
/// or failed with its reason. In atomic mode a failure moves every other item
/// to `rolled_back`.
pub type UpsertReport = BatchReport<EntityKey, Upserted>;

/// Counts of an upsert report by status.
pub trait UpsertCounts {
    /// Items that ended with `status`.
    fn count_status(&self, status: UpsertStatus) -> usize;
    /// Items created.
    fn created(&self) -> usize {
        self.count_status(UpsertStatus::Created)
    }
    /// Items updated.
    fn updated(&self) -> usize {
        self.count_status(UpsertStatus::Updated)
    }
    /// Items already as given.
    fn unchanged(&self) -> usize {
        self.count_status(UpsertStatus::Unchanged)
    }
}

impl UpsertCounts for UpsertReport {
    fn count_status(&self, status: UpsertStatus) -> usize {
        self.succeeded.iter().filter(|s| s.outcome.status == status).count()
    }
}

/// What a delete did to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deleted {
    /// It existed and is now a tombstone.
    Deleted,
    /// There was no such entity (or it was already deleted).
    NotFound,
}

/// Every key of a `batch_delete`: deleted, not found, or failed with its reason.
pub type DeleteReport = BatchReport<EntityKey, Deleted>;

/// One entry of `changes_since`: an entity written or deleted at `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The entity changed.
    pub key: EntityKey,
    /// The store-wide stamp of this change.
    pub revision: i64,
    /// The entity's version after it.
    pub version: i64,
    /// Whether the change deleted it (a tombstone).
    pub deleted: bool,
    /// The content hash as of this change, so a reader can tell whether it
    /// already has this version without fetching the content.
    pub content_hash: String,
}

/// A full-text search hit. `score` is the backend's relevance (SQLite
/// FTS5's bm25 with title weighted 2, PostgreSQL's `ts_rank` with title
/// weight A) divided by the best hit's: 1.0 for the best, in [0, 1] for
/// the rest, so it orders hits of one query but does not compare across
/// queries or backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextHit {
    /// The entity found.
    pub key: EntityKey,
    /// Relevance relative to the best hit, in [0, 1].
    pub score: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical form as it was first defined (sorted keys, compact),
    /// built as a string: stored hashes must stay valid.
    fn canonical_string(value: &Value) -> String {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let fields: Vec<String> = keys
                    .into_iter()
                    .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_string(&map[k])))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
            Value::Array(items) => format!("[{}]", items.iter().map(canonical_string).collect::<Vec<_>>().join(",")),
            other => other.to_string(),
        }
    }

    #[test]
    fn keys_are_nfc_in_every_script_whichever_way_they_arrive() {
        // (decomposed as macOS names files, composed)
        let cases = [
            ("cafe\u{301}", "caf\u{e9}"),
            ("Vie\u{323}\u{302}t", "Vi\u{1ec7}t"),
            ("\u{1112}\u{1161}\u{11ab}\u{1100}\u{1173}\u{11af}", "\u{d55c}\u{ae00}"),
            ("\u{304b}\u{3099}", "\u{304c}"),
            ("A\u{30a}ngstro\u{308}m", "\u{c5}ngstr\u{f6}m"),
            ("plain-ascii", "plain-ascii"),
        ];
        for (decomposed, composed) in cases {
            let key = EntityKey::new("note", decomposed);
            assert_eq!(key.id, composed, "{decomposed:?}");
            assert_eq!(key, EntityKey::new("note", composed));
            let parsed: EntityKey =
                serde_json::from_value(serde_json::json!({"entity_type": "note", "id": decomposed})).unwrap();
            assert_eq!(parsed, key, "deserialized keys are NFC too");
            assert_eq!(NewEntity::new("note", decomposed, "").id, composed);
        }
    }

    #[test]
    fn content_hash_is_blake3_of_the_canonical_metadata_and_the_content() {
        let metadata = serde_json::json!({
            "title": "Ünïcode \"quoted\" \\ back\nline",
            "tags": ["b", "a", {"z": 1, "y": [null, true, 2.5, -3]}],
            "nested": {"b": {}, "a": []},
            "n": 12_345_678_901_234_i64,
        });
        let Value::Object(map) = metadata.clone() else { unreachable!() };
        let expected = {
            let mut hasher = blake3::Hasher::new();
            hasher.update(canonical_string(&metadata).as_bytes());
            hasher.update(b"\n");
            hasher.update("body\r\n".as_bytes());
            hasher.finalize().to_hex().to_string()
        };
        assert_eq!(content_hash(&map, "body\r\n", None), expected);
        assert_eq!(content_hash(&Map::new(), "", None), blake3::hash(b"{}\n").to_hex().to_string());
        assert_eq!(content_hash(&Map::new(), "", Some("---\n")), blake3::hash(b"{}\n\0---\n").to_hex().to_string());
    }
}
