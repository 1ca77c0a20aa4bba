//! Throwaway PostgreSQL databases for benchmarks and scenarios: each run
//! gets a fresh one on the server `DATABASE_URL` names, dropped afterwards.

use anyhow::Result;

pub struct ScratchPg {
    admin: sqlx::PgPool,
    name: String,
    /// The new database's URL.
    pub url: String,
}

impl ScratchPg {
    /// Creates `{prefix}_{uuid}` on the server of `server_url`.
    pub async fn create(server_url: &str, prefix: &str) -> Result<Self> {
        let admin = sqlx::PgPool::connect(server_url).await?;
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
        let base = server_url.rsplit_once('/').map_or(server_url, |(base, _)| base);
        let url = format!("{base}/{name}");
        Ok(Self { admin, name, url })
    }

    /// Drops the database, closing connections still open to it.
    pub async fn drop_database(self) -> Result<()> {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&self.admin).await?;
        self.admin.close().await;
        Ok(())
    }
}

/// Runs `body` on a scratch database and drops it whatever the outcome.
pub async fn with_scratch_pg<T, F, Fut>(server_url: &str, prefix: &str, body: F) -> Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let scratch = ScratchPg::create(server_url, prefix).await?;
    let outcome = body(scratch.url.clone()).await;
    scratch.drop_database().await?;
    outcome
}
