//! Throwaway PostgreSQL databases for the workspace's tests, benchmarks and
//! scenarios (a dev-dependency only; nothing the crates ship uses it).
//!
//! Each test gets a database of its own, `{prefix}_{uuid}`, on the server a
//! URL names, so tests run in parallel without seeing each other's rows and
//! a failed test leaves nothing that a later run trips over.
//!
//! ```no_run
//! # async fn demo() {
//! let Some(db) = scratch_pg::ScratchPg::from_env("DATABASE_URL", "demo", "my_test").await else { return };
//! // ... connect to db.url ...
//! db.drop_database().await.unwrap();
//! # }
//! ```

/// A database created for one test or run; [`ScratchPg::drop_database`]
/// removes it.
pub struct ScratchPg {
    admin: sqlx::PgPool,
    name: String,
    /// The new database's URL (the server URL with its database replaced).
    pub url: String,
}

impl ScratchPg {
    /// Creates `{prefix}_{uuid}` on the server of `server_url`.
    pub async fn create(server_url: &str, prefix: &str) -> Result<Self, sqlx::Error> {
        let admin = sqlx::PgPool::connect(server_url).await?;
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
        let url = with_database(server_url, &name);
        Ok(Self { admin, name, url })
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
        self.admin.close().await;
        Ok(())
    }
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
    use super::with_database;

    #[test]
    fn the_database_is_replaced_and_options_kept() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x_1"), "postgres://u@h:5432/x_1");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x_1"), "postgres://u@h/x_1?sslmode=disable");
    }
}
