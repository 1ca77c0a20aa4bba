//! Import, export and sync of one folder against the entity store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use batch_core::{BatchRunner, ItemError, NoProgress, ProgressReporter, ProgressTracker, RunnerConfig};
use entity_store::{Change, Entity, EntityKey, EntityStore, NewEntity, UpsertOptions, UpsertStatus, content_hash};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codec;
use crate::config::SyncConfig;
use crate::decide::{Action, Pass, Sides, decide};
use crate::layout::{Layout, conflict_original, conflict_path, conflict_stamp, safe_join};
use crate::lock::FolderLock;
use crate::scan::{self, Found};
use crate::state::{Conflict, FileState, RootState, StateDb};

/// Reads in flight when importing: cold reads are latency bound.
const READ_PARALLELISM: usize = 16;
/// A file modified this close to the scan may change again within the same
/// mtime tick; it is hashed on the next scan instead of trusted.
const RACY_WINDOW_NS: i64 = 2_000_000_000;
/// Entity changes read per `changes_since` page.
const CHANGES_PAGE: usize = 5_000;
/// Entities per queued embedding job.
const EMBED_BATCH: usize = 200;
/// A scan that finds more than this share of the folder's synced files
/// gone (and at least [`MASS_DELETE_MIN`] of them), or every one of them,
/// deletes nothing without [`Syncer::allowing_mass_delete`]: an unmounted
/// share, a moved folder or a typo'd path looks exactly like that.
pub const MASS_DELETE_SHARE: f64 = 0.5;
/// See [`MASS_DELETE_SHARE`].
pub const MASS_DELETE_MIN: usize = 5;

/// A path or key and why it failed or needs a look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub path: String,
    pub error: String,
}

/// What a sync did; printed by the CLI and stored as the job's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncSummary {
    pub imported: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub exported: usize,
    pub deleted: usize,
    pub conflicts: Vec<Conflict>,
    pub failed: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// What the walk left out on purpose (hidden folders, hidden files), and why.
    #[serde(default)]
    pub skipped: Vec<Problem>,
    /// Files whose contents were read (0 for a no-change re-sync).
    pub files_read: usize,
    /// Entities that changed and were queued for embedding.
    pub embed_queued: usize,
    pub duration_ms: u64,
}

impl SyncSummary {
    fn absorb(&mut self, other: SyncSummary) {
        self.imported += other.imported;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.exported += other.exported;
        self.deleted += other.deleted;
        self.conflicts.extend(other.conflicts);
        self.failed.extend(other.failed);
        self.warnings.extend(other.warnings);
        self.skipped.extend(other.skipped);
        self.files_read += other.files_read;
        self.embed_queued += other.embed_queued;
    }

    /// "Sync complete: 47 imported, 3 updated, 120 unchanged, 12 exported, 0 deleted, 0 conflicts, 0 failed in 3.2s"
    pub fn headline(&self) -> String {
        format!(
            "Sync complete: {} imported, {} updated, {} unchanged, {} exported, {} deleted, {} conflicts, {} failed in {:.1}s",
            self.imported,
            self.updated,
            self.unchanged,
            self.exported,
            self.deleted,
            self.conflicts.len(),
            self.failed.len(),
            self.duration_ms as f64 / 1000.0
        )
    }
}

/// Which way a sync goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Import,
    Export,
    #[default]
    Both,
}

/// Failures of the sync as a whole (per-file problems go in the summary).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot use the folder {path}: {reason}")]
    Folder { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] entity_store::StoreError),
    #[error("sync state: {0}")]
    State(#[from] sqlx::Error),
    #[error("queueing embedding jobs: {0}")]
    Queue(#[from] job_queue::QueueError),
    #[error("creating or upgrading the sync state tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "refusing to delete {gone} of the {synced} entities synced from {path}: their files are gone from the folder \
         (an unmounted share, a moved or emptied folder?); if this is what you want, run again with --allow-mass-delete"
    )]
    MassDelete { path: PathBuf, gone: usize, synced: usize },
    #[error("cancelled")]
    Cancelled,
}

/// Whether losing `gone` of `synced` files at once needs the user's confirmation.
pub fn is_mass_delete(gone: usize, synced: usize) -> bool {
    gone > 0 && (gone == synced || (gone >= MASS_DELETE_MIN && gone as f64 > synced as f64 * MASS_DELETE_SHARE))
}

/// Syncs one folder. Cheap to clone.
#[derive(Clone)]
pub struct Syncer {
    config: Arc<SyncConfig>,
    layout: Layout,
    store: Arc<dyn EntityStore>,
    state: StateDb,
    /// Where to queue embedding of changed entities, if anywhere.
    embed_queue: Option<job_queue::Queue>,
    /// The user confirmed that many files may be gone at once.
    allow_mass_delete: bool,
}

/// A file read and parsed, ready to write.
struct ReadFile {
    found: Found,
    key: EntityKey,
    bytes: Vec<u8>,
    file_hash: String,
    doc: Option<codec::Document>,
}

impl Syncer {
    pub fn new(
        config: SyncConfig,
        store: Arc<dyn EntityStore>,
        state: StateDb,
        embed_queue: Option<job_queue::Queue>,
    ) -> Result<Self, crate::config::ConfigError> {
        config.validate()?;
        let layout = Layout::new(config.base_type.clone(), config.entity_types.clone());
        Ok(Self { config: Arc::new(config), layout, store, state, embed_queue, allow_mass_delete: false })
    }

    /// This syncer, deleting the entities of however many files are gone
    /// (see [`MASS_DELETE_SHARE`]).
    #[must_use]
    pub fn allowing_mass_delete(mut self, allow: bool) -> Self {
        self.allow_mass_delete = allow;
        self
    }

    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn EntityStore> {
        &self.store
    }

    pub fn state(&self) -> &StateDb {
        &self.state
    }

    /// The folder's canonical path, which also names it in the state
    /// tables. A folder that does not exist is an error, never created: a
    /// job for a moved or unmounted folder must not write a new one.
    pub fn root(&self) -> Result<PathBuf, SyncError> {
        let path = &self.config.sync_path;
        let folder_error = |reason: String| SyncError::Folder { path: path.clone(), reason };
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => path.canonicalize().map_err(|err| folder_error(err.to_string())),
            Ok(_) => Err(folder_error("it is a file, not a folder".into())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(folder_error("no such folder".into())),
            Err(err) => Err(folder_error(err.to_string())),
        }
    }

    /// Imports changed files, then exports changed entities, holding the
    /// folder for the whole run.
    pub async fn sync(
        &self,
        direction: Direction,
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        let run = async {
            let started = Instant::now();
            let mut summary = SyncSummary::default();
            if direction != Direction::Export {
                summary.absorb(self.import_held(None, progress.clone(), cancel).await?);
            }
            if direction != Direction::Import {
                // After an import, files gone from the folder were handled as deletions.
                let rewrite_vanished = direction == Direction::Export;
                summary.absorb(self.export_held(None, rewrite_vanished, progress.clone(), cancel).await?);
            }
            summary.duration_ms = started.elapsed().as_millis() as u64;
            self.forget_resolved_conflicts().await?;
            self.remember(&summary).await?;
            Ok(summary)
        };
        self.holding(&progress, cancel, run).await
    }

    /// Runs `work` (which has not started: futures are lazy) while holding
    /// the folder; see [`FolderLock`].
    async fn holding<T>(
        &self,
        progress: &Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
        work: impl std::future::Future<Output = Result<T, SyncError>>,
    ) -> Result<T, SyncError> {
        let lock = self.lock_folder(progress, cancel).await?;
        let done = work.await?;
        lock.release().await?;
        Ok(done)
    }

    /// Waits until no other sync, import or export of this folder runs
    /// (any process, any machine on this database), and takes the folder.
    async fn lock_folder(
        &self,
        progress: &Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<FolderLock, SyncError> {
        let root = self.root_name()?;
        let waiting = |holder: &str| {
            let tracker = ProgressTracker::new(0, progress.clone());
            tracker.set_message(format!("Waiting for another job on this folder to finish ({holder})"));
        };
        FolderLock::acquire(&self.state, &root, cancel, waiting).await?.ok_or(SyncError::Cancelled)
    }

    async fn remember(&self, summary: &SyncSummary) -> Result<(), SyncError> {
        let root = self.root_name()?;
        let mut state = self.state.root(&root).await?;
        state.last_sync = Some(chrono::Utc::now().to_rfc3339());
        state.last_summary = serde_json::to_string(summary).ok();
        self.state.set_root(&root, &state).await?;
        Ok(())
    }

    fn root_name(&self) -> Result<String, SyncError> {
        Ok(self.root()?.to_string_lossy().into_owned())
    }

    /// Imports the whole folder, or only `paths` (relative, e.g. from the
    /// watcher). Files gone since the last sync delete their entities.
    pub async fn import(
        &self,
        paths: Option<&[String]>,
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        self.holding(&progress, cancel, self.import_held(paths, progress.clone(), cancel)).await
    }

    async fn import_held(
        &self,
        paths: Option<&[String]>,
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        let started = Instant::now();
        let root = self.root()?;
        let root_name = root.to_string_lossy().into_owned();
        let scan_started_ns = now_ns();
        let walk_root = root.clone();
        let owned_paths = paths.map(<[String]>::to_vec);
        // The walk and the state read overlap: one is disk-bound, the other a database round trip.
        let walking = tokio::task::spawn_blocking(move || match owned_paths {
            Some(paths) => Ok(scan::stat_paths(&walk_root, &paths)),
            None => scan::walk(&walk_root).map(|walk| (walk, Vec::new())),
        });
        let (mut walk, gone) = walking
            .await
            .map_err(|err| SyncError::Folder { path: root.clone(), reason: err.to_string() })?
            .map_err(|err| SyncError::Folder { path: root.clone(), reason: err.to_string() })?;

        let mut summary = SyncSummary::default();
        summary.failed.extend(walk.problems.into_iter().map(|(path, error)| Problem { path, error }));
        summary.warnings.extend(walk.warnings.into_iter().map(|(path, error)| Problem { path, error }));
        summary.skipped.extend(walk.skipped.drain(..).map(|(path, error)| Problem { path, error }));

        self.record_found_conflicts(&root_name, std::mem::take(&mut walk.conflict_copies)).await?;
        let twins = self.prefer_synced_twins(&root_name, scan::normalization_twins(&walk.files)).await?;
        let walked = walk.files.len();
        let (candidates, known, gone) = if paths.is_none() {
            let (candidates, known, gone, synced) = self.compare_with_state(&root_name, walk.files).await?;
            self.check_mass_delete(&root, gone.len(), synced)?;
            (candidates, known, gone)
        } else {
            let mut asked: Vec<String> = walk.files.iter().map(|f| f.path.clone()).collect();
            asked.extend(gone.iter().cloned());
            let known = self.state.files_at(&root_name, &asked).await?;
            let gone: Vec<String> = gone.into_iter().filter(|path| known.contains_key(path)).collect();
            if !gone.is_empty() {
                self.check_mass_delete(&root, gone.len(), self.state.count_files(&root_name).await? as usize)?;
            }
            let mut candidates = walk.files;
            candidates.retain(|found| known.get(&found.path).is_none_or(|state| !quick_check_passes(found, state)));
            (candidates, known, gone)
        };
        summary.unchanged += walked - candidates.len();
        let mut candidates = candidates;
        candidates.retain(|found| {
            let Some(kept) = twins.get(&found.path) else { return true };
            let error = format!("same note as {kept}: the names differ only by Unicode normalization; rename one");
            summary.failed.push(Problem { path: found.path.clone(), error });
            false
        });
        let tracker = ProgressTracker::new(candidates.len() as u64, progress);
        if !candidates.is_empty() {
            tracker.set_message(format!("Importing: 0/{} files", candidates.len()));
        }
        // Reading the next chunk overlaps writing this one: disk and database wait in parallel.
        let chunks: Vec<&[Found]> = candidates.chunks(self.config.sync_batch_size).collect();
        let mut next = match chunks.first() {
            Some(first) => Some(self.read_chunk(&root, first, cancel).await),
            None => None,
        };
        for (index, chunk) in chunks.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(SyncError::Cancelled);
            }
            let Some(read) = next.take() else { break };
            let write = self.import_chunk((&root, &root_name), read, &known, scan_started_ns);
            let read_next = async {
                match chunks.get(index + 1) {
                    Some(following) => Some(self.read_chunk(&root, following, cancel).await),
                    None => None,
                }
            };
            let (part, following) = tokio::join!(write, read_next);
            next = following;
            let part = part?;
            count_chunk(&tracker, chunk.len(), part.failed.len(), "Importing", "files");
            summary.absorb(part);
        }
        self.import_deletions((&root, &root_name), &gone, &known, &mut summary).await?;
        // The writer keeps the text index current, so a later search only reads.
        self.store.refresh_search_index().await?;
        tracker.finish();
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// `twins` (refused path -> kept path), turned around where the refused
    /// one is the file this folder already syncs: a new look-alike never
    /// replaces it.
    async fn prefer_synced_twins(
        &self,
        root_name: &str,
        twins: HashMap<String, String>,
    ) -> Result<HashMap<String, String>, SyncError> {
        if twins.is_empty() {
            return Ok(twins);
        }
        let asked: Vec<String> = twins.iter().flat_map(|(twin, kept)| [twin.clone(), kept.clone()]).collect();
        let synced = self.state.files_at(root_name, &asked).await?;
        Ok(twins
            .into_iter()
            .map(
                |(twin, kept)| {
                    if synced.contains_key(&twin) && !synced.contains_key(&kept) { (kept, twin) } else { (twin, kept) }
                },
            )
            .collect())
    }

    /// Refuses to go on when `gone` of `synced` files vanished at once,
    /// unless the user allowed it.
    fn check_mass_delete(&self, root: &Path, gone: usize, synced: usize) -> Result<(), SyncError> {
        if is_mass_delete(gone, synced) && !self.allow_mass_delete {
            return Err(SyncError::MassDelete { path: root.to_path_buf(), gone, synced });
        }
        Ok(())
    }

    /// Records conflict copies of ours that the state does not list (one
    /// written by a sync killed before it recorded it), so `status` shows
    /// every version of the user's that was moved aside.
    async fn record_found_conflicts(&self, root_name: &str, copies: Vec<(String, i64)>) -> Result<(), SyncError> {
        let conflicts: Vec<Conflict> = copies
            .into_iter()
            .filter_map(|(copy, mtime_ns)| {
                let path = conflict_original(&copy)?;
                let key = self.layout.key_for(&path).ok()?;
                let detected_at = chrono::DateTime::from_timestamp_nanos(mtime_ns).to_rfc3339();
                Some(Conflict {
                    path,
                    conflict_path: copy,
                    entity_type: key.entity_type,
                    entity_id: key.id,
                    detected_at,
                })
            })
            .collect();
        self.state.add_conflicts(root_name, &conflicts).await?;
        Ok(())
    }

    /// Merges the walk with the stored state, streamed in path order: the
    /// files that fail the quick check (new or changed), the stored state of
    /// those and of files gone since, the gone paths, and how many files the
    /// state holds. Unchanged files' state is never held, so a no-change
    /// re-sync of a big folder stays small.
    async fn compare_with_state(
        &self,
        root_name: &str,
        mut walked: Vec<Found>,
    ) -> Result<(Vec<Found>, HashMap<String, FileState>, Vec<String>, usize), SyncError> {
        walked.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let mut unchanged = vec![false; walked.len()];
        let mut known = HashMap::new();
        let mut gone = Vec::new();
        let mut next = 0;
        let mut synced = 0;
        self.state
            .for_each_file(root_name, |state| {
                synced += 1;
                while walked.get(next).is_some_and(|found| found.path < state.path) {
                    next += 1; // a new file
                }
                match walked.get(next) {
                    Some(found) if found.path == state.path => {
                        let same = quick_check_passes(found, &state);
                        unchanged[next] = same;
                        next += 1;
                        if !same {
                            known.insert(state.path.clone(), state);
                        }
                    }
                    _ => {
                        gone.push(state.path.clone());
                        known.insert(state.path.clone(), state);
                    }
                }
            })
            .await?;
        let mut flags = unchanged.into_iter();
        walked.retain(|_| !flags.next().unwrap_or(false));
        walked.shrink_to_fit();
        Ok((walked, known, gone, synced))
    }

    /// Reads and parses one chunk of files; problems go in the returned summary.
    async fn read_chunk(
        &self,
        root: &Path,
        chunk: &[Found],
        cancel: &batch_core::CancellationToken,
    ) -> (Vec<ReadFile>, SyncSummary) {
        let mut summary = SyncSummary::default();
        let files = self.read_files(root, chunk, cancel, &mut summary).await;
        summary.files_read += files.len();
        (files, summary)
    }

    /// Writes one chunk of read files: one `batch_get`, one `batch_upsert`,
    /// conflicts kept, the sync state recorded.
    async fn import_chunk(
        &self,
        (root, root_name): (&Path, &str),
        (files, mut summary): (Vec<ReadFile>, SyncSummary),
        known: &HashMap<String, FileState>,
        scan_started_ns: i64,
    ) -> Result<SyncSummary, SyncError> {
        // A file whose bytes are what we last synced only needs its new mtime recorded.
        let mut touched = Vec::new();
        let mut changed = Vec::new();
        for file in files {
            match known.get(&file.found.path) {
                Some(state) if state.file_hash == file.file_hash => {
                    touched.push(FileState {
                        size: file.found.size as i64,
                        mtime_ns: file.found.mtime_ns,
                        ..state.clone()
                    });
                    summary.unchanged += 1;
                }
                _ => changed.push(file),
            }
        }

        let keys: Vec<EntityKey> = changed.iter().map(|f| f.key.clone()).collect();
        let stored = self.store.batch_get(&keys).await?;
        let mut writes = Vec::new();
        let mut conflicts = Vec::new();
        for file in changed {
            let Some(doc) = &file.doc else { continue };
            let metadata = if self.config.include_metadata { doc.metadata.clone() } else { Map::new() };
            let new_hash = content_hash(&metadata, &doc.content, doc.frontmatter.as_deref());
            let current = stored.get(&file.key);
            let base = known.get(&file.found.path).map(|b| (b.file_hash.as_str(), b.entity_hash.as_str()));
            let entity_hash = current.map(|e| e.content_hash.as_str());
            // The file says what the entity says: the same metadata and content. Not
            // compared by hash, which also covers the frontmatter's text: a
            // file written from the entity by a sync killed before it recorded
            // it has a block the entity may not hold yet, and is no conflict.
            let same = current.is_some_and(|e| e.content == doc.content && e.metadata == metadata);
            let sides = Sides::from_hashes(base, Some(&file.file_hash), entity_hash, same);
            match decide(sides, self.config.conflict_policy, Pass::Import) {
                Action::KeepBoth => {
                    conflicts.push(file);
                    continue;
                }
                Action::Warn(reason) => {
                    // The export half puts the database version back at the path.
                    summary.warnings.push(Problem { path: file.found.path.clone(), error: reason.into() });
                    continue;
                }
                // Import, or in step already: then the upsert below changes nothing and the state is recorded.
                _ => {}
            }
            let expected = current.map_or(0, |entity| entity.version);
            let entity = NewEntity::new(&file.key.entity_type, &file.key.id, doc.content.clone())
                .with_metadata(Value::Object(metadata))
                .with_frontmatter(doc.frontmatter.clone())
                .expecting_version(expected);
            writes.push((file, entity, new_hash));
        }

        let entities: Vec<NewEntity> = writes.iter().map(|(_, entity, _)| entity.clone()).collect();
        let options = UpsertOptions { batch_size: self.config.sync_batch_size, ..UpsertOptions::default() };
        let report = self.store.batch_upsert(entities, &options).await?;
        let failed: HashMap<&EntityKey, &str> = report.failed.iter().map(|f| (&f.key, f.reason.as_str())).collect();
        let statuses: HashMap<&EntityKey, UpsertStatus> =
            report.succeeded.iter().map(|s| (&s.key, s.outcome.status)).collect();
        let mut recorded = touched;
        let mut to_embed = Vec::new();
        for (file, entity, hash) in &writes {
            let key = entity.key();
            if let Some(reason) = failed.get(&key) {
                summary.failed.push(Problem { path: file.found.path.clone(), error: (*reason).to_owned() });
                continue;
            }
            match statuses.get(&key) {
                Some(UpsertStatus::Created) => summary.imported += 1,
                Some(UpsertStatus::Updated) => summary.updated += 1,
                _ => summary.unchanged += 1,
            }
            if matches!(statuses.get(&key), Some(UpsertStatus::Created | UpsertStatus::Updated)) {
                to_embed.push(embedding::EmbedItem { key, content_hash: hash.clone() });
            }
            recorded.push(file_state(file, hash, scan_started_ns));
        }
        for file in conflicts {
            let entity = &stored[&file.key];
            let rendered = self.render(entity, known.get(&file.found.path).and_then(|b| b.frontmatter.as_deref()));
            let path = &file.found.path;
            match self.keep_both((root, root_name), path, &file.bytes, &rendered, entity).await? {
                Ok((conflict, state)) => {
                    summary.conflicts.push(conflict);
                    recorded.push(state);
                }
                Err(error) => summary.failed.push(Problem { path: path.clone(), error }),
            }
        }
        self.state.record(root_name, &recorded).await?;
        summary.embed_queued += self.queue_embedding(to_embed).await?;
        Ok(summary)
    }

    /// Reads and parses files with many reads in flight.
    async fn read_files(
        &self,
        root: &Path,
        chunk: &[Found],
        cancel: &batch_core::CancellationToken,
        summary: &mut SyncSummary,
    ) -> Vec<ReadFile> {
        let mut items = Vec::with_capacity(chunk.len());
        for found in chunk {
            if found.size > self.config.max_file_size {
                summary.failed.push(Problem {
                    path: found.path.clone(),
                    error: format!(
                        "file is {} bytes, over the size limit of {}",
                        found.size, self.config.max_file_size
                    ),
                });
                continue;
            }
            match self.layout.key_for(&found.path) {
                Ok(key) => items.push((found.path.clone(), (found.clone(), key))),
                Err(err) => summary.failed.push(Problem { path: found.path.clone(), error: err.to_string() }),
            }
        }
        let root = root.to_path_buf();
        let limit = self.config.max_file_size;
        let include_metadata = self.config.include_metadata;
        let runner = BatchRunner::new(RunnerConfig {
            max_parallel: READ_PARALLELISM,
            cancel: cancel.clone(),
            ..RunnerConfig::default()
        });
        let report = runner
            .run_blocking(items, move |(found, key): &(Found, EntityKey)| {
                let full = safe_join(&root, &found.path).map_err(|err| ItemError::permanent(err.to_string()))?;
                let bytes = scan::read_limited(&full, limit).map_err(ItemError::permanent)?;
                let file_hash = blake3::hash(&bytes).to_hex().to_string();
                let mut doc = codec::parse(&bytes).map_err(|err| ItemError::permanent(err.to_string()))?;
                if !include_metadata {
                    // The whole file is content, frontmatter and byte-order mark included.
                    let content = String::from_utf8(bytes.clone()).unwrap_or_default();
                    doc = codec::Document { metadata: Map::new(), content, frontmatter: None, warning: None };
                }
                Ok(ReadFile { found: found.clone(), key: key.clone(), bytes, file_hash, doc: Some(doc) })
            })
            .await;
        summary.failed.extend(report.failed.into_iter().map(|f| Problem { path: f.key, error: f.reason }));
        let mut files: Vec<ReadFile> = report.succeeded.into_iter().map(|s| s.outcome).collect();
        for file in &mut files {
            if let Some(warning) = file.doc.as_mut().and_then(|doc| doc.warning.take()) {
                summary.warnings.push(Problem { path: file.found.path.clone(), error: warning });
            }
        }
        files
    }

    /// Keeps `file_bytes` beside `path` as `{name}.conflict-{stamp}.md`
    /// and puts `rendered` (the database's version) at `path`. The conflict
    /// is recorded before anything is written, so a sync killed half-way
    /// never hides a moved-aside version; a failed write forgets it again.
    /// The outer error is the database's, the inner one the file's.
    async fn keep_both(
        &self,
        (root, root_name): (&Path, &str),
        path: &str,
        file_bytes: &[u8],
        rendered: &str,
        entity: &Entity,
    ) -> Result<Result<(Conflict, FileState), String>, SyncError> {
        let now = chrono::Utc::now();
        let conflict = Conflict {
            path: path.to_owned(),
            conflict_path: conflict_path(path, &conflict_stamp(now)),
            entity_type: entity.entity_type.clone(),
            entity_id: entity.id.clone(),
            detected_at: now.to_rfc3339(),
        };
        self.state.add_conflicts(root_name, std::slice::from_ref(&conflict)).await?;
        let written = scan::write_atomic(root, &conflict.conflict_path, file_bytes, scan::Mode::OfFile(path))
            .and_then(|_| scan::write_atomic(root, path, rendered.as_bytes(), scan::Mode::Keep));
        match written {
            Ok((size, mtime_ns)) => {
                let state = synced_state(path, entity, rendered, size, mtime_ns);
                Ok(Ok((conflict, state)))
            }
            Err(error) => {
                self.state.resolve_conflicts(root_name, std::slice::from_ref(&conflict.conflict_path)).await?;
                Ok(Err(error))
            }
        }
    }

    /// The file for `entity`: from its own source form when it has one (so
    /// any folder gets the original file), else from what this folder last
    /// synced (entities written before they kept it).
    fn render(&self, entity: &Entity, previous_frontmatter: Option<&str>) -> String {
        if self.config.include_metadata {
            let head = entity.frontmatter.as_deref().or(previous_frontmatter);
            codec::render(&entity.metadata, &entity.content, head)
        } else {
            entity.content.clone()
        }
    }

    /// Deletes the entities of files that are gone, as [`decide`] says:
    /// not when the entity changed since the last sync (the export half
    /// then writes it back), and not when the file is back on disk (it
    /// appeared after the walk: the next import reads it).
    async fn import_deletions(
        &self,
        (root, root_name): (&Path, &str),
        gone: &[String],
        known: &HashMap<String, FileState>,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        let gone: Vec<&String> = gone
            .iter()
            .filter(|path| safe_join(root, path).is_ok_and(|full| full.symlink_metadata().is_err()))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let keys: Vec<EntityKey> =
            gone.iter().map(|path| EntityKey::new(&known[*path].entity_type, &known[*path].entity_id)).collect();
        let stored = self.store.batch_get(&keys).await?;
        let mut delete = Vec::new();
        for (path, key) in gone.iter().zip(&keys) {
            let base = &known[*path];
            let entity = stored.get(key).map(|e| e.content_hash.as_str());
            let sides = Sides::from_hashes(Some((&base.file_hash, &base.entity_hash)), None, entity, false);
            match decide(sides, self.config.conflict_policy, Pass::Import) {
                Action::DeleteEntity => delete.push(key.clone()),
                Action::KeepEdit(reason) => {
                    summary.warnings.push(Problem { path: (*path).clone(), error: reason.into() });
                }
                _ => {}
            }
        }
        let report = self.store.batch_delete(&delete).await?;
        summary.deleted += report.succeeded.len();
        summary.failed.extend(report.failed.into_iter().map(|f| Problem { path: f.key.to_string(), error: f.reason }));
        let gone: Vec<String> = gone.into_iter().cloned().collect();
        self.state.forget(root_name, &gone).await?;
        Ok(())
    }

    async fn queue_embedding(&self, items: Vec<embedding::EmbedItem>) -> Result<usize, SyncError> {
        let Some(queue) = &self.embed_queue else { return Ok(0) };
        if items.is_empty() {
            return Ok(0);
        }
        let count = items.len();
        let jobs = embedding::embed_jobs(&items, EMBED_BATCH, "directory-sync");
        queue.enqueue_many(jobs).await?;
        Ok(count)
    }

    /// Writes entities changed since the last export (optionally of some
    /// types only) and removes the files of deleted ones.
    pub async fn export(
        &self,
        entity_types: Option<&[String]>,
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        self.holding(&progress, cancel, self.export_held(entity_types, true, progress.clone(), cancel)).await
    }

    /// `rewrite_vanished`: first write again the entities whose files this
    /// folder synced but that are gone from it (a plain export never takes
    /// a missing file for present).
    async fn export_held(
        &self,
        entity_types: Option<&[String]>,
        rewrite_vanished: bool,
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        let started = Instant::now();
        let root = self.root()?;
        let root_name = root.to_string_lossy().into_owned();
        let mut root_state = self.state.root(&root_name).await?;
        let mut summary = SyncSummary::default();
        let wanted = |key: &EntityKey| entity_types.is_none_or(|types| types.contains(&key.entity_type));
        let tracker = ProgressTracker::new(0, progress);
        tracker.set_message("Exporting");
        // Entities of types this folder does not hold, by type: one line at the end, not one each.
        let mut not_here: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        let mut failed_keys = Vec::new();
        if rewrite_vanished {
            let part = self.rewrite_vanished(&root, &root_name, entity_types, &mut not_here, &mut failed_keys).await?;
            summary.absorb(part);
        }
        // Page by page in revision order, so memory does not grow with the
        // number of changes; a key changed again in a later page is applied again then.
        // A folder that now holds other types than at its last export reads every change again.
        let types_now = self.layout.signature();
        let mut revision =
            if root_state.export_types.as_deref() == Some(types_now.as_str()) { root_state.export_revision } else { 0 };
        // The revision this export may record: never past an entity it failed to write.
        let mut complete_to = i64::MAX;
        loop {
            if cancel.is_cancelled() {
                return Err(SyncError::Cancelled);
            }
            let page = self.store.changes_since(revision, CHANGES_PAGE).await?;
            let Some(last) = page.last() else { break };
            revision = last.revision;
            let latest: HashMap<EntityKey, Change> =
                page.into_iter().filter(|change| wanted(&change.key)).map(|c| (c.key.clone(), c)).collect();
            let path_of = self.paths_of(&root, &root_name, latest.keys().cloned().collect()).await?;
            let paths: Vec<String> = path_of.values().cloned().collect();
            let known = self.state.files_at(&root_name, &paths).await?;
            // A version the file already holds (e.g. just imported) needs no fetch and no write.
            let file_holds = |key: &EntityKey, hash: &str| {
                path_of.get(key).and_then(|path| known.get(path)).is_some_and(|base| base.entity_hash == hash)
            };
            let (mut live, mut deleted) = (Vec::new(), Vec::new());
            for (key, change) in &latest {
                if change.deleted {
                    deleted.push(key.clone());
                } else if !file_holds(key, &change.content_hash) {
                    live.push(key.clone());
                }
            }
            live.sort();
            deleted.sort();
            tracker.set_total(tracker.snapshot().total + (live.len() + deleted.len()) as u64);
            for chunk in live.chunks(self.config.sync_batch_size) {
                let files = (&known, &path_of);
                let part = self.export_chunk(&root, &root_name, chunk, files, &mut not_here, &mut failed_keys).await?;
                count_chunk(&tracker, chunk.len(), part.failed.len(), "Exporting", "entities");
                summary.absorb(part);
            }
            for key in failed_keys.drain(..) {
                if let Some(change) = latest.get(&key) {
                    complete_to = complete_to.min(change.revision - 1);
                }
            }
            // Deleted and created again later: the later change writes it.
            let alive = self.store.exists(&deleted).await?;
            deleted.retain(|key| !alive.contains(key));
            self.export_deletions(&root, &root_name, &deleted, (&known, &path_of), &mut summary).await?;
            tracker.advance(deleted.len() as u64, 0);
        }
        tracker.finish();
        if !not_here.is_empty() {
            let count: usize = not_here.values().sum();
            let types: Vec<String> = not_here.iter().map(|(t, n)| format!("{t} ({n})")).collect();
            summary.warnings.push(Problem {
                path: format!("{count} entities"),
                error: format!(
                    "not written to this folder: their types ({}) are not among its entity types; folders sharing a database share their notes, and --entity-types chooses which types a folder holds",
                    types.join(", ")
                ),
            });
        }

        // A partial export (some types) must not skip the other types' changes next time.
        if entity_types.is_none() {
            root_state.export_revision = revision.min(complete_to);
            root_state.export_types = Some(types_now);
            self.state.set_root(&root_name, &root_state).await?;
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    async fn export_chunk(
        &self,
        root: &Path,
        root_name: &str,
        keys: &[EntityKey],
        (known, path_of): (&HashMap<String, FileState>, &HashMap<EntityKey, String>),
        not_here: &mut std::collections::BTreeMap<String, usize>,
        failed_keys: &mut Vec<EntityKey>,
    ) -> Result<SyncSummary, SyncError> {
        let mut summary = SyncSummary::default();
        let entities = self.store.batch_get(keys).await?;
        let mut recorded = Vec::new();
        for key in keys {
            let Some(entity) = entities.get(key) else { continue }; // deleted since; the next export removes it
            let path = match path_of.get(key).cloned().map_or_else(|| self.path_on_disk(root, key), Ok) {
                Ok(path) => path,
                Err(crate::layout::LayoutError::Skipped(_)) => {
                    *not_here.entry(key.entity_type.clone()).or_default() += 1;
                    continue;
                }
                Err(err) => {
                    summary.failed.push(Problem { path: key.to_string(), error: format!("not exported: {err}") });
                    failed_keys.push(key.clone());
                    continue;
                }
            };
            let failed_before = summary.failed.len();
            let base = known.get(&path);
            if base.is_some_and(|b| b.entity_hash == entity.content_hash) {
                continue; // the file already holds this version (e.g. it was just imported)
            }
            match self.export_one(root, &path, entity, base) {
                Ok(Exported::Written(state)) => {
                    summary.exported += 1;
                    recorded.push(state);
                }
                Ok(Exported::Same(state)) => recorded.push(state),
                Ok(Exported::BothChanged { file_bytes, rendered }) => {
                    match self.keep_both((root, root_name), &path, &file_bytes, &rendered, entity).await? {
                        Ok((conflict, state)) => {
                            summary.conflicts.push(conflict);
                            recorded.push(state);
                        }
                        Err(error) => summary.failed.push(Problem { path, error }),
                    }
                }
                Ok(Exported::Left(Some(reason))) => summary.warnings.push(Problem { path, error: reason.into() }),
                Ok(Exported::Left(None)) => {}
                Err(error) => summary.failed.push(Problem { path, error }),
            }
            if summary.failed.len() > failed_before {
                failed_keys.push(key.clone());
            }
        }
        self.state.record(root_name, &recorded).await?;
        Ok(summary)
    }

    /// Writes again the entities whose files this folder synced but that
    /// are gone from it. Their state stays until a write succeeds, so a
    /// failed one is tried again next time; that of deleted entities goes.
    async fn rewrite_vanished(
        &self,
        root: &Path,
        root_name: &str,
        entity_types: Option<&[String]>,
        not_here: &mut std::collections::BTreeMap<String, usize>,
        failed_keys: &mut Vec<EntityKey>,
    ) -> Result<SyncSummary, SyncError> {
        let mut synced = Vec::new();
        self.state
            .for_each_file(root_name, |file| synced.push((file.path, EntityKey::new(file.entity_type, file.entity_id))))
            .await?;
        let folder = root.to_path_buf();
        let vanished = tokio::task::spawn_blocking(move || {
            synced.retain(|(path, _)| safe_join(&folder, path).is_ok_and(|full| full.symlink_metadata().is_err()));
            synced
        })
        .await
        .map_err(|err| SyncError::Folder { path: root.to_path_buf(), reason: err.to_string() })?;
        let mut summary = SyncSummary::default();
        if vanished.is_empty() {
            return Ok(summary);
        }
        let keys: Vec<EntityKey> = vanished.iter().map(|(_, key)| key.clone()).collect();
        let alive = self.store.exists(&keys).await?;
        let dead: Vec<String> =
            vanished.iter().filter(|(_, key)| !alive.contains(key)).map(|(path, _)| path.clone()).collect();
        self.state.forget(root_name, &dead).await?;
        let rewrite: Vec<EntityKey> = keys
            .into_iter()
            .filter(|key| alive.contains(key) && entity_types.is_none_or(|types| types.contains(&key.entity_type)))
            .collect();
        let path_of: HashMap<EntityKey, String> = vanished.into_iter().map(|(path, key)| (key, path)).collect();
        for chunk in rewrite.chunks(self.config.sync_batch_size) {
            // No base: the file is missing, so the entity is simply written, where it was.
            let files = (&HashMap::new(), &path_of);
            let part = self.export_chunk(root, root_name, chunk, files, not_here, failed_keys).await?;
            summary.absorb(part);
        }
        failed_keys.clear(); // their state stays, so the next export finds them missing again
        Ok(summary)
    }

    fn export_one(
        &self,
        root: &Path,
        path: &str,
        entity: &Entity,
        base: Option<&FileState>,
    ) -> Result<Exported, String> {
        let full = safe_join(root, path).map_err(|err| err.to_string())?;
        let on_disk = match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err("the path is a symlink; refusing to write through it".into());
            }
            Ok(meta) if meta.is_file() => Some(scan::read_limited(&full, self.config.max_file_size.max(meta.len()))?),
            Ok(_) => return Err("the path is not a regular file".into()),
            Err(_) => None,
        };
        let rendered = self.render(entity, base.and_then(|b| b.frontmatter.as_deref()));
        let state = |size: u64, mtime_ns: i64| synced_state(path, entity, &rendered, size, mtime_ns);
        let file_hash = on_disk.as_ref().map(|bytes| blake3::hash(bytes).to_hex().to_string());
        let same = on_disk.as_deref() == Some(rendered.as_bytes());
        let sides = Sides::from_hashes(
            base.map(|b| (b.file_hash.as_str(), b.entity_hash.as_str())),
            file_hash.as_deref(),
            Some(&entity.content_hash),
            same,
        );
        match decide(sides, self.config.conflict_policy, Pass::Export) {
            Action::Export => {
                let (size, mtime) = scan::write_atomic(root, path, rendered.as_bytes(), scan::Mode::Keep)?;
                Ok(Exported::Written(state(size, mtime)))
            }
            Action::KeepBoth => Ok(Exported::BothChanged { file_bytes: on_disk.unwrap_or_default(), rendered }),
            Action::Warn(reason) => Ok(Exported::Left(Some(reason))),
            Action::Nothing if same => {
                let meta = std::fs::metadata(&full).map_err(|err| err.to_string())?;
                Ok(Exported::Same(state(meta.len(), scan::mtime_ns(&meta))))
            }
            _ => Ok(Exported::Left(None)),
        }
    }

    async fn export_deletions(
        &self,
        root: &Path,
        root_name: &str,
        deleted: &[EntityKey],
        (known, path_of): (&HashMap<String, FileState>, &HashMap<EntityKey, String>),
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        let mut forgotten = Vec::new();
        for key in deleted {
            let Some(path) = path_of.get(key).cloned() else { continue };
            let Some(base) = known.get(&path) else { continue }; // never synced here: nothing of ours to remove
            let full = safe_join(root, &path)
                .map_err(|err| SyncError::Folder { path: root.into(), reason: err.to_string() })?;
            let file_hash = std::fs::read(&full).ok().map(|bytes| blake3::hash(&bytes).to_hex().to_string());
            let sides =
                Sides::from_hashes(Some((&base.file_hash, &base.entity_hash)), file_hash.as_deref(), None, false);
            match decide(sides, self.config.conflict_policy, Pass::Export) {
                // Only a file that is exactly what this folder last synced is deleted.
                Action::DeleteFile => match scan::remove_file(root, &path) {
                    Ok(()) => summary.deleted += 1,
                    Err(error) => {
                        summary.failed.push(Problem { path: path.clone(), error });
                        continue;
                    }
                },
                Action::KeepEdit(reason) => summary.warnings.push(Problem { path: path.clone(), error: reason.into() }),
                _ => {}
            }
            forgotten.push(path);
        }
        self.state.forget(root_name, &forgotten).await?;
        Ok(())
    }

    /// Where each entity's file is: where this folder last synced it, else
    /// [`Syncer::path_on_disk`]. Entities without a path here (other types,
    /// unsafe ids) are left out.
    async fn paths_of(
        &self,
        root: &Path,
        root_name: &str,
        keys: Vec<EntityKey>,
    ) -> Result<HashMap<EntityKey, String>, SyncError> {
        let recorded = self.state.files_of(root_name, &keys).await?;
        Ok(keys
            .into_iter()
            .filter_map(|key| {
                let path = match recorded.get(&key) {
                    Some(file) => file.path.clone(),
                    None => self.path_on_disk(root, &key).ok()?,
                };
                Some((key, path))
            })
            .collect())
    }

    /// The file of `key` as the folder spells it: a name already on disk
    /// that differs only by Unicode normalization (macOS writes NFD) is
    /// that file, never a second one beside it.
    fn path_on_disk(&self, root: &Path, key: &EntityKey) -> Result<String, crate::layout::LayoutError> {
        let path = self.layout.path_for(key)?;
        Ok(if path.is_ascii() { path } else { scan::existing_spelling(root, &path) })
    }

    /// Conflicts still open: those whose conflict copy is still in the
    /// folder. Reads only; [`Syncer::sync`] forgets the resolved ones.
    pub async fn open_conflicts(&self) -> Result<Vec<Conflict>, SyncError> {
        Ok(self.conflicts_by_state().await?.0)
    }

    /// (open, resolved): a conflict is resolved when the user removed its copy.
    async fn conflicts_by_state(&self) -> Result<(Vec<Conflict>, Vec<Conflict>), SyncError> {
        let root = self.root()?;
        let recorded = self.state.conflicts(&root.to_string_lossy()).await?;
        Ok(recorded.into_iter().partition(|c| safe_join(&root, &c.conflict_path).is_ok_and(|p| p.exists())))
    }

    /// Forgets conflicts the user resolved (their copy is gone).
    async fn forget_resolved_conflicts(&self) -> Result<(), SyncError> {
        let resolved: Vec<String> = self.conflicts_by_state().await?.1.into_iter().map(|c| c.conflict_path).collect();
        self.state.resolve_conflicts(&self.root_name()?, &resolved).await?;
        Ok(())
    }

    pub async fn root_state(&self) -> Result<RootState, SyncError> {
        Ok(self.state.root(&self.root_name()?).await?)
    }

    /// Where the folder stands: last sync, entities per type, open conflicts.
    pub async fn folder_status(&self) -> Result<FolderStatus, SyncError> {
        let mut entities = std::collections::BTreeMap::new();
        for entity_type in std::iter::once(&self.config.base_type).chain(&self.config.entity_types) {
            entities.insert(entity_type.clone(), self.store.count(Some(entity_type)).await?);
        }
        let root = self.root_state().await?;
        let root_name = self.root_name()?;
        let in_folder = self.state.count_files(&root_name).await?;
        let outdated = self.state.count_outdated(&root_name).await?;
        Ok(FolderStatus {
            folder: self.config.sync_path.clone(),
            last_sync: root.last_sync,
            last_summary: root.last_summary.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            not_in_folder: entities.values().sum::<u64>().saturating_sub(in_folder) + outdated,
            entities,
            conflicts: self.open_conflicts().await?,
        })
    }
}

impl FolderStatus {
    /// What the database knows of a folder that is not on this machine
    /// (synced by a worker elsewhere): no entity counts, conflicts as recorded.
    pub async fn from_state(state: &StateDb, root: &str) -> Result<Self, SyncError> {
        let recorded = state.root(root).await?;
        Ok(Self {
            folder: PathBuf::from(root),
            last_sync: recorded.last_sync,
            last_summary: recorded.last_summary.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            entities: std::collections::BTreeMap::new(),
            not_in_folder: 0,
            conflicts: state.conflicts(root).await?,
        })
    }
}

/// A synced folder as `status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FolderStatus {
    pub folder: PathBuf,
    pub last_sync: Option<String>,
    pub last_summary: Option<serde_json::Value>,
    pub entities: std::collections::BTreeMap<String, u64>,
    /// Entities of the folder's types that no file of the folder holds, or
    /// whose file holds an older version (not exported yet, or failed to write).
    pub not_in_folder: u64,
    pub conflicts: Vec<Conflict>,
}

enum Exported {
    Written(FileState),
    /// The file already holds the entity.
    Same(FileState),
    /// Both changed: keep both versions.
    BothChanged {
        file_bytes: Vec<u8>,
        rendered: String,
    },
    /// Nothing written, perhaps with a reason for the user.
    Left(Option<&'static str>),
}

/// Counts a finished chunk, its failures included, and says where the run
/// stands: "Importing: 15/47 files".
fn count_chunk(tracker: &ProgressTracker, chunk: usize, failed: usize, verb: &str, noun: &str) {
    let failed = failed.min(chunk);
    tracker.advance((chunk - failed) as u64, failed as u64);
    let progress = tracker.snapshot();
    tracker.set_message(format!("{verb}: {}/{} {noun}", progress.current, progress.total));
}

/// The state of a file we just wrote (or found equal) from `entity`.
fn synced_state(path: &str, entity: &Entity, rendered: &str, size: u64, mtime_ns: i64) -> FileState {
    FileState {
        path: path.to_owned(),
        entity_type: entity.entity_type.clone(),
        entity_id: entity.id.clone(),
        size: size as i64,
        mtime_ns: trust_mtime(mtime_ns, now_ns()),
        file_hash: blake3::hash(rendered.as_bytes()).to_hex().to_string(),
        entity_hash: entity.content_hash.clone(),
        frontmatter: codec::parse(rendered.as_bytes()).ok().and_then(|d| d.frontmatter),
    }
}

fn file_state(file: &ReadFile, entity_hash: &str, scan_started_ns: i64) -> FileState {
    FileState {
        path: file.found.path.clone(),
        entity_type: file.key.entity_type.clone(),
        entity_id: file.key.id.clone(),
        size: file.found.size as i64,
        mtime_ns: trust_mtime(file.found.mtime_ns, scan_started_ns),
        file_hash: file.file_hash.clone(),
        entity_hash: entity_hash.to_owned(),
        frontmatter: file.doc.as_ref().and_then(|d| d.frontmatter.clone()),
    }
}

/// The mtime to record, or -1 when it is too close to `now` to trust: the
/// file could change again within the same tick without its mtime moving,
/// so the next scan hashes it instead of trusting size + mtime.
fn trust_mtime(mtime_ns: i64, now_ns: i64) -> i64 {
    if now_ns - mtime_ns < RACY_WINDOW_NS { -1 } else { mtime_ns }
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// A sync that reports nowhere.
pub fn no_progress() -> Arc<dyn ProgressReporter> {
    Arc::new(NoProgress)
}

/// Unchanged size and mtime, and an mtime not too recent to trust: the
/// file is the one last synced, without reading it.
fn quick_check_passes(found: &Found, state: &FileState) -> bool {
    state.size == found.size as i64 && state.mtime_ns == found.mtime_ns && state.mtime_ns >= 0
}
