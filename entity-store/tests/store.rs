//! The same suite on SQLite and PostgreSQL (with `DATABASE_URL`).

mod common;

use std::collections::HashSet;

use common::{Db, Store, ids, keys, note, notes, upsert};
use entity_store::{EntityKey, Filter, NewEntity, UpsertCounts, UpsertOptions, UpsertStatus};
use serde_json::json;

async fn bulk_paths_use_a_handful_of_statements(store: Store<'_>) {
    let api = store.api();
    let entities = notes(1000, "n");
    let before = api.statements();
    let report = upsert(store, entities.clone()).await;
    assert_eq!(report.created(), 1000);
    let upsert_statements = api.statements() - before;
    assert!(upsert_statements <= 3, "upsert of 1,000 took {upsert_statements} statements");

    let before = api.statements();
    let found = api.batch_get(&keys(&entities)).await.unwrap();
    assert_eq!(found.len(), 1000);
    let present = api.exists(&keys(&entities)).await.unwrap();
    assert_eq!(present.len(), 1000);
    assert!(api.statements() - before <= 2, "reads took {} statements", api.statements() - before);

    // A no-change re-upsert: one write statement that writes nothing, one read to account for it.
    let before = api.statements();
    let again = upsert(store, entities).await;
    assert_eq!(again.unchanged(), 1000);
    assert!(api.statements() - before <= 4, "re-upsert took {} statements", api.statements() - before);
}

async fn report_lists_created_updated_unchanged_and_failed(store: Store<'_>) {
    let api = store.api();
    upsert(store, vec![note("same", "a"), note("changes", "b")]).await;
    let revision_before = api.current_revision().await.unwrap();
    let same_before = api.get(&EntityKey::new("note", "same")).await.unwrap().unwrap();

    let report = upsert(
        store,
        vec![
            note("same", "a"),
            note("changes", "b2"),
            note("new", "c"),
            note("../escape", "x"),
            NewEntity::new("Bad Type", "x", "y"),
        ],
    )
    .await;
    let status = |id: &str| report.succeeded.iter().find(|s| s.key.id == id).map(|s| s.outcome.status);
    assert_eq!(status("same"), Some(UpsertStatus::Unchanged));
    assert_eq!(status("changes"), Some(UpsertStatus::Updated));
    assert_eq!(status("new"), Some(UpsertStatus::Created));
    assert_eq!(report.failed.len(), 2);
    assert!(report.failed.iter().any(|f| f.key.id == "../escape" && f.reason.contains("'..'")), "{:?}", report.failed);
    assert!(report.failed.iter().any(|f| f.key.entity_type == "Bad Type" && f.reason.contains("entity type")));

    let same_after = api.get(&EntityKey::new("note", "same")).await.unwrap().unwrap();
    assert_eq!(same_after, same_before, "unchanged must not write");
    let changed = api.get(&EntityKey::new("note", "changes")).await.unwrap().unwrap();
    assert_eq!(changed.version, 2);
    assert!(changed.revision > revision_before);
    for (id, stored) in [("same", &same_after), ("changes", &changed)] {
        let reported = report.succeeded.iter().find(|s| s.key.id == id).map(|s| s.outcome.content_hash.as_str());
        assert_eq!(reported, Some(stored.content_hash.as_str()), "the report carries {id}'s stored hash");
    }
    let changes = api.changes_since(revision_before, 100).await.unwrap();
    let changed_ids: HashSet<&str> = changes.iter().map(|c| c.key.id.as_str()).collect();
    assert_eq!(changed_ids, HashSet::from(["changes", "new"]));
}

async fn atomic_batch_with_a_bad_item_keeps_nothing(store: Store<'_>) {
    let api = store.api();
    upsert(store, vec![note("keep", "original")]).await;
    let snapshot = api.changes_since(0, 1000).await.unwrap();
    let options = UpsertOptions { atomic: true, batch_size: 2, ..UpsertOptions::default() };

    let mut batch = notes(5, "atomic");
    batch.push(note("keep", "overwritten"));
    batch.push(note("bad\u{0007}id", "x"));
    let report = api.batch_upsert(batch.clone(), &options).await.unwrap();
    assert!(report.succeeded.is_empty());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.rolled_back.len(), 6);

    // A conflict found mid-way (after earlier chunks were written) rolls back too.
    batch.pop();
    batch.push(note("keep", "again").expecting_version(7));
    let report = api.batch_upsert(batch, &options).await.unwrap();
    assert!(report.succeeded.is_empty());
    assert!(report.failed[0].reason.contains("version conflict"), "{:?}", report.failed);
    assert_eq!(api.changes_since(0, 1000).await.unwrap(), snapshot);
    assert_eq!(api.get(&EntityKey::new("note", "keep")).await.unwrap().unwrap().content, "original");

    let report = api.batch_upsert(notes(5, "atomic"), &options).await.unwrap();
    assert_eq!(report.created(), 5);
}

async fn a_row_the_database_refuses_fails_alone(store: Store<'_>) {
    store
        .execute(
            &["CREATE TRIGGER poison BEFORE INSERT ON entities WHEN new.id = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"],
            &[
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.id = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER poison BEFORE INSERT ON entities FOR EACH ROW EXECUTE FUNCTION poison()",
            ],
        )
        .await;
    let mut batch = notes(499, "ok");
    batch.insert(250, note("poison", "x"));
    let report = upsert(store, batch).await;
    assert_eq!(report.created(), 499);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].key.id, "poison");
    assert!(report.failed[0].reason.contains("poisoned row"), "{}", report.failed[0].reason);
}

async fn expected_versions_detect_conflicts(store: Store<'_>) {
    let api = store.api();
    let report =
        upsert(store, vec![note("a", "v1").expecting_version(0), note("ghost", "x").expecting_version(3)]).await;
    assert_eq!(report.created(), 1);
    assert_eq!(report.failed[0].key.id, "ghost");
    assert_eq!(report.failed[0].reason, "version conflict: expected version 3, stored version is 0");

    let report = upsert(store, vec![note("a", "v2").expecting_version(1)]).await;
    assert_eq!(report.succeeded[0].outcome.version, 2);
    let report = upsert(store, vec![note("a", "v3").expecting_version(1)]).await;
    assert_eq!(report.failed[0].reason, "version conflict: expected version 1, stored version is 2");
    assert_eq!(api.get(&EntityKey::new("note", "a")).await.unwrap().unwrap().content, "v2");
}

async fn progress_is_reported_per_chunk(store: Store<'_>) {
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<batch_core::Progress>>);
    impl batch_core::ProgressReporter for Recorder {
        fn report(&self, update: &batch_core::ProgressUpdate) {
            self.0.lock().unwrap().push(update.progress.clone());
        }
    }
    let recorder = std::sync::Arc::new(Recorder::default());
    let mut batch = notes(1000, "prog");
    batch.push(note("../bad", "x"));
    let options = UpsertOptions { batch_size: 250, progress: Some(recorder.clone()), ..UpsertOptions::default() };
    store.api().batch_upsert(batch, &options).await.unwrap();
    let seen = recorder.0.lock().unwrap();
    let last = seen.last().unwrap();
    assert_eq!((last.current, last.total, last.failed), (1001, 1001, 1));
    assert!(seen.len() >= 5, "one update per chunk at least: {}", seen.len());
    assert!(seen.windows(2).all(|w| w[0].current <= w[1].current));
}

async fn duplicate_keys_last_one_wins(store: Store<'_>) {
    let api = store.api();
    let report =
        upsert(store, vec![note("dup", "first"), note("other", "o"), note("dup", "second"), note("dup", "third")])
            .await;
    assert_eq!(report.total(), 2);
    assert_eq!(api.get(&EntityKey::new("note", "dup")).await.unwrap().unwrap().content, "third");
}

async fn empty_and_huge_calls(store: Store<'_>) {
    let api = store.api();
    let report = upsert(store, Vec::new()).await;
    assert_eq!(report.total(), 0);
    assert!(api.batch_get(&[]).await.unwrap().is_empty());

    let many: Vec<NewEntity> = (0..100_000).map(|i| note(&format!("bulk/{i}"), "x")).collect();
    let options = UpsertOptions { batch_size: 20_000, ..UpsertOptions::default() };
    let report = api.batch_upsert(many.clone(), &options).await.unwrap();
    assert_eq!(report.created(), 100_000);
    assert_eq!(api.count(Some("note")).await.unwrap(), 100_000);
    assert_eq!(api.exists(&keys(&many)).await.unwrap().len(), 100_000);
}

async fn unicode_large_content_and_nested_metadata_round_trip(store: Store<'_>) {
    let api = store.api();
    let big = "Ünïcødé 🌍 مرحبا ".repeat(60_000);
    let metadata =
        json!({"title": "L'été 🌞", "nested": {"list": [1, 2.5, "three", null, {"deep": true}]}, "tags": ["a", "b"]});
    let id = "Pokerole SRD/SRD v3.0/SRD-Moves/Ember's \"Fire\" 🔥";
    upsert(store, vec![note(id, &big).with_metadata(metadata.clone())]).await;
    let entity = api.get(&EntityKey::new("note", id)).await.unwrap().unwrap();
    assert_eq!(entity.content, big);
    assert_eq!(serde_json::Value::Object(entity.metadata.clone()), metadata);
    assert_eq!(entity.content_hash, entity_store::content_hash(&entity.metadata, &big, None));

    let limited = upsert(store, vec![note("huge", &"x".repeat(17 * 1024 * 1024))]).await;
    assert!(limited.failed[0].reason.contains("over the limit"), "{}", limited.failed[0].reason);
    let bad_metadata = upsert(store, vec![note("m", "x").with_metadata(json!([1, 2]))]).await;
    assert_eq!(bad_metadata.failed[0].reason, "metadata must be a JSON object, got an array");
}

async fn find_after_pages_through_every_match(store: Store<'_>) {
    let api = store.api();
    let mut written: Vec<NewEntity> =
        (0..25).map(|i| note(&format!("n{i:02}"), "x").with_metadata(json!({"keep": i % 2 == 0}))).collect();
    written.push(NewEntity::new("a-type", "Zed", "x").with_metadata(json!({"keep": true})));
    written.push(NewEntity::new("a-type", "alpha", "x").with_metadata(json!({"keep": true})));
    upsert(store, written).await;
    let filter = Filter::parse("metadata.keep = true").unwrap();
    let mut seen = Vec::new();
    let mut after: Option<EntityKey> = None;
    loop {
        let page = api.find_after(&filter, after.as_ref(), 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key());
        seen.extend(page.into_iter().map(|e| format!("{}/{}", e.entity_type, e.id)));
    }
    let mut expected: Vec<String> = (0..25).step_by(2).map(|i| format!("note/n{i:02}")).collect();
    expected.splice(0..0, ["a-type/Zed".to_owned(), "a-type/alpha".to_owned()]);
    assert_eq!(seen, expected, "every match once, bytewise by type then id");

    let mut keys = Vec::new();
    let mut after: Option<EntityKey> = None;
    loop {
        let page = api.find_keys_after(&filter, after.as_ref(), 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        keys.extend(page.into_iter().map(|key| format!("{}/{}", key.entity_type, key.id)));
    }
    assert_eq!(keys, expected, "the keys alone, in the same order");
    let first: Vec<EntityKey> = api.find_keys(&filter, 3).await.unwrap();
    assert_eq!(first.iter().map(ToString::to_string).collect::<Vec<_>>(), ["a-type:Zed", "a-type:alpha", "note:n00"]);
}

async fn filters_select_the_right_entities(store: Store<'_>) {
    let api = store.api();
    upsert(
        store,
        vec![
            note("rust", "about rust").with_metadata(json!({"tags": ["rust", "db"], "priority": 3, "owner": "ana"})),
            note("go", "about go").with_metadata(json!({"tags": ["go"], "priority": 10})),
            note("draft", "rusty draft").with_metadata(json!({"status": "draft", "priority": 1, "owner": null})),
            NewEntity::new("person", "ana", "Ana").with_metadata(json!({"tags": ["rust"]})),
        ],
    )
    .await;
    let ids = |text: &'static str| async move {
        let filter = Filter::parse(text).unwrap();
        let mut ids: Vec<String> = api.find(&filter, 100).await.unwrap().into_iter().map(|e| e.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(r#"entity_type = "note" and metadata.tags contains "rust""#).await, vec!["rust"]);
    assert_eq!(ids(r#"metadata.tags contains "rust""#).await, vec!["ana", "rust"]);
    assert_eq!(ids("metadata.priority > 2").await, vec!["go", "rust"]);
    assert_eq!(ids("metadata.priority >= 1 and metadata.priority < 10").await, vec!["draft", "rust"]);
    assert_eq!(ids(r#"not metadata.tags contains "rust" and entity_type = "note""#).await, vec!["draft", "go"]);
    assert_eq!(ids(r#"metadata.status = "draft" or content contains "go""#).await, vec!["draft", "go"]);
    assert_eq!(ids("metadata.owner exists").await, vec!["draft", "rust"]);
    assert_eq!(ids("metadata.owner = null").await, vec!["draft"]);
    assert_eq!(ids(r#"updated_at > "2000-01-01" and entity_type = "person""#).await, vec!["ana"]);
    assert!(ids(r#"updated_at < "2000-01-01""#).await.is_empty());
    assert_eq!(ids("version = 1 and metadata.priority = 10").await, vec!["go"]);
}

async fn filter_injection_only_ever_matches_text(store: Store<'_>) {
    let api = store.api();
    upsert(store, vec![note("x", "safe")]).await;
    for payload in [
        r#"metadata.title = "x' OR '1'='1""#,
        r#"id = "x\"; DROP TABLE entities; --""#,
        r#"content contains "'); DELETE FROM entities; /*""#,
        r#"metadata.tags contains "a' UNION SELECT * FROM entities --""#,
    ] {
        let filter = Filter::parse(payload).unwrap();
        assert!(api.find(&filter, 10).await.unwrap().is_empty(), "{payload}");
    }
    assert!(Filter::parse("id = \"x\"; DROP TABLE entities").is_err());
    assert_eq!(api.count(None).await.unwrap(), 1);
}

async fn deletes_leave_tombstones_for_changes_since(store: Store<'_>) {
    let api = store.api();
    upsert(store, notes(3, "d")).await;
    let revision = api.current_revision().await.unwrap();
    let report =
        api.batch_delete(&[EntityKey::new("note", "d000000"), EntityKey::new("note", "missing")]).await.unwrap();
    let outcomes: Vec<_> = report.succeeded.iter().map(|s| (s.key.id.as_str(), s.outcome)).collect();
    assert_eq!(
        outcomes,
        vec![("d000000", entity_store::Deleted::Deleted), ("missing", entity_store::Deleted::NotFound)]
    );
    assert_eq!(api.count(None).await.unwrap(), 2);
    assert!(api.get(&EntityKey::new("note", "d000000")).await.unwrap().is_none());
    let changes = api.changes_since(revision, 10).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].deleted);

    // Writing it again creates it anew; the version keeps counting.
    let report = upsert(store, vec![note("d000000", "back")]).await;
    assert_eq!(report.succeeded[0].outcome.status, UpsertStatus::Created);
    assert_eq!(report.succeeded[0].outcome.version, 3);
}

async fn list_hashes_pages_through_every_live_entity(store: Store<'_>) {
    let api = store.api();
    upsert(store, notes(25, "h")).await;
    upsert(store, vec![NewEntity::new("person", "p", "x"), NewEntity::new("alpha", "a", "y")]).await;
    api.batch_delete(&[EntityKey::new("note", "h000003")]).await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<EntityKey> = None;
    loop {
        let page = api.list_hashes(after.as_ref(), 7).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        seen.extend(page);
    }
    assert_eq!(seen.len(), 26);
    assert_eq!(seen[0].0, EntityKey::new("alpha", "a"));
    assert!(seen.iter().all(|(k, _)| k.id != "h000003"), "deleted entities are not listed");
    let stored = api.get(&EntityKey::new("person", "p")).await.unwrap().unwrap();
    assert!(seen.contains(&(stored.key(), stored.content_hash)));
}

async fn list_paginates_and_counts(store: Store<'_>) {
    let api = store.api();
    upsert(store, notes(25, "p")).await;
    upsert(store, vec![NewEntity::new("person", "someone", "x")]).await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = api.list("note", after.as_deref(), 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.id.clone());
        seen.extend(page.into_iter().map(|e| e.id));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:06}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(api.count(None).await.unwrap(), 26);
    assert_eq!(api.count(Some("person")).await.unwrap(), 1);
}

async fn text_search_ranks_title_and_content(store: Store<'_>) {
    let api = store.api();
    upsert(
        store,
        vec![
            note("t1", "nothing here about it").with_metadata(json!({"title": "Sourdough bread"})),
            note("t2", "bread bread bread and more bread"),
            note("t3", "unrelated text about cars"),
        ],
    )
    .await;
    let hits = api.search_text("sourdough bread", 10).await.unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.key.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{hits:?}");
    assert_eq!(ids[0], "t1", "both words, one in the title, rank first: {hits:?}");
    assert!(api.search_text("\"); drop", 10).await.unwrap().is_empty());

    // The index follows updates and deletes.
    upsert(store, vec![note("t2", "now about pastry")]).await;
    api.batch_delete(&[EntityKey::new("note", "t1")]).await.unwrap();
    assert!(api.search_text("bread sourdough", 10).await.unwrap().is_empty());
    let pastry: Vec<String> = api.search_text("pastry", 10).await.unwrap().into_iter().map(|h| h.key.id).collect();
    assert_eq!(pastry, vec!["t2"]);
    assert_eq!(api.refresh_search_index().await.unwrap(), 0, "nothing left to index");
    assert!(api.search_text("", 10).await.unwrap().is_empty());
}

async fn concurrent_writers_lose_no_update(store: Store<'_>) {
    let api = store.api();
    let writer = |tag: &'static str| async move {
        let mut changes = std::collections::HashMap::<String, usize>::new();
        for round in 0..5 {
            let batch: Vec<NewEntity> =
                (0..200).map(|i| note(&format!("c{i:03}"), &format!("{tag} round {round}"))).collect();
            let report =
                api.batch_upsert(batch, &UpsertOptions { batch_size: 50, ..UpsertOptions::default() }).await.unwrap();
            assert!(report.failed.is_empty(), "{:?}", report.failed);
            for s in report.succeeded {
                if s.outcome.status != UpsertStatus::Unchanged {
                    *changes.entry(s.key.id).or_default() += 1;
                }
            }
        }
        changes
    };
    let (a, b) = tokio::join!(writer("a"), writer("b"));
    let stored =
        api.batch_get(&(0..200).map(|i| EntityKey::new("note", format!("c{i:03}"))).collect::<Vec<_>>()).await.unwrap();
    for (key, entity) in stored {
        let writes = a.get(&key.id).copied().unwrap_or(0) + b.get(&key.id).copied().unwrap_or(0);
        assert_eq!(entity.version as usize, writes, "{key}: every reported write is one version");
    }
    let _ = store.is_postgres();
}

async fn changes_since_misses_nothing_under_concurrent_writers(store: Store<'_>) {
    let api = store.api();
    let writer = |prefix: &'static str| async move {
        for round in 0..20 {
            let batch: Vec<NewEntity> = (0..50).map(|i| note(&format!("{prefix}{round:02}-{i:02}"), "x")).collect();
            let options = UpsertOptions { batch_size: 10, ..UpsertOptions::default() };
            api.batch_upsert(batch, &options).await.unwrap();
        }
    };
    let reader = async {
        let mut cursor = 0;
        let mut seen = HashSet::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while seen.len() < 2000 && std::time::Instant::now() < deadline {
            for change in api.changes_since(cursor, 100).await.unwrap() {
                cursor = cursor.max(change.revision);
                seen.insert(change.key.id);
            }
        }
        seen.len()
    };
    let ((), (), seen) = tokio::join!(writer("a"), writer("b"), reader);
    assert_eq!(seen, 2000, "a reader following changes_since saw every write");
}

async fn an_entity_keeps_its_source_form_and_key_order(store: Store<'_>) {
    let api = store.api();
    let head = "\u{feff}---\r\n# kept\r\nzeta: 'z'\r\nalpha: [1, 2]\r\n---\r\n";
    let metadata = json!({"zeta": "z", "alpha": [1, 2], "mid": {"y": 1, "b": 2}});
    let written = note("ordered", "body\r\n").with_metadata(metadata.clone()).with_frontmatter(Some(head.into()));
    upsert(store, vec![written.clone()]).await;
    let key = EntityKey::new("note", "ordered");
    let stored = api.get(&key).await.unwrap().unwrap();
    assert_eq!(stored.frontmatter.as_deref(), Some(head), "the file's head, byte for byte");
    assert_eq!(stored.metadata.keys().collect::<Vec<_>>(), ["zeta", "alpha", "mid"], "the author's key order");
    assert_eq!(stored.metadata["mid"].as_object().unwrap().keys().collect::<Vec<_>>(), ["y", "b"]);
    let found =
        api.find(&Filter::parse("metadata.alpha contains 2 and metadata.mid.b = 2").unwrap(), 10).await.unwrap();
    assert_eq!(found.len(), 1, "filters still read the metadata");

    // The same metadata with another head is a change; the same head is not.
    let report = upsert(store, vec![written.clone().with_frontmatter(Some("---\r\nzeta: z\r\n---\r\n".into()))]).await;
    assert_eq!(report.updated(), 1);
    let report = upsert(store, vec![written.with_frontmatter(Some("---\r\nzeta: z\r\n---\r\n".into()))]).await;
    assert_eq!(report.unchanged(), 1);

    // A delete forgets it.
    api.batch_delete(std::slice::from_ref(&key)).await.unwrap();
    upsert(store, vec![note("ordered", "again")]).await;
    assert_eq!(api.get(&key).await.unwrap().unwrap().frontmatter, None);
}

async fn only_a_real_nul_is_refused(store: Store<'_>) {
    let cheat_sheet = note("regex", "x").with_metadata(json!({"escape": "\\u0000 matches NUL", "list": ["\\0"]}));
    let real = note("nul", "x").with_metadata(json!({"nested": {"deep": ["a\u{0}b"]}}));
    let report = upsert(store, vec![cheat_sheet, real]).await;
    assert_eq!(report.created(), 1, "the six characters \\u0000 are text: {:?}", report.failed);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].key.id, "nul");
    assert!(report.failed[0].reason.contains("NUL"), "{}", report.failed[0].reason);
    let stored = store.api().get(&EntityKey::new("note", "regex")).await.unwrap().unwrap();
    assert_eq!(stored.metadata["escape"], "\\u0000 matches NUL");
}

/// Notes in six scripts, and for each a query that must find its note
/// first: a word inside unspaced text (zh, ja, ko, th), a latin word glued
/// to Chinese, Arabic and English. Scores are relative to the best hit.
const SCRIPTS: [(&str, &str, &str); 9] = [
    ("zh", "物竞天择，适者生存。这是进化论的核心思想。", "适者生存"),
    ("zh-short", "电线悬空挂在两根杆子之间", "悬空"),
    ("zh-latin", "版本gen-itgc后的变化很大", "itgc"),
    ("ja", "しりとりは日本の言葉遊びです", "しりとり"),
    ("ja-kanji", "東京都庁は新宿にあります", "新宿"),
    ("ko", "한국어를 배우는 것은 재미있습니다", "한국어"),
    ("th", "ภาษาไทยเป็นภาษาราชการของประเทศไทย", "ประเทศไทย"),
    ("ar", "اللغة العربية جميلة جدا", "العربية"),
    ("en", "The quick brown fox jumps over the lazy dog", "fox"),
];

async fn text_search_finds_words_of_every_script(store: Store<'_>) {
    let api = store.api();
    upsert(store, SCRIPTS.iter().map(|(id, text, _)| note(id, text)).collect()).await;
    upsert(store, vec![note("title-only", "body").with_metadata(json!({"title": "古い地図の本"}))]).await;
    for (id, _, query) in SCRIPTS {
        let hits = api.search_text(query, 10).await.unwrap();
        assert_eq!(hits.first().map(|h| h.key.id.as_str()), Some(id), "{query} finds {id} first: {hits:?}");
        assert!((hits[0].score - 1.0).abs() < 1e-12, "the best hit scores 1: {hits:?}");
        assert!(hits.iter().all(|h| (0.0..=1.0).contains(&h.score)), "{hits:?}");
    }
    let titled: Vec<String> = api.search_text("地図", 10).await.unwrap().into_iter().map(|h| h.key.id).collect();
    assert_eq!(titled, ["title-only"], "a word of a title in an unspaced script");
    // Pairs that are not in the text find nothing; a phrase whose pairs are
    // all present is found.
    assert!(api.search_text("生适", 10).await.unwrap().is_empty());
    assert!(api.search_text("zzzqqq", 10).await.unwrap().is_empty(), "nonsense finds nothing");
    // Edits are followed: the old word goes, the new one comes.
    upsert(store, vec![note("zh", "天气很好")]).await;
    assert!(api.search_text("适者生存", 10).await.unwrap().is_empty());
    let weather: Vec<String> = api.search_text("天气", 10).await.unwrap().into_iter().map(|h| h.key.id).collect();
    assert_eq!(weather, ["zh"]);
    // A title of any JSON type, over a body of any script, is indexed as its text.
    let titles = [json!(1987), json!(true), json!({"main": "lighthouse"}), json!(["keeper"]), json!(null)];
    for (i, title) in titles.iter().enumerate() {
        for (script, body) in [("en", "plain words"), ("zh", "灯塔看守人")] {
            let id = format!("titled-{script}-{i}");
            upsert(store, vec![note(&id, body).with_metadata(json!({ "title": title }))]).await;
        }
    }
    for (query, index) in [("1987", 0), ("true", 1), ("lighthouse", 2), ("keeper", 3)] {
        let mut found: Vec<String> = api.search_text(query, 10).await.unwrap().into_iter().map(|h| h.key.id).collect();
        found.sort();
        assert_eq!(found, [format!("titled-en-{index}"), format!("titled-zh-{index}")], "{query}");
    }
    assert_eq!(api.search_text("看守", 10).await.unwrap().len(), titles.len(), "every body in Chinese");
}

/// Both backends split the same words and fold the same case: a word is
/// found whatever its case, accents and neighbours (hyphens, dots, quotes),
/// a query's punctuation is ignored, and a word the text does not hold as a
/// word is not found inside another.
async fn index_and_query_split_words_alike(store: Store<'_>) {
    let api = store.api();
    let docs = [
        ("cmdlet", "Get-DnsServerZone returns every zone."),
        ("french", "À l'ÉCOLE, Ça va."),
        ("greek", "ΣΊΣΥΦΟΣ και Πέτρος"),
        ("cyrillic", "Привет, МИР!"),
        ("number", "Version 3.14 of rust2024"),
        ("quote", r#"O'Brien said "hello\world""#),
        ("accents", "Le Café, la façade, l'été"),
        ("decomposed", "un cre\u{300}me bru\u{302}le\u{301}e"),
    ];
    upsert(store, docs.iter().map(|(id, text)| note(id, text)).collect()).await;
    let cases = [
        ("dnsserverzone", "cmdlet"),
        ("Get-DnsServerZone", "cmdlet"),
        ("GET", "cmdlet"),
        ("école", "french"),
        ("ça", "french"),
        ("σίσυφοσ", "greek"),
        ("ΠΈΤΡΟΣ", "greek"),
        ("мир", "cyrillic"),
        ("14", "number"),
        ("RUST2024", "number"),
        ("o'brien", "quote"),
        ("hello", "quote"),
        ("\\world", "quote"),
        ("cafe", "accents"),
        ("FAÇADE", "accents"),
        ("ete", "accents"),
        ("crème", "decomposed"),
        ("brulee", "decomposed"),
    ];
    for (query, id) in cases {
        let hits = api.search_text(query, 10).await.unwrap();
        assert_eq!(hits.first().map(|h| h.key.id.as_str()), Some(id), "{query:?}: {hits:?}");
    }
    for query in ["dns", "rust", "'", "\\", "-- !"] {
        assert!(api.search_text(query, 10).await.unwrap().is_empty(), "{query:?} is not a word of any note");
    }
}

/// A note with more distinct words than PostgreSQL holds in one search
/// value is indexed by the words it has first, and nothing else breaks:
/// the sync's refresh, other notes' search, a query of a word too long to
/// index (it finds nothing).
async fn a_note_of_too_many_words_is_indexed_by_its_first_and_breaks_nothing(store: Store<'_>) {
    let api = store.api();
    let words: Vec<String> = (0..200_000).map(|i| format!("w{i:06}")).collect();
    upsert(store, vec![note("huge", &words.join(" ")), note("small", "a small note")]).await;
    let first: Vec<String> = api.search_text("w000001", 5).await.unwrap().into_iter().map(|h| h.key.id).collect();
    assert_eq!(first, ["huge"]);
    let small: Vec<String> = api.search_text("small", 5).await.unwrap().into_iter().map(|h| h.key.id).collect();
    assert_eq!(small, ["small"]);
    let long = "x".repeat(3_000);
    assert!(api.search_text(&long, 5).await.unwrap().is_empty(), "a word too long to index finds nothing");
    let both: Vec<String> =
        api.search_text(&format!("{long} small"), 5).await.unwrap().into_iter().map(|h| h.key.id).collect();
    assert_eq!(both, ["small"], "and the rest of its query still counts");
}

/// A refresh of many pages at once (PostgreSQL reads and writes 500 rows
/// a round; SQLite passes rows in unspaced scripts through our splitting
/// 1,000 at a time and the rest straight to FTS5) indexes every written
/// entity, whichever way it goes, and drops every deleted one.
async fn a_refresh_of_many_pages_indexes_all_and_drops_the_deleted(store: Store<'_>) {
    let api = store.api();
    let n = 3_600;
    // Every odd note also holds a Chinese word: over 1,000 such notes stay
    // live, more than one chunk of them.
    let text = |i: usize| if i % 2 == 1 { format!("common word{i} 看守人") } else { format!("common word{i}") };
    upsert(store, (0..n).map(|i| note(&format!("n{i}"), &text(i))).collect()).await;
    let gone: Vec<EntityKey> = (0..n).step_by(3).map(|i| EntityKey::new("note", format!("n{i}"))).collect();
    api.batch_delete(&gone).await.unwrap();
    assert!(api.refresh_search_index().await.unwrap() >= n as u64, "every written entity was queued");
    assert_eq!(api.refresh_search_index().await.unwrap(), 0, "and nothing is left");
    for i in [0, 1, 499, 500, 501, 1000, 1001, 2001, 3001, 3499, n - 2, n - 1] {
        let hits = api.search_text(&format!("word{i}"), 5).await.unwrap();
        let expected: Vec<String> = if i % 3 == 0 { vec![] } else { vec![format!("n{i}")] };
        assert_eq!(hits.into_iter().map(|h| h.key.id).collect::<Vec<_>>(), expected, "word{i}");
    }
    let all = api.search_text("common", 10_000).await.unwrap();
    assert_eq!(all.len(), n - gone.len());
    let chinese = api.search_text("看守", 10_000).await.unwrap();
    assert_eq!(chinese.len(), (0..n).filter(|i| i % 2 == 1 && i % 3 != 0).count());
}

/// Every committed write is what search finds, whatever runs beside it:
/// writers updating and deleting the same keys while others refresh the
/// index (and every search refreshes it too). Each version of a note holds
/// a word of its own, so an index that kept an older version than the
/// stored one, or a deleted note, or missed a write, shows in the end.
async fn search_follows_every_write_under_concurrent_writers_and_refreshes(store: Store<'_>) {
    let api = store.api();
    let word = |key: usize, version: usize| format!("k{key}v{version}");
    let writer = |first: usize| async move {
        for round in 0..8 {
            // Keys shared by both writers (0..40) and keys of this writer alone.
            let batch: Vec<NewEntity> = (0..40)
                .chain(first..first + 40)
                // Every other round holds non-ASCII words (the two writers alternate): a note moves
                // between texts indexed as they are and texts the store splits.
                .map(|key| {
                    let extra = if (round + first / 100).is_multiple_of(2) { " café 适者生存" } else { "" };
                    note(&format!("k{key}"), &format!("common {} round {round}{extra}", word(key, round)))
                })
                .collect();
            api.batch_upsert(batch, &UpsertOptions { batch_size: 25, ..UpsertOptions::default() }).await.unwrap();
            if round % 3 == 1 {
                let gone: Vec<EntityKey> =
                    (first..first + 40).step_by(7).map(|k| EntityKey::new("note", format!("k{k}"))).collect();
                api.batch_delete(&gone).await.unwrap();
            }
        }
    };
    let refresher = async {
        for _ in 0..30 {
            api.refresh_search_index().await.unwrap();
            api.search_text("common", 5).await.unwrap();
        }
    };
    tokio::join!(writer(100), writer(200), refresher, async { api.refresh_search_index().await.unwrap() });
    let stored: std::collections::HashMap<String, String> =
        api.list("note", None, 1_000).await.unwrap().into_iter().map(|e| (e.key().id, e.content)).collect();
    let live: HashSet<String> = stored.keys().cloned().collect();
    let found: HashSet<String> =
        api.search_text("common", 1_000).await.unwrap().into_iter().map(|hit| hit.key.id).collect();
    assert_eq!(found, live, "search finds exactly the live notes");
    for (id, content) in &stored {
        let own_word = content.split(' ').nth(1).unwrap();
        let hits: Vec<String> = api.search_text(own_word, 10).await.unwrap().into_iter().map(|h| h.key.id).collect();
        assert_eq!(hits, std::slice::from_ref(id), "{id} is found by the word of its stored version ({own_word})");
        let older = (0..8).map(|v| format!("{id}v{v}")).filter(|w| w != own_word);
        for stale in older {
            assert!(
                api.search_text(&stale, 10).await.unwrap().is_empty(),
                "{id}: an older version's word {stale} is gone"
            );
        }
    }
    assert!(live.len() < 120, "some notes were deleted ({} live)", live.len());
    for word in ["cafe", "生存"] {
        let with: HashSet<String> =
            stored.iter().filter(|(_, c)| c.contains("café")).map(|(id, _)| id.clone()).collect();
        let found: HashSet<String> =
            api.search_text(word, 1_000).await.unwrap().into_iter().map(|h| h.key.id).collect();
        assert_eq!(found, with, "{word} finds the notes whose stored version holds it");
        assert!(!with.is_empty() && with.len() < live.len(), "both kinds of text are stored in the end");
    }
    // A note indexed once, then changed once: its first text leaves the index.
    upsert(store, vec![note("once", "firstword")]).await;
    assert_eq!(ids(api.search_text("firstword", 10).await.unwrap()), ["once"]);
    upsert(store, vec![note("once", "secondword")]).await;
    assert!(api.search_text("firstword", 10).await.unwrap().is_empty(), "version 1's text is gone at version 2");
}

scratch_pg::backends!(
    Db => store;
    search_follows_every_write_under_concurrent_writers_and_refreshes,
    a_refresh_of_many_pages_indexes_all_and_drops_the_deleted,
    a_note_of_too_many_words_is_indexed_by_its_first_and_breaks_nothing,
    text_search_finds_words_of_every_script,
    index_and_query_split_words_alike,
    an_entity_keeps_its_source_form_and_key_order,
    only_a_real_nul_is_refused,
    bulk_paths_use_a_handful_of_statements,
    report_lists_created_updated_unchanged_and_failed,
    atomic_batch_with_a_bad_item_keeps_nothing,
    a_row_the_database_refuses_fails_alone,
    expected_versions_detect_conflicts,
    duplicate_keys_last_one_wins,
    progress_is_reported_per_chunk,
    empty_and_huge_calls,
    unicode_large_content_and_nested_metadata_round_trip,
    filters_select_the_right_entities,
    filter_injection_only_ever_matches_text,
    deletes_leave_tombstones_for_changes_since,
    list_paginates_and_counts,
    list_hashes_pages_through_every_live_entity,
    find_after_pages_through_every_match,
    text_search_ranks_title_and_content,
    concurrent_writers_lose_no_update,
    changes_since_misses_nothing_under_concurrent_writers,
);
