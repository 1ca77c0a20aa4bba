//! Keeps a folder of markdown files and the entity store in step, through
//! the job queue: import, export, sync (both ways, with conflicts kept, never
//! lost) and watch. Used by host applications as a plugin
//! ([`DirectorySyncPlugin`]) and by people as the `directory-sync` binary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use directory_sync::{Database, Direction, SyncConfig, Syncer, no_progress};
//! let db = Database::open("sqlite://notes.db").await?;
//! let syncer = Syncer::new(SyncConfig::new("notes"), db.store.clone(), db.state.clone(), Some(db.queue.clone()))?;
//! let summary = syncer.sync(Direction::Both, no_progress(), &Default::default()).await?;
//! println!("{}", summary.headline());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
// Only lowercase `.md` files are notes: export writes `.md`, so `X.MD` could not round-trip.
#![allow(clippy::case_sensitive_file_extension_comparisons)]

pub use entity_store::markdown as codec;
pub mod access;
mod config;
pub mod dashboard;
pub mod decide;
pub mod job_tools;
pub mod jobs;
pub mod layout;
mod lock;
pub mod mcp;
mod plugin;
mod scan;
mod state;
mod sync;
pub mod watch;

use std::sync::Arc;

pub use config::{ConfigError, ConflictPolicy, EmbedderSetting, SyncConfig, state_dir};
pub use plugin::{
    DirectorySyncPlugin, EXPORT_JOB, ExportInput, FolderJob, Folders, IMPORT_JOB, ImportInput, SYNC_JOB, Started,
    SyncInput, register_handlers,
};
pub use state::{Conflict, FileState, RootState, StateDb};
pub use sync::{
    Direction, EMBED_BATCH, FolderStatus, MASS_DELETE_MIN, MASS_DELETE_SHARE, Problem, SyncError, SyncSummary, Syncer,
    is_mass_delete, no_progress,
};

/// The entity store, the sync state and the job queue on one database.
#[derive(Clone)]
pub struct Database {
    /// The entities.
    pub store: Arc<dyn entity_store::EntityStore>,
    /// What each folder's files were at their last sync.
    pub state: StateDb,
    /// The job queue, in the same database.
    pub queue: job_queue::Queue,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
    /// The entity store could not be opened.
    #[error(transparent)]
    Store(#[from] entity_store::StoreError),
    /// The job queue could not be opened.
    #[error(transparent)]
    Queue(#[from] job_queue::QueueError),
    /// The sync state's database failed.
    #[error("sync state: {0}")]
    State(#[from] sqlx::Error),
    /// Creating or upgrading the tables failed.
    #[error("creating or upgrading the tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another process's creation of the tables could not be waited for.
    #[error("cannot lock {path} while creating its tables: {source}")]
    SchemaLock {
        /// The lock file beside the database.
        path: std::path::PathBuf,
        /// Why it could not be locked.
        source: std::io::Error,
    },
}

/// The file of a `sqlite:` URL, unless it is in memory.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:") && !url.contains("mode=memory")).then(|| path.into())
}

/// Holds an exclusive lock on `{database}.lock` until the file is dropped.
async fn lock_schema(database: std::path::PathBuf) -> Result<std::fs::File, OpenError> {
    let mut path = database.into_os_string();
    path.push(".lock");
    let path = std::path::PathBuf::from(path);
    let locking = path.clone();
    let locked = tokio::task::spawn_blocking(move || {
        if let Some(parent) = locking.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::File::options().create(true).truncate(false).write(true).open(&locking)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .unwrap_or_else(|err| Err(std::io::Error::other(err)));
    locked.map_err(|source| OpenError::SchemaLock { path, source })
}

impl Database {
    /// Opens (and migrates) `sqlite://PATH` or `postgres://...`. Processes
    /// opening one database at once create its tables one after the other:
    /// on PostgreSQL every migration set takes sqlx's advisory lock; on
    /// SQLite, where sqlx takes none, the whole opening holds an exclusive
    /// lock on `PATH.lock`.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let _schema_lock = match sqlite_file(url) {
            Some(path) => Some(lock_schema(path).await?),
            None => None,
        };
        let db = if url.starts_with("sqlite:") {
            let store = entity_store::SqliteStore::connect(url).await?;
            let pool = store.pool().clone();
            Self {
                queue: job_queue::Queue::from_sqlite_pool(pool.clone()).await?,
                state: StateDb::Sqlite(pool),
                store: Arc::new(store),
                backend: "sqlite",
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let store = entity_store::PgStore::connect(url).await?;
            let pool = store.pool().clone();
            Self {
                queue: job_queue::Queue::from_pg_pool(pool.clone()).await?,
                state: StateDb::Postgres(pool),
                store: Arc::new(store),
                backend: "postgres",
            }
        } else {
            return Err(OpenError::Url(url.to_owned()));
        };
        db.state.migrate().await?;
        // The vector tables too, while the schema lock is held (they are otherwise made on first use).
        db.vectors().await?;
        Ok(db)
    }

    /// Closes every connection and waits for them (on SQLite this leaves
    /// no WAL file behind, so the next reader changes nothing). Commands
    /// call it last; later calls on this database fail.
    pub async fn close(&self) {
        self.store.close().await;
        match &self.state {
            StateDb::Sqlite(pool) => pool.close().await,
            StateDb::Postgres(pool) => pool.close().await,
        }
    }

    /// The vector index beside the entities.
    pub async fn vectors(&self) -> Result<Arc<dyn embedding::VectorIndex>, OpenError> {
        Ok(match &self.state {
            StateDb::Sqlite(pool) => Arc::new(embedding::SqliteVectors::new(pool.clone()).await?),
            StateDb::Postgres(pool) => Arc::new(embedding::PgVectors::new(pool.clone()).await?),
        })
    }

    /// The batch tools over this database, searching with `embedder` (none:
    /// text search only, no vectors kept), with file paths confined to `files`.
    pub async fn batch_tools(
        &self,
        embedder: Option<Arc<dyn embedding::Embedder>>,
        files: batch_tools::FilesRoot,
    ) -> Result<batch_tools::BatchTools, OpenError> {
        let search = embedding::Search { store: self.store.clone(), vectors: self.vectors().await?, embedder };
        Ok(batch_tools::BatchTools::new(Arc::new(search), self.queue.clone(), files))
    }

    /// The embedding job handler with `embedder`, for a worker's registry.
    pub async fn embed_handler(
        &self,
        embedder: Arc<dyn embedding::Embedder>,
    ) -> Result<embedding::EmbedHandler, OpenError> {
        Ok(embedding::EmbedHandler {
            store: self.store.clone(),
            vectors: self.vectors().await?,
            embedder,
            settings: embedding::EmbedSettings::default(),
        })
    }
}

/// A migration file added to the folder but not to `embed!` would never run.
#[cfg(test)]
#[test]
fn every_migration_file_is_embedded() {
    for migrations in [state::SQLITE_MIGRATIONS, state::POSTGRES_MIGRATIONS] {
        assert_eq!(migrations.unlisted().unwrap(), Vec::<String>::new(), "{migrations:?}");
    }
}
