//! SQLite only: upgrades from earlier releases, checkpoints, damaged rows,
//! and several processes (stores) on one file.

mod common;

use common::{ids, note, notes, upsert};
use entity_store::{EntityKey, Filter, NewEntity, UpsertOptions, UpsertStatus};

/// A SQLite file at `path` migrated only as far as an earlier release
/// (`migrations`), as that release left it.
async fn database_of_release(path: &std::path::Path, migrations: sql_migrations::Embedded) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    migrations.migrator().await.unwrap().run(&pool).await.unwrap();
    pool
}

/// A database written before the full-text index followed revisions (its
/// rows queued by triggers) is indexed completely once it is opened.
#[tokio::test]
async fn rows_queued_before_the_watermark_migration_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let first_release = sql_migrations::embed!("migrations/sqlite", ["0001_entities.sql"]);
    let pool = database_of_release(&path, first_release).await;
    sqlx::query(
        "INSERT INTO entities (entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision)
         VALUES ('note', 'old', 'written by the first release', '{}', 'h', 't', 't', 1, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM search_queue").fetch_one(&pool).await.unwrap();
    assert_eq!(queued, 1, "the old trigger queued the row");
    pool.close().await;

    let store = entity_store::SqliteStore::open(&path).await.unwrap();
    let api: &dyn entity_store::EntityStore = &store;
    let hits = api.search_text("release", 10).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.key.id.as_str()).collect::<Vec<_>>(), ["old"]);
    upsert(common::Store::Sqlite(&store), vec![note("new", "written by this release")]).await;
    assert_eq!(api.search_text("release", 10).await.unwrap().len(), 2, "and what comes after");
}

/// A database indexed by a release whose full-text index kept its own copy of
/// every text is indexed again, without the copy, once it is opened: old rows
/// are found, and updates and deletes are followed in the new index.
#[tokio::test]
async fn a_database_indexed_with_a_text_copy_is_indexed_again_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.db");
    let before = sql_migrations::embed!(
        "migrations/sqlite",
        ["0001_entities.sql", "0002_search_watermark.sql", "0003_source_form.sql"]
    );
    let pool = database_of_release(&path, before).await;
    for (rowid, id, text) in [(1, "kept", "a lighthouse keeper"), (2, "gone", "a lighthouse to delete")] {
        sqlx::query(
            "INSERT INTO entities (rowid, entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision)
             VALUES (?1, 'note', ?2, ?3, '{}', 'h', 't', 't', 1, ?1)",
        )
        .bind(rowid)
        .bind(id)
        .bind(text)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO entities_fts (rowid, title, content) VALUES (?, NULL, ?)")
            .bind(rowid)
            .bind(text)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE search_indexed SET revision = 2").execute(&pool).await.unwrap();
    pool.close().await;

    let store = entity_store::SqliteStore::open(&path).await.unwrap();
    let copies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'entities_fts_content'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(copies, 0, "the index keeps no copy of the text");
    let api: &dyn entity_store::EntityStore = &store;
    let mut found = ids(api.search_text("lighthouse", 10).await.unwrap());
    found.sort();
    assert_eq!(found, ["gone", "kept"], "old rows are indexed again");
    api.batch_delete(&[EntityKey::new("note", "gone")]).await.unwrap();
    upsert(common::Store::Sqlite(&store), vec![note("kept", "a lamp keeper")]).await;
    assert!(api.search_text("lighthouse", 10).await.unwrap().is_empty(), "deleted and rewritten rows leave the index");
    assert_eq!(ids(api.search_text("lamp", 10).await.unwrap()), ["kept"]);
}

/// The writer leaves checkpoints to a background task: the database file
/// receives what the WAL holds without anyone closing the store, and under
/// writes without a pause the WAL stays bounded instead of growing with
/// every batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_checkpoint_keeps_the_wal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let store = entity_store::SqliteStore::open(&path).await.unwrap();
    let size = |suffix: &str| std::fs::metadata(format!("{}{suffix}", path.display())).map_or(0, |m| m.len());
    let batch = |round: usize| -> Vec<NewEntity> {
        (0..1000).map(|i| note(&format!("r{round}-{i}"), &"some text of a note ".repeat(100))).collect()
    };
    upsert(common::Store::Sqlite(&store), batch(0)).await;
    // Bounded wait for the checkpointer (it runs every 250 ms).
    for _ in 0..400 {
        if size("") >= 2_000_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(size("") >= 2_000_000, "the database file holds the first batch ({} bytes)", size(""));

    // ~250 MB of WAL frames written back to back, faster than the background
    // rounds: the writer's own bound (64 MiB, plus the batches that commit
    // while a checkpoint is under way) keeps it well below what was written.
    for round in 1..=60 {
        upsert(common::Store::Sqlite(&store), batch(round)).await;
    }
    let wal = size("-wal");
    assert!(wal < 160_000_000, "the WAL stays bounded under sustained writes: {wal} bytes of ~250 MB written");
}

/// A lost connection fails the call, the caller tries again later; it is
/// never reported as a failure of the rows (which would make a sync report
/// good files as failed after a database restart).
#[tokio::test]
async fn a_lost_connection_fails_the_call_not_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = entity_store::SqliteStore::open(dir.path().join("gone.db")).await.unwrap();
    let store: &dyn entity_store::EntityStore = &store;
    store.close().await;
    let rows: Vec<NewEntity> = (0..3).map(|i| NewEntity::new("note", format!("n{i}"), "text")).collect();
    let outcome = store.batch_upsert(rows, &UpsertOptions::default()).await;
    assert!(matches!(outcome, Err(entity_store::StoreError::Database(_))), "{outcome:?}");
}

/// A row another program damaged (SQLite keeps whatever type it is given)
/// is a `Corrupt` error naming the column, from every read, never a panic.
#[tokio::test]
async fn a_damaged_row_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = entity_store::SqliteStore::open(dir.path().join("store.db")).await.unwrap();
    upsert(common::Store::Sqlite(&store), vec![note("a", "fine")]).await;
    sqlx::query("UPDATE entities SET version = 'seven', id = 42").execute(store.pool()).await.unwrap();
    let api: &dyn entity_store::EntityStore = &store;
    let corrupt = |outcome: String| assert!(outcome.contains("corrupt") && outcome.contains("column"), "{outcome}");
    corrupt(format!("{:?}", api.changes_since(0, 10).await.map(|c| c.len()).map_err(|e| e.to_string())));
    corrupt(format!("{:?}", api.list("note", None, 10).await.map(|e| e.len()).map_err(|e| e.to_string())));
    corrupt(format!("{:?}", api.find(&Filter::all(), 10).await.map(|e| e.len()).map_err(|e| e.to_string())));
}

/// Two stores on one SQLite file (two processes, as far as SQLite knows)
/// writing the same keys at once: a write decided on a state the other
/// changed meanwhile is never reported as done unless it was, so every
/// reported write is exactly one version, and no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_stores_on_one_file_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let first = entity_store::SqliteStore::open(&path).await.unwrap();
    let second = entity_store::SqliteStore::open(&path).await.unwrap();
    let writer = |store: entity_store::SqliteStore, tag: &'static str| async move {
        let mut changes = std::collections::HashMap::<String, usize>::new();
        for round in 0..15 {
            let batch: Vec<NewEntity> =
                (0..300).map(|i| note(&format!("c{i:03}"), &format!("{tag} round {round}"))).collect();
            let api: &dyn entity_store::EntityStore = &store;
            let report =
                api.batch_upsert(batch, &UpsertOptions { batch_size: 40, ..UpsertOptions::default() }).await.unwrap();
            assert!(report.failed.is_empty(), "{:?}", report.failed.first());
            for s in report.succeeded {
                if s.outcome.status != UpsertStatus::Unchanged {
                    *changes.entry(s.key.id).or_default() += 1;
                }
            }
        }
        changes
    };
    let (a, b) = tokio::join!(writer(first.clone(), "a"), writer(second.clone(), "b"));
    let api: &dyn entity_store::EntityStore = &first;
    let stored =
        api.batch_get(&(0..300).map(|i| EntityKey::new("note", format!("c{i:03}"))).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(stored.len(), 300);
    for (key, entity) in stored {
        let writes = a.get(&key.id).copied().unwrap_or(0) + b.get(&key.id).copied().unwrap_or(0);
        assert_eq!(entity.version as usize, writes, "{key}: every reported write is one version");
    }
}

/// Every write path of a SQLite store waits for the write lock another
/// process holds (up to the busy timeout) instead of failing at once with
/// "database is locked": a search's index refresh (FTS5 upgrades its read to
/// a write from inside the statement, where SQLite does not wait), an
/// upsert and a delete. A second store on the file stands for the other
/// process; the lock is held for a moment, then released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_wait_for_a_lock_another_process_holds() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = entity_store::SqliteStore::open(&path).await.unwrap();
    let api: &dyn entity_store::EntityStore = &store;
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let write = |round: usize| async move {
        match round {
            0 => api.search_text("word0", 5).await.map(|hits| format!("{} hits", hits.len())),
            1 => api.batch_upsert(notes(50, "u-"), &UpsertOptions::default()).await.map(|report| {
                if report.failed.is_empty() { "written".to_owned() } else { format!("{:?}", report.failed[0]) }
            }),
            _ => api
                .batch_delete(&[EntityKey::new("note", "n2-0")])
                .await
                .map(|report| format!("{} deleted", report.succeeded.len())),
        }
    };
    for (round, name) in ["search (index refresh)", "batch_upsert", "batch_delete"].into_iter().enumerate() {
        // Rows for the refresh to index and the delete to remove.
        let batch: Vec<NewEntity> =
            (0..200).map(|i| note(&format!("n{round}-{i}"), &format!("word{round} number {i}"))).collect();
        api.batch_upsert(batch.clone(), &UpsertOptions::default()).await.unwrap();
        // Indexed, then changed: the refresh must take the old words out of the index.
        api.search_text("word0", 5).await.unwrap();
        let changed = batch.into_iter().map(|mut entity| {
            entity.content.push_str(" changed");
            entity
        });
        api.batch_upsert(changed.collect(), &UpsertOptions::default()).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
        sqlx::query("UPDATE search_indexed SET revision = revision").execute(&mut other).await.unwrap();
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        };
        let (done, ()) = tokio::join!(write(round), release);
        let done = done.unwrap_or_else(|err| panic!("{name} while another process held the write lock: {err}"));
        let expected = ["5 hits", "written", "1 deleted"][round];
        assert_eq!(done, expected, "{name}: done once the lock was free");
    }
    for word in ["number", "changed"] {
        let hits = api.search_text(word, 1000).await.unwrap();
        assert_eq!(hits.len(), 200 * 3 - 1, "{word}: every live row indexed once");
    }
}

/// Two processes (two stores on one file) search at once right after a
/// large write, so both refresh the index at once: neither fails (SQLite
/// answered the second at once with "database is locked"), and each row is
/// in the index once, with its latest words only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_stores_refresh_one_index_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let first = entity_store::SqliteStore::open(&path).await.unwrap();
    let second = entity_store::SqliteStore::open(&path).await.unwrap();
    let (a, b): (&dyn entity_store::EntityStore, &dyn entity_store::EntityStore) = (&first, &second);
    // New rows, then the same rows changed twice (the refresh then also takes old words out).
    for round in 0..3 {
        let batch: Vec<NewEntity> = (0..4000)
            .map(|i| note(&format!("n{i}"), &format!("word{round} {}", "alpha beta gamma delta ".repeat(200))))
            .collect();
        a.batch_upsert(batch, &UpsertOptions::default()).await.unwrap();
        let later = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            b.search_text(&format!("word{round}"), 5000).await
        };
        let (early, later) = tokio::join!(a.search_text("alpha", 5), later);
        early.unwrap_or_else(|err| panic!("round {round}, the first search: {err}"));
        let later = later.unwrap_or_else(|err| panic!("round {round}, the search that came second: {err}"));
        assert_eq!(later.len(), 4000, "round {round}");
        if round > 0 {
            let stale = a.search_text(&format!("word{}", round - 1), 5000).await.unwrap();
            assert!(stale.is_empty(), "round {round}: {} rows still indexed by their old words", stale.len());
        }
    }
}

/// The bundled SQLite keeps each connection's page cache to itself: built
/// with `ENABLE_MEMORY_MANAGEMENT` (libsqlite3-sys's default) all caches
/// share one group behind one mutex, and reads on the store's readers take
/// turns (`.cargo/config.toml` says so at build time; `bench tools` shows
/// what it costs, "batch_search, 8 in parallel").
#[tokio::test]
async fn readers_do_not_share_one_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = entity_store::SqliteStore::open(dir.path().join("store.db")).await.unwrap();
    let options: Vec<String> =
        sqlx::query_scalar("SELECT compile_options FROM pragma_compile_options").fetch_all(store.pool()).await.unwrap();
    assert!(options.iter().any(|o| o.starts_with("THREADSAFE=")), "the options were read: {options:?}");
    assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
}
