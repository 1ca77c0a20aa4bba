//! `crash`: a separate `directory-sync worker` process syncs a generated
//! folder and is killed with SIGKILL at random moments: while it starts,
//! scans, imports a batch, exports, writes progress or embeds. After each
//! kill another worker starts; the dead worker's lease expires and its job
//! is claimed again. Between rounds, files change on disk and entities in
//! the database, so every round has both import and export work. After each
//! round the folder and the database must agree (see [`super::agreement`])
//! and every job must have completed.
//!
//! The moments are random; the seed is printed, and `SCENARIO_SEED` repeats
//! a run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use directory_sync::{Database, layout::Layout};
use entity_store::{EntityKey, NewEntity, UpsertOptions};
use job_queue::JobState;

use super::sync_worker::{self, SyncBinary};
use super::{Checks, agreement};
use crate::bench::sync::{NOTE_END, TYPES, generate, note_path, note_text};

/// Kills per sync job: it has three attempts, the last one must finish.
const KILLS_PER_ROUND: usize = 2;

pub fn run(quick: bool) -> Result<()> {
    let notes = if quick { 2_000 } else { 10_000 };
    let kills = if quick { 6 } else { 20 };
    let seed = std::env::var("SCENARIO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    println!("     seed {seed} (SCENARIO_SEED={seed} repeats the kill moments)");
    let scratch = tempfile::tempdir()?;
    let binary = SyncBinary::build(scratch.path().join("workers.log"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut checks = Checks::default();
    let sqlite_url = format!("sqlite://{}", scratch.path().join("crash.db").display());
    let plan = Plan { binary: &binary, notes, kills, seed };
    runtime.block_on(plan.run_on("sqlite", &sqlite_url, &mut checks))?;
    match std::env::var("DATABASE_URL") {
        Ok(server) => {
            let checks = &mut checks;
            runtime.block_on(crate::scratch::with_scratch_pg(&server, "scenario_crash", |url| async move {
                plan.run_on("postgres", &url, checks).await
            }))?;
        }
        Err(_) => println!("SKIP postgres: no DATABASE_URL"),
    }
    checks.finish()
}

#[derive(Clone, Copy)]
struct Plan<'a> {
    binary: &'a SyncBinary,
    notes: usize,
    kills: usize,
    seed: u64,
}

impl Plan<'_> {
    async fn run_on(self, backend: &str, url: &str, checks: &mut Checks) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let folder = dir.path().join("vault");
        generate(&folder, self.notes)?;
        let db = Database::open(url).await?;
        let layout = Layout::new("note", TYPES.map(str::to_owned).to_vec());
        let mut rng = fastrand::Rng::with_seed(self.seed);
        // How long a worker takes from its start to the round's end; kills land in that span.
        let mut span = Duration::from_secs(2);
        let (mut kills_left, mut mid_job) = (self.kills, 0);
        let rounds = self.kills.div_ceil(KILLS_PER_ROUND);
        for round in 0..rounds {
            if round > 0 {
                change_both_sides(&db, &folder, &layout, &mut rng, round, self.notes).await?;
            }
            let job = self.binary.enqueue_sync(url, &folder)?;
            for _ in 0..kills_left.min(KILLS_PER_ROUND) {
                kills_left -= 1;
                let mut worker = self.binary.spawn_worker(url)?;
                // One kill in five lands while the worker starts; the others once it
                // holds the job (a dead worker's job waits for its lease first).
                if rng.u8(0..5) > 0 {
                    sync_worker::wait_for_claim(&db, job, worker.child.id()).await?;
                }
                let delay = span.mul_f64(rng.f64());
                tokio::time::sleep(delay).await;
                let moment = sync_worker::moment_of(&db, worker.child.id()).await?;
                worker.child.kill()?;
                worker.child.wait()?;
                mid_job += usize::from(moment.is_some());
                let moment = moment.unwrap_or_else(|| "no job running".into());
                println!("     {backend} round {round}: SIGKILL {delay:.2?} in: {moment}");
            }
            let worker = self.binary.spawn_worker(url)?;
            let claimed = sync_worker::wait_for_claim(&db, job, worker.child.id()).await?;
            let started = Instant::now();
            let finished = sync_worker::wait_until_idle(&db, job, Duration::from_secs(600)).await;
            // The next round's kills spread over how long this round's work took uninterrupted.
            span = if claimed { started.elapsed() } else { span / 2 };
            let stopped = worker.stop()?;
            let finished = finished?;
            checks.check(
                finished == JobState::Completed,
                &format!("{backend} round {round}: the sync job {}", finished.as_str()),
            );
            checks.check(
                stopped.success(),
                &format!("{backend} round {round}: the last worker stopped cleanly on SIGINT ({stopped})"),
            );
            if !stopped.success() {
                self.binary.print_log_tail();
            }
            let found = agreement::compare(&db, &folder, &layout).await?;
            checks.check(
                found.problems.is_empty(),
                &format!(
                    "{backend} round {round}: {} files and {} entities agree, sync state too ({})",
                    found.files,
                    found.entities,
                    found.sample()
                ),
            );
            checks.check(
                found.unfinished_jobs() == 0,
                &format!("{backend} round {round}: every job completed, none stuck ({})", found.jobs_summary()),
            );
            if found.temp_files > 0 {
                println!(
                    "     {backend}: {} temp files of interrupted writes (hidden, never imported)",
                    found.temp_files
                );
            }
        }
        println!("     {backend}: {mid_job} of {} kills hit a running job", self.kills);
        Ok(())
    }
}

/// Edits, deletes and adds about a tenth of the notes on disk and another
/// tenth in the database, on disjoint notes, so a round has both import and
/// export work and no conflict.
async fn change_both_sides(
    db: &Database,
    folder: &Path,
    layout: &Layout,
    rng: &mut fastrand::Rng,
    round: usize,
    notes: usize,
) -> Result<()> {
    let mut keys = agreement::all_keys(db).await?;
    rng.shuffle(&mut keys);
    let tenth = keys.len() / 10;
    let hundredth = (keys.len() / 100).max(1);
    let (file_edits, rest) = keys.split_at(tenth);
    let (entity_edits, rest) = rest.split_at(tenth);
    let (file_deletes, rest) = rest.split_at(hundredth);
    let entity_deletes = &rest[..hundredth];

    for key in file_edits {
        let path = file_path(folder, layout, key)?;
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, text.replacen("lorem", &format!("edited on disk in round {round}, lorem"), 1))?;
    }
    for key in file_deletes {
        std::fs::remove_file(file_path(folder, layout, key)?)?;
    }
    for i in 0..hundredth {
        let index = notes * (round + 1) + i;
        let path = folder.join(note_path(index));
        std::fs::create_dir_all(path.parent().unwrap_or(folder))?;
        std::fs::write(path, note_text(index, "added on disk\n\n"))?;
    }

    let found = db.store.batch_get(entity_edits).await?;
    let mut writes: Vec<NewEntity> = found
        .into_values()
        .map(|entity| {
            let content =
                entity.content.replacen("lorem", &format!("edited in the database in round {round}, lorem"), 1);
            let mut metadata = entity.metadata;
            metadata.insert("round".into(), round.into());
            NewEntity::new(entity.entity_type, entity.id, content).with_metadata(serde_json::Value::Object(metadata))
        })
        .collect();
    writes.extend((0..hundredth).map(|i| {
        NewEntity::new("task", format!("db-{round}-{i}"), format!("# Added in the database\n\n{NOTE_END}"))
            .with_metadata(serde_json::json!({ "title": format!("Added {round}-{i}") }))
    }));
    db.store.batch_upsert(writes, &UpsertOptions::default()).await?;
    db.store.batch_delete(entity_deletes).await?;
    Ok(())
}

fn file_path(folder: &Path, layout: &Layout, key: &EntityKey) -> Result<PathBuf> {
    Ok(folder.join(layout.path_for(key)?))
}
