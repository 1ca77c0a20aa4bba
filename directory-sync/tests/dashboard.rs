//! The dashboard end to end: the real binary serves it over a SQLite
//! database while this process runs a job on a worker of its own (as
//! another machine's worker would), stepping only when the test says;
//! headless Chromium, driven over WebDriver (chromedriver), watches the
//! job's bar advance (waiting on DOM changes, not polling), presses cancel
//! and sees the job cancelled. A screenshot is kept in the target folder.
//! Also the access rules over plain HTTP.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the browser
//! test is SKIPPED, unless `REQUIRE_BROWSER` is set (CI), then it fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_core::{Progress, ProgressUpdate};
use directory_sync::Database;
use fantoccini::{Client, ClientBuilder, Locator};
use job_queue::{EnqueueOptions, JobContext, JobError, JobHandler, JobState, Registry, WorkerConfig};
use tokio::sync::{Notify, Semaphore};

const BINARY: &str = env!("CARGO_BIN_EXE_directory-sync");
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Counts to 400, one step per permit the test hands out, until cancelled.
struct Stepped {
    steps: Arc<Semaphore>,
    saw_cancel: Arc<Notify>,
}

#[async_trait::async_trait]
impl JobHandler for Stepped {
    type Input = ();
    type Output = ();
    async fn process(&self, (): (), ctx: JobContext) -> Result<(), JobError> {
        let started = Instant::now();
        for step in 1..=400u64 {
            tokio::select! {
                permit = self.steps.acquire() => permit.expect("the semaphore stays open").forget(),
                () = ctx.cancel.cancelled() => {
                    self.saw_cancel.notify_one();
                    return Err(JobError::permanent("cancelled"));
                }
            }
            let progress = Progress { current: step, total: 400, failed: 0, message: format!("step {step}") };
            ctx.progress.report(&ProgressUpdate::new(progress, started.elapsed(), step == 400));
        }
        Ok(())
    }
}

/// A process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `directory-sync dashboard` on a free loopback port; returns it and its URL.
fn start_dashboard(database: &str, folder: &std::path::Path, token: Option<&str>) -> (Running, String) {
    let mut command = Command::new(BINARY);
    command.args(["--database", database, "dashboard", "127.0.0.1:0", "--path"]).arg(folder);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    let mut child = command.env_remove("DIRECTORY_SYNC_DASHBOARD_TOKEN").stderr(Stdio::piped()).spawn().unwrap();
    let mut banner = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut banner).unwrap();
    let url =
        banner.split_whitespace().find(|w| w.starts_with("http://")).expect("the dashboard says where").to_owned();
    (Running(child), url)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn browser(profile: &std::path::Path) -> (Running, Client) {
    let port = free_port();
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It says when it listens; the rest of what it prints is drained, not read.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines.by_ref().map_while(Result::ok).any(|line| line.contains("started successfully"));
    assert!(started, "chromedriver ended without listening");
    std::thread::spawn(move || lines.for_each(drop));
    let driver = Running(child);
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())],
        },
    });
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|err| panic!("connecting to chromedriver: {err}"));
    (driver, client)
}

/// Waits until `condition` (the body of a JavaScript function of `arg`,
/// returning something truthy once met) holds in the page: checked now,
/// then on every change of the DOM, so no polling; WebDriver's script
/// timeout (30 s) bounds the wait. Returns what the condition returned.
async fn wait_in_page(client: &Client, what: &str, condition: &str, arg: serde_json::Value) -> serde_json::Value {
    let script = format!(
        "const [arg, done] = [arguments[0], arguments[arguments.length - 1]];
         const check = (arg) => {{ {condition} }};
         const met = check(arg);
         if (met) {{ done(met); return; }}
         const observer = new MutationObserver(() => {{
             const met = check(arg);
             if (met) {{ observer.disconnect(); done(met); }}
         }});
         observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});"
    );
    client.execute_async(&script, vec![arg]).await.unwrap_or_else(|err| panic!("waiting for {what}: {err}"))
}

/// The value of the bar `selector` once it is above `above`.
async fn bar_above(client: &Client, selector: &str, above: f64) -> f64 {
    let condition = "const bar = document.querySelector(arg.selector);
                     return bar && bar.hasAttribute('value') && Number(bar.value) > arg.above ? Number(bar.value) : null;";
    let found = wait_in_page(
        client,
        &format!("{selector} above {above}"),
        condition,
        serde_json::json!({ "selector": selector, "above": above }),
    )
    .await;
    found.as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_job_advances_and_is_cancelled_from_the_browser() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(std::env::var_os("REQUIRE_BROWSER").is_none(), "REQUIRE_BROWSER is set but {CHROMEDRIVER} is missing");
        eprintln!("SKIPPED: no {CHROMEDRIVER} (apt-get install chromium chromium-driver)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let db = Database::open(&database).await.unwrap();
    let steps = Arc::new(Semaphore::new(0));
    let saw_cancel = Arc::new(Notify::new());
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(100),
        heartbeat: Duration::from_millis(200),
        // Steps come in bursts; the throttle writes each burst's last step
        // when its interval ends, so the page catches up without more steps.
        progress_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let stop = batch_core::CancellationToken::new();
    let registry = Registry::new().with("slow", Stepped { steps: steps.clone(), saw_cancel: saw_cancel.clone() });
    let worker = tokio::spawn(db.queue.worker(registry, config).run(stop.clone()));
    let id = db.queue.enqueue("slow", &(), EnqueueOptions::default()).await.unwrap();

    let (_dashboard, url) = start_dashboard(&database, dir.path(), None);
    let (_driver, client) = browser(&dir.path().join("profile")).await;
    client.goto(&url).await.unwrap();
    let bar = format!("#running tr[data-job-id=\"{id}\"] progress");
    steps.add_permits(5);
    let first = bar_above(&client, &bar, 0.0).await;
    steps.add_permits(10);
    let later = bar_above(&client, &bar, first).await;
    assert!(later > first && later < 400.0, "{first} then {later}");
    let message = client.find(Locator::Css(&format!("#running tr[data-job-id=\"{id}\"]"))).await.unwrap();
    assert!(message.text().await.unwrap().contains("step"), "the message shows");
    save_screenshot(&client, "dashboard-running.png").await;

    let cancel = format!("#running tr[data-job-id=\"{id}\"] button.cancel");
    client.find(Locator::Css(&cancel)).await.unwrap().click().await.unwrap();
    let cancelled = format!("#recent tr[data-job-id=\"{id}\"][data-state=\"cancelled\"]");
    let listed = "return document.querySelector(arg) !== null;";
    wait_in_page(&client, "the job listed as cancelled", listed, cancelled.into()).await;
    save_screenshot(&client, "dashboard-cancelled.png").await;

    assert_eq!(db.queue.get(id).await.unwrap().unwrap().state, JobState::Cancelled);
    tokio::time::timeout(Duration::from_secs(30), saw_cancel.notified()).await.expect("the handler stops");
    let _ = client.close().await;
    stop.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn every_synced_folder_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let (here, there) = (dir.path().join("here"), dir.path().join("there"));
    for (folder, prefix, notes) in [(&here, "h", 2), (&there, "t", 3)] {
        std::fs::create_dir_all(folder).unwrap();
        for i in 0..notes {
            std::fs::write(folder.join(format!("{prefix}{i}.md")), format!("note {i}\n")).unwrap();
        }
        let status = Command::new(BINARY).args(["--database", &database, "sync"]).arg(folder).status().unwrap();
        assert!(status.success());
    }
    // A folder some worker on another machine syncs: only the database knows it.
    let db = Database::open(&database).await.unwrap();
    let elsewhere = directory_sync::RootState { last_sync: Some("2026-01-01T00:00:00Z".into()), ..Default::default() };
    db.state.set_root("/on/another/machine", &elsewhere).await.unwrap();
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();

    let (_dashboard, url) = start_dashboard(&database, &fresh, None);
    let snapshot: serde_json::Value = reqwest::get(format!("{url}api/snapshot")).await.unwrap().json().await.unwrap();
    let folders = snapshot["folders"].as_array().unwrap();
    let paths: Vec<&str> = folders.iter().map(|f| f["folder"].as_str().unwrap()).collect();
    let canonical = |p: &std::path::Path| p.canonicalize().unwrap().to_string_lossy().into_owned();
    let mut expected = vec!["/on/another/machine".to_owned(), canonical(&fresh), canonical(&here), canonical(&there)];
    expected.sort();
    assert_eq!(paths, expected);
    let by_path = |path: &str| folders.iter().find(|f| f["folder"] == path).unwrap();
    assert_eq!(by_path(&canonical(&there))["entities"]["note"], 5, "counts per type (the store is shared)");
    assert!(by_path(&canonical(&here))["last_sync"].is_string());
    assert!(by_path(&canonical(&fresh))["last_sync"].is_null(), "the dashboard's own folder, not synced yet");
    assert_eq!(by_path("/on/another/machine")["last_sync"], "2026-01-01T00:00:00Z");
    assert!(!std::path::Path::new("/on/another/machine").exists(), "a folder elsewhere is not created here");

    // Each sync shows its folder and what it did in one line.
    let recent = snapshot["recent"].as_array().unwrap();
    let synced = recent.iter().find(|job| job["folder"] == canonical(&there).as_str()).expect("the sync of `there`");
    assert!(synced["summary"].as_str().unwrap().contains("3 imported"), "{synced}");
    // Embedding comes by the thousand: one line, never burying the jobs a
    // person started; long lists are cut with a count of the rest.
    let embeds: Vec<job_queue::NewJob> =
        (0..120).map(|i| job_queue::NewJob::new(embedding::EMBED_JOB, serde_json::json!({"n": i}))).collect();
    let others: Vec<job_queue::NewJob> =
        (0..55).map(|i| job_queue::NewJob::new("directory-import", serde_json::json!({"n": i}))).collect();
    db.queue.enqueue_many(embeds).await.unwrap();
    db.queue.enqueue_many(others).await.unwrap();
    let snapshot: serde_json::Value = reqwest::get(format!("{url}api/snapshot")).await.unwrap().json().await.unwrap();
    assert_eq!(snapshot["embedding"]["queued"], 120, "{}", snapshot["embedding"]);
    let queued = snapshot["queued"].as_array().unwrap();
    assert!(queued.iter().all(|job| job["job_type"] != embedding::EMBED_JOB), "embedding is not listed job by job");
    assert_eq!((queued.len(), &snapshot["more_queued"]), (50, &serde_json::json!(5)));
}

/// Keeps what the browser shows as a test artifact in the target folder.
async fn save_screenshot(client: &Client, name: &str) {
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&artifact, client.screenshot().await.unwrap()).unwrap();
    eprintln!("screenshot: {}", artifact.display());
}

/// POSTs an action the way the page does, with these headers.
async fn post(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn actions_need_the_header_and_the_token_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("jobs.db").display());
    actions_need_the_header_and_the_token(&database, dir.path()).await;
}

#[tokio::test]
async fn actions_need_the_header_and_the_token_on_postgres() {
    let Some(scratch) = scratch_pg::ScratchPg::from_env("DATABASE_URL", "dashboard_test", "dashboard actions").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    actions_need_the_header_and_the_token(&scratch.url, dir.path()).await;
    scratch.drop_database().await.unwrap();
}

async fn actions_need_the_header_and_the_token(database: &str, folder: &std::path::Path) {
    let db = Database::open(database).await.unwrap();
    let id = db.queue.enqueue("slow", &(), EnqueueOptions::default()).await.unwrap();
    let (_dashboard, url) = start_dashboard(database, folder, Some("s3cret"));
    let cancel = format!("{url}api/jobs/{id}/cancel");

    let snapshot = reqwest::get(format!("{url}api/snapshot")).await.unwrap().text().await.unwrap();
    assert!(snapshot.contains(&id.to_string()) && snapshot.contains("\"actions\":\"token\""), "{snapshot}");
    assert!(!snapshot.contains(database) && !snapshot.contains("jobs.db"), "no database URL: {snapshot}");
    assert_eq!(post(&cancel, &[("x-dashboard-token", "s3cret")]).await.0, 403, "no x-dashboard header");
    assert_eq!(post(&cancel, &[("x-dashboard", "1")]).await.0, 401, "no token");
    assert_eq!(post(&cancel, &[("x-dashboard", "1"), ("x-dashboard-token", "wrong!")]).await.0, 401);
    assert_eq!(db.queue.get(id).await.unwrap().unwrap().state, JobState::Queued, "refused actions do nothing");
    let (status, body) = post(&cancel, &[("x-dashboard", "1"), ("x-dashboard-token", "s3cret")]).await;
    assert_eq!((status, body.contains("cancelled")), (200, true), "{body}");
    assert_eq!(db.queue.get(id).await.unwrap().unwrap().state, JobState::Cancelled);
    let retry = format!("{url}api/jobs/{id}/retry");
    assert_eq!(post(&retry, &[("x-dashboard", "1"), ("x-dashboard-token", "s3cret")]).await.0, 200);
    assert_eq!(db.queue.get(id).await.unwrap().unwrap().state, JobState::Queued, "retried");
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(page.contains("<progress") || page.contains("progress"), "the page is served");
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

/// DNS rebinding and foreign pages: a request that names another host, or
/// comes from another site's page, gets 403 on every route, and a refused
/// action does nothing; the server's own names still work.
#[tokio::test]
async fn requests_naming_another_host_or_from_another_site_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let db = Database::open(&database).await.unwrap();
    let id = db.queue.enqueue("slow", &(), EnqueueOptions::default()).await.unwrap();
    let (_dashboard, url) = start_dashboard(&database, dir.path(), None);
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap().to_owned();
    let evil_host = format!("evil.example:{port}");
    for route in ["", "api/snapshot", "api/events"] {
        let route = format!("{url}{route}");
        assert_eq!(get_with(&route, &[("host", &evil_host)]).await, 403, "{route} with a foreign Host");
        assert_eq!(get_with(&route, &[("origin", "https://evil.example")]).await, 403, "{route}, foreign Origin");
    }
    let cancel = format!("{url}api/jobs/{id}/cancel");
    let rebinding = [("x-dashboard", "1"), ("host", evil_host.as_str()), ("origin", "http://evil.example")];
    assert_eq!(post(&cancel, &rebinding).await.0, 403);
    let foreign = [("x-dashboard", "1"), ("origin", "https://evil.example")];
    assert_eq!(post(&cancel, &foreign).await.0, 403);
    // A page of another site (or another local port) that sends no Origin: the browser's Sec-Fetch-Site says so.
    for site in ["cross-site", "same-site"] {
        assert_eq!(post(&cancel, &[("x-dashboard", "1"), ("sec-fetch-site", site)]).await.0, 403, "{site}");
    }
    assert_eq!(db.queue.get(id).await.unwrap().unwrap().state, JobState::Queued, "nothing was cancelled");
    let localhost = format!("localhost:{port}");
    assert_eq!(get_with(&format!("{url}api/snapshot"), &[("host", &localhost)]).await, 200);
    let own = url.trim_end_matches('/').to_owned();
    assert_eq!(post(&cancel, &[("x-dashboard", "1"), ("origin", &own)]).await.0, 200, "the page's own action");
    assert_eq!(db.queue.get(id).await.unwrap().unwrap().state, JobState::Cancelled);
}
