//! `cargo xtask demo`: the best runnable thing until `directory-sync` exists.
//! Reads a folder of markdown files with the batch-core blocking runner and
//! writes them to the entity store in one batch, twice, to show that an
//! unchanged re-import writes nothing. Frontmatter parsing arrives with
//! directory-sync; here a file's whole text is the entity's content.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use batch_core::{BatchRunner, ItemError, RunnerConfig};
use entity_store::{EntityStore, NewEntity, PgStore, SqliteStore, UpsertCounts, UpsertOptions};

/// Folders that are entity types in the example vault; others are part of ids.
const ENTITY_TYPES: &[&str] = &["person"];

pub fn run(folder: &Path, database: &Path) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store: Arc<dyn EntityStore> = if let Ok(url) = std::env::var("DATABASE_URL") {
            println!("store: PostgreSQL (DATABASE_URL)");
            Arc::new(PgStore::connect(&url).await?)
        } else {
            println!("store: SQLite at {}", database.display());
            if let Some(parent) = database.parent() {
                std::fs::create_dir_all(parent)?;
            }
            Arc::new(SqliteStore::open(database).await?)
        };
        let files = markdown_files(folder)?;
        println!("found {} markdown files in {}", files.len(), folder.display());
        let entities = read_entities(folder, files).await?;
        for pass in ["first import", "re-import"] {
            let before = store.statements();
            let report = store.batch_upsert(entities.clone(), &UpsertOptions::default()).await?;
            println!(
                "{pass}: {} created, {} updated, {} unchanged, {} failed in {:.1} ms, {} statements",
                report.created(),
                report.updated(),
                report.unchanged(),
                report.failed.len(),
                report.duration.as_secs_f64() * 1000.0,
                store.statements() - before
            );
            for failure in &report.failed {
                println!("  failed {}: {}", failure.key, failure.reason);
            }
        }
        println!("entities in store: {}", store.count(None).await?);
        for hit in store.search_text("sync plan", 3).await? {
            println!("search \"sync plan\": {} (score {:.3})", hit.key, hit.score);
        }
        Ok(())
    })
}

fn markdown_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

async fn read_entities(folder: &Path, files: Vec<PathBuf>) -> Result<Vec<NewEntity>> {
    let root = folder.to_path_buf();
    let items: Vec<(String, PathBuf)> = files.into_iter().map(|p| (p.display().to_string(), p)).collect();
    let report = BatchRunner::new(RunnerConfig { max_parallel: 16, ..RunnerConfig::default() })
        .run_blocking(items, move |path: &PathBuf| {
            entity_for(&root, path).map_err(|e| ItemError::permanent(format!("{e:#}")))
        })
        .await;
    for failure in &report.failed {
        println!("  skipped {}: {}", failure.key, failure.reason);
    }
    Ok(report.succeeded.into_iter().map(|s| s.outcome).collect())
}

fn entity_for(root: &Path, path: &Path) -> Result<NewEntity> {
    let relative = path.strip_prefix(root)?.with_extension("");
    let relative = relative.to_str().context("file name is not UTF-8")?.replace('\\', "/");
    let (entity_type, id) = match relative.split_once('/') {
        Some((first, rest)) if ENTITY_TYPES.contains(&first) => (first.to_owned(), rest.to_owned()),
        _ => ("note".to_owned(), relative),
    };
    let content = std::fs::read_to_string(path).context("not UTF-8 text")?;
    Ok(NewEntity::new(entity_type, id, content))
}
