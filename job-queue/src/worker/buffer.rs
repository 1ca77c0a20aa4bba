//! Claimed jobs waiting for a slot: the claiming loop fills the buffer
//! ahead of need, the slots empty it.

use crate::model::Job;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use tokio::sync::{Notify, Semaphore};

pub(super) struct Buffer {
    jobs: Mutex<VecDeque<Job>>,
    /// One permit per buffered job: a free slot waits here, not on the
    /// claiming loop.
    available: Semaphore,
    /// Wakes the claiming loop: the buffer fell to its low-water mark, or a
    /// slot freed up with nothing to run.
    pub(super) wanted: Notify,
    /// The claiming loop refills the buffer when it holds this many jobs or
    /// fewer, so the next claim runs while the slots still have work.
    low_water: AtomicUsize,
}

impl Default for Buffer {
    fn default() -> Self {
        Self {
            jobs: Mutex::default(),
            available: Semaphore::new(0),
            wanted: Notify::new(),
            low_water: AtomicUsize::new(0),
        }
    }
}

impl Buffer {
    pub(super) fn push(&self, jobs: Vec<Job>) {
        let count = jobs.len();
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).extend(jobs);
        self.available.add_permits(count);
    }

    /// The next job, once there is one (`None` only if the buffer was closed).
    pub(super) async fn pop(&self) -> Option<Job> {
        self.available.acquire().await.ok()?.forget();
        let (job, left) = {
            let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            (jobs.pop_front(), jobs.len())
        };
        if left <= self.low_water.load(Ordering::Relaxed) {
            self.wanted.notify_one();
        }
        job
    }

    pub(super) fn len(&self) -> usize {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn set_low_water(&self, jobs: usize) {
        self.low_water.store(jobs, Ordering::Relaxed);
    }
}
