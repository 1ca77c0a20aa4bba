//! A live web dashboard of jobs and sync (`directory-sync dashboard ADDR`):
//! one page, no build step (`dashboard.html`, served as is), fed by
//! server-sent events. Each event is a snapshot of the queue and the
//! folder, sent when something changed: the queue's events in this process
//! wake it at once, and the database is polled for what other processes
//! persist, at most four updates a second. One task reads the snapshot for
//! every open page, and none while no page is open.
//!
//! Actions (cancel, retry) are open on a loopback address, need the token
//! when one was given, and are off (read-only) on any other address without
//! one. The page shows job states, progress and errors, entity counts and
//! conflict paths; never the database URL, job inputs or file contents.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use embedding::EMBED_JOB;
use job_queue::{Job, JobFilter, JobId, JobState};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::jobs::JobView;
use crate::{Database, FolderStatus, SyncConfig, Syncer};

/// How often the database is read for what other processes did.
const POLL: Duration = Duration::from_millis(500);
/// The least time between two updates of one page.
const MIN_GAP: Duration = Duration::from_millis(250);
/// Finished jobs shown.
const RECENT: u32 = 30;
/// Running and queued jobs listed one by one, at most; the rest are counted.
const LISTED: u32 = 50;

const PAGE: &str = include_str!("dashboard.html");

/// Who may press the buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can reach the page (a loopback address, no token).
    Open,
    /// Whoever sends this token.
    Token(String),
    /// Nobody: bound beyond loopback without a token.
    ReadOnly,
}

impl Access {
    /// The rule for a server bound to `addr`, with `token` if one was given.
    pub fn for_address(addr: &std::net::SocketAddr, token: Option<String>) -> Self {
        match token.filter(|t| !t.is_empty()) {
            Some(token) => Access::Token(token),
            None if addr.ip().is_loopback() => Access::Open,
            None => Access::ReadOnly,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Token(_) => "token",
            Access::ReadOnly => "read-only",
        }
    }

    /// Whether a request may act. Actions also need the `x-dashboard`
    /// header, which a page of another site cannot send without a CORS
    /// preflight this server never grants.
    fn check(&self, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
        if !headers.contains_key("x-dashboard") {
            return Err((StatusCode::FORBIDDEN, "actions need the x-dashboard header"));
        }
        match self {
            Access::Open => Ok(()),
            Access::ReadOnly => {
                Err((StatusCode::FORBIDDEN, "read-only: start the dashboard with --token to allow actions"))
            }
            Access::Token(token) => {
                let given = headers.get("x-dashboard-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
                // Same time whatever the prefix in common.
                if crate::access::same_secret(given, token) {
                    Ok(())
                } else {
                    Err((StatusCode::UNAUTHORIZED, "a wrong or missing token"))
                }
            }
        }
    }
}

/// What the dashboard reads and acts on.
#[derive(Clone)]
pub struct Dashboard {
    db: Database,
    folder: Option<PathBuf>,
    access: Arc<Access>,
    feed: Arc<Feed>,
}

impl Dashboard {
    /// The jobs of `db`, and every folder synced with it plus `folder`
    /// (shown even before its first sync).
    pub fn new(db: Database, folder: Option<PathBuf>, access: Access) -> Self {
        Self { db, folder, access: Arc::new(access), feed: Arc::default() }
    }

    /// The dashboard's routes (page, snapshot, events), behind the access rule.
    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/", get(page))
            .route("/api/snapshot", get(snapshot))
            .route("/api/events", get(events))
            .route("/api/jobs/{id}/cancel", post(cancel))
            .route("/api/jobs/{id}/retry", post(retry))
            .with_state(self)
    }

    async fn snapshot(&self) -> Result<Snapshot, String> {
        let queue = &self.db.queue;
        let counts = queue.counts().await.map_err(|e| e.to_string())?;
        // Listed job by job: every type but embedding, which comes by the
        // thousand and would bury the sync a person started; it is one
        // line per state ("embedding: 2,669 queued, 1 running").
        let listed_types: Vec<&String> = counts.keys().filter(|t| t.as_str() != EMBED_JOB).collect();
        let mut running = Vec::new();
        let mut queued = Vec::new();
        for job_type in &listed_types {
            let of = |state, limit| JobFilter {
                state: Some(state),
                job_type: Some((*job_type).clone()),
                limit: Some(limit),
                ..JobFilter::default()
            };
            running.extend(queue.list(&of(JobState::Running, LISTED)).await.map_err(|e| e.to_string())?);
            queued.extend(queue.list(&of(JobState::Queued, LISTED)).await.map_err(|e| e.to_string())?);
        }
        // Highest priority first, then the order they will run in.
        queued.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)));
        let in_state = |state: JobState| -> u64 {
            listed_types.iter().filter_map(|t| counts.get(*t).and_then(|by| by.get(&state))).sum()
        };
        let more = |state, shown: &mut Vec<Job>| {
            shown.truncate(LISTED as usize);
            in_state(state).saturating_sub(shown.len() as u64)
        };
        let (more_running, more_queued) = (more(JobState::Running, &mut running), more(JobState::Queued, &mut queued));
        let embedding = counts.get(EMBED_JOB).cloned().unwrap_or_default();
        let list = |state, limit| JobFilter { state: Some(state), limit: Some(limit), ..JobFilter::default() };
        let mut recent = Vec::new();
        for state in [JobState::Completed, JobState::Failed, JobState::Dead, JobState::Cancelled] {
            recent.extend(queue.list(&list(state, RECENT)).await.map_err(|e| e.to_string())?);
        }
        recent.sort_by_key(|job| std::cmp::Reverse(job.finished_at.unwrap_or(job.run_at)));
        recent.truncate(RECENT as usize);
        let folders = self.folders().await?;
        let now = Utc::now();
        let view = |jobs: Vec<Job>| jobs.iter().map(|job| JobView::new(job, now)).collect();
        Ok(Snapshot {
            actions: self.access.name(),
            running: view(running),
            more_running,
            queued: view(queued),
            more_queued,
            embedding,
            recent: view(recent),
            counts,
            folders,
        })
    }

    /// Each folder's status: read from the folder when it is on this
    /// machine, else what the database recorded.
    async fn folders(&self) -> Result<Vec<FolderStatus>, String> {
        let roots = self.db.state.roots().await.map_err(|e| e.to_string())?;
        let mut roots: BTreeSet<PathBuf> = roots.into_iter().map(PathBuf::from).collect();
        roots.extend(self.folder.clone());
        let mut folders = Vec::with_capacity(roots.len());
        for root in roots {
            // Only a folder that is here: a syncer would create a missing one.
            let status = if root.is_dir() {
                let config = SyncConfig::for_folder(&root).map_err(|e| e.to_string())?;
                let syncer = Syncer::new(config, self.db.store.clone(), self.db.state.clone(), None)
                    .map_err(|e| e.to_string())?;
                syncer.folder_status().await
            } else {
                FolderStatus::from_state(&self.db.state, &root.to_string_lossy()).await
            };
            let status = status.map_err(|e| e.to_string())?;
            folders.push(status);
        }
        Ok(folders)
    }
}

/// Everything the page shows.
#[derive(Debug, Serialize)]
struct Snapshot {
    /// `open`, `token` or `read-only`.
    actions: &'static str,
    /// Running jobs of every type but embedding, at most [`LISTED`].
    running: Vec<JobView>,
    /// Running jobs not listed ("and N more").
    more_running: u64,
    /// By priority, highest first; every type but embedding, at most [`LISTED`].
    queued: Vec<JobView>,
    more_queued: u64,
    /// Embedding jobs by state, one line for all of them.
    embedding: BTreeMap<JobState, u64>,
    /// Completed, failed, dead and cancelled, newest first.
    recent: Vec<JobView>,
    counts: BTreeMap<String, BTreeMap<JobState, u64>>,
    /// Every folder synced with this database, by path.
    folders: Vec<FolderStatus>,
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], PAGE).into_response()
}

fn json(value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn snapshot(State(dashboard): State<Dashboard>) -> Response {
    match dashboard.snapshot().await {
        Ok(snapshot) => json(&snapshot),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// A `snapshot` event whenever what the page shows changed.
async fn events(State(dashboard): State<Dashboard>) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let feed = dashboard.feed.clone();
    feed.start_once(|| {
        let wake = dashboard.db.queue.subscribe();
        let read = move || {
            let dashboard = dashboard.clone();
            async move {
                match dashboard.snapshot().await {
                    Ok(snapshot) => serde_json::to_string(&snapshot).unwrap_or_default(),
                    Err(reason) => serde_json::json!({ "error": reason }).to_string(),
                }
            }
        };
        (read, wake)
    });
    let stream = futures::stream::unfold(feed.watch(), |mut latest| async move {
        loop {
            latest.changed().await.ok()?;
            let data = latest.borrow_and_update().clone();
            if let Some(data) = data {
                return Some((Ok(Event::default().event("snapshot").data(&*data)), latest));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The latest snapshot (as JSON), shared by every open page: one task reads
/// the database however many pages watch, and stops reading while none does.
#[derive(Default)]
struct Feed {
    latest: watch::Sender<Option<Arc<str>>>,
    viewer_joined: Notify,
    started: std::sync::atomic::AtomicBool,
}

impl Feed {
    /// Starts the reading task the first time: `setup` gives what it reads
    /// with and the events that wake it.
    fn start_once<F, Fut>(
        self: &Arc<Self>,
        setup: impl FnOnce() -> (F, tokio::sync::broadcast::Receiver<job_queue::JobEvent>),
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = String> + Send + 'static,
    {
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let (read, wake) = setup();
            tokio::spawn(self.clone().produce(read, wake));
        }
    }

    /// A new viewer: sees the current snapshot (if fresh) and every change after it.
    fn watch(&self) -> watch::Receiver<Option<Arc<str>>> {
        let mut latest = self.latest.subscribe();
        latest.mark_changed();
        self.viewer_joined.notify_one();
        latest
    }

    async fn produce<F, Fut>(
        self: Arc<Self>,
        mut read: F,
        mut wake: tokio::sync::broadcast::Receiver<job_queue::JobEvent>,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = String>,
    {
        loop {
            if self.latest.receiver_count() == 0 {
                // Nobody watches: forget the snapshot (it goes stale) and wait for a viewer.
                self.latest.send_replace(None);
                self.viewer_joined.notified().await;
                continue;
            }
            let data = read().await;
            self.latest.send_if_modified(|current| {
                let changed = current.as_deref() != Some(data.as_str());
                if changed {
                    *current = Some(data.into());
                }
                changed
            });
            tokio::select! {
                _ = wake.recv() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            tokio::time::sleep(MIN_GAP).await;
        }
    }
}

async fn cancel(State(dashboard): State<Dashboard>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    act(&dashboard, &id, &headers, "cancelled", |queue, id| async move { queue.cancel(id).await }).await
}

async fn retry(State(dashboard): State<Dashboard>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    act(&dashboard, &id, &headers, "queued again", |queue, id| async move { queue.retry(id).await }).await
}

/// Checks the access rule, then runs `action` on job `id`.
async fn act<F, Fut>(dashboard: &Dashboard, id: &str, headers: &HeaderMap, done: &str, action: F) -> Response
where
    F: FnOnce(job_queue::Queue, JobId) -> Fut,
    Fut: std::future::Future<Output = job_queue::Result<bool>>,
{
    if let Err(refused) = dashboard.access.check(headers) {
        return refused.into_response();
    }
    let Ok(id) = id.parse::<JobId>() else {
        return (StatusCode::BAD_REQUEST, format!("{id:?} is not a job id")).into_response();
    };
    match action(dashboard.db.queue.clone(), id).await {
        Ok(true) => json(&serde_json::json!({ "job": id, "result": done })),
        Ok(false) => (StatusCode::CONFLICT, format!("job {id} is not in a state that allows this")).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn actions_follow_the_address_and_the_token() {
        let loopback: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
        let everywhere: std::net::SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert_eq!(Access::for_address(&loopback, None), Access::Open);
        assert_eq!(Access::for_address(&everywhere, None), Access::ReadOnly);
        assert_eq!(Access::for_address(&everywhere, Some("t".into())), Access::Token("t".into()));
        assert_eq!(Access::for_address(&everywhere, Some(String::new())), Access::ReadOnly, "an empty token is none");

        assert!(Access::Open.check(&headers(&[("x-dashboard", "1")])).is_ok());
        assert!(Access::Open.check(&headers(&[])).is_err(), "no header, no action (cross-site forms)");
        assert!(Access::ReadOnly.check(&headers(&[("x-dashboard", "1")])).is_err());
        let token = Access::Token("secret".into());
        assert!(token.check(&headers(&[("x-dashboard", "1"), ("x-dashboard-token", "secret")])).is_ok());
        assert_eq!(
            token.check(&headers(&[("x-dashboard", "1"), ("x-dashboard-token", "secreT")])).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert!(token.check(&headers(&[("x-dashboard", "1")])).is_err());
    }

    /// The next snapshot a viewer gets.
    async fn next(viewer: &mut watch::Receiver<Option<Arc<str>>>) -> String {
        loop {
            viewer.changed().await.unwrap();
            if let Some(data) = viewer.borrow_and_update().clone() {
                return data.to_string();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_read_per_round_serves_every_viewer_and_none_happen_while_nobody_watches() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let feed = Arc::new(Feed::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let (_events, wake) = tokio::sync::broadcast::channel(4);
        let counter = reads.clone();
        feed.start_once(|| {
            let read = move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move { format!("snapshot {n}") }
            };
            (read, wake)
        });
        tokio::time::sleep(POLL * 10).await;
        assert_eq!(reads.load(Ordering::SeqCst), 0, "no viewer, no reads");

        let mut viewers: Vec<_> = (0..10).map(|_| feed.watch()).collect();
        for round in 1..=5 {
            for viewer in &mut viewers {
                assert_eq!(next(viewer).await, format!("snapshot {round}"));
            }
        }
        assert_eq!(reads.load(Ordering::SeqCst), 5, "ten viewers, one read a round");

        let mut late = feed.watch();
        assert_eq!(next(&mut late).await, "snapshot 5", "a new viewer gets the current snapshot at once");

        drop((viewers, late));
        tokio::time::sleep(POLL * 4).await;
        let idle_from = reads.load(Ordering::SeqCst);
        tokio::time::sleep(POLL * 20).await;
        assert_eq!(reads.load(Ordering::SeqCst), idle_from, "the last viewer gone, reading stops");

        let mut back = feed.watch();
        assert_eq!(next(&mut back).await, format!("snapshot {}", idle_from + 1), "a fresh snapshot, not a stale one");
    }
}
