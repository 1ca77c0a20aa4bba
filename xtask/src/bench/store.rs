//! Suite `store`: writing 10,000 entities of ~2 KB.
//!
//! Per backend, in one run: the naive loop (an existence check and an upsert
//! per entity, autocommit) as the baseline; the raw insert ceiling
//! (the same rows into the same `entities` table with the same indexes, by
//! the fastest plain means: one multi-row INSERT per chunk in one
//! transaction on SQLite, COPY on PostgreSQL); and `batch_upsert`. Each runs on a fresh database. Then the
//! cost of indexing an unspaced script: Chinese notes against English ones
//! of the same size, rows/s and index bytes.

use std::time::Instant;

use anyhow::Result;
use entity_store::{EntityStore, NewEntity, PgStore, SqliteStore, UpsertCounts, UpsertOptions, content_hash};
use serde_json::json;

use super::{BenchResult, Direction, Measurement, Target};

pub fn run(quick: bool) -> Result<Vec<BenchResult>> {
    let count = if quick { 2_000 } else { 10_000 };
    let entities = entities(count);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut results = sqlite(&entities).await?;
        results.push(sqlite_unspaced(count).await?);
        match std::env::var("DATABASE_URL") {
            Ok(url) => {
                results.extend(postgres(&url, &entities).await?);
                results.push(postgres_unspaced(&url, count).await?);
            }
            Err(_) => eprintln!("store: PostgreSQL part SKIPPED (no DATABASE_URL)"),
        }
        Ok(results)
    })
}

fn entities(count: usize) -> Vec<NewEntity> {
    (0..count)
        .map(|i| {
            NewEntity::new(
                "note",
                format!("bench/{i:06}"),
                format!("# Note {i}\n\n{}", "lorem ipsum dolor sit amet ".repeat(72)),
            )
            .with_metadata(json!({"title": format!("Note {i}"), "tags": ["bench"]}))
        })
        .collect()
}

/// Notes of about 2 KB in Chinese (`zh`) or English (`en`), each with a
/// title: the two sides of what indexing an unspaced script costs.
fn notes_in(language: &str, count: usize) -> Vec<NewEntity> {
    let (title, body) = match language {
        "zh" => ("笔记", "物竞天择，适者生存。这是进化论的核心思想，也是自然选择的结果。"),
        _ => ("Note", "lorem ipsum dolor sit amet "),
    };
    let repeat = 2_000 / body.len();
    (0..count)
        .map(|i| {
            NewEntity::new("note", format!("{language}/{i:06}"), format!("{body}{i} ").repeat(repeat))
                .with_metadata(json!({"title": format!("{title} {i}")}))
        })
        .collect()
}

/// Upsert + index rows/s of the Chinese notes against the English ones,
/// with the index's bytes per note of each, as one figure.
fn unspaced_figure(backend: &str, count: usize, (zh, zh_bytes): (f64, f64), (en, en_bytes): (f64, f64)) -> BenchResult {
    Measurement {
        suite: "store",
        name: &format!("{backend} upsert+search index, Chinese vs English"),
        unit: "rows/s",
        value: zh,
        baseline: Some(("English notes of the same size", en)),
        direction: Direction::HigherIsBetter,
        target: Target::RatioAtLeast(0.25),
        settings: format!(
            "{count} notes of ~2 KB each, best of {ROUNDS} alternating rounds; Chinese is indexed as characters and pairs: index {:.0} bytes per note against {:.0} for English",
            zh_bytes / count as f64,
            en_bytes / count as f64
        ),
    }
    .finish()
}

async fn sqlite_unspaced(count: usize) -> Result<BenchResult> {
    let dir = tempfile::tempdir()?;
    let mut sides = [(0.0_f64, 0.0); 2];
    for (round, side) in (0..ROUNDS).flat_map(|round| [(round, 0), (round, 1)]) {
        let language = ["zh", "en"][side];
        let store = SqliteStore::open(dir.path().join(format!("{language}{round}.db"))).await?;
        let (_, indexed, _) = batched(&store, &notes_in(language, count)).await?;
        let bytes: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(length(block)), 0) FROM entities_fts_data")
            .fetch_one(store.pool())
            .await?;
        sides[side] = (sides[side].0.max(indexed), bytes as f64);
        store.close().await;
    }
    Ok(unspaced_figure("sqlite", count, sides[0], sides[1]))
}

async fn postgres_unspaced(url: &str, count: usize) -> Result<BenchResult> {
    let mut sides = [(0.0_f64, 0.0); 2];
    for side in (0..ROUNDS).flat_map(|_| [0, 1]) {
        let language = ["zh", "en"][side];
        let scratch = crate::scratch::ScratchPg::create(url, &format!("bench_{language}")).await?;
        let store = PgStore::connect(&scratch.url).await?;
        let (_, indexed, _) = batched(&store, &notes_in(language, count)).await?;
        let bytes: i64 =
            sqlx::query_scalar("SELECT pg_total_relation_size('entity_search')").fetch_one(store.pool()).await?;
        sides[side] = (sides[side].0.max(indexed), bytes as f64);
        store.pool().close().await;
        scratch.drop_database().await?;
    }
    Ok(unspaced_figure("postgres", count, sides[0], sides[1]))
}

/// The suite's rows for one backend: ours (`best`) against the naive loop and the ceiling.
fn results(
    backend: &str,
    ratio_target: f64,
    count: usize,
    (naive, ceiling): (f64, f64),
    best: &Best,
) -> Vec<BenchResult> {
    let settings = format!(
        "{count} entities of ~2 KB, batch_size 500, fresh database each; ceiling and batch_upsert best of {ROUNDS} alternating rounds"
    );
    vec![
        Measurement {
            suite: "store",
            name: &format!("{backend} batch_upsert vs naive"),
            unit: "rows/s",
            value: best.batched,
            baseline: Some(("exists+upsert per row", naive)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(ratio_target),
            settings: settings.clone(),
        }
        .finish(),
        Measurement {
            suite: "store",
            name: &format!("{backend} batch_upsert vs raw ceiling"),
            unit: "rows/s",
            value: best.batched,
            baseline: Some((CEILING, ceiling)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(0.8),
            settings: settings.clone(),
        }
        .finish(),
        Measurement {
            suite: "store",
            name: &format!("{backend} upsert+search index vs raw ceiling"),
            unit: "rows/s",
            value: best.batched_indexed,
            baseline: Some((CEILING, ceiling)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(0.5),
            settings: format!("{settings}; the ceiling leaves the rows unindexed, this also indexes them"),
        }
        .finish(),
        Measurement {
            suite: "store",
            name: &format!("{backend} upsert+search index vs naive"),
            unit: "rows/s",
            value: best.batched_indexed,
            baseline: Some(("exists+upsert per row", naive)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(ratio_target),
            settings: format!("{settings}; the naive loop only leaves rows to be indexed, this also indexes them"),
        }
        .finish(),
        Measurement {
            suite: "store",
            name: &format!("{backend} statements per 1,000 entities"),
            unit: "stmts",
            value: best.statements_per_1000,
            baseline: None,
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(3.0),
            settings,
        }
        .finish(),
    ]
}

/// Returns (upsert rows/s, upsert + index rows/s, statements per 1,000).
async fn batched(store: &dyn EntityStore, entities: &[NewEntity]) -> Result<(f64, f64, f64)> {
    let before = store.statements();
    // The caller owns its batch; copying the bench's is not the store's work.
    let batch = entities.to_vec();
    let started = Instant::now();
    let report = store.batch_upsert(batch, &UpsertOptions::default()).await?;
    let upsert_time = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.created() == entities.len(),
        "batch_upsert created {} of {}",
        report.created(),
        entities.len()
    );
    let per_1000 = (store.statements() - before) as f64 * 1000.0 / entities.len() as f64;
    let indexed = store.refresh_search_index().await?;
    anyhow::ensure!(indexed == entities.len() as u64, "indexed {indexed} of {}", entities.len());
    let total_time = started.elapsed().as_secs_f64();
    let rows = entities.len() as f64;
    Ok((rows / upsert_time, rows / total_time, per_1000))
}

async fn sqlite(entities: &[NewEntity]) -> Result<Vec<BenchResult>> {
    let dir = tempfile::tempdir()?;

    let naive_store = SqliteStore::open(dir.path().join("naive.db")).await?;
    let started = Instant::now();
    let mut conn = naive_store.pool().acquire().await?;
    for e in entities {
        let hash = hash_of(e);
        let exists: Option<i64> = sqlx::query_scalar("SELECT version FROM entities WHERE entity_type = ? AND id = ?")
            .bind(&e.entity_type)
            .bind(&e.id)
            .fetch_optional(&mut *conn)
            .await?;
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        sqlx::query(
            "INSERT INTO entities (entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, (SELECT COALESCE(MAX(revision), 0) + 1 FROM entities))
             ON CONFLICT (entity_type, id) DO UPDATE SET content = excluded.content, metadata = excluded.metadata,
               content_hash = excluded.content_hash, updated_at = excluded.updated_at,
               version = entities.version + 1, revision = excluded.revision",
        )
        .bind(&e.entity_type)
        .bind(&e.id)
        .bind(&e.content)
        .bind(e.metadata.to_string())
        .bind(hash)
        .bind(now)
        .bind(exists.map_or(1, |v| v + 1))
        .execute(&mut *conn)
        .await?;
    }
    let naive = entities.len() as f64 / started.elapsed().as_secs_f64();
    drop(conn);
    naive_store.close().await;

    // The ceiling and ours alternate, each on a fresh database, and each
    // keeps its best round: on this kind of machine (a VM whose disk
    // latency moves from second to second) a slow moment only ever adds
    // time, and alternating gives both sides the same moments.
    let (mut ceiling, mut best) = (0.0_f64, Best::default());
    for round in 0..ROUNDS {
        ceiling = ceiling.max(sqlite_ceiling(&dir.path().join(format!("raw{round}.db")), entities).await?);
        let store = SqliteStore::open(dir.path().join(format!("batched{round}.db"))).await?;
        best.keep(batched(&store, entities).await?);
        store.close().await;
    }
    Ok(results("sqlite", 5.0, entities.len(), (naive, ceiling), &best))
}

/// The honest ceiling on SQLite: the same rows into the same table, with
/// the same indexes, by the fastest plain means: one multi-row INSERT per
/// chunk, all in one transaction, on a fresh store's own writer connection.
async fn sqlite_ceiling(path: &std::path::Path, entities: &[NewEntity]) -> Result<f64> {
    let raw_store = SqliteStore::open(path).await?;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let started = Instant::now();
    let mut tx = raw_store.pool().begin().await?;
    for (number, chunk) in entities.chunks(CEILING_CHUNK).enumerate() {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO entities (entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision) ",
        );
        insert.push_values(chunk.iter().enumerate(), |mut row, (i, e)| {
            row.push_bind(&e.entity_type)
                .push_bind(&e.id)
                .push_bind(&e.content)
                .push_bind(e.metadata.to_string())
                .push_bind(hash_of(e))
                .push_bind(&now)
                .push_bind(&now)
                .push_bind(1_i64)
                .push_bind((number * CEILING_CHUNK + i + 1) as i64);
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let ceiling = entities.len() as f64 / started.elapsed().as_secs_f64();
    raw_store.close().await;
    Ok(ceiling)
}

/// Rounds of the ceiling and of `batch_upsert` in each repetition of the
/// suite; each side's best round is its figure.
const ROUNDS: usize = 3;

/// The best of `batched`'s figures over rounds.
#[derive(Default)]
struct Best {
    /// batch_upsert, rows/s.
    batched: f64,
    /// batch_upsert followed by the bulk search-index refresh, rows/s.
    batched_indexed: f64,
    statements_per_1000: f64,
}

impl Best {
    fn keep(&mut self, (batched, batched_indexed, statements_per_1000): (f64, f64, f64)) {
        self.batched = self.batched.max(batched);
        self.batched_indexed = self.batched_indexed.max(batched_indexed);
        // The same every round: the statements a batch takes do not depend on timing.
        self.statements_per_1000 = statements_per_1000;
    }
}

async fn postgres(url: &str, entities: &[NewEntity]) -> Result<Vec<BenchResult>> {
    let (mut naive, mut ceiling, mut best) = (0.0, 0.0_f64, Best::default());
    // The naive loop once, then the ceiling and ours alternating as on SQLite.
    let phases = std::iter::once("naive").chain(std::iter::repeat_n(["raw", "batched"], ROUNDS).flatten());
    for phase in phases {
        let scratch = crate::scratch::ScratchPg::create(url, &format!("bench_{phase}")).await?;
        let store = PgStore::connect(&scratch.url).await?;
        match phase {
            "naive" => naive = pg_naive(&store, entities).await?,
            "raw" => ceiling = ceiling.max(pg_copy(&store, entities).await?),
            _ => best.keep(batched(&store, entities).await?),
        }
        store.pool().close().await;
        scratch.drop_database().await?;
    }
    Ok(results("postgres", 60.0, entities.len(), (naive, ceiling), &best))
}

async fn pg_naive(store: &PgStore, entities: &[NewEntity]) -> Result<f64> {
    let started = Instant::now();
    let mut conn = store.pool().acquire().await?;
    for e in entities {
        let hash = hash_of(e);
        let exists: Option<i64> = sqlx::query_scalar("SELECT version FROM entities WHERE entity_type = $1 AND id = $2")
            .bind(&e.entity_type)
            .bind(&e.id)
            .fetch_optional(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO entities (entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision)
             VALUES ($1, $2, $3, $4::json, $5, now(), now(), $6, nextval('entity_revision'))
             ON CONFLICT (entity_type, id) DO UPDATE SET content = EXCLUDED.content, metadata = EXCLUDED.metadata,
               content_hash = EXCLUDED.content_hash, updated_at = EXCLUDED.updated_at,
               version = entities.version + 1, revision = EXCLUDED.revision",
        )
        .bind(&e.entity_type)
        .bind(&e.id)
        .bind(&e.content)
        .bind(e.metadata.to_string())
        .bind(hash)
        .bind(exists.map_or(1, |v| v + 1))
        .execute(&mut *conn)
        .await?;
    }
    Ok(entities.len() as f64 / started.elapsed().as_secs_f64())
}

/// The honest ceiling on PostgreSQL: `COPY` of the same rows into the same
/// `entities` table, with its indexes, in one statement.
async fn pg_copy(store: &PgStore, entities: &[NewEntity]) -> Result<f64> {
    let mut conn = store.pool().acquire().await?;
    let now = chrono::Utc::now().to_rfc3339();
    let started = Instant::now();
    let mut csv = String::with_capacity(entities.len() * 2200);
    for (i, e) in entities.iter().enumerate() {
        let revision = (i + 1).to_string();
        let fields = [
            e.entity_type.as_str(),
            e.id.as_str(),
            e.content.as_str(),
            &e.metadata.to_string(),
            &hash_of(e),
            &now,
            &now,
            "1",
            &revision,
        ];
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                csv.push(',');
            }
            csv.push('"');
            csv.push_str(&field.replace('"', "\"\""));
            csv.push('"');
        }
        csv.push('\n');
    }
    let mut copy = conn
        .copy_in_raw(
            "COPY entities (entity_type, id, content, metadata, content_hash, created_at, updated_at, version, revision)
             FROM STDIN (FORMAT csv)",
        )
        .await?;
    copy.send(csv.as_bytes()).await?;
    copy.finish().await?;
    Ok(entities.len() as f64 / started.elapsed().as_secs_f64())
}

/// Rows per multi-row INSERT of the SQLite ceiling (9 values each, under
/// SQLite's 32,766 bound parameters).
const CEILING_CHUNK: usize = 1000;

/// What the ceilings are called in the results.
const CEILING: &str = "the same rows, table and indexes: COPY / multi-row INSERT";

/// The content hash `batch_upsert` computes, for the loops that write rows
/// themselves (the naive ones and the ceilings), so all write the same rows.
fn hash_of(e: &NewEntity) -> String {
    content_hash(e.metadata.as_object().unwrap_or(&serde_json::Map::new()), &e.content, None)
}
