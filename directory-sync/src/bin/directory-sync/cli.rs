//! The command line: commands, their arguments and help.

use clap::{Parser, Subcommand, ValueEnum};
use job_queue::{JobId, JobState};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "directory-sync", version, about = "Keep a folder of markdown files and a database in step")]
pub(crate) struct Cli {
    /// sqlite://PATH or postgres://...; default: SQLite in PATH/.directory-sync/store.db.
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub(crate) database: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// No progress output.
    #[arg(long, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(clap::Args, Clone)]
pub(crate) struct JobArgs {
    /// The folder.
    pub(crate) path: PathBuf,
    /// Queue the job, print its id and return; a `worker` runs it.
    #[arg(long)]
    pub(crate) detach: bool,
    /// Files per read-and-write round.
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// 1-10, higher runs first.
    #[arg(long)]
    pub(crate) priority: Option<i32>,
    /// Vectors for vector and hybrid search: `none` (the default; text
    /// search only) or `lexical` (hashed words and trigrams, not semantic).
    /// Saved for the folder.
    #[arg(long)]
    pub(crate) embedder: Option<directory_sync::EmbedderSetting>,
    /// Top-level folders that are entity types (saved for the folder; discovered when never given).
    #[arg(long, value_delimiter = ',')]
    pub(crate) entity_types: Option<Vec<String>>,
    /// Delete the entities of missing files even when most of the folder's
    /// files (or all) are gone at once; without it such a run deletes
    /// nothing and exits 2, as an unmounted or emptied folder looks the same.
    #[arg(long)]
    pub(crate) allow_mass_delete: bool,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum JobsAction {
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
pub(crate) enum Mode {
    /// The full-text index: any word may match.
    Text,
    /// Nearest by embedding (similar meaning with a real model).
    Vector,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

/// Where the batch tools (`tool`, `serve`) work.
#[derive(clap::Args)]
pub(crate) struct ToolOptions {
    /// The folder whose database to use (default: the current folder).
    #[arg(long)]
    pub(crate) path: Option<PathBuf>,
    /// File paths in tool arguments (export, import, extract) are relative
    /// to this folder and may not leave it (default: the current folder).
    #[arg(long)]
    pub(crate) files_root: Option<PathBuf>,
    /// An OpenAI-compatible API (up to and including /v1) whose chat model
    /// batch_enhance uses, with the key from OPENAI_API_KEY if set; without
    /// it, the built-in local enhancer.
    #[arg(long, requires = "chat_model")]
    pub(crate) chat_url: Option<String>,
    /// The chat model to ask, e.g. gpt-4o-mini or llama3.2.
    #[arg(long, requires = "chat_url")]
    pub(crate) chat_model: Option<String>,
    /// Let batch_extract fetch loopback, private and link-local addresses
    /// (refused by default, in every spelling, also after redirects).
    #[arg(long)]
    pub(crate) allow_private_urls: bool,
}
