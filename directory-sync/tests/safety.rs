//! Never lose a user's file: concurrent jobs on one folder, emptied or
//! missing folders, a second folder sharing the database. Real folders,
//! real SQLite and PostgreSQL (with `DATABASE_URL`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use batch_core::CancellationToken;
use directory_sync::{Database, Direction, SyncConfig, SyncError, Syncer, no_progress};
use entity_store::{EntityKey, NewEntity, UpsertOptions};

mod common;

struct Fixture {
    db: Database,
    test: common::TestDb,
}

impl Fixture {
    fn syncer(&self, folder: &Path) -> Syncer {
        Syncer::new(SyncConfig::new(folder), self.db.store.clone(), self.db.state.clone(), None).unwrap()
    }

    async fn sync(&self, folder: &Path) -> Result<directory_sync::SyncSummary, SyncError> {
        self.syncer(folder).sync(Direction::Both, no_progress(), &CancellationToken::new()).await
    }
}

fn notes(folder: &Path, count: usize) {
    std::fs::create_dir_all(folder).unwrap();
    let old = SystemTime::now() - Duration::from_secs(60);
    for i in 0..count {
        let path = folder.join(format!("n{i:04}.md"));
        std::fs::write(&path, format!("---\ntitle: n{i}\n---\nbody {i}\n")).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
    }
}

fn md_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(folder)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "md"))
        .filter(|e| !e.path().components().any(|c| c.as_os_str() == ".directory-sync"))
        .map(walkdir::DirEntry::into_path)
        .collect();
    files.sort();
    files
}

/// An export and a sync of one folder started together, round after
/// round, each right after a new entity was added: no entity whose file is
/// on disk is ever tombstoned, and a second folder on the same database
/// keeps every file.
async fn export_and_sync_of_one_folder_never_cost_a_file(f: &Fixture) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    notes(a.path(), 300);
    f.sync(a.path()).await.unwrap();
    f.sync(b.path()).await.unwrap();
    assert_eq!(md_files(b.path()).len(), 300);
    for round in 0..20 {
        let key = EntityKey::new("note", format!("added-{round}"));
        let entity = NewEntity::new("note", &key.id, format!("round {round}"));
        f.db.store.batch_upsert(vec![entity], &UpsertOptions::default()).await.unwrap();
        let (exporter, syncer) = (f.syncer(a.path()), f.syncer(a.path()));
        let cancel = CancellationToken::new();
        let (exported, synced) = tokio::join!(
            exporter.export(None, no_progress(), &cancel),
            syncer.sync(Direction::Both, no_progress(), &cancel)
        );
        exported.unwrap();
        synced.unwrap();
        assert!(a.path().join(format!("added-{round}.md")).exists(), "round {round}: the file was written");
        let stored = f.db.store.batch_get(std::slice::from_ref(&key)).await.unwrap();
        assert!(stored.contains_key(&key), "round {round}: the new entity was deleted while its file exists");
        // The second folder applies whatever the first did.
        let summary = f.sync(b.path()).await.unwrap();
        assert_eq!(summary.deleted, 0, "round {round}: {summary:?}");
    }
    assert_eq!(md_files(b.path()).len(), 320, "the second folder kept every file and got every new one");
    assert_eq!(f.db.store.count(None).await.unwrap(), 320);
}

/// A folder emptied, replaced by an empty mount point, or gone: nothing is
/// deleted in the database nor in a second folder sharing it without the
/// user's confirmation; with it, the deletion happens and is reported.
async fn an_emptied_or_missing_folder_deletes_nothing_without_confirmation(f: &Fixture) {
    let (outer, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = outer.path().join("vault");
    notes(&a, 12);
    f.sync(&a).await.unwrap();
    f.sync(b.path()).await.unwrap();
    let refused = |result: Result<directory_sync::SyncSummary, SyncError>, case: &str| match result {
        Err(SyncError::MassDelete { gone: 12, synced: 12, .. }) => {}
        other => panic!("{case}: expected a refused mass deletion, got {other:?}"),
    };

    // Emptied.
    for file in md_files(&a) {
        std::fs::remove_file(file).unwrap();
    }
    refused(f.sync(&a).await, "emptied");
    // Replaced by an empty folder (what an unmounted share's mount point looks like).
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::create_dir(&a).unwrap();
    refused(f.sync(&a).await, "empty mount point");
    // Gone: an error, and the folder is not created again.
    std::fs::remove_dir(&a).unwrap();
    match f.sync(&a).await {
        Err(err @ SyncError::Folder { .. }) => {
            assert!(err.to_string().contains("no such folder"), "{err}");
            let cause = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>());
            assert_eq!(
                cause.map(std::io::Error::kind),
                Some(std::io::ErrorKind::NotFound),
                "the cause is kept: {err:?}"
            );
        }
        other => panic!("missing folder: {other:?}"),
    }
    assert!(!a.exists(), "a missing folder is never created");
    // A watcher's import of the deleted paths is refused too.
    std::fs::create_dir(&a).unwrap();
    let paths: Vec<String> = (0..12).map(|i| format!("n{i:04}.md")).collect();
    let import = f.syncer(&a).import_paths(&paths, no_progress(), &CancellationToken::new()).await;
    refused(import, "import of the deleted paths");

    assert_eq!(f.db.store.count(None).await.unwrap(), 12, "no entity deleted");
    let second = f.sync(b.path()).await.unwrap();
    assert_eq!((second.deleted, md_files(b.path()).len()), (0, 12), "the second folder kept its files");

    // Confirmed: deleted, and reported.
    let confirmed = f
        .syncer(&a)
        .allowing_mass_delete(true)
        .sync(Direction::Both, no_progress(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(confirmed.deleted, 12, "{confirmed:?}");
    assert_eq!(f.db.store.count(None).await.unwrap(), 0);
    let second = f.sync(b.path()).await.unwrap();
    assert_eq!((second.deleted, md_files(b.path()).len()), (12, 0));
}

/// Deleting a few files is an ordinary sync; more than half of them at
/// once is not.
async fn a_few_deletions_pass_and_most_of_the_folder_is_refused(f: &Fixture) {
    let a = tempfile::tempdir().unwrap();
    notes(a.path(), 20);
    f.sync(a.path()).await.unwrap();
    for i in 0..4 {
        std::fs::remove_file(a.path().join(format!("n{i:04}.md"))).unwrap();
    }
    assert_eq!(f.sync(a.path()).await.unwrap().deleted, 4);
    for i in 4..15 {
        std::fs::remove_file(a.path().join(format!("n{i:04}.md"))).unwrap();
    }
    assert!(matches!(f.sync(a.path()).await, Err(SyncError::MassDelete { gone: 11, synced: 16, .. })));
    assert_eq!(f.db.store.count(None).await.unwrap(), 16);
}

/// The second folder's file was edited since its last sync when the entity
/// was deleted elsewhere: the file stays, and comes back as an entity.
async fn a_deletion_from_elsewhere_never_removes_an_edited_file(f: &Fixture) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    notes(a.path(), 6);
    f.sync(a.path()).await.unwrap();
    f.sync(b.path()).await.unwrap();
    std::fs::write(b.path().join("n0001.md"), "---\ntitle: n1\n---\nedited in b\n").unwrap();
    std::fs::remove_file(a.path().join("n0001.md")).unwrap();
    assert_eq!(f.sync(a.path()).await.unwrap().deleted, 1);
    let second = f.syncer(b.path()).export(None, no_progress(), &CancellationToken::new()).await.unwrap();
    assert_eq!(second.deleted, 0);
    assert!(second.warnings.iter().any(|w| w.path == "n0001.md"), "{second:?}");
    assert_eq!(std::fs::read_to_string(b.path().join("n0001.md")).unwrap(), "---\ntitle: n1\n---\nedited in b\n");
    let again = f.sync(b.path()).await.unwrap();
    assert_eq!(again.imported, 1, "the kept edit is an entity again: {again:?}");
}

/// A conflict copy of ours that the state does not know (its sync was
/// killed before recording it) is recorded by the next scan.
async fn unrecorded_conflict_copies_are_found(f: &Fixture) {
    let a = tempfile::tempdir().unwrap();
    notes(a.path(), 3);
    f.sync(a.path()).await.unwrap();
    let copy = "n0001.conflict-20260101T120000.000Z.md";
    std::fs::write(a.path().join(copy), "my version").unwrap();
    std::fs::write(a.path().join("team.conflict-resolution.md"), "a note like any other").unwrap();
    let summary = f.sync(a.path()).await.unwrap();
    assert_eq!(summary.imported, 1, "a name that only looks like a conflict copy is a note: {summary:?}");
    let open = f.syncer(a.path()).open_conflicts().await.unwrap();
    let listed: Vec<&str> = open.iter().map(|c| c.conflict_path.as_str()).collect();
    assert_eq!(listed, [copy]);
    assert_eq!(open[0].path, "n0001.md");
}

/// A folder that shares its database with one holding typed notes gets
/// one line about the entities it does not hold, not one per entity.
async fn entities_of_other_types_are_one_warning(f: &Fixture) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    notes(&a.path().join("person"), 30);
    notes(a.path(), 2);
    let typed = SyncConfig { entity_types: vec!["person".into()], ..SyncConfig::new(a.path()) };
    let syncer = Syncer::new(typed, f.db.store.clone(), f.db.state.clone(), None).unwrap();
    syncer.sync(Direction::Both, no_progress(), &CancellationToken::new()).await.unwrap();
    let summary = f.sync(b.path()).await.unwrap();
    assert_eq!(summary.exported, 2);
    assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
    assert_eq!(summary.warnings[0].path, "30 entities");
    assert!(summary.warnings[0].error.contains("person (30)"), "{:?}", summary.warnings);
}

scratch_pg::backends!(
    Fixture;
    export_and_sync_of_one_folder_never_cost_a_file,
    an_emptied_or_missing_folder_deletes_nothing_without_confirmation,
    a_few_deletions_pass_and_most_of_the_folder_is_refused,
    a_deletion_from_elsewhere_never_removes_an_edited_file,
    unrecorded_conflict_copies_are_found,
    entities_of_other_types_are_one_warning,
);

impl scratch_pg::Fixture for Fixture {
    async fn open(backend: scratch_pg::Backend, test: &'static str) -> Option<Self> {
        let test = common::open(backend, test).await?;
        Some(Self { db: test.db.clone(), test })
    }

    async fn finish(self) {
        self.test.finish().await;
    }
}
