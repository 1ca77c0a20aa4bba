//! End to end: real folders in temp dirs, real SQLite and PostgreSQL
//! (with `DATABASE_URL`), the same scenario on both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use batch_core::CancellationToken;
use directory_sync::{
    ConflictPolicy, Database, Direction, DirectorySyncPlugin, FolderJob, IMPORT_JOB, ImportInput, SYNC_JOB, SyncConfig,
    SyncSummary, Syncer, no_progress,
};
use entity_store::{EntityKey, NewEntity, UpsertOptions};
use job_queue::{JobState, Registry, WorkerConfig};
use serde_json::json;

mod common;

struct Fixture {
    db: Database,
    folder: tempfile::TempDir,
    test: common::TestDb,
}

impl Fixture {
    fn root(&self) -> &Path {
        self.folder.path()
    }

    fn config(&self) -> SyncConfig {
        SyncConfig { entity_types: vec!["person".into(), "project".into()], ..SyncConfig::new(self.root()) }
    }

    fn syncer(&self) -> Syncer {
        self.syncer_with(self.config())
    }

    fn syncer_with(&self, config: SyncConfig) -> Syncer {
        Syncer::new(config, self.db.store.clone(), self.db.state.clone(), None).unwrap()
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.root().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        backdate(&path);
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.root().join(relative)).unwrap()
    }

    async fn sync(&self, direction: Direction) -> SyncSummary {
        let summary = self.syncer().sync(direction, no_progress(), &CancellationToken::new()).await.unwrap();
        backdate_all(self.root());
        summary
    }
}

/// Files written a minute ago: their size + mtime can be trusted at once
/// (a file modified within the last moments is always hashed, so a test
/// that wants a no-read re-sync lets time pass this way).
fn backdate(path: &Path) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();
}

/// Backdates files the sync itself just wrote, as if time had passed.
fn backdate_all(root: &Path) {
    let recent = SystemTime::now() - Duration::from_secs(30);
    for entry in walk(root) {
        if std::fs::metadata(&entry).unwrap().modified().unwrap() > recent {
            backdate(&entry);
        }
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() && !entry.file_name().to_string_lossy().starts_with('.') {
            files.extend(walk(&entry.path()));
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
    files
}

async fn import_resync_edit_and_delete_on_both_sides(f: &Fixture) {
    f.write("Welcome.md", "---\ntitle: Welcome\ntags: [intro]\n---\n# Welcome\n");
    f.write("person/Ada Lovelace.md", "---\nborn: 1815\n---\nMathematician.\n");
    f.write("Projects/2026/plan.md", "No frontmatter here.\n");
    f.write("project/Sync 🚀.md", "---\nstatus: active\n---\nשלום\n");

    let first = f.sync(Direction::Both).await;
    assert_eq!((first.imported, first.failed.len(), first.exported), (4, 0, 0), "{first:?}");
    let ada = f.db.store.get(&EntityKey::new("person", "Ada Lovelace")).await.unwrap().unwrap();
    assert_eq!(ada.metadata["born"], 1815);
    assert_eq!(ada.content, "Mathematician.\n");
    assert!(f.db.store.get(&EntityKey::new("note", "Projects/2026/plan")).await.unwrap().is_some());

    let again = f.sync(Direction::Both).await;
    assert_eq!((again.imported, again.updated, again.exported, again.files_read), (0, 0, 0, 0), "{again:?}");
    assert_eq!(again.unchanged, 4);

    // A file edit updates its entity and nothing else.
    f.write("Welcome.md", "---\ntitle: Welcome\ntags: [intro]\n---\n# Welcome, edited\n");
    let edited = f.sync(Direction::Both).await;
    assert_eq!((edited.updated, edited.files_read, edited.exported), (1, 1, 0), "{edited:?}");

    // An entity edit is exported, keeping the file's own frontmatter text.
    let key = EntityKey::new("person", "Ada Lovelace");
    let mut ada = f.db.store.get(&key).await.unwrap().unwrap();
    ada.content = "Mathematician and writer.\n".into();
    let update = NewEntity::new("person", "Ada Lovelace", ada.content.clone()).with_metadata(json!(ada.metadata));
    f.db.store.batch_upsert(vec![update], &UpsertOptions::default()).await.unwrap();
    let exported = f.sync(Direction::Both).await;
    assert_eq!((exported.exported, exported.updated), (1, 0), "{exported:?}");
    assert_eq!(f.read("person/Ada Lovelace.md"), "---\nborn: 1815\n---\nMathematician and writer.\n");

    // A new entity gets a file, in its type folder.
    let new = NewEntity::new("project", "Roadmap", "Q3 goals").with_metadata(json!({"owner": "ada"}));
    f.db.store.batch_upsert(vec![new], &UpsertOptions::default()).await.unwrap();
    f.sync(Direction::Both).await;
    assert_eq!(f.read("project/Roadmap.md"), "---\nowner: ada\n---\nQ3 goals");

    // Deleting a file deletes its entity; deleting an entity removes its file and empty folders.
    std::fs::remove_file(f.root().join("Welcome.md")).unwrap();
    f.db.store.batch_delete(&[EntityKey::new("note", "Projects/2026/plan")]).await.unwrap();
    let deleted = f.sync(Direction::Both).await;
    assert_eq!(deleted.deleted, 2, "{deleted:?}");
    assert!(f.db.store.get(&EntityKey::new("note", "Welcome")).await.unwrap().is_none());
    assert!(!f.root().join("Projects").exists(), "empty folders go with their last file");
    let quiet = f.sync(Direction::Both).await;
    assert_eq!((quiet.deleted, quiet.exported, quiet.imported, quiet.files_read), (0, 0, 0, 0), "{quiet:?}");
}

/// Embedding jobs are queued exactly when the folder keeps vectors: for
/// new files and edited ones alike; never by default; and a settings file
/// saved before the setting existed keeps the lexical vectors it had.
async fn embedding_is_queued_only_where_vectors_are_chosen(f: &Fixture) {
    use directory_sync::EmbedderSetting;
    assert_eq!(SyncConfig::new(f.root()).embedder, EmbedderSetting::None, "none by default");
    let saved_before: SyncConfig = serde_json::from_str(r#"{"base_type": "note"}"#).unwrap();
    assert_eq!(saved_before.embedder, EmbedderSetting::Lexical, "an older settings file keeps its vectors");
    for (text, setting) in [(r#""none""#, EmbedderSetting::None), (r#""lexical""#, EmbedderSetting::Lexical)] {
        let parsed: SyncConfig = serde_json::from_str(&format!(r#"{{"embedder": {text}}}"#)).unwrap();
        assert_eq!(parsed.embedder, setting);
    }
    for (value, shown) in [(r#""bert""#, r#""bert""#), ("null", "null"), ("5", "5"), ("[]", "[]")] {
        let wrong = serde_json::from_str::<SyncConfig>(&format!(r#"{{"embedder": {value}}}"#)).unwrap_err().to_string();
        assert!(wrong.contains(&format!("embedder is {shown}")) && wrong.contains(r#""lexical""#), "{wrong}");
    }
    assert!("bert".parse::<EmbedderSetting>().unwrap_err().contains("none or lexical"));

    let syncer = |embedder| {
        let config = SyncConfig { embedder, ..f.config() };
        Syncer::new(config, f.db.store.clone(), f.db.state.clone(), Some(f.db.queue.clone())).unwrap()
    };
    let embed_jobs = || async { f.db.queue.unfinished(Some(embedding::EMBED_JOB)).await.unwrap() };
    let run = |syncer: Syncer| async move {
        let summary = syncer.sync(Direction::Both, no_progress(), &CancellationToken::new()).await.unwrap();
        backdate_all(f.root());
        summary
    };
    f.write("a.md", "first note");
    f.write("person/Ada.md", "---\nborn: 1815\n---\nMathematician.\n");
    let plain = run(syncer(EmbedderSetting::None)).await;
    assert_eq!((plain.imported, plain.embed_queued), (2, 0), "{plain:?}");
    f.write("a.md", "first note, edited");
    let edited = run(syncer(EmbedderSetting::None)).await;
    assert_eq!((edited.updated, edited.embed_queued), (1, 0), "{edited:?}");
    assert_eq!(embed_jobs().await, 0, "no model, no embedding jobs");

    f.write("a.md", "first note, edited again");
    f.write("b.md", "second note");
    let lexical = run(syncer(EmbedderSetting::Lexical)).await;
    assert_eq!((lexical.imported, lexical.updated, lexical.embed_queued), (1, 1, 2), "{lexical:?}");
    assert!(embed_jobs().await > 0);
}

async fn an_edit_on_both_sides_keeps_both_versions(f: &Fixture) {
    f.write("Plan.md", "---\ntitle: Plan\n---\nversion one\n");
    f.sync(Direction::Both).await;
    let update = NewEntity::new("note", "Plan", "database version\n").with_metadata(json!({"title": "Plan"}));
    f.db.store.batch_upsert(vec![update], &UpsertOptions::default()).await.unwrap();
    f.write("Plan.md", "---\ntitle: Plan\n---\nfile version\n");

    let summary = f.sync(Direction::Both).await;
    assert_eq!(summary.conflicts.len(), 1, "{summary:?}");
    let conflict = &summary.conflicts[0];
    assert_eq!(conflict.path, "Plan.md");
    assert!(
        conflict.conflict_path.starts_with("Plan.conflict-")
            && conflict.conflict_path.rsplit_once('.')
                == Some((conflict.conflict_path.strip_suffix(".md").unwrap(), "md"))
    );
    assert_eq!(f.read("Plan.md"), "---\ntitle: Plan\n---\ndatabase version\n");
    assert_eq!(f.read(&conflict.conflict_path), "---\ntitle: Plan\n---\nfile version\n");
    let entity = f.db.store.get(&EntityKey::new("note", "Plan")).await.unwrap().unwrap();
    assert_eq!(entity.content, "database version\n");

    // The conflict file is not imported, and stays listed until it is removed.
    let next = f.sync(Direction::Both).await;
    assert_eq!((next.imported, next.conflicts.len()), (0, 0), "{next:?}");
    assert_eq!(f.db.store.count(None).await.unwrap(), 1);
    assert_eq!(f.syncer().open_conflicts().await.unwrap().len(), 1);
    std::fs::remove_file(f.root().join(&conflict.conflict_path)).unwrap();
    assert!(f.syncer().open_conflicts().await.unwrap().is_empty());
}

async fn the_file_wins_when_configured(f: &Fixture) {
    f.write("Plan.md", "one\n");
    f.sync(Direction::Both).await;
    let update = NewEntity::new("note", "Plan", "database\n");
    f.db.store.batch_upsert(vec![update], &UpsertOptions::default()).await.unwrap();
    f.write("Plan.md", "file\n");
    let config = SyncConfig { conflict_policy: ConflictPolicy::PreferFile, ..f.config() };
    let summary = f.syncer_with(config).sync(Direction::Both, no_progress(), &CancellationToken::new()).await.unwrap();
    assert!(summary.conflicts.is_empty());
    assert_eq!(f.db.store.get(&EntityKey::new("note", "Plan")).await.unwrap().unwrap().content, "file\n");
    assert_eq!(f.read("Plan.md"), "file\n");
}

async fn bad_files_fail_alone_with_their_reason(f: &Fixture) {
    f.write("good.md", "fine\n");
    f.write("bad utf8.md", "");
    std::fs::write(f.root().join("bad utf8.md"), b"caf\xe9\n").unwrap();
    f.write("aliases.md", "---\n- @alias\n---\nbody\n");
    f.write("huge.md", &"x".repeat(2000));
    f.write("notes.txt", "not markdown");
    f.write(".obsidian/workspace.md", "hidden");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.md"), "outside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.md"), f.root().join("link.md")).unwrap();
    std::os::unix::fs::symlink(f.root().join("loop.md"), f.root().join("loop.md")).unwrap();

    let config = SyncConfig { max_file_size: 1000, ..f.config() };
    let summary = f.syncer_with(config).import(no_progress(), &CancellationToken::new()).await.unwrap();
    let reason = |path: &str| summary.failed.iter().find(|p| p.path == path).map(|p| p.error.clone());
    assert!(reason("bad utf8.md").unwrap().contains("UTF-8"), "{summary:?}");
    assert!(reason("huge.md").unwrap().contains("size limit"));
    assert!(reason("link.md").unwrap().contains("outside the folder"));
    assert!(reason("loop.md").unwrap().contains("symlink"));
    assert_eq!(summary.failed.len(), 4, "{:?}", summary.failed);
    assert!(summary.warnings.iter().any(|w| w.path == "aliases.md" && w.error.contains("frontmatter")));
    assert_eq!(summary.imported, 2, "good.md and aliases.md (whole file as content)");
    let aliases = f.db.store.get(&EntityKey::new("note", "aliases")).await.unwrap().unwrap();
    assert_eq!(aliases.content, "---\n- @alias\n---\nbody\n");
    assert_eq!(f.db.store.count(None).await.unwrap(), 2);
}

async fn exported_files_are_not_imported_back(f: &Fixture) {
    let entities: Vec<NewEntity> =
        (0..20).map(|i| NewEntity::new("note", format!("n{i}"), format!("text {i}"))).collect();
    f.db.store.batch_upsert(entities, &UpsertOptions::default()).await.unwrap();
    let exported = f.syncer().export(None, no_progress(), &CancellationToken::new()).await.unwrap();
    assert_eq!(exported.exported, 20);
    // What the watcher would queue right after our own writes: no entity changes.
    let paths: Vec<String> = (0..20).map(|i| format!("n{i}.md")).collect();
    let echo = f.syncer().import_paths(&paths, no_progress(), &CancellationToken::new()).await.unwrap();
    assert_eq!((echo.imported, echo.updated, echo.unchanged), (0, 0, 20), "{echo:?}");
    let revision = f.db.store.current_revision().await.unwrap();
    let again = f.syncer().export(None, no_progress(), &CancellationToken::new()).await.unwrap();
    assert_eq!(again.exported, 0);
    assert_eq!(f.db.store.current_revision().await.unwrap(), revision);
}

async fn jobs_run_on_a_real_worker_and_the_plugin_schedules_the_initial_sync(f: &Fixture) {
    f.write("a.md", "alpha\n");
    f.write("person/b.md", "beta\n");
    let config = SyncConfig { initial_sync_delay: Duration::from_millis(200), ..f.config() };
    let plugin = DirectorySyncPlugin::new(config, f.db.store.clone(), f.db.state.clone(), f.db.queue.clone()).unwrap();
    let mut registry = Registry::new();
    let started = std::time::Instant::now();
    let initial = plugin.register(&mut registry).await.unwrap().expect("initial sync queued");
    assert!(started.elapsed() < Duration::from_secs(1));
    let job = f.db.queue.get(initial).await.unwrap().unwrap();
    assert_eq!(job.job_type, SYNC_JOB);
    assert!(job.run_at > chrono::Utc::now() - chrono::Duration::milliseconds(50), "scheduled after the delay");
    assert_eq!(f.db.store.count(None).await.unwrap(), 0, "registering scans nothing");

    let import = plugin.job(FolderJob::Import(ImportInput { paths: Some(vec!["a.md".into()]), ..Default::default() }));
    assert_eq!(import.job_type, IMPORT_JOB);
    let import = f.db.queue.enqueue_many(vec![import]).await.unwrap().remove(0);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(f.db.queue.worker(registry, WorkerConfig::default()).run(shutdown.clone()));
    let summary: SyncSummary = f.db.queue.wait_output(initial, Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary.imported + summary.unchanged, 2, "{summary:?}");
    let import = f.db.queue.wait(import, Duration::from_secs(30)).await.unwrap();
    assert_eq!(import.state, JobState::Completed);
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(f.db.store.count(None).await.unwrap(), 2);
    let _ = Arc::clone(&f.db.store);
}

async fn the_watcher_turns_real_file_writes_into_import_jobs(f: &Fixture) {
    let config = SyncConfig { initial_sync: false, watch_enabled: true, ..f.config() };
    let plugin = DirectorySyncPlugin::new(config, f.db.store.clone(), f.db.state.clone(), f.db.queue.clone()).unwrap();
    let mut registry = Registry::new();
    let shutdown = CancellationToken::new();
    let started = plugin.start(&mut registry, shutdown.clone()).await.unwrap();
    assert!(started.initial_sync.is_none());
    let watching = started.watcher.expect("watch_enabled starts the watcher");
    let mut events = f.db.queue.subscribe();
    let worker = tokio::spawn(f.db.queue.worker(registry, WorkerConfig::default()).run(shutdown.clone()));

    std::fs::create_dir_all(f.root().join("person")).unwrap();
    std::fs::write(f.root().join("person/Ada.md"), "first").unwrap();
    std::fs::write(f.root().join("Notes.md"), "notes").unwrap();
    for i in 0..50 {
        std::fs::write(f.root().join("Busy.md"), format!("edit {i}")).unwrap();
    }
    std::fs::write(f.root().join("ignored.txt"), "not markdown").unwrap();
    let mut imports = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while f.db.store.count(None).await.unwrap() < 3
        || f.db.store.get(&EntityKey::new("note", "Busy")).await.unwrap().is_none_or(|e| e.content != "edit 49")
    {
        let event =
            tokio::time::timeout_at(deadline, events.recv()).await.expect("the watcher queued the writes").unwrap();

        if event.job_type == IMPORT_JOB && event.kind == job_queue::JobEventKind::Completed {
            imports += 1;
        }
    }
    assert!(imports < 10, "52 writes coalesce into a few import jobs, not {imports}");

    // Removing a folder queues a full scan, which deletes its entities.
    std::fs::remove_dir_all(f.root().join("person")).unwrap();
    while f.db.store.get(&EntityKey::new("person", "Ada")).await.unwrap().is_some() {
        tokio::time::timeout_at(deadline, events.recv()).await.expect("the removal was synced").unwrap();
    }
    assert_eq!(f.db.store.count(None).await.unwrap(), 2);
    shutdown.cancel();
    watching.await.unwrap().unwrap();
    worker.await.unwrap().unwrap();
}

scratch_pg::backends!(
    Fixture;
    import_resync_edit_and_delete_on_both_sides,
    embedding_is_queued_only_where_vectors_are_chosen,
    an_edit_on_both_sides_keeps_both_versions,
    the_file_wins_when_configured,
    bad_files_fail_alone_with_their_reason,
    exported_files_are_not_imported_back,
    jobs_run_on_a_real_worker_and_the_plugin_schedules_the_initial_sync,
    the_watcher_turns_real_file_writes_into_import_jobs,
    a_cancelled_sync_stops_at_the_next_chunk_in_each_direction,
);

/// Cancels `token` at the first progress report past the first chunk of `verb`.
struct CancelAt {
    verb: &'static str,
    token: CancellationToken,
}

impl batch_core::ProgressReporter for CancelAt {
    fn report(&self, update: &batch_core::ProgressUpdate) {
        if update.progress.message.starts_with(self.verb) && update.progress.current > 0 {
            self.token.cancel();
        }
    }
}

/// A sync cancelled mid-way stops at the next chunk, in each direction and
/// phase: it ends `Cancelled`, wrote at most one chunk after the cancel, and
/// writes nothing after it returned.
async fn a_cancelled_sync_stops_at_the_next_chunk_in_each_direction(f: &Fixture) {
    // Each case in a folder of its own, 50 files a chunk.
    let folder = || {
        let dir = tempfile::tempdir().unwrap();
        let config = SyncConfig { sync_batch_size: 50, sync_path: dir.path().into(), ..f.config() };
        (dir, config)
    };
    let cancelled_sync = |config: SyncConfig, verb: &'static str, direction: Direction| async move {
        let token = CancellationToken::new();
        let progress = Arc::new(CancelAt { verb, token: token.clone() });
        f.syncer_with(config).sync(direction, progress, &token).await
    };
    // Export: 1,000 entities to write into an empty folder.
    let people: Vec<NewEntity> = (0..1000).map(|i| NewEntity::new("person", format!("p{i:04}"), "text")).collect();
    f.db.store.batch_upsert(people, &UpsertOptions::default()).await.unwrap();
    for direction in [Direction::Both, Direction::Export] {
        let (dir, config) = folder();
        let ended = cancelled_sync(config, "Exporting", direction).await;
        assert!(matches!(ended, Err(directory_sync::SyncError::Cancelled)), "{direction:?}: {ended:?}");
        let written = walk(dir.path()).len();
        assert!(written <= 2 * 50, "{direction:?}: stopped within a chunk of the cancel, wrote {written}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(walk(dir.path()).len(), written, "nothing written after the sync returned");
    }
    // Import: 1,000 new files; no export follows a cancelled import.
    let (dir, config) = folder();
    for i in 0..1000 {
        let path = dir.path().join(format!("project/q{i:04}.md"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "---\ntitle: q\n---\nbody\n").unwrap();
    }
    let ended = cancelled_sync(config, "Importing", Direction::Both).await;
    assert!(matches!(ended, Err(directory_sync::SyncError::Cancelled)), "{ended:?}");
    let projects = f.db.store.count(Some("project")).await.unwrap();
    assert!(projects > 0 && projects <= 2 * 50, "stopped within a chunk of the cancel: {projects} imported");
    assert_eq!(walk(dir.path()).len(), 1000, "no export after a cancelled import");
}

/// Rows written behind the store's back (an old version, another tool)
/// whose ids try to leave the folder: export refuses each, writes nothing
/// outside, and exports the good row.
#[tokio::test]
async fn ids_that_escape_the_folder_are_refused_on_export() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("vault");
    let db_dir = tempfile::tempdir().unwrap();
    let db = Database::open(&format!("sqlite://{}", db_dir.path().join("s.db").display())).await.unwrap();
    let directory_sync::StateDb::Sqlite(pool) = &db.state else { unreachable!() };
    for (revision, id) in ["../escape", "a/../../b", "/abs/evil", "ok/fine"].iter().enumerate() {
        sqlx::query(
            "INSERT INTO entities (entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision)
             VALUES ('note', ?, 'x', '{}', ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1, ?)",
        )
        .bind(id)
        .bind(format!("hash{revision}"))
        .bind(revision as i64 + 1)
        .execute(pool)
        .await
        .unwrap();
    }
    std::fs::create_dir(&root).unwrap();
    let syncer = Syncer::new(SyncConfig::new(&root), db.store.clone(), db.state.clone(), None).unwrap();
    let summary = syncer.export(None, no_progress(), &CancellationToken::new()).await.unwrap();
    assert_eq!(summary.exported, 1, "{summary:?}");
    assert_eq!(summary.failed.len(), 3, "{summary:?}");
    assert!(summary.failed.iter().all(|p| p.error.contains("unsafe")), "{summary:?}");
    let outside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside, ["vault"], "nothing written beside the folder");
    assert_eq!(std::fs::read_to_string(root.join("ok/fine.md")).unwrap(), "x");
}

impl scratch_pg::Fixture for Fixture {
    async fn open(backend: scratch_pg::Backend, test: &'static str) -> Option<Self> {
        let test = common::open(backend, test).await?;
        Some(Self { db: test.db.clone(), folder: tempfile::tempdir().unwrap(), test })
    }

    async fn finish(self) {
        self.test.finish().await;
    }
}
