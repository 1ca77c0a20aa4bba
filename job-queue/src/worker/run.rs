//! The worker's slots: each pulls its next claimed job from the local
//! buffer and runs it, and how a job's outcome is written.

use super::buffer::Buffer;
use super::completion::{CompletionSender, persist};
use super::pace::Pace;
use super::progress::JobProgress;
use super::{HeldJobs, WorkerConfig};
use crate::Queue;
use crate::handler::{ErasedHandler, JobContext, Registry};
use crate::model::{AfterFailure, Job, JobEventKind, from_micros, now_micros};
use crate::store::{Completion, Held};
use batch_core::CancellationToken;
use futures::FutureExt;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::Instant;

/// What every slot of one worker shares.
pub(super) struct Slots {
    pub(super) queue: Queue,
    pub(super) registry: Registry,
    pub(super) config: WorkerConfig,
    pub(super) held: HeldJobs,
    /// The worker's shutdown: a job stopped by it goes back to the queue.
    pub(super) stopping: CancellationToken,
    pub(super) completions: CompletionSender,
    pub(super) pace: Pace,
    pub(super) buffer: Buffer,
    /// Jobs claimed and not yet finished (buffered or running), per type:
    /// a limited type is claimed only as its slots free up.
    pub(super) held_by_type: HeldByType,
}

/// Claimed and unfinished jobs, per type.
#[derive(Default)]
pub(super) struct HeldByType(Mutex<HashMap<String, usize>>);

impl HeldByType {
    pub(super) fn add(&self, job_type: &str, count: usize) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match counts.get_mut(job_type) {
            Some(held) => *held += count,
            None => {
                counts.insert(job_type.to_owned(), count);
            }
        }
    }

    fn remove_one(&self, job_type: &str) {
        if let Some(held) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get_mut(job_type) {
            *held = held.saturating_sub(1);
        }
    }

    pub(super) fn get(&self, job_type: &str) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(job_type).copied().unwrap_or(0)
    }
}

impl Slots {
    /// One slot: runs buffered jobs one after another until the worker stops.
    /// Jobs start here, not from the claiming loop, so a finished job's slot
    /// takes the next one at once.
    pub(super) async fn run_slot(self: Arc<Self>) {
        loop {
            let job = tokio::select! {
                biased;
                () = self.stopping.cancelled() => return,
                job = self.buffer.pop() => job,
            };
            let Some(job) = job else { return };
            let limited = self.config.type_limits.contains_key(&job.job_type);
            self.run_job(job).await;
            if limited || self.buffer.is_empty() {
                // A slot of a limited type, or a slot with nothing to run: worth a claim.
                self.buffer.wanted.notify_one();
            }
        }
    }

    async fn run_job(&self, job: Job) {
        let token =
            self.held.lock().unwrap_or_else(PoisonError::into_inner).get(&job.id).map(|(_, token)| token.clone());
        let (Some(token), Some(handler)) = (token, self.registry.get(&job.job_type)) else {
            self.held_by_type.remove_one(&job.job_type);
            return;
        };
        if token.is_cancelled() {
            // Cancelled (or taken over) while it waited in the buffer.
            self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&job.id);
            self.held_by_type.remove_one(&job.job_type);
            return;
        }
        self.queue.track_running(job.id, token.clone());
        self.execute(handler, &job, &token).await;
        self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&job.id);
        self.queue.untrack_running(job.id);
        self.held_by_type.remove_one(&job.job_type);
    }

    async fn execute(&self, handler: Arc<dyn ErasedHandler>, job: &Job, token: &CancellationToken) {
        let held = Held { id: job.id, attempt: job.attempt };
        self.queue.emit(job.id, &job.job_type, JobEventKind::Started { attempt: job.attempt });
        let reporter =
            Arc::new(JobProgress::new(self.queue.clone(), held, job.job_type.clone(), self.config.progress_interval));
        let ctx =
            JobContext { job_id: job.id, attempt: job.attempt, progress: reporter.clone(), cancel: token.clone() };
        let started = Instant::now();
        let outcome = AssertUnwindSafe(handler.call(job.input.clone(), ctx)).catch_unwind().await;
        self.pace.record(started.elapsed());
        let progress = reporter.finish();
        match outcome {
            Ok(Ok(output)) => {
                if token.is_cancelled() && !self.stopping.is_cancelled() {
                    // Finished as the cancel came: its result is discarded, but what it
                    // reported last (how it ended) is kept, as for a job that stopped.
                    // The state is the canceller's (or the new holder's) to write: a
                    // `Queue::cancel` in this process fires the token before its own
                    // write, so a completion sent now could land first and win.
                    persist(|| reporter.write_last(&progress)).await;
                } else {
                    // Done, or done while this worker shuts down: the work is finished,
                    // so it is written (fenced by state and attempt as always).
                    let completion = Completion { held, job_type: job.job_type.clone(), output, progress };
                    if self.completions.send(completion).is_err() {
                        tracing::warn!(id = %job.id, "worker stopped before the result was written; the lease will expire");
                    }
                }
            }
            Ok(Err(error)) => {
                if token.is_cancelled() {
                    // Stopped because it was cancelled (written by `Queue::cancel`, here or
                    // elsewhere) or taken over: its state is not this worker's to write. It
                    // keeps the progress it reached (the attempt still fences the write).
                    persist(|| reporter.write_last(&progress)).await;
                    if self.stopping.is_cancelled() {
                        // Stopped by this worker's shutdown: back to the queue for another.
                        let stopped = [held];
                        persist(|| self.queue.store().release(&stopped)).await;
                    }
                } else {
                    self.fail(job, held, token, error.message, error.retryable).await;
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                self.fail(job, held, token, format!("handler panicked: {message}"), true).await;
            }
        }
    }

    async fn fail(&self, job: &Job, held: Held, token: &CancellationToken, error: String, retryable: bool) {
        let after = if retryable && job.attempt < job.max_attempts {
            let delay = self.config.retry.delay_after(job.attempt.max(1) as u32);
            AfterFailure::Retry { at: now_micros() + delay.as_micros() as i64 }
        } else {
            AfterFailure::Dead
        };
        // Said at once, before the write: on a full disk or a lost database the write may
        // never get through, and a waiting caller should still hear why the attempt failed.
        if !token.is_cancelled() {
            self.queue.emit(job.id, &job.job_type, JobEventKind::Failed { attempt: job.attempt, error: error.clone() });
        }
        let stored = persist(|| self.queue.store().fail(held, &error, after)).await;
        if stored != Some(true) {
            return;
        }
        let kind = match after {
            AfterFailure::Retry { at } => JobEventKind::Retrying { error, retry_at: from_micros(at) },
            AfterFailure::Dead => JobEventKind::Dead { error },
        };
        self.queue.emit(job.id, &job.job_type, kind);
    }
}
