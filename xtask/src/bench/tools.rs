//! Suite `tools`: the batch tools against their one-item way, each on a
//! fresh database: `batch_add` of 5,000 documents in one call versus 5,000
//! one-document calls (same settings: atomic, embedding queued), and
//! `batch_search` of 100 hybrid queries with `max_parallel` 8 versus the
//! same queries one call each. Without `--quick`, also the peak RSS of a
//! `batch_import` of 50,000 documents against one of 5,000 (JSON Lines),
//! each in a process of its own: streaming keeps memory flat. Vector search
//! over 100,000 real paragraphs: see `vector_search.rs`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, ensure};
use batch_tools::{AddArgs, BatchTools, Call, SearchArgs};
use directory_sync::Database;
use embedding::{EMBED_JOB, HashingEmbedder};
use serde_json::{Value, json};

use super::{BenchResult, Direction, Measurement, Target, vector_search};

pub fn run(quick: bool) -> Result<Vec<BenchResult>> {
    let (documents, queries) = if quick { (1_000, 20) } else { (5_000, 100) };
    let memory = if quick { Vec::new() } else { import_memory(5_000)? };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        let mut results = measure("sqlite", [&url("one.db"), &url("batch.db")], documents, queries).await?;
        results.extend(vector_search::run("sqlite", vector_search::sqlite(dir.path()).await?, quick).await?);
        match std::env::var("DATABASE_URL") {
            Ok(server) => {
                let one = crate::scratch::ScratchPg::create(&server, "bench_tools_one").await?;
                let batch = crate::scratch::ScratchPg::create(&server, "bench_tools_batch").await?;
                let outcome = measure("postgres", [&one.url, &batch.url], documents, queries).await;
                one.drop_database().await?;
                batch.drop_database().await?;
                results.extend(outcome?);
                let vectors = crate::scratch::ScratchPg::create(&server, "bench_tools_vectors").await?;
                let outcome = match vector_search::postgres(&vectors.url).await {
                    Ok(index) => vector_search::run("postgres", index, quick).await,
                    Err(error) => Err(error),
                };
                vectors.drop_database().await?;
                results.extend(outcome?);
            }
            Err(_) => eprintln!("tools: PostgreSQL part SKIPPED (no DATABASE_URL)"),
        }
        anyhow::Ok(results)
    })?;
    results.extend(memory);
    Ok(results)
}

/// Peak RSS of importing `count` documents against ten times as many, each
/// file imported into a fresh SQLite database by a process of its own.
fn import_memory(count: usize) -> Result<Vec<BenchResult>> {
    let dir = tempfile::tempdir()?;
    let mut peaks = Vec::new();
    for (name, documents) in [("small", count), ("large", count * 10)] {
        let file = dir.path().join(format!("{name}.jsonl"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for i in 0..documents {
            let mut line = document(i);
            line["collection"] = json!("document");
            serde_json::to_writer(&mut out, &line)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        std::io::Write::flush(&mut out)?;
        drop(out);
        let database = format!("sqlite://{}", dir.path().join(format!("{name}.db")).display());
        let output = std::process::Command::new(std::env::current_exe()?)
            .arg("import-child")
            .arg(&file)
            .arg(&database)
            .output()?;
        ensure!(output.status.success(), "import-child failed: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout)?;
        ensure!(report["processed"] == documents, "import-child imported {report}");
        peaks.push(report["peak_rss_kb"].as_f64().unwrap_or(f64::NAN) / 1024.0);
    }
    Ok(vec![
        Measurement {
            suite: "tools",
            name: &format!("sqlite batch_import peak RSS, {}k vs {}k docs", count * 10 / 1000, count / 1000),
            unit: "MiB",
            value: peaks[1],
            baseline: Some((&format!("{}k documents", count / 1000), peaks[0])),
            direction: Direction::LowerIsBetter,
            // Memory must not grow with the file: large / small <= 1.3 (the ratio printed is small / large).
            target: Target::RatioAtLeast(1.0 / 1.3),
            settings: "JSON Lines of ~1 KB documents, checked then imported in pages of 500, VmHWM".into(),
        }
        .finish(),
    ])
}

/// The child side of [`import_memory`]: `batch_import` of `file` into
/// `database`; prints what it did, the seconds and its peak RSS.
pub fn import_child(file: &std::path::Path, database: &str) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let folder = file.parent().ok_or_else(|| anyhow::anyhow!("{} has no folder", file.display()))?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (output, seconds) = runtime.block_on(async {
        let db = Database::open(database).await?;
        let tools =
            db.batch_tools(Some(Arc::new(HashingEmbedder::default())), batch_tools::FilesRoot::new(folder)?).await?;
        let args = serde_json::from_value(json!({"path": name, "generate_embeddings": false}))?;
        let started = Instant::now();
        let output = tools.batch_import(args, &Call::default()).await?;
        anyhow::Ok((output, started.elapsed().as_secs_f64()))
    })?;
    let mut report = serde_json::to_value(&output)?;
    report["seconds"] = seconds.into();
    report["peak_rss_kb"] = super::sync::peak_rss_kb()?.into();
    println!("{report}");
    Ok(())
}

async fn tools_on(url: &str) -> Result<(Database, BatchTools)> {
    let db = Database::open(url).await?;
    let tools = db
        .batch_tools(Some(Arc::new(HashingEmbedder::default())), batch_tools::FilesRoot::new(&std::env::temp_dir())?)
        .await?;
    Ok((db, tools))
}

fn document(i: usize) -> Value {
    json!({
        "id": format!("doc-{i:05}"),
        "content": format!("Document {i} about topic {} and theme {}. {}", i % 37, i % 11, "Some body text. ".repeat(60)),
        "metadata": {"topic": i % 37, "source": "bench"},
    })
}

async fn measure(backend: &str, urls: [&str; 2], documents: usize, queries: usize) -> Result<Vec<BenchResult>> {
    let call = Call::default();
    let (_one_db, one_by_one) = tools_on(urls[0]).await?;
    let started = Instant::now();
    for i in 0..documents {
        let args: AddArgs = serde_json::from_value(json!({ "documents": [document(i)] }))?;
        let out = one_by_one.batch_add(args, &call).await?;
        ensure!(out.processed == 1, "single add {i}: {:?}", out.errors);
    }
    let single_rate = documents as f64 / started.elapsed().as_secs_f64();

    let (db, tools) = tools_on(urls[1]).await?;
    let all: Vec<Value> = (0..documents).map(document).collect();
    let args: AddArgs = serde_json::from_value(json!({ "documents": all }))?;
    let started = Instant::now();
    let out = tools.batch_add(args, &call).await?;
    let batch_rate = documents as f64 / started.elapsed().as_secs_f64();
    ensure!(out.processed == documents, "batch add: {} of {documents}, {:?}", out.processed, out.errors.first());

    // Embed everything so vector search has something to rank.
    let handler = db.embed_handler(Arc::new(HashingEmbedder::default())).await?;
    let stop = batch_core::CancellationToken::new();
    let registry = job_queue::Registry::new().with(EMBED_JOB, handler);
    let worker = tokio::spawn(db.queue.worker(registry, job_queue::WorkerConfig::default()).run(stop.clone()));
    for id in &out.embedding_jobs {
        db.queue.wait(id.parse()?, std::time::Duration::from_secs(600)).await?;
    }
    stop.cancel();
    worker.await??;

    let query_list: Vec<Value> = (0..queries)
        .map(|i| json!({"query": format!("topic {} theme {}", i % 37, i % 11), "search_type": "hybrid", "limit": 10}))
        .collect();
    let started = Instant::now();
    for query in &query_list {
        let args: SearchArgs = serde_json::from_value(json!({ "queries": [query], "max_parallel": 1 }))?;
        let out = tools.batch_search(args, &call).await?;
        ensure!(out.errors.is_empty(), "single search: {:?}", out.errors);
    }
    let sequential_rate = queries as f64 / started.elapsed().as_secs_f64();
    let args: SearchArgs = serde_json::from_value(json!({ "queries": query_list, "max_parallel": 8 }))?;
    let started = Instant::now();
    let out = tools.batch_search(args, &call).await?;
    let parallel_rate = queries as f64 / started.elapsed().as_secs_f64();
    ensure!(out.processed == queries, "batch search: {:?}", out.errors.first());

    Ok(vec![
        Measurement {
            suite: "tools",
            name: &format!("{backend} batch_add vs one per call"),
            unit: "docs/s",
            value: batch_rate,
            baseline: Some(("one-document batch_add calls", single_rate)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(20.0),
            settings: format!("{documents} documents of ~1 KB, atomic, embedding jobs queued (not run)"),
        }
        .finish(),
        Measurement {
            suite: "tools",
            name: &format!("{backend} batch_search, 8 in parallel"),
            unit: "queries/s",
            value: parallel_rate,
            baseline: Some(("one query per call", sequential_rate)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(2.0),
            settings: format!("{queries} hybrid queries, limit 10, over {documents} embedded documents"),
        }
        .finish(),
    ])
}
