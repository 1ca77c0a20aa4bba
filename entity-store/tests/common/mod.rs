//! Test databases: a fresh SQLite file or a fresh PostgreSQL database per test.
// Each test binary uses part of this module.
#![allow(dead_code)]

use entity_store::{PgStore, SqliteStore};

pub struct SqliteDb {
    pub store: SqliteStore,
    _dir: tempfile::TempDir,
}

pub async fn sqlite() -> SqliteDb {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).await.unwrap();
    SqliteDb { store, _dir: dir }
}

/// A PostgreSQL store on a database of its own, or `None` (with a notice)
/// when `DATABASE_URL` is not set. A set but unreachable URL fails the test.
pub async fn postgres(test: &'static str) -> Option<(PgStore, PgDatabase)> {
    match <Db as scratch_pg::Fixture>::open(scratch_pg::Backend::Postgres { var: "DATABASE_URL" }, test).await? {
        Db::Postgres(store, db) => Some((store, db)),
        Db::Sqlite(_) => None,
    }
}

/// Drops the test database when the test is done with it.
pub struct PgDatabase(scratch_pg::ScratchPg);

impl PgDatabase {
    pub async fn drop_database(self, store: PgStore) {
        store.pool().close().await;
        self.0.drop_database().await.unwrap();
    }
}

/// One test's store on one backend, lent to the test as a [`Store`].
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgStore, PgDatabase),
}

impl Db {
    pub fn store(&self) -> Store<'_> {
        match self {
            Db::Sqlite(db) => Store::Sqlite(&db.store),
            Db::Postgres(store, _) => Store::Postgres(store),
        }
    }
}

impl scratch_pg::Fixture for Db {
    async fn open(backend: scratch_pg::Backend, test: &'static str) -> Option<Self> {
        match backend {
            scratch_pg::Backend::Sqlite => Some(Db::Sqlite(sqlite().await)),
            scratch_pg::Backend::Postgres { var } => {
                let scratch = scratch_pg::ScratchPg::from_env(var, "es_test", test).await?;
                let store = PgStore::connect(&scratch.url).await.unwrap();
                Some(Db::Postgres(store, PgDatabase(scratch)))
            }
        }
    }

    async fn finish(self) {
        if let Db::Postgres(store, db) = self {
            db.drop_database(store).await;
        }
    }
}

/// The store under test, with raw SQL access for fault injection.
#[derive(Clone, Copy)]
pub enum Store<'a> {
    Sqlite(&'a SqliteStore),
    Postgres(&'a PgStore),
}

impl Store<'_> {
    pub fn api(&self) -> &dyn entity_store::EntityStore {
        match self {
            Store::Sqlite(s) => *s,
            Store::Postgres(s) => *s,
        }
    }

    /// Runs backend-specific SQL (each statement separately).
    pub async fn execute(&self, sqlite: &[&str], postgres: &[&str]) {
        match self {
            Store::Sqlite(s) => {
                for sql in sqlite {
                    sqlx::query(sql).execute(s.pool()).await.unwrap();
                }
            }
            Store::Postgres(s) => {
                for sql in postgres {
                    sqlx::query(sql).execute(s.pool()).await.unwrap();
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }
}

// Entities and answers, the same in every test file.

/// A note of `content`.
pub fn note(id: &str, content: &str) -> entity_store::NewEntity {
    entity_store::NewEntity::new("note", id, content)
}

/// `n` small notes, ids `prefix` then six digits.
pub fn notes(n: usize, prefix: &str) -> Vec<entity_store::NewEntity> {
    (0..n).map(|i| note(&format!("{prefix}{i:06}"), &format!("# Note {i}\n\nbody {i}"))).collect()
}

/// The ids of `hits`, in order.
pub fn ids(hits: Vec<entity_store::TextHit>) -> Vec<String> {
    hits.into_iter().map(|h| h.key.id).collect()
}

/// The keys of `entities`, in order.
pub fn keys(entities: &[entity_store::NewEntity]) -> Vec<entity_store::EntityKey> {
    entities.iter().map(entity_store::NewEntity::key).collect()
}

/// Upserts `entities` with the default options; panics on an error of the call.
pub async fn upsert(store: Store<'_>, entities: Vec<entity_store::NewEntity>) -> entity_store::UpsertReport {
    store.api().batch_upsert(entities, &entity_store::UpsertOptions::default()).await.unwrap()
}
