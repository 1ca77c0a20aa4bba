//! Time to searchable on a real vault (issue 23, goal 3): the first
//! `directory-sync sync` of `../shared/corpora/windows-powershell-docs` (real
//! documents, CC BY 4.0, see its NOTICE; read from there, copied only into a
//! temporary folder because a sync writes its state beside the notes), until
//! a text search and a hybrid search (the `search` default) answer, against a floor
//! measured in the same run: read every file, parse its frontmatter, insert
//! the rows in one transaction into a table with no index. Both start from
//! a cold page cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use super::{BenchResult, Direction, Measurement, Target};

/// The corpus: `BENCH_CORPUS`, else the shared one beside the workspace.
pub(super) fn corpus_root() -> PathBuf {
    std::env::var_os("BENCH_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/windows-powershell-docs"),
        PathBuf::from,
    )
}

/// Copies the corpus's markdown files into `into`; returns their paths there.
fn copy_corpus(root: &Path, into: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry?;
        let relative = entry.path().strip_prefix(root)?;
        if entry.file_type().is_file() && relative.extension().is_some_and(|e| e == "md") {
            let target = into.join(relative);
            std::fs::create_dir_all(target.parent().unwrap_or(into))?;
            std::fs::copy(entry.path(), &target).with_context(|| format!("copying {}", entry.path().display()))?;
            paths.push(target);
        }
    }
    Ok(paths)
}

pub fn run() -> Result<Vec<BenchResult>> {
    let root = corpus_root();
    if !root.is_dir() {
        eprintln!("sync: real-vault part SKIPPED (no corpus at {}; set BENCH_CORPUS)", root.display());
        return Ok(Vec::new());
    }
    let binary = crate::scenario::workspace_binary("directory-sync", "directory-sync")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = Vec::new();
    let scratch = tempfile::tempdir()?;
    let sqlite = |name: &str| format!("sqlite://{}", scratch.path().join(name).display());
    results.extend(measure(&runtime, &binary, &root, "sqlite", 2.5, &sqlite("floor.db"), &sqlite("vault.db"))?);
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let floor = runtime.block_on(crate::scratch::ScratchPg::create(&url, "bench_vault_floor"))?;
            let ours = runtime.block_on(crate::scratch::ScratchPg::create(&url, "bench_vault"))?;
            let outcome = measure(&runtime, &binary, &root, "postgres", 3.0, &floor.url, &ours.url);
            runtime.block_on(floor.drop_database())?;
            runtime.block_on(ours.drop_database())?;
            results.extend(outcome?);
        }
        Err(_) => eprintln!("sync: real-vault PostgreSQL part SKIPPED (no DATABASE_URL)"),
    }
    Ok(results)
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    root: &Path,
    backend: &str,
    most_times_floor: f64,
    floor_url: &str,
    url: &str,
) -> Result<Vec<BenchResult>> {
    let folder = tempfile::tempdir()?;
    let paths = copy_corpus(root, folder.path())?;
    let bytes: u64 = paths.iter().map(|p| std::fs::metadata(p).map(|m| m.len())).sum::<std::io::Result<u64>>()?;

    super::core::drop_from_cache(&paths)?;
    let started = Instant::now();
    let rows = runtime.block_on(floor(&paths, floor_url))?;
    let floor_seconds = started.elapsed().as_secs_f64();
    ensure!(rows == paths.len(), "the floor inserted {rows} of {} rows", paths.len());

    super::core::drop_from_cache(&paths)?;
    let started = Instant::now();
    let sync = Command::new(binary).args(["--json", "--database", url, "sync"]).arg(folder.path()).output()?;
    ensure!(sync.status.success(), "sync failed: {}", String::from_utf8_lossy(&sync.stderr));
    // With default settings a folder keeps no vectors (see
    // `directory_sync::EmbedderSetting`): hybrid search is text search then.
    for (mode, query) in [("text", "DNS server zone"), ("hybrid", "configure the DNS server")] {
        let search = Command::new(binary)
            .args(["--json", "--database", url, "search", "--path"])
            .arg(folder.path())
            .args(["--mode", mode, query])
            .output()?;
        ensure!(search.status.success(), "{mode} search failed: {}", String::from_utf8_lossy(&search.stderr));
        let text = String::from_utf8_lossy(&search.stdout);
        ensure!(text.contains("DnsServer"), "the {mode} search found nothing about DNS servers: {text}");
    }
    let seconds = started.elapsed().as_secs_f64();
    let files = paths.len() as f64;
    let mut results = Vec::new();
    if let Some(file) = url.strip_prefix("sqlite://") {
        results.push(database_size(Path::new(file), bytes)?);
    }
    results.push(Measurement {
        suite: "sync",
        name: &format!("{backend} real vault, time to searchable vs floor"),
        unit: "files/s",
        value: files / seconds,
        baseline: Some(("read, parse frontmatter, insert unindexed", files / floor_seconds)),
        direction: Direction::HigherIsBetter,
        // The target is ours / floor <= most_times_floor in time.
        target: Target::RatioAtLeast(1.0 / most_times_floor),
        settings: format!(
            "windows-powershell-docs: {} files, {:.1} MB; first `directory-sync sync` (default settings: no vectors) then one text and one hybrid search, {seconds:.1} s; floor {floor_seconds:.1} s; cold page cache",
            paths.len(),
            bytes as f64 / 1e6
        ),
    }
    .finish());
    Ok(results)
}

/// The SQLite database a first sync left (its WAL included, which a
/// command must have folded in and removed) against the markdown it holds.
fn database_size(file: &Path, markdown: u64) -> Result<BenchResult> {
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    let wal = size(&file.with_extension("db-wal"));
    let total = size(file) + wal;
    ensure!(total > 0, "no database at {}", file.display());
    Ok(Measurement {
        suite: "sync",
        name: "sqlite real vault, database size",
        unit: "MB",
        value: total as f64 / 1e6,
        baseline: Some(("its markdown", markdown as f64 / 1e6)),
        direction: Direction::LowerIsBetter,
        // At most twice the markdown: baseline / value >= 0.5.
        target: Target::RatioAtLeast(0.5),
        settings: format!(
            "store.db after the first `directory-sync sync` with default settings (no vectors); WAL left: {wal} bytes"
        ),
    }
    .finish())
}

/// Reads every file, parses its frontmatter (YAML between the leading `---`
/// lines; a document without one, or with one that does not parse, keeps
/// its text as content), and inserts the rows in one transaction into a
/// table with no index. Returns the rows inserted.
async fn floor(paths: &[PathBuf], url: &str) -> Result<usize> {
    let mut rows = Vec::with_capacity(paths.len());
    for path in paths {
        let text = String::from_utf8_lossy(&std::fs::read(path)?).into_owned();
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text).replace("\r\n", "\n");
        let (metadata, body) = match text.strip_prefix("---\n").and_then(|rest| rest.split_once("\n---\n")) {
            Some((yaml, body)) => match serde_yaml_ng::from_str::<serde_json::Value>(yaml) {
                Ok(value) => (value.to_string(), body.to_owned()),
                Err(_) => ("{}".to_owned(), text.clone()),
            },
            None => ("{}".to_owned(), text.clone()),
        };
        rows.push((path.display().to_string(), metadata, body));
    }
    // One body for both backends; a macro because sqlx's builder does not
    // abstract over the database without the `any` driver.
    macro_rules! insert_bare {
        ($pool:expr) => {{
            let pool = $pool;
            sqlx::query("CREATE TABLE bare (path TEXT, metadata TEXT, content TEXT)").execute(&pool).await?;
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(500) {
                let mut insert = sqlx::QueryBuilder::new("INSERT INTO bare (path, metadata, content) ");
                insert.push_values(chunk, |mut row, (path, metadata, body)| {
                    row.push_bind(path).push_bind(metadata).push_bind(body);
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            pool.close().await;
        }};
    }
    if url.starts_with("sqlite:") {
        insert_bare!(sqlx::SqlitePool::connect(&format!("{url}?mode=rwc")).await?);
    } else {
        insert_bare!(sqlx::PgPool::connect(url).await?);
    }
    Ok(rows.len())
}
