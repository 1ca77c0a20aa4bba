//! Who holds a job: the worker's tag (host and process), whether a local
//! holder has ended, and the heartbeat that renews leases and notices
//! cancels made elsewhere.

use super::{HeldJobs, WorkerConfig};
use crate::Queue;
use crate::store::Held;
use batch_core::CancellationToken;
use std::sync::PoisonError;

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map_or_else(|_| "host".to_owned(), |h| h.trim().to_owned())
}

/// `host:pid` of this process: the default worker id, and the start of any
/// holder name that [`local_process_ended`] should be able to judge.
pub fn process_tag() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// Whether `holder` (`host:pid`, anything after) names a process of this
/// machine that no longer runs (Linux: no `/proc/PID`). Unknown hosts,
/// other formats and systems without `/proc` are never judged ended.
pub fn local_process_ended(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    let proc = std::path::Path::new("/proc");
    host == hostname()
        && proc.join("self").exists()
        && pid.parse::<u32>().is_ok_and(|pid| pid != std::process::id() && !proc.join(pid.to_string()).exists())
}

pub(super) async fn heartbeat_loop(queue: Queue, held: HeldJobs, config: WorkerConfig, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.heartbeat) => {}
        }
        let snapshot: Vec<Held> = held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, (attempt, _))| Held { id: *id, attempt: *attempt })
            .collect();
        if snapshot.is_empty() {
            continue;
        }
        match queue.store().heartbeat(&snapshot, config.lease).await {
            Ok(alive) => {
                let held = held.lock().unwrap_or_else(PoisonError::into_inner);
                for job in snapshot.iter().filter(|h| !alive.contains(&h.id)) {
                    // Cancelled elsewhere, or the lease was lost: stop the handler,
                    // unless the job was claimed again meanwhile (a newer attempt).
                    if let Some((attempt, token)) = held.get(&job.id)
                        && *attempt == job.attempt
                    {
                        token.cancel();
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed"),
        }
    }
}
