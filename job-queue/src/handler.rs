//! Typed job handlers and what they get to work with.

use std::sync::Arc;

use batch_core::{CancellationToken, ProgressReporter};
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::JobId;

/// Why a handler failed; `retryable` failures are tried again after a backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// What went wrong, for a person.
    pub message: String,
    /// Whether the job should be tried again (while attempts are left).
    pub retryable: bool,
}

impl JobError {
    /// A failure another attempt may fix (a timeout, a lost connection).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    /// A failure no retry can fix: the job goes straight to `dead`.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

/// What a running handler gets besides its input.
#[derive(Clone)]
pub struct JobContext {
    /// The job being run.
    pub job_id: JobId,
    /// 1 on the first run.
    pub attempt: i32,
    /// Report as often as you like: subscribers see every update, the
    /// database about one a second.
    pub progress: Arc<dyn ProgressReporter>,
    /// Fires when the job is cancelled or the worker shuts down.
    pub cancel: CancellationToken,
}

impl JobContext {
    /// A context for running a handler outside a worker (a benchmark, a
    /// test, a host calling it inline): a fresh job id, attempt 1, progress
    /// dropped, never cancelled.
    pub fn standalone() -> Self {
        Self {
            job_id: uuid::Uuid::now_v7(),
            attempt: 1,
            progress: Arc::new(batch_core::NoProgress),
            cancel: CancellationToken::new(),
        }
    }
}

/// A job type's handler.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The job's input, read from its JSON.
    type Input: DeserializeOwned + Send;
    /// The result, stored as JSON as the job's output.
    type Output: Serialize + Send;

    /// Runs one attempt. Report progress and watch the cancel token through
    /// `ctx`; a retryable error is tried again while attempts are left.
    async fn process(&self, input: Self::Input, ctx: JobContext) -> Result<Self::Output, JobError>;
}

/// Does nothing and succeeds: for health checks, and for measuring the
/// queue itself (`cargo xtask bench queue`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHandler;

#[async_trait::async_trait]
impl JobHandler for NoopHandler {
    type Input = Value;
    type Output = ();
    async fn process(&self, _input: Value, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// A handler with JSON in and out, so handlers of any types share a registry.
pub(crate) trait ErasedHandler: Send + Sync {
    fn call(&self, input: Value, ctx: JobContext) -> BoxFuture<'_, Result<Value, JobError>>;
}

impl<H: JobHandler> ErasedHandler for H {
    fn call(&self, input: Value, ctx: JobContext) -> BoxFuture<'_, Result<Value, JobError>> {
        Box::pin(async move {
            let input: H::Input = serde_json::from_value(input)
                .map_err(|e| JobError::permanent(format!("input does not match the job type: {e}")))?;
            let output = self.process(input, ctx).await?;
            serde_json::to_value(output).map_err(|e| JobError::permanent(format!("output cannot be serialised: {e}")))
        })
    }
}

/// Handlers by job type.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: std::collections::BTreeMap<String, Arc<dyn ErasedHandler>>,
}

impl Registry {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `handler` for jobs of `job_type` (replacing an earlier one).
    #[must_use]
    pub fn with<H: JobHandler>(mut self, job_type: impl Into<String>, handler: H) -> Self {
        self.register(job_type, handler);
        self
    }

    /// Adds `handler` for jobs of `job_type` (replacing an earlier one).
    pub fn register<H: JobHandler>(&mut self, job_type: impl Into<String>, handler: H) {
        self.handlers.insert(job_type.into(), Arc::new(handler));
    }

    /// The job types it has handlers for, sorted.
    pub fn job_types(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    pub(crate) fn get(&self, job_type: &str) -> Option<Arc<dyn ErasedHandler>> {
        self.handlers.get(job_type).cloned()
    }
}
