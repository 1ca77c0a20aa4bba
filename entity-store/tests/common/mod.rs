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
pub async fn postgres(test: &str) -> Option<(PgStore, PgDatabase)> {
    let scratch = scratch_pg::ScratchPg::from_env("DATABASE_URL", "es_test", test).await?;
    let store = PgStore::connect(&scratch.url).await.unwrap();
    Some((store, PgDatabase(scratch)))
}

/// Drops the test database when the test is done with it.
pub struct PgDatabase(scratch_pg::ScratchPg);

impl PgDatabase {
    pub async fn drop_database(self, store: PgStore) {
        store.pool().close().await;
        self.0.drop_database().await.unwrap();
    }
}

/// Runs one async test body against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::sqlite().await;
                    super::$name($crate::common::Store::Sqlite(&db.store)).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((store, db)) = $crate::common::postgres(stringify!($name)).await else { return };
                    super::$name($crate::common::Store::Postgres(&store)).await;
                    db.drop_database(store).await;
                }
            )*
        }
    };
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
