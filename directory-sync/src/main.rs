//! `directory-sync`: keep a folder of markdown files and a database in step.
//!
//! Exit codes: 0 all done, 1 some items failed, 2 usage, configuration or
//! fatal errors (one line on stderr).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use batch_core::CancellationToken;
use batch_tools::background::{TOOL_JOB, ToolJobHandler};
use clap::{Parser, Subcommand, ValueEnum};
use directory_sync::jobs::JobView;
use directory_sync::{
    Database, Direction, DirectorySyncPlugin, ExportInput, FolderJob, Folders, ImportInput, SyncConfig, SyncInput,
    SyncSummary, Syncer, register_handlers, state_dir,
};
use embedding::{EMBED_JOB, Embedder, HashingEmbedder, Search};
use entity_store::EntityStore;
use job_queue::{ClaimOnly, JobEventKind, JobFilter, JobId, JobState, Registry, WorkerConfig};
use serde_json::json;

/// `println!` that ends the process quietly when stdout is closed (`| head`):
/// exit 0, the reader has what it wanted; never a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(err) = writeln!(std::io::stdout().lock(), $($arg)*) {
            closed_output(&err);
        }
    }};
}

/// `eprintln!` that never panics: a closed stderr loses the line, nothing else.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Stdout is gone: a closed pipe ends the command quietly, any other
/// failure to write says so and exits 2.
fn closed_output(err: &std::io::Error) -> ! {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    errln!("directory-sync: cannot write to standard output: {err}");
    std::process::exit(2);
}

#[derive(Parser)]
#[command(name = "directory-sync", version, about = "Keep a folder of markdown files and a database in step")]
struct Cli {
    /// sqlite://PATH or postgres://...; default: SQLite in PATH/.directory-sync/store.db.
    #[arg(long, global = true, env = "DATABASE_URL")]
    database: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// No progress output.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct JobArgs {
    /// The folder.
    path: PathBuf,
    /// Queue the job, print its id and return; a `worker` runs it.
    #[arg(long)]
    detach: bool,
    /// Files per read-and-write round.
    #[arg(long)]
    batch_size: Option<usize>,
    /// 1-10, higher runs first.
    #[arg(long)]
    priority: Option<i32>,
    /// Top-level folders that are entity types (saved for the folder; discovered when never given).
    #[arg(long, value_delimiter = ',')]
    entity_types: Option<Vec<String>>,
    /// Delete the entities of missing files even when most of the folder's
    /// files (or all) are gone at once; without it such a run deletes
    /// nothing and exits 2, as an unmounted or emptied folder looks the same.
    #[arg(long)]
    allow_mass_delete: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Import changed files, then export changed entities.
    Sync(JobArgs),
    /// Files to the database.
    Import {
        #[command(flatten)]
        job: JobArgs,
        /// Only these files (relative to the folder).
        #[arg(long = "file")]
        files: Vec<String>,
    },
    /// The database to files.
    Export {
        #[command(flatten)]
        job: JobArgs,
        /// Only entities of these types.
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
    },
    /// Sync, then keep syncing on every change until Ctrl-C.
    Watch(JobArgs),
    /// Jobs, entity counts, conflicts and the last sync.
    Status { path: Option<PathBuf> },
    /// Search the entities.
    Search {
        query: String,
        #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
        mode: Mode,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// The folder whose database to search (default: the current folder).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// List, show, cancel or retry jobs.
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
        #[arg(long, global = true)]
        path: Option<PathBuf>,
    },
    /// Run one batch tool (batch_search, batch_add, batch_update,
    /// batch_delete, batch_enhance, batch_extract, batch_export,
    /// batch_import) on JSON arguments and print its JSON result; `-` reads
    /// them from stdin.
    Tool {
        name: String,
        #[arg(default_value = "{}")]
        arguments: String,
        #[command(flatten)]
        options: ToolOptions,
    },
    /// Serve the batch tools over the Model Context Protocol: stdio, or
    /// streamable HTTP at http://ADDR/mcp with --http (a loopback address,
    /// or any address with --token).
    Serve {
        /// Listen here (e.g. 127.0.0.1:8090) instead of speaking on stdin/stdout.
        #[arg(long)]
        http: Option<String>,
        /// Every HTTP request must carry this token (Authorization: Bearer
        /// TOKEN); needed to listen beyond loopback.
        #[arg(long, env = "DIRECTORY_SYNC_TOKEN", requires = "http", hide_env_values = true)]
        token: Option<String>,
        /// A folder the folder tools (sync_folder, import_files,
        /// export_entities) may touch; repeat for more (default: the --path
        /// folder). Any other folder is refused.
        #[arg(long = "folder")]
        folders: Vec<PathBuf>,
        /// Run no jobs in this process (folder jobs, background tool calls,
        /// embedding): leave them to `directory-sync worker` processes on
        /// the same database.
        #[arg(long)]
        no_worker: bool,
        #[command(flatten)]
        options: ToolOptions,
    },
    /// A live web dashboard of jobs and sync at http://ADDR/ (e.g.
    /// 127.0.0.1:8091): progress bars, queued and recent jobs, cancel and
    /// retry. Read-only on a non-loopback address unless a token is given.
    Dashboard {
        addr: String,
        /// The folder whose database and sync state to show (default: the current folder).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Actions (cancel, retry) need this token (sent by the page as
        /// x-dashboard-token).
        #[arg(long, env = "DIRECTORY_SYNC_DASHBOARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Run jobs of every type for any folder until Ctrl-C or SIGTERM:
    /// syncs, imports, exports, embedding, and batch tool calls queued with
    /// `background: true` (their file paths resolved against --files-root).
    Worker {
        /// Jobs run at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// A job whose worker stops renewing it for this long is given to another worker.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        lease_secs: u64,
        #[command(flatten)]
        options: ToolOptions,
    },
}

#[derive(Subcommand)]
enum JobsAction {
    /// The newest jobs first: id, type, state and progress.
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(JobState::ALL.map(JobState::as_str)))]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One job: state, progress, rate, error and its result.
    Show {
        /// The job's id (from `jobs list` or a command's `--detach`).
        id: JobId,
    },
    /// Cancels a queued or running job (a running one stops at its next batch).
    Cancel {
        /// The job's id.
        id: JobId,
    },
    /// Queues a failed or dead job again.
    Retry {
        /// The job's id.
        id: JobId,
    },
}

/// How `search` ranks.
#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// The full-text index: any word may match.
    Text,
    /// Nearest by embedding (similar meaning with a real model).
    Vector,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let outcome = runtime.block_on(run(cli));
    runtime.block_on(close_databases());
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            errln!("directory-sync: {}", describe(&err));
            std::process::exit(2);
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// line already holds (wrapped database errors repeat their source's).
fn describe(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

async fn run(cli: Cli) -> Result<i32> {
    let output = Output { json: cli.json, quiet: cli.quiet };
    match cli.command {
        Command::Sync(job) => {
            let allow_mass_delete = job.allow_mass_delete;
            let work = FolderJob::Sync(SyncInput { folder: None, direction: Direction::Both, allow_mass_delete });
            run_job(cli.database.as_deref(), &job, work, output).await
        }
        Command::Import { job, files } => {
            let paths = (!files.is_empty()).then_some(files);
            let work = FolderJob::Import(ImportInput { folder: None, paths, allow_mass_delete: job.allow_mass_delete });
            run_job(cli.database.as_deref(), &job, work, output).await
        }
        Command::Export { job, only } => {
            let work = FolderJob::Export(ExportInput { folder: None, entity_types: only });
            run_job(cli.database.as_deref(), &job, work, output).await
        }
        Command::Watch(job) => watch(cli.database.as_deref(), &job, output).await,
        Command::Status { path } => status(cli.database.as_deref(), &folder_or_cwd(path)?, output).await,
        Command::Search { query, mode, limit, path } => {
            search(cli.database.as_deref(), &folder_or_cwd(path)?, &query, mode, limit, output).await
        }
        Command::Jobs { action, path } => jobs(cli.database.as_deref(), &folder_or_cwd(path)?, action, output).await,
        Command::Tool { name, arguments, options } => {
            tool(cli.database.as_deref(), &options, &name, &arguments, output).await
        }
        Command::Serve { http, token, folders, no_worker, options } => {
            serve(cli.database.as_deref(), &options, &folders, http, token, !no_worker).await
        }
        Command::Dashboard { addr, path, token } => {
            dashboard(cli.database.as_deref(), &folder_or_cwd(path)?, &addr, token).await
        }
        Command::Worker { concurrency, lease_secs, options } => {
            let lease = Duration::from_secs(lease_secs);
            worker(cli.database.as_deref(), &options, concurrency, lease).await
        }
    }
}

#[derive(Clone, Copy)]
struct Output {
    json: bool,
    quiet: bool,
}

/// Where the batch tools (`tool`, `serve`) work.
#[derive(clap::Args)]
struct ToolOptions {
    /// The folder whose database to use (default: the current folder).
    #[arg(long)]
    path: Option<PathBuf>,
    /// File paths in tool arguments (export, import, extract) are relative
    /// to this folder and may not leave it (default: the current folder).
    #[arg(long)]
    files_root: Option<PathBuf>,
    /// An OpenAI-compatible API (up to and including /v1) whose chat model
    /// batch_enhance uses, with the key from OPENAI_API_KEY if set; without
    /// it, the built-in local enhancer.
    #[arg(long, requires = "chat_model")]
    chat_url: Option<String>,
    /// The chat model to ask, e.g. gpt-4o-mini or llama3.2.
    #[arg(long, requires = "chat_url")]
    chat_model: Option<String>,
    /// Let batch_extract fetch loopback, private and link-local addresses
    /// (refused by default, in every spelling, also after redirects).
    #[arg(long)]
    allow_private_urls: bool,
}

/// The database and the batch tools over it, as `options` say.
async fn open_tools(database: Option<&str>, options: &ToolOptions) -> Result<(Database, batch_tools::BatchTools)> {
    let files_root = match &options.files_root {
        Some(folder) => folder.clone(),
        None => std::env::current_dir()?,
    };
    let files =
        batch_tools::FilesRoot::new(&files_root).with_context(|| format!("files root {}", files_root.display()))?;
    let db = open_database(database, &folder_or_cwd(options.path.clone())?).await?;
    let mut tools = db
        .batch_tools(Arc::new(HashingEmbedder::default()), files)
        .await?
        .allowing_private_urls(options.allow_private_urls);
    if let (Some(url), Some(model)) = (&options.chat_url, &options.chat_model) {
        let chat = batch_tools::ChatEnhancer::new(url, model, "OPENAI_API_KEY").map_err(|err| anyhow::anyhow!(err))?;
        tools = tools.with_enhancer(Arc::new(chat));
    }
    Ok((db, tools))
}

fn folder_or_cwd(path: Option<PathBuf>) -> Result<PathBuf> {
    path.map_or_else(|| std::env::current_dir().context("the current folder"), Ok)
}

/// Every database this process opened, closed on the way out.
static OPENED: std::sync::Mutex<Vec<Database>> = std::sync::Mutex::new(Vec::new());

/// Closes what the command opened, so a SQLite database is left as one
/// file (its WAL copied in and removed) and the next reader changes
/// nothing. Bounded: a lost server must not hold the exit.
async fn close_databases() {
    let opened = std::mem::take(&mut *OPENED.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    for db in opened {
        let _ = tokio::time::timeout(Duration::from_secs(3), db.close()).await;
    }
}

/// The database named on the command line or in `DATABASE_URL`, else SQLite inside the folder.
async fn open_database(database: Option<&str>, folder: &Path) -> Result<Database> {
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
async fn open_existing_database(database: Option<&str>, folder: &Path) -> Result<Database> {
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
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The folder's settings with the command line's overrides, saved for next
/// time. A folder without settings and without `--entity-types` takes as
/// types its own type-named folders and every type the database holds, so
/// a sync or export into a new folder writes every entity.
async fn folder_config(job: &JobArgs, store: &dyn EntityStore, output: Output) -> Result<SyncConfig> {
    let folder = existing_folder(&job.path)?;
    let first_time = !SyncConfig::is_saved(&folder);
    let mut config = SyncConfig::with_store_types(&folder, store, job.entity_types.as_deref()).await?;
    if let Some(size) = job.batch_size {
        config.sync_batch_size = size;
    }
    if let Some(priority) = job.priority {
        config.sync_priority = priority;
    }
    config.validate()?;
    config.save_for_folder().with_context(|| format!("saving settings in {}", state_dir(&folder).display()))?;
    if first_time && !output.quiet && !output.json {
        errln!("{}", describe_types(&config, job.entity_types.is_some()));
    }
    Ok(config)
}

/// How the folder's entity types were chosen, said once, on its first sync.
fn describe_types(config: &SyncConfig, given: bool) -> String {
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
fn existing_folder(path: &Path) -> Result<PathBuf> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => path.canonicalize().with_context(|| format!("folder {}", path.display())),
        Ok(_) => bail!("{} is a file, not a folder", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!("no such folder: {}", path.display()),
        Err(err) => Err(err).with_context(|| format!("folder {}", path.display())),
    }
}

async fn registry_for(db: &Database, folders: Folders) -> Result<Registry> {
    let mut registry = Registry::new();
    register_handlers(&mut registry, folders);
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::default());
    registry.register(EMBED_JOB, db.embed_handler(embedder).await?);
    Ok(registry)
}

fn worker_config() -> WorkerConfig {
    // The model uses every core: one embedding job at a time.
    let mut config = WorkerConfig::default();
    config.type_limits.insert(EMBED_JOB.to_owned(), 1);
    config
}

/// A worker inside a command: it runs the jobs of `plugin`'s folder (none
/// when `None`) and embedding, and leaves every other folder's jobs queued
/// for the `directory-sync worker` meant for them.
fn command_worker_config(plugin: Option<&DirectorySyncPlugin>) -> WorkerConfig {
    let dedup_prefix = plugin.map(DirectorySyncPlugin::dedup_prefix);
    WorkerConfig {
        claim_only: Some(ClaimOnly { dedup_prefix, types: vec![EMBED_JOB.to_owned()] }),
        shutdown_timeout: COMMAND_SHUTDOWN,
        ..worker_config()
    }
}

async fn run_job(database: Option<&str>, job: &JobArgs, work: FolderJob, output: Output) -> Result<i32> {
    let db = open_database(database, &existing_folder(&job.path)?).await?;
    let config = folder_config(job, db.store.as_ref(), output).await?;
    let plugin = DirectorySyncPlugin::new(config.clone(), db.store.clone(), db.state.clone(), db.queue.clone())?;
    let new_job = plugin.job(work);
    let mut events = db.queue.subscribe();
    let id = db.queue.enqueue_many(vec![new_job]).await?.remove(0);
    if job.detach {
        if output.json {
            outln!("{}", json!({ "job_id": id }));
        } else {
            outln!("queued job {id}");
        }
        return Ok(0);
    }
    let registry = registry_for(&db, Folders::Fixed(plugin.syncer().clone())).await?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(db.queue.worker(registry, command_worker_config(Some(&plugin))).run(shutdown.clone()));
    let (interrupt, queue, stop) = (shutdown.clone(), db.queue.clone(), stop_signal()?);
    let stopped = stop.token.clone();
    let stopping = stop.wait();
    tokio::spawn(async move {
        stopping.await;
        // Bounded: on a full disk or a lost database the cancel itself may never get through.
        let _ = tokio::time::timeout(STOP_GRACE, queue.cancel(id)).await;
        interrupt.cancel();
    });
    let display = Display::for_database(output, &db);
    announce_joined_job(&db, id, &display).await;
    let finished = follow(&db, id, &mut events, &display, &stopped).await;
    let summary = match finished {
        // Also when this attempt queued none: an earlier, interrupted attempt may have.
        Ok(summary) => wait_for_embedding(&db, &mut events, &display, &stopped).await.map(|()| summary),
        Err(err) => Err(err),
    };
    shutdown.cancel();
    // The worker gives its jobs back on the way out; bounded, as that is a write too.
    match tokio::time::timeout(STOP_GRACE + COMMAND_SHUTDOWN, worker).await {
        Ok(joined) => joined??,
        Err(_) => {
            display.notice("the worker did not stop in time; its jobs go back to the queue when their lease ends");
        }
    }
    display.clear();
    if stopped.is_cancelled() {
        return interrupted(&db, summary.err(), &stop).await;
    }
    let summary = summary?;
    print_summary(&summary, output);
    Ok(i32::from(!summary.failed.is_empty()))
}

/// Jobs left running by killed processes of this machine (this folder's,
/// or embedding the command will wait for) are taken over now; a job this
/// command joined that runs elsewhere is followed, and the user told whose
/// it is and how long its lease can hold.
async fn announce_joined_job(db: &Database, id: JobId, display: &Display) {
    let taken = db.queue.take_over_orphans().await.unwrap_or_else(|err| {
        display.notice(&format!("cannot look at the running jobs: {err}"));
        Vec::new()
    });
    for (job, worker) in &taken {
        display.notice(&format!("job {job} was left running by {worker}, which has ended; taking it over"));
    }
    if let Ok(Some(job)) = db.queue.get(id).await
        && job.state == JobState::Running
        && !taken.iter().any(|(job, _)| *job == id)
        && job.worker_id.as_deref() != Some(job_queue::process_tag().as_str())
    {
        let worker = job.worker_id.unwrap_or_default();
        let lease = WorkerConfig::default().lease.as_secs();
        display.notice(&format!(
            "job {id} is already running in worker {worker}; following it (if that worker is gone, it is taken over when its lease ends, within {lease}s)"
        ));
    }
}

/// After Ctrl-C or SIGTERM, how long a command lets its job wind down.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How long a command's worker lets running jobs finish when it stops
/// before it gives them back to the queue.
const COMMAND_SHUTDOWN: Duration = Duration::from_secs(1);

/// The lines and exit code of a command stopped by a signal: what was
/// done, and what stays queued for whom.
async fn interrupted(db: &Database, why: Option<anyhow::Error>, stop: &Stop) -> Result<i32> {
    if let Some(why) = why {
        errln!("directory-sync: {}", describe(&why));
    }
    let left = tokio::time::timeout(STOP_GRACE, db.queue.unfinished(Some(EMBED_JOB))).await;
    if let Ok(Ok(left)) = left
        && left > 0
    {
        errln!(
            "{left} embedding jobs stay queued: the next command on this database or a `directory-sync worker` runs them"
        );
    }
    Ok(stop.exit_code())
}
/// How long a command waits for its failed job's next attempt to start
/// (a retry normally starts within seconds) before it gives up with the
/// job's error.
const RETRY_PATIENCE: Duration = Duration::from_secs(30);

/// Storage faults that no retry in the next moments will cure.
fn is_storage_fault(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    ["disk is full", "no space left", "disk full", "readonly database", "read-only", "disk i/o error"]
        .iter()
        .any(|fault| error.contains(fault))
}

/// Where a stopped job had got to: "after 120/500 (Importing)", or
/// "before it reported any progress".
fn reached(progress: &batch_core::Progress) -> String {
    match (progress.total, progress.message.is_empty()) {
        (0, true) => "before it reported any progress".to_owned(),
        (0, false) => format!("at \"{}\"", progress.message),
        (total, _) => format!("after {}/{total} ({})", progress.current, progress.message),
    }
}

/// Shows job `id`'s progress until it ends; its summary, or why it failed.
/// Ends early, with an error, after `stopped` fires (plus [`STOP_GRACE`]),
/// when the job failed on a storage fault, or when a retry does not start
/// within [`RETRY_PATIENCE`].
async fn follow(
    db: &Database,
    id: JobId,
    events: &mut tokio::sync::broadcast::Receiver<job_queue::JobEvent>,
    display: &Display,
    stopped: &CancellationToken,
) -> Result<SyncSummary> {
    let mut failed_since: Option<Instant> = None;
    // A failure already stored when we came (a joined job waiting for its retry) is not ours to end on.
    let mut attempt_at_start: Option<i32> = None;
    loop {
        if stopped.is_cancelled() {
            let ended = tokio::time::timeout(STOP_GRACE, async {
                loop {
                    match db.queue.get(id).await {
                        Ok(Some(job)) if job.state.is_terminal() => return Some(job),
                        Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                        _ => return None,
                    }
                }
            })
            .await;
            let progress = ended.ok().flatten().map(|job| job.progress).unwrap_or_default();
            let reached = reached(&progress);
            bail!("interrupted: job {id} stopped {reached}; what it wrote is kept, run the command again to go on");
        }
        // Also look at the stored job now and then: another process may run it.
        let event = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
        if let Ok(Ok(event)) = &event
            && event.job_id == id
        {
            if let JobEventKind::Progress { progress } = &event.kind {
                display.progress(progress);
                continue;
            }
            // A storage fault may keep the failure from ever being written: end on the event.
            if let JobEventKind::Failed { error, .. } = &event.kind
                && is_storage_fault(error)
            {
                let _ = tokio::time::timeout(STOP_GRACE, db.queue.cancel(id)).await;
                bail!("job {id} failed: {error}");
            }
        } else if let Ok(Ok(_)) = event {
            continue;
        }
        let read = tokio::select! {
            read = through_outages(display, || db.queue.get(id)) => read?,
            () = stopped.cancelled() => continue,
        };
        let Some(job) = read else { bail!("job {id} disappeared") };
        let first_attempt = *attempt_at_start.get_or_insert(job.attempt);
        match job.state {
            JobState::Completed => {
                // Its last progress, which a quick job may not have sent as an event.
                display.progress(&job.progress);
                return serde_json::from_value(job.output.unwrap_or_default()).context("reading the job's summary");
            }
            JobState::Cancelled => {
                let why = job.last_error.filter(|e| !e.is_empty()).map(|e| format!(" ({e})")).unwrap_or_default();
                bail!(
                    "job {id} was cancelled {}{why}; what it wrote is kept, run the command again to do the rest",
                    reached(&job.progress)
                )
            }
            JobState::Dead => {
                let error = job.last_error.unwrap_or_default();
                bail!("job {id} failed for good {}: {error}", reached(&job.progress))
            }
            JobState::Failed => {
                let error = job.last_error.unwrap_or_default();
                let waited = failed_since.get_or_insert_with(Instant::now).elapsed();
                if (is_storage_fault(&error) && job.attempt > first_attempt) || waited >= RETRY_PATIENCE {
                    let _ = tokio::time::timeout(STOP_GRACE, db.queue.cancel(id)).await;
                    bail!("job {id} failed: {error}");
                }
                display.progress(&job.progress);
            }
            _ => {
                failed_since = None;
                display.progress(&job.progress);
            }
        }
    }
}

/// Waits until no embedding job is queued, running or waiting for a retry,
/// counting again when one ends here (or each second, for jobs other
/// processes run).
async fn wait_for_embedding(
    db: &Database,
    events: &mut tokio::sync::broadcast::Receiver<job_queue::JobEvent>,
    display: &Display,
    stopped: &CancellationToken,
) -> Result<()> {
    loop {
        let pending = tokio::select! {
            pending = through_outages(display, || db.queue.unfinished(Some(EMBED_JOB))) => pending?,
            () = stopped.cancelled() => bail!("interrupted while waiting for embedding; the jobs stay queued"),
        };
        if pending == 0 {
            return Ok(());
        }
        display.message(&format!("Embedding: {pending} jobs left"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let event = tokio::select! {
                () = stopped.cancelled() => break,
                event = tokio::time::timeout_at(deadline, events.recv()) => event,
            };
            let Ok(Ok(event)) = event else { break };
            let ended =
                matches!(event.kind, JobEventKind::Completed | JobEventKind::Dead { .. } | JobEventKind::Cancelled);
            if event.job_type == EMBED_JOB && ended {
                break;
            }
        }
    }
}

/// How long the CLI waits for an unreachable database before it gives up.
const DATABASE_PATIENCE: Duration = Duration::from_secs(120);

/// A database read that waits out an outage (a restart, a network blip),
/// saying so on stderr when a read fails or hangs, and gives up after
/// [`DATABASE_PATIENCE`].
async fn through_outages<T, F, Fut>(display: &Display, mut read: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = job_queue::Result<T>>,
{
    let started = Instant::now();
    let patience = DATABASE_PATIENCE.as_secs();
    let mut outage = OutageNotices::default();
    loop {
        let attempt = read();
        tokio::pin!(attempt);
        let outcome = loop {
            tokio::select! {
                outcome = &mut attempt => break outcome,
                () = tokio::time::sleep(Duration::from_secs(3)) => {
                    if started.elapsed() >= DATABASE_PATIENCE {
                        bail!("the database has not answered for {patience}s; giving up");
                    }
                    let silent = started.elapsed().as_secs();
                    let waiting = if display.local_database { "a read has waited" } else { "not answering for" };
                    outage.notice(display, &format!("{waiting} {silent}s; waiting up to {patience}s"));
                }
            }
        };
        match outcome {
            Ok(value) => {
                if outage.reported {
                    display.notice(&format!("database reachable again after {}s", started.elapsed().as_secs()));
                }
                return Ok(value);
            }
            Err(err) if err.is_unreachable() && started.elapsed() < DATABASE_PATIENCE => {
                outage.notice(display, &format!("{err}; waiting up to {patience}s"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) if err.is_unreachable() => bail!("the database has been unreachable for {patience}s: {err}"),
            Err(err) => return Err(err.into()),
        }
    }
}

/// Outage lines at most every ten seconds.
#[derive(Default)]
struct OutageNotices {
    reported: bool,
    last: Option<Instant>,
}

impl OutageNotices {
    fn notice(&mut self, display: &Display, detail: &str) {
        if self.last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            // A local file that answers slowly is busy (another process writes), not unreachable.
            let what = if display.local_database { "database busy" } else { "database unreachable" };
            display.notice(&format!("{what}: {detail}"));
            self.last = Some(Instant::now());
            self.reported = true;
        }
    }
}

/// A progress bar on a terminal, plain lines (about one a second) otherwise.
struct Display {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    /// Notices (outages) go to stderr even with `--json`; only `--quiet` drops them.
    notices: bool,
    last_line: std::sync::Mutex<Option<Instant>>,
    /// The latest progress line not printed (lines are rate-limited), so the
    /// last one is printed at the end of a long run.
    unprinted: std::sync::Mutex<Option<String>>,
    /// Plain progress lines start after a second: a quick run prints its
    /// summary alone, not a first line such as "Importing: 0/31 files"
    /// that reads as "nothing imported".
    started: Instant,
    /// The database is a local SQLite file (slow means busy, not unreachable).
    local_database: bool,
}

impl Display {
    fn new(output: Output) -> Self {
        let quiet = output.quiet || output.json;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| indicatif::ProgressBar::new(0));
        Self {
            bar,
            quiet,
            notices: !output.quiet,
            last_line: std::sync::Mutex::new(None),
            unprinted: std::sync::Mutex::new(None),
            started: Instant::now(),
            local_database: false,
        }
    }

    /// For commands on `db`: its outage notices name what is likely.
    fn for_database(output: Output, db: &Database) -> Self {
        Self { local_database: db.backend == "sqlite", ..Self::new(output) }
    }

    fn progress(&self, progress: &batch_core::Progress) {
        if let Some(bar) = &self.bar {
            // One count per line: the bar shows it, so the message keeps its
            // label ("Importing: 15/47 files" → "Importing"). A spinner while
            // the total is unknown. At most ~70 columns.
            let template = if progress.total > 0 {
                "{bar:30} {pos}/{len} {msg} (eta {eta})"
            } else {
                "{spinner} {pos} {msg} ({elapsed})"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_length(progress.total);
            bar.set_position(progress.current);
            let label = progress.message.split(':').next().unwrap_or_default();
            bar.set_message(label.to_owned());
            bar.tick();
        } else if !progress.message.is_empty() {
            self.message(&progress.message);
        }
    }

    fn message(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_owned());
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut unprinted = self.unprinted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.quiet {
            return;
        }
        let due = self.started.elapsed() >= Duration::from_secs(1);
        if due && last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            errln!("{message}");
            *last = Some(Instant::now());
            *unprinted = None;
        } else {
            *unprinted = Some(message.to_owned());
        }
    }

    /// A line that must be seen (not rate-limited), above the bar if there is one.
    fn notice(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.notices => errln!("{line}"),
            None => {}
        }
    }

    /// Ends the display: the bar goes; without one, a run that printed
    /// progress prints its last line too.
    fn clear(&self) {
        let unprinted = self.unprinted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        } else if let Some(line) = unprinted.filter(|_| self.started.elapsed() >= Duration::from_secs(1)) {
            errln!("{line}");
        }
    }
}

/// The summary on stdout; `--quiet` keeps the headline, conflicts and failures only.
fn print_summary(summary: &SyncSummary, output: Output) {
    if output.json {
        outln!("{}", serde_json::to_string(summary).unwrap_or_default());
        return;
    }
    outln!("{}", summary.headline());
    if !summary.skipped.is_empty() {
        let shown: Vec<&str> = summary.skipped.iter().take(5).map(|p| p.path.as_str()).collect();
        let more = summary.skipped.len().saturating_sub(shown.len());
        let more = if more > 0 { format!(" and {more} more (--json lists them)") } else { String::new() };
        outln!("  skipped {} hidden: {}{more}", summary.skipped.len(), shown.join(", "));
    }
    for conflict in &summary.conflicts {
        outln!("  conflict {}: your file's version is kept as {}", conflict.path, conflict.conflict_path);
    }
    for problem in &summary.failed {
        outln!("  failed {}: {}", problem.path, problem.error);
    }
    if output.quiet {
        return;
    }
    for problem in &summary.warnings {
        outln!("  warning {}: {}", problem.path, problem.error);
    }
}

async fn watch(database: Option<&str>, job: &JobArgs, output: Output) -> Result<i32> {
    let db = open_database(database, &existing_folder(&job.path)?).await?;
    let config = SyncConfig {
        initial_sync_delay: Duration::ZERO,
        watch_enabled: true,
        ..folder_config(job, db.store.as_ref(), output).await?
    };
    let plugin = DirectorySyncPlugin::new(config.clone(), db.store.clone(), db.state.clone(), db.queue.clone())?;
    let mut registry = registry_for(&db, Folders::Fixed(plugin.syncer().clone())).await?;
    plugin.register(&mut registry).await?;
    let shutdown = CancellationToken::new();
    let stop = stop_signal()?;
    let stopped = stop.wait();
    tokio::pin!(stopped);
    let mut events = db.queue.subscribe();
    let worker = tokio::spawn(db.queue.worker(registry, command_worker_config(Some(&plugin))).run(shutdown.clone()));
    let _ = db.queue.take_over_orphans().await;
    let watching = plugin.start_watch(shutdown.clone())?;
    if !output.quiet {
        errln!("watching {} (Ctrl-C to stop)", config.sync_path.display());
    }
    if let Some(why) = plugin.watch_polling() {
        errln!("directory-sync: {why}");
    }
    loop {
        tokio::select! {
            () = &mut stopped => break,
            event = events.recv() => {
                let Ok(event) = event else { continue };
                report_event(&db, &event, output).await;
            }
        }
    }
    shutdown.cancel();
    watching.await??;
    if tokio::time::timeout(STOP_GRACE + COMMAND_SHUTDOWN, worker).await.is_err() {
        errln!("the worker did not stop in time; its jobs go back to the queue when their lease ends");
    }
    let left = tokio::time::timeout(STOP_GRACE, db.queue.unfinished(None)).await.ok().and_then(Result::ok);
    if !output.quiet {
        match left {
            Some(0) | None => errln!("stopped watching"),
            Some(left) => errln!(
                "stopped watching; {left} jobs stay queued for the next `watch` or `sync` of this folder or a `directory-sync worker`"
            ),
        }
    }
    Ok(0)
}

/// One line per finished job: its summary (for sync jobs), or that it finished.
async fn report_event(db: &Database, event: &job_queue::JobEvent, output: Output) {
    let (state, error) = match &event.kind {
        JobEventKind::Completed => ("completed", None),
        JobEventKind::Dead { error } => ("dead", Some(error.clone())),
        _ => return,
    };
    let summary = db
        .queue
        .get(event.job_id)
        .await
        .ok()
        .flatten()
        .and_then(|job| job.output)
        .filter(|_| event.job_type != EMBED_JOB)
        .and_then(|out| serde_json::from_value::<SyncSummary>(out).ok());
    if output.json {
        let mut line = json!({ "job_id": event.job_id, "job_type": event.job_type, "state": state, "error": error });
        if let (Some(summary), Some(fields)) = (&summary, line.as_object_mut())
            && let Ok(serde_json::Value::Object(summary)) = serde_json::to_value(summary)
        {
            fields.extend(summary);
        }
        outln!("{line}");
    } else if !output.quiet {
        match (summary, error) {
            (_, Some(error)) => outln!("{} {} failed: {error}", event.job_type, event.job_id),
            (Some(summary), None) => outln!("{}: {}", event.job_type, summary.headline()),
            (None, None) => outln!("{} {} completed", event.job_type, event.job_id),
        }
    }
}

async fn status(database: Option<&str>, folder: &Path, output: Output) -> Result<i32> {
    let db = open_existing_database(database, folder).await?;
    let config = SyncConfig::for_folder(&folder.canonicalize()?)?;
    let syncer = Syncer::new(config, db.store.clone(), db.state.clone(), None)?;
    let status = syncer.folder_status().await?;
    let running = db.queue.list(&JobFilter { state: Some(JobState::Running), ..Default::default() }).await?;
    let queued =
        db.queue.list(&JobFilter { state: Some(JobState::Queued), limit: Some(20), ..Default::default() }).await?;
    let recent = db.queue.list(&JobFilter { limit: Some(10), ..Default::default() }).await?;
    // True counts, of every type: the lists above are cut.
    let counts = db.queue.counts().await?;
    let in_state = |state: JobState| counts.values().filter_map(|by| by.get(&state)).sum::<u64>();
    let last = status.last_summary.clone().and_then(|value| serde_json::from_value::<SyncSummary>(value).ok());
    if output.json {
        let jobs = |jobs: &[job_queue::Job]| {
            jobs.iter()
                .map(|j| json!({"id": j.id, "type": j.job_type, "state": j.state.as_str(), "progress": j.progress, "error": j.last_error}))
                .collect::<Vec<_>>()
        };
        outln!(
            "{}",
            json!({
                "folder": status.folder, "entities": status.entities, "not_in_folder": status.not_in_folder,
                "conflicts": status.conflicts,
                "last_sync": status.last_sync, "last_summary": status.last_summary,
                "job_counts": counts,
                "running": jobs(&running), "queued": jobs(&queued), "recent": jobs(&recent),
            })
        );
        return Ok(0);
    }
    outln!("folder: {}", status.folder.display());
    match (&status.last_sync, &last) {
        (Some(at), Some(summary)) => outln!("last sync: {at}: {}", summary.headline()),
        (Some(at), None) => outln!("last sync: {at}"),
        (None, _) => outln!("last sync: never"),
    }
    if let Some(summary) = &last {
        for problem in summary.failed.iter().take(5) {
            outln!("  failed {}: {}", problem.path, problem.error);
        }
        if summary.failed.len() > 5 {
            outln!("  and {} more failures (--json lists them)", summary.failed.len() - 5);
        }
    }
    let counts: Vec<String> = status.entities.iter().map(|(t, n)| format!("{t} {n}")).collect();
    outln!("entities: {}", counts.join(", "));
    if status.not_in_folder > 0 {
        outln!("not yet in the folder: {} entities (run `directory-sync export` to write them)", status.not_in_folder);
    }
    outln!(
        "jobs: {} running, {} queued, {} waiting to retry, {} dead",
        in_state(JobState::Running),
        in_state(JobState::Queued),
        in_state(JobState::Failed),
        in_state(JobState::Dead)
    );
    for job in running.iter().chain(&recent).take(10) {
        let percent = job.percent().map(|p| format!(" {p:.0}%")).unwrap_or_default();
        outln!("  {} {:<17} {:<9}{percent} {}", job.id, job.job_type, job.state.as_str(), job_line(job));
    }
    outln!("conflicts: {}", status.conflicts.len());
    for conflict in &status.conflicts {
        outln!("  {} (your version: {})", conflict.path, conflict.conflict_path);
    }
    Ok(0)
}

/// The worker's line for a job that ended (or will be retried).
fn finished_line(job: &job_queue::Job) -> String {
    let folder =
        job.input.get("folder").and_then(serde_json::Value::as_str).map(|f| format!(" {f}:")).unwrap_or_default();
    format!("{} {} {}{folder} {}", job.id, job.job_type, job.state.as_str(), job_line(job))
}

/// What a job's status line says: a finished sync's summary, a failed
/// job's error, else where its progress stands.
fn job_line(job: &job_queue::Job) -> String {
    let summary = (job.state == JobState::Completed)
        .then(|| job.output.clone().and_then(|out| serde_json::from_value::<SyncSummary>(out).ok()))
        .flatten();
    match (summary, &job.last_error) {
        (Some(summary), _) => summary.headline(),
        (None, Some(error)) if job.state != JobState::Completed => error.clone(),
        _ if job.progress.total > 0 => {
            format!("{} ({}/{})", job.progress.message, job.progress.current, job.progress.total)
        }
        _ => job.progress.message.clone(),
    }
}

async fn search(
    database: Option<&str>,
    folder: &Path,
    query: &str,
    mode: Mode,
    limit: usize,
    output: Output,
) -> Result<i32> {
    if query.trim().is_empty() {
        bail!("the query is empty: give some words to look for");
    }
    let db = open_existing_database(database, folder).await?;
    let search = Search {
        store: db.store.clone(),
        vectors: db.vectors().await?,
        embedder: Arc::new(HashingEmbedder::default()),
    };
    let hits = match mode {
        Mode::Text => search.text(query, limit, None).await?,
        Mode::Vector => search.vector(query, limit, None).await?,
        Mode::Hybrid => search.hybrid(query, limit, None).await?,
    };
    if output.json {
        let hits: Vec<_> = hits.iter().map(|h| json!({"key": h.key, "score": h.score, "snippet": h.snippet})).collect();
        outln!("{}", json!({ "hits": hits }));
    } else if hits.is_empty() {
        outln!("nothing matched {query:?}");
    } else {
        for hit in &hits {
            outln!("{:.3}  {}  {}", hit.score, hit.key, hit.snippet.replace('\n', " "));
        }
    }
    Ok(0)
}

async fn jobs(database: Option<&str>, folder: &Path, action: JobsAction, output: Output) -> Result<i32> {
    let db = open_existing_database(database, folder).await?;
    let print = |value: serde_json::Value, text: String| {
        if output.json { outln!("{value}") } else { outln!("{text}") }
    };
    match action {
        JobsAction::List { state, limit } => {
            let state = state.map(|s| s.parse::<JobState>()).transpose().map_err(anyhow::Error::msg)?;
            let jobs = db.queue.list(&JobFilter { state, limit: Some(limit), ..Default::default() }).await?;
            let text: Vec<String> = jobs
                .iter()
                .map(|j| format!("{} {:<17} {:<9} {}", j.id, j.job_type, j.state.as_str(), j.progress.message))
                .collect();
            let now = chrono::Utc::now();
            let views: Vec<JobView> = jobs.iter().map(|job| JobView::new(job, now)).collect();
            print(serde_json::to_value(&views)?, text.join("\n"));
        }
        JobsAction::Show { id } => {
            let Some(job) = db.queue.get(id).await? else { bail!("no job {id}") };
            let view = JobView::new(&job, chrono::Utc::now()).with_result(&job);
            print(serde_json::to_value(&view)?, serde_json::to_string_pretty(&view)?);
        }
        JobsAction::Cancel { id } => {
            let done = db.queue.cancel(id).await?;
            print(
                json!({"cancelled": done}),
                if done { format!("cancelled {id}") } else { format!("{id} was not running or queued") },
            );
            return Ok(i32::from(!done));
        }
        JobsAction::Retry { id } => {
            let done = db.queue.retry(id).await?;
            print(
                json!({"retried": done}),
                if done { format!("queued {id} again") } else { format!("{id} is not failed or dead") },
            );
            return Ok(i32::from(!done));
        }
    }
    Ok(0)
}

async fn worker(database: Option<&str>, options: &ToolOptions, concurrency: usize, lease: Duration) -> Result<i32> {
    // Handlers first: a stop request during start-up still shuts down cleanly.
    let stop = stop_signal()?;
    let (db, tools) = open_tools(database, options).await?;
    let mut registry = registry_for(&db, Folders::Any(db.clone())).await?;
    registry.register(TOOL_JOB, ToolJobHandler::new(tools));
    let shutdown = CancellationToken::new();
    // Renew well within the lease, so one late heartbeat does not lose the job.
    let heartbeat = (lease / 3).min(Duration::from_secs(1));
    // On a stop, running jobs get a moment, then go back to the queue for other workers.
    let config = WorkerConfig { concurrency, lease, heartbeat, shutdown_timeout: COMMAND_SHUTDOWN, ..worker_config() };
    let mut events = db.queue.subscribe();
    let running = tokio::spawn(db.queue.worker(registry, config).run(shutdown.clone()));
    errln!("worker running on {} (Ctrl-C or SIGTERM to stop)", db.backend);
    // One line per job this worker ends: id, type, state, folder, result or error.
    let queue = db.queue.clone();
    let lines = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let ended = matches!(
                event.kind,
                JobEventKind::Completed
                    | JobEventKind::Retrying { .. }
                    | JobEventKind::Dead { .. }
                    | JobEventKind::Cancelled
            );
            if let (true, Ok(Some(job))) = (ended, queue.get(event.job_id).await) {
                errln!("{}", finished_line(&job));
            }
        }
    });
    stop.wait().await;
    lines.abort();
    shutdown.cancel();
    running.await??;
    errln!("worker stopped; jobs it was running went back to the queue");
    Ok(0)
}

/// One tool call from the command line; the embedding it queues runs here
/// before the command returns. Exit code 1 when some items failed.
async fn tool(
    database: Option<&str>,
    options: &ToolOptions,
    name: &str,
    arguments: &str,
    output: Output,
) -> Result<i32> {
    let text = if arguments == "-" { std::io::read_to_string(std::io::stdin())? } else { arguments.to_owned() };
    let arguments: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("the arguments of {name} are not JSON"))?;
    let (db, tools) = open_tools(database, options).await?;
    let mut events = db.queue.subscribe();
    let registry = registry_for(&db, Folders::Any(db.clone())).await?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(db.queue.worker(registry, command_worker_config(None)).run(shutdown.clone()));
    let stop = stop_signal()?;
    // Embedding left running by a killed command is taken over, not waited out.
    let _ = db.queue.take_over_orphans().await;
    let call = batch_tools::Call { cancel: stop.token.child_token(), ..batch_tools::Call::default() };
    let result = tools.call(name, arguments, &call).await;
    let display = Display::for_database(output, &db);
    let waited = wait_for_embedding(&db, &mut events, &display, &stop.token).await;
    shutdown.cancel();
    worker.await??;
    display.clear();
    if stop.token.is_cancelled() {
        if let Ok(result) = &result {
            outln!("{}", serde_json::to_string_pretty(result)?);
        }
        return interrupted(&db, waited.err(), &stop).await;
    }
    let result = result.map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
    waited?;
    outln!("{}", serde_json::to_string_pretty(&result)?);
    let failed = result["errors"].as_array().is_some_and(|errors| !errors.is_empty());
    Ok(i32::from(failed))
}

/// The dashboard until Ctrl-C or SIGTERM.
async fn dashboard(database: Option<&str>, folder: &Path, addr: &str, token: Option<String>) -> Result<i32> {
    use directory_sync::dashboard::{Access, Dashboard};
    let db = open_existing_database(database, folder).await?;
    let folder = folder.canonicalize().with_context(|| format!("folder {}", folder.display()))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    let access = Access::for_address(&local, token);
    let mode = match &access {
        Access::Open => "actions open to this machine",
        Access::Token(_) => "actions need the token",
        Access::ReadOnly => "read-only (give --token to allow actions)",
    };
    errln!("dashboard on http://{local}/ ({mode}; Ctrl-C or SIGTERM to stop)");
    let signal = stop_signal()?.wait();
    // Actions check the dashboard's own token (Access); the guard checks names and sites.
    let router = directory_sync::access::guarded(Dashboard::new(db, Some(folder), access).router(), local.port(), None);
    axum::serve(listener, router).with_graceful_shutdown(signal).await?;
    Ok(0)
}

/// The MCP server; a worker in the same process runs the embedding jobs the tools queue.
async fn serve(
    database: Option<&str>,
    options: &ToolOptions,
    folders: &[PathBuf],
    http: Option<String>,
    token: Option<String>,
    run_jobs: bool,
) -> Result<i32> {
    let (db, tools) = open_tools(database, options).await?;
    let base = std::env::current_dir().context("the current folder")?;
    let folders = if folders.is_empty() { vec![folder_or_cwd(options.path.clone())?] } else { folders.to_vec() };
    for folder in &folders {
        existing_folder(folder)?;
    }
    let jobs = directory_sync::job_tools::JobTools::new(db.clone(), &folders, &base)?;
    let mut registry = registry_for(&db, Folders::Any(db.clone())).await?;
    registry.register(TOOL_JOB, ToolJobHandler::new(tools.clone()));
    let shutdown = CancellationToken::new();
    let worker = run_jobs.then(|| tokio::spawn(db.queue.worker(registry, worker_config()).run(shutdown.clone())));
    let server = directory_sync::mcp::ToolServer::new(tools).with_job_tools(jobs);
    match http {
        None => {
            // stdout carries the protocol: nothing else may be printed there.
            directory_sync::mcp::serve_stdio(server).await.map_err(|err| anyhow::anyhow!("the MCP session: {err}"))?;
        }
        Some(addr) => {
            use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
            use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
            let listener =
                tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
            let local = listener.local_addr()?;
            let token = token.filter(|t| !t.is_empty());
            if !local.ip().is_loopback() && token.is_none() {
                // Every tool (delete, export, import, fetch) would be open to the network.
                bail!(
                    "refusing to serve MCP on {local} without a token: give --token (or DIRECTORY_SYNC_TOKEN), or listen on a loopback address (e.g. 127.0.0.1:8090)"
                );
            }
            let mut config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
            config.max_request_body_bytes = directory_sync::mcp::MESSAGE_LIMIT;
            let service = StreamableHttpService::new(
                move || Ok(server.clone()),
                Arc::new(LocalSessionManager::default()),
                config,
            );
            let router =
                directory_sync::access::guarded(axum::Router::new().nest_service("/mcp", service), local.port(), token)
                    .layer(axum::middleware::from_fn(directory_sync::mcp::resume_after_last_event))
                    .layer(axum::middleware::from_fn(directory_sync::mcp::session_end_answers_200));
            errln!("serving MCP on http://{local}/mcp (Ctrl-C or SIGTERM to stop)");
            let (stop, signal) = (shutdown.clone(), stop_signal()?.wait());
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    signal.await;
                    stop.cancel();
                })
                .await?;
        }
    }
    shutdown.cancel();
    if let Some(worker) = worker {
        worker.await??;
    }
    Ok(0)
}

/// Ctrl-C or SIGTERM: the first asks the command to wind down (bounded by
/// [`STOP_GRACE`]), a second ends the process at once.
struct Stop {
    token: CancellationToken,
    /// The first signal's number, once it came.
    signal: Arc<std::sync::atomic::AtomicI32>,
}

impl Stop {
    /// Resolves at the first signal.
    fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// 128 + the signal's number, as shells report a command a signal ended.
    fn exit_code(&self) -> i32 {
        128 + self.signal.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The flags the stop handlers set: stopping, and which signal came.
type StopFlags = (Arc<std::sync::atomic::AtomicBool>, Arc<std::sync::atomic::AtomicUsize>);

/// Installs the handlers once per process. They only set flags (and, on a
/// second signal, exit at once), and a task looks at the flags: a flag
/// cannot be missed the way a wake-up can (tokio's signal streams were seen
/// here to leave a Ctrl-C unanswered for seconds on an idle runtime).
fn install_stop_handlers() -> std::io::Result<StopFlags> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    static INSTALLED: std::sync::OnceLock<StopFlags> = std::sync::OnceLock::new();
    if let Some(flags) = INSTALLED.get() {
        return Ok(flags.clone());
    }
    let flags: StopFlags = (Arc::default(), Arc::default());
    for signal in [SIGINT, SIGTERM] {
        // In this order: a signal that finds the flag set already is the second one.
        flag::register_conditional_shutdown(signal, 128 + signal, flags.0.clone())?;
        flag::register_usize(signal, flags.1.clone(), signal.unsigned_abs() as usize)?;
        flag::register(signal, flags.0.clone())?;
    }
    Ok(INSTALLED.get_or_init(|| flags).clone())
}

/// How often the noted signal is looked at.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Listens for Ctrl-C and SIGTERM from now on: a signal that arrives
/// before anyone waits still counts.
fn stop_signal() -> Result<Stop> {
    let flags = install_stop_handlers()?;
    let stop = Stop { token: CancellationToken::new(), signal: Arc::default() };
    let (token, noted) = (stop.token.clone(), stop.signal.clone());
    tokio::spawn(async move {
        while !flags.0.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(SIGNAL_POLL).await;
        }
        let signal = i32::try_from(flags.1.load(std::sync::atomic::Ordering::SeqCst)).unwrap_or(2);
        noted.store(signal, std::sync::atomic::Ordering::SeqCst);
        token.cancel();
    });
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_job_says_where_it_got_to() {
        let progress = |current, total, message: &str| batch_core::Progress {
            current,
            total,
            message: message.to_owned(),
            ..batch_core::Progress::default()
        };
        let cases = [
            (progress(0, 0, ""), "before it reported any progress"),
            (progress(0, 0, "Exporting"), "at \"Exporting\""),
            (progress(120, 500, "Importing: 120/500 files"), "after 120/500 (Importing: 120/500 files)"),
        ];
        for (given, expected) in cases {
            assert_eq!(reached(&given), expected);
        }
    }
}
