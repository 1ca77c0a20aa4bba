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
    Postgres(scratch_pg::ScratchPg),
}

impl TestDb {
    pub async fn queue(&self) -> Queue {
        Queue::connect(&self.url).await.unwrap()
    }

    pub async fn drop_database(self) {
        if let Cleanup::Postgres(scratch) = self.cleanup {
            scratch.drop_database().await.unwrap();
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
    let scratch = scratch_pg::ScratchPg::from_env("DATABASE_URL", "jq_test", test).await?;
    Some(TestDb { url: scratch.url.clone(), cleanup: Cleanup::Postgres(scratch) })
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
