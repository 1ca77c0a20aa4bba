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

use crate::job_tools::JobTools;
use serde_json::Value;

/// One MCP session's handler; cheap to clone (one per HTTP session).
#[derive(Clone)]
pub struct ToolServer {
    tools: BatchTools,
    /// The folder and job tools, when the server has them.
    jobs: Option<Arc<JobTools>>,
}

impl ToolServer {
    /// A server of the eight batch tools over `tools`, without folder or job tools.
    pub fn new(tools: BatchTools) -> Self {
        Self { tools, jobs: None }
    }

    /// The same server with the folder and job tools too.
    #[must_use]
    pub fn with_job_tools(mut self, jobs: JobTools) -> Self {
        self.jobs = Some(Arc::new(jobs));
        self
    }

    fn tool_list(&self) -> Vec<Tool> {
        let job_tools = self.jobs.as_ref().map_or(&[][..], |_| crate::job_tools::JOB_TOOLS);
        batch_tools::TOOLS
            .iter()
            .chain(job_tools)
            .map(|(name, description)| {
                Tool::new(*name, *description, input_schema(name, self.jobs.is_some())).annotate(annotations(name))
            })
            .collect()
    }
}

/// What a client may assume of a tool (MCP tool annotations).
fn annotations(name: &str) -> ToolAnnotations {
    let base = ToolAnnotations::new().read_only(false).destructive(true);
    match name {
        "batch_search" | "job_status" | "list_jobs" | "folder_status" => ToolAnnotations::new().read_only(true),
        // Stops or requeues work; deletes nothing. (A folder tool may delete:
        // an import or sync removes the entities of files that are gone.)
        "cancel_job" | "retry_job" => ToolAnnotations::new().read_only(false).destructive(false),
        // Same arguments, same end state (not batch_update: a template may append).
        "batch_delete" => base.idempotent(true),
        // Fetches URLs: the world outside the store.
        "batch_extract" => {
            let mut annotations = base;
            annotations.open_world_hint = Some(true);
            annotations
        }
        _ => base,
    }
}

fn input_schema(name: &str, background: bool) -> Arc<JsonObject> {
    let schema = batch_tools::input_schema(name).or_else(|| crate::job_tools::input_schema(name));
    let mut object = match schema.map(serde_json::to_value) {
        Some(Ok(Value::Object(object))) => object,
        _ => JsonObject::new(),
    };
    if background && batch_tools::TOOLS.iter().any(|(tool, _)| *tool == name) {
        object.entry("properties").or_insert_with(|| Value::Object(JsonObject::new()));
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            properties.insert(BACKGROUND.into(), background_schema());
        }
    }
    Arc::new(object)
}

/// The argument that runs a batch tool call as a job.
const BACKGROUND: &str = "background";

fn background_schema() -> Value {
    serde_json::json!({
        "type": "boolean",
        "default": false,
        "description": format!(
            "Run the call as a job and answer at once with {{status: \"queued\", job_id, tip}}: follow it with \
             job_status (its output is the result once completed), stop it with cancel_job (rollback: true undoes a \
             call that writes all or nothing). The arguments may then be at most {} bytes.",
            job_queue::MAX_INPUT_BYTES
        ),
    })
}

impl ServerHandler for ToolServer {
    fn get_info(&self) -> ServerConfig {
        let mut config = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        config.server_info = Implementation::new("directory-sync", env!("CARGO_PKG_VERSION"));
        config.instructions = Some(
            "Batch tools over a store of markdown documents. A collection is a document type; \
             filters use the store's filter language, e.g. metadata.status = \"draft\" and version > 1. \
             Where the folder tools are listed, sync_folder, import_files and export_entities queue a job \
             and answer at once; follow it with job_status, stop it with cancel_job."
                .into(),
        );
        config
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tool_list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_list().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut arguments = request.arguments.unwrap_or_default();
        let background = arguments.remove(BACKGROUND);
        let arguments = Value::Object(arguments);
        if let Some(background) = background {
            let is_batch_tool = batch_tools::TOOLS.iter().any(|(name, _)| *name == request.name);
            let queued = match (background, &self.jobs) {
                (_, _) if !is_batch_tool => Err(ToolError::Invalid(format!(
                    "{}: `background` is an argument of the batch tools only",
                    request.name
                ))),
                (Value::Bool(false), _) => Ok(None),
                (Value::Bool(true), Some(jobs)) => {
                    jobs.queue_tool_call(&self.tools, &request.name, arguments.clone()).await.map(Some)
                }
                (Value::Bool(true), None) => {
                    Err(ToolError::Invalid("this server runs no jobs: call without background".into()))
                }
                (other, _) => Err(ToolError::Invalid(format!("background must be true or false, not {other}"))),
            };
            match queued {
                Ok(Some(value)) => return Ok(tool_result(value).into()),
                Ok(None) => {}
                Err(err) => return Ok(CallToolResult::error(vec![ContentBlock::text(err.to_string())]).into()),
            }
        }
        if let Some(jobs) = &self.jobs
            && crate::job_tools::JOB_TOOLS.iter().any(|(name, _)| *name == request.name)
        {
            // They answer at once: the work runs as a job.
            return match jobs.call(&request.name, arguments).await {
                Some(Ok(value)) => Ok(tool_result(value).into()),
                Some(Err(err)) => Ok(CallToolResult::error(vec![ContentBlock::text(err.to_string())]).into()),
                None => Err(ErrorData::invalid_params(format!("unknown tool `{}`", request.name), None)),
            };
        }
        let progress = Arc::new(McpProgress::new(context.peer.clone(), context.meta.get_progress_token()));
        let throttled = ThrottledReporter::new(progress.clone(), McpProgress::INTERVAL);
        let call = Call { progress: Arc::new(throttled), cancel: context.ct.clone() };
        let outcome = self.tools.call(&request.name, arguments, &call).await;
        progress.flush().await;
        match outcome {
            Ok(value) => Ok(tool_result(value).into()),
            Err(ToolError::Invalid(reason)) if !batch_tools::TOOLS.iter().any(|(name, _)| *name == request.name) => {
                Err(ErrorData::invalid_params(reason, None))
            }
            // Refusals too are results, so the caller (often a model) reads why and can correct the call.
            Err(err) => Ok(CallToolResult::error(vec![ContentBlock::text(err.to_string())]).into()),
        }
    }
}

/// Results whose JSON is longer than this carry a summary as their text
/// content instead of a second copy of the JSON.
const FULL_TEXT_LIMIT: usize = 64 * 1024;

/// A tool's output as the result: the JSON as `structuredContent` and,
/// as the MCP specification recommends, as text too; a large one's text is
/// a summary (its numbers and true/false fields, the length of its lists),
/// so the answer stays one copy of the JSON: the official Python SDK reads
/// server-sent events of at most 1 MiB, and 10,000 documents' ids twice
/// would exceed it.
fn tool_result(value: Value) -> CallToolResult {
    let text = value.to_string();
    let mut result = CallToolResult::structured(value);
    if text.len() > FULL_TEXT_LIMIT
        && let Some(Value::Object(fields)) = &result.structured_content
    {
        let parts: Vec<String> = fields
            .iter()
            .filter_map(|(key, value)| match value {
                Value::Array(items) => Some(format!("{key}: {} items", items.len())),
                Value::Number(_) | Value::Bool(_) => Some(format!("{key}: {value}")),
                _ => None,
            })
            .collect();
        let summary =
            format!("{} (the full result, {} bytes of JSON, is in structuredContent)", parts.join(", "), text.len());
        result.content = vec![ContentBlock::text(summary)];
    }
    result
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

/// Largest MCP message accepted, in bytes, on stdio and over HTTP alike
/// (16 MiB): a call of up to 10,000 documents must fit in it.
pub const MESSAGE_LIMIT: usize = 16 * 1024 * 1024;
/// Bytes of an oversized message kept to find its request id.
const HEAD_KEPT: usize = 64 * 1024;

/// Serves `server` on this process's stdin and stdout until stdin closes.
/// Every message gets an answer: one over [`MESSAGE_LIMIT`] is not passed
/// on but answered here with a JSON-RPC error (`-32600`, with the request's
/// id when its start holds one, else `null`) and named in one line on
/// stderr; the SDK alone would drop it without a word.
pub async fn serve_stdio(server: ToolServer) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use rmcp::ServiceExt;
    let (server_in, requests) = tokio::io::duplex(256 * 1024);
    let (replies, server_out) = tokio::io::duplex(256 * 1024);
    let (refusals, refused) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let reading = tokio::spawn(pump_requests(tokio::io::stdin(), requests, refusals, MESSAGE_LIMIT));
    let writing = tokio::spawn(pump_replies(replies, refused, tokio::io::stdout()));
    let running = server.serve((server_in, server_out)).await?;
    running.waiting().await?;
    reading.abort();
    let _ = writing.await;
    Ok(())
}

/// Copies whole lines from `input` to `server`; a line over `limit` bytes
/// is dropped as it streams (never held whole) and its refusal sent to
/// `refusals`.
async fn pump_requests(
    input: impl tokio::io::AsyncRead + Unpin,
    mut server: impl tokio::io::AsyncWrite + Unpin,
    refusals: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    limit: usize,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, input);
    let mut line: Vec<u8> = Vec::new();
    // (bytes so far, the start kept) while an oversized line streams past.
    let mut oversized: Option<(usize, Vec<u8>)> = None;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if !line.is_empty() {
                server.write_all(&line).await?;
            }
            return server.shutdown().await;
        }
        let end = available.iter().position(|&b| b == b'\n').map(|at| at + 1);
        let chunk = &available[..end.unwrap_or(available.len())];
        let taken = chunk.len();
        match &mut oversized {
            Some((total, head)) => {
                *total += taken;
                let room = HEAD_KEPT.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..room.min(taken)]);
            }
            None if line.len() + taken > limit => {
                let mut head = std::mem::take(&mut line);
                let total = head.len() + taken;
                head.truncate(HEAD_KEPT);
                let room = HEAD_KEPT.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..room.min(taken)]);
                oversized = Some((total, head));
            }
            None => line.extend_from_slice(chunk),
        }
        reader.consume(taken);
        if end.is_some() {
            if let Some((total, head)) = oversized.take() {
                let _ = refusals.send(refusal(total, &head, limit));
            } else {
                server.write_all(&line).await?;
                server.flush().await?;
                line.clear();
            }
        }
    }
}

/// The JSON-RPC error line for a message of `total` bytes starting with `head`.
fn refusal(total: usize, head: &[u8], limit: usize) -> Vec<u8> {
    let id = request_id(head);
    let message = format!(
        "the message is {total} bytes, over the limit of {limit} bytes ({} MiB) per MCP message; send fewer or smaller documents per call",
        limit / (1024 * 1024)
    );
    eprintln!("directory-sync: refused an MCP message (request id {id}): {message}");
    let mut line = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": message}
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// The top-level `"id"` of a JSON-RPC message from its first bytes: the
/// first `"id"` before `"params"` (ids inside the arguments come later).
fn request_id(head: &[u8]) -> Value {
    let text = String::from_utf8_lossy(head);
    let params = text.find("\"params\"").unwrap_or(text.len());
    let Some(at) = text[..params].find("\"id\"") else { return Value::Null };
    let rest = text[at + 4..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else { return Value::Null };
    let mut values = serde_json::Deserializer::from_str(rest.trim_start()).into_iter::<Value>();
    match values.next() {
        Some(Ok(id @ (Value::Number(_) | Value::String(_)))) => id,
        _ => Value::Null,
    }
}

/// Copies the server's reply lines to `output`, putting refusals between
/// them (never inside one).
async fn pump_replies(
    replies: impl tokio::io::AsyncRead + Unpin,
    mut refused: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    mut output: impl tokio::io::AsyncWrite + Unpin,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut replies = tokio::io::BufReader::new(replies);
    let mut line = Vec::new();
    let mut refusals_open = true;
    loop {
        tokio::select! {
            read = replies.read_until(b'\n', &mut line) => {
                if read? == 0 {
                    return output.flush().await;
                }
                output.write_all(&line).await?;
                output.flush().await?;
                line.clear();
            }
            refusal = refused.recv(), if refusals_open => match refusal {
                Some(refusal) => {
                    output.write_all(&refusal).await?;
                    output.flush().await?;
                }
                None => refusals_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_read_from_the_start_of_a_message() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{"documents":[{"id":"x"}"#,
                json_number(7),
            ),
            (r#"{"jsonrpc":"2.0", "id" : "abc", "method":"tools/call","params":{"#, Value::from("abc")),
            (r#"{"jsonrpc":"2.0","method":"tools/call","params":{"documents":[{"id":"x"}"#, Value::Null),
            ("not json at all", Value::Null),
        ];
        for (head, expected) in cases {
            assert_eq!(request_id(head.as_bytes()), expected, "{head}");
        }
    }

    fn json_number(n: i64) -> Value {
        Value::from(n)
    }

    #[tokio::test]
    async fn an_oversized_line_is_refused_and_the_next_one_passes() {
        let big = format!("{{\"jsonrpc\":\"2.0\",\"id\":3,\"params\":\"{}\"}}\n", "x".repeat(5000));
        let input = format!("{{\"id\":1}}\n{big}{{\"id\":2}}\n");
        let (refusals, mut refused) = tokio::sync::mpsc::unbounded_channel();
        let mut passed = Vec::new();
        pump_requests(input.as_bytes(), &mut passed, refusals, 1000).await.unwrap();
        assert_eq!(String::from_utf8(passed).unwrap(), "{\"id\":1}\n{\"id\":2}\n");
        let refusal: Value = serde_json::from_slice(&refused.recv().await.unwrap()).unwrap();
        assert_eq!(refusal["id"], 3);
        assert_eq!(refusal["error"]["code"], -32600);
        assert!(refusal["error"]["message"].as_str().unwrap().contains(&format!("{} bytes", big.len())));
    }
}

/// The `Last-Event-ID` a client sends to resume a stream, moved one event
/// on, for `rmcp`'s session manager.
///
/// Workaround: rmcp 3.11 (`LocalSessionManager`, `sync`) replays the cached
/// events from the one *named* by `Last-Event-ID`, though the header names
/// the last event the client already has (WHATWG HTML, "server-sent
/// events"; MCP streamable HTTP, "Resumability and Redelivery": replay the
/// messages after it). A client thus gets that event twice, and its
/// progress goes backwards. Event ids are `INDEX` or `INDEX/REQUEST`.
pub fn next_event_id(last: &str) -> Option<String> {
    let (index, request) = match last.split_once('/') {
        Some((index, request)) => (index, Some(request)),
        None => (last, None),
    };
    let next = index.parse::<usize>().ok()?.checked_add(1)?;
    Some(match request {
        Some(request) => format!("{next}/{request}"),
        None => next.to_string(),
    })
}

/// Axum middleware applying [`next_event_id`] to resumed streams.
pub async fn resume_after_last_event(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let header = axum::http::HeaderName::from_static("last-event-id");
    let moved = request.headers().get(&header).and_then(|v| v.to_str().ok()).and_then(next_event_id);
    if let Some(moved) = moved.and_then(|m| axum::http::HeaderValue::from_str(&m).ok()) {
        request.headers_mut().insert(header, moved);
    }
    next.run(request).await
}

/// Axum middleware: a session ended by `DELETE` is answered 200, not the
/// 202 of rmcp 3.11. Both mean success in HTTP, but the official Python
/// SDK counts only 200 and 204 and logs "Session termination failed" on
/// every clean shutdown otherwise.
pub async fn session_end_answers_200(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let deleting = request.method() == axum::http::Method::DELETE;
    let mut response = next.run(request).await;
    if deleting && response.status() == axum::http::StatusCode::ACCEPTED {
        *response.status_mut() = axum::http::StatusCode::OK;
    }
    response
}

#[cfg(test)]
mod result_tests {
    use serde_json::json;

    #[test]
    fn a_large_result_carries_its_json_once() {
        let small = super::tool_result(json!({"processed": 1, "added": [{"id": "a"}]}));
        assert_eq!(small.content[0].as_text().unwrap().text, r#"{"processed":1,"added":[{"id":"a"}]}"#);
        let ids: Vec<_> = (0..10_000).map(|i| json!({"collection": "document", "id": format!("{i:036}")})).collect();
        let large = super::tool_result(json!({"processed": 10_000, "added": ids, "rolled_back": false}));
        let text = &large.content[0].as_text().unwrap().text;
        assert!(text.starts_with("processed: 10000, added: 10000 items, rolled_back: false"), "{text}");
        assert!(text.len() < 200);
        assert!(large.structured_content.is_some());
    }
}

#[cfg(test)]
mod resume_tests {
    #[test]
    fn a_resumed_stream_starts_after_the_last_event_seen() {
        for (last, next) in [("5/0", Some("6/0")), ("0", Some("1")), ("12/7", Some("13/7")), ("x/1", None), ("", None)]
        {
            assert_eq!(super::next_event_id(last).as_deref(), next, "{last}");
        }
    }
}
