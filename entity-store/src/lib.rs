//! Typed markdown entities in SQLite (the embedded default) or PostgreSQL.
//!
//! Every bulk path touches the database in O(items / batch size) statements:
//! `batch_upsert` writes a chunk in one statement, `batch_get` and `exists`
//! read a chunk in one. Results are per-item reports, never a bare error.
//!
//! ```no_run
//! use entity_store::{EntityStore, NewEntity, SqliteStore, UpsertCounts, UpsertOptions};
//! # async fn demo() -> Result<(), entity_store::StoreError> {
//! let store = SqliteStore::open("knowledge.db").await?;
//! let notes = vec![NewEntity::new("note", "Projects/plan", "# Plan")];
//! let report = store.batch_upsert(notes, &UpsertOptions::default()).await?;
//! println!("{} created, {} failed", report.created(), report.failed.len());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod filter;
pub mod markdown;
mod model;
mod postgres;
pub(crate) mod sqlite;
mod terms;
mod upsert;
mod validate;
mod yaml;

use std::collections::{HashMap, HashSet};

pub use filter::{
    Comparison, Field, Filter, FilterError, Literal, MAX_FILTER_BYTES, MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH,
};
pub use model::{
    Change, DeleteReport, Deleted, Entity, EntityKey, NewEntity, TextHit, UpsertCounts, UpsertOptions, UpsertReport,
    UpsertStatus, Upserted, content_hash, nfc,
};
pub use postgres::PgStore;

/// Text scores relative to the best hit (1.0), so both backends' rank
/// functions (SQLite's bm25, PostgreSQL's `ts_rank`) give scores in
/// [0, 1] with the best first. Hits must be best first.
fn relative_scores(mut hits: Vec<TextHit>) -> Vec<TextHit> {
    let best = hits.first().map_or(0.0, |hit| hit.score);
    for hit in &mut hits {
        hit.score = if best > 0.0 { (hit.score / best).clamp(0.0, 1.0) } else { 1.0 };
    }
    hits
}
pub use sqlite::SqliteStore;
pub use validate::{DEFAULT_MAX_CONTENT_BYTES, ValidationError, validate_entity_type, validate_id};

/// Keys per read statement (`batch_get`, `exists`, deletes).
pub const READ_CHUNK: usize = 1000;

/// Failures of the store itself (not of single items, which go in reports).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (connection, constraint, lock...).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Creating or upgrading the tables failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A filter did not parse.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// An argument was refused (a type, an id).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A stored row does not decode (written by another program, or damaged).
    #[error("stored data is corrupt for {key}: {reason}")]
    Corrupt {
        /// The entity, or the row and column, that does not decode.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A column that does not decode (a row another program wrote, a damaged
/// file) is `Corrupt`, naming the column; every other failure is the database's.
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::ColumnDecode { index, source } => {
                StoreError::Corrupt { key: format!("a row (column {index})"), reason: source.to_string() }
            }
            sqlx::Error::ColumnNotFound(column) => {
                StoreError::Corrupt { key: format!("a row (column {column})"), reason: "no such column".into() }
            }
            sqlx::Error::Decode(source) => StoreError::Corrupt { key: "a row".into(), reason: source.to_string() },
            other => StoreError::Database(other),
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Entity persistence; both backends behave the same.
#[async_trait::async_trait]
pub trait EntityStore: Send + Sync {
    /// Closes the store's connections, waiting for them: on SQLite the
    /// last one to close copies the WAL into the database and removes it,
    /// so a process that ends after `close` leaves one file behind. Later
    /// calls fail. The default does nothing (a pool others share stays open).
    async fn close(&self) {}

    /// The live entity of `key`, if there is one.
    async fn get(&self, key: &EntityKey) -> Result<Option<Entity>> {
        let mut found = self.batch_get(std::slice::from_ref(key)).await?;
        Ok(found.remove(key))
    }

    /// The entities that exist among `keys`; missing keys are absent.
    async fn batch_get(&self, keys: &[EntityKey]) -> Result<HashMap<EntityKey, Entity>>;

    /// Which of `keys` exist, without reading content.
    async fn exists(&self, keys: &[EntityKey]) -> Result<HashSet<EntityKey>>;

    /// Writes entities in chunks of `options.batch_size`, one statement each.
    /// For duplicate keys in one call the last one wins and is reported once.
    async fn batch_upsert(&self, entities: Vec<NewEntity>, options: &UpsertOptions) -> Result<UpsertReport>;

    /// Deletes entities, keeping a tombstone so `changes_since` reports them.
    async fn batch_delete(&self, keys: &[EntityKey]) -> Result<DeleteReport>;

    /// Entities of one type ordered by id, after `after` (keyset pagination).
    async fn list(&self, entity_type: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entity>>;

    /// Keys and content hashes of all live entities, ordered by type then id,
    /// after `after` (keyset pagination). Reads no content.
    async fn list_hashes(&self, after: Option<&EntityKey>, limit: usize) -> Result<Vec<(EntityKey, String)>>;

    /// Live entities, of one type or of all.
    async fn count(&self, entity_type: Option<&str>) -> Result<u64>;

    /// The types that have live entities, sorted.
    async fn entity_types(&self) -> Result<Vec<String>>;

    /// Writes and deletes with a revision above `revision`, oldest first.
    async fn changes_since(&self, revision: i64, limit: usize) -> Result<Vec<Change>>;

    /// The highest revision stamped so far (0 for an empty store).
    async fn current_revision(&self) -> Result<i64>;

    /// Live entities matching `filter`, ordered by type and id.
    async fn find(&self, filter: &Filter, limit: usize) -> Result<Vec<Entity>> {
        self.find_after(filter, None, limit).await
    }

    /// One page of [`find`](Self::find): the matches ordered after `after`
    /// (by type, then id, bytewise), for reading large results page by page.
    async fn find_after(&self, filter: &Filter, after: Option<&EntityKey>, limit: usize) -> Result<Vec<Entity>>;

    /// The keys of the live entities matching `filter`, ordered by type and
    /// id: what [`find`](Self::find) selects, without reading content.
    async fn find_keys(&self, filter: &Filter, limit: usize) -> Result<Vec<EntityKey>> {
        self.find_keys_after(filter, None, limit).await
    }

    /// One page of [`find_keys`](Self::find_keys), after `after`.
    async fn find_keys_after(&self, filter: &Filter, after: Option<&EntityKey>, limit: usize)
    -> Result<Vec<EntityKey>>;

    /// Full-text search over content and metadata title, best first. Brings
    /// the search index up to date first, so every committed write is found.
    async fn search_text(&self, query: &str, limit: usize) -> Result<Vec<TextHit>>;

    /// Indexes every entity written or deleted since the last refresh, in
    /// bulk; returns how many were processed. A write only gives its rows
    /// new revisions, and this indexes the rows above the revision indexed
    /// last (tokenising costs more than the write itself), so hosts may run
    /// this in the background after a large import.
    async fn refresh_search_index(&self) -> Result<u64>;

    /// Statements sent to the database since the store was opened.
    fn statements(&self) -> u64;
}

/// A migration file added to the folder but not to `embed!` would never run.
#[cfg(test)]
#[test]
fn every_migration_file_is_embedded() {
    for migrations in [sqlite::MIGRATIONS, postgres::MIGRATIONS] {
        assert_eq!(migrations.unlisted().unwrap(), Vec::<String>::new(), "{migrations:?}");
    }
}
