//! A running job's progress: every update to subscribers, about one a
//! second to the database.

use crate::Queue;
use crate::model::JobEventKind;
use crate::store::Held;
use batch_core::{Progress, ProgressReporter, ProgressUpdate};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The progress reporter handed to handlers: every update goes to
/// subscribers at once, the database gets at most one write per interval.
/// An update that falls inside an interval is written when the interval ends
/// (a trailing write), so other processes never keep showing a stale step
/// while the handler is quiet.
pub(super) struct JobProgress {
    pub(super) queue: Queue,
    pub(super) held: Held,
    pub(super) job_type: String,
    pub(super) interval: Duration,
    pub(super) state: Arc<Mutex<ProgressState>>,
    /// Writes go one at a time, in the order they were planned: the number
    /// of the last one written. A write planned earlier that reaches the
    /// database later (it waited for a connection) is dropped, so it cannot
    /// overwrite a newer step or the job's last word.
    pub(super) written: Arc<tokio::sync::Mutex<u64>>,
}

#[derive(Default)]
pub(super) struct ProgressState {
    pub(super) latest: Progress,
    pub(super) written_at: Option<Instant>,
    pub(super) trailing_write_pending: bool,
    pub(super) finished: bool,
    /// The number of the last write planned.
    pub(super) planned: u64,
}

pub(super) enum ProgressWrite {
    /// Write now, as write number `.0`.
    Now(u64),
    After(Duration),
    AlreadyPending,
}

impl ProgressState {
    pub(super) fn plan_write(&mut self, interval: Duration) -> ProgressWrite {
        if self.trailing_write_pending {
            return ProgressWrite::AlreadyPending;
        }
        let wait = self.written_at.and_then(|at| interval.checked_sub(at.elapsed())).filter(|wait| !wait.is_zero());
        if let Some(wait) = wait {
            self.trailing_write_pending = true;
            return ProgressWrite::After(wait);
        }
        self.written_at = Some(Instant::now());
        self.planned += 1;
        ProgressWrite::Now(self.planned)
    }

    /// The progress a trailing write should store and its number, or
    /// `None` once the job has finished (its outcome carries the final progress).
    pub(super) fn take_trailing(&mut self) -> Option<(Progress, u64)> {
        self.trailing_write_pending = false;
        if self.finished {
            return None;
        }
        self.written_at = Some(Instant::now());
        self.planned += 1;
        Some((self.latest.clone(), self.planned))
    }
}

impl JobProgress {
    pub(super) fn new(queue: Queue, held: Held, job_type: String, interval: Duration) -> Self {
        Self { queue, held, job_type, interval, state: Arc::default(), written: Arc::default() }
    }

    /// Writes the job's last progress after every write planned before,
    /// and so that none of them lands after it. For [`persist`](super::completion::persist):
    /// an error is returned to be retried.
    pub(super) async fn write_last(&self, progress: &Progress) -> crate::Result<bool> {
        let mut written = self.written.lock().await;
        *written = u64::MAX;
        self.queue.count_progress_write();
        self.queue.store().save_progress(self.held, progress).await
    }

    /// The last progress reported; no progress write happens after this.
    pub(super) fn finish(&self) -> Progress {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.finished = true;
        state.latest.clone()
    }
}

impl ProgressReporter for JobProgress {
    fn report(&self, update: &ProgressUpdate) {
        let plan = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.latest = update.progress.clone();
            state.plan_write(self.interval)
        };
        self.queue.emit(self.held.id, &self.job_type, JobEventKind::Progress { progress: update.progress.clone() });
        let (queue, held) = (self.queue.clone(), self.held);
        match plan {
            ProgressWrite::Now(number) => {
                let (progress, written) = (update.progress.clone(), self.written.clone());
                tokio::spawn(async move { save_progress(&queue, held, &progress, &written, number).await });
            }
            ProgressWrite::After(delay) => {
                let (state, written) = (self.state.clone(), self.written.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let trailing = state.lock().unwrap_or_else(PoisonError::into_inner).take_trailing();
                    if let Some((progress, number)) = trailing {
                        save_progress(&queue, held, &progress, &written, number).await;
                    }
                });
            }
            ProgressWrite::AlreadyPending => {}
        }
    }
}

/// Writes `progress` as write number `number`, unless a later one was written already.
async fn save_progress(queue: &Queue, held: Held, progress: &Progress, written: &tokio::sync::Mutex<u64>, number: u64) {
    let mut last = written.lock().await;
    if *last >= number {
        return;
    }
    *last = number;
    queue.count_progress_write();
    if let Err(error) = queue.store().save_progress(held, progress).await {
        tracing::debug!(%error, "progress write failed; the next one will catch up");
    }
}
