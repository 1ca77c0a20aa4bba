//! Plugin configuration, checked once at construction.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to do when a file and its entity both changed since the last sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The database version stays at the path; the file's version is kept
    /// beside it as `{name}.conflict-{timestamp}.md` and reported.
    #[default]
    KeepBoth,
    /// The file wins; the database version is overwritten.
    PreferFile,
    /// The database wins; the file's edit is overwritten.
    PreferDatabase,
}

/// Which vectors a folder's entities get, for vector and hybrid search.
///
/// None by default: on the real 2,889-document windows-powershell-docs
/// folder, the lexical vectors more than doubled the time of a first sync
/// (1.3 s to 2.6-3.1 s) and took 19 MB of a 52.6 MB database, while
/// hybrid search with them found the document a query was taken from no
/// better than full-text search alone (300 known-item queries: MRR@10
/// 0.793 against 0.804; with a typo in each, 0.758 against 0.738).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderSetting {
    /// No vectors: text search; hybrid search is text search; vector search
    /// says it needs a model.
    #[default]
    None,
    /// Feature-hashed words and character trigrams
    /// ([`embedding::HashingEmbedder`], 384 values): spelling-tolerant,
    /// not semantic.
    Lexical,
}

impl EmbedderSetting {
    /// What a folder saved before this setting existed had: lexical vectors.
    fn saved_before_the_setting() -> Self {
        Self::Lexical
    }

    /// The model that embeds this folder's entities and queries, if any.
    pub fn model(self) -> Option<std::sync::Arc<dyn embedding::Embedder>> {
        match self {
            Self::None => None,
            Self::Lexical => Some(std::sync::Arc::new(embedding::HashingEmbedder::default())),
        }
    }
}

/// Any other value (`null`, a number, an unknown name) is refused naming
/// the setting and what it may be.
impl<'de> Deserialize<'de> for EmbedderSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        value
            .as_str()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| serde::de::Error::custom(format!("embedder is {value}; it may be \"none\" or \"lexical\"")))
    }
}

impl std::str::FromStr for EmbedderSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Self::None),
            "lexical" => Ok(Self::Lexical),
            other => Err(format!("unknown embedder {other:?}: none or lexical")),
        }
    }
}

/// How one folder is synced; stored per folder, defaults from [`SyncConfig::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    /// The folder of notes.
    pub sync_path: PathBuf,
    /// The type of files outside any type folder.
    pub base_type: String,
    /// Folders directly under `sync_path` that are entity types.
    pub entity_types: Vec<String>,
    /// Whether the plugin watches the folder for changes.
    pub watch_enabled: bool,
    /// The watcher's safety-net full scan.
    #[serde(with = "seconds")]
    pub watch_interval: Duration,
    /// Read frontmatter into metadata and write metadata as frontmatter.
    pub include_metadata: bool,
    /// Whether the plugin syncs once when it starts.
    pub initial_sync: bool,
    /// How long after the start that first sync runs.
    #[serde(with = "seconds")]
    pub initial_sync_delay: Duration,
    /// Files per read-and-write round.
    pub sync_batch_size: usize,
    /// 1-10, higher runs first.
    pub sync_priority: i32,
    /// What happens when a file and its entity both changed.
    pub conflict_policy: ConflictPolicy,
    /// Larger files are not imported (reported as failed), in bytes.
    pub max_file_size: u64,
    /// Vectors for vector and hybrid search (none unless chosen).
    #[serde(default = "EmbedderSetting::saved_before_the_setting")]
    pub embedder: EmbedderSetting,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            sync_path: PathBuf::new(),
            base_type: "note".into(),
            entity_types: Vec::new(),
            watch_enabled: false,
            watch_interval: Duration::from_secs(300),
            include_metadata: true,
            initial_sync: true,
            initial_sync_delay: Duration::from_secs(1),
            sync_batch_size: 500,
            sync_priority: 5,
            conflict_policy: ConflictPolicy::KeepBoth,
            max_file_size: 10 * 1024 * 1024,
            embedder: EmbedderSetting::None,
        }
    }
}

/// An invalid setting, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid directory-sync configuration: {field} {reason}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SyncConfig {
    /// Defaults for the folder `sync_path`.
    pub fn new(sync_path: impl Into<PathBuf>) -> Self {
        Self { sync_path: sync_path.into(), ..Self::default() }
    }

    /// Checks every setting, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason: String| Err(ConfigError { field, reason });
        if self.sync_path.as_os_str().is_empty() {
            return fail("sync_path", "is empty".into());
        }
        if let Err(err) = entity_store::validate_entity_type(&self.base_type) {
            return fail("base_type", err.to_string());
        }
        for entity_type in &self.entity_types {
            if let Err(err) = entity_store::validate_entity_type(entity_type) {
                return fail("entity_types", err.to_string());
            }
            if *entity_type == self.base_type {
                return fail("entity_types", format!("contains the base type {entity_type:?}"));
            }
        }
        if !(1..=10_000).contains(&self.sync_batch_size) {
            return fail("sync_batch_size", format!("is {}, must be 1 to 10000", self.sync_batch_size));
        }
        if !job_queue::PRIORITY_RANGE.contains(&self.sync_priority) {
            return fail("sync_priority", format!("is {}, must be 1 to 10", self.sync_priority));
        }
        if self.max_file_size == 0 {
            return fail("max_file_size", "is 0".into());
        }
        if self.watch_interval < Duration::from_secs(1) {
            return fail("watch_interval", "is under a second".into());
        }
        Ok(())
    }
}

/// Where the binary keeps a folder's settings and (by default) its SQLite database.
pub fn state_dir(folder: &std::path::Path) -> PathBuf {
    folder.join(crate::layout::STATE_DIR)
}

impl SyncConfig {
    /// The settings saved for `folder`, or new ones whose entity types are
    /// discovered: top-level folders named like an entity type (`person`,
    /// `project-notes`) are types, others (`Projects`, `My Notes`) belong to
    /// note ids. Once saved, the choice stays fixed for the folder.
    pub fn for_folder(folder: &std::path::Path) -> Result<Self, ConfigError> {
        let file = state_dir(folder).join("config.json");
        let Ok(bytes) = std::fs::read(&file) else {
            let config = Self { entity_types: discover_types(folder), ..Self::new(folder) };
            config.validate()?;
            return Ok(config);
        };
        let mut config: Self = serde_json::from_slice(&bytes)
            .map_err(|err| ConfigError { field: "config.json", reason: format!("{}: {err}", file.display()) })?;
        config.sync_path = folder.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// The settings a job on `folder` runs with (not saved): the saved
    /// ones, else new ones whose entity types are the folder's type-named
    /// folders and every type `store` holds, so a sync or export into a new
    /// folder writes every entity. `entity_types` replaces the types.
    pub async fn with_store_types(
        folder: &std::path::Path,
        store: &dyn entity_store::EntityStore,
        entity_types: Option<&[String]>,
    ) -> Result<Self, crate::SyncError> {
        let mut config =
            Self::for_folder(folder).map_err(|err| crate::SyncError::folder(folder, "its settings", err))?;
        if let Some(types) = entity_types {
            config.entity_types = types.to_vec();
        } else if !Self::is_saved(folder) {
            for entity_type in store.entity_types().await? {
                if entity_type != config.base_type && !config.entity_types.contains(&entity_type) {
                    config.entity_types.push(entity_type);
                }
            }
            config.entity_types.sort();
        }
        Ok(config)
    }

    /// Whether `folder` has saved settings.
    pub fn is_saved(folder: &std::path::Path) -> bool {
        state_dir(folder).join("config.json").is_file()
    }

    /// Saves these settings as the folder's (`.directory-sync/config.json`),
    /// only when they changed, and atomically (a temp file renamed into
    /// place, keeping the file's mode): a process reading it meanwhile sees
    /// the old settings or the new, never half a file.
    pub fn save_for_folder(&self) -> std::io::Result<()> {
        let saved = Self { sync_path: PathBuf::new(), ..self.clone() };
        let bytes = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        let relative = format!("{}/config.json", crate::layout::STATE_DIR);
        if std::fs::read(self.sync_path.join(&relative)).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        crate::scan::write_atomic(&self.sync_path, &relative, &bytes, crate::scan::Mode::Keep)
            .map(drop)
            .map_err(std::io::Error::other)
    }
}

fn discover_types(folder: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else { return Vec::new() };
    let mut types: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| name != "note" && entity_store::validate_entity_type(name).is_ok())
        .collect();
    types.sort();
    types
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_the_field() {
        let ok = SyncConfig::new("/tmp/x");
        assert!(ok.validate().is_ok());
        let cases = [
            SyncConfig { sync_batch_size: 0, ..ok.clone() },
            SyncConfig { sync_priority: 11, ..ok.clone() },
            SyncConfig { entity_types: vec!["Bad Type".into()], ..ok.clone() },
            SyncConfig { entity_types: vec!["note".into()], ..ok.clone() },
            SyncConfig { sync_path: PathBuf::new(), ..ok.clone() },
        ];
        let fields: Vec<&str> = cases.iter().map(|c| c.validate().unwrap_err().field).collect();
        assert_eq!(fields, ["sync_batch_size", "sync_priority", "entity_types", "entity_types", "sync_path"]);
    }
}
