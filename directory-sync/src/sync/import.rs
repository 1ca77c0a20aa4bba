//! Files to the store: the folder walked (or the paths given), each changed
//! file read, compared and written in chunks, deletions for files gone.

use super::{
    Problem, READ_PARALLELISM, ReadFile, SyncError, SyncSummary, Syncer, count_chunk, file_state, now_ns,
    quick_check_passes, synced_state,
};
use crate::codec;
use crate::decide::{Action, Pass, Sides, decide};
use crate::layout::{conflict_original, conflict_path, conflict_stamp, safe_join};
use crate::scan::{self, Found};
use crate::state::{Conflict, FileState};
use batch_core::{BatchRunner, ItemError, ProgressReporter, ProgressTracker, RunnerConfig};
use entity_store::{Entity, EntityKey, NewEntity, UpsertOptions, UpsertStatus, content_hash};
//__REMOVED__ //__REMOVED__ use serde_json::{Map, Value};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

impl Syncer {
    /// Imports the whole folder: every file changed since the last sync is
    /// written, and files gone since then delete their entities, unless
    /// most of the folder is gone ([`SyncError::MassDelete`]).
    pub async fn import(
        &self,
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        self.holding(&progress, cancel, self.import_held(progress.clone(), cancel)).await
    }

    /// Imports only `paths` (relative to the folder, e.g. from the
    /// watcher): those changed are written, those gone delete their entities.
    pub async fn import_paths(
        &self,
        paths: &[String],
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        self.holding(&progress, cancel, self.import_paths_held(paths, progress.clone(), cancel)).await
    }

    /// [`Syncer::import`] with the folder already held: the sorted walk
    /// merged with the sync state.
    pub(super) async fn import_held(
        &self,
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        let (root, started, scan_started_ns) = (self.root()?, Instant::now(), now_ns());
        let walk_root = root.clone();
        let walk = scan_blocking(&root, move || scan::walk(&walk_root)).await?;
        let mut pass = self.begin_import(root, started, scan_started_ns, walk).await?;
        let files = std::mem::take(&mut pass.files);
        let (candidates, known, gone, synced) = self.compare_with_state(&pass.root_name, files).await?;
        self.check_mass_delete(&pass.root, gone.len(), synced)?;
        self.write_candidates(pass, candidates, &known, &gone, progress, cancel).await
    }

    /// [`Syncer::import_paths`] with the folder held: only those paths'
    /// files and states are looked at.
    async fn import_paths_held(
        &self,
        paths: &[String],
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        let (root, started, scan_started_ns) = (self.root()?, Instant::now(), now_ns());
        let (walk_root, paths) = (root.clone(), paths.to_vec());
        let stat = move || Ok::<_, std::convert::Infallible>(scan::stat_paths(&walk_root, &paths));
        let (walk, gone) = scan_blocking(&root, stat).await?;
        let mut pass = self.begin_import(root, started, scan_started_ns, walk).await?;
        let mut asked: Vec<String> = pass.files.iter().map(|f| f.path.clone()).collect();
        asked.extend(gone.iter().cloned());
        let known = self.state.files_at(&pass.root_name, &asked).await?;
        let gone: Vec<String> = gone.into_iter().filter(|path| known.contains_key(path)).collect();
        if !gone.is_empty() {
            let synced = self.state.count_files(&pass.root_name).await? as usize;
            self.check_mass_delete(&pass.root, gone.len(), synced)?;
        }
        let mut candidates = std::mem::take(&mut pass.files);
        candidates.retain(|found| known.get(&found.path).is_none_or(|state| !quick_check_passes(found, state)));
        self.write_candidates(pass, candidates, &known, &gone, progress, cancel).await
    }

    /// What both imports do with their scan: its problems into the
    /// summary, conflict copies recorded, Unicode twins found.
    async fn begin_import(
        &self,
        root: PathBuf,
        started: Instant,
        scan_started_ns: i64,
        mut walk: scan::Walk,
    ) -> Result<ImportPass, SyncError> {
        let root_name = root.to_string_lossy().into_owned();
        let mut summary = SyncSummary::default();
        summary.failed.extend(walk.problems.drain(..).map(|(path, error)| Problem { path, error }));
        summary.warnings.extend(walk.warnings.drain(..).map(|(path, error)| Problem { path, error }));
        summary.skipped.extend(walk.skipped.drain(..).map(|(path, error)| Problem { path, error }));
        self.record_found_conflicts(&root_name, std::mem::take(&mut walk.conflict_copies)).await?;
        let twins = self.prefer_synced_twins(&root_name, scan::normalization_twins(&walk.files)).await?;
        let walked = walk.files.len();
        Ok(ImportPass { root, root_name, started, scan_started_ns, summary, files: walk.files, walked, twins })
    }

    /// What both imports do with the files that may have changed: look-alike
    /// names refused, the rest read and written a chunk at a time (reading
    /// the next chunk while writing this one), then the deletions.
    async fn write_candidates(
        &self,
        pass: ImportPass,
        mut candidates: Vec<Found>,
        known: &HashMap<String, FileState>,
        gone: &[String],
        progress: Arc<dyn ProgressReporter>,
        cancel: &batch_core::CancellationToken,
    ) -> Result<SyncSummary, SyncError> {
        let ImportPass { root, root_name, started, scan_started_ns, mut summary, walked, twins, .. } = pass;
        summary.unchanged += walked - candidates.len();
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
            let write = self.import_chunk((&root, &root_name), read, known, scan_started_ns);
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
        self.import_deletions((&root, &root_name), gone, known, &mut summary).await?;
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
    pub(super) async fn keep_both(
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
}

/// One import run between its scan and its writes.
struct ImportPass {
    root: PathBuf,
    root_name: String,
    started: Instant,
    /// Files changed after this are read again next time (see `trust_mtime`).
    scan_started_ns: i64,
    summary: SyncSummary,
    /// What the scan found, until the candidates are picked from it.
    files: Vec<Found>,
    walked: usize,
    /// Refused path -> kept path, for names that differ only by Unicode normalization.
    twins: HashMap<String, String>,
}

/// Runs a scan of the folder on the blocking pool.
async fn scan_blocking<T: Send + 'static, E: std::error::Error + Send + Sync + 'static>(
    root: &Path,
    scan: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(scan)
        .await
        .map_err(|err| SyncError::folder(root, "the scan stopped", err))?
        .map_err(|err| SyncError::folder(root, "cannot read it", err))
}
