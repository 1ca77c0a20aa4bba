//! Checks run on every item before anything is written.

use serde_json::{Map, Value};

use crate::model::{NewEntity, content_hash};

/// Largest content stored unless a store is told otherwise: 16 MiB.
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 16 * 1024 * 1024;

/// Why an entity type, id or entity is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The entity type is not 1 to 64 of `a-z`, `0-9` and `-`.
    #[error("entity type {0:?} is invalid: use lowercase letters, digits and '-' only")]
    EntityType(String),
    /// The id cannot name a file safely.
    #[error("id {id:?} is invalid: {reason}")]
    Id {
        /// The id given.
        id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The metadata is not a JSON object (the kind it is instead).
    #[error("metadata must be a JSON object, got {0}")]
    Metadata(&'static str),
    /// The content is over the store's limit.
    #[error("content is {size} bytes, over the limit of {limit}")]
    ContentTooLarge {
        /// The content's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A field (named) holds U+0000, which neither backend stores.
    #[error("{0} contains a NUL character, which cannot be stored")]
    Nul(&'static str),
}

/// Checks an entity type: 1 to 64 bytes of lowercase ASCII letters, digits and `-`.
pub fn validate_entity_type(entity_type: &str) -> Result<(), ValidationError> {
    let valid = !entity_type.is_empty()
        && entity_type.len() <= 64
        && entity_type.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid { Ok(()) } else { Err(ValidationError::EntityType(entity_type.to_owned())) }
}

/// Longest segment, in bytes, once `.md` is appended (common file-name limit).
const MAX_SEGMENT_BYTES: usize = 255 - ".md".len();

/// The id rules of DESIGN.md: any Unicode, `/` separates folders, and nothing
/// that could name a path outside the folder it is joined to.
pub fn validate_id(id: &str) -> Result<(), ValidationError> {
    let fail = |reason| Err(ValidationError::Id { id: id.to_owned(), reason });
    if id.is_empty() {
        return fail("it is empty");
    }
    if id.starts_with('/') {
        return fail("it starts with '/'");
    }
    if id.contains('\\') {
        return fail("it contains a backslash");
    }
    if id.chars().any(char::is_control) {
        return fail("it contains a control character");
    }
    for segment in id.split('/') {
        match segment {
            "" => return fail("it has an empty path segment"),
            "." | ".." => return fail("it has a '.' or '..' path segment"),
            s if s.len() > MAX_SEGMENT_BYTES => {
                return fail("a path segment is over 255 bytes with '.md'");
            }
            _ => {}
        }
    }
    Ok(())
}

/// An entity that passed validation, with its metadata and hash worked out.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub entity_type: String,
    pub id: String,
    pub content: String,
    pub metadata: Map<String, Value>,
    pub content_hash: String,
    pub expected_version: Option<i64>,
    pub frontmatter: Option<String>,
}

pub(crate) fn prepare(mut entity: NewEntity, max_content_bytes: usize) -> Result<Prepared, ValidationError> {
    // Keys are NFC (see `EntityKey`), also when the fields were set directly.
    entity.entity_type = crate::model::nfc(entity.entity_type);
    entity.id = crate::model::nfc(entity.id);
    validate_entity_type(&entity.entity_type)?;
    validate_id(&entity.id)?;
    let metadata = match entity.metadata {
        Value::Object(map) => map,
        Value::Null => return Err(ValidationError::Metadata("null")),
        Value::Bool(_) => return Err(ValidationError::Metadata("a boolean")),
        Value::Number(_) => return Err(ValidationError::Metadata("a number")),
        Value::String(_) => return Err(ValidationError::Metadata("a string")),
        Value::Array(_) => return Err(ValidationError::Metadata("an array")),
    };
    if entity.content.len() > max_content_bytes {
        return Err(ValidationError::ContentTooLarge { size: entity.content.len(), limit: max_content_bytes });
    }
    // PostgreSQL text cannot hold NUL; refuse it on both backends alike.
    if entity.content.contains('\0') {
        return Err(ValidationError::Nul("content"));
    }
    if metadata.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)) {
        return Err(ValidationError::Nul("metadata"));
    }
    if entity.frontmatter.as_deref().is_some_and(|text| text.contains('\0')) {
        return Err(ValidationError::Nul("frontmatter"));
    }
    let content_hash = content_hash(&metadata, &entity.content, entity.frontmatter.as_deref());
    Ok(Prepared {
        entity_type: entity.entity_type,
        id: entity.id,
        content: entity.content,
        metadata,
        content_hash,
        expected_version: entity.expected_version,
        frontmatter: entity.frontmatter,
    })
}

/// A real U+0000 in a key or a string at any depth (not the six
/// characters `\u0000`, which a regex cheat sheet may well hold).
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// `metadata` as the JSON text stored, keys in the author's order.
pub(crate) fn metadata_json(metadata: &Map<String, Value>) -> String {
    // A map of strings to JSON values always serialises.
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn real_vault_ids_are_accepted() {
        for id in [
            "Pokerole SRD/SRD v3.0/SRD-Moves/Ember",
            "Projects/2026/plan",
            "l'été d'Ana 🌞",
            "مرحبا بالعالم",
            "-leading-dash",
            "a..b",
            ".hidden",
        ] {
            assert_eq!(validate_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn escaping_and_odd_ids_are_refused_with_a_reason() {
        for (id, reason) in [
            ("", "it is empty"),
            ("/etc/passwd", "it starts with '/'"),
            ("../outside", "it has a '.' or '..' path segment"),
            ("a/../../b", "it has a '.' or '..' path segment"),
            ("a/./b", "it has a '.' or '..' path segment"),
            ("a//b", "it has an empty path segment"),
            ("a/", "it has an empty path segment"),
            ("a\\b", "it contains a backslash"),
            ("nul\0byte", "it contains a control character"),
            ("line\nbreak", "it contains a control character"),
        ] {
            assert_eq!(validate_id(id), Err(ValidationError::Id { id: id.to_owned(), reason }), "{id:?}");
        }
        assert!(validate_id(&"x".repeat(253)).is_err());
        assert!(validate_id(&"x".repeat(252)).is_ok());
    }

    #[test]
    fn entity_types_are_lowercase_slugs() {
        assert!(validate_entity_type("note").is_ok());
        assert!(validate_entity_type("meeting-notes2").is_ok());
        for bad in ["", "Note", "a_b", "a b", "../x", "é"] {
            assert!(validate_entity_type(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Whatever id passes, joining it to a folder stays inside the folder.
        #[test]
        fn fuzz_accepted_ids_never_escape(id in prop_oneof!["[a-z./\\\\ ]{0,12}", "\\PC{0,40}", "[./\\\\\u{0}-\u{1f}:~-]{0,8}"]) {
            if validate_id(&id).is_ok() {
                let base = std::path::Path::new("/base");
                let joined = base.join(format!("{id}.md"));
                let mut depth = 0i32;
                for part in joined.strip_prefix(base).unwrap().components() {
                    match part {
                        std::path::Component::Normal(_) => depth += 1,
                        _ => prop_assert!(false, "{id:?} gave {part:?}"),
                    }
                }
                prop_assert!(depth >= 1);
            }
        }
    }
}
