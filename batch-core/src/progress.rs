//! Progress `{current, total, failed, message}` with throughput and ETA, a
//! throttling wrapper and a fan-out to many subscribers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Where a long operation stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Items done so far, failed ones included.
    pub current: u64,
    /// Items in all; 0 while unknown.
    pub total: u64,
    /// Of `current`, the items that failed.
    pub failed: u64,
    /// What is happening now, in words (may be empty).
    pub message: String,
}

impl Progress {
    /// Percent done (0-100), `None` when the total is unknown (zero).
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.current as f64 / self.total as f64 * 100.0).min(100.0))
    }
}

/// One progress report with the figures derived from its timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressUpdate {
    /// The counts.
    pub progress: Progress,
    /// Time since the operation started.
    pub elapsed: Duration,
    /// Items per second since the start.
    pub throughput: f64,
    /// Time left at the current throughput, when it can be estimated.
    pub eta: Option<Duration>,
    /// The last update of the operation; throttles always let it through.
    pub is_final: bool,
}

impl ProgressUpdate {
    /// Derives throughput and ETA from `progress` after `elapsed`.
    pub fn new(progress: Progress, elapsed: Duration, is_final: bool) -> Self {
        let secs = elapsed.as_secs_f64();
        let throughput = if secs > 0.0 { progress.current as f64 / secs } else { 0.0 };
        let remaining = progress.total.saturating_sub(progress.current);
        let eta = if remaining == 0 && progress.total > 0 {
            Some(Duration::ZERO)
        } else if throughput > 0.0 && progress.total > 0 {
            Some(Duration::from_secs_f64(remaining as f64 / throughput))
        } else {
            None
        };
        Self { progress, elapsed, throughput, eta, is_final }
    }
}

/// Receives progress. Implementations must be cheap: they are called from the
/// hot path of bulk work.
pub trait ProgressReporter: Send + Sync {
    /// Takes one update; must not block (called from the work's own task).
    fn report(&self, update: &ProgressUpdate);
}

/// A reporter that drops every update.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressReporter for NoProgress {
    fn report(&self, _update: &ProgressUpdate) {}
}

impl<R: ProgressReporter + ?Sized> ProgressReporter for Arc<R> {
    fn report(&self, update: &ProgressUpdate) {
        (**self).report(update);
    }
}

/// Passes on at most one update per `interval`, but always the first and the
/// final one.
pub struct ThrottledReporter<R> {
    inner: R,
    interval: Duration,
    last_emit: Mutex<Option<Instant>>,
}

impl<R: ProgressReporter> ThrottledReporter<R> {
    /// Passes at most one update per `interval` to `inner` (final updates always).
    pub fn new(inner: R, interval: Duration) -> Self {
        Self { inner, interval, last_emit: Mutex::new(None) }
    }

    /// About one update a second, the rate the design asks for.
    pub fn per_second(inner: R) -> Self {
        Self::new(inner, Duration::from_secs(1))
    }
}

impl<R: ProgressReporter> ProgressReporter for ThrottledReporter<R> {
    fn report(&self, update: &ProgressUpdate) {
        let now = Instant::now();
        let should_emit = {
            let mut last = self.last_emit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.is_none_or(|at| now.duration_since(at) >= self.interval);
            if due || update.is_final {
                *last = Some(now);
                true
            } else {
                false
            }
        };
        if should_emit {
            self.inner.report(update);
        }
    }
}

/// Fans progress out to any number of subscribers (a CLI bar, a status
/// writer, an event stream). Slow subscribers lose old updates, never block.
#[derive(Clone)]
pub struct ProgressHub {
    sender: broadcast::Sender<ProgressUpdate>,
}

impl ProgressHub {
    /// A hub keeping the last `capacity` updates (at least 1) for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// A receiver of every update from now on; a lagging one skips to the newest.
    pub fn subscribe(&self) -> broadcast::Receiver<ProgressUpdate> {
        self.sender.subscribe()
    }
}

impl Default for ProgressHub {
    fn default() -> Self {
        Self::new(64)
    }
}

impl ProgressReporter for ProgressHub {
    fn report(&self, update: &ProgressUpdate) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.sender.send(update.clone());
    }
}

/// Counts work done and turns it into updates for a reporter. Shareable
/// between tasks.
pub struct ProgressTracker {
    started: Instant,
    state: Mutex<Progress>,
    reporter: Arc<dyn ProgressReporter>,
}

impl ProgressTracker {
    /// A tracker at 0 of `total` (0: unknown) that reports to `reporter`.
    pub fn new(total: u64, reporter: Arc<dyn ProgressReporter>) -> Self {
        let state = Progress { total, ..Progress::default() };
        Self { started: Instant::now(), state: Mutex::new(state), reporter }
    }

    /// Sends the current state once, e.g. to show a bar at 0 before work starts.
    pub fn start(&self) {
        self.emit(|_| {}, false);
    }

    /// Records `succeeded` and `failed` more items done.
    pub fn advance(&self, succeeded: u64, failed: u64) {
        self.emit(
            |p| {
                p.current += succeeded + failed;
                p.failed += failed;
            },
            false,
        );
    }

    /// Replaces the message and reports.
    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        self.emit(|p| p.message = message, false);
    }

    /// Sets the total once it is known, and reports.
    pub fn set_total(&self, total: u64) {
        self.emit(|p| p.total = total, false);
    }

    /// Sends the final update.
    pub fn finish(&self) {
        self.emit(|_| {}, true);
    }

    /// The counts now, without reporting.
    pub fn snapshot(&self) -> Progress {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, change: impl FnOnce(&mut Progress), is_final: bool) {
        let progress = {
            let mut state = self.lock();
            change(&mut state);
            state.clone()
        };
        let update = ProgressUpdate::new(progress, self.started.elapsed(), is_final);
        self.reporter.report(&update);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<ProgressUpdate>>);

    impl ProgressReporter for Recorder {
        fn report(&self, update: &ProgressUpdate) {
            self.0.lock().unwrap().push(update.clone());
        }
    }

    #[test]
    fn throughput_and_eta_are_derived() {
        let p = Progress { current: 50, total: 150, failed: 0, message: String::new() };
        let u = ProgressUpdate::new(p, Duration::from_secs(10), false);
        assert!((u.throughput - 5.0).abs() < 1e-9);
        assert_eq!(u.eta, Some(Duration::from_secs(20)));
    }

    #[test]
    fn unknown_total_has_no_eta_or_percent() {
        let p = Progress { current: 5, total: 0, failed: 0, message: String::new() };
        let u = ProgressUpdate::new(p.clone(), Duration::from_secs(1), false);
        assert_eq!(u.eta, None);
        assert_eq!(p.percent(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_passes_first_then_one_per_interval_and_final() {
        let recorder = Arc::new(Recorder::default());
        let throttled = Arc::new(ThrottledReporter::per_second(recorder.clone()));
        let tracker = ProgressTracker::new(1000, throttled);
        // 1,000 updates 10 ms apart: 10 s of work.
        for _ in 0..1000 {
            tracker.advance(1, 0);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        tracker.finish();
        let seen = recorder.0.lock().unwrap();
        let currents: Vec<u64> = seen.iter().map(|u| u.progress.current).collect();
        // First update, then one each second (every 100th), then the final one.
        assert_eq!(currents, vec![1, 101, 201, 301, 401, 501, 601, 701, 801, 901, 1000]);
        assert!(seen.last().unwrap().is_final);
        assert!(!seen[0].is_final);
    }

    #[tokio::test]
    async fn hub_fans_out_to_every_subscriber() {
        let hub = ProgressHub::default();
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        let tracker = ProgressTracker::new(2, Arc::new(hub));
        tracker.advance(1, 1);
        let got_a = a.recv().await.unwrap();
        let got_b = b.recv().await.unwrap();
        assert_eq!(got_a.progress.current, 2);
        assert_eq!(got_a.progress.failed, 1);
        assert_eq!(got_a, got_b);
    }
}
