//! Watching the folder: file events, debounced and coalesced per path,
//! become `directory-import` jobs for those paths; a folder removal or a
//! watcher overflow becomes a full scan. Our own writes come back as events
//! too and are recognised by content hash in the import, not by timing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::{CreateKind, EventKind, RemoveKind};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
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

/// Keeps the OS watcher alive; dropping it stops watching.
pub struct FolderWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Starts watching `root` (canonical) and sends what changed, one message per debounced burst.
pub fn watch(
    root: &Path,
    debounce: Duration,
) -> notify::Result<(FolderWatcher, mpsc::UnboundedReceiver<FolderChange>)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let base = root.to_path_buf();
    let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
        let change = classify(&base, result);
        if let Some(change) = change {
            let _ = sender.send(change);
        }
    })?;
    debouncer.watch(root, RecursiveMode::Recursive)?;
    Ok((FolderWatcher { _debouncer: debouncer }, receiver))
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
        for path in &event.paths {
            if let Some(relative) = relative_markdown(root, path) {
                paths.insert(relative);
            } else if is_folder_event(root, path) && matches!(event.kind, EventKind::Remove(_)) {
                return Some(FolderChange::FullScan);
            }
        }
    }
    (!paths.is_empty()).then(|| FolderChange::Paths(paths.into_iter().collect()))
}

/// A folder (no `.md` name) that is not our state folder.
fn is_folder_event(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else { return false };
    let first = relative.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
    first.is_some_and(|f| f != STATE_DIR && !f.starts_with('.')) && path.extension().is_none()
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
