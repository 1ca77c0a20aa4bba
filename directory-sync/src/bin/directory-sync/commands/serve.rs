//! `serve`: the MCP server on stdio or streamable HTTP.

use crate::cli::ToolOptions;
use crate::open::{existing_folder, folder_or_cwd, open_tools, registry_for, worker_config};
use crate::stop::{COMMAND_SHUTDOWN, stop_signal};
use anyhow::{Context, Result, bail};
use batch_core::CancellationToken;
use batch_tools::background::{TOOL_JOB, ToolJobHandler};
use directory_sync::Folders;
use job_queue::WorkerConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// The MCP server; a worker in the same process runs the embedding jobs the tools queue.
pub(crate) async fn serve(
    database: Option<&str>,
    options: &ToolOptions,
    folders: &[PathBuf],
    http: Option<String>,
    token: Option<String>,
    run_jobs: bool,
) -> Result<i32> {
    let (db, tools) = open_tools(database, options).await?;
    let base = std::env::current_dir().context("the current folder")?;
    let folders = if folders.is_empty() { vec![folder_or_cwd(options.path.clone())?] } else { folders.to_vec() };
    for folder in &folders {
        existing_folder(folder)?;
    }
    let jobs = directory_sync::job_tools::JobTools::new(db.clone(), &folders, &base)?;
    let mut registry = registry_for(&db, Folders::Any(db.clone())).await?;
    registry.register(TOOL_JOB, ToolJobHandler::new(tools.clone()));
    let shutdown = CancellationToken::new();
    // On a stop, running jobs get a moment, then stop at a chunk boundary and go back to the queue.
    let config = WorkerConfig { shutdown_timeout: COMMAND_SHUTDOWN, ..worker_config() };
    let worker = run_jobs.then(|| tokio::spawn(db.queue.worker(registry, config).run(shutdown.clone())));
    let server = directory_sync::mcp::ToolServer::new(tools).with_job_tools(jobs);
    match http {
        None => {
            // stdout carries the protocol: nothing else may be printed there.
            directory_sync::mcp::serve_stdio(server).await.map_err(|err| anyhow::anyhow!("the MCP session: {err}"))?;
        }
        Some(addr) => {
            use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
            use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
            let listener =
                tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
            let local = listener.local_addr()?;
            let token = token.filter(|t| !t.is_empty());
            if !local.ip().is_loopback() && token.is_none() {
                // Every tool (delete, export, import, fetch) would be open to the network.
                bail!(
                    "refusing to serve MCP on {local} without a token: give --token (or DIRECTORY_SYNC_TOKEN), or listen on a loopback address (e.g. 127.0.0.1:8090)"
                );
            }
            let mut config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
            config.max_request_body_bytes = directory_sync::mcp::MESSAGE_LIMIT;
            let service = StreamableHttpService::new(
                move || Ok(server.clone()),
                Arc::new(LocalSessionManager::default()),
                config,
            );
            let router =
                directory_sync::access::guarded(axum::Router::new().nest_service("/mcp", service), local.port(), token)
                    .layer(axum::middleware::from_fn(directory_sync::mcp::resume_after_last_event))
                    .layer(axum::middleware::from_fn(directory_sync::mcp::session_end_answers_200));
            errln!("serving MCP on http://{local}/mcp (Ctrl-C or SIGTERM to stop)");
            let (stop, signal) = (shutdown.clone(), stop_signal()?.wait());
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    signal.await;
                    stop.cancel();
                })
                .await?;
        }
    }
    shutdown.cancel();
    if let Some(worker) = worker {
        let running = db.queue.counts().await.map(|counts| {
            counts.values().filter_map(|by_state| by_state.get(&job_queue::JobState::Running)).sum::<u64>()
        });
        if running.is_ok_and(|running| running > 0) {
            errln!(
                "stopping: running jobs get {} s to finish, then stop at their next batch and go back to the queue",
                COMMAND_SHUTDOWN.as_secs()
            );
        }
        worker.await??;
    }
    Ok(0)
}
