//! Suite `sync`: importing a generated folder of notes (~2 KB, frontmatter,
//! five types) with `directory-sync` against the naive per-file pipeline
//! (read, parse, `exists`, upsert one entity, one file at a time), each on a
//! fresh database and from a cold page cache; then a no-change re-sync,
//! which must read no file contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, ensure};
use batch_core::CancellationToken;
use directory_sync::{Database, DirectorySyncPlugin, SyncConfig, Syncer, codec, layout::Layout, no_progress};
use entity_store::{EntityStore, NewEntity, UpsertOptions};

use super::{BenchResult, Direction, Measurement, Target};

pub(crate) const TYPES: [&str; 4] = ["person", "project", "meeting", "task"];

pub fn run(quick: bool) -> Result<Vec<BenchResult>> {
    let count = if quick { 2_000 } else { 10_000 };
    let folder = tempfile::tempdir()?;
    let paths = generate(folder.path(), count)?;
    let mut memory = if quick { Vec::new() } else { peak_memory(folder.path(), &paths, count)? };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = runtime.block_on(async {
        let mut results = Vec::new();
        let scratch = tempfile::tempdir()?;
        let naive_url = format!("sqlite://{}", scratch.path().join("naive.db").display());
        let sync_url = format!("sqlite://{}", scratch.path().join("sync.db").display());
        results.extend(measure("sqlite", 5.0, folder.path(), &paths, &naive_url, &sync_url).await?);
        match std::env::var("DATABASE_URL") {
            Ok(url) => {
                let naive = crate::scratch::ScratchPg::create(&url, "bench_sync_naive").await?;
                let batched = crate::scratch::ScratchPg::create(&url, "bench_sync").await?;
                let outcome = measure("postgres", 60.0, folder.path(), &paths, &naive.url, &batched.url).await;
                naive.drop_database().await?;
                batched.drop_database().await?;
                results.extend(outcome?);
            }
            Err(_) => eprintln!("sync: PostgreSQL part SKIPPED (no DATABASE_URL)"),
        }
        results.append(&mut memory);
        anyhow::Ok(results)
    })?;
    // Full size only: the real vault is the same size at every setting.
    if !quick {
        results.extend(super::vault::run()?);
    }
    Ok(results)
}

/// Notes of ~2 KB with frontmatter: a fifth at the top level or in note
/// folders, the rest in four type folders. Backdated, as a folder that
/// has existed for a while is.
pub(crate) fn generate(root: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(count);
    let old = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..count {
        let path = root.join(note_path(i));
        std::fs::create_dir_all(path.parent().unwrap_or(root))?;
        std::fs::write(&path, note_text(i, ""))?;
        std::fs::File::options().write(true).open(&path)?.set_modified(old)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Where generated note `i` lives, relative to the folder.
pub(crate) fn note_path(i: usize) -> String {
    match i % 5 {
        0 => format!("Inbox/{:02}/Note {i}.md", i % 37),
        kind => format!("{}/item-{i:06}.md", TYPES[kind - 1]),
    }
}

/// Generated note `i`, with `edit` as its first paragraph. It ends with
/// [`NOTE_END`], so a file cut short shows.
pub(crate) fn note_text(i: usize, edit: &str) -> String {
    format!(
        "---\ntitle: Note {i}\ntags: [bench, t{}]\nstatus: open\n---\n# Note {i}\n\n{edit}{}\n{NOTE_END}",
        i % 11,
        "lorem ipsum dolor sit amet ".repeat(70)
    )
}

pub(crate) const NOTE_END: &str = "(end of note)\n";

/// The naive way: one file at a time, an existence check and a one-entity upsert each.
async fn naive(root: &Path, paths: &[PathBuf], store: &dyn EntityStore, layout: &Layout) -> Result<usize> {
    let mut written = 0;
    for path in paths {
        let relative = path.strip_prefix(root)?.to_string_lossy().into_owned();
        let key = layout.key_for(&relative)?;
        let bytes = std::fs::read(path)?;
        let doc = codec::parse(&bytes)?;
        let _exists = store.exists(std::slice::from_ref(&key)).await?;
        let entity =
            NewEntity::new(key.entity_type, key.id, doc.content).with_metadata(serde_json::Value::Object(doc.metadata));
        let report = store.batch_upsert(vec![entity], &UpsertOptions::default()).await?;
        written += report.succeeded.len();
    }
    Ok(written)
}

async fn measure(
    backend: &str,
    ratio_target: f64,
    root: &Path,
    paths: &[PathBuf],
    naive_url: &str,
    sync_url: &str,
) -> Result<Vec<BenchResult>> {
    let count = paths.len();
    let config = SyncConfig { entity_types: TYPES.map(str::to_owned).to_vec(), ..SyncConfig::new(root) };
    let layout = Layout::new("note", config.entity_types.clone());

    let naive_db = Database::open(naive_url).await?;
    super::core::drop_from_cache(paths)?;
    let started = Instant::now();
    let written = naive(root, paths, naive_db.store.as_ref(), &layout).await?;
    let naive_rate = count as f64 / started.elapsed().as_secs_f64();
    ensure!(written == count, "naive wrote {written} of {count}");

    let db = Database::open(sync_url).await?;
    let syncer = Syncer::new(config, db.store.clone(), db.state.clone(), None)?;
    let cancel = CancellationToken::new();
    super::core::drop_from_cache(paths)?;
    let statements = db.store.statements();
    let started = Instant::now();
    let import = syncer.import(no_progress(), &cancel).await?;
    let import_rate = count as f64 / started.elapsed().as_secs_f64();
    let per_1000 = (db.store.statements() - statements) as f64 / (count as f64 / 1000.0);
    ensure!(
        import.imported == count && import.failed.is_empty(),
        "import: {} of {count}, {:?}",
        import.imported,
        import.failed.first()
    );

    let started = Instant::now();
    let resync = syncer.import(no_progress(), &cancel).await?;
    let resync_rate = count as f64 / started.elapsed().as_secs_f64();
    ensure!(resync.files_read == 0 && resync.unchanged == count, "re-sync read {} files", resync.files_read);
    let _ = Arc::clone(&db.store);

    // Registering the plugin in a host: folder, state tables, handlers, the initial job; no scan.
    let plugin = DirectorySyncPlugin::new(
        SyncConfig { entity_types: TYPES.map(str::to_owned).to_vec(), ..SyncConfig::new(root) },
        db.store.clone(),
        db.state.clone(),
        db.queue.clone(),
    )?;
    let started = Instant::now();
    plugin.register(&mut job_queue::Registry::new()).await?;
    let register_ms = started.elapsed().as_secs_f64() * 1000.0;

    let settings = format!("{count} notes of ~2 KB, 5 types, cold page cache, sync_batch_size 500");
    Ok(vec![
        Measurement {
            suite: "sync",
            name: &format!("{backend} import vs naive per-file"),
            unit: "files/s",
            value: import_rate,
            baseline: Some(("read+exists+upsert per file", naive_rate)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(ratio_target),
            settings: settings.clone(),
        }
        .finish(),
        Measurement {
            suite: "sync",
            name: &format!("{backend} no-change re-sync"),
            unit: "files/s",
            value: resync_rate,
            baseline: None,
            direction: Direction::HigherIsBetter,
            target: Target::ValueAtLeast(150_000.0),
            settings: format!("{count} files, {} file contents read", resync.files_read),
        }
        .finish(),
        Measurement {
            suite: "sync",
            name: &format!("{backend} store statements per 1,000 files"),
            unit: "stmts",
            value: per_1000,
            baseline: None,
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(10.0),
            settings: "entity-store statements of the import (sync-state writes add one per 500 files)".into(),
        }
        .finish(),
        Measurement {
            suite: "sync",
            name: &format!("{backend} plugin registration"),
            unit: "ms",
            value: register_ms,
            baseline: None,
            direction: Direction::LowerIsBetter,
            target: Target::ValueAtMost(10.0),
            settings: "folder, state tables (already there), handlers, initial sync queued".into(),
        }
        .finish(),
    ])
}

/// The memory target (issue 23, goal 6): a first sync of ten times as many
/// files may peak at most this many times higher.
pub(crate) const MEMORY_RATIO_TARGET: f64 = 1.3;

/// The one definition of a sync's memory figure, used by `bench sync` and the
/// `scale` scenario alike: the peak resident set (VmHWM, KiB) of a **first
/// sync** (direction `both`) of `folder` into a fresh database at `url`, in a
/// process of its own (`xtask sync-child`, the library code the binary runs),
/// with the folder's files dropped from the page cache first. Returns that
/// child's report (its `peak_rss_kb` is the figure).
pub(crate) fn first_sync(folder: &Path, paths: &[PathBuf], url: &str) -> Result<serde_json::Value> {
    super::core::drop_from_cache(paths)?;
    let report = run_sync_child(folder, url, "both")?;
    ensure!(report["peak_rss_kb"].is_u64(), "no peak_rss_kb in {report}");
    Ok(report)
}

/// A report's peak RSS in MiB.
pub(crate) fn peak_mib(report: &serde_json::Value) -> f64 {
    report["peak_rss_kb"].as_f64().unwrap_or(f64::NAN) / 1024.0
}

/// Peak RSS of a first sync of `count` files against one of ten times as
/// many, as [`first_sync`] defines it (SQLite).
fn peak_memory(small: &Path, small_paths: &[PathBuf], count: usize) -> Result<Vec<BenchResult>> {
    let large = tempfile::tempdir()?;
    let large_paths = generate(large.path(), count * 10)?;
    let scratch = tempfile::tempdir()?;
    let measure = |folder: &Path, paths: &[PathBuf], name: &str| -> Result<f64> {
        let url = format!("sqlite://{}", scratch.path().join(name).display());
        let report = first_sync(folder, paths, &url)?;
        // A sync that imported less would measure less (the scale scenario checks this itself).
        ensure!(
            report["imported"].as_u64() == Some(paths.len() as u64)
                && report["failed"].as_array().is_some_and(Vec::is_empty),
            "the first sync of {} did not import all {} files: {report}",
            folder.display(),
            paths.len()
        );
        Ok(peak_mib(&report))
    };
    let small_mib = measure(small, small_paths, "small.db")?;
    let large_mib = measure(large.path(), &large_paths, "large.db")?;
    Ok(vec![
        Measurement {
            suite: "sync",
            name: &format!("sqlite peak RSS, {}k vs {}k files", count * 10 / 1000, count / 1000),
            unit: "MiB",
            value: large_mib,
            baseline: Some((&format!("{}k files", count / 1000), small_mib)),
            direction: Direction::LowerIsBetter,
            // The target is large / small <= 1.3; the ratio printed is small / large.
            target: Target::RatioAtLeast(1.0 / MEMORY_RATIO_TARGET),
            settings:
                "first sync (both directions) into a fresh database, in a process of its own, cold page cache, VmHWM"
                    .into(),
        }
        .finish(),
    ])
}

/// The child side of a measured run: one sync of `folder` into `database`
/// (a URL) in a process of its own, so its peak RSS is its alone. Prints
/// the summary with the seconds, entity-store statements and peak RSS.
pub fn sync_child(folder: &Path, database: &str, direction: directory_sync::Direction) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let (summary, seconds, statements) = runtime.block_on(async {
        let db = Database::open(database).await?;
        let config = SyncConfig { entity_types: TYPES.map(str::to_owned).to_vec(), ..SyncConfig::new(folder) };
        let syncer = Syncer::new(config, db.store.clone(), db.state.clone(), None)?;
        let started = Instant::now();
        let summary = syncer.sync(direction, no_progress(), &CancellationToken::new()).await?;
        anyhow::Ok((summary, started.elapsed().as_secs_f64(), db.store.statements()))
    })?;
    let mut report = serde_json::to_value(&summary)?;
    report["seconds"] = seconds.into();
    report["store_statements"] = statements.into();
    report["peak_rss_kb"] = peak_rss_kb()?.into();
    println!("{report}");
    Ok(())
}

/// Runs [`sync_child`] and returns its report.
pub(crate) fn run_sync_child(folder: &Path, database: &str, direction: &str) -> Result<serde_json::Value> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["sync-child", "--direction", direction])
        .arg(folder)
        .arg(database)
        .output()?;
    ensure!(output.status.success(), "sync-child failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// This process's peak resident set (VmHWM), in KiB.
pub(crate) fn peak_rss_kb() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}
