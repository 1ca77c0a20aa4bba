//! A folder comes back unchanged from the database, into any folder: the
//! bytes of every file (byte-order marks, CRLF, comments, quoting, key
//! order, values JSON cannot hold), every type, failed writes retried and
//! vanished files written again. The real binary, real folders, SQLite and
//! PostgreSQL (with `DATABASE_URL`).

use std::collections::BTreeMap;
use std::path::Path;

use entity_store::{EntityKey, NewEntity, UpsertOptions};
use serde_json::json;

mod common;

use common::run;

struct Fixture {
    test: common::TestDb,
}

impl Fixture {
    /// Runs the binary on this database; returns its exit code and output.
    fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = run(args, &self.test.url);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }
}

/// Files as authors write them, each a case that was lost before.
const VAULT: &[(&str, &str)] = &[
    ("plain.md", "---\ntitle: Plain\ntags: [a, b]\n---\nbody\n"),
    ("bom.md", "\u{feff}---\r\ntitle: BOM\r\n---\r\nbody\r\n"),
    ("bom-only.md", "\u{feff}no frontmatter\n"),
    (
        "crlf.md",
        "---\r\n# why this note exists\r\nzeta: 'z'\r\nalpha: \"2026-03-18\"\r\nlist:\r\n- x\r\n- y\r\n---\r\nline1\r\nline2\r\n",
    ),
    ("big.md", "---\nbig_id: 12345678901234567890123\nratio: .nan\ntitle: Big\n---\n"),
    ("wrapped.md", "---\ndescription: this is\n  hand wrapped\nfolded: >-\n  folded\n  text\n---\nx\n"),
    ("no-frontmatter.md", "just text\n"),
    ("bad-frontmatter.md", "---\nbad: [\n---\nkept\n"),
    ("Projects/plan.md", "---\nowner: me\nwhen: '12:30'\n---\n# Plan\n"),
    ("person/ann.md", "---\nname: Ann\nrole: 'yes'\n---\nAnn's page\n"),
    ("person/bob.md", "---\r\nname: Bob\r\n---\r\nBob\r\n"),
];

fn write_vault(folder: &Path) {
    for (path, text) in VAULT {
        let full = folder.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
}

/// Every markdown file under `folder` (our state folder aside) and its bytes.
fn files(folder: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(folder)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "md"))
        .filter(|e| !e.path().components().any(|c| c.as_os_str() == ".directory-sync"))
        .map(|e| {
            let relative = e.path().strip_prefix(folder).unwrap().to_string_lossy().into_owned();
            (relative, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn path_of(folder: &Path) -> &str {
    folder.to_str().unwrap()
}

/// Synced from one folder, the database writes every file back byte for
/// byte into an empty folder, by `export` and by `sync`, typed notes included.
async fn every_file_comes_back_byte_for_byte_in_any_folder(f: &Fixture) {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_vault(a.path());
    let (code, out) = f.cli(&["sync", path_of(a.path())]);
    assert_eq!(code, 0, "{out}");
    let original = files(a.path());
    assert_eq!(original.len(), VAULT.len());

    let (code, out) = f.cli(&["export", path_of(b.path())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(files(b.path()), original, "export into an empty folder: {out}");
    let (code, out) = f.cli(&["sync", path_of(c.path())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(files(c.path()), original, "sync into an empty folder: {out}");
    assert_eq!(files(a.path()), original, "the first folder is untouched");
}

/// A metadata change made in the database edits the block in place: every
/// other line, the byte-order mark and the line endings stay, in every folder.
async fn a_database_edit_keeps_every_other_line(f: &Fixture) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_vault(a.path());
    assert_eq!(f.cli(&["sync", path_of(a.path())]).0, 0);
    let store = &f.test.db.store;
    let key = EntityKey::new("note", "crlf");
    let entity = store.get(&key).await.unwrap().unwrap();
    let mut metadata = entity.metadata.clone();
    metadata.insert("zeta".into(), json!("changed"));
    metadata.insert("status".into(), json!("on"));
    let write = NewEntity::new("note", "crlf", entity.content.clone())
        .with_metadata(serde_json::Value::Object(metadata))
        .with_frontmatter(entity.frontmatter.clone());
    store.batch_upsert(vec![write], &UpsertOptions::default()).await.unwrap();

    let expected = "---\r\n# why this note exists\r\nzeta: changed\r\nalpha: \"2026-03-18\"\r\nlist:\r\n- x\r\n- y\r\nstatus: \"on\"\r\n---\r\nline1\r\nline2\r\n";
    let (code, out) = f.cli(&["sync", path_of(a.path())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(String::from_utf8(std::fs::read(a.path().join("crlf.md")).unwrap()).unwrap(), expected);
    assert_eq!(f.cli(&["export", path_of(b.path())]).0, 0);
    assert_eq!(String::from_utf8(std::fs::read(b.path().join("crlf.md")).unwrap()).unwrap(), expected);
    let mut others = files(a.path());
    others.remove("crlf.md");
    let mut from_vault: BTreeMap<String, Vec<u8>> =
        VAULT.iter().map(|(p, t)| ((*p).to_owned(), t.as_bytes().to_vec())).collect();
    from_vault.remove("crlf.md");
    assert_eq!(others, from_vault, "no other file was rewritten");
}

/// An entity whose file could not be written is a failure (exit 1), shown
/// by `status`, and written by the next export once the cause is gone;
/// files removed from the folder are written again.
async fn failed_and_vanished_files_are_written_by_the_next_export(f: &Fixture) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_vault(a.path());
    assert_eq!(f.cli(&["sync", path_of(a.path())]).0, 0);
    // A folder where a file should go: the write fails.
    std::fs::create_dir_all(b.path().join("plain.md/in-the-way")).unwrap();
    let (code, out) = f.cli(&["export", path_of(b.path())]);
    assert_eq!(code, 1, "a failed write fails the export: {out}");
    assert!(out.contains("plain.md"), "the file is named: {out}");
    let (_, status) = f.cli(&["status", path_of(b.path())]);
    assert!(status.contains("not yet in the folder: 1 "), "{status}");
    std::fs::remove_dir_all(b.path().join("plain.md")).unwrap();
    let (code, out) = f.cli(&["export", path_of(b.path())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(files(b.path()), files(a.path()), "the failed file is written now: {out}");

    std::fs::remove_file(b.path().join("bom.md")).unwrap();
    std::fs::remove_file(b.path().join("person/ann.md")).unwrap();
    let (code, out) = f.cli(&["export", path_of(b.path())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(files(b.path()), files(a.path()), "vanished files are written again: {out}");
    let (_, status) = f.cli(&["status", path_of(b.path())]);
    assert!(!status.contains("not yet in the folder"), "{status}");
    // A change in the database not written to the folder yet counts too.
    let entity = f.test.db.store.get(&EntityKey::new("note", "plain")).await.unwrap().unwrap();
    let write = NewEntity::new("note", "plain", "changed\n").with_frontmatter(entity.frontmatter.clone());
    f.test
        .db
        .store
        .batch_upsert(vec![write.with_metadata(json!({"title": "Plain"}))], &UpsertOptions::default())
        .await
        .unwrap();
    let (_, status) = f.cli(&["status", path_of(b.path())]);
    assert!(status.contains("not yet in the folder: 1 "), "{status}");
}

/// Only the tool's own names are left out; a user's file whose name looks
/// like one of ours is a note, and what is skipped on purpose (hidden
/// folders and files) is counted and listed.
async fn only_our_own_names_are_ignored_and_skips_are_listed(f: &Fixture) {
    let a = tempfile::tempdir().unwrap();
    let notes = [
        "team.conflict-resolution.md",
        "archive.tmp/old.md",
        "draft.md.tmp.md",
        "x.conflict-2026.md",
        "notes~/a.md",
        "plan.conflict-20260318-093000.notes.md",
    ];
    for name in notes {
        let full = a.path().join(name);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, format!("{name}\n")).unwrap();
    }
    std::fs::create_dir_all(a.path().join(".obsidian/plugins")).unwrap();
    std::fs::write(a.path().join(".obsidian/plugins/x.md"), "config").unwrap();
    std::fs::create_dir_all(a.path().join("sub/.trash")).unwrap();
    std::fs::write(a.path().join("sub/.trash/gone.md"), "trash").unwrap();
    std::fs::write(a.path().join(".hidden.md"), "hidden").unwrap();
    let (code, out) = f.cli(&["--json", "sync", path_of(a.path())]);
    assert_eq!(code, 0, "{out}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["imported"], notes.len(), "{out}");
    let skipped: Vec<&str> =
        summary["skipped"].as_array().unwrap().iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert_eq!(skipped, [".hidden.md", ".obsidian", "sub/.trash"], "{out}");
    let (_, text) = f.cli(&["sync", path_of(a.path())]);
    assert!(text.contains("skipped 3 hidden: .hidden.md, .obsidian, sub/.trash"), "{text}");
}

/// A name in NFD (as macOS writes it) and its NFC spelling are one note:
/// found by either spelling, written back to the file that exists, never
/// a second file beside it; two files that differ only so are refused.
async fn names_are_matched_in_nfc_and_kept_on_disk(f: &Fixture) {
    let a = tempfile::tempdir().unwrap();
    let (nfd, nfc) = ("cafe\u{301}", "caf\u{e9}");
    std::fs::create_dir_all(a.path().join(format!("r{nfd}sum{nfd}"))).unwrap();
    std::fs::write(a.path().join(format!("{nfd}.md")), "---\ntitle: x\n---\nbody\n").unwrap();
    std::fs::write(a.path().join(format!("r{nfd}sum{nfd}/{nfd}.md")), "nested\n").unwrap();
    let (code, out) = f.cli(&["sync", path_of(a.path())]);
    assert_eq!(code, 0, "{out}");
    let store = &f.test.db.store;
    for spelling in [nfd, nfc] {
        let entity = store.get(&EntityKey::new("note", spelling)).await.unwrap();
        assert_eq!(entity.map(|e| e.id), Some(nfc.to_owned()), "found by {spelling:?}");
    }
    // A write by the NFC id (what an assistant types) updates that note.
    let nested = format!("r{nfc}sum{nfc}/{nfc}");
    let writes = vec![
        NewEntity::new("note", nfc, "new body\n").with_metadata(json!({"title": "x"})),
        NewEntity::new("note", &nested, "new nested\n"),
    ];
    let report = store.batch_upsert(writes, &UpsertOptions::default()).await.unwrap();
    assert_eq!(report.succeeded.len(), 2, "{:?}", report.failed);
    let (code, out) = f.cli(&["sync", path_of(a.path())]);
    assert_eq!(code, 0, "{out}");
    let on_disk: Vec<String> = files(a.path()).into_keys().collect();
    assert_eq!(on_disk, [format!("{nfd}.md"), format!("r{nfd}sum{nfd}/{nfd}.md")], "no second file");
    assert_eq!(std::fs::read_to_string(a.path().join(format!("{nfd}.md"))).unwrap(), "---\ntitle: x\n---\nnew body\n");

    // Two files whose names differ only by normalization: the new one is
    // refused, by name, and neither file nor the note is changed.
    std::fs::write(a.path().join(format!("{nfc}.md")), "the twin\n").unwrap();
    let before = files(a.path());
    let (code, out) = f.cli(&["sync", path_of(a.path())]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{nfc}.md")) && out.contains("Unicode normalization"), "{out}");
    let kept = store.get(&EntityKey::new("note", nfc)).await.unwrap().unwrap();
    assert_eq!(kept.content, "new body\n", "the twin did not overwrite the note");
    assert_eq!(files(a.path()), before, "no file was written or moved aside");

    // Both at once in a new folder, in either order of arrival: the one synced stays, the other is refused.
    for (first, second) in [(nfc, nfd), (nfd, nfc)] {
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join(format!("{first}.md")), "first\n").unwrap();
        assert_eq!(f.cli(&["sync", path_of(b.path())]).0, 0);
        std::fs::write(b.path().join(format!("{second}.md")), "second\n").unwrap();
        let before = files(b.path());
        let (code, out) = f.cli(&["sync", path_of(b.path())]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!("{second}.md")), "the newcomer is named: {out}");
        assert_eq!(files(b.path()), before, "{first:?} then {second:?}: nothing written: {out}");
    }
}

/// A database written before entities kept their source form gets it from
/// the sync state when it is opened, so an export elsewhere is exact too.
async fn an_older_database_takes_the_source_form_from_its_sync_state(f: &Fixture) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_vault(a.path());
    assert_eq!(f.cli(&["sync", path_of(a.path())]).0, 0);
    // Back to the schema and data of before: no source form, no export types.
    let undo = [
        "UPDATE entities SET frontmatter = NULL",
        "ALTER TABLE sync_roots DROP COLUMN export_types",
        "DELETE FROM _sqlx_migrations WHERE version = 3002",
    ];
    for sql in undo {
        match &f.test.db.state {
            directory_sync::StateDb::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            directory_sync::StateDb::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }
    let reopened = directory_sync::Database::open(&f.test.url).await.unwrap();
    let entity = reopened.store.get(&EntityKey::new("note", "crlf")).await.unwrap().unwrap();
    let (_, crlf) = VAULT.iter().find(|(p, _)| *p == "crlf.md").unwrap();
    assert_eq!(entity.frontmatter.as_deref(), Some(&crlf[..crlf.find("---\r\nline1").unwrap() + 5]));
    reopened.close().await;
    let (code, out) = f.cli(&["export", path_of(b.path())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(files(b.path()), files(a.path()), "{out}");
}

/// A file a killed sync wrote from its entity (before recording it) is
/// the entity, also when the entity does not hold the file's frontmatter
/// text (it was written by a program that passed none): no conflict.
async fn a_file_written_from_its_entity_is_no_conflict(f: &Fixture) {
    let a = tempfile::tempdir().unwrap();
    write_vault(a.path());
    assert_eq!(f.cli(&["sync", path_of(a.path())]).0, 0);
    let store = &f.test.db.store;
    let entity = store.get(&EntityKey::new("note", "plain")).await.unwrap().unwrap();
    let write = NewEntity::new("note", "plain", "edited in the database\n").with_metadata(json!(entity.metadata));
    store.batch_upsert(vec![write], &UpsertOptions::default()).await.unwrap();
    // What the export half writes, as if the process died before recording it.
    std::fs::write(a.path().join("plain.md"), "---\ntitle: Plain\ntags: [a, b]\n---\nedited in the database\n")
        .unwrap();
    let (code, out) = f.cli(&["--json", "sync", path_of(a.path())]);
    assert_eq!(code, 0, "{out}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["conflicts"], json!([]), "{out}");
}

scratch_pg::backends!(
    Fixture;
    a_file_written_from_its_entity_is_no_conflict,
    an_older_database_takes_the_source_form_from_its_sync_state,
    names_are_matched_in_nfc_and_kept_on_disk,
    only_our_own_names_are_ignored_and_skips_are_listed,
    every_file_comes_back_byte_for_byte_in_any_folder,
    a_database_edit_keeps_every_other_line,
    failed_and_vanished_files_are_written_by_the_next_export,
);

mod generated {
    //! Generated folders through a real SQLite database: import, then
    //! export into another folder gives identical bytes; adding a key to
    //! one entity changes only that file, by that key's line.

    use batch_core::CancellationToken;
    use directory_sync::{Direction, SyncConfig, Syncer, no_progress};
    use entity_store::{EntityKey, NewEntity, UpsertOptions};
    use proptest::prelude::*;

    use super::{VAULT, files};

    /// `text` with every line ending CRLF or LF, and a BOM or none.
    fn styled(text: &str, crlf: bool, bom: bool) -> String {
        let text = text.trim_start_matches('\u{feff}').replace("\r\n", "\n");
        let text = if crlf { text.replace('\n', "\r\n") } else { text };
        if bom { format!("\u{feff}{text}") } else { text }
    }

    fn syncer(db: &directory_sync::Database, folder: &std::path::Path) -> Syncer {
        let config = SyncConfig { entity_types: vec!["person".into()], ..SyncConfig::new(folder) };
        Syncer::new(config, db.store.clone(), db.state.clone(), None).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn generated_folders_come_back_and_an_edit_touches_one_line(
            picks in prop::collection::vec((0..VAULT.len(), any::<bool>(), any::<bool>()), 1..8),
            value in prop_oneof![Just("on"), Just("2026-03-18"), Just("12:30"), Just("plain text")],
        ) {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let (dir, a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let mut written = Vec::new();
            for (n, (pick, crlf, bom)) in picks.iter().enumerate() {
                let (path, text) = VAULT[*pick];
                let (folder, name) = path.rsplit_once('/').map_or(("", path), |(f, n)| (f, n));
                let relative = if folder.is_empty() { format!("g{n}-{name}") } else { format!("{folder}/g{n}-{name}") };
                let full = a.path().join(&relative);
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, styled(text, *crlf, *bom)).unwrap();
                written.push(relative);
            }
            let url = format!("sqlite://{}", dir.path().join("store.db").display());
            let (before, after, exported, key) = runtime.block_on(async {
                let db = directory_sync::Database::open(&url).await.unwrap();
                let cancel = CancellationToken::new();
                syncer(&db, a.path()).sync(Direction::Both, no_progress(), &cancel).await.unwrap();
                syncer(&db, b.path()).sync(Direction::Both, no_progress(), &cancel).await.unwrap();
                let exported = files(b.path());
                // Add a key to the first file's entity, as batch_update does.
                let first = written[0].trim_end_matches(".md");
                let key = match first.split_once('/') {
                    Some(("person", id)) => EntityKey::new("person", id),
                    _ => EntityKey::new("note", first),
                };
                let entity = db.store.get(&key).await.unwrap().unwrap();
                let mut metadata = entity.metadata.clone();
                metadata.insert("added".into(), value.into());
                let write = NewEntity::new(&key.entity_type, &key.id, entity.content.clone())
                    .with_metadata(serde_json::Value::Object(metadata))
                    .with_frontmatter(entity.frontmatter.clone());
                db.store.batch_upsert(vec![write], &UpsertOptions::default()).await.unwrap();
                let before = files(a.path());
                syncer(&db, a.path()).sync(Direction::Both, no_progress(), &cancel).await.unwrap();
                let after = files(a.path());
                db.close().await;
                (before, after, exported, key)
            });
            prop_assert_eq!(&exported, &before, "export into another folder is byte-identical");
            let changed = &written[0];
            for (path, bytes) in &before {
                if path != changed {
                    prop_assert_eq!(after.get(path), Some(bytes), "{} untouched", path);
                }
            }
            let (old, new) = (String::from_utf8_lossy(&before[changed]), String::from_utf8_lossy(&after[changed]));
            prop_assert_eq!(old.starts_with('\u{feff}'), new.starts_with('\u{feff}'), "the BOM stays");
            let (old, new) = (old.trim_start_matches('\u{feff}'), new.trim_start_matches('\u{feff}'));
            let new_lines: Vec<&str> = new.split_inclusive('\n').collect();
            let mut rest = new_lines.iter();
            prop_assert!(old.split_inclusive('\n').all(|line| rest.any(|l| *l == line)), "{:?} -> {:?}", old, new);
            // One line more: the new key's; three when the file had no block to add it to.
            let had_block = entity_store::markdown::parse(old.as_bytes())
                .unwrap()
                .frontmatter
                .is_some_and(|head| head.trim_start_matches('\u{feff}').starts_with("---"));
            let grown = if had_block { 1 } else { 3 };
            prop_assert_eq!(new_lines.len(), old.split_inclusive('\n').count() + grown, "{:?} -> {:?} ({})", old, new, key);
            let doc = entity_store::markdown::parse(new.as_bytes()).unwrap();
            prop_assert_eq!(doc.metadata.get("added").and_then(|v| v.as_str()), Some(value));
        }
    }
}

impl scratch_pg::Fixture for Fixture {
    async fn open(backend: scratch_pg::Backend, test: &'static str) -> Option<Self> {
        let test = common::open(backend, test).await?;
        Some(Self { test })
    }

    async fn finish(self) {
        self.test.finish().await;
    }
}
