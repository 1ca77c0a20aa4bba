//! Opening the database and the tools a command works with, the folder's
//! settings, and the job registry and worker settings of each command.

use crate::cli::{JobArgs, ToolOptions};
use crate::display::Output;
use crate::stop::COMMAND_SHUTDOWN;
use anyhow::{Context, Result, bail};
use directory_sync::{Database, DirectorySyncPlugin, EMBED_BATCH, Folders, SyncConfig, register_handlers, state_dir};
use embedding::{EMBED_JOB, Embedder, HashingEmbedder};
use job_queue::{ClaimOnly, Registry, WorkerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The database and the batch tools over it, as `options` say.
pub(crate) async fn open_tools(
    database: Option<&str>,
    options: &ToolOptions,
) -> Result<(Database, batch_tools::BatchTools)> {
    let files_root = match &options.files_root {
        Some(folder) => folder.clone(),
        None => std::env::current_dir()?,
    };
    let files =
        batch_tools::FilesRoot::new(&files_root).with_context(|| format!("files root {}", files_root.display()))?;
    let folder = folder_or_cwd(options.path.clone())?;
    let db = open_database(database, &folder).await?;
    let mut tools =
        db.batch_tools(folder_embedder(&folder)?, files).await?.allowing_private_urls(options.allow_private_urls);
    if let (Some(url), Some(model)) = (&options.chat_url, &options.chat_model) {
        let chat = batch_tools::ChatEnhancer::new(url, model, "OPENAI_API_KEY").map_err(|err| anyhow::anyhow!(err))?;
        tools = tools.with_enhancer(Arc::new(chat));
    }
    Ok((db, tools))
}

/// The embedding model of `folder`'s saved settings; none for a folder
/// never synced (the default).
pub(crate) fn folder_embedder(folder: &Path) -> Result<Option<Arc<dyn Embedder>>> {
    if !SyncConfig::is_saved(folder) {
        return Ok(None);
    }
    Ok(SyncConfig::for_folder(folder)?.embedder.model())
}

pub(crate) fn folder_or_cwd(path: Option<PathBuf>) -> Result<PathBuf> {
    path.map_or_else(|| std::env::current_dir().context("the current folder"), Ok)
}

/// Every database this process opened, closed on the way out.
pub(crate) static OPENED: std::sync::Mutex<Vec<Database>> = std::sync::Mutex::new(Vec::new());

/// Closes what the command opened, so a SQLite database is left as one
/// file (its WAL copied in and removed) and the next reader changes
/// nothing. Bounded: a lost server must not hold the exit.
pub(crate) async fn close_databases() {
    let opened = std::mem::take(&mut *OPENED.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    for db in opened {
        let _ = tokio::time::timeout(Duration::from_secs(3), db.close()).await;
    }
}

/// The database named on the command line or in `DATABASE_URL`, else SQLite inside the folder.
pub(crate) async fn open_database(database: Option<&str>, folder: &Path) -> Result<Database> {
    let url = if let Some(url) = database {
        url.to_owned()
    } else {
        let dir = state_dir(folder);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        format!("sqlite://{}", dir.join("store.db").display())
    };
    let db = Database::open(&url).await.with_context(|| format!("opening the database {}", redact(&url)))?;
    OPENED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(db.clone());
    Ok(db)
}

/// For commands that only read (`status`, `search`, `jobs`, `dashboard`):
/// the database, which must exist already; reading never creates one.
pub(crate) async fn open_existing_database(database: Option<&str>, folder: &Path) -> Result<Database> {
    existing_folder(folder)?;
    if database.is_none() {
        let file = state_dir(folder).join("store.db");
        if !file.is_file() {
            bail!(
                "no database for {} yet (looked for {}); run `directory-sync sync {}` first, or give --database",
                folder.display(),
                file.display(),
                folder.display()
            );
        }
    }
    open_database(database, folder).await
}

/// A URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The folder's settings with the command line's overrides, saved for next
/// time. A folder without settings and without `--entity-types` takes as
/// types its own type-named folders and every type the database holds, so
/// a sync or export into a new folder writes every entity.
pub(crate) async fn folder_config(job: &JobArgs, db: &Database, output: Output) -> Result<SyncConfig> {
    let folder = existing_folder(&job.path)?;
    let first_time = !SyncConfig::is_saved(&folder);
    let mut config = SyncConfig::with_store_types(&folder, db.store.as_ref(), job.entity_types.as_deref()).await?;
    if let Some(size) = job.batch_size {
        config.sync_batch_size = size;
    }
    if let Some(priority) = job.priority {
        config.sync_priority = priority;
    }
    if let Some(embedder) = job.embedder {
        config.embedder = embedder;
    }
    config.validate()?;
    config.save_for_folder().with_context(|| format!("saving settings in {}", state_dir(&folder).display()))?;
    if let Some(model) = config.embedder.model() {
        // A sync embeds what it writes. What has no vector of this model
        // (written before the model was chosen, by a folder without one, or
        // through another database) is queued here, and the command waits
        // for it as well. Dedup keys make queueing it twice a no-op.
        embedding::embed_stale(
            &db.queue,
            db.store.as_ref(),
            db.vectors().await?.as_ref(),
            model.model_id(),
            EMBED_BATCH,
        )
        .await?;
    }
    if first_time && !output.quiet && !output.json {
        errln!("{}", describe_types(&config, job.entity_types.is_some()));
    }
    Ok(config)
}

/// How the folder's entity types were chosen, said once, on its first sync.
pub(crate) fn describe_types(config: &SyncConfig, given: bool) -> String {
    let base = &config.base_type;
    let how = if given {
        "as --entity-types says".to_owned()
    } else {
        format!(
            "its lowercase top-level folders named like a type, and the types the database holds; files elsewhere are `{base}` entities, their folders part of the id"
        )
    };
    let types = if config.entity_types.is_empty() { "none".to_owned() } else { config.entity_types.join(", ") };
    format!(
        "entity types of this folder: {types} ({how}); saved in {}/config.json, change with --entity-types",
        directory_sync::layout::STATE_DIR
    )
}

/// `path`, canonical, if it is a folder that exists: a moved or unmounted
/// folder is an error, never created anew.
pub(crate) fn existing_folder(path: &Path) -> Result<PathBuf> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => path.canonicalize().with_context(|| format!("folder {}", path.display())),
        Ok(_) => bail!("{} is a file, not a folder", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!("no such folder: {}", path.display()),
        Err(err) => Err(err).with_context(|| format!("folder {}", path.display())),
    }
}

pub(crate) async fn registry_for(db: &Database, folders: Folders) -> Result<Registry> {
    let mut registry = Registry::new();
    register_handlers(&mut registry, folders);
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::default());
    registry.register(EMBED_JOB, db.embed_handler(embedder).await?);
    Ok(registry)
}

pub(crate) fn worker_config() -> WorkerConfig {
    // The model uses every core: one embedding job at a time.
    let mut config = WorkerConfig::default();
    config.type_limits.insert(EMBED_JOB.to_owned(), 1);
    config
}

/// A worker inside a command: it runs the jobs of `plugin`'s folder (none
/// when `None`) and embedding, and leaves every other folder's jobs queued
/// for the `directory-sync worker` meant for them.
pub(crate) fn command_worker_config(plugin: Option<&DirectorySyncPlugin>) -> WorkerConfig {
    let dedup_prefix = plugin.map(DirectorySyncPlugin::dedup_prefix);
    WorkerConfig {
        claim_only: Some(ClaimOnly { dedup_prefix, types: vec![EMBED_JOB.to_owned()] }),
        shutdown_timeout: COMMAND_SHUTDOWN,
        ..worker_config()
    }
}
