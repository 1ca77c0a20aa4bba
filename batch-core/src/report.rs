//! Per-item results of a batch. Partial success is data, not an `Err`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An item that was done, with what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Success<K, O> {
    /// The item's key, as given to the runner.
    pub key: K,
    /// What the item's work returned.
    pub outcome: O,
}

/// An item that was not done, and why, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure<K> {
    /// The item's key, as given to the runner.
    pub key: K,
    /// Why, naming the cause (the last attempt's error when retried).
    pub reason: String,
}

/// What a batch did, item by item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchReport<K, O> {
    /// Done and kept, in completion order.
    pub succeeded: Vec<Success<K, O>>,
    /// Run and failed (after any retries).
    pub failed: Vec<Failure<K>>,
    /// Not run because the batch stopped (stop policy, error limit, a failed
    /// dependency).
    pub skipped: Vec<Failure<K>>,
    /// Not run because the batch was cancelled.
    pub cancelled: Vec<K>,
    /// Done, then undone because an atomic batch failed. When this is
    /// non-empty `succeeded` is empty: nothing of the batch is kept.
    pub rolled_back: Vec<K>,
    /// Wall time of the whole batch.
    pub duration: Duration,
}

impl<K, O> Default for BatchReport<K, O> {
    fn default() -> Self {
        Self {
            succeeded: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            cancelled: Vec::new(),
            rolled_back: Vec::new(),
            duration: Duration::ZERO,
        }
    }
}

impl<K, O> BatchReport<K, O> {
    /// Items the batch was given.
    pub fn total(&self) -> usize {
        self.succeeded.len() + self.failed.len() + self.skipped.len() + self.cancelled.len() + self.rolled_back.len()
    }

    /// True when every item succeeded.
    pub fn is_complete_success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.cancelled.is_empty() && self.rolled_back.is_empty()
    }
}
