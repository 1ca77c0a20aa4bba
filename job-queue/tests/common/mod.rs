#![allow(dead_code)] // Each test binary uses part of this module.

//! A fresh database per test: a SQLite file, or a PostgreSQL database of its
//! own when `DATABASE_URL` is set.

use job_queue::Queue;

pub mod workers;

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

impl scratch_pg::Fixture for TestDb {
    async fn open(backend: scratch_pg::Backend, test: &'static str) -> Option<Self> {
        match backend {
            scratch_pg::Backend::Sqlite => Some(sqlite()),
            scratch_pg::Backend::Postgres { var } => {
                let scratch = scratch_pg::ScratchPg::from_env(var, "jq_test", test).await?;
                Some(TestDb { url: scratch.url.clone(), cleanup: Cleanup::Postgres(scratch) })
            }
        }
    }

    async fn finish(self) {
        self.drop_database().await;
    }
}
