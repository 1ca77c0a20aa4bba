//! Bulk mechanics written once: chunking, a bounded parallel runner with error
//! policies, retry with backoff, progress with throughput and ETA, cancellation
//! and per-item reports.
//!
//! Nothing here knows about databases or files; the store, the queue and the
//! sync plugin build their bulk paths on these parts.
//!
//! ```
//! use batch_core::{BatchRunner, ErrorPolicy, ItemError, RunnerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let runner = BatchRunner::new(RunnerConfig {
//!     max_parallel: 4,
//!     policy: ErrorPolicy::ContinueOnError,
//!     ..RunnerConfig::default()
//! });
//! let items = (1..=5).map(|n| (format!("item-{n}"), n));
//! let report = runner
//!     .run(items, |n: i32| async move {
//!         if n == 3 { Err(ItemError::permanent("three is not allowed")) } else { Ok(n * 10) }
//!     })
//!     .await;
//! assert_eq!(report.succeeded.len(), 4);
//! assert_eq!(report.failed[0].key, "item-3");
//! # }
//! ```
#![warn(missing_docs)]

mod blocking;
mod chunk;
mod plan;
mod progress;
mod report;
mod retry;
mod runner;

pub use chunk::{ChunkLimits, chunk_by_bytes, chunk_by_count};
pub use plan::{Operation, PlanError, run_operations};
pub use progress::{
    NoProgress, Progress, ProgressHub, ProgressReporter, ProgressTracker, ProgressUpdate, ThrottledReporter,
};
pub use report::{BatchReport, Failure, Success};
pub use retry::{ItemError, RetryPolicy, retry};
pub use runner::{BatchRunner, ErrorPolicy, RunnerConfig};
pub use tokio_util::sync::CancellationToken;
