//! Finished jobs written in batches, and writes retried through short
//! database outages.

use crate::model::{JobEventKind, JobId};
use crate::store::Completion;
use crate::{Queue, Result};
use batch_core::{CancellationToken, RetryPolicy};
use std::time::Duration;

pub(super) type CompletionSender = tokio::sync::mpsc::UnboundedSender<Completion>;

/// Writes finished jobs in batches: whatever piled up while the previous
/// write ran goes in the next statement.
pub(super) async fn completion_loop(queue: Queue, mut pending: tokio::sync::mpsc::UnboundedReceiver<Completion>) {
    const MAX_BATCH: usize = 1000;
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let applied = persist(|| queue.store().complete_many(&batch)).await.unwrap_or_default();
        let applied: std::collections::HashSet<JobId> = applied.into_iter().collect();
        for done in &batch {
            if applied.contains(&done.held.id) {
                queue.emit(done.held.id, &done.job_type, JobEventKind::Completed);
            } else {
                tracing::debug!(id = %done.held.id, "result discarded: the job was cancelled or taken over");
            }
        }
    }
}

/// Writes a job's outcome, retrying through short database outages; `None`
/// when it kept failing, in which case the lease expiry hands the job to
/// another attempt.
pub(super) async fn persist<T, F, Fut>(write: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    // About half a minute of retries: a database restart should not cost a finished job its result.
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        ..RetryPolicy::default()
    };
    let outcome = batch_core::retry(&policy, &CancellationToken::new(), |_| {
        let attempt = write();
        async move { attempt.await.map_err(|e| batch_core::ItemError::retryable(e.to_string())) }
    })
    .await;
    outcome.map_err(|error| tracing::warn!(reason = %error.reason, "could not record a job outcome")).ok()
}
