//! Every command at the edges: `watch` under real file operations,
//! signals, closed pipes, reads that must not write, a re-run after a
//! killed command. The real binary, real folders; SQLite, and PostgreSQL
//! with `DATABASE_URL` where noted.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
mod common;

use common::{command, run};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use directory_sync::Database;

/// The tests of this file run one at a time: some change system-wide
/// inotify limits, some time how fast a signal is obeyed.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn notes(folder: &Path, names: &[String]) {
    let old = SystemTime::now() - Duration::from_secs(60);
    for name in names {
        let path = folder.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("---\ntitle: {name}\n---\nbody of {name}\n")).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
    }
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}.md")).collect()
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap().success());
}

/// Waits for `child` at most `limit`; kills it and fails if it is still running.
fn exits_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// A child's stderr, read on a thread as it comes, so a test can wait for
/// a line (the event) instead of sleeping.
struct Said {
    lines: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl Said {
    fn of(child: &mut Child) -> Self {
        let err = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self { lines, seen: String::new() }
    }

    /// Waits (at most 30 s) for a line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                Err(err) => panic!("no line with {needle:?} came ({err}); it said: {}", self.seen),
            }
        }
    }

    /// Everything said, once the child has ended (its stderr closed).
    fn all(mut self) -> String {
        for line in &self.lines {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        self.seen
    }
}

/// The note ids in the database (live entities of the base type).
fn note_ids(database: &str) -> BTreeSet<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let db = Database::open(database).await.unwrap();
        let keys = db.store.find_keys(&entity_store::Filter::all(), 1_000_000).await.unwrap();
        db.close().await;
        keys.into_iter().map(|key| key.id).collect()
    })
}

/// The ids the folder's notes should have: their paths without `.md`.
fn ids_on_disk(root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let relative = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            // Only lowercase `.md` files are notes.
            (!relative.starts_with('.') && relative.rsplit_once('.').is_some_and(|(_, ext)| ext == "md"))
                .then(|| relative.trim_end_matches(".md").to_owned())
        })
        .collect()
}

fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `watch` running on `root`; stopped with Ctrl-C on drop.
struct Watch(Child, Option<Said>);

impl Watch {
    /// Returns once the watcher is up (it says "watching").
    fn start(root: &str, database: &str) -> Self {
        let mut child =
            command(&["watch", root], database).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut said = Said::of(&mut child);
        said.wait_for("watching");
        Self(child, Some(said))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).stderr(Stdio::null()).status();
        let _ = self.0.wait();
    }
}

/// Folder-level operations under a running `watch`: each reaches the
/// database within a few debounce periods, without the safety-net sync.
fn watch_sees_folder_operations(database: &str) {
    let (vault, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = vault.path().to_str().unwrap().to_owned();
    let mut first = names("a/n", 3);
    first.push("top.md".into());
    notes(vault.path(), &first);
    assert!(run(&["--quiet", "sync", &root], database).status.success());
    let _watch = Watch::start(&root, database);
    let agree = |what: &str| {
        eventually(what, Duration::from_secs(20), || note_ids(database) == ids_on_disk(vault.path()));
    };
    let v = vault.path();
    std::fs::rename(v.join("a"), v.join("b")).unwrap();
    agree("a folder renamed within the vault");
    notes(outside.path(), &names("incoming/m", 2));
    std::fs::rename(outside.path().join("incoming"), v.join("incoming")).unwrap();
    agree("a folder moved in from outside");
    std::fs::rename(v.join("b"), outside.path().join("b")).unwrap();
    agree("a folder moved out of the vault");
    let copy = Command::new("cp").arg("-r").arg(outside.path().join("b")).arg(v.join("copied")).status().unwrap();
    assert!(copy.success());
    agree("a folder copied in");
    std::fs::create_dir(v.join("c")).unwrap();
    std::fs::rename(v.join("incoming/m0.md"), v.join("c/m0.md")).unwrap();
    agree("a note moved between folders");
    std::fs::remove_dir_all(v.join("copied")).unwrap();
    agree("a folder deleted");
    assert_eq!(ids_on_disk(v), BTreeSet::from(["c/m0".to_owned(), "incoming/m1".to_owned(), "top".to_owned()]));
}

#[test]
fn watch_sees_folder_operations_on_sqlite() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    watch_sees_folder_operations(&format!("sqlite://{}", dir.path().join("w.db").display()));
}

#[test]
fn watch_sees_folder_operations_on_postgres() {
    let _alone = alone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(scratch) = runtime.block_on(scratch_pg::ScratchPg::from_env("DATABASE_URL", "ds_edges", "watch")) else {
        return;
    };
    watch_sees_folder_operations(&scratch.url);
    runtime.block_on(scratch.drop_database()).unwrap();
}

/// Sets a `/proc/sys/fs/inotify` limit for as long as the guard lives
/// (root only; `None` when it cannot).
struct InotifyLimit {
    file: &'static str,
    old: String,
}

impl InotifyLimit {
    fn set(name: &'static str, value: u64) -> Option<Self> {
        let file = match name {
            "max_queued_events" => "/proc/sys/fs/inotify/max_queued_events",
            _ => "/proc/sys/fs/inotify/max_user_watches",
        };
        let old = std::fs::read_to_string(file).ok()?;
        std::fs::write(file, value.to_string()).ok()?;
        Some(Self { file, old })
    }
}

impl Drop for InotifyLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(self.file, self.old.trim());
    }
}

/// The kernel's event queue overflows (a tiny `max_queued_events`): the
/// watcher notices the loss and scans, so every new note arrives.
#[test]
fn an_overflowing_event_queue_leads_to_a_full_scan() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("w.db").display());
    let vault = tempfile::tempdir().unwrap();
    let root = vault.path().to_str().unwrap().to_owned();
    notes(vault.path(), &names("n", 2));
    assert!(run(&["--quiet", "sync", &root], &database).status.success());
    // The queue size is read when the watcher starts: lower it just for that.
    let watch = {
        let Some(_limit) = InotifyLimit::set("max_queued_events", 16) else {
            println!("SKIPPED: cannot lower max_queued_events (not root)");
            return;
        };
        Watch::start(&root, &database)
    };
    notes(vault.path(), &names("burst/n", 300));
    eventually("all 302 notes arrived", Duration::from_secs(30), || note_ids(&database).len() == 302);
    drop(watch);
}

/// No watch left (`max_user_watches` reached): the watcher says so once
/// and polls the folder instead, and changes still arrive.
#[test]
fn at_the_watch_limit_the_folder_is_polled() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("w.db").display());
    let vault = tempfile::tempdir().unwrap();
    let root = vault.path().to_str().unwrap().to_owned();
    notes(vault.path(), &names("sub/n", 2));
    assert!(run(&["--quiet", "sync", &root], &database).status.success());
    let mut watch = {
        let Some(_limit) = InotifyLimit::set("max_user_watches", 1) else {
            println!("SKIPPED: cannot lower max_user_watches (not root)");
            return;
        };
        Watch::start(&root, &database)
    };
    notes(vault.path(), &names("sub/new", 2));
    eventually("the new notes arrived by polling", Duration::from_secs(30), || note_ids(&database).len() == 4);
    signal(&watch.0, "INT");
    exits_within(&mut watch.0, Duration::from_secs(5), "watch");
    let said = watch.1.take().unwrap().all();
    assert_eq!(said.matches("polling the folder").count(), 1, "{said}");
}

/// Ctrl-C or SIGTERM ends each command within two seconds with its line;
/// a second Ctrl-C ends it at once.
#[test]
fn signals_end_every_command_promptly() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("s.db").display());
    let vault = tempfile::tempdir().unwrap();
    let root = vault.path().to_str().unwrap().to_owned();
    notes(vault.path(), &names("n", 5));
    assert!(run(&["--quiet", "sync", &root], &database).status.success());
    // An embedding job that will not run for an hour: `sync` waits for it after its own job.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let db = Database::open(&database).await.unwrap();
        let later = job_queue::EnqueueOptions {
            run_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            ..job_queue::EnqueueOptions::default()
        };
        db.queue.enqueue(embedding::EMBED_JOB, &serde_json::json!({"items": []}), later).await.unwrap();
        db.close().await;
    });
    for (name, code) in [("INT", 130), ("TERM", 143)] {
        let mut sync =
            command(&["sync", &root], &database).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut said = Said::of(&mut sync);
        said.wait_for("Embedding:"); // its job is done; it waits for embedding
        assert!(sync.try_wait().unwrap().is_none(), "sync is waiting for the embedding job");
        signal(&sync, name);
        let status = exits_within(&mut sync, Duration::from_secs(2), "sync in its embedding wait");
        assert_eq!(status.code(), Some(code), "SIG{name}");
        let said = said.all();
        assert!(said.contains("embedding jobs stay queued"), "SIG{name}: {said}");
    }
    let mut twice = command(&["sync", &root], &database).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    Said::of(&mut twice).wait_for("Embedding:");
    signal(&twice, "INT");
    signal(&twice, "INT");
    let status = exits_within(&mut twice, Duration::from_secs(1), "sync after a second Ctrl-C");
    assert_eq!(status.code(), Some(130));

    let mut watch = command(&["watch", &root], &database).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut said = Said::of(&mut watch);
    said.wait_for("watching");
    signal(&watch, "INT");
    assert!(exits_within(&mut watch, Duration::from_secs(2), "watch").success());
    assert!(said.all().contains("stopped watching"));

    // A worker says so when it ends a job: id, type, state, folder, summary.
    let queued = run(&["--json", "sync", &root, "--detach"], &database);
    let id =
        serde_json::from_slice::<serde_json::Value>(&queued.stdout).unwrap()["job_id"].as_str().unwrap().to_owned();
    let mut worker = command(&["worker", "--path", &root], &database).stderr(Stdio::piped()).spawn().unwrap();
    let mut said = Said::of(&mut worker);
    said.wait_for("worker running");
    said.wait_for(&format!("{id} directory-sync completed"));
    signal(&worker, "TERM");
    assert!(exits_within(&mut worker, Duration::from_secs(2), "worker").success());
    let said = said.all();
    assert!(said.contains("worker stopped"));
    let line = said.lines().find(|line| line.starts_with(&id)).unwrap_or_default();
    assert!(line.contains(&root) && line.contains("Sync complete:"), "{line}");
}

/// Output into a pipe whose reader has gone: quiet, no panic, for text
/// and `--json`.
#[test]
fn a_closed_pipe_ends_commands_quietly() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("p.db").display());
    let vault = tempfile::tempdir().unwrap();
    let root = vault.path().to_str().unwrap().to_owned();
    notes(vault.path(), &names("word", 40));
    let synced = run(&["--json", "sync", &root, "--detach"], &database);
    let id =
        serde_json::from_slice::<serde_json::Value>(&synced.stdout).unwrap()["job_id"].as_str().unwrap().to_owned();
    assert!(run(&["--quiet", "sync", &root], &database).status.success());
    let cases: Vec<Vec<&str>> = vec![
        vec!["search", "body", "--path", &root],
        vec!["--json", "search", "body", "--path", &root],
        vec!["status", &root],
        vec!["--json", "status", &root],
        vec!["jobs", "--path", &root, "show", &id],
        vec!["--json", "jobs", "--path", &root, "list"],
    ];
    for args in cases {
        let mut child = command(&args, &database).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader is gone before anything is written
        let status = exits_within(&mut child, Duration::from_secs(20), &args.join(" "));
        let said = stderr_of(&mut child);
        assert!(!said.contains("panicked"), "{args:?}: {said}");
        assert!(status.code() == Some(0) || status.code() == Some(141), "{args:?}: {status:?} {said}");
    }
}

/// `status`, `jobs` and `search` read: the database file's bytes stay as
/// they were, and a missing database is not created.
#[test]
fn reads_are_reads() {
    let _alone = alone();
    let vault = tempfile::tempdir().unwrap();
    let root = vault.path().to_str().unwrap().to_owned();
    let file = vault.path().join(".directory-sync/store.db");
    let sqlite = |folder: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_directory-sync"));
        command.env_remove("DATABASE_URL").args(["--quiet"]);
        let _ = folder;
        command
    };
    let status = sqlite(&root).args(["status", &root]).output().unwrap();
    assert_eq!(status.status.code(), Some(2), "no database yet");
    assert!(!file.exists() && !vault.path().join(".directory-sync").exists(), "status created nothing");
    notes(vault.path(), &names("n", 10));
    std::fs::write(vault.path().join("n1.md"), "---\ntitle: other\n---\nchanged\n").unwrap();
    assert!(sqlite(&root).args(["sync", &root]).stdout(Stdio::null()).status().unwrap().success());
    let before = std::fs::read(&file).unwrap();
    for args in [
        vec!["status", &root],
        vec!["--json", "status", &root],
        vec!["search", "body", "--path", &root],
        vec!["jobs", "--path", &root, "list"],
    ] {
        assert!(sqlite(&root).args(&args).stdout(Stdio::null()).status().unwrap().success(), "{args:?}");
        assert!(std::fs::read(&file).unwrap() == before, "{args:?} changed the database file");
    }
    let text = sqlite(&root).args(["status", &root]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Sync complete:"), "a finished sync shows its summary: {text}");
}

/// A `sync` killed mid-run leaves its job running under a dead process:
/// the next `sync` takes it over at once (it says so) instead of waiting
/// for the lease, and finishes the folder.
#[test]
fn a_rerun_after_a_killed_sync_takes_over_at_once() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("k.db").display());
    let vault = tempfile::tempdir().unwrap();
    let root = vault.path().to_str().unwrap().to_owned();
    notes(vault.path(), &names("n", 3000));
    let mut first = command(&["sync", &root, "--batch-size", "20"], &database)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the first sync wrote something", Duration::from_secs(30), || !note_ids(&database).is_empty());
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second =
        command(&["--json", "sync", &root], &database).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Well under the 30 s lease: the job is taken over, not waited for.
    let status = exits_within(&mut second, Duration::from_secs(25), "the re-run");
    let said = stderr_of(&mut second);
    assert!(status.success(), "{said}");
    assert!(said.contains("taking it over"), "{said}");
    assert_eq!(note_ids(&database).len(), 3000);
}
