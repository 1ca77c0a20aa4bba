//! Watching the folder: file events, debounced and coalesced per path,
//! become `directory-import` jobs for those paths; a folder created,
//! removed, renamed or moved in or out, and a lost event (the kernel's
//! queue overflowed) become a full scan. Our own writes come back as events
//! too and are recognised by content hash in the import, not by timing.
//! When the system's limit of watches is reached, the folder is polled
//! instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind};
use notify::{PollWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer, new_debouncer_opt};
use tokio::sync::mpsc;

use crate::layout::{STATE_DIR, is_ignored};

/// What the folder needs after a burst of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderChange {
    /// These markdown files (relative paths) were created, changed or removed.
    Paths(Vec<String>),
    /// Events were lost, or a folder came or went: only a full scan is safe.
    FullScan,
}

/// How often the fallback polls the folder.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Keeps the watcher alive; dropping it stops watching.
pub struct FolderWatcher {
    /// The debouncer (of events or of polls), held for its `Drop`.
    _watching: Box<dyn std::any::Any + Send>,
    /// Why the folder is polled instead of watched, if it is.
    pub polling: Option<String>,
}

/// Starts watching `root` (canonical) and sends what changed, one message
/// per debounced burst. If the system allows no more watches
/// (`fs.inotify.max_user_watches`), it polls every [`POLL_INTERVAL`]
/// instead and says why in [`FolderWatcher::polling`].
pub fn watch(
    root: &Path,
    debounce: Duration,
) -> notify::Result<(FolderWatcher, mpsc::UnboundedReceiver<FolderChange>)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let handler = |sender: mpsc::UnboundedSender<FolderChange>| {
        let base = root.to_path_buf();
        move |result: DebounceEventResult| {
            if let Some(change) = classify(&base, result) {
                let _ = sender.send(change);
            }
        }
    };
    let mut events = new_debouncer(debounce, None, handler(sender.clone()))?;
    match events.watch(root, RecursiveMode::Recursive) {
        Ok(()) => Ok((FolderWatcher { _watching: Box::new(events), polling: None }, receiver)),
        Err(err) if matches!(err.kind, notify::ErrorKind::MaxFilesWatch) || is_out_of_watches(&err) => {
            drop(events);
            let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
            let mut polling: Debouncer<PollWatcher, RecommendedCache> =
                new_debouncer_opt(debounce, None, handler(sender), RecommendedCache::new(), config)?;
            polling.watch(root, RecursiveMode::Recursive)?;
            let why = format!(
                "the system's limit of file watches is reached ({err}; see fs.inotify.max_user_watches): polling the folder every {}s instead",
                POLL_INTERVAL.as_secs()
            );
            Ok((FolderWatcher { _watching: Box::new(polling), polling: Some(why) }, receiver))
        }
        Err(err) => Err(err),
    }
}

/// ENOSPC from inotify_add_watch, as some versions report it.
fn is_out_of_watches(err: &notify::Error) -> bool {
    matches!(&err.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28))
}

fn classify(root: &Path, result: DebounceEventResult) -> Option<FolderChange> {
    let Ok(events) = result else { return Some(FolderChange::FullScan) };
    let mut paths = BTreeSet::new();
    for event in &events {
        // A new folder may have had files written before its watch was added: scan it all.
        if event.need_rescan()
            || matches!(event.kind, EventKind::Remove(RemoveKind::Folder) | EventKind::Create(CreateKind::Folder))
        {
            return Some(FolderChange::FullScan);
        }
        if matches!(event.kind, EventKind::Access(_)) {
            continue;
        }
        // A rename or removal may be of a folder (moved within, in or out):
        // its notes moved with it, and only a scan can tell which.
        let moved_or_removed = matches!(event.kind, EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_));
        for path in &event.paths {
            if let Some(relative) = relative_markdown(root, path) {
                paths.insert(relative);
            } else if moved_or_removed && is_folder_event(root, path) {
                return Some(FolderChange::FullScan);
            }
        }
    }
    (!paths.is_empty()).then(|| FolderChange::Paths(paths.into_iter().collect()))
}

/// A path that is, or may have been, a folder of notes: a folder now, or
/// gone and named like one (no extension); not hidden, not our state folder.
fn is_folder_event(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else { return false };
    let hidden = relative.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    let first = relative.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
    first.is_some_and(|f| f != STATE_DIR)
        && !hidden
        && (path.is_dir() || (!path.exists() && path.extension().is_none()))
}

fn relative_markdown(root: &Path, path: &Path) -> Option<String> {
    let relative: PathBuf = path.strip_prefix(root).ok()?.to_path_buf();
    let text = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
    (text.ends_with(".md") && !is_ignored(&text)).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_arrive_as_coalesced_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (_watcher, mut changes) = watch(&root, Duration::from_millis(100)).unwrap();
        for i in 0..20 {
            std::fs::write(root.join("a.md"), format!("{i}")).unwrap();
        }
        std::fs::write(root.join("b.txt"), "x").unwrap();
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await.unwrap().unwrap();
        assert_eq!(change, FolderChange::Paths(vec!["a.md".into()]));
    }
}
