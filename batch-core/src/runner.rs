//! The bounded parallel runner: error policies, error cut-off, per-item
//! timeout, retry, cancellation and progress.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::progress::{NoProgress, ProgressReporter, ProgressTracker};
use crate::report::{BatchReport, Failure, Success};
use crate::retry::{ItemError, RetryPolicy, retry};

/// What an item's failure does to the rest of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Record the failure and go on with the other items.
    #[default]
    ContinueOnError,
    /// Start nothing new after the first failure; what already ran is kept.
    StopOnError,
    /// Start nothing new after the first failure and undo what succeeded
    /// (operations with a compensation, see [`crate::run_operations`]).
    /// With [`BatchRunner::run`] the caller owns the undo, typically a
    /// database transaction it does not commit.
    Atomic,
}

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Items in flight at once (at least 1).
    pub max_parallel: usize,
    /// What a failed item does to the rest of the batch.
    pub policy: ErrorPolicy,
    /// Stop starting items once this many have failed.
    pub max_errors: Option<usize>,
    /// Limit for one attempt of one item; a timeout is retryable.
    pub item_timeout: Option<Duration>,
    /// Retries of retryable item errors.
    pub retry: RetryPolicy,
    /// Cancels the batch: nothing new starts, items in flight finish or stop.
    pub cancel: CancellationToken,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_parallel: 8,
            policy: ErrorPolicy::default(),
            max_errors: None,
            item_timeout: None,
            retry: RetryPolicy::none(),
            cancel: CancellationToken::new(),
        }
    }
}

/// Runs items through an async function with bounded parallelism.
///
/// Items run as futures inside the caller's task (not spawned), so the
/// function may borrow from its environment; blocking work should go through
/// `tokio::task::spawn_blocking` inside it.
pub struct BatchRunner {
    config: RunnerConfig,
    pub(crate) progress: Arc<dyn ProgressReporter>,
}

impl BatchRunner {
    /// A runner with `config` and no progress reporting.
    pub fn new(config: RunnerConfig) -> Self {
        Self { config, progress: Arc::new(NoProgress) }
    }

    /// Reports progress (one step per finished item) to `reporter`.
    #[must_use]
    pub fn with_progress(mut self, reporter: Arc<dyn ProgressReporter>) -> Self {
        self.progress = reporter;
        self
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Runs `work` once per item (more with retries), at most
    /// `max_parallel` at a time, and reports every item.
    pub async fn run<K, I, O, F, Fut>(&self, items: impl IntoIterator<Item = (K, I)>, work: F) -> BatchReport<K, O>
    where
        K: Clone + Display + Send,
        I: Clone + Send,
        O: Send,
        F: Fn(I) -> Fut + Sync,
        Fut: Future<Output = Result<O, ItemError>> + Send,
    {
        let work = &work;
        let tasks = items
            .into_iter()
            .map(|(key, item)| Task {
                key,
                dependencies: Vec::new(),
                priority: 0,
                attempt: Box::new(move |_| work(item.clone()).boxed()),
            })
            .collect();
        self.schedule(tasks).await.report
    }

    /// Runs tasks whose dependencies are indexes of other tasks (already
    /// checked to be acyclic). Returns the report and, for each success in
    /// report order, the index of its task.
    pub(crate) async fn schedule<'a, K, O>(&self, tasks: Vec<Task<'a, K, O>>) -> Scheduled<K, O>
    where
        K: Clone + Display + Send,
        O: Send + 'a,
    {
        let started = Instant::now();
        let config = &self.config;
        let tracker = ProgressTracker::new(tasks.len() as u64, self.progress.clone());
        tracker.start();

        let count = tasks.len();
        let mut waiting_on = vec![0usize; count];
        let mut dependents = vec![Vec::new(); count];
        let mut keys = Vec::with_capacity(count);
        let mut priorities = Vec::with_capacity(count);
        let mut attempts = Vec::with_capacity(count);
        for (index, task) in tasks.into_iter().enumerate() {
            waiting_on[index] = task.dependencies.len();
            for &dependency in &task.dependencies {
                dependents[dependency].push(index);
            }
            keys.push(task.key);
            priorities.push(task.priority);
            attempts.push(Some(task.attempt));
        }
        let mut ready: BinaryHeap<(i32, Reverse<usize>)> =
            (0..count).filter(|&i| waiting_on[i] == 0).map(|i| (priorities[i], Reverse(i))).collect();
        let mut settled = vec![false; count];
        let mut report = BatchReport::default();
        let mut success_tasks = Vec::new();
        let mut stopping = false;
        let mut in_flight = FuturesUnordered::new();

        loop {
            while !stopping && !config.cancel.is_cancelled() && in_flight.len() < config.max_parallel.max(1) {
                let Some((_, Reverse(index))) = ready.pop() else {
                    break;
                };
                let Some(attempt) = attempts[index].take() else {
                    continue;
                };
                in_flight.push(run_one(config, attempt).map(move |outcome| (index, outcome)));
            }
            let Some((index, outcome)) = in_flight.next().await else {
                break;
            };
            settled[index] = true;
            match outcome {
                Outcome::Done(Ok(value)) => {
                    report.succeeded.push(Success { key: keys[index].clone(), outcome: value });
                    success_tasks.push(index);
                    tracker.advance(1, 0);
                    for &dependent in &dependents[index] {
                        waiting_on[dependent] -= 1;
                        if waiting_on[dependent] == 0 && !settled[dependent] {
                            ready.push((priorities[dependent], Reverse(dependent)));
                        }
                    }
                }
                Outcome::Done(Err(error)) => {
                    report.failed.push(Failure { key: keys[index].clone(), reason: error.reason });
                    tracker.advance(0, 1);
                    let skipped = skip_dependents(index, &dependents, &mut settled, &keys);
                    tracker.advance(0, skipped.len() as u64);
                    report.skipped.extend(skipped);
                    let over_limit = config.max_errors.is_some_and(|max| report.failed.len() >= max);
                    stopping |= config.policy != ErrorPolicy::ContinueOnError || over_limit;
                }
                Outcome::Cancelled => report.cancelled.push(keys[index].clone()),
            }
        }

        let unfinished = (0..count).filter(|&i| !settled[i]);
        if config.cancel.is_cancelled() {
            report.cancelled.extend(unfinished.map(|i| keys[i].clone()));
        } else {
            report.skipped.extend(unfinished.map(|i| Failure {
                key: keys[i].clone(),
                reason: "not run: the batch stopped after an error".to_owned(),
            }));
        }
        tracker.finish();
        report.duration = started.elapsed();
        Scheduled { report, success_tasks }
    }
}

pub(crate) type AttemptFn<'a, O> = Box<dyn FnMut(u32) -> BoxFuture<'a, Result<O, ItemError>> + Send + 'a>;

/// One unit of scheduled work.
pub(crate) struct Task<'a, K, O> {
    pub key: K,
    /// Indexes of tasks that must succeed first.
    pub dependencies: Vec<usize>,
    /// Higher runs first among ready tasks.
    pub priority: i32,
    pub attempt: AttemptFn<'a, O>,
}

pub(crate) struct Scheduled<K, O> {
    pub report: BatchReport<K, O>,
    pub success_tasks: Vec<usize>,
}

enum Outcome<O> {
    Done(Result<O, ItemError>),
    Cancelled,
}

async fn run_one<O>(config: &RunnerConfig, mut attempt: AttemptFn<'_, O>) -> Outcome<O> {
    let attempts = retry(&config.retry, &config.cancel, |n| {
        let future = AssertUnwindSafe(attempt(n)).catch_unwind();
        let timeout = config.item_timeout;
        async move {
            let result = match timeout {
                Some(limit) => tokio::time::timeout(limit, future)
                    .await
                    .map_err(|_| ItemError::retryable(format!("timed out after {} ms", limit.as_millis())))?,
                None => future.await,
            };
            result.unwrap_or_else(|panic| Err(ItemError::permanent(panic_message(&*panic))))
        }
    });
    tokio::select! {
        biased;
        () = config.cancel.cancelled() => Outcome::Cancelled,
        result = attempts => Outcome::Done(result),
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".to_owned());
    format!("panicked: {text}")
}

/// Marks every not-yet-settled task that depends, directly or not, on
/// `failed` as skipped.
fn skip_dependents<K: Clone + Display>(
    failed: usize,
    dependents: &[Vec<usize>],
    settled: &mut [bool],
    keys: &[K],
) -> Vec<Failure<K>> {
    let mut skipped = Vec::new();
    let mut stack = vec![(failed, failed)];
    while let Some((index, cause)) = stack.pop() {
        for &dependent in &dependents[index] {
            if !settled[dependent] {
                settled[dependent] = true;
                skipped.push(Failure {
                    key: keys[dependent].clone(),
                    reason: format!("not run: dependency `{}` did not succeed", keys[cause]),
                });
                stack.push((dependent, index));
            }
        }
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn runner(max_parallel: usize, policy: ErrorPolicy) -> BatchRunner {
        BatchRunner::new(RunnerConfig { max_parallel, policy, ..RunnerConfig::default() })
    }

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_its_parallelism() {
        let gauge = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let report = runner(3, ErrorPolicy::ContinueOnError)
            .run((0..50).map(|i| (i, i)), |i: usize| {
                let (gauge, peak) = (&gauge, &peak);
                async move {
                    let now = gauge.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10 + (i as u64 % 7))).await;
                    gauge.fetch_sub(1, Ordering::SeqCst);
                    Ok(i)
                }
            })
            .await;
        assert_eq!(report.succeeded.len(), 50);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn continue_on_error_reports_each_failure_with_its_key() {
        let report = runner(4, ErrorPolicy::ContinueOnError)
            .run((0..10).map(|i| (format!("k{i}"), i)), |i: i32| async move {
                if i % 3 == 0 { Err(ItemError::permanent(format!("{i} divisible by 3"))) } else { Ok(i) }
            })
            .await;
        assert_eq!(report.succeeded.len(), 6);
        let mut failed: Vec<_> = report.failed.iter().map(|f| (f.key.as_str(), f.reason.as_str())).collect();
        failed.sort_unstable();
        assert_eq!(
            failed,
            vec![
                ("k0", "0 divisible by 3"),
                ("k3", "3 divisible by 3"),
                ("k6", "6 divisible by 3"),
                ("k9", "9 divisible by 3")
            ]
        );
        assert_eq!(report.total(), 10);
    }

    #[tokio::test]
    async fn stop_on_error_starts_nothing_after_a_failure() {
        let started = AtomicUsize::new(0);
        let report = runner(1, ErrorPolicy::StopOnError)
            .run((0..10).map(|i| (i, i)), |i: usize| {
                let started = &started;
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    if i == 2 { Err(ItemError::permanent("boom")) } else { Ok(()) }
                }
            })
            .await;
        assert_eq!(started.load(Ordering::SeqCst), 3);
        assert_eq!(report.succeeded.len(), 2);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.skipped.len(), 7);
    }

    #[tokio::test]
    async fn max_errors_cuts_off() {
        let report = BatchRunner::new(RunnerConfig { max_parallel: 1, max_errors: Some(2), ..RunnerConfig::default() })
            .run((0..10).map(|i| (i, i)), |_: usize| async { Err::<(), _>(ItemError::permanent("no")) })
            .await;
        assert_eq!(report.failed.len(), 2);
        assert_eq!(report.skipped.len(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_new_work_and_reports_the_rest() {
        let cancel = CancellationToken::new();
        let started = AtomicUsize::new(0);
        let runner =
            BatchRunner::new(RunnerConfig { max_parallel: 2, cancel: cancel.clone(), ..RunnerConfig::default() });
        let report = runner
            .run((0..100).map(|i| (i, i)), |i: usize| {
                let (started, cancel) = (&started, cancel.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    if i == 5 {
                        cancel.cancel();
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok(i)
                }
            })
            .await;
        assert!(started.load(Ordering::SeqCst) <= 7, "started {}", started.load(Ordering::SeqCst));
        assert_eq!(report.total(), 100);
        assert!(report.cancelled.len() >= 93);
        assert!(report.cancelled.contains(&99));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_are_retried_then_reported() {
        let calls = AtomicUsize::new(0);
        let report = BatchRunner::new(RunnerConfig {
            item_timeout: Some(Duration::from_millis(50)),
            retry: RetryPolicy::attempts(3),
            ..RunnerConfig::default()
        })
        .run([("slow", ())], |()| {
            let calls = &calls;
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(report.failed[0].reason, "timed out after 50 ms");
    }

    #[tokio::test]
    async fn blocking_runner_reports_like_the_async_one() {
        let gauge = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (g, p) = (gauge.clone(), peak.clone());
        let items: Vec<(usize, usize)> = (0..40).map(|i| (i, i)).collect();
        let report = runner(4, ErrorPolicy::ContinueOnError)
            .run_blocking(items, move |&i| {
                let now = g.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                g.fetch_sub(1, Ordering::SeqCst);
                assert!(i != 7, "seven panicked");
                if i % 10 == 3 { Err(ItemError::permanent(format!("{i} rejected"))) } else { Ok(i * 2) }
            })
            .await;
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert_eq!(report.succeeded.len(), 35);
        assert!(report.succeeded.iter().all(|s| s.outcome == s.key * 2));
        let failed: Vec<usize> = report.failed.iter().map(|f| f.key).collect();
        assert_eq!(failed, vec![3, 7, 13, 23, 33]);
        assert!(report.failed[1].reason.contains("seven panicked"));
    }

    #[tokio::test]
    async fn blocking_runner_stops_on_error() {
        let items: Vec<(usize, usize)> = (0..20).map(|i| (i, i)).collect();
        let report = runner(1, ErrorPolicy::StopOnError)
            .run_blocking(items, |&i| if i == 4 { Err(ItemError::permanent("bad")) } else { Ok(()) })
            .await;
        assert_eq!((report.succeeded.len(), report.failed.len(), report.skipped.len()), (4, 1, 15));
    }

    #[tokio::test]
    async fn a_panicking_item_fails_alone() {
        let report = runner(2, ErrorPolicy::ContinueOnError)
            .run((0..4).map(|i| (i, i)), |i: usize| async move {
                assert!(i != 1, "item one exploded");
                Ok(i)
            })
            .await;
        assert_eq!(report.succeeded.len(), 3);
        assert_eq!(report.failed[0].key, 1);
        assert!(report.failed[0].reason.contains("item one exploded"), "{}", report.failed[0].reason);
    }
}
