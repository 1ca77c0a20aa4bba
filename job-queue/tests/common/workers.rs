//! Workers and handlers the queue and worker suites share.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batch_core::{CancellationToken, RetryPolicy};
use job_queue::{JobContext, JobError, JobHandler, Queue, Registry, WorkerConfig};

/// How long a test waits for what a worker does.
pub const WAIT: Duration = Duration::from_secs(20);

/// A worker that polls, beats and retries quickly.
pub fn fast_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(50),
        heartbeat: Duration::from_millis(100),
        retry: RetryPolicy { max_attempts: u32::MAX, base_delay: Duration::from_millis(20), ..RetryPolicy::default() },
        unhandled_grace: None,
        ..WorkerConfig::default()
    }
}

/// Runs a worker in the background until the returned token is cancelled.
pub fn spawn_worker(
    queue: &Queue,
    registry: Registry,
    config: WorkerConfig,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let worker = queue.worker(registry, config);
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move { worker.run(stop).await.unwrap() });
    (shutdown, handle)
}

/// Stops a worker of `spawn_worker` and waits for it.
pub async fn stop(worker: (CancellationToken, tokio::task::JoinHandle<()>)) {
    worker.0.cancel();
    worker.1.await.unwrap();
}

/// Records the order inputs are processed in.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<String>>>);

#[async_trait::async_trait]
impl JobHandler for Recorder {
    type Input = String;
    type Output = String;
    async fn process(&self, input: String, _ctx: JobContext) -> Result<String, JobError> {
        self.0.lock().unwrap().push(input.clone());
        Ok(format!("done {input}"))
    }
}

/// Fails until `succeed` is set.
pub struct Flaky {
    pub calls: Arc<AtomicUsize>,
    pub succeed: Arc<AtomicBool>,
    pub retryable: bool,
}

#[async_trait::async_trait]
impl JobHandler for Flaky {
    type Input = ();
    type Output = usize;
    async fn process(&self, (): (), _ctx: JobContext) -> Result<usize, JobError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.succeed.load(Ordering::SeqCst) {
            Ok(call)
        } else if self.retryable {
            Err(JobError::retryable(format!("flaky call {call}")))
        } else {
            Err(JobError::permanent("bad input, no retry helps"))
        }
    }
}

/// Takes `delay`, ignoring cancellation, then returns `name`.
pub struct Slow {
    pub name: &'static str,
    pub delay: Duration,
}

#[async_trait::async_trait]
impl JobHandler for Slow {
    type Input = ();
    type Output = &'static str;
    async fn process(&self, (): (), _ctx: JobContext) -> Result<&'static str, JobError> {
        tokio::time::sleep(self.delay).await;
        Ok(self.name)
    }
}

/// Returns `name` once the test releases it.
pub struct Gated {
    pub name: &'static str,
    pub release: Arc<tokio::sync::Notify>,
    pub returned: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl JobHandler for Gated {
    type Input = ();
    type Output = &'static str;
    async fn process(&self, (): (), _ctx: JobContext) -> Result<&'static str, JobError> {
        self.release.notified().await;
        self.returned.store(true, Ordering::SeqCst);
        Ok(self.name)
    }
}

/// Waits up to 10 s for `condition`.
pub async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met in 10 s");
}

/// Waits up to 10 s for the job `id` to meet `condition`.
pub async fn wait_for_job(queue: &Queue, id: job_queue::JobId, condition: impl Fn(&job_queue::Job) -> bool) {
    for _ in 0..400 {
        if condition(&queue.get(id).await.unwrap().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} did not reach the expected state in 10 s");
}
