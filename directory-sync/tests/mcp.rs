//! The batch tools through real MCP client sessions (the `rmcp` client):
//! over stdio with the binary spawned, and over streamable HTTP on
//! localhost. Schemas are listed, calls succeed, progress notifications
//! arrive, a cancellation stops the work, bad arguments are protocol errors
//! and the delete safety rules hold.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ClientRequest, ErrorCode, JsonObject, ProgressNotificationParam, Request, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_directory-sync");

/// A server process, killed when the test ends, also when an assertion fails.
struct Server(std::process::Child);

/// `serve ARGS --path FOLDER` over HTTP, and the URL of its endpoint (from its first stderr line).
fn serve_http<A: AsRef<std::ffi::OsStr>>(folder: &std::path::Path, args: &[A]) -> (Server, String) {
    let mut server = Server(
        Command::new(BINARY)
            .arg("serve")
            .args(args)
            .arg("--path")
            .arg(folder)
            .env_remove("DATABASE_URL")
            .env_remove("DIRECTORY_SYNC_TOKEN")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut banner = String::new();
    BufReader::new(server.0.stderr.take().unwrap()).read_line(&mut banner).unwrap();
    let url = banner.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    (server, url)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client that keeps every progress notification it receives, and
/// publishes how many it has, so a test can wait for the next one.
#[derive(Clone)]
struct Client {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    received: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for Client {
    fn default() -> Self {
        Self { progress: Arc::default(), received: Arc::new(tokio::sync::watch::Sender::new(0)) }
    }
}

impl ClientHandler for Client {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        let count = {
            let mut progress = self.progress.lock().unwrap();
            progress.push(params);
            progress.len()
        };
        self.received.send_replace(count);
    }
}

type Session = RunningService<RoleClient, Client>;

fn arguments(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        other => panic!("arguments must be an object, not {other}"),
    }
}

async fn call(session: &Session, tool: &'static str, args: Value) -> Result<Value, rmcp::ServiceError> {
    let result = session.call_tool(CallToolRequestParams::new(tool).with_arguments(arguments(args))).await?;
    assert_ne!(result.is_error, Some(true), "{tool} failed: {result:?}");
    Ok(result.structured_content.expect("structured output"))
}

/// A call the tool refuses: a result with `isError: true` whose text says
/// why (MCP: validation failures are tool results the model can read).
async fn refusal(session: &Session, tool: &'static str, args: Value) -> String {
    let result = session.call_tool(CallToolRequestParams::new(tool).with_arguments(arguments(args))).await.unwrap();
    assert_eq!(result.is_error, Some(true), "{tool} should refuse: {result:?}");
    result.content.iter().filter_map(|block| block.as_text().map(|t| t.text.clone())).collect()
}

/// A call that asks for progress; waits for its result.
async fn call_with_progress(session: &Session, tool: &'static str, args: Value) -> Value {
    let request =
        ClientRequest::CallToolRequest(Request::new(CallToolRequestParams::new(tool).with_arguments(arguments(args))));
    let handle = session.send_cancellable_request(request, PeerRequestOptions::no_options()).await.unwrap();
    match handle.await_response().await.unwrap() {
        ServerResult::CallToolResult(result) => result.structured_content.unwrap(),
        other => panic!("unexpected reply {other:?}"),
    }
}

fn recipes() -> Value {
    let docs: Vec<Value> = (0..60)
        .map(|i| json!({"id": format!("r{i:02}"), "content": format!("Recipe {i}: flour, water and salt, baked {i} minutes."),
                        "metadata": {"kind": if i % 2 == 0 { "bread" } else { "cake" }}}))
        .collect();
    json!(docs)
}

/// What every transport must do, on one session.
async fn exercise(session: &Session, files: &std::path::Path) {
    let tools = session.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    let expected: Vec<&str> =
        batch_tools::TOOLS.iter().chain(directory_sync::job_tools::JOB_TOOLS).map(|(name, _)| *name).collect();
    assert_eq!(names, expected);
    for tool in &tools {
        let properties = tool.input_schema.get("properties").and_then(Value::as_object);
        assert!(
            properties.is_some_and(|p| !p.is_empty()),
            "{} publishes its arguments: {:?}",
            tool.name,
            tool.input_schema
        );
    }

    let added = call(session, "batch_add", json!({"documents": recipes(), "collection": "recipe"})).await.unwrap();
    assert_eq!(added["processed"], 60);

    let before = session.service().progress.lock().unwrap().len();
    let queries: Vec<Value> =
        (0..40).map(|i| json!({"query": format!("baked {i} minutes"), "search_type": "text"})).collect();
    let found = call_with_progress(session, "batch_search", json!({"queries": queries, "max_parallel": 2})).await;
    assert_eq!(found["processed"], 40);
    assert_eq!(found["results"][0]["hits"][0]["collection"], "recipe");
    let progress = session.service().progress.lock().unwrap()[before..].to_vec();
    assert!(!progress.is_empty(), "progress notifications arrived");
    let last = progress.last().unwrap();
    assert_eq!((last.progress, last.total), (40.0, Some(40.0)), "the last one says the call is done");

    let why = refusal(session, "batch_add", json!({"documents": "not a list"})).await;
    assert!(why.contains("batch_add"), "{why}");
    // Only an unknown tool is a protocol error.
    let err = call(session, "batch_nothing", json!({})).await.unwrap_err();
    let rmcp::ServiceError::McpError(data) = err else { panic!("expected a protocol error, got {err:?}") };
    assert_eq!(data.code, ErrorCode::INVALID_PARAMS);
    for tool in &tools {
        let annotations = tool.annotations.as_ref().expect("annotated");
        let read_only = ["batch_search", "job_status", "list_jobs", "folder_status"].contains(&tool.name.as_ref());
        let stops_work = ["cancel_job", "retry_job"].contains(&tool.name.as_ref());
        assert_eq!(annotations.read_only_hint, Some(read_only), "{}", tool.name);
        let destructive = if read_only { None } else { Some(!stops_work) };
        assert_eq!(annotations.destructive_hint, destructive, "{}", tool.name);
    }

    let update = json!({"filter": "metadata.kind = \"cake\"", "metadata_updates": {"sweet": true}});
    let updated = call(session, "batch_update", update).await.unwrap();
    assert_eq!(updated["updated"].as_array().map(Vec::len), Some(30));
    let too_many = json!({"filter": "entity_type = \"recipe\"", "metadata_updates": {"x": 1}, "max_documents": 10});
    let why = refusal(session, "batch_update", too_many).await;
    assert!(why.contains("max_documents"), "{why}");
    let preview = call(session, "batch_delete", json!({"filter": "metadata.kind = \"cake\""})).await.unwrap();
    assert_eq!((preview["dry_run"].as_bool(), preview["matched"].as_u64()), (Some(true), Some(30)));
    let wrong = json!({"filter": "metadata.kind = \"cake\"", "dry_run": false, "confirm_count": 29});
    let why = refusal(session, "batch_delete", wrong).await;
    assert!(why.contains("set confirm_count") || why.contains("nothing deleted"), "{why}");
    let right = json!({"filter": "metadata.kind = \"cake\"", "dry_run": false, "confirm_count": 30});
    assert_eq!(call(session, "batch_delete", right).await.unwrap()["deleted"], 30);
    let left = call(session, "batch_delete", json!({"filter": "entity_type = \"recipe\""})).await.unwrap();
    assert_eq!(left["matched"], 30, "only the confirmed documents went");

    let enhanced = call(session, "batch_enhance", json!({"filter": "entity_type = \"recipe\""})).await.unwrap();
    assert_eq!(
        (enhanced["updated"].as_array().map(Vec::len), enhanced["enhancer"].as_str()),
        (Some(30), Some("local"))
    );
    std::fs::write(files.join("readme.md"), "---\nowner: ana\n---\n# Read me\nFirst words.\n").unwrap();
    let extracted =
        call(session, "batch_extract", json!({"files": ["readme.md"], "collection": "source"})).await.unwrap();
    assert_eq!(extracted["added"], json!([{"collection": "source", "id": "readme"}]), "{extracted}");
    let owned = call(session, "batch_delete", json!({"filter": "metadata.owner = \"ana\""})).await.unwrap();
    assert_eq!(owned["matched"], 1, "the frontmatter became metadata");
    export_and_import_round_trip(session, files).await;
}

/// Each format out and back in over the protocol: export, delete, import.
async fn export_and_import_round_trip(session: &Session, files: &std::path::Path) {
    let recipes = json!({"filter": "entity_type = \"recipe\""});
    for format in ["json", "jsonl", "csv", "parquet"] {
        let path = format!("recipes.{format}");
        let exported = call(session, "batch_export", json!({"path": path, "filter": recipes["filter"]})).await.unwrap();
        assert_eq!(exported["exported"], 30, "{format}");
        assert!(files.join(&path).is_file(), "{format}: written under the files root");
        let gone = json!({"filter": recipes["filter"], "dry_run": false, "confirm_count": 30});
        assert_eq!(call(session, "batch_delete", gone).await.unwrap()["deleted"], 30);
        let imported = call(session, "batch_import", json!({"path": path})).await.unwrap();
        assert_eq!((imported["processed"].as_u64(), imported["error_count"].as_u64()), (Some(30), Some(0)), "{format}");
        let back = call(session, "batch_delete", recipes.clone()).await.unwrap();
        assert_eq!(back["matched"], 30, "{format}: every document came back");
        let titled = call(session, "batch_delete", json!({"filter": "metadata.title exists"})).await.unwrap();
        assert_eq!(titled["matched"], 30, "{format}: with the metadata it had");
    }
    let outside = refusal(session, "batch_export", json!({"path": "../outside.json"})).await;
    assert!(outside.contains("outside.json"), "{outside}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(BINARY);
    command.arg("serve").arg("--path").arg(dir.path()).arg("--files-root").arg(dir.path()).env_remove("DATABASE_URL");
    let transport = rmcp::transport::TokioChildProcess::new(command).unwrap();
    let session = Client::default().serve(transport).await.unwrap();
    exercise(&session, dir.path()).await;
    cancel_stops_the_work(&session).await;
    session.cancel().await.unwrap();
}

/// Cancels a long search after its first progress notification: no more
/// progress follows, it stopped short of the end, and the server goes on
/// answering.
async fn cancel_stops_the_work(session: &Session) {
    let before = session.service().progress.lock().unwrap().len();
    let queries: Vec<Value> =
        (0..1000).map(|i| json!({"query": format!("flour {i}"), "search_type": "text"})).collect();
    let args = json!({"queries": queries, "max_parallel": 1});
    let request = ClientRequest::CallToolRequest(Request::new(
        CallToolRequestParams::new("batch_search").with_arguments(arguments(args)),
    ));
    let mut received = session.service().received.subscribe();
    let handle = session.send_cancellable_request(request, PeerRequestOptions::no_options()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), received.wait_for(|count| *count > before)).await;
    assert!(first.is_ok_and(|seen| seen.is_ok()), "the search reported progress");
    handle.cancel(Some("test".into())).await.unwrap();
    // Wait for the notifications to stop: a call still running reports 4
    // times a second, so a second without one means it has ended.
    while tokio::time::timeout(Duration::from_secs(1), received.changed()).await.is_ok() {}
    let progress = session.service().progress.lock().unwrap()[before..].to_vec();
    assert!(progress.last().unwrap().progress < 1000.0, "stopped before the end: {:?}", progress.last());
    let all = batch_tools::TOOLS.len() + directory_sync::job_tools::JOB_TOOLS.len();
    assert_eq!(session.list_all_tools().await.unwrap().len(), all, "the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_over_streamable_http() {
    let dir = tempfile::tempdir().unwrap();
    // Killed when the test ends, also when an assertion fails.
    let mut server = Server(
        Command::new(BINARY)
            .args(["serve", "--http", "127.0.0.1:0", "--path"])
            .arg(dir.path())
            .arg("--files-root")
            .arg(dir.path())
            .env_remove("DATABASE_URL")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut banner = String::new();
    BufReader::new(server.0.stderr.take().unwrap()).read_line(&mut banner).unwrap();
    let url = banner.split_whitespace().find(|w| w.starts_with("http://")).expect("the server says where it listens");
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.to_owned());
    let session = Client::default().serve(transport).await.unwrap();
    exercise(&session, dir.path()).await;
    session.cancel().await.unwrap();
    Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap();
    assert!(server.0.wait().unwrap().success(), "the server stops cleanly on SIGTERM");
}

/// The MCP endpoint answers only requests that name this server and come
/// from no page or its own (the transport specification asks servers to
/// check `Origin`); without authentication it listens on loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_endpoint_refuses_foreign_hosts_and_origins() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = serve_http(dir.path(), &["--http", "127.0.0.1:0"]);
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(20)).build().unwrap();
    let port = url.trim_end_matches("/mcp").rsplit(':').next().unwrap().to_owned();
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    });
    let send = |headers: Vec<(&'static str, String)>| {
        let mut request = client.post(&url).header("accept", "application/json, text/event-stream").json(&initialize);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(vec![("origin", "https://evil.example".into())]).await, 403, "a foreign Origin");
    assert_eq!(send(vec![("host", format!("evil.example:{port}"))]).await, 403, "a foreign Host");
    assert_eq!(send(vec![("origin", url.trim_end_matches("/mcp").to_owned())]).await, 200, "its own origin");
    assert_eq!(send(vec![]).await, 200, "no Origin (not a browser)");
    let cross_site = vec![("sec-fetch-site", "cross-site".into())];
    assert_eq!(send(cross_site).await, 403, "a POST a page of another site makes");
    assert_eq!(send(vec![("sec-fetch-site", "same-site".into())]).await, 403, "a page of another local port");
    assert_eq!(send(vec![("sec-fetch-site", "same-origin".into())]).await, 200);
    drop(server);

    let everywhere = Command::new(BINARY)
        .args(["serve", "--http", "0.0.0.0:0", "--path"])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("DIRECTORY_SYNC_TOKEN")
        .output()
        .unwrap();
    assert_eq!(everywhere.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&everywhere.stderr).contains("without a token"), "{everywhere:?}");

    // With a token it may listen beyond loopback, and every request needs the token.
    let (_token_server, listening) = serve_http(dir.path(), &["--http", "0.0.0.0:0", "--token", "s3cret"]);
    let port = listening.trim_end_matches("/mcp").rsplit(':').next().unwrap().to_owned();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let send = |token: Option<&str>| {
        let mut request = client.post(&url).header("accept", "application/json, text/event-stream").json(&initialize);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(None).await, 403, "no token");
    assert_eq!(send(Some("wrong")).await, 403, "a wrong token");
    assert_eq!(send(Some("s3cret")).await, 200, "the token");
}

/// A message over the limit on stdio gets a JSON-RPC error with its id
/// within seconds (the SDK alone drops it silently and the client waits
/// forever), one line on stderr says so, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_stdio_message_is_answered() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(BINARY)
        .arg("serve")
        .arg("--path")
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let documents: Vec<Value> =
        (0..9000).map(|i| json!({"id": format!("d{i}"), "content": "x".repeat(2000)})).collect();
    let oversized = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "batch_add", "arguments": {"documents": documents}}});
    let mut line = serde_json::to_vec(&oversized).unwrap();
    assert!(line.len() > directory_sync::mcp::MESSAGE_LIMIT);
    line.push(b'\n');
    let initialize = json!({"jsonrpc": "2.0", "id": 10, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let writer = tokio::spawn(async move {
        stdin.write_all(&line).await.unwrap();
        stdin.write_all(format!("{initialize}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        stdin
    });
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let mut reply = String::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut reply)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "an answer within seconds: {read:?}");
        answers.push(serde_json::from_str::<Value>(&reply).unwrap());
    }
    let refused = answers.iter().find(|a| a["id"] == 9).expect("the oversized request is answered");
    assert_eq!(refused["error"]["code"], -32600);
    assert!(refused["error"]["message"].as_str().unwrap().contains("over the limit"), "{refused}");
    assert!(answers.iter().any(|a| a["id"] == 10 && a["result"].is_object()), "the session goes on: {answers:?}");
    drop(writer.await.unwrap());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert!(stderr.contains("refused an MCP message (request id 9)"), "{stderr}");
    let _ = child.wait().await;
}

/// Reads server-sent events from `response` until `count` event ids are
/// seen (or the stream ends); returns the ids in order.
async fn event_ids(response: &mut reqwest::Response, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut pending = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ids.len() < count {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await;
        let Ok(Ok(Some(chunk))) = chunk else { break };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Some(id) = line.trim_end().strip_prefix("id:") {
                ids.push(id.trim().to_owned());
            }
        }
    }
    ids
}

/// A stream resumed with `Last-Event-ID` starts after that event (the MCP
/// transport's "Resumability and Redelivery"), so progress never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_replays_only_later_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve_http(dir.path(), &["--http", "127.0.0.1:0"]);
    let client = reqwest::Client::new();
    let post = |body: Value, session: Option<String>| {
        let mut request = client
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let response = post(init, None).await.unwrap();
    let session = response.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    drop(response);
    post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), Some(session.clone())).await.unwrap();
    let documents: Vec<Value> =
        (0..500).map(|i| json!({"id": format!("d{i}"), "content": format!("bread {i}")})).collect();
    let add = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "batch_add", "arguments": {"documents": documents, "generate_embeddings": false}}});
    post(add, Some(session.clone())).await.unwrap().text().await.unwrap();
    // Long enough to be still running when the stream is resumed (progress comes every 250 ms).
    let queries: Vec<Value> =
        (0..1000).map(|i| json!({"query": format!("bread {i}"), "search_type": "hybrid"})).collect();
    let search = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "batch_search", "arguments": {"queries": queries, "max_parallel": 1}, "_meta": {"progressToken": "p"}}});
    let mut stream = post(search, Some(session.clone())).await.unwrap();
    let seen = event_ids(&mut stream, 3).await;
    drop(stream); // the connection drops mid-call
    assert!(seen.len() >= 2, "events with ids: {seen:?}");
    let last = seen[1].clone();
    // The server may take a moment to notice the dropped connection: resume until it answers with events.
    let mut replayed = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let mut resumed = client
            .get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .header("last-event-id", &last)
            .send()
            .await
            .unwrap();
        statuses.push(resumed.status().as_u16());
        replayed = event_ids(&mut resumed, 1).await;
        if !replayed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let index = |id: &str| id.split('/').next().unwrap().parse::<usize>().unwrap();
    assert!(!replayed.is_empty(), "the resumed stream sends what followed {last} (statuses {statuses:?})");
    assert!(index(&replayed[0]) > index(&last), "resumed after {last}, got {replayed:?} first");

    // Ending the session answers 200 (the official Python SDK counts 202 as a failure).
    let ended = client.delete(&url).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(ended.status().as_u16(), 200);
}

/// A call of a folder or job tool: its structured result, or its refusal's text.
async fn job_tool(session: &Session, tool: &'static str, args: Value) -> Result<Value, String> {
    let result = session.call_tool(CallToolRequestParams::new(tool).with_arguments(arguments(args))).await.unwrap();
    if result.is_error == Some(true) {
        return Err(result.content.iter().filter_map(|block| block.as_text().map(|t| t.text.clone())).collect());
    }
    Ok(result.structured_content.expect("structured output"))
}

/// Follows a job with job_status until it ends; the states and progress seen, and its last status.
/// Waits on the server (`wait_secs`: it answers when the job ends), a
/// reading a second at most.
async fn follow(session: &Session, id: &str) -> (Vec<(String, u64)>, Value) {
    let mut seen = Vec::new();
    for _ in 0..120 {
        let ask = json!({"job_id": id, "include_result": true, "wait_secs": 1});
        let status = job_tool(session, "job_status", ask).await.unwrap();
        let state = status["state"].as_str().unwrap().to_owned();
        seen.push((state.clone(), status["current"].as_u64().unwrap()));
        if ["completed", "cancelled", "dead"].contains(&state.as_str()) {
            return (seen, status);
        }
    }
    panic!("job {id} did not end in 120 s: {seen:?}");
}

/// The folders of the job tests: `notes` (300 notes), `big` (5,000),
/// `other` (one), all given to the server, and `outside`, not given.
struct Folders {
    _dir: tempfile::TempDir,
    notes: std::path::PathBuf,
    big: std::path::PathBuf,
    other: std::path::PathBuf,
    outside: std::path::PathBuf,
}

impl Folders {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let (notes, big, other, outside) = (path("notes"), path("big"), path("other"), path("outside"));
        for folder in [&notes, &big, &other, &outside] {
            std::fs::create_dir_all(folder).unwrap();
        }
        for i in 0..300 {
            std::fs::write(notes.join(format!("n{i:03}.md")), format!("---\ntitle: Note {i}\n---\nbody {i}\n"))
                .unwrap();
        }
        for i in 0..5000 {
            let text = format!("---\ntitle: Big {i}\n---\n{}\n", "text ".repeat(40));
            std::fs::write(big.join(format!("b{i:04}.md")), text).unwrap();
        }
        std::fs::write(other.join("only.md"), "the one note\n").unwrap();
        Self { _dir: dir, notes, big, other, outside }
    }

    /// `--folder` for each folder the server may touch.
    fn allowed(&self) -> Vec<std::ffi::OsString> {
        [&self.notes, &self.big, &self.other]
            .iter()
            .flat_map(|folder| [std::ffi::OsString::from("--folder"), folder.as_os_str().to_owned()])
            .collect()
    }
}

/// An assistant syncs, follows, cancels and retries through MCP alone
/// (issue 21), here over stdio on SQLite with the server running the jobs:
/// see [`drive_folder_jobs`] and [`drive_background_calls`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_and_job_tools_drive_syncs() {
    let folders = Folders::new();
    let mut command = tokio::process::Command::new(BINARY);
    command.arg("serve").arg("--path").arg(&folders.notes).args(folders.allowed()).env_remove("DATABASE_URL");
    let session = Client::default().serve(rmcp::transport::TokioChildProcess::new(command).unwrap()).await.unwrap();
    let url = format!("sqlite://{}", folders.notes.join(".directory-sync/store.db").display());
    drive_folder_jobs(&session, &folders, &url).await;
    drive_background_calls(&session, &url).await;
    session.cancel().await.unwrap();
}

/// The same over streamable HTTP on PostgreSQL, with the server running no
/// jobs (`serve --no-worker`) and a `directory-sync worker` process on the
/// same database running every job the tools queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_tools_over_http_on_postgres_with_a_separate_worker() {
    let Some(scratch) = scratch_pg::ScratchPg::from_env("DATABASE_URL", "ds_mcp", "jobs_http").await else {
        return;
    };
    let folders = Folders::new();
    let mut args = vec!["--http".into(), "127.0.0.1:0".into(), "--no-worker".into(), "--database".into()];
    args.push(std::ffi::OsString::from(&scratch.url));
    args.extend(folders.allowed());
    let (server, url) = serve_http(&folders.notes, &args);
    let worker = Server(
        Command::new(BINARY)
            .args(["worker", "--database", &scratch.url, "--path"])
            .arg(&folders.notes)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url);
    let session = Client::default().serve(transport).await.unwrap();
    drive_folder_jobs(&session, &folders, &scratch.url).await;
    drive_background_calls(&session, &scratch.url).await;
    session.cancel().await.unwrap();
    drop((worker, server));
    scratch.drop_database().await.unwrap();
}

/// The folder tools queue a job and answer at once, job_status shows it
/// move and end with its summary, a second sync is cancelled mid-way and
/// leaves files and store consistent, a failed job is retried, and a folder
/// the server was not given is refused.
async fn drive_folder_jobs(session: &Session, folders: &Folders, database: &str) {
    let Folders { notes, big, other, outside, .. } = folders;
    // A sync answers at once with a job; job_status follows it to its summary.
    let queued = job_tool(session, "sync_folder", json!({"folder": notes})).await.unwrap();
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["job_id"].as_str().unwrap().to_owned();
    assert!(queued["tip"].as_str().unwrap().contains("job_status"));
    let (seen, done) = follow(session, &id).await;
    assert_eq!(done["state"], "completed", "{seen:?}");
    assert_eq!(done["result"]["imported"], 300, "{done}");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "progress never goes back: {seen:?}");
    let listed = job_tool(session, "list_jobs", json!({"folder": notes, "state": "completed"})).await.unwrap();
    assert!(listed["jobs"].as_array().unwrap().iter().any(|job| job["id"] == id.as_str()), "{listed}");

    // A long sync cancelled once it has begun: it ends cancelled, and every
    // note it imported is whole in the store.
    let queued = job_tool(session, "sync_folder", json!({"folder": big})).await.unwrap();
    let big_id = queued["job_id"].as_str().unwrap().to_owned();
    for _ in 0..2000 {
        let status = job_tool(session, "job_status", json!({"job_id": big_id})).await.unwrap();
        if status["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cancelled = job_tool(session, "cancel_job", json!({"job_id": big_id})).await.unwrap();
    assert_eq!(cancelled["cancelled"], true, "cancelled mid-way: {cancelled}");
    let (_, ended) = follow(session, &big_id).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let db = directory_sync::Database::open(database).await.unwrap();
    let after_cancel = db.store.count(Some("note")).await.unwrap();
    assert!(after_cancel < 5300, "stopped before the end: {after_cancel} notes, {ended}");
    // The next sync picks up where it stopped: every file once, none twice.
    let again = job_tool(session, "sync_folder", json!({"folder": big})).await.unwrap();
    let (_, resumed) = follow(session, again["job_id"].as_str().unwrap()).await;
    assert_eq!(resumed["state"], "completed", "{resumed}");
    assert_eq!(db.store.count(Some("note")).await.unwrap(), 5300, "{resumed}");
    // The folder's two jobs, a page of one at a time, newest first.
    let page = |offset: u32| json!({"folder": big, "limit": 1, "offset": offset});
    let mut paged = Vec::new();
    for offset in 0..3 {
        let listed = job_tool(session, "list_jobs", page(offset)).await.unwrap();
        paged.extend(listed["jobs"].as_array().unwrap().iter().map(|job| job["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(paged, [again["job_id"].as_str().unwrap(), big_id.as_str()]);
    // What `status` shows, through MCP.
    let status = job_tool(session, "folder_status", json!({"folder": big})).await.unwrap();
    assert_eq!(status["last_summary"]["imported"], resumed["result"]["imported"], "{status}");
    assert!(status["last_sync"].is_string() && status["job_counts"]["directory-sync"].is_object(), "{status}");
    db.close().await;

    // A job that fails (the folder emptied: a mass delete is refused) is
    // retried. (Every folder mirrors the whole store: the first sync of
    // `other` writes the 5,300 notes into it too.)
    let first = job_tool(session, "sync_folder", json!({"folder": other})).await.unwrap();
    assert_eq!(follow(session, first["job_id"].as_str().unwrap()).await.1["state"], "completed");
    for file in std::fs::read_dir(other).unwrap().filter_map(Result::ok) {
        if file.path().extension().is_some_and(|ext| ext == "md") {
            std::fs::remove_file(file.path()).unwrap();
        }
    }
    let failing = job_tool(session, "sync_folder", json!({"folder": other})).await.unwrap();
    let failing_id = failing["job_id"].as_str().unwrap().to_owned();
    let (_, dead) = follow(session, &failing_id).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert!(dead["error"].as_str().unwrap().contains("refusing to delete"), "{dead}");
    let retried = job_tool(session, "retry_job", json!({"job_id": failing_id})).await.unwrap();
    assert_eq!(retried["retried"], true, "{retried}");
    let (_, again) = follow(session, &failing_id).await;
    assert_eq!(again["state"], "dead", "the folder is still empty: {again}");
    assert!(again["finished_at"].as_str() > dead["finished_at"].as_str(), "run again: {again}");

    // Folders the server was not given, and jobs that do not exist, are refused with a reason.
    let refused = job_tool(session, "sync_folder", json!({"folder": outside})).await.unwrap_err();
    assert!(refused.contains("not one this server may touch"), "{refused}");
    let missing = job_tool(session, "job_status", json!({"job_id": "0190c4ba-0000-7000-8000-000000000000"})).await;
    assert!(missing.unwrap_err().contains("no job"));
    let bad_type = job_tool(session, "export_entities", json!({"folder": notes, "types": ["Bad Type"]})).await;
    assert!(bad_type.unwrap_err().contains("is not an entity type"));
    let bad = job_tool(session, "cancel_job", json!({"job_id": "nope"})).await.unwrap_err();
    assert!(bad.contains("not a job id"), "{bad}");
    // A sync cannot be undone: rollback is refused, and nothing is cancelled.
    let refused = job_tool(session, "cancel_job", json!({"job_id": id, "rollback": true})).await.unwrap_err();
    assert!(refused.contains("keeps what it wrote") && refused.contains("without rollback"), "{refused}");
}

/// Polls a job until `done` holds for its status (bounded); the last status.
async fn until(session: &Session, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut status = Value::Null;
    for _ in 0..1200 {
        status = job_tool(session, "job_status", json!({"job_id": id})).await.unwrap();
        if done(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id}: timed out waiting until {what}; last seen: {status}");
}

/// `count` documents of `collection` of about 120 characters each: split
/// by `chunk_size: 6`, 24 parts each, so 5,000 make 120,000 writes, long
/// enough to be stopped mid-way.
fn long_add(collection: &str, count: usize, atomic: bool) -> Value {
    let documents: Vec<Value> =
        (0..count).map(|i| json!({"id": format!("d{i:04}"), "content": "word ".repeat(24)})).collect();
    json!({
        "documents": documents, "collection": collection, "chunk_size": 6, "atomic": atomic,
        "generate_embeddings": false, "background": true,
    })
}

/// Any batch tool runs as a job with `background: true` (issue 21): it
/// answers at once, job_status follows it to its output, a 5,000-document
/// all-or-nothing batch_add cancelled mid-way with `rollback: true` writes
/// nothing, one that writes as it goes keeps what it wrote and refuses a
/// rollback, and calls too large for the queue are refused naming the limit.
async fn drive_background_calls(session: &Session, database: &str) {
    let db = directory_sync::Database::open(database).await.unwrap();
    let small: Vec<Value> = (0..50).map(|i| json!({"id": format!("s{i}"), "content": format!("small {i}")})).collect();
    let queued = job_tool(session, "batch_add", json!({"documents": small, "collection": "bg", "background": true}))
        .await
        .unwrap();
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["job_id"].as_str().unwrap().to_owned();
    let done =
        job_tool(session, "job_status", json!({"job_id": id, "wait_secs": 60, "include_result": true})).await.unwrap();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["result"]["processed"], 50, "the call's output is the job's result: {done}");
    assert_eq!(db.store.count(Some("bg")).await.unwrap(), 50);

    // All or nothing, cancelled once its progress shows writes: nothing stays.
    let queued = job_tool(session, "batch_add", long_add("atomic", 5000, true)).await.unwrap();
    let id = queued["job_id"].as_str().unwrap().to_owned();
    // On SQLite the transaction holds the one write lock, so its progress is
    // written only after it ends: there the cancel comes once it runs.
    let progress_shows = database.starts_with("postgres");
    let running =
        until(session, &id, "it is writing", |s| s["state"] == "running" && (s["current"] != 0 || !progress_shows))
            .await;
    let cancelled = job_tool(session, "cancel_job", json!({"job_id": id, "rollback": true})).await.unwrap();
    assert_eq!((&cancelled["cancelled"], &cancelled["rolled_back"]), (&json!(true), &json!(true)), "{cancelled}");
    assert_eq!(db.store.count(Some("atomic")).await.unwrap(), 0, "rolled back after {running}");
    let status = job_tool(session, "job_status", json!({"job_id": id})).await.unwrap();
    assert_eq!(status["state"], "cancelled", "{status}");
    assert!(status["message"].as_str().unwrap().contains("rolled back"), "{status}");

    // Written as it goes: a rollback is refused (and cancels nothing); a
    // plain cancel stops it at a chunk boundary and what it wrote stays.
    let queued = job_tool(session, "batch_add", long_add("loose", 5000, false)).await.unwrap();
    let id = queued["job_id"].as_str().unwrap().to_owned();
    until(session, &id, "it has written some", |s| s["state"] == "running" && s["current"] != 0).await;
    let refused = job_tool(session, "cancel_job", json!({"job_id": id, "rollback": true})).await.unwrap_err();
    assert!(refused.contains("writes as it goes") && refused.contains("nothing was cancelled"), "{refused}");
    let cancelled = job_tool(session, "cancel_job", json!({"job_id": id})).await.unwrap();
    assert_eq!(cancelled["cancelled"], true, "still running after the refused rollback: {cancelled}");
    let stopped =
        until(session, &id, "it has stopped", |s| s["message"].as_str().unwrap().contains("chunk boundary")).await;
    let kept = db.store.count(Some("loose")).await.unwrap();
    assert!(kept > 0 && kept < 120_000, "stopped mid-way, kept what it wrote: {kept}, {stopped}");
    assert!(stopped["current"].as_u64().unwrap() <= kept, "progress counts writes that stayed: {kept}, {stopped}");

    // Shown by the command line as by job_status.
    let shown = Command::new(BINARY)
        .args(["--json", "--database", database, "jobs", "show", &id])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap_or_else(|err| panic!("{err}: {shown:?}"));
    assert_eq!((&shown["job_type"], &shown["state"]), (&json!("batch-tool"), &json!("cancelled")), "{shown}");

    // Refusals: too large for the queue (the limit named), a bad call (refused
    // before it is queued), background on a job tool or not a boolean.
    let big: Vec<Value> = (0..2000).map(|i| json!({"id": format!("b{i}"), "content": "x".repeat(600)})).collect();
    let refused = job_tool(session, "batch_add", json!({"documents": big, "background": true})).await.unwrap_err();
    assert!(refused.contains(&job_queue::MAX_INPUT_BYTES.to_string()) && refused.contains("input limit"), "{refused}");
    let refused = job_tool(session, "batch_add", json!({"documents": [], "oops": 1, "background": true})).await;
    assert!(refused.unwrap_err().contains("oops"));
    // Refused now where the call would be refused when run.
    for (arguments, reason) in [
        (json!({"documents": []}), "give 1 to"),
        (json!({"documents": [{"content": "x"}], "collection": "BAD NAME"}), "collection"),
    ] {
        let mut arguments = arguments;
        arguments["background"] = json!(true);
        let refused = job_tool(session, "batch_add", arguments).await.unwrap_err();
        assert!(refused.contains(reason), "{refused}");
    }
    let refused = job_tool(session, "batch_delete", json!({"background": true})).await.unwrap_err();
    assert!(refused.contains("give `filter` or `document_ids`"), "{refused}");
    let escape = json!({"path": "../../etc/evil.json", "background": true});
    let refused = job_tool(session, "batch_export", escape).await.unwrap_err();
    assert!(refused.contains("evil.json"), "{refused}");
    let refused = job_tool(session, "list_jobs", json!({"background": true})).await.unwrap_err();
    assert!(refused.contains("batch tools only"), "{refused}");
    let refused = job_tool(session, "batch_search", json!({"queries": [], "background": "yes"})).await.unwrap_err();
    assert!(refused.contains("true or false"), "{refused}");
    db.close().await;
}
