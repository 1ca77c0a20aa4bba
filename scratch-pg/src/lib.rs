//! Throwaway PostgreSQL databases for the workspace's tests, benchmarks and
//! scenarios (a dev-dependency only; nothing the crates ship uses it).
//!
//! Each test gets a database of its own, `{prefix}_{uuid}`, on the server a
//! URL names, so tests run in parallel without seeing each other's rows and
//! a failed test leaves nothing that a later run trips over.
//!
//! Tests that run on both backends use [`backends!`] with a [`Fixture`].
//!
//! ```no_run
//! # async fn demo() {
//! let Some(db) = scratch_pg::ScratchPg::from_env("DATABASE_URL", "demo", "my_test").await else { return };
//! // ... connect to db.url ...
//! db.drop_database().await.unwrap();
//! # }
//! ```
#![warn(missing_docs)]

/// A database created for one test or run; [`ScratchPg::drop_database`]
/// removes it.
pub struct ScratchPg {
    admin: sqlx::PgPool,
    name: String,
    /// The new database's URL (the server URL with its database replaced).
    pub url: String,
    /// This database's place in the process's budget, given back on drop.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl ScratchPg {
    /// Creates `{prefix}_{uuid}` on the server of `server_url`, once a
    /// place in this process's budget ([`BUDGET`]) is free, after dropping
    /// the databases earlier runs on this machine left behind.
    pub async fn create(server_url: &str, prefix: &str) -> Result<Self, sqlx::Error> {
        let permit = budget().acquire_owned().await.map_err(|err| sqlx::Error::Protocol(err.to_string()))?;
        let admin = sqlx::PgPool::connect(server_url).await?;
        drop_leftovers(&admin).await?;
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        // Recorded before it exists: a run that dies in between leaves a row, never an unnamed database.
        sqlx::query("INSERT INTO scratch_pg_databases (name, host, pid) VALUES ($1, $2, $3)")
            .bind(&name)
            .bind(host())
            .bind(i64::from(std::process::id()))
            .execute(&admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
        let url = with_database(server_url, &name);
        Ok(Self { admin, name, url, _permit: permit })
    }

    /// For tests: a scratch database on the server the environment variable
    /// `var` names, or `None` with a SKIPPED notice naming `test` when it is
    /// not set (or empty). A set variable whose server does not answer fails the test:
    /// CI sets it, and a silent skip there would hide the failure.
    pub async fn from_env(var: &str, prefix: &str, test: &str) -> Option<Self> {
        let Some(server_url) = std::env::var(var).ok().filter(|url| !url.is_empty()) else {
            eprintln!("SKIPPED (no {var}): PostgreSQL test {test}");
            announce_skip(var);
            return None;
        };
        match Self::create(&server_url, prefix).await {
            Ok(scratch) => Some(scratch),
            Err(error) => panic!("{var} is set but no scratch database could be created there: {error}"),
        }
    }

    /// Drops the database, closing connections still open to it.
    pub async fn drop_database(self) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&self.admin).await?;
        sqlx::query("DELETE FROM scratch_pg_databases WHERE name = $1").bind(&self.name).execute(&self.admin).await?;
        self.admin.close().await;
        Ok(())
    }
}

/// Scratch databases one process holds at once: each test's pools stay
/// within the server's connection limit however many tests run in
/// parallel (`SCRATCH_PG_BUDGET` overrides it).
pub const BUDGET: usize = 8;

fn budget() -> std::sync::Arc<tokio::sync::Semaphore> {
    static BUDGET_SEMAPHORE: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    BUDGET_SEMAPHORE
        .get_or_init(|| {
            let size = std::env::var("SCRATCH_PG_BUDGET").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0);
            std::sync::Arc::new(tokio::sync::Semaphore::new(size.unwrap_or(BUDGET)))
        })
        .clone()
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname").map(|name| name.trim().to_owned()).unwrap_or_default()
}

/// Whether process `pid` of this machine is still running (Linux: its
/// `/proc` entry; elsewhere assumed running, so only old rows are dropped).
fn alive(pid: i64) -> bool {
    if cfg!(target_os = "linux") { std::path::Path::new(&format!("/proc/{pid}")).exists() } else { true }
}

/// Drops the databases recorded by processes of this machine that have
/// ended without dropping them (a test that panicked, a run killed), and
/// any recorded more than a day ago (a machine that is gone).
async fn drop_leftovers(admin: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    // Two binaries starting at once may both create the table: the loser's error is harmless.
    let _ = sqlx::query(
        "CREATE TABLE IF NOT EXISTS scratch_pg_databases (
            name text PRIMARY KEY, host text NOT NULL, pid int8 NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(admin)
    .await;
    let recorded: Vec<(String, String, i64, bool)> =
        sqlx::query_as("SELECT name, host, pid, created_at < now() - interval '1 day' FROM scratch_pg_databases")
            .fetch_all(admin)
            .await?;
    let this_host = host();
    for (name, host, pid, old) in recorded {
        if old || (host == this_host && !alive(pid)) {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(admin).await?;
            sqlx::query("DELETE FROM scratch_pg_databases WHERE name = $1").bind(&name).execute(admin).await?;
        }
    }
    Ok(())
}

/// Where a test of [`backends!`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary folder.
    Sqlite,
    /// A scratch database on the PostgreSQL server this environment variable names.
    Postgres {
        /// The variable holding the server's URL (`DATABASE_URL`).
        var: &'static str,
    },
}

/// What a test of [`backends!`] gets: opened per test on one backend,
/// finished after it (a scratch database dropped).
pub trait Fixture: Sized {
    /// `None` skips the test: its server is not configured (said once per
    /// test binary by [`ScratchPg::from_env`]).
    fn open(backend: Backend, test: &'static str) -> impl std::future::Future<Output = Option<Self>>;
    /// Closes what `open` opened and drops its scratch database.
    fn finish(self) -> impl std::future::Future<Output = ()>;
}

/// Runs each `async fn test(&Fixture)` on SQLite and on PostgreSQL
/// (`DATABASE_URL`), in modules `sqlite_backend` and `postgres_backend`:
///
/// ```ignore
/// scratch_pg::backends!(Fixture; a_test, another_test);
/// // Tests that take something the fixture lends: `async fn a_test(store: Store<'_>)`.
/// scratch_pg::backends!(Fixture => store; a_test);
/// // More backends: a module name and a `Backend` each.
/// scratch_pg::backends!(Fixture; [pgvector_backend = Backend::Postgres { var: "PGVECTOR_URL" }] a_test);
/// ```
#[macro_export]
macro_rules! backends {
    ($fixture:ident => $lend:ident; $([$module:ident = $backend:expr])* $($name:ident),* $(,)?) => {
        $crate::backends!(@all $fixture [lend $lend]; $([$module = $backend])*; [$($name),*]);
    };
    ($fixture:ident; $([$module:ident = $backend:expr])* $($name:ident),* $(,)?) => {
        $crate::backends!(@all $fixture [borrow]; $([$module = $backend])*; [$($name),*]);
    };
    (@all $fixture:ident $how:tt; $([$module:ident = $backend:expr])*; $names:tt) => {
        $crate::backends!(@in sqlite_backend, $crate::Backend::Sqlite, $fixture $how; $names);
        $crate::backends!(@in postgres_backend, $crate::Backend::Postgres { var: "DATABASE_URL" }, $fixture $how; $names);
        $($crate::backends!(@in $module, $backend, $fixture $how; $names);)*
    };
    (@in $module:ident, $backend:expr, $fixture:ident $how:tt; [$($name:ident),*]) => {
        mod $module {
            #[allow(unused_imports)]
            use $crate::Backend;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let opened = <super::$fixture as $crate::Fixture>::open($backend, stringify!($name)).await;
                    let Some(fixture) = opened else { return };
                    super::$name($crate::backends!(@arg fixture $how)).await;
                    $crate::Fixture::finish(fixture).await;
                }
            )*
        }
    };
    (@arg $fixture:ident [borrow]) => { &$fixture };
    (@arg $fixture:ident [lend $lend:ident]) => { $fixture.$lend() };
}

/// `server_url` with its database replaced by `name`; connection options
/// (the query string, such as `sslmode`) are kept.
fn with_database(server_url: &str, name: &str) -> String {
    let (base, query) = server_url.split_once('?').map_or((server_url, None), |(base, query)| (base, Some(query)));
    let base = base.rsplit_once('/').map_or(base, |(base, _)| base);
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Says once per test binary and variable that its PostgreSQL tests are
/// skipped. Written to the process's stderr directly: the test harness
/// captures `eprintln!` of passing tests, which would hide the skip.
fn announce_skip(var: &str) {
    use std::io::Write as _;
    static ANNOUNCED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut announced = ANNOUNCED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !announced.iter().any(|done| done == var) {
        announced.push(var.to_owned());
        let binary = std::env::args().next().unwrap_or_default();
        let binary = std::path::Path::new(&binary).file_name().map(|name| name.to_string_lossy().into_owned());
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the PostgreSQL tests of {} pass without running ({var} is not set)",
            binary.as_deref().unwrap_or("this test binary")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{ScratchPg, host, with_database};

    /// A database left by a run that died (its process gone) is dropped by
    /// the next `create`, as is its record; databases of live runs stay.
    #[tokio::test]
    async fn a_database_left_by_a_dead_run_is_dropped_by_the_next() {
        let Some(first) = ScratchPg::from_env("DATABASE_URL", "spg_left", "left").await else { return };
        let dead_pid: i64 = 4_000_000_000; // above any pid Linux gives
        sqlx::query("UPDATE scratch_pg_databases SET pid = $1 WHERE name = $2")
            .bind(dead_pid)
            .bind(&first.name)
            .execute(&first.admin)
            .await
            .unwrap();
        let live = ScratchPg::from_env("DATABASE_URL", "spg_live", "live").await.unwrap();
        let exists = |name: String| {
            let admin = live.admin.clone();
            async move {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = $1")
                        .bind(name)
                        .fetch_optional(&admin)
                        .await
                        .unwrap();
                found.is_some()
            }
        };
        assert!(!exists(first.name.clone()).await, "the dead run's database was dropped");
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM scratch_pg_databases WHERE name = $1 AND host = $2")
                .bind(&first.name)
                .bind(host())
                .fetch_one(&live.admin)
                .await
                .unwrap();
        assert_eq!(recorded, 0);
        assert!(exists(live.name.clone()).await);
        live.drop_database().await.unwrap();
        first.admin.close().await;
    }

    #[test]
    fn the_database_is_replaced_and_options_kept() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x_1"), "postgres://u@h:5432/x_1");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x_1"), "postgres://u@h/x_1?sslmode=disable");
    }
}
