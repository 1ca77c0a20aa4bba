//! Throwaway PostgreSQL databases for benchmarks and scenarios: each run
//! gets a fresh one on the server `DATABASE_URL` names, dropped afterwards.

use anyhow::Result;
pub use scratch_pg::ScratchPg;

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
