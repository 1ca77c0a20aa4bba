//! The folder side: walking, the size + mtime quick check, parallel reads
//! and atomic writes. Everything here is blocking file I/O, run on
//! batch-core's blocking pool by the caller.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::layout::{STATE_DIR, conflict_original, is_ignored};

/// A regular markdown file found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Relative to the root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// What the walk saw: files to consider, and entries that cannot be synced.
#[derive(Debug, Default)]
pub struct Walk {
    /// The notes found.
    pub files: Vec<Found>,
    /// Entries that cannot be synced (path, reason).
    pub problems: Vec<(String, String)>,
    /// Ignored entries worth telling about (a symlink to a file in the folder).
    pub warnings: Vec<(String, String)>,
    /// Our own conflict copies (path, mtime in ns), which are not notes.
    pub conflict_copies: Vec<(String, i64)>,
    /// Hidden folders and hidden markdown files of the user's, not synced
    /// (path, why); our own state folder and temp files are not listed.
    pub skipped: Vec<(String, String)>,
}

/// Threads walking top-level folders at once: stat calls are the cost of a
/// no-change re-sync, and they parallelise.
const WALK_THREADS: usize = 4;

/// Walks `root` without following symlinks, its top-level folders in
/// parallel. Hidden folders (ours included), temp and conflict files are
/// skipped; symlinks that leave the folder, loops, fifos and other non-files
/// are reported.
pub fn walk(root: &Path) -> std::io::Result<Walk> {
    let canonical_root = root.canonicalize()?;
    let mut walk = Walk::default();
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            skip_hidden(&name, &name, is_dir, &mut walk);
            remove_stale_temp(&entry.path(), &name);
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            folders.push(entry.path());
        } else {
            visit(root, &canonical_root, &entry.path(), &mut walk);
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let parts: Vec<Walk> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WALK_THREADS.min(folders.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut part = Walk::default();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(folder) = folders.get(index) else { return part };
                        walk_folder(root, &canonical_root, folder, &mut part);
                    }
                })
            })
            .collect();
        workers.into_iter().filter_map(|worker| worker.join().ok()).collect()
    });
    walk.files.reserve_exact(parts.iter().map(|part| part.files.len()).sum());
    for part in parts {
        walk.files.extend(part.files);
        walk.problems.extend(part.problems);
        walk.warnings.extend(part.warnings);
        walk.conflict_copies.extend(part.conflict_copies);
        walk.skipped.extend(part.skipped);
    }
    walk.skipped.sort();
    Ok(walk)
}

fn walk_folder(root: &Path, canonical_root: &Path, folder: &Path, walk: &mut Walk) {
    let mut hidden_folders = Vec::new();
    let entries = walkdir::WalkDir::new(folder).follow_links(false).into_iter().filter_entry(|entry| {
        let hidden = entry.file_type().is_dir() && entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            hidden_folders.push(relative(root, entry.path()));
        }
        !hidden
    });
    for entry in entries {
        match entry {
            Ok(entry) if entry.file_name().to_string_lossy().starts_with('.') => {
                let name = entry.file_name().to_string_lossy();
                skip_hidden(&relative(root, entry.path()), &name, false, walk);
                remove_stale_temp(entry.path(), &name);
            }
            Ok(entry) => visit(root, canonical_root, entry.path(), walk),
            Err(err) => {
                let path = err.path().map(|p| relative(root, p)).unwrap_or_default();
                walk.problems.push((path, format!("cannot read: {err}")));
            }
        }
    }
    for path in hidden_folders {
        let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
        skip_hidden(&path, &name, true, walk);
    }
}

/// Lists a hidden folder or hidden markdown file of the user's as skipped;
/// our state folder and temp files are ours, not skipped notes.
fn skip_hidden(path: &str, name: &str, is_dir: bool, walk: &mut Walk) {
    if is_dir && path != STATE_DIR {
        walk.skipped.push((path.to_owned(), "hidden folder: not synced".into()));
    } else if !is_dir && name.ends_with(".md") && !name.starts_with(TEMP_PREFIX) {
        walk.skipped.push((path.to_owned(), "hidden file: not synced".into()));
    }
}

/// Records one entry of the walk: a markdown file, or why it cannot be one.
fn visit(root: &Path, canonical_root: &Path, full: &Path, walk: &mut Walk) {
    let path = relative(root, full);
    if !path.ends_with(".md") || path.split('/').next() == Some(STATE_DIR) {
        return;
    }
    if is_ignored(&path) {
        if conflict_original(&path).is_some()
            && let Some(meta) = std::fs::symlink_metadata(full).ok().filter(std::fs::Metadata::is_file)
        {
            walk.conflict_copies.push((path, mtime_ns(&meta)));
        }
        return;
    }
    let meta = match std::fs::symlink_metadata(full) {
        Ok(meta) => meta,
        Err(err) => {
            walk.problems.push((path, format!("cannot stat: {err}")));
            return;
        }
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        match full.canonicalize() {
            Ok(target) if target.starts_with(canonical_root) => {
                let reason = "symlink skipped: its target inside the folder is synced as itself";
                walk.warnings.push((path, reason.into()));
            }
            Ok(target) => {
                let reason = format!("symlink points outside the folder ({})", target.display());
                walk.problems.push((path, reason));
            }
            Err(err) => walk.problems.push((path, format!("broken symlink or symlink loop: {err}"))),
        }
    } else if kind.is_file() {
        walk.files.push(Found { path, size: meta.len(), mtime_ns: mtime_ns(&meta) });
    } else if !kind.is_dir() {
        walk.problems.push((path, "not a regular file (fifo, socket or device)".into()));
    }
}

/// Stats the given relative paths (for imports of a few paths, e.g. from the
/// watcher). Paths that are gone are returned separately.
pub fn stat_paths(root: &Path, paths: &[String]) -> (Walk, Vec<String>) {
    let mut walk = Walk::default();
    let mut gone = Vec::new();
    for path in paths {
        if !path.ends_with(".md") || is_ignored(path) {
            continue;
        }
        let Ok(full) = crate::layout::safe_join(root, path) else {
            walk.problems.push((path.clone(), "not a plain relative path".into()));
            continue;
        };
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_file() => {
                walk.files.push(Found { path: path.clone(), size: meta.len(), mtime_ns: mtime_ns(&meta) });
            }
            Ok(meta) if meta.file_type().is_symlink() => walk.problems.push((path.clone(), "symlink skipped".into())),
            Ok(_) => walk.problems.push((path.clone(), "not a regular file".into())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => gone.push(path.clone()),
            Err(err) => walk.problems.push((path.clone(), format!("cannot stat: {err}"))),
        }
    }
    (walk, gone)
}

/// Files whose paths differ only by Unicode normalization (possible on
/// Linux, one file on macOS): they would be one entity. Each but the first
/// in path order, with the one it clashes with.
pub fn normalization_twins(files: &[Found]) -> std::collections::HashMap<String, String> {
    let mut first: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let mut twins = std::collections::HashMap::new();
    let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).filter(|p| !p.is_ascii()).collect();
    paths.sort_unstable();
    for path in paths {
        match first.entry(entity_store::nfc(path.to_owned())) {
            std::collections::hash_map::Entry::Occupied(kept) => {
                twins.insert(path.to_owned(), (*kept.get()).to_owned());
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(path);
            }
        }
    }
    twins
}

/// `relative` as spelled on disk: each segment that does not exist as
/// written but has a sibling equal to it in NFC takes that sibling's name.
/// Segments not found are kept as given.
pub fn existing_spelling(root: &Path, relative: &str) -> String {
    let mut spelled: Vec<String> = Vec::new();
    let mut at = root.to_path_buf();
    for segment in relative.split('/') {
        let mut name = segment.to_owned();
        if !segment.is_ascii() && std::fs::symlink_metadata(at.join(segment)).is_err() {
            let wanted = entity_store::nfc(segment.to_owned());
            let sibling = std::fs::read_dir(&at).ok().and_then(|entries| {
                entries.filter_map(Result::ok).find_map(|entry| {
                    let candidate = entry.file_name().to_str()?.to_owned();
                    (entity_store::nfc(candidate.clone()) == wanted).then_some(candidate)
                })
            });
            if let Some(sibling) = sibling {
                name = sibling;
            }
        }
        at.push(&name);
        spelled.push(name);
    }
    spelled.join("/")
}

/// A file's modification time in nanoseconds since the Unix epoch (0 when unknown).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

fn relative(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Reads a file, refusing more than `limit` bytes even if it grew since the walk.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|err| format!("cannot read: {err}"))?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("file is over the size limit of {limit} bytes"));
    }
    Ok(bytes)
}

const TEMP_PREFIX: &str = ".directory-sync-";
const TEMP_SUFFIX: &str = ".tmp";
/// A temp file lives for the moment of one write; one older than this was
/// left by a process killed mid-write.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes `full` if it is one of our temp files, left behind long ago.
fn remove_stale_temp(full: &Path, name: &str) {
    if !(name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)) {
        return;
    }
    let age = std::fs::symlink_metadata(full).and_then(|meta| meta.modified()).map(|at| at.elapsed());
    if matches!(age, Ok(Ok(age)) if age > STALE_TEMP_AGE)
        && let Err(err) = std::fs::remove_file(full)
    {
        tracing::warn!(path = %full.display(), %err, "cannot remove a stale temp file");
    }
}

/// Which permissions a written file gets.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// The file's own, when it exists (mode, and group where allowed);
    /// else `0666` less the umask, as any program's new file.
    Keep,
    /// Those of another file in the folder, when it exists (a conflict
    /// copy takes its original's).
    OfFile(&'a str),
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder,
/// then a rename, so readers and crashes see the old or the new file, never
/// half of one. Parent folders are created; none of them may be a symlink.
/// Permissions follow `mode`.
pub fn write_atomic(root: &Path, relative: &str, bytes: &[u8], mode: Mode<'_>) -> Result<(u64, i64), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = crate::layout::safe_join(root, relative).map_err(|err| err.to_string())?;
    let parent = path.parent().map_or_else(|| root.to_path_buf(), Path::to_path_buf);
    create_dirs_inside(root, &parent)?;
    let model = match mode {
        Mode::Keep => Some(path.clone()),
        Mode::OfFile(other) => crate::layout::safe_join(root, other).ok(),
    };
    let existing = model.and_then(|model| std::fs::metadata(model).ok()).filter(std::fs::Metadata::is_file);
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        // Created with open(2)'s mode, so the umask applies as to any new file.
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&parent)
        .map_err(|err| format!("cannot create a temp file in {}: {err}", parent.display()))?;
    if let Some(existing) = &existing {
        // Owner and group first (the owner only where we may: as root, or
        // our own file), as changing them may clear set-id bits that the
        // mode then restores.
        if std::os::unix::fs::fchown(temp.as_file(), Some(existing.uid()), Some(existing.gid())).is_err() {
            let _ = std::os::unix::fs::fchown(temp.as_file(), None, Some(existing.gid()));
        }
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(existing.mode() & 0o7777))
            .map_err(|err| format!("cannot set the file's mode: {err}"))?;
    }
    temp.write_all(bytes).map_err(|err| format!("cannot write: {err}"))?;
    let file = temp.persist(&path).map_err(|err| format!("cannot rename into place: {}", err.error))?;
    let meta = file.metadata().map_err(|err| format!("cannot stat: {err}"))?;
    Ok((meta.len(), mtime_ns(&meta)))
}

/// Creates `dir` and its parents, refusing to pass through a symlink.
fn create_dirs_inside(root: &Path, dir: &Path) -> Result<(), String> {
    let relative = dir.strip_prefix(root).map_err(|_| format!("{} is outside the folder", dir.display()))?;
    let mut current = PathBuf::from(root);
    for component in relative.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!("{} is a symlink; refusing to write through it", current.display()));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("{} is a file, not a folder", current.display())),
            Err(_) => std::fs::create_dir(&current)
                .or_else(|err| if current.is_dir() { Ok(()) } else { Err(err) })
                .map_err(|err| format!("cannot create {}: {err}", current.display()))?,
        }
    }
    Ok(())
}

/// Removes a file we wrote, and folders it leaves empty (not the root).
pub fn remove_file(root: &Path, relative: &str) -> Result<(), String> {
    let path = crate::layout::safe_join(root, relative).map_err(|err| err.to_string())?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(format!("cannot remove: {err}")),
    }
    let mut dir = path.parent();
    while let Some(current) = dir {
        if current == root || std::fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    /// Every file the tool writes keeps its mode when it exists, and a new
    /// one gets 0666 less the umask (here 022, so 0644; not tempfile's 0600).
    #[test]
    fn written_files_keep_their_mode_and_new_ones_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for mode in [0o664, 0o600, 0o640, 0o444, 0o755] {
            let name = format!("kept-{mode:o}.md");
            std::fs::write(root.join(&name), "old").unwrap();
            std::fs::set_permissions(root.join(&name), std::fs::Permissions::from_mode(mode)).unwrap();
            write_atomic(root, &name, b"new", Mode::Keep).unwrap();
            assert_eq!(mode_of(&root.join(&name)), mode, "{name}");
            assert_eq!(std::fs::read(root.join(&name)).unwrap(), b"new");
            write_atomic(root, &format!("copy-{mode:o}.md"), b"copy", Mode::OfFile(&name)).unwrap();
            assert_eq!(mode_of(&root.join(format!("copy-{mode:o}.md"))), mode);
        }
        // The umask is process-wide: read it without changing it for long.
        let umask = {
            let probe = root.join("probe");
            std::fs::File::options().write(true).create_new(true).open(&probe).unwrap();
            0o666 & !mode_of(&probe)
        };
        write_atomic(root, "sub/new.md", b"x", Mode::Keep).unwrap();
        assert_eq!(mode_of(&root.join("sub/new.md")), 0o666 & !umask);
        write_atomic(root, "new-copy.md", b"x", Mode::OfFile("missing.md")).unwrap();
        assert_eq!(mode_of(&root.join("new-copy.md")), 0o666 & !umask);
    }

    /// A file of another user (a shared vault, a web server's) stays
    /// theirs when rewritten; only root may give a file away, so this runs as root.
    #[test]
    fn a_rewritten_file_keeps_its_owner() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("theirs.md");
        std::fs::write(&path, "old").unwrap();
        if std::fs::metadata(&path).unwrap().uid() != 0 {
            return; // not root: a file cannot be given to another user here
        }
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o2664)).unwrap();
        write_atomic(dir.path(), "theirs.md", b"new", Mode::Keep).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (65534, 65534, 0o2664));
    }

    #[test]
    fn walk_removes_temp_files_left_by_killed_writes_but_not_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("person")).unwrap();
        let stale = ["person/.directory-sync-a1.tmp", ".directory-sync-b2.tmp"];
        let kept = ["person/.directory-sync-c3.tmp", "person/.other.tmp"];
        for name in stale.iter().chain(&kept) {
            std::fs::write(dir.path().join(name), "half").unwrap();
        }
        let old = SystemTime::now() - Duration::from_secs(600);
        for name in stale.iter().chain(&kept[1..]) {
            std::fs::File::options().write(true).open(dir.path().join(name)).unwrap().set_modified(old).unwrap();
        }
        let walk = walk(dir.path()).unwrap();
        assert!(walk.files.is_empty() && walk.problems.is_empty());
        for name in stale {
            assert!(!dir.path().join(name).exists(), "{name} should be removed");
        }
        for name in kept {
            assert!(dir.path().join(name).exists(), "{name} should stay");
        }
    }
}
