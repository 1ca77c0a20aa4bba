//! Import, export and sync of one folder against the entity store: the
//! types and the run of a sync here, the two directions in `import` and
//! `export`, what `status` shows in `status`; the rule for each file in
//! `crate::decide`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use batch_core::{NoProgress, ProgressReporter, ProgressTracker};
use entity_store::{Entity, EntityKey, EntityStore};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::config::SyncConfig;
use crate::layout::Layout;
use crate::lock::FolderLock;
use crate::scan::Found;
use crate::state::{Conflict, FileState, StateDb};

/// Reads in flight when importing: cold reads are latency bound.
mod export;
mod import;
mod status;

pub use status::FolderStatus;

/// Reads in flight when importing: cold reads are latency bound.
const READ_PARALLELISM: usize = 16;

/// A file modified this close to the scan may change again within the same
/// mtime tick; it is hashed on the next scan instead of trusted.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Entity changes read per `changes_since` page.
const CHANGES_PAGE: usize = 5_000;

/// Entities per queued embedding job.
pub const EMBED_BATCH: usize = 200;

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
    /// The file's path relative to the folder, or the entity's key.
    pub path: String,
    /// What went wrong, or what to look at.
    pub error: String,
}

/// What a sync did; printed by the CLI and stored as the job's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncSummary {
    /// Files imported as new entities.
    pub imported: usize,
    /// Entities updated from their changed files.
    pub updated: usize,
    /// Files read that matched their entity.
    pub unchanged: usize,
    /// Files written from entities.
    pub exported: usize,
    /// Entities and files deleted because the other side was.
    pub deleted: usize,
    /// Both sides changed; where the other version went.
    pub conflicts: Vec<Conflict>,
    /// Files or entities that could not be synced, and why.
    pub failed: Vec<Problem>,
    /// Things done differently than asked, to look at.
    pub warnings: Vec<Problem>,
    /// What the walk left out on purpose (hidden folders, hidden files), and why.
    #[serde(default)]
    pub skipped: Vec<Problem>,
    /// Files whose contents were read (0 for a no-change re-sync).
    pub files_read: usize,
    /// Entities that changed and were queued for embedding.
    pub embed_queued: usize,
    /// Wall time of the sync in milliseconds.
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
    /// Files to entities only.
    Import,
    /// Entities to files only.
    Export,
    /// Both ways (import, then export).
    #[default]
    Both,
}

/// Failures of the sync as a whole (per-file problems go in the summary).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The folder cannot be used (missing, not a folder, unreadable, not watchable).
    #[error("cannot use the folder {path}: {reason}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What failed, in words.
        reason: String,
        /// The error underneath, when there is one (an I/O error, a watcher's).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The entity store failed.
    #[error(transparent)]
    Store(#[from] entity_store::StoreError),
    /// The sync state's database failed.
    #[error("sync state: {0}")]
    State(#[from] sqlx::Error),
    /// Queueing embedding jobs failed.
    #[error("queueing embedding jobs: {0}")]
    Queue(#[from] job_queue::QueueError),
    /// Creating or upgrading the sync state's tables failed.
    #[error("creating or upgrading the sync state tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Most of the folder's files vanished at once; nothing was deleted.
    #[error(
        "refusing to delete {gone} of the {synced} entities synced from {path}: their files are gone from the folder \
         (an unmounted share, a moved or emptied folder?); if this is what you want, run again with --allow-mass-delete"
    )]
    MassDelete {
        /// The folder.
        path: PathBuf,
        /// Entities whose files are gone.
        gone: usize,
        /// Entities synced from the folder in all.
        synced: usize,
    },
    /// The sync was cancelled; what it wrote before is kept.
    #[error("cancelled")]
    Cancelled,
}

impl SyncError {
    /// [`SyncError::Folder`] with `reason` and the error underneath, kept as its source.
    pub fn folder(
        path: impl Into<PathBuf>,
        reason: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let source = source.into();
        SyncError::Folder { path: path.into(), reason: format!("{reason}: {source}"), source: Some(source) }
    }

    /// [`SyncError::Folder`] with only a reason: nothing failed underneath.
    pub fn folder_refused(path: impl Into<PathBuf>, reason: &str) -> Self {
        SyncError::Folder { path: path.into(), reason: reason.to_owned(), source: None }
    }
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
    /// A syncer of `config`'s folder on these databases.
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

    /// Its settings.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The entity store it syncs with.
    pub fn store(&self) -> &Arc<dyn EntityStore> {
        &self.store
    }

    /// Its sync state.
    pub fn state(&self) -> &StateDb {
        &self.state
    }

    /// The folder's canonical path, which also names it in the state
    /// tables. A folder that does not exist is an error, never created: a
    /// job for a moved or unmounted folder must not write a new one.
    pub fn root(&self) -> Result<PathBuf, SyncError> {
        let path = &self.config.sync_path;
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                path.canonicalize().map_err(|err| SyncError::folder(path, "cannot resolve its path", err))
            }
            Ok(_) => Err(SyncError::folder_refused(path, "it is a file, not a folder")),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(SyncError::folder(path, "no such folder", err))
            }
            Err(err) => Err(SyncError::folder(path, "cannot read it", err)),
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
                summary.absorb(self.import_held(progress.clone(), cancel).await?);
            }
            if direction != Direction::Import {
                if cancel.is_cancelled() {
                    return Err(SyncError::Cancelled);
                }
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

    /// Refuses to go on when `gone` of `synced` files vanished at once,
    /// unless the user allowed it.
    fn check_mass_delete(&self, root: &Path, gone: usize, synced: usize) -> Result<(), SyncError> {
        if is_mass_delete(gone, synced) && !self.allow_mass_delete {
            return Err(SyncError::MassDelete { path: root.to_path_buf(), gone, synced });
        }
        Ok(())
    }

    async fn queue_embedding(&self, items: Vec<embedding::EmbedItem>) -> Result<usize, SyncError> {
        let Some(queue) = &self.embed_queue else { return Ok(0) };
        if items.is_empty() || self.config.embedder == crate::config::EmbedderSetting::None {
            return Ok(0);
        }
        let count = items.len();
        let jobs = embedding::embed_jobs(&items, EMBED_BATCH, "directory-sync");
        queue.enqueue_many(jobs).await?;
        Ok(count)
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
