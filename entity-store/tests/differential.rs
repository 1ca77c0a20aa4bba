//! Differential tests (issue 20): the same entities written to SQLite and
//! to PostgreSQL, then the same random filters from the grammar, must
//! select the same keys in the same order; the same writes must give the
//! same upsert reports and the same `changes_since`. Values mix every JSON
//! type and the look-alikes that split the backends before (`"1"` against
//! `1`, `true` against `1`, digits as keys, case and Unicode variants).
//!
//! Needs `DATABASE_URL` (skipped with a line on stderr otherwise). More
//! cases with `PROPTEST_CASES`.

mod common;

use std::collections::BTreeMap;

use entity_store::{Change, EntityKey, EntityStore, Filter, NewEntity, PgStore, UpsertOptions, UpsertReport};
use proptest::prelude::*;
use serde_json::{Value, json};

const KEYS: [&str; 5] = ["a", "b", "0", "n", "A"];
const STRINGS: [&str; 16] =
    ["1", "2", "10", "true", "false", "null", "", "a", "A", "b", "é", "e\u{301}", "名前", "Zz", "1.0", "a b"];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..12).prop_map(Value::from),
        prop::sample::select(vec![0.5f64, -1.5, 2.0, 1e3, 10.25]).prop_map(|f| json!(f)),
        prop::sample::select(STRINGS.to_vec()).prop_map(|s| json!(s)),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 10, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn metadata() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), value(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A literal of the filter language for `value` (strings escaped).
fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        other => other.to_string(),
    }
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(key(), 1..3).prop_map(|keys| format!("metadata.{}", keys.join(".")))
}

fn op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="])
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (path(), op(), scalar()).prop_map(|(p, o, v)| format!("{p} {o} {}", literal(&v))),
        2 => (path(), scalar()).prop_map(|(p, v)| format!("{p} contains {}", literal(&v))),
        1 => path().prop_map(|p| format!("{p} exists")),
        1 => (op(), prop::sample::select(vec!["e03", "E", "e10", "é"])).prop_map(|(o, id)| format!("id {o} \"{id}\"")),
        1 => prop::sample::select(vec!["a", "B", "名"]).prop_map(|t| format!("content contains \"{t}\"")),
        1 => (op(), 1i64..3).prop_map(|(o, v)| format!("version {o} {v}")),
    ]
}

fn filter() -> impl Strategy<Value = String> {
    condition().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

/// Ids that order differently by code point and by a language's collation.
const IDS: [&str; 12] = ["e01", "e02", "e03", "e10", "E", "e", "é", "Z", "a-b", "a_b", "名", "e04"];

fn entities(entity_type: &str, metadata: &[Value]) -> Vec<NewEntity> {
    metadata
        .iter()
        .zip(IDS)
        .enumerate()
        .map(|(i, (m, id))| {
            let content = ["a note", "B side", "名前 and a", ""][i % 4];
            let mut entity = NewEntity::new(entity_type, id, content);
            entity.metadata = m.clone();
            entity
        })
        .collect()
}

/// What a report says, without timings and revision numbers.
fn outcome(report: &UpsertReport) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = report
        .succeeded
        .iter()
        .map(|s| {
            (s.key.to_string(), format!("{:?} v{} {}", s.outcome.status, s.outcome.version, s.outcome.content_hash))
        })
        .collect();
    out.extend(report.failed.iter().map(|f| (f.key.to_string(), "failed".to_owned())));
    out
}

fn changes(changes: &[Change]) -> Vec<(EntityKey, i64, bool, String)> {
    let mut out: Vec<_> =
        changes.iter().map(|c| (c.key.clone(), c.version, c.deleted, c.content_hash.clone())).collect();
    out.sort();
    out
}

struct Backends {
    runtime: tokio::runtime::Runtime,
    sqlite: common::SqliteDb,
    postgres: PgStore,
    scratch: Option<common::PgDatabase>,
}

impl Backends {
    fn open() -> Option<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (sqlite, postgres, scratch) = runtime.block_on(async {
            let (postgres, scratch) = common::postgres("differential").await?;
            let db = common::sqlite().await;
            Some((db, postgres, scratch))
        })?;
        Some(Self { runtime, sqlite, postgres, scratch: Some(scratch) })
    }

    fn each<T>(&self, run: &impl AsyncFn(&dyn EntityStore) -> T) -> (T, T) {
        self.runtime.block_on(async { (run(&self.sqlite.store).await, run(&self.postgres).await) })
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Some(scratch) = self.scratch.take() {
            let postgres = self.postgres.clone();
            self.runtime.block_on(scratch.drop_database(postgres));
        }
    }
}

#[test]
fn filters_reports_and_changes_agree_on_both_backends() {
    let Some(backends) = Backends::open() else { return };
    let cases = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig { cases: ProptestConfig::default().cases.min(256), ..ProptestConfig::default() };
    proptest!(config, |(first in prop::collection::vec(metadata(), IDS.len()),
                        second in prop::collection::vec(metadata(), IDS.len()),
                        filters in prop::collection::vec(filter(), 6))| {
        // Each case writes entities of its own type, so cases never meet.
        let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entity_type = format!("case{case}");
        let (start_sqlite, start_pg) = backends.each(&async |store| store.current_revision().await.unwrap());
        let (a, b) = backends.each(&async |store| {
            outcome(&store.batch_upsert(entities(&entity_type, &first), &UpsertOptions::default()).await.unwrap())
        });
        prop_assert_eq!(a, b, "the first upsert's reports");
        // Half the entities again unchanged, the rest with other metadata.
        let mixed: Vec<Value> = first.iter().zip(&second).enumerate()
            .map(|(i, (old, new))| if i % 2 == 0 { old.clone() } else { new.clone() }).collect();
        let (middle_sqlite, middle_pg) = backends.each(&async |store| store.current_revision().await.unwrap());
        let (a, b) = backends.each(&async |store| {
            outcome(&store.batch_upsert(entities(&entity_type, &mixed), &UpsertOptions::default()).await.unwrap())
        });
        prop_assert_eq!(a, b, "the second upsert's reports");
        let a = changes(&backends.runtime.block_on(backends.sqlite.store.changes_since(start_sqlite, 1000)).unwrap());
        let b = changes(&backends.runtime.block_on(backends.postgres.changes_since(start_pg, 1000)).unwrap());
        prop_assert_eq!(a, b, "changes since the case began");
        let a = changes(&backends.runtime.block_on(backends.sqlite.store.changes_since(middle_sqlite, 1000)).unwrap());
        let b = changes(&backends.runtime.block_on(backends.postgres.changes_since(middle_pg, 1000)).unwrap());
        prop_assert_eq!(a, b, "changes of the second upsert");
        for text in &filters {
            let scoped = format!("entity_type = \"{entity_type}\" and ({text})");
            let filter = Filter::parse(&scoped).map_err(|err| TestCaseError::fail(format!("{scoped}: {err}")))?;
            let (a, b) = backends.each(&async |store| store.find_keys(&filter, 1000).await.map_err(|e| e.to_string()));
            prop_assert_eq!(a, b, "filter {} on {:?}", text, mixed);
        }
    });
}

/// The cases that split the backends before, by name: each side must give
/// exactly these keys.
#[test]
fn known_differences_are_gone() {
    let Some(backends) = Backends::open() else { return };
    let notes = [
        ("a", json!({"priority": "1", "done": true, "tags": [1, "x"], "list": ["a"]})),
        ("b", json!({"priority": 3, "done": 1, "tags": [true], "list": {"0": "a"}})),
        ("c", json!({"priority": 2.5, "done": false, "tags": ["1"], "list": "a"})),
    ];
    let batch: Vec<NewEntity> = notes
        .iter()
        .map(|(id, m)| {
            let mut e = NewEntity::new("t", *id, "text");
            e.metadata = m.clone();
            e
        })
        .collect();
    let _ = backends.each(&async |store| store.batch_upsert(batch.clone(), &UpsertOptions::default()).await.unwrap());
    let expect = [
        ("metadata.priority > 2", vec!["b", "c"]),
        ("metadata.priority < \"2\"", vec!["a"]),
        ("metadata.done = 1", vec!["b"]),
        ("metadata.done = true", vec!["a"]),
        ("metadata.done != true", vec!["c"]),
        ("not metadata.done = true", vec!["b", "c"]),
        ("metadata.tags contains 1", vec!["a"]),
        ("metadata.tags contains true", vec!["b"]),
        ("metadata.tags contains \"1\"", vec!["c"]),
        ("metadata.list.0 = \"a\"", vec!["b"]),
        ("metadata.list.0 exists", vec!["b"]),
        ("metadata.list contains \"a\"", vec!["a", "c"]),
    ];
    for (text, ids) in expect {
        let filter = Filter::parse(text).unwrap();
        let (a, b) = backends.each(&async |store| {
            store.find_keys(&filter, 100).await.unwrap().into_iter().map(|k| k.id).collect::<Vec<_>>()
        });
        assert_eq!(a, ids, "SQLite: {text}");
        assert_eq!(b, ids, "PostgreSQL: {text}");
    }
    let nul = Filter::parse("metadata.a = \"x\u{0}y\"").unwrap_err();
    assert!(nul.message.contains("U+0000"), "{nul}");
}
