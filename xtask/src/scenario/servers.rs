//! `servers`: the real binary's dashboard and MCP server on loopback,
//! probed as a rebinding page, another site and a real MCP client would
//! (issue 19).
//!
//! - Every route of both servers refuses a foreign `Host` (DNS rebinding),
//!   a foreign `Origin` and a cross-site action with 403, and the allowed
//!   requests still work: a job survives every refused cancel and the
//!   dashboard's own request cancels it.
//! - A token server answers no route without its token; `serve` refuses to
//!   listen beyond loopback without one; a dashboard there is read-only.
//! - A message over the stdio line limit is answered within seconds.
//! - A cancellation sent mid-call (after the call's first progress
//!   notification) stops each of the eight tools, over stdio and over
//!   streamable HTTP with the `rmcp` client: an atomic call writes nothing,
//!   the others stop before the end, a cancelled export leaves no file, and
//!   no embedding job is queued for the abandoned work. `tool` on Ctrl-C
//!   stops the same way.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use directory_sync::Database;
use rmcp::model::{CallToolRequestParams, ClientRequest, JsonObject, ProgressNotificationParam, Request};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use super::Checks;

const EMBED_JOB: &str = "embed";
/// What `serve` lists: the batch tools, then the folder and job tools.
const ALL_TOOLS: usize = batch_tools::TOOLS.len() + directory_sync::job_tools::JOB_TOOLS.len();

/// A server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `directory-sync ARGS` and reads the port from its first stderr
/// line (`… on http://ADDR:PORT…`).
fn start(binary: &Path, args: &[&str]) -> Result<Server> {
    let mut child = Command::new(binary)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DIRECTORY_SYNC_TOKEN")
        .env_remove("DIRECTORY_SYNC_DASHBOARD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {args:?}"))?;
    let mut stderr = BufReader::new(child.stderr.take().context("no stderr")?);
    let mut banner = String::new();
    stderr.read_line(&mut banner)?;
    let port = banner
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("{args:?} said no address: {banner:?}"))?;
    // Drained, so a chatty server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Ok(Server { child, port })
}

pub fn run(quick: bool) -> Result<()> {
    let binary = super::workspace_binary("directory-sync", "directory-sync")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut checks = Checks::default();
    runtime.block_on(async {
        access(&binary, &mut checks).await?;
        oversized_stdio(&binary, &mut checks).await?;
        inspector(&binary, &mut checks)?;
        cancellation(&binary, quick, &mut checks).await?;
        interrupted_tool(&binary, &mut checks).await
    })?;
    checks.finish()
}

/// One request: method, path, headers; the status, or 0 when it failed.
async fn status(client: &reqwest::Client, method: &str, url: &str, headers: &[(&str, String)]) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client.request(method.clone(), url);
    if method == reqwest::Method::POST && url.ends_with("/mcp") {
        request = request.header("accept", "application/json, text/event-stream").json(&initialize());
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    // Only the status is read: the events route streams forever.
    request.send().await.map_or(0, |response| response.status().as_u16())
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "scenario", "version": "1"}}})
}

/// Hosts and origins of the attacks, for a server on `port`.
fn foreign(port: u16) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        ("a rebinding page's Host", vec![("host", format!("evil.example:{port}"))]),
        ("a Host that starts like loopback", vec![("host", format!("127.0.0.1.evil.example:{port}"))]),
        ("a Host that ends like loopback", vec![("host", format!("localhost.evil.example:{port}"))]),
        ("loopback on another port", vec![("host", format!("127.0.0.1:{}", port.wrapping_add(1)))]),
        ("a foreign Origin", vec![("origin", "https://evil.example".to_owned())]),
        ("the Origin of another local port", vec![("origin", format!("http://127.0.0.1:{}", port.wrapping_add(1)))]),
        ("Origin null (a sandboxed page)", vec![("origin", "null".to_owned())]),
    ]
}

async fn access(binary: &Path, checks: &mut Checks) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("notes");
    std::fs::create_dir_all(&folder)?;
    std::fs::write(folder.join("a.md"), "---\ntitle: a\n---\nbody\n")?;
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let folder_arg = folder.to_str().context("a temporary path that is not UTF-8")?;
    let mcp = start(binary, &["--database", &url, "serve", "--http", "127.0.0.1:0", "--path", folder_arg])?;
    let db = Database::open(&url).await?;
    // A job nobody runs (no worker knows its type), for the cancel route to aim at.
    let parked = db.queue.enqueue("scenario-parked", &json!({}), job_queue::EnqueueOptions::default()).await?;
    let dashboard = start(binary, &["--database", &url, "dashboard", "127.0.0.1:0", "--path", folder_arg])?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;

    let routes: Vec<(u16, &str, String)> = vec![
        (dashboard.port, "GET", "/".to_owned()),
        (dashboard.port, "GET", "/api/snapshot".to_owned()),
        (dashboard.port, "GET", "/api/events".to_owned()),
        (dashboard.port, "GET", "/no-such-page".to_owned()),
        (dashboard.port, "POST", format!("/api/jobs/{parked}/cancel")),
        (dashboard.port, "POST", format!("/api/jobs/{parked}/retry")),
        (mcp.port, "POST", "/mcp".to_owned()),
        (mcp.port, "GET", "/mcp".to_owned()),
        (mcp.port, "DELETE", "/mcp".to_owned()),
    ];
    for (port, method, path) in &routes {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut refused = Vec::new();
        for (what, headers) in foreign(*port) {
            let mut headers = headers;
            headers.push(("x-dashboard", "1".to_owned()));
            let got = status(&client, method, &url, &headers).await;
            if got != 403 {
                refused.push(format!("{what}: {got}"));
            }
        }
        if *method != "GET" {
            for site in ["cross-site", "same-site"] {
                let headers = [("sec-fetch-site", site.to_owned()), ("x-dashboard", "1".to_owned())];
                let got = status(&client, method, &url, &headers).await;
                if got != 403 {
                    refused.push(format!("Sec-Fetch-Site {site}: {got}"));
                }
            }
        }
        checks.check(
            refused.is_empty(),
            &format!("{method} {path} on port {port}: every foreign request gets 403 {refused:?}"),
        );
    }
    let job = db.queue.get(parked).await?.context("the parked job vanished")?;
    checks.check(
        job.state == job_queue::JobState::Queued,
        &format!("the job is still queued after the refused cancels: {:?}", job.state),
    );

    // What the servers' own pages and local clients send still works.
    for (port, path, expected) in [
        (dashboard.port, "/", 200),
        (dashboard.port, "/api/snapshot", 200),
        (dashboard.port, "/api/events", 200),
        (dashboard.port, "/no-such-page", 404),
    ] {
        for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
            let own = [
                ("host", host.clone()),
                ("origin", format!("http://{host}")),
                ("sec-fetch-site", "same-origin".to_owned()),
            ];
            let got = status(&client, "GET", &format!("http://127.0.0.1:{port}{path}"), &own).await;
            checks.check(got == expected, &format!("GET {path} naming {host}: {got} (expected {expected})"));
        }
    }
    let own_origin = format!("http://127.0.0.1:{}", dashboard.port);
    let page = [("origin", own_origin), ("sec-fetch-site", "same-origin".to_owned()), ("x-dashboard", "1".to_owned())];
    let got =
        status(&client, "POST", &format!("http://127.0.0.1:{}/api/jobs/{parked}/cancel", dashboard.port), &page).await;
    let job = db.queue.get(parked).await?.context("the parked job vanished")?;
    checks.check(
        got == 200 && job.state == job_queue::JobState::Cancelled,
        &format!("the dashboard's own cancel works: {got}, job {:?}", job.state),
    );
    let mcp_url = format!("http://127.0.0.1:{}/mcp", mcp.port);
    let got = status(&client, "POST", &mcp_url, &[("origin", format!("http://localhost:{}", mcp.port))]).await;
    checks.check(got == 200, &format!("an MCP initialize from its own origin: {got}"));
    let got = status(&client, "POST", &mcp_url, &[]).await;
    checks.check(got == 200, &format!("an MCP initialize from a local client (no Origin): {got}"));
    drop((mcp, dashboard));

    // A token: every request of `serve` needs it, on every route.
    let token_server = start(
        binary,
        &["--database", &url, "serve", "--http", "127.0.0.1:0", "--token", "s3cret", "--path", folder_arg],
    )?;
    let base = format!("http://127.0.0.1:{}/mcp", token_server.port);
    let mut answered = Vec::new();
    for method in ["POST", "GET", "DELETE"] {
        // (Trailing blanks are not among the cases: HTTP strips them from every header value.)
        for token in [None, Some("wrong"), Some("s3cre"), Some("S3cret"), Some("s3cret2")] {
            let headers: Vec<(&str, String)> =
                token.map(|t| ("authorization", format!("Bearer {t}"))).into_iter().collect();
            for other in ["s3cret", "Basic s3cret"] {
                let got = status(&client, method, &base, &[("authorization", other.to_owned())]).await;
                if got != 403 {
                    answered.push(format!("{method} with Authorization {other:?}: {got}"));
                }
            }
            let got = status(&client, method, &base, &headers).await;
            if got != 403 {
                answered.push(format!("{method} with {token:?}: {got}"));
            }
        }
    }
    checks.check(answered.is_empty(), &format!("a token server refuses every request without its token {answered:?}"));
    let got = status(&client, "POST", &base, &[("authorization", "Bearer s3cret".to_owned())]).await;
    checks.check(got == 200, &format!("the token opens it: {got}"));
    drop(token_server);

    let everywhere = Command::new(binary)
        .args(["--database", &url, "serve", "--http", "0.0.0.0:0", "--path", folder_arg])
        .env_remove("DIRECTORY_SYNC_TOKEN")
        .output()?;
    let said = String::from_utf8_lossy(&everywhere.stderr);
    checks.check(
        everywhere.status.code() == Some(2) && said.contains("without a token"),
        &format!("serve refuses 0.0.0.0 without a token: exit {:?}, {}", everywhere.status.code(), said.trim()),
    );

    // A dashboard beyond loopback without a token shows, but takes no action.
    let parked = db.queue.enqueue("scenario-parked", &json!({}), job_queue::EnqueueOptions::default()).await?;
    let open = start(binary, &["--database", &url, "dashboard", "0.0.0.0:0", "--path", folder_arg])?;
    let cancel = format!("http://127.0.0.1:{}/api/jobs/{parked}/cancel", open.port);
    let got = status(&client, "POST", &cancel, &[("x-dashboard", "1".to_owned())]).await;
    let job = db.queue.get(parked).await?.context("the parked job vanished")?;
    checks.check(
        got == 403 && job.state == job_queue::JobState::Queued,
        &format!("a dashboard on 0.0.0.0 without a token takes no action: {got}, job {:?}", job.state),
    );
    drop(open);
    let guarded =
        start(binary, &["--database", &url, "dashboard", "127.0.0.1:0", "--token", "t0ken", "--path", folder_arg])?;
    let cancel = format!("http://127.0.0.1:{}/api/jobs/{parked}/cancel", guarded.port);
    let without = status(&client, "POST", &cancel, &[("x-dashboard", "1".to_owned())]).await;
    let wrong = [("x-dashboard", "1".to_owned()), ("x-dashboard-token", "t0keN".to_owned())];
    let wrong = status(&client, "POST", &cancel, &wrong).await;
    let still = db.queue.get(parked).await?.context("the parked job vanished")?.state;
    let right = [("x-dashboard", "1".to_owned()), ("x-dashboard-token", "t0ken".to_owned())];
    let with = status(&client, "POST", &cancel, &right).await;
    let after = db.queue.get(parked).await?.context("the parked job vanished")?.state;
    checks.check(
        without == 401 && wrong == 401 && still == job_queue::JobState::Queued,
        &format!("a token dashboard's actions need the token: {without}, {wrong}, job {still:?}"),
    );
    checks.check(
        with == 200 && after == job_queue::JobState::Cancelled,
        &format!("and the token works: {with}, job {after:?}"),
    );
    drop(guarded);
    db.close().await;
    Ok(())
}

/// A `batch_add` over the stdio line limit gets a JSON-RPC error within
/// seconds, and the session goes on.
async fn oversized_stdio(binary: &Path, checks: &mut Checks) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(binary)
        .arg("serve")
        .arg("--path")
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().context("no stdout")?);
    let documents: Vec<Value> =
        (0..9000).map(|i| json!({"id": format!("d{i}"), "content": "x".repeat(2000)})).collect();
    let request = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "batch_add", "arguments": {"documents": documents}}});
    let mut line = serde_json::to_vec(&request)?;
    let size = line.len();
    line.push(b'\n');
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&line).await;
        let _ = stdin.flush().await;
        stdin
    });
    let mut reply = String::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut reply)).await;
    let answer: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
    checks.check(
        matches!(read, Ok(Ok(n)) if n > 0) && answer["id"] == 7 && answer["error"]["code"] == -32600,
        &format!(
            "a {:.1} MB stdio message is answered with its id in {:.1} s: {}",
            size as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            answer["error"]["message"]
        ),
    );
    drop(writer.await?);
    let _ = child.kill().await;
    Ok(())
}

/// The MCP Inspector CLI, the protocol's reference client, from npm.
const INSPECTOR: &str = "@modelcontextprotocol/inspector@0.15.0";

/// The Inspector CLI against `serve` over stdio and over HTTP: it lists
/// the eight tools, adds a note and finds it. Needs `npx`; without it the
/// check is skipped, unless `REQUIRE_INSPECTOR` is set (as in CI).
fn inspector(binary: &Path, checks: &mut Checks) -> Result<()> {
    if Command::new("npx").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        let required = std::env::var_os("REQUIRE_INSPECTOR").is_some();
        checks.check(!required, "MCP Inspector CLI SKIPPED: no npx (node)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_str().context("a temporary path that is not UTF-8")?.to_owned();
    let (stdio_db, http_db) = (format!("sqlite://{root}/stdio.db"), format!("sqlite://{root}/http.db"));
    let binary = binary.to_str().context("a binary path that is not UTF-8")?;
    // The stdio server from a config file, so no option of ours meets the Inspector's.
    let config = dir.path().join("mcp.json");
    let server =
        json!({"command": binary, "args": ["--database", stdio_db, "serve", "--path", root, "--files-root", root]});
    std::fs::write(&config, json!({"mcpServers": {"directory-sync": server}}).to_string())?;
    let config = config.to_str().context("a temporary path that is not UTF-8")?.to_owned();
    let stdio: Vec<&str> = vec!["--config", &config, "--server", "directory-sync"];
    let http_server =
        start(binary.as_ref(), &["--database", &http_db, "serve", "--http", "127.0.0.1:0", "--path", &root])?;
    let endpoint = format!("http://127.0.0.1:{}/mcp", http_server.port);
    let http: Vec<&str> = vec![&endpoint, "--transport", "http"];
    // The target first, the method after it: `--tool-arg` takes every word that follows.
    let run = |method: &[&str], target: &[&str]| -> Result<Value> {
        let output = Command::new("npx")
            .args(["-y", INSPECTOR, "--cli"])
            .args(target)
            .args(method)
            .env_remove("DATABASE_URL")
            .output()
            .context("running npx")?;
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!("the Inspector printed no JSON: {}", String::from_utf8_lossy(&output.stderr).trim())
        })
    };
    for (transport, target) in [("stdio", &stdio), ("http", &http)] {
        let listed = run(&["--method", "tools/list"], target)?;
        let tools = listed["tools"].as_array().map_or(0, Vec::len);
        checks.check(tools == ALL_TOOLS, &format!("Inspector CLI over {transport}: tools/list gives {tools} tools"));
        let note = format!(
            "documents=[{{\"id\": \"inspected-{transport}\", \"content\": \"a note the inspector added over {transport}\"}}]"
        );
        let added = run(&["--method", "tools/call", "--tool-name", "batch_add", "--tool-arg", &note], target)?;
        let queries = format!("queries=[{{\"query\": \"inspector {transport}\", \"search_type\": \"text\"}}]");
        let found = run(&["--method", "tools/call", "--tool-name", "batch_search", "--tool-arg", &queries], target)?;
        let hit = found["structuredContent"]["results"][0]["hits"][0]["id"].clone();
        checks.check(
            added["isError"] != true && hit == format!("inspected-{transport}"),
            &format!("Inspector CLI over {transport}: batch_add then batch_search finds the note ({hit})"),
        );
    }
    drop(http_server);
    Ok(())
}

/// A client that keeps the progress notifications it receives and
/// publishes how many, so the scenario can act on the first one.
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
            let mut progress = self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            progress.push(params);
            progress.len()
        };
        self.received.send_replace(count);
    }
}

type Session = RunningService<RoleClient, Client>;

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        _ => JsonObject::new(),
    }
}

async fn call(session: &Session, tool: &'static str, args: Value) -> Result<Value> {
    let result = session.call_tool(CallToolRequestParams::new(tool).with_arguments(object(args))).await?;
    if result.is_error == Some(true) {
        bail!("{tool} failed: {:?}", result.content);
    }
    result.structured_content.with_context(|| format!("{tool} returned no structured content"))
}

/// Sends the call, cancels it when its first progress notification
/// arrives, and waits until its notifications stop (a running call reports
/// four times a second). Returns the last progress seen, as (current, total).
async fn cancel_mid_call(session: &Session, tool: &'static str, args: Value) -> Result<(f64, f64)> {
    let before = session.service().progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
    let mut received = session.service().received.subscribe();
    let request =
        ClientRequest::CallToolRequest(Request::new(CallToolRequestParams::new(tool).with_arguments(object(args))));
    let handle = session.send_cancellable_request(request, PeerRequestOptions::no_options()).await?;
    let first = tokio::time::timeout(Duration::from_secs(60), received.wait_for(|count| *count > before)).await;
    let started = matches!(first, Ok(Ok(_)));
    drop(first);
    if !started {
        bail!("{tool} sent no progress within 60 s");
    }
    handle.cancel(Some("scenario".into())).await?;
    while tokio::time::timeout(Duration::from_secs(1), received.changed()).await.is_ok() {}
    let progress = session.service().progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let last = progress.last().context("no progress")?;
    Ok((last.progress, last.total.unwrap_or(0.0)))
}

/// Makes `folder` keep (lexical) vectors, as `sync --embedder lexical`
/// would: by default the tools queue no embedding job at all, and the
/// checks that cancelled or refused work queues none would prove nothing.
fn keeps_vectors(folder: &Path) -> Result<()> {
    let state = folder.join(directory_sync::layout::STATE_DIR);
    std::fs::create_dir_all(&state)?;
    std::fs::write(state.join("config.json"), json!({"embedder": "lexical"}).to_string())?;
    Ok(())
}

/// Every embedding job the queue has ever had, whatever its state.
async fn embedding_jobs(db: &Database) -> Result<u64> {
    Ok(db.queue.counts().await?.get(EMBED_JOB).map_or(0, |states| states.values().sum()))
}

async fn count(db: &Database, collection: &str) -> Result<usize> {
    Ok(usize::try_from(db.store.count(Some(collection)).await?)?)
}

async fn matching(db: &Database, filter: &str) -> Result<usize> {
    let filter = entity_store::Filter::parse(filter)?;
    Ok(db.store.find_keys(&filter, 100_000).await?.len())
}

fn documents(n: usize, body: usize) -> Value {
    let docs: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("d{i:05}"), "content": format!("note {i}: {}", "lorem ipsum ".repeat(body / 12)),
                        "metadata": {"n": i}})
        })
        .collect();
    json!(docs)
}

/// Serves `/doc/N` on loopback, each answer after `delay`, so an extract of
/// many addresses runs long enough to be cancelled.
fn slow_pages(delay: Duration) -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(delay);
                let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned();
                let body = format!("page for {line}");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok(port)
}

/// The eight tools cancelled mid-call, over stdio and over HTTP.
async fn cancellation(binary: &Path, quick: bool, checks: &mut Checks) -> Result<()> {
    let n = if quick { 4_000 } else { 10_000 };
    for transport in ["stdio", "http"] {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let root = dir.path().to_str().context("a temporary path that is not UTF-8")?.to_owned();
        keeps_vectors(dir.path())?;
        let server_args =
            vec!["--database", &url, "serve", "--path", &root, "--files-root", &root, "--allow-private-urls"];
        let (session, _server) = if transport == "stdio" {
            let mut command = tokio::process::Command::new(binary);
            command.args(&server_args).env_remove("DATABASE_URL");
            let child = rmcp::transport::TokioChildProcess::new(command)?;
            (Client::default().serve(child).await?, None)
        } else {
            let mut args = server_args.clone();
            args.extend(["--http", "127.0.0.1:0"]);
            let server = start(binary, &args)?;
            let endpoint = format!("http://127.0.0.1:{}/mcp", server.port);
            let http = rmcp::transport::StreamableHttpClientTransport::from_uri(endpoint);
            (Client::default().serve(http).await?, Some(server))
        };
        let db = Database::open(&url).await?;
        each_tool(&session, &db, dir.path(), n, transport, checks).await?;
        let tools = session.list_all_tools().await.map_or(0, |tools| tools.len());
        checks.check(
            tools == ALL_TOOLS,
            &format!("{transport}: the server still answers after eight cancellations ({tools} tools)"),
        );
        session.cancel().await?;
        db.close().await;
    }
    Ok(())
}

async fn each_tool(
    session: &Session,
    db: &Database,
    root: &Path,
    n: usize,
    transport: &str,
    checks: &mut Checks,
) -> Result<()> {
    let jobs = embedding_jobs(db).await?;
    let no_new_jobs = |checks: &mut Checks, what: &str, now: u64| {
        checks.check(
            now == jobs,
            &format!("{transport}: {what}: no embedding job queued ({} new)", now.saturating_sub(jobs)),
        );
    };

    let atomic = json!({"documents": documents(n, 600), "collection": "atomic", "atomic": true});
    let (at, total) = cancel_mid_call(session, "batch_add", atomic).await?;
    let written = count(db, "atomic").await?;
    checks.check(
        written == 0,
        &format!("{transport}: batch_add atomic, cancelled at {at}/{total}: {written} of {n} written"),
    );
    no_new_jobs(checks, "batch_add atomic", embedding_jobs(db).await?);

    let plain = json!({"documents": documents(n, 600), "collection": "plain", "atomic": false});
    let (at, total) = cancel_mid_call(session, "batch_add", plain).await?;
    let written = count(db, "plain").await?;
    checks.check(
        written < n,
        &format!("{transport}: batch_add, cancelled at {at}/{total}: stopped with {written} of {n} written"),
    );
    no_new_jobs(checks, "batch_add", embedding_jobs(db).await?);

    // Whole documents to work on, without embeddings.
    let seed = json!({"documents": documents(n, 600), "collection": "doc", "generate_embeddings": false});
    call(session, "batch_add", seed).await?;
    let jobs_now = embedding_jobs(db).await?;
    let filter = "entity_type = \"doc\"";

    let update = json!({"filter": filter, "metadata_updates": {"seen": true}, "max_documents": 10_000});
    let (at, total) = cancel_mid_call(session, "batch_update", update).await?;
    let seen = matching(db, "metadata.seen = true").await?;
    checks.check(
        seen < n,
        &format!("{transport}: batch_update, cancelled at {at}/{total}: stopped with {seen} of {n} updated"),
    );
    checks.check(embedding_jobs(db).await? == jobs_now, &format!("{transport}: batch_update: no embedding job queued"));

    let enhance = json!({"filter": filter, "batch_size": 50, "max_documents": 10_000, "fields": ["title"]});
    let (at, total) = cancel_mid_call(session, "batch_enhance", enhance).await?;
    let enhanced = matching(db, "metadata.enhanced_by exists").await?;
    checks.check(
        enhanced < n,
        &format!("{transport}: batch_enhance, cancelled at {at}/{total}: stopped with {enhanced} of {n} enhanced"),
    );

    let export = json!({"path": "all.jsonl"});
    let (at, total) = cancel_mid_call(session, "batch_export", export).await?;
    let left: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().contains("all")))
        .collect();
    checks.check(
        left.is_empty(),
        &format!("{transport}: batch_export, cancelled at {at}/{total}: no file left {left:?}"),
    );

    call(session, "batch_export", json!({"path": "all.jsonl"})).await?;
    let import = json!({"path": "all.jsonl", "collection": "imported"});
    let (at, total) = cancel_mid_call(session, "batch_import", import).await?;
    let imported = count(db, "imported").await?;
    checks.check(
        imported < n,
        &format!("{transport}: batch_import, cancelled at {at}/{total}: stopped with {imported} of {n}"),
    );
    checks.check(embedding_jobs(db).await? == jobs_now, &format!("{transport}: batch_import: no embedding job queued"));

    let port = slow_pages(Duration::from_millis(20))?;
    let urls: Vec<String> = (0..400).map(|i| format!("http://127.0.0.1:{port}/doc/{i}")).collect();
    let extract = json!({"urls": urls, "collection": "extracted"});
    let (at, total) = cancel_mid_call(session, "batch_extract", extract).await?;
    let extracted = count(db, "extracted").await?;
    checks
        .check(extracted == 0, &format!("{transport}: batch_extract, cancelled at {at}/{total}: {extracted} written"));
    checks
        .check(embedding_jobs(db).await? == jobs_now, &format!("{transport}: batch_extract: no embedding job queued"));

    let queries: Vec<Value> =
        (0..1000).map(|i| json!({"query": format!("lorem {i}"), "search_type": "text"})).collect();
    let search = json!({"queries": queries, "max_parallel": 1});
    let (at, total) = cancel_mid_call(session, "batch_search", search).await?;
    checks.check(at < total, &format!("{transport}: batch_search stopped at {at}/{total}"));

    let delete = json!({"filter": filter, "dry_run": false, "confirm_count": n, "max_documents": 10_000});
    let (at, total) = cancel_mid_call(session, "batch_delete", delete).await?;
    let left = count(db, "doc").await?;
    checks.check(
        left > 0,
        &format!("{transport}: batch_delete, cancelled at {at}/{total}: stopped with {left} of {n} left"),
    );

    // The control for every "no embedding job" above: a call that is not
    // cancelled queues embedding here.
    let before = embedding_jobs(db).await?;
    call(session, "batch_add", json!({"documents": documents(3, 100), "collection": "control"})).await?;
    let after = embedding_jobs(db).await?;
    checks.check(
        after > before,
        &format!("{transport}: batch_add not cancelled: {} embedding jobs queued", after.saturating_sub(before)),
    );
    Ok(())
}

/// `directory-sync tool batch_add` stopped by Ctrl-C (SIGINT) once it has
/// begun writing: it stops before the end, says what it wrote, queues no
/// embedding for what it did not, and exits 130.
async fn interrupted_tool(binary: &Path, checks: &mut Checks) -> Result<()> {
    // The most one call takes, of 2 KB each: a smaller call can end within
    // the moment between its first chunk and the signal's arrival.
    let n = 10_000;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let args = json!({"documents": documents(n, 2_000), "collection": "cli", "atomic": false});
    keeps_vectors(dir.path())?;
    let db = Database::open(&url).await?;
    let mut child = Command::new(binary)
        .args(["--json", "--database", &url, "tool", "batch_add", "-", "--path"])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("no stdin")?.write_all(args.to_string().as_bytes())?;
    let started = Instant::now();
    while count(&db, "cli").await? == 0 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status()?;
    let output = child.wait_with_output()?;
    let written = count(&db, "cli").await?;
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let reported = summary["added"].as_array().map_or(0, Vec::len);
    checks.check(
        output.status.code() == Some(130) && written < n && reported == written,
        &format!(
            "tool batch_add on Ctrl-C: exit {:?}, {written} of {n} written, {reported} reported",
            output.status.code()
        ),
    );
    let jobs = embedding_jobs(&db).await?;
    checks.check(jobs == 0, &format!("tool batch_add on Ctrl-C: {jobs} embedding jobs queued for abandoned work"));
    db.close().await;
    Ok(())
}
