//! `dashboard`: the web dashboard until stopped.

use crate::open::open_existing_database;
use crate::stop::stop_signal;
use anyhow::{Context, Result};
use std::path::Path;

/// The dashboard until Ctrl-C or SIGTERM.
pub(crate) async fn dashboard(database: Option<&str>, folder: &Path, addr: &str, token: Option<String>) -> Result<i32> {
    use directory_sync::dashboard::{Access, Dashboard};
    let db = open_existing_database(database, folder).await?;
    let folder = folder.canonicalize().with_context(|| format!("folder {}", folder.display()))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    let access = Access::for_address(&local, token);
    let mode = match &access {
        Access::Open => "actions open to this machine",
        Access::Token(_) => "actions need the token",
        Access::ReadOnly => "read-only (give --token to allow actions)",
    };
    errln!("dashboard on http://{local}/ ({mode}; Ctrl-C or SIGTERM to stop)");
    let signal = stop_signal()?.wait();
    // Actions check the dashboard's own token (Access); the guard checks names and sites.
    let router = directory_sync::access::guarded(Dashboard::new(db, Some(folder), access).router(), local.port(), None);
    axum::serve(listener, router).with_graceful_shutdown(signal).await?;
    Ok(0)
}
