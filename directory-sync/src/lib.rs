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

// Only lowercase `.md` files are notes: export writes `.md`, so `X.MD` could not round-trip.
#![allow(clippy::case_sensitive_file_extension_comparisons)]

pub use entity_store::markdown as codec;
mod config;
pub mod dashboard;
pub mod layout;
pub mod mcp;
mod plugin;
mod scan;
mod state;
mod sync;
pub mod watch;

use std::sync::Arc;

pub use config::{ConfigError, ConflictPolicy, SyncConfig, state_dir};
pub use plugin::{
    DirectorySyncPlugin, EXPORT_JOB, ExportInput, Folders, IMPORT_JOB, ImportInput, SYNC_JOB, Started, SyncInput,
    register_handlers,
};
pub use state::{Conflict, FileState, RootState, StateDb};
pub use sync::{Direction, FolderStatus, Problem, SyncError, SyncSummary, Syncer, no_progress};

/// The entity store, the sync state and the job queue on one database.
#[derive(Clone)]
pub struct Database {
    pub store: Arc<dyn entity_store::EntityStore>,
    pub state: StateDb,
    pub queue: job_queue::Queue,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
    #[error(transparent)]
    Store(#[from] entity_store::StoreError),
    #[error(transparent)]
    Queue(#[from] job_queue::QueueError),
    #[error("sync state: {0}")]
    State(#[from] sqlx::Error),
    #[error("vector tables: {0}")]
    Vectors(#[from] sqlx::migrate::MigrateError),
}

impl Database {
    /// Opens (and migrates) `sqlite://PATH` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
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
        Ok(db)
    }

    /// The vector index beside the entities.
    pub async fn vectors(&self) -> Result<Arc<dyn embedding::VectorIndex>, OpenError> {
        Ok(match &self.state {
            StateDb::Sqlite(pool) => Arc::new(embedding::SqliteVectors::new(pool.clone()).await?),
            StateDb::Postgres(pool) => Arc::new(embedding::PgVectors::new(pool.clone()).await?),
        })
    }

    /// The batch tools over this database, searching with `embedder`, with
    /// file paths confined to `files`.
    pub async fn batch_tools(
        &self,
        embedder: Arc<dyn embedding::Embedder>,
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
