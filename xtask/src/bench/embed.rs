//! Suite `embed`: embedding 1,000 notes with the hashing embedder, the batch
//! job against a per-document pipeline (one get, one embed call and one
//! write per entity). The hashing embedder is nearly free, so this measures
//! the pipeline around the model. With `--features local-model`, 200 short
//! notes through the real model: the job's time against the bare model's.
//! Then every note's metadata changes and the job runs again: it must embed
//! nothing (vectors follow the text they embed).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use embedding::{
    ChunkVector, EmbedHandler, EmbedInput, EmbedItem, EmbedSettings, Embedder, EntityVectors, HashingEmbedder,
    PgVectors, SqliteVectors, VectorIndex, chunk_spans, estimate_tokens,
};
use entity_store::{EntityKey, EntityStore, NewEntity, PgStore, SqliteStore, UpsertOptions};
use job_queue::{JobContext, JobHandler};

use super::{BenchResult, Direction, Measurement, Target};

pub fn run(quick: bool) -> Result<Vec<BenchResult>> {
    let mut results = run_hashing(quick)?;
    results.extend(run_local_model(quick)?);
    Ok(results)
}

fn run_hashing(quick: bool) -> Result<Vec<BenchResult>> {
    let count = if quick { 300 } else { 1_000 };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("embed.db");
        let store = SqliteStore::open(&path).await?;
        let vectors =
            SqliteVectors::new(sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await?).await?;
        let mut results = measure("sqlite", Arc::new(store), Arc::new(vectors), count).await?;
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let pg = crate::scratch::with_scratch_pg(&url, "bench_embed", |db_url| async move {
                let store = PgStore::connect(&db_url).await?;
                let vectors = PgVectors::new(sqlx::PgPool::connect(&db_url).await?).await?;
                let outcome = measure("postgres", Arc::new(store.clone()), Arc::new(vectors), count).await;
                store.pool().close().await;
                outcome
            });
            results.extend(pg.await?);
        } else {
            eprintln!("embed: PostgreSQL part SKIPPED (no DATABASE_URL)");
        }
        Ok(results)
    })
}

async fn measure(
    backend: &str,
    store: Arc<dyn EntityStore>,
    vectors: Arc<dyn VectorIndex>,
    count: usize,
) -> Result<Vec<BenchResult>> {
    let notes: Vec<NewEntity> = (0..count)
        .map(|i| {
            let body = format!("Note {i} on topic {}. ", i % 37).repeat(40 + i % 60);
            NewEntity::new("note", format!("embed/{i:05}"), body)
        })
        .collect();
    store.batch_upsert(notes.clone(), &UpsertOptions::default()).await?;
    let keys: Vec<EntityKey> = notes.iter().map(NewEntity::key).collect();
    let tokens: usize = notes.iter().map(|n| estimate_tokens(&n.content)).sum();
    let embedder = Arc::new(HashingEmbedder::default());
    let settings = EmbedSettings::default();

    let started = Instant::now();
    for key in &keys {
        let Some(entity) = store.get(key).await? else { continue };
        let spans = chunk_spans(&entity.content, settings.chunk_tokens, settings.overlap_tokens);
        let texts: Vec<String> = spans.iter().map(|s| entity.content[s.clone()].to_owned()).collect();
        let embedded = embedder.embed_batch(&texts).await?;
        let chunks = spans
            .into_iter()
            .zip(embedded)
            .enumerate()
            .map(|(chunk, (span, vector))| ChunkVector { chunk: chunk as u32, span, vector })
            .collect();
        let one =
            EntityVectors { key: key.clone(), content_hash: entity.content_hash.clone(), text_hash: None, chunks };
        vectors.replace(embedder.model_id(), &[one]).await?;
    }
    let pipeline = count as f64 / started.elapsed().as_secs_f64();
    vectors.remove(&keys).await?;

    let handler = EmbedHandler { store: store.clone(), vectors: vectors.clone(), embedder, settings };
    let elapsed = time_job(&handler, store.as_ref(), &keys).await?;
    let job = count as f64 / elapsed;

    // Every note's metadata changes, its text does not: the job over the
    // new hashes must embed nothing.
    let retagged: Vec<NewEntity> =
        notes.into_iter().map(|n| n.with_metadata(serde_json::json!({"status": "reviewed"}))).collect();
    store.batch_upsert(retagged, &UpsertOptions::default()).await?;
    let found = store.batch_get(&keys).await?;
    let items: Vec<EmbedItem> =
        keys.iter().map(|k| EmbedItem { key: k.clone(), content_hash: found[k].content_hash.clone() }).collect();
    let started = Instant::now();
    let output = handler.process(EmbedInput { items }, context()).await.map_err(|e| anyhow::anyhow!(e))?;
    let metadata_only = started.elapsed().as_secs_f64();
    Ok(vec![
        Measurement {
            suite: "embed",
            name: &format!("{backend} texts embedded after a metadata-only change"),
            unit: "texts",
            value: output.embedded as f64,
            baseline: None,
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(0.0),
            settings: format!(
                "{count} embedded notes, every one's metadata changed; the job over their new hashes took {:.0} ms ({} skipped) against {:.0} ms to embed them",
                metadata_only * 1000.0,
                output.skipped,
                elapsed * 1000.0
            ),
        }
        .finish(),
        Measurement {
            suite: "embed",
            name: &format!("{backend} embed job, hashing embedder"),
            unit: "texts/s",
            value: job,
            baseline: Some(("get+embed+write per document", pipeline)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(5.0),
            settings: format!(
                "{count} notes, {:.0} tokens/s in the job ({tokens} estimated tokens), chunks of 200 tokens",
                tokens as f64 / elapsed
            ),
        }
        .finish(),
    ])
}

fn context() -> JobContext {
    JobContext::standalone()
}

/// Seconds the `embed` job takes over `keys` (their current hashes); every one must be embedded.
async fn time_job(handler: &EmbedHandler, store: &dyn EntityStore, keys: &[EntityKey]) -> Result<f64> {
    let found = store.batch_get(keys).await?;
    let items: Vec<EmbedItem> =
        keys.iter().map(|k| EmbedItem { key: k.clone(), content_hash: found[k].content_hash.clone() }).collect();
    let started = Instant::now();
    let output = handler.process(EmbedInput { items }, context()).await.map_err(|e| anyhow::anyhow!(e))?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(output.embedded == keys.len(), "job embedded {} of {}", output.embedded, keys.len());
    Ok(elapsed)
}

/// The job against the bare model on the same chunks: what the pipeline
/// (reads, chunking, token counts, batching, writes) adds to the model's time.
#[cfg(feature = "local-model")]
fn run_local_model(quick: bool) -> Result<Vec<BenchResult>> {
    use local_embedder::LocalEmbedder;

    let count = if quick { 60 } else { 200 };
    let dir = std::env::var_os("EMBEDDING_MODEL_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(LocalEmbedder::DEFAULT_DIR),
        std::path::PathBuf::from,
    );
    let model = Arc::new(LocalEmbedder::load(&dir)?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let folder = tempfile::tempdir()?;
        let path = folder.path().join("embed.db");
        let store: Arc<dyn EntityStore> = Arc::new(SqliteStore::open(&path).await?);
        let vectors: Arc<dyn VectorIndex> = Arc::new(
            SqliteVectors::new(sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await?).await?,
        );
        let words = ["meeting", "notes", "about", "the", "garden", "budget", "for", "spring", "and", "roadmap"];
        let notes: Vec<NewEntity> = (0..count)
            .map(|i| {
                let body: Vec<&str> = (0..20 + (i * 7) % 130).map(|w| words[(w * 3 + i) % words.len()]).collect();
                NewEntity::new("note", format!("local/{i:04}"), format!("# Note {i}\n\n{}.", body.join(" ")))
            })
            .collect();
        store.batch_upsert(notes.clone(), &UpsertOptions::default()).await?;
        let settings = EmbedSettings::default();

        // The bare model: every chunk, shortest first, 32 per call.
        let mut texts: Vec<String> = notes
            .iter()
            .flat_map(|n| {
                chunk_spans(&n.content, settings.chunk_tokens, settings.overlap_tokens)
                    .into_iter()
                    .map(|span| n.content[span].to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        texts.sort_by_key(String::len);
        let tokens: usize = texts.iter().map(|t| model.count_tokens(t)).sum();
        model.embed_batch(&texts[..1]).await?; // warm-up, so neither side pays first-call costs
        let started = Instant::now();
        for batch in texts.chunks(32) {
            model.embed_batch(batch).await?;
        }
        let bare = started.elapsed().as_secs_f64();

        let keys: Vec<EntityKey> = notes.iter().map(NewEntity::key).collect();
        let handler = EmbedHandler { store: store.clone(), vectors, embedder: model, settings };
        let job = time_job(&handler, store.as_ref(), &keys).await?;
        Ok(vec![
            Measurement {
                suite: "embed",
                name: "sqlite embed job, local all-MiniLM-L6-v2",
                unit: "s",
                value: job,
                baseline: Some(("bare model on the same chunks", bare)),
                direction: Direction::LowerIsBetter,
                // The target is job / bare <= 1.10; the ratio printed is bare / job.
                target: Target::RatioAtLeast(1.0 / 1.10),
                settings: format!(
                    "{count} notes, {} chunks, {:.0} texts/s and {:.0} tokens/s in the job, {:.0} texts/s bare",
                    texts.len(),
                    texts.len() as f64 / job,
                    tokens as f64 / job,
                    texts.len() as f64 / bare
                ),
            }
            .finish(),
        ])
    })
}

#[cfg(not(feature = "local-model"))]
#[allow(clippy::unnecessary_wraps)] // the same signature as with the feature
fn run_local_model(_quick: bool) -> Result<Vec<BenchResult>> {
    eprintln!(
        "embed: local-model part SKIPPED (build xtask with `--features local-model` and run `cargo xtask fetch-model`)"
    );
    Ok(Vec::new())
}
