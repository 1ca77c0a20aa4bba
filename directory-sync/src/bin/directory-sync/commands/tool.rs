//! `tool`: one batch tool call from the command line.

use crate::cli::ToolOptions;
use crate::commands::folder_job::wait_for_embedding;
use crate::display::{Display, Output};
use crate::open::{command_worker_config, open_tools, registry_for};
use crate::stop::{interrupted, stop_signal};
use anyhow::{Context, Result};
use batch_core::CancellationToken;
use directory_sync::Folders;

/// One tool call from the command line; the embedding it queues runs here
/// before the command returns. Exit code 1 when some items failed.
pub(crate) async fn tool(
    database: Option<&str>,
    options: &ToolOptions,
    name: &str,
    arguments: &str,
    output: Output,
) -> Result<i32> {
    let text = if arguments == "-" { std::io::read_to_string(std::io::stdin())? } else { arguments.to_owned() };
    let arguments: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("the arguments of {name} are not JSON"))?;
    let (db, tools) = open_tools(database, options).await?;
    let mut events = db.queue.subscribe();
    let registry = registry_for(&db, Folders::Any(db.clone())).await?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(db.queue.worker(registry, command_worker_config(None)).run(shutdown.clone()));
    let stop = stop_signal()?;
    // Embedding left running by a killed command is taken over, not waited out.
    let _ = db.queue.take_over_orphans().await;
    let call = batch_tools::Call { cancel: stop.token.child_token(), ..batch_tools::Call::default() };
    let result = tools.call(name, arguments, &call).await;
    let display = Display::for_database(output, &db);
    let waited = wait_for_embedding(&db, &mut events, &display, &stop.token).await;
    shutdown.cancel();
    worker.await??;
    display.clear();
    if stop.token.is_cancelled() {
        if let Ok(result) = &result {
            outln!("{}", serde_json::to_string_pretty(result)?);
        }
        return interrupted(&db, waited.err(), &stop).await;
    }
    let result = result.map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
    waited?;
    outln!("{}", serde_json::to_string_pretty(&result)?);
    let failed = result["errors"].as_array().is_some_and(|errors| !errors.is_empty());
    Ok(i32::from(failed))
}
