//! Where an entity lives in the folder, and which entity a file is.
//!
//! The base type (default `note`) is at `{root}/{id}.md`, every configured
//! type at `{root}/{type}/{id}.md`. Only configured folders are types; any
//! other folder is part of a note's id. A path built from an id never leaves
//! the root: ids are validated by the entity store's rules, and the joined
//! path is checked component by component.

use std::path::{Component, Path, PathBuf};

use entity_store::{EntityKey, validate_id};

/// Folder names under the root that are never synced.
pub const STATE_DIR: &str = ".directory-sync";

/// Maps between relative paths and entity keys.
#[derive(Debug, Clone)]
pub struct Layout {
    base_type: String,
    entity_types: Vec<String>,
}

/// Why a path is not an entity, or an entity has no safe path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The file does not end in `.md`.
    #[error("not a markdown file")]
    NotMarkdown,
    /// Left out on purpose (a hidden file or folder, a conflict copy): why.
    #[error("skipped: {0}")]
    Skipped(&'static str),
    /// The id would make a path that escapes the folder or that the file system refuses.
    #[error("unsafe name: {0}")]
    Unsafe(String),
}

impl Layout {
    /// Files in a folder named in `entity_types` are of that type; all others of `base_type`.
    pub fn new(base_type: impl Into<String>, entity_types: Vec<String>) -> Self {
        Self { base_type: base_type.into(), entity_types }
    }

    /// The type of files outside any type folder.
    pub fn base_type(&self) -> &str {
        &self.base_type
    }

    /// The entity of a file, from its path relative to the root (`/`-separated).
    pub fn key_for(&self, relative: &str) -> Result<EntityKey, LayoutError> {
        let Some(stem) = relative.strip_suffix(".md") else { return Err(LayoutError::NotMarkdown) };
        if is_ignored(relative) {
            return Err(LayoutError::Skipped("hidden, temporary or conflict file"));
        }
        let (entity_type, id) = match stem.split_once('/') {
            Some((folder, rest)) if self.entity_types.iter().any(|t| t == folder) => (folder, rest),
            _ => (self.base_type.as_str(), stem),
        };
        validate_id(id).map_err(|err| LayoutError::Unsafe(err.to_string()))?;
        Ok(EntityKey::new(entity_type, id))
    }

    /// The base type and the entity types, in one string that changes
    /// when they do (`note:en,person`).
    pub fn signature(&self) -> String {
        let mut types = self.entity_types.clone();
        types.sort();
        format!("{}:{}", self.base_type, types.join(","))
    }

    /// The file of an entity, relative to the root (`/`-separated).
    pub fn path_for(&self, key: &EntityKey) -> Result<String, LayoutError> {
        validate_id(&key.id).map_err(|err| LayoutError::Unsafe(err.to_string()))?;
        let relative = if key.entity_type == self.base_type {
            // A note whose first folder is a type name would read back as that type.
            if let Some((folder, _)) = key.id.split_once('/')
                && self.entity_types.iter().any(|t| t == folder)
            {
                return Err(LayoutError::Unsafe(format!(
                    "note id {:?} starts with the type folder {folder:?}",
                    key.id
                )));
            }
            format!("{}.md", key.id)
        } else if self.entity_types.contains(&key.entity_type) {
            format!("{}/{}.md", key.entity_type, key.id)
        } else {
            return Err(LayoutError::Skipped("its type is not one of this folder's entity types"));
        };
        if is_ignored(&relative) {
            return Err(LayoutError::Unsafe(format!("{relative:?} would be a hidden, temporary or conflict file")));
        }
        Ok(relative)
    }
}

/// Joins a relative path to the root, refusing anything that could leave it.
pub fn safe_join(root: &Path, relative: &str) -> Result<PathBuf, LayoutError> {
    let path = Path::new(relative);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(LayoutError::Unsafe(format!("{relative:?} is not a plain relative path")));
    }
    Ok(root.join(path))
}

/// Hidden files and folders (ours among them: the state folder, temp
/// files), and our own conflict copies. Every other name is a note.
pub fn is_ignored(relative: &str) -> bool {
    relative.split('/').any(|segment| segment.starts_with('.')) || conflict_original(relative).is_some()
}

/// `{name}.conflict-{stamp}.md`, with the stamp as [`conflict_stamp`] writes it.
pub fn conflict_path(relative: &str, stamp: &str) -> String {
    format!("{}.conflict-{stamp}.md", relative.strip_suffix(".md").unwrap_or(relative))
}

/// The stamp of a conflict copy made now: UTC, `20260318T123000.123Z`.
pub fn conflict_stamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// For one of our conflict copies (`a/b.conflict-20260318T123000.123Z.md`),
/// the path it was kept beside (`a/b.md`); `None` for any other name, so
/// a user's `team.conflict-resolution.md` is a note like any other.
pub fn conflict_original(relative: &str) -> Option<String> {
    let stem = relative.strip_suffix(".md")?;
    let (original, stamp) = stem.rsplit_once(".conflict-")?;
    let well_formed = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ").is_ok()
        && stamp.len() == "20260318T123000.123Z".len();
    (well_formed && !original.is_empty() && !original.ends_with('/')).then(|| format!("{original}.md"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new("note", vec!["person".into(), "project".into()])
    }

    #[test]
    fn type_folders_and_note_folders() {
        let layout = layout();
        assert_eq!(layout.key_for("person/Ada Lovelace.md").unwrap(), EntityKey::new("person", "Ada Lovelace"));
        assert_eq!(layout.key_for("Projects/2026/plan.md").unwrap(), EntityKey::new("note", "Projects/2026/plan"));
        assert_eq!(layout.key_for("person/team/Bob.md").unwrap(), EntityKey::new("person", "team/Bob"));
        for key in [EntityKey::new("person", "team/Bob"), EntityKey::new("note", "Projects/2026/plan")] {
            assert_eq!(layout.key_for(&layout.path_for(&key).unwrap()).unwrap(), key);
        }
    }

    #[test]
    fn unsafe_and_ignored_names_are_refused() {
        let layout = layout();
        assert_eq!(layout.key_for("a.txt"), Err(LayoutError::NotMarkdown));
        assert!(matches!(layout.key_for(".obsidian/x.md"), Err(LayoutError::Skipped(_))));
        assert!(matches!(layout.key_for("a.conflict-20260101T000000.000Z.md"), Err(LayoutError::Skipped(_))));
        for id in ["../escape", "a/../../b", "/abs", "a\\b", "a\0b"] {
            assert!(layout.path_for(&EntityKey::new("note", id)).is_err(), "{id:?}");
        }
        assert!(layout.path_for(&EntityKey::new("note", "person/x")).is_err());
        assert!(safe_join(Path::new("/r"), "../x.md").is_err());
        assert!(safe_join(Path::new("/r"), "/etc/passwd").is_err());
    }

    /// Only our own conflict copies are ignored: names that merely look
    /// like one, temp-like names and backup-like names are notes.
    #[test]
    fn only_our_own_conflict_names_are_ignored() {
        let stamp = conflict_stamp(chrono::Utc::now());
        let ours = conflict_path("team/plan.md", &stamp);
        assert_eq!(conflict_original(&ours).as_deref(), Some("team/plan.md"));
        assert!(is_ignored(&ours));
        for note in [
            "team.conflict-resolution.md",
            "a.conflict-2026.md",
            "a.conflict-20260101T000000Z.md",
            "archive.tmp/old.md",
            "draft.tmp.md",
            "backup~/a.md",
            "notes~.md",
            ".conflict-20260101T000000.000Z.md/x.md",
        ] {
            let hidden = note.starts_with('.');
            assert_eq!(is_ignored(note), hidden, "{note}");
            if !hidden {
                assert!(layout().key_for(note).is_ok(), "{note}");
            }
        }
    }

    proptest::proptest! {
        /// Whatever relative path is accepted stays inside the root, and a
        /// path that maps to an entity maps back to the same path's entity.
        #[test]
        fn fuzz_paths_stay_inside_and_round_trip(
            relative in proptest::prop_oneof![
                "\\PC{0,40}",
                "[a-z./\\\\ ~-]{0,16}(\\.md)?",
                "(person/|project/|Inbox/|\\.\\./|/)?[a-zA-Z .]{0,10}\\.md",
            ]
        ) {
            let root = Path::new("/root/folder");
            if let Ok(joined) = safe_join(root, &relative) {
                proptest::prop_assert!(joined.starts_with(root));
                proptest::prop_assert!(joined.components().all(|c| !matches!(c, Component::ParentDir)));
            }
            let layout = layout();
            if let Ok(key) = layout.key_for(&relative) {
                let path = layout.path_for(&key);
                proptest::prop_assert!(path.is_ok(), "{key:?} has no path: {path:?}");
                let path = path.unwrap();
                proptest::prop_assert_eq!(layout.key_for(&path).ok(), Some(key));
                proptest::prop_assert!(safe_join(root, &path).is_ok());
            }
        }
    }
}
