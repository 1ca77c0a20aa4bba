//! Batch tool calls run as jobs (`background: true` on the MCP server):
//! the call's arguments become the input of a [`TOOL_JOB`] job, any worker
//! with a [`ToolJobHandler`] runs it with the job's progress and
//! cancellation, and its output becomes the job's output.
//!
//! A cancelled job ends with one of the [`Outcome`] messages as its
//! progress message, so whoever cancelled it can learn whether the store
//! was left as it was (`Outcome::RolledBack`) or the call had already
//! written (`Outcome::Finished`, `Outcome::Stopped`).

use std::sync::{Arc, Mutex, PoisonError};

use batch_core::{Progress, ProgressReporter, ProgressUpdate};
use job_queue::{EnqueueOptions, JobContext, JobError, JobHandler, MAX_INPUT_BYTES, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{BatchTools, Call, ToolCall, ToolError, invalid};

/// The job type of a batch tool call run in the background.
pub const TOOL_JOB: &str = "batch-tool";

/// A [`TOOL_JOB`] job's input: the call as the client made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolJob {
    /// The tool's name (`batch_add`...).
    pub tool: String,
    /// Its arguments, as the client sent them.
    pub arguments: Value,
}

impl ToolJob {
    /// The call parsed, as it will run.
    pub fn parse(&self) -> Result<ToolCall, ToolError> {
        ToolCall::parse(&self.tool, self.arguments.clone())
    }
}

/// The job for tool `name` with `arguments`, checked now so a bad call is
/// refused at once instead of failing later as a job. One attempt: running
/// a half-done call again is the caller's choice (`retry_job`), not the
/// queue's. Arguments larger than the queue's input limit
/// ([`MAX_INPUT_BYTES`]) are refused with the limit named.
pub fn tool_job(tools: &BatchTools, name: &str, arguments: Value, source: &str) -> Result<NewJob, ToolError> {
    let job = ToolJob { tool: name.to_owned(), arguments };
    tools.check(&job.parse()?)?;
    queued_as(&job, source)
}

/// The job that runs `job`, refused when its input is over the queue's limit.
fn queued_as(job: &ToolJob, source: &str) -> Result<NewJob, ToolError> {
    let name = &job.tool;
    let input = serde_json::to_value(job).map_err(|err| invalid(err.to_string()))?;
    let size = input.to_string().len();
    if size > MAX_INPUT_BYTES {
        return Err(invalid(format!(
            "{name} with background: true: its arguments are {size} bytes, and a background call may carry at most \
             {MAX_INPUT_BYTES} bytes (the job queue's input limit); split it into smaller calls, or make it without \
             background (up to 16 MiB)"
        )));
    }
    let options = EnqueueOptions { max_attempts: 1, source: Some(source.to_owned()), ..EnqueueOptions::default() };
    Ok(NewJob::new(TOOL_JOB, input).with_options(options))
}

/// How a tool job ended, written as its last progress message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call ran to its end: what it wrote stands.
    Finished,
    /// Cancelled, and the call wrote nothing: it writes in one transaction
    /// that the cancel rolled back, or it writes nothing at all.
    RolledBack,
    /// Stopped at a chunk boundary by a cancel (or its worker stopping);
    /// what it wrote before stays.
    Stopped,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 3] = [Outcome::Finished, Outcome::RolledBack, Outcome::Stopped];

    /// The progress message that says so.
    pub fn message(self) -> &'static str {
        match self {
            Self::Finished => "finished: what the call wrote stands",
            Self::RolledBack => "cancelled: rolled back, nothing written",
            Self::Stopped => {
                "stopped at a chunk boundary (cancelled, or its worker stopping); what was written before stays"
            }
        }
    }

    /// The outcome a job's progress message gives, if it ended.
    pub fn from_message(message: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|outcome| outcome.message() == message)
    }
}

/// Runs [`TOOL_JOB`] jobs with these tools.
pub struct ToolJobHandler {
    tools: BatchTools,
}

impl ToolJobHandler {
    /// Runs background calls with `tools`.
    pub fn new(tools: BatchTools) -> Self {
        Self { tools }
    }
}

/// Passes reports on and keeps the last, so the final word keeps its counts.
struct Remembering {
    inner: Arc<dyn ProgressReporter>,
    last: Mutex<Progress>,
}

impl ProgressReporter for Remembering {
    fn report(&self, update: &ProgressUpdate) {
        update.progress.clone_into(&mut self.last.lock().unwrap_or_else(PoisonError::into_inner));
        self.inner.report(update);
    }
}

impl Remembering {
    fn say(&self, outcome: Outcome) {
        let mut progress = self.last.lock().unwrap_or_else(PoisonError::into_inner).clone();
        outcome.message().clone_into(&mut progress.message);
        self.inner.report(&ProgressUpdate::new(progress, std::time::Duration::ZERO, true));
    }
}

#[async_trait::async_trait]
impl JobHandler for ToolJobHandler {
    type Input = ToolJob;
    type Output = Value;

    async fn process(&self, input: ToolJob, ctx: JobContext) -> Result<Value, JobError> {
        let tool = input.parse().map_err(|err| JobError::permanent(err.to_string()))?;
        let writes_nothing = tool.cancel_writes_nothing();
        let progress = Arc::new(Remembering { inner: ctx.progress.clone(), last: Mutex::default() });
        let call = Call { progress: progress.clone(), cancel: ctx.cancel.clone() };
        match self.tools.run(tool, &call).await {
            Ok(output) => {
                // A call that writes as it goes ends early, with what it did, when cancelled;
                // one that writes all or nothing and still ended well had committed first.
                let stopped = ctx.cancel.is_cancelled() && !writes_nothing;
                progress.say(if stopped { Outcome::Stopped } else { Outcome::Finished });
                Ok(output)
            }
            Err(ToolError::Cancelled) => {
                progress.say(if writes_nothing { Outcome::RolledBack } else { Outcome::Stopped });
                Err(JobError::permanent("cancelled"))
            }
            Err(err) => Err(JobError::permanent(format!("{}: {err}", input.tool))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_read_back_from_their_messages() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::from_message(outcome.message()), Some(outcome));
        }
        assert_eq!(Outcome::from_message("importing"), None);
    }

    #[test]
    fn bad_and_oversized_calls_are_refused_before_queueing() {
        let job = |tool: &str, arguments: Value| ToolJob { tool: tool.into(), arguments };
        let err = job("batch_add", json!({"documents": "no"})).parse().unwrap_err();
        assert!(err.to_string().contains("batch_add"), "{err}");
        let err = job("batch_nothing", json!({})).parse().unwrap_err();
        assert!(err.to_string().contains("unknown tool"), "{err}");
        // Arguments that parse but that the tool refuses at once are refused before queueing too.
        for (tool, arguments, reason) in [
            ("batch_add", json!({"documents": []}), "give 1 to"),
            ("batch_add", json!({"documents": [{"content": "x"}], "collection": "BAD NAME"}), "collection"),
            ("batch_delete", json!({}), "give `filter` or `document_ids`"),
            ("batch_delete", json!({"filter": "x = 1", "document_ids": ["a"]}), "not both"),
            ("batch_delete", json!({"filter": "(("}), "filter"),
            ("batch_update", json!({"filter": "((", "metadata_updates": {"a": 1}}), "filter"),
            ("batch_export", json!({"path": "out.unknown"}), "cannot tell the format"),
            ("batch_search", json!({"queries": []}), "give 1 to"),
            ("batch_extract", json!({"urls": ["ftp://x"]}), "only http and https"),
        ] {
            let call = job(tool, arguments.clone()).parse().unwrap_or_else(|err| panic!("{tool} {arguments}: {err}"));
            let err = call.check().expect_err(&format!("{tool} {arguments} is refused"));
            assert!(err.to_string().contains(reason), "{tool} {arguments}: {err}");
        }
        let big = "x".repeat(MAX_INPUT_BYTES);
        let err = queued_as(&job("batch_add", json!({"documents": [{"content": big}]})), "test").unwrap_err();
        assert!(err.to_string().contains(&MAX_INPUT_BYTES.to_string()), "the limit is named: {err}");
        let queued = queued_as(&job("batch_add", json!({"documents": [{"content": "x"}]})), "test").unwrap();
        assert_eq!((queued.job_type.as_str(), queued.options.max_attempts), (TOOL_JOB, 1));
    }

    #[test]
    fn only_calls_that_write_nothing_when_cancelled_say_so() {
        let cases = [
            ("batch_add", json!({"documents": [{"content": "x"}]}), true),
            ("batch_add", json!({"documents": [{"content": "x"}], "atomic": false}), false),
            ("batch_search", json!({"queries": [{"query": "x"}]}), true),
            ("batch_delete", json!({"document_ids": ["a"]}), true),
            ("batch_delete", json!({"document_ids": ["a"], "dry_run": false, "confirm_count": 1}), false),
            ("batch_update", json!({"document_ids": ["a"], "metadata_updates": {"x": 1}}), false),
        ];
        for (tool, arguments, expected) in cases {
            let call =
                ToolCall::parse(tool, arguments.clone()).unwrap_or_else(|err| panic!("{tool} {arguments}: {err}"));
            assert_eq!(call.cancel_writes_nothing(), expected, "{tool} {arguments}");
        }
    }
}
