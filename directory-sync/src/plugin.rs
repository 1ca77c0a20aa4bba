//! The plugin for host applications: job types `directory-sync`,
//! `directory-import` and `directory-export`, and the initial sync.

use std::path::PathBuf;
use std::sync::Arc;

use job_queue::{EnqueueOptions, JobContext, JobError, JobHandler, JobId, NewJob, Queue, Registry};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, SyncConfig};
use crate::state::StateDb;
use crate::sync::{Direction, SyncError, SyncSummary, Syncer};

/// Job type of a two-way sync ([`SyncInput`]).
pub const SYNC_JOB: &str = "directory-sync";
/// Job type of an import of files ([`ImportInput`]).
pub const IMPORT_JOB: &str = "directory-import";
/// Job type of an export of entities ([`ExportInput`]).
pub const EXPORT_JOB: &str = "directory-export";

/// Input of a [`SYNC_JOB`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncInput {
    /// The folder; the plugin's own when absent.
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// Both ways (default), or one.
    #[serde(default)]
    pub direction: Direction,
    /// Delete entities even when most of the folder's files are gone at
    /// once (see [`crate::MASS_DELETE_SHARE`]).
    #[serde(default)]
    pub allow_mass_delete: bool,
}

/// Input of an [`IMPORT_JOB`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportInput {
    /// The folder; the plugin's own when absent.
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// Relative paths to import; all of the folder when absent.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// As in [`SyncInput`].
    #[serde(default)]
    pub allow_mass_delete: bool,
}

/// Input of an [`EXPORT_JOB`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportInput {
    /// The folder; the plugin's own when absent.
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// Entity types to export; all when absent.
    #[serde(default)]
    pub entity_types: Option<Vec<String>>,
}

/// What [`DirectorySyncPlugin::start`] set going.
pub struct Started {
    /// The initial sync job, when `initial_sync` is on.
    pub initial_sync: Option<JobId>,
    /// The watch loop, when `watch_enabled` is on.
    pub watcher: Option<tokio::task::JoinHandle<Result<(), SyncError>>>,
}

/// One synced folder inside a host application.
#[derive(Clone)]
pub struct DirectorySyncPlugin {
    syncer: Syncer,
    queue: Queue,
    /// Why the watcher polls instead of watching, once it started.
    polling: Arc<std::sync::Mutex<Option<String>>>,
}

impl DirectorySyncPlugin {
    /// Checks the configuration; does no I/O.
    pub fn new(
        config: SyncConfig,
        store: Arc<dyn entity_store::EntityStore>,
        state: StateDb,
        queue: Queue,
    ) -> Result<Self, ConfigError> {
        let syncer = Syncer::new(config, store, state, Some(queue.clone()))?;
        Ok(Self { syncer, queue, polling: Arc::default() })
    }

    /// The syncer of the plugin's own folder.
    pub fn syncer(&self) -> &Syncer {
        &self.syncer
    }

    /// After [`start_watch`](Self::start_watch): why the folder is polled
    /// instead of watched (the system's watch limit), if it is.
    pub fn watch_polling(&self) -> Option<String> {
        self.polling.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Checks the folder exists, creates the state tables, adds the job
    /// handlers to `registry` and, if configured, queues the initial sync
    /// to run after its delay. Scans nothing itself.
    pub async fn register(&self, registry: &mut Registry) -> Result<Option<JobId>, SyncError> {
        self.syncer.root()?;
        self.syncer.state().migrate().await?;
        register_handlers(registry, Folders::Fixed(self.syncer.clone()));
        if !self.syncer.config().initial_sync {
            return Ok(None);
        }
        let delay = chrono::Duration::from_std(self.syncer.config().initial_sync_delay).unwrap_or_default();
        let mut job = self.sync_job();
        job.options.run_at = Some(chrono::Utc::now() + delay);
        Ok(self.queue.enqueue_many(vec![job]).await?.into_iter().next())
    }

    /// [`register`](Self::register), then, when `watch_enabled`, the watcher
    /// (until `shutdown`): what a host calls once at start-up.
    pub async fn start(
        &self,
        registry: &mut Registry,
        shutdown: batch_core::CancellationToken,
    ) -> Result<Started, SyncError> {
        let initial_sync = self.register(registry).await?;
        let watcher = if self.syncer.config().watch_enabled { Some(self.start_watch(shutdown)?) } else { None };
        Ok(Started { initial_sync, watcher })
    }

    /// The job for `work` on this folder, with the folder's priority and a
    /// dedup key that describes the work: the same request made twice (by
    /// the command line, the watcher, a host) becomes one job, and
    /// different work (other files, other types, a confirmed mass delete)
    /// never joins another's.
    pub fn job(&self, work: FolderJob) -> NewJob {
        let (job_type, input, detail) = match work {
            FolderJob::Sync(input) => {
                let detail = format!("{:?}{}", input.direction, mass(input.allow_mass_delete));
                (SYNC_JOB, serde_json::to_value(SyncInput { folder: Some(self.folder()), ..input }), detail)
            }
            FolderJob::Import(input) => {
                let detail = format!("{}{}", list_key(input.paths.as_deref()), mass(input.allow_mass_delete));
                (IMPORT_JOB, serde_json::to_value(ImportInput { folder: Some(self.folder()), ..input }), detail)
            }
            FolderJob::Export(input) => {
                let detail = list_key(input.entity_types.as_deref());
                (EXPORT_JOB, serde_json::to_value(ExportInput { folder: Some(self.folder()), ..input }), detail)
            }
        };
        let options = EnqueueOptions {
            priority: self.syncer.config().sync_priority,
            dedup_key: Some(format!("{}{job_type}:{detail}", self.dedup_prefix())),
            source: Some("directory-sync".into()),
            ..EnqueueOptions::default()
        };
        NewJob::new(job_type, input.unwrap_or_default()).with_options(options)
    }
}

impl DirectorySyncPlugin {
    /// The start of every dedup key of this folder's jobs: a worker that
    /// claims only these (`job_queue::ClaimOnly`) leaves other folders'
    /// jobs alone. The path's length comes first, so no folder's prefix is
    /// the start of another's (`/a/b` and `/a/b:c`).
    pub fn dedup_prefix(&self) -> String {
        folder_dedup_prefix(&self.syncer.config().sync_path)
    }
}

/// [`DirectorySyncPlugin::dedup_prefix`] of the folder at `sync_path`.
pub fn folder_dedup_prefix(sync_path: &std::path::Path) -> String {
    let root = sync_path.display().to_string();
    format!("directory-sync:{}:{root}:", root.len())
}

/// Work on one folder, as [`DirectorySyncPlugin::job`] queues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderJob {
    /// A two-way (or one-way) sync.
    Sync(SyncInput),
    /// An import of files.
    Import(ImportInput),
    /// An export of entities.
    Export(ExportInput),
}

fn mass(allowed: bool) -> &'static str {
    if allowed { ":allow-mass-delete" } else { "" }
}

/// A list (files, types) as part of a dedup key: `all`, the sorted list
/// itself when short, else its BLAKE3 digest.
fn list_key(list: Option<&[String]>) -> String {
    let Some(list) = list else { return "all".into() };
    let mut sorted: Vec<&str> = list.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let joined = sorted.join("\0");
    if joined.len() <= 120 {
        format!("[{}]", sorted.join(","))
    } else {
        format!("blake3:{}", blake3::hash(joined.as_bytes()).to_hex())
    }
}

impl DirectorySyncPlugin {
    /// Watches the folder until `shutdown`: each debounced burst of file
    /// events becomes one `directory-import` job for its paths, a lost event
    /// or removed folder a full scan, and every `watch_interval` a full sync
    /// runs as a safety net. Jobs run on whatever workers serve the queue.
    /// The watcher is running when this returns; the task ends at `shutdown`.
    pub fn start_watch(
        &self,
        shutdown: batch_core::CancellationToken,
    ) -> Result<tokio::task::JoinHandle<Result<(), SyncError>>, SyncError> {
        let root = self.syncer.root()?;
        let (watcher, changes) = crate::watch::watch(&root, WATCH_DEBOUNCE)
            .map_err(|err| SyncError::folder(&root, "cannot watch it", err))?;
        if let Some(why) = &watcher.polling {
            tracing::warn!(folder = %root.display(), "{why}");
        }
        self.polling.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone_from(&watcher.polling);
        let plugin = self.clone();
        Ok(tokio::spawn(async move { plugin.watch_loop(watcher, changes, root, shutdown).await }))
    }

    async fn watch_loop(
        &self,
        _watcher: crate::watch::FolderWatcher,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<crate::watch::FolderChange>,
        root: std::path::PathBuf,
        shutdown: batch_core::CancellationToken,
    ) -> Result<(), SyncError> {
        let mut safety_net = tokio::time::interval(self.syncer.config().watch_interval);
        safety_net.tick().await;
        loop {
            let job = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                change = changes.recv() => match change {
                    Some(crate::watch::FolderChange::Paths(paths)) => self.import_job(paths),
                    Some(crate::watch::FolderChange::FullScan) => self.full_scan_job(),
                    None => return Err(SyncError::folder_refused(root, "the watcher stopped")),
                },
                _ = safety_net.tick() => self.sync_job(),
            };
            self.queue.enqueue_many(vec![job]).await?;
        }
    }

    fn folder(&self) -> PathBuf {
        self.syncer.config().sync_path.clone()
    }

    /// An import of these paths; the same burst queued twice is one job.
    pub fn import_job(&self, paths: Vec<String>) -> NewJob {
        self.job(FolderJob::Import(ImportInput { paths: Some(paths), ..ImportInput::default() }))
    }

    /// A full import; while one waits, more requests add nothing.
    pub fn full_scan_job(&self) -> NewJob {
        self.job(FolderJob::Import(ImportInput::default()))
    }

    /// A full sync both ways; while one waits, more requests add nothing
    /// (the command line's `sync` joins the same job).
    pub fn sync_job(&self) -> NewJob {
        self.job(FolderJob::Sync(SyncInput::default()))
    }
}

/// Quiet time before a burst of file events is handed on.
const WATCH_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(250);

#[allow(clippy::needless_pass_by_value)] // used as `map_err(job_error)`
fn job_error(err: SyncError) -> JobError {
    match err {
        SyncError::Folder { .. } | SyncError::Cancelled | SyncError::MassDelete { .. } => {
            JobError::permanent(err.to_string())
        }
        _ => JobError::retryable(err.to_string()),
    }
}

/// Which folder a job works on.
#[derive(Clone)]
pub enum Folders {
    /// A plugin's one folder; jobs for other folders fail.
    Fixed(Syncer),
    /// Any folder named in the job, with its saved settings
    /// (`SyncConfig::for_folder`), on this database: what a `worker` runs.
    Any(crate::Database),
}

impl Folders {
    fn syncer(&self, folder: Option<&std::path::Path>) -> Result<Syncer, JobError> {
        match (self, folder) {
            (Self::Fixed(syncer), None) => Ok(syncer.clone()),
            (Self::Fixed(syncer), Some(folder)) => {
                let own = &syncer.config().sync_path;
                let same = own == folder || own.canonicalize().ok() == folder.canonicalize().ok();
                if same {
                    Ok(syncer.clone())
                } else {
                    Err(JobError::permanent(format!("this worker syncs {}, not {}", own.display(), folder.display())))
                }
            }
            (Self::Any(_), None) => Err(JobError::permanent("the job names no folder")),
            (Self::Any(db), Some(folder)) => {
                // Settings being replaced are read whole (they are renamed into place), so an
                // unreadable file is worth another attempt before the job is given up.
                let config = SyncConfig::for_folder(folder).map_err(|err| JobError::retryable(err.to_string()))?;
                Syncer::new(config, db.store.clone(), db.state.clone(), Some(db.queue.clone()))
                    .map_err(|err| JobError::permanent(err.to_string()))
            }
        }
    }
}

/// Adds the three job types to `registry`.
pub fn register_handlers(registry: &mut Registry, folders: Folders) {
    registry.register(SYNC_JOB, SyncHandler(folders.clone()));
    registry.register(IMPORT_JOB, ImportHandler(folders.clone()));
    registry.register(EXPORT_JOB, ExportHandler(folders));
}

struct SyncHandler(Folders);
struct ImportHandler(Folders);
struct ExportHandler(Folders);

#[async_trait::async_trait]
impl JobHandler for SyncHandler {
    type Input = SyncInput;
    type Output = SyncSummary;

    async fn process(&self, input: SyncInput, ctx: JobContext) -> Result<SyncSummary, JobError> {
        let syncer = self.0.syncer(input.folder.as_deref())?.allowing_mass_delete(input.allow_mass_delete);
        syncer.sync(input.direction, ctx.progress.clone(), &ctx.cancel).await.map_err(job_error)
    }
}

#[async_trait::async_trait]
impl JobHandler for ImportHandler {
    type Input = ImportInput;
    type Output = SyncSummary;

    async fn process(&self, input: ImportInput, ctx: JobContext) -> Result<SyncSummary, JobError> {
        let syncer = self.0.syncer(input.folder.as_deref())?.allowing_mass_delete(input.allow_mass_delete);
        match &input.paths {
            Some(paths) => syncer.import_paths(paths, ctx.progress.clone(), &ctx.cancel).await,
            None => syncer.import(ctx.progress.clone(), &ctx.cancel).await,
        }
        .map_err(job_error)
    }
}

#[async_trait::async_trait]
impl JobHandler for ExportHandler {
    type Input = ExportInput;
    type Output = SyncSummary;

    async fn process(&self, input: ExportInput, ctx: JobContext) -> Result<SyncSummary, JobError> {
        let syncer = self.0.syncer(input.folder.as_deref())?;
        syncer.export(input.entity_types.as_deref(), ctx.progress.clone(), &ctx.cancel).await.map_err(job_error)
    }
}
