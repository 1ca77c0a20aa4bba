//! What the directory-sync test binaries share: a database on SQLite or on
//! a fresh PostgreSQL database (with `DATABASE_URL`), the macro that runs a
//! test on both, and the binary as a process.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::process::{Command, Output};

use directory_sync::Database;

/// A database for one test: SQLite in a temp dir, or a scratch PostgreSQL
/// database dropped by [`TestDb::finish`].
pub struct TestDb {
    pub db: Database,
    /// The URL the database was opened with, for the binary.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    scratch: Option<scratch_pg::ScratchPg>,
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let db = Database::open(&url).await.unwrap();
    TestDb { db, url, _dir: Some(dir), scratch: None }
}

/// `None` (the test is skipped) without `DATABASE_URL`.
pub async fn postgres(test: &'static str) -> Option<TestDb> {
    open(scratch_pg::Backend::Postgres { var: "DATABASE_URL" }, test).await
}

impl TestDb {
    pub async fn finish(self) {
        self.db.close().await;
        if let Some(scratch) = self.scratch {
            scratch.drop_database().await.unwrap();
        }
    }
}

/// The database of a test on `backend`, or `None` (skipped) without its server.
pub async fn open(backend: scratch_pg::Backend, test: &'static str) -> Option<TestDb> {
    match backend {
        scratch_pg::Backend::Sqlite => Some(sqlite().await),
        scratch_pg::Backend::Postgres { var } => {
            let scratch = scratch_pg::ScratchPg::from_env(var, "ds_test", test).await?;
            let db = Database::open(&scratch.url).await.unwrap();
            Some(TestDb { db, url: scratch.url.clone(), _dir: None, scratch: Some(scratch) })
        }
    }
}

/// The `directory-sync` binary with `args`, on `database`.
pub fn command(args: &[&str], database: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_directory-sync"));
    command.args(args).env("DATABASE_URL", database);
    command
}

/// [`command`], run to its end.
pub fn run(args: &[&str], database: &str) -> Output {
    command(args, database).output().unwrap()
}
