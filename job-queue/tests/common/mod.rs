#![allow(dead_code)] // Each test binary uses part of this module.

//! A fresh database per test: a SQLite file, or a PostgreSQL database of its
//! own when `DATABASE_URL` is set.

use job_queue::Queue;

pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Postgres { admin: sqlx::PgPool, name: String },
}

impl TestDb {
    pub async fn queue(&self) -> Queue {
        Queue::connect(&self.url).await.unwrap()
    }

    pub async fn drop_database(self) {
        if let Cleanup::Postgres { admin, name } = self.cleanup {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.unwrap();
        }
    }
}

pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    TestDb { url, cleanup: Cleanup::Dir(dir) }
}

/// `None` (with a notice) when `DATABASE_URL` is not set; a set but
/// unreachable URL fails the test.
pub async fn postgres(test: &str) -> Option<TestDb> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("SKIPPED (no DATABASE_URL): PostgreSQL test {test}");
        return None;
    };
    let admin = sqlx::PgPool::connect(&url).await.expect("DATABASE_URL is set but PostgreSQL does not answer");
    let name = format!("jq_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    let base = url.split('?').next().unwrap_or(&url);
    let base = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    Some(TestDb { url: format!("{base}/{name}"), cleanup: Cleanup::Postgres { admin, name } })
}

/// Runs each async test body against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::sqlite();
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::common::postgres(stringify!($name)).await else { return };
                    super::$name(&db).await;
                    db.drop_database().await;
                }
            )*
        }
    };
}
