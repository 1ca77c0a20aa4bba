//! The store to files: changed entities written as markdown, deletions
//! removed, vanished files written again.

use super::{CHANGES_PAGE, Problem, SyncError, SyncSummary, Syncer, count_chunk, synced_state};
use crate::decide::{Action, Pass, Sides, decide};
use crate::layout::safe_join;
use crate::scan;
use crate::state::FileState;
use batch_core::{ProgressReporter, ProgressTracker};
use entity_store::{Change, Entity, EntityKey};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

impl Syncer {
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
    pub(super) async fn export_held(
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
                // Within a page too: a page may hold thousands of changes.
                if cancel.is_cancelled() {
                    return Err(SyncError::Cancelled);
                }
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
        .map_err(|err| SyncError::folder(root, "looking for vanished files stopped", err))?;
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
                .map_err(|err| SyncError::folder(root, "a recorded path leaves the folder", err))?;
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
