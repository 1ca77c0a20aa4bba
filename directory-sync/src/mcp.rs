//! The batch tools as a Model Context Protocol server (the official `rmcp`
//! SDK), on stdio or streamable HTTP: tools listed with their JSON Schemas,
//! arguments checked (a refusal is a tool result with `isError: true`, so
//! the model reads why; only an unknown tool is a protocol error), tools
//! annotated (read-only, destructive, open-world),
//! progress sent as MCP progress notifications when the client asks with a
//! progress token, and an MCP cancellation reaching the call's
//! cancellation token.

use std::sync::Arc;
use std::time::Duration;

use batch_core::{ProgressReporter, ProgressUpdate, ThrottledReporter};
use batch_tools::{BatchTools, Call, ToolError};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::Value;

/// One MCP session's handler; cheap to clone (one per HTTP session).
#[derive(Clone)]
pub struct ToolServer {
    tools: BatchTools,
}

impl ToolServer {
    pub fn new(tools: BatchTools) -> Self {
        Self { tools }
    }

    fn tool_list() -> Vec<Tool> {
        batch_tools::TOOLS
            .iter()
            .map(|(name, description)| Tool::new(*name, *description, input_schema(name)).annotate(annotations(name)))
            .collect()
    }
}

/// What a client may assume of a tool (MCP tool annotations).
fn annotations(name: &str) -> ToolAnnotations {
    let base = ToolAnnotations::new().read_only(false).destructive(true);
    match name {
        "batch_search" => ToolAnnotations::new().read_only(true),
        // Same arguments, same end state.
        "batch_update" | "batch_delete" => base.idempotent(true),
        // Fetches URLs: the world outside the store.
        "batch_extract" => {
            let mut annotations = base;
            annotations.open_world_hint = Some(true);
            annotations
        }
        _ => base,
    }
}

fn input_schema(name: &str) -> Arc<JsonObject> {
    match batch_tools::input_schema(name).map(serde_json::to_value) {
        Some(Ok(Value::Object(object))) => Arc::new(object),
        _ => Arc::new(JsonObject::new()),
    }
}

impl ServerHandler for ToolServer {
    fn get_info(&self) -> ServerConfig {
        let mut config = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        config.server_info = Implementation::new("directory-sync", env!("CARGO_PKG_VERSION"));
        config.instructions = Some(
            "Batch tools over a store of markdown documents. A collection is a document type; \
             filters use the store's filter language, e.g. metadata.status = \"draft\" and version > 1."
                .into(),
        );
        config
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(Self::tool_list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        Self::tool_list().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let progress = Arc::new(McpProgress::new(context.peer.clone(), context.meta.get_progress_token()));
        let throttled = ThrottledReporter::new(progress.clone(), McpProgress::INTERVAL);
        let call = Call { progress: Arc::new(throttled), cancel: context.ct.clone() };
        let outcome = self.tools.call(&request.name, arguments, &call).await;
        progress.flush().await;
        match outcome {
            Ok(value) => Ok(CallToolResult::structured(value).into()),
            Err(ToolError::Invalid(reason)) if !batch_tools::TOOLS.iter().any(|(name, _)| *name == request.name) => {
                Err(ErrorData::invalid_params(reason, None))
            }
            // Refusals too are results, so the caller (often a model) reads why and can correct the call.
            Err(err) => Ok(CallToolResult::error(vec![ContentBlock::text(err.to_string())]).into()),
        }
    }
}

/// Sends a call's progress as MCP progress notifications, in order, all
/// before the call's result (rate-limited by the caller's throttle).
struct McpProgress {
    sender: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ProgressNotificationParam>>>,
    forwarder: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    token: Option<ProgressToken>,
}

impl McpProgress {
    /// At most a few notifications a second: enough to watch, few enough for any client.
    const INTERVAL: Duration = Duration::from_millis(250);

    fn new(peer: Peer<RoleServer>, token: Option<ProgressToken>) -> Self {
        let (sender, forwarder) = match &token {
            Some(_) => {
                let (sender, mut pending) = tokio::sync::mpsc::unbounded_channel::<ProgressNotificationParam>();
                let forwarder = tokio::spawn(async move {
                    while let Some(update) = pending.recv().await {
                        if peer.notify_progress(update).await.is_err() {
                            break; // the client is gone
                        }
                    }
                });
                (Some(sender), Some(forwarder))
            }
            None => (None, None),
        };
        Self { sender: std::sync::Mutex::new(sender), forwarder: std::sync::Mutex::new(forwarder), token }
    }

    /// Waits until every notification so far is sent; later reports are dropped.
    async fn flush(&self) {
        drop(lock(&self.sender).take());
        let forwarder = lock(&self.forwarder).take();
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ProgressReporter for McpProgress {
    fn report(&self, update: &ProgressUpdate) {
        let Some(token) = &self.token else { return };
        let progress = &update.progress;
        let mut notification = ProgressNotificationParam::new(token.clone(), progress.current as f64);
        if progress.total > 0 {
            notification = notification.with_total(progress.total as f64);
        }
        if !progress.message.is_empty() {
            notification = notification.with_message(progress.message.clone());
        }
        if let Some(sender) = lock(&self.sender).as_ref() {
            let _ = sender.send(notification);
        }
    }
}
