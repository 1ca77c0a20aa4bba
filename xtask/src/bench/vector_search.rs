//! Part of suite `tools`: vector search over 100,000 documents (10,000
//! with `--quick`). The documents are the paragraphs of the real corpus
//! (`BENCH_CORPUS`, else the shared windows-powershell-docs; paragraphs of
//! 40 bytes or more), one vector each from the default embedder, written
//! straight into the vector table; the queries are the first eight words of
//! the 200 paragraphs after them.
//!
//! - p50 of one `VectorIndex::nearest` (k = 10) through the backend's own
//!   search, after a first query that loads its in-memory copy; the
//!   baseline is an exact `f32` scan of the same vectors in memory;
//! - recall@10 against that exact scan (the share of its top 10 found);
//! - the first query's time (it reads the table into memory).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use embedding::{ChunkVector, EntityVectors, HashingEmbedder, PgVectors, SqliteVectors, VectorIndex};
use entity_store::EntityKey;

use super::{BenchResult, Direction, Measurement, Target};

const QUERIES: usize = 200;
const K: usize = 10;
const MODEL: &str = "bench-hashing";

/// Paragraphs of at least 40 bytes from the corpus's markdown, in path
/// order. The corpus repeats itself (reference pages share their
/// boilerplate): about a third are distinct, and equal texts tie.
fn paragraphs(root: &Path, wanted: usize) -> Result<Vec<String>> {
    let mut files: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "md"))
        .map(walkdir::DirEntry::into_path)
        .collect();
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for paragraph in text.split("\n\n").map(str::trim).filter(|p| p.len() >= 40) {
            found.push(paragraph.to_owned());
            if found.len() == wanted {
                return Ok(found);
            }
        }
    }
    Ok(found)
}

/// The exact top `k` (index, score) of `query` among `vectors`, best first.
fn exact_top(vectors: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> =
        vectors.iter().enumerate().map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum(), i)).collect();
    let k = k.min(scored.len());
    scored.select_nth_unstable_by(k.saturating_sub(1), |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

pub(super) async fn run(backend: &str, index: Arc<dyn VectorIndex>, quick: bool) -> Result<Vec<BenchResult>> {
    let root = super::vault::corpus_root();
    let documents = if quick { 10_000 } else { 100_000 };
    if !root.is_dir() {
        eprintln!("tools: vector search SKIPPED (no corpus at {}; set BENCH_CORPUS)", root.display());
        return Ok(Vec::new());
    }
    let texts = paragraphs(&root, documents + QUERIES)?;
    ensure!(
        texts.len() == documents + QUERIES,
        "the corpus has {} paragraphs, {} wanted",
        texts.len(),
        documents + QUERIES
    );
    let embedder = HashingEmbedder::default();
    let vectors: Vec<Vec<f32>> = texts[..documents].iter().map(|t| embedder.embed(t)).collect();
    let queries: Vec<Vec<f32>> = texts[documents..]
        .iter()
        .map(|t| embedder.embed(&t.split_whitespace().take(8).collect::<Vec<_>>().join(" ")))
        .collect();

    for (chunk, batch) in vectors.chunks(2_000).enumerate() {
        let entities: Vec<EntityVectors> = batch
            .iter()
            .enumerate()
            .map(|(i, vector)| EntityVectors {
                key: EntityKey::new("doc", format!("{:06}", chunk * 2_000 + i)),
                content_hash: String::new(),
                text_hash: None,
                chunks: vec![ChunkVector { chunk: 0, span: 0..1, vector: vector.clone() }],
            })
            .collect();
        index.replace(MODEL, &entities).await?;
    }

    let started = Instant::now();
    index.nearest(MODEL, &queries[0], K).await?;
    let first = started.elapsed().as_secs_f64() * 1000.0;
    let (mut ours, mut exact_times, mut found, mut wanted) = (Vec::new(), Vec::new(), 0usize, 0usize);
    for query in &queries {
        let started = Instant::now();
        let hits = index.nearest(MODEL, query, K).await?;
        ours.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        let truth = exact_top(&vectors, query, K);
        exact_times.push(started.elapsed().as_secs_f64() * 1000.0);
        let truth: std::collections::HashSet<String> = truth.iter().map(|i| format!("{i:06}")).collect();
        found += hits.iter().filter(|hit| truth.contains(&hit.key.id)).count();
        wanted += truth.len();
    }
    let p50 = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let recall = found as f64 / wanted.max(1) as f64;
    let settings = format!(
        "{documents} corpus paragraphs, one {}-dimension vector each, {QUERIES} queries, k = {K}",
        vectors[0].len()
    );
    Ok(vec![
        Measurement {
            suite: "tools",
            name: &format!("{backend} vector query p50"),
            unit: "ms",
            value: p50(&mut ours),
            baseline: Some(("exact f32 scan in memory", p50(&mut exact_times))),
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(20.0),
            settings: settings.clone(),
        }
        .finish(),
        Measurement {
            suite: "tools",
            name: &format!("{backend} vector recall@10"),
            unit: "",
            value: recall,
            baseline: None,
            direction: Direction::HigherIsBetter,
            target: Target::ValueAtLeast(0.95),
            settings: format!("{settings}; against the exact f32 scan"),
        }
        .finish(),
        Measurement {
            suite: "tools",
            name: &format!("{backend} vector first query"),
            unit: "ms",
            value: first,
            baseline: None,
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(if quick { 2_000.0 } else { 10_000.0 }),
            settings: format!("{settings}; reads the table into memory"),
        }
        .finish(),
    ])
}

/// The SQLite vector table in a new file inside `dir`.
pub(super) async fn sqlite(dir: &Path) -> Result<Arc<dyn VectorIndex>> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("vectors.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool = sqlx::SqlitePool::connect_with(options).await?;
    Ok(Arc::new(SqliteVectors::new(pool).await?))
}

/// The PostgreSQL vector table in the database at `url`.
pub(super) async fn postgres(url: &str) -> Result<Arc<dyn VectorIndex>> {
    Ok(Arc::new(PgVectors::new(sqlx::PgPool::connect(url).await?).await?))
}
