//! The runner for blocking work (file reads, hashing, parsing): a scoped pool
//! of threads pulling items from a shared cursor, one thread hop per thread
//! rather than one per item.

use std::fmt::Display;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use crate::progress::ProgressTracker;
use crate::report::{BatchReport, Failure, Success};
use crate::retry::ItemError;
use crate::runner::{BatchRunner, ErrorPolicy, panic_message};

enum Slot<O> {
    Pending,
    Done(Result<O, ItemError>),
}

impl BatchRunner {
    /// Runs blocking `work` over `items` on `max_parallel` dedicated threads.
    ///
    /// Same policies, error cut-off, retry, cancellation and progress as
    /// [`BatchRunner::run`]. A blocking call cannot be interrupted, so
    /// `item_timeout` does not apply and cancellation takes effect between
    /// items. Oversubscribe (more threads than cores) for latency-bound work
    /// such as cold file reads.
    pub async fn run_blocking<K, I, O, F>(&self, items: Vec<(K, I)>, work: F) -> BatchReport<K, O>
    where
        K: Clone + Display + Send + 'static,
        I: Send + Sync + 'static,
        O: Send + 'static,
        F: Fn(&I) -> Result<O, ItemError> + Send + Sync + 'static,
    {
        let config = self.config().clone();
        let tracker = Arc::new(ProgressTracker::new(items.len() as u64, self.progress.clone()));
        tracker.start();
        let started = Instant::now();
        let pool_tracker = tracker.clone();
        let (keys, items): (Vec<K>, Vec<I>) = items.into_iter().unzip();
        let joined = tokio::task::spawn_blocking(move || {
            let slots: Vec<Mutex<Slot<O>>> = items.iter().map(|_| Mutex::new(Slot::Pending)).collect();
            let cursor = AtomicUsize::new(0);
            let failures = AtomicUsize::new(0);
            let stopping = AtomicBool::new(false);
            let threads = config.max_parallel.clamp(1, items.len().max(1));
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        loop {
                            if stopping.load(Ordering::Relaxed) || config.cancel.is_cancelled() {
                                break;
                            }
                            let index = cursor.fetch_add(1, Ordering::Relaxed);
                            let Some(item) = items.get(index) else { break };
                            let result = attempt_with_retry(&config, || work(item));
                            if result.is_err() {
                                let failed = failures.fetch_add(1, Ordering::Relaxed) + 1;
                                let over_limit = config.max_errors.is_some_and(|max| failed >= max);
                                if config.policy != ErrorPolicy::ContinueOnError || over_limit {
                                    stopping.store(true, Ordering::Relaxed);
                                }
                                pool_tracker.advance(0, 1);
                            } else {
                                pool_tracker.advance(1, 0);
                            }
                            *slots[index].lock().unwrap_or_else(PoisonError::into_inner) = Slot::Done(result);
                        }
                    });
                }
            });
            let outcomes = slots.into_iter().map(|slot| slot.into_inner().unwrap_or_else(PoisonError::into_inner));
            assemble(keys, outcomes, config.cancel.is_cancelled())
        })
        .await;
        tracker.finish();
        // Item panics are caught per item; only a broken runtime gets here.
        let mut report = match joined {
            Ok(report) => report,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("blocking pool stopped: {error}"),
            },
        };
        report.duration = started.elapsed();
        report
    }
}

fn attempt_with_retry<O>(
    config: &crate::RunnerConfig,
    work: impl Fn() -> Result<O, ItemError>,
) -> Result<O, ItemError> {
    let mut attempt = 1;
    loop {
        let result = std::panic::catch_unwind(AssertUnwindSafe(&work))
            .unwrap_or_else(|panic| Err(ItemError::permanent(panic_message(&*panic))));
        match result {
            Err(error) if error.retryable && attempt < config.retry.max_attempts && !config.cancel.is_cancelled() => {
                std::thread::sleep(config.retry.delay_after(attempt));
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn assemble<K, O>(keys: Vec<K>, outcomes: impl Iterator<Item = Slot<O>>, cancelled: bool) -> BatchReport<K, O> {
    let mut report = BatchReport::default();
    for (key, outcome) in keys.into_iter().zip(outcomes) {
        match outcome {
            Slot::Done(Ok(outcome)) => report.succeeded.push(Success { key, outcome }),
            Slot::Done(Err(error)) => report.failed.push(Failure { key, reason: error.reason }),
            Slot::Pending if cancelled => report.cancelled.push(key),
            Slot::Pending => {
                let reason = "not run: the batch stopped after an error".to_owned();
                report.skipped.push(Failure { key, reason });
            }
        }
    }
    report
}
