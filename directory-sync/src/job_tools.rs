//! The folder and job tools of the MCP server (issue 21): a sync, import or
//! export of a folder queued as a job that answers at once, and jobs
//! followed, listed, cancelled and retried. The jobs run on any worker of
//! the database: the server's own, or `directory-sync worker` processes
//! sharing a PostgreSQL database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use batch_tools::ToolError;
use batch_tools::background::{Outcome, TOOL_JOB, ToolJob};
use chrono::Utc;
use job_queue::{JobFilter, JobId, JobState};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::jobs::JobView;
use crate::plugin::{DirectorySyncPlugin, ExportInput, FolderJob, ImportInput, SyncInput};
use crate::{Database, SyncConfig};

/// The tools, with what each returns and what to call next.
pub const JOB_TOOLS: &[(&str, &str)] = &[
    (
        "sync_folder",
        "Queue a two-way sync of a folder of markdown notes with the store (files changed since the last sync are imported, entities changed are exported, conflicts keep both; folders that share the store share their notes). Answers at once with {status: \"queued\" | \"joined\" (the same work was already waiting), job_id, tip}; follow the job with job_status.",
    ),
    (
        "import_files",
        "Queue an import of a folder's markdown files into the store: all of them, or the relative `paths` given. Answers at once with {status, job_id, tip}; follow it with job_status.",
    ),
    (
        "export_entities",
        "Queue an export of the store's entities into a folder as markdown files: every type, or the `types` given. Answers at once with {status, job_id, tip}; follow it with job_status.",
    ),
    (
        "job_status",
        "A job's state (queued, running, completed, failed = waiting to retry, cancelled, dead), progress current/total, message, throughput (items/s) and ETA (s) while running, attempt, times and last error; with include_result, its result (a sync's summary, a background tool call's output) with every list in it paged by list_offset/list_limit (100 entries by default; NAME_total gives each list's length). With wait_secs (up to 60), answers as soon as the job ends or when that time is up, whichever is first: poll with it instead of calling in a tight loop.",
    ),
    (
        "list_jobs",
        "Jobs, newest first, optionally of one state, type (directory-sync, directory-import, directory-export, embed, batch-tool) or folder; `limit` (1-100, default 20) at a time from `offset` (default 0): when `jobs` is full, ask again with offset + limit. Each as job_status shows it, without the result.",
    ),
    (
        "folder_status",
        "A folder's sync state, as `directory-sync status` shows it: the store's entities of the folder's types (folders sharing a store share their notes: a sync writes every entity of those types into the folder), entities not yet written to this folder, open conflicts, the last sync's time and summary (its lists paged by list_offset/list_limit), and job counts of the whole database per type and state (list_jobs with folder gives this folder's jobs).",
    ),
    (
        "cancel_job",
        "Cancel a queued or running job: a running one stops at its next batch and keeps what it wrote. With rollback: true (only for a batch tool call made with background: true that writes all or nothing, e.g. batch_add with atomic, the default), waits up to 30 s for the call to stop and answers rolled_back: true when the store was left as it was, false when the call had already finished. Answers {cancelled, state}; cancelled is false when the job had already ended.",
    ),
    (
        "retry_job",
        "Queue a failed, dead or cancelled job again, from its first attempt: a cancelled or rolled-back call runs again in full. Answers {retried: true} or false (the job is queued, running or completed) with the job's state.",
    ),
];

/// `sync_folder`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncFolderArgs {
    /// One of the folders the server was given (`serve --folder`): absolute, or relative to the directory the server was started in.
    pub folder: String,
    /// Delete the entities of files that are gone even when most of the folder's files are (an emptied or unmounted folder is refused otherwise).
    #[serde(default)]
    pub allow_mass_delete: bool,
}

/// `import_files`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportFilesArgs {
    /// The folder, as in `sync_folder`.
    pub folder: String,
    /// Paths relative to the folder (1 to 10,000); every file when absent.
    #[schemars(length(min = 1, max = 10000))]
    pub paths: Option<Vec<String>>,
    /// As in `sync_folder`.
    #[serde(default)]
    pub allow_mass_delete: bool,
}

/// `export_entities`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportEntitiesArgs {
    /// The folder, as in `sync_folder`.
    pub folder: String,
    /// Entity types to export (1 to 100); every type when absent.
    #[schemars(length(min = 1, max = 100))]
    pub types: Option<Vec<String>>,
}

/// `job_status`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobStatusArgs {
    /// The job's id (a UUID), as a folder tool or list_jobs gave it.
    pub job_id: String,
    /// Add the job's result (a sync's summary, a background call's output), once it has one.
    #[serde(default)]
    pub include_result: bool,
    /// Every list in the result (failures, documents added, search results...) starts at this entry (from 0).
    #[serde(default)]
    pub list_offset: usize,
    /// Entries of each list in the result at most (1-1000, default 100); `NAME_total` gives each list's length.
    #[serde(default = "default_list_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub list_limit: usize,
    /// Seconds to wait for the job to end before answering (0-60, default 0: at once).
    #[serde(default)]
    #[schemars(range(min = 0, max = 60))]
    pub wait_secs: u64,
}

fn default_list_limit() -> usize {
    100
}

/// `list_jobs`' arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListJobsArgs {
    /// Only jobs in this state.
    #[serde(default)]
    #[schemars(schema_with = "state_schema")]
    pub state: Option<String>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Only jobs on this folder.
    pub folder: Option<String>,
    /// Jobs listed at most (1-100, default 20).
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: u32,
    /// Jobs skipped first (newest first), for the next page.
    #[serde(default)]
    pub offset: u32,
}

/// `folder_status`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FolderStatusArgs {
    /// The folder, as in `sync_folder`.
    pub folder: String,
    /// Every list of the last sync's summary starts at this entry (from 0).
    #[serde(default)]
    pub list_offset: usize,
    /// Entries of each list at most (1-1000, default 100); `NAME_total` gives each list's length.
    #[serde(default = "default_list_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub list_limit: usize,
}

fn default_limit() -> u32 {
    20
}

/// The states, from the queue's own list.
fn state_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let states: Vec<&str> = JobState::ALL.iter().map(|state| state.as_str()).collect();
    schemars::json_schema!({"type": "string", "enum": states})
}

/// `retry_job`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobIdArgs {
    /// The job's id (a UUID).
    pub job_id: String,
}

/// `cancel_job`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJobArgs {
    /// The job's id (a UUID).
    pub job_id: String,
    /// Undo the call: only for a background batch tool call that writes
    /// all or nothing; refused (and nothing cancelled) for any other job.
    #[serde(default)]
    pub rollback: bool,
}

/// Longest `wait_secs` of `job_status`.
pub const MAX_WAIT_SECS: u64 = 60;
/// How long `cancel_job` with `rollback` waits for the call to stop.
const ROLLBACK_WAIT: Duration = Duration::from_secs(30);

/// The JSON Schema of a job tool's arguments, portable as the batch tools'.
pub fn input_schema(tool: &str) -> Option<schemars::Schema> {
    let schema = match tool {
        "sync_folder" => schemars::schema_for!(SyncFolderArgs),
        "import_files" => schemars::schema_for!(ImportFilesArgs),
        "export_entities" => schemars::schema_for!(ExportEntitiesArgs),
        "job_status" => schemars::schema_for!(JobStatusArgs),
        "list_jobs" => schemars::schema_for!(ListJobsArgs),
        "folder_status" => schemars::schema_for!(FolderStatusArgs),
        "cancel_job" => schemars::schema_for!(CancelJobArgs),
        "retry_job" => schemars::schema_for!(JobIdArgs),
        _ => return None,
    };
    Some(batch_tools::portable_schema(schema))
}

/// The folder and job tools over one database, limited to some folders.
#[derive(Clone)]
pub struct JobTools {
    db: Database,
    /// Canonical; the only folders the folder tools touch.
    folders: Vec<PathBuf>,
    /// Where relative folder arguments start.
    base: PathBuf,
}

impl JobTools {
    /// Tools over `db` that may touch `folders` (each must exist); relative
    /// folder arguments start at `base`.
    pub fn new(db: Database, folders: &[PathBuf], base: &Path) -> std::io::Result<Self> {
        let mut folders = folders.iter().map(std::fs::canonicalize).collect::<std::io::Result<Vec<_>>>()?;
        folders.sort();
        folders.dedup();
        Ok(Self { db, folders, base: base.to_path_buf() })
    }

    /// Runs job tool `name`, or `None` when `name` is not one.
    pub async fn call(&self, name: &str, arguments: Value) -> Option<Result<Value, ToolError>> {
        if !JOB_TOOLS.iter().any(|(tool, _)| *tool == name) {
            return None;
        }
        Some(self.run(name, arguments).await)
    }

    async fn run(&self, name: &str, arguments: Value) -> Result<Value, ToolError> {
        fn parse<T: serde::de::DeserializeOwned>(tool: &str, arguments: Value) -> Result<T, ToolError> {
            serde_json::from_value(arguments).map_err(|err| ToolError::Invalid(format!("{tool}: {err}")))
        }
        match name {
            "sync_folder" => {
                let args: SyncFolderArgs = parse(name, arguments)?;
                let work = SyncInput { allow_mass_delete: args.allow_mass_delete, ..SyncInput::default() };
                self.queue(&args.folder, None, FolderJob::Sync(work)).await
            }
            "import_files" => {
                let args: ImportFilesArgs = parse(name, arguments)?;
                let work = ImportInput { folder: None, paths: args.paths, allow_mass_delete: args.allow_mass_delete };
                self.queue(&args.folder, None, FolderJob::Import(work)).await
            }
            "export_entities" => {
                let args: ExportEntitiesArgs = parse(name, arguments)?;
                let work = ExportInput { folder: None, entity_types: args.types.clone() };
                self.queue(&args.folder, args.types.as_deref(), FolderJob::Export(work)).await
            }
            "job_status" => self.status(&parse(name, arguments)?).await,
            "list_jobs" => self.list(&parse(name, arguments)?).await,
            "folder_status" => self.folder_status(&parse(name, arguments)?).await,
            "cancel_job" => self.cancel(&parse(name, arguments)?).await,
            _ => self.retry(&parse::<JobIdArgs>(name, arguments)?.job_id).await,
        }
    }

    /// `given` as one of the allowed folders, or why not.
    fn folder(&self, given: &str) -> Result<PathBuf, ToolError> {
        let path = self.base.join(given);
        let allowed = || self.folders.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ");
        let canonical = std::fs::canonicalize(&path).map_err(|err| {
            ToolError::Invalid(format!("folder {given}: {err}; this server may touch: {}", allowed()))
        })?;
        if self.folders.contains(&canonical) {
            Ok(canonical)
        } else {
            Err(ToolError::Invalid(format!(
                "folder {given} is not one this server may touch (start it with --folder to allow one); it may touch: {}",
                allowed()
            )))
        }
    }

    async fn queue(&self, folder: &str, types: Option<&[String]>, work: FolderJob) -> Result<Value, ToolError> {
        let folder = self.folder(folder)?;
        // Refused before the folder's settings are written.
        if let Some(unknown) =
            types.and_then(|types| types.iter().find(|t| entity_store::validate_entity_type(t).is_err()))
        {
            return Err(ToolError::Invalid(format!("{unknown:?} is not an entity type (lowercase a-z, 0-9 and -)")));
        }
        let config = SyncConfig::with_store_types(&folder, self.db.store.as_ref(), None)
            .await
            .map_err(|err| ToolError::Invalid(err.to_string()))?;
        config.validate().map_err(|err| ToolError::Invalid(err.to_string()))?;
        // Saved, so the worker that runs the job uses these settings.
        config.save_for_folder().map_err(|err| ToolError::File {
            path: crate::state_dir(&folder).display().to_string(),
            reason: err.to_string(),
        })?;
        let (store, state, queue) = (self.db.store.clone(), self.db.state.clone(), self.db.queue.clone());
        let plugin =
            DirectorySyncPlugin::new(config, store, state, queue).map_err(|err| ToolError::Invalid(err.to_string()))?;
        let asked = Utc::now();
        let id = self.db.queue.enqueue_many(vec![plugin.job(work)]).await?.remove(0);
        let job = self.db.queue.get(id).await?;
        // With a dedup key that has an unfinished job, the queue gives that job's id.
        let joined = job.is_some_and(|job| job.created_at < asked);
        Ok(json!({
            "status": if joined { "joined" } else { "queued" },
            "job_id": id,
            "tip": format!("follow it with job_status {{\"job_id\": \"{id}\", \"wait_secs\": 10}}; stop it with cancel_job"),
        }))
    }

    async fn status(&self, args: &JobStatusArgs) -> Result<Value, ToolError> {
        check_list_limit(args.list_limit)?;
        if args.wait_secs > MAX_WAIT_SECS {
            return Err(ToolError::Invalid(format!("wait_secs is {}, must be 0 to {MAX_WAIT_SECS}", args.wait_secs)));
        }
        let id = job_id(&args.job_id)?;
        let job = match self.db.queue.wait(id, Duration::from_secs(args.wait_secs)).await {
            Ok(job) => job,
            Err(job_queue::QueueError::NotFound(_)) => return Err(ToolError::Invalid(format!("no job {id}"))),
            // Not ended yet: as it is now.
            Err(job_queue::QueueError::Timeout(_)) => {
                self.db.queue.get(id).await?.ok_or_else(|| ToolError::Invalid(format!("no job {id}")))?
            }
            Err(err) => return Err(err.into()),
        };
        let mut view = JobView::new(&job, Utc::now());
        if args.include_result {
            view = view.with_result(&job);
            if let Some(result) = view.result.take() {
                view.result = Some(page_lists(result, args.list_offset, args.list_limit));
            }
        }
        Ok(serde_json::to_value(view).unwrap_or(Value::Null))
    }

    async fn list(&self, args: &ListJobsArgs) -> Result<Value, ToolError> {
        if !(1..=100).contains(&args.limit) {
            return Err(ToolError::Invalid(format!("limit is {}, must be 1 to 100", args.limit)));
        }
        let state = args.state.as_deref().map(str::parse::<JobState>).transpose().map_err(ToolError::Invalid)?;
        let folder = args.folder.as_deref().map(|f| self.folder(f)).transpose()?;
        let filter = JobFilter {
            state,
            job_type: args.job_type.clone(),
            dedup_prefix: folder.as_deref().map(crate::plugin::folder_dedup_prefix),
            limit: Some(args.limit),
            offset: Some(args.offset),
            ..JobFilter::default()
        };
        let now = Utc::now();
        let jobs: Vec<JobView> = self.db.queue.list(&filter).await?.iter().map(|job| JobView::new(job, now)).collect();
        Ok(json!({ "jobs": jobs, "offset": args.offset }))
    }

    async fn folder_status(&self, args: &FolderStatusArgs) -> Result<Value, ToolError> {
        check_list_limit(args.list_limit)?;
        let folder = self.folder(&args.folder)?;
        let invalid = |err: &dyn std::fmt::Display| ToolError::Invalid(format!("folder {}: {err}", folder.display()));
        let config = SyncConfig::for_folder(&folder).map_err(|err| invalid(&err))?;
        let syncer = crate::Syncer::new(config, self.db.store.clone(), self.db.state.clone(), None)
            .map_err(|err| invalid(&err))?;
        let status = syncer.folder_status().await.map_err(|err| invalid(&err))?;
        let last_summary = status.last_summary.map(|summary| page_lists(summary, args.list_offset, args.list_limit));
        Ok(json!({
            "folder": status.folder, "entities": status.entities, "not_in_folder": status.not_in_folder,
            "conflicts": status.conflicts, "last_sync": status.last_sync, "last_summary": last_summary,
            "job_counts": self.db.queue.counts().await?,
        }))
    }

    async fn retry(&self, given: &str) -> Result<Value, ToolError> {
        let id = job_id(given)?;
        let retried = self.db.queue.retry(id).await?;
        Ok(json!({ "retried": retried, "state": self.state_of(id).await? }))
    }

    async fn state_of(&self, id: JobId) -> Result<&'static str, ToolError> {
        let job = self.db.queue.get(id).await?;
        job.map(|job| job.state.as_str()).ok_or_else(|| ToolError::Invalid(format!("no job {id}")))
    }

    async fn cancel(&self, args: &CancelJobArgs) -> Result<Value, ToolError> {
        let id = job_id(&args.job_id)?;
        if args.rollback {
            let job = self.db.queue.get(id).await?.ok_or_else(|| ToolError::Invalid(format!("no job {id}")))?;
            rollback_possible(&job)?;
        }
        let cancelled = self.db.queue.cancel(id).await?;
        let state = self.state_of(id).await?;
        if !args.rollback {
            return Ok(json!({ "cancelled": cancelled, "state": state }));
        }
        let (rolled_back, note) = self.rollback_outcome(id, cancelled).await?;
        Ok(json!({ "cancelled": cancelled, "state": state, "rolled_back": rolled_back, "note": note }))
    }

    /// Whether a cancelled tool job left the store as it was, once its
    /// worker says how it ended (its last progress message); `None` when
    /// it has not said within [`ROLLBACK_WAIT`].
    async fn rollback_outcome(&self, id: JobId, cancelled: bool) -> Result<(Option<bool>, String), ToolError> {
        let deadline = tokio::time::Instant::now() + ROLLBACK_WAIT;
        loop {
            let job = self.db.queue.get(id).await?.ok_or_else(|| ToolError::Invalid(format!("no job {id}")))?;
            let outcome = Outcome::from_message(&job.progress.message);
            let answer = match (cancelled, outcome, job.started_at) {
                (_, _, None) if job.state == JobState::Cancelled => {
                    Some((true, "cancelled before it started: nothing written".to_owned()))
                }
                (_, Some(Outcome::RolledBack), _) => Some((true, Outcome::RolledBack.message().to_owned())),
                (_, Some(Outcome::Finished), _) => {
                    Some((false, "the call had finished before the cancel reached it: what it wrote stands".to_owned()))
                }
                (_, Some(Outcome::Stopped), _) => Some((false, Outcome::Stopped.message().to_owned())),
                // Completed: its writes stand; dead: an all-or-nothing call that failed wrote nothing.
                (false, None, _) if matches!(job.state, JobState::Completed | JobState::Dead) => {
                    Some((job.state == JobState::Dead, format!("the job had already ended: {}", job.state.as_str())))
                }
                // Its worker is gone: a transaction not committed ends with its connection.
                (_, None, Some(_)) if worker_gone(&job) => Some((
                    true,
                    "its worker stopped without finishing it: an uncommitted call writes nothing".to_owned(),
                )),
                _ => None,
            };
            if let Some((rolled_back, note)) = answer {
                return Ok((Some(rolled_back), note));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok((
                    None,
                    format!(
                        "the worker running it has not stopped within {} s; job_status shows `{}` once it has",
                        ROLLBACK_WAIT.as_secs(),
                        Outcome::RolledBack.message()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Queues batch tool `name` as a job (`background: true`).
    /// Checked as `tools` would check it when run (paths against their files root).
    pub async fn queue_tool_call(
        &self,
        tools: &batch_tools::BatchTools,
        name: &str,
        arguments: Value,
    ) -> Result<Value, ToolError> {
        let job = batch_tools::background::tool_job(tools, name, arguments, "mcp")?;
        let id = self.db.queue.enqueue_many(vec![job]).await?.remove(0);
        Ok(json!({
            "status": "queued",
            "job_id": id,
            "tip": format!(
                "follow it with job_status {{\"job_id\": \"{id}\", \"wait_secs\": 10}}; its output is job_status's result \
                 (include_result: true) once it has completed; stop it with cancel_job"
            ),
        }))
    }
}

/// The worker holding `job` has stopped: a process of this machine that
/// has ended, or no heartbeat for [`SILENT_WORKER`].
fn worker_gone(job: &job_queue::Job) -> bool {
    let ended_here = job.worker_id.as_deref().is_some_and(job_queue::local_process_ended);
    let silent = job.heartbeat_at.is_none_or(|beat| Utc::now() - beat > SILENT_WORKER);
    ended_here || silent
}

/// No heartbeat for this long: the worker is gone (they beat every second or more often).
const SILENT_WORKER: chrono::TimeDelta = chrono::TimeDelta::seconds(15);

/// Refuses a rollback the job cannot give: only a background tool call
/// that writes all or nothing can leave the store as it found it.
fn rollback_possible(job: &job_queue::Job) -> Result<(), ToolError> {
    if job.job_type != TOOL_JOB {
        return Err(ToolError::Invalid(format!(
            "rollback: a {} job keeps what it wrote when cancelled; only a batch tool call made with background: true \
             can be rolled back. Nothing was cancelled: call cancel_job without rollback to stop it",
            job.job_type
        )));
    }
    let call: ToolJob = serde_json::from_value(job.input.clone())
        .map_err(|err| ToolError::Invalid(format!("job {}: its input is not a tool call: {err}", job.id)))?;
    if !call.parse()?.cancel_writes_nothing() {
        return Err(ToolError::Invalid(format!(
            "rollback: this {} call writes as it goes (not all or nothing), so a cancel keeps what it already wrote; \
             nothing was cancelled. Call cancel_job without rollback to stop it there (batch_add with atomic: true, \
             the default, can be rolled back)",
            call.tool
        )));
    }
    Ok(())
}

fn job_id(given: &str) -> Result<JobId, ToolError> {
    given.parse().map_err(|_| ToolError::Invalid(format!("{given:?} is not a job id (a UUID)")))
}

fn check_list_limit(limit: usize) -> Result<(), ToolError> {
    if (1..=1000).contains(&limit) {
        Ok(())
    } else {
        Err(ToolError::Invalid(format!("list_limit is {limit}, must be 1 to 1000")))
    }
}

/// Every list among a result's top-level fields cut to `[offset, offset +
/// limit)`, with `NAME_total` beside each saying how long it is: a result
/// can list hundreds of thousands of documents, far more than one answer
/// (or a model's context) holds.
fn page_lists(mut result: Value, offset: usize, limit: usize) -> Value {
    let Value::Object(fields) = &mut result else { return result };
    let mut totals = Vec::new();
    for (name, value) in fields.iter_mut() {
        if let Value::Array(items) = value {
            totals.push((format!("{name}_total"), items.len()));
            let page: Vec<Value> = items.drain(..).skip(offset).take(limit).collect();
            *items = page;
        }
    }
    for (name, total) in totals {
        fields.insert(name, json!(total));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyncSummary;

    #[test]
    fn every_list_of_a_result_is_paged_and_counted() {
        let summary = SyncSummary {
            failed: (0..5).map(|i| crate::Problem { path: format!("f{i}.md"), error: "bad".into() }).collect(),
            ..SyncSummary::default()
        };
        let paged = page_lists(serde_json::to_value(&summary).unwrap(), 1, 2);
        let paths: Vec<&str> =
            paged["failed"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["f1.md", "f2.md"]);
        assert_eq!((&paged["failed_total"], &paged["warnings_total"]), (&json!(5), &json!(0)));
        let added: Vec<Value> = (0..540_000).map(|i| json!({"collection": "c", "id": i})).collect();
        let output = page_lists(json!({"processed": 540_000, "added": added, "rolled_back": false}), 0, 100);
        assert_eq!(output["added"].as_array().unwrap().len(), 100);
        assert_eq!((&output["added_total"], &output["processed"]), (&json!(540_000), &json!(540_000)));
        assert!(output.to_string().len() < 10_000, "an answer of a few KB, not 26 MB");
        assert_eq!(page_lists(json!("text"), 0, 1), json!("text"));
    }

    /// A property the schema marks required is one a call cannot leave
    /// out, and the others can be left out (a client that follows the
    /// schema can make every call the server takes).
    #[test]
    fn required_in_the_schema_means_required_by_the_server() {
        fn parses(tool: &str, arguments: &Value) -> bool {
            let arguments = arguments.clone();
            match tool {
                "sync_folder" => serde_json::from_value::<SyncFolderArgs>(arguments).is_ok(),
                "import_files" => serde_json::from_value::<ImportFilesArgs>(arguments).is_ok(),
                "export_entities" => serde_json::from_value::<ExportEntitiesArgs>(arguments).is_ok(),
                "job_status" => serde_json::from_value::<JobStatusArgs>(arguments).is_ok(),
                "list_jobs" => serde_json::from_value::<ListJobsArgs>(arguments).is_ok(),
                "folder_status" => serde_json::from_value::<FolderStatusArgs>(arguments).is_ok(),
                "cancel_job" => serde_json::from_value::<CancelJobArgs>(arguments).is_ok(),
                "retry_job" => serde_json::from_value::<JobIdArgs>(arguments).is_ok(),
                other => panic!("no case for {other}"),
            }
        }
        for (name, _) in JOB_TOOLS {
            let schema = input_schema(name).unwrap().as_value().clone();
            let required: Vec<&str> =
                schema["required"].as_array().map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
            let minimal: serde_json::Map<String, Value> =
                required.iter().map(|field| ((*field).to_owned(), json!("x"))).collect();
            assert!(parses(name, &Value::Object(minimal.clone())), "{name}: only {required:?} given");
            for field in &required {
                let mut without = minimal.clone();
                without.remove(*field);
                assert!(!parses(name, &Value::Object(without)), "{name}: {field} is marked required but optional");
            }
        }
    }

    #[test]
    fn every_tool_has_a_portable_schema() {
        for (name, _) in JOB_TOOLS {
            let schema = input_schema(name).unwrap_or_else(|| panic!("{name} has no schema"));
            let text = schema.as_value().to_string();
            assert!(!text.contains("uint") && !text.contains("\"null\""), "{name}: {text}");
        }
    }
}
