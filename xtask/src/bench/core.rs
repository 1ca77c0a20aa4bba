//! Suite `core`: reading and hashing many small files, sequentially versus
//! through the batch-core runner with 16 reads in flight.
//!
//! Both passes start from cold page cache for the files (dropped per file
//! with `posix_fadvise(DONTNEED)` after a sync), because a sync tool meets
//! cold files after a reboot or on a big folder, and cold reads are latency
//! bound: that is where parallelism pays.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use batch_core::{BatchRunner, ErrorPolicy, ItemError, RunnerConfig};

use super::{BenchResult, Direction, Measurement, Target};

const PARALLEL_READS: usize = 16;

pub fn run(quick: bool) -> Result<Vec<BenchResult>> {
    let count = if quick { 3_000 } else { 10_000 };
    let folder = tempfile::tempdir()?;
    let paths = write_files(folder.path(), count)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().max_blocking_threads(PARALLEL_READS * 2).enable_all().build()?;

    let rounds = if quick { 1 } else { 3 };
    let mut sequential_rates = Vec::new();
    let mut parallel_rates = Vec::new();
    let mut sequential_digest = Vec::new();
    let mut parallel_digest = Vec::new();
    // Alternate the two passes so drift on a shared machine hits both alike.
    for _ in 0..rounds {
        drop_from_cache(&paths)?;
        let started = Instant::now();
        sequential_digest = paths.iter().map(|p| hash_file(p)).collect::<Result<Vec<_>>>()?;
        sequential_rates.push(count as f64 / started.elapsed().as_secs_f64());

        drop_from_cache(&paths)?;
        let started = Instant::now();
        parallel_digest = runtime.block_on(hash_in_parallel(&paths))?;
        parallel_rates.push(count as f64 / started.elapsed().as_secs_f64());
    }
    let sequential = median(&mut sequential_rates);
    let parallel = median(&mut parallel_rates);

    anyhow::ensure!(sequential_digest == parallel_digest, "parallel pass hashed different bytes");
    let settings = format!(
        "{count} files of ~2 KB, cold page cache, blake3, runner parallelism {PARALLEL_READS}, median of {rounds} rounds"
    );
    Ok(vec![
        Measurement {
            suite: "core",
            name: "read+hash files, runner x16",
            unit: "files/s",
            value: parallel,
            baseline: Some(("sequential read+hash", sequential)),
            direction: Direction::HigherIsBetter,
            target: Target::RatioAtLeast(2.0),
            settings,
        }
        .finish(),
    ])
}

fn write_files(folder: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        let path = folder.join(format!("note-{i:05}.md"));
        let body = format!("---\ntitle: Note {i}\n---\n# Note {i}\n\n{}", "lorem ipsum dolor sit amet ".repeat(72));
        std::fs::write(&path, body)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Writes dirty pages back, then asks the kernel to forget the files' pages.
pub(crate) fn drop_from_cache(paths: &[PathBuf]) -> Result<()> {
    rustix::fs::sync();
    for path in paths {
        let file = File::open(path)?;
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
            .with_context(|| format!("fadvise {}", path.display()))?;
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(blake3::hash(&bytes))
}

async fn hash_in_parallel(paths: &[PathBuf]) -> Result<Vec<blake3::Hash>> {
    let runner = BatchRunner::new(RunnerConfig {
        max_parallel: PARALLEL_READS,
        policy: ErrorPolicy::StopOnError,
        ..RunnerConfig::default()
    });
    let items: Vec<(String, PathBuf)> = paths.iter().map(|p| (p.display().to_string(), p.clone())).collect();
    let report = runner
        .run_blocking(items, |path: &PathBuf| hash_file(path).map_err(|e| ItemError::permanent(format!("{e:#}"))))
        .await;
    if let Some(failure) = report.failed.first() {
        anyhow::bail!("{}: {}", failure.key, failure.reason);
    }
    anyhow::ensure!(report.succeeded.len() == paths.len(), "not every file was hashed");
    // The blocking runner reports successes in item order.
    Ok(report.succeeded.into_iter().map(|s| s.outcome).collect())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
