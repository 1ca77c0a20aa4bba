//! One holder per folder: a sync, import or export of a folder runs only
//! while it holds the folder's row in `sync_locks`, so two jobs on one
//! folder never overlap, whether they run in two threads, two processes
//! or on two machines sharing a PostgreSQL database.
//!
//! The row is a lease: the holder renews it every [`RENEW_EVERY`], and a
//! holder that stopped renewing (killed, machine gone) loses it after
//! [`LEASE`]. A holder on this machine whose process has ended is known to
//! be dead at once, so a sync after a killed one does not wait the lease out.

use std::time::Duration;

use crate::state::StateDb;

/// How long a holder that stops renewing keeps the folder.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a holder renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often a waiting job asks again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// A held folder; released by [`FolderLock::release`] or, if dropped
/// without it, by a task spawned on drop (and at worst by the lease).
pub struct FolderLock {
    state: StateDb,
    root: String,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

/// `host:pid:random`: the host and process tell a dead local holder.
fn new_holder() -> String {
    format!("{}:{}", job_queue::process_tag(), uuid::Uuid::new_v4().simple())
}

fn expires_at() -> i64 {
    chrono::Utc::now().timestamp_millis() + LEASE.as_millis() as i64
}

impl FolderLock {
    /// Waits until the folder `root` is free and takes it; `waiting` is
    /// called once with the holder's name if it has to wait. Ends early
    /// with `None` when `cancel` fires.
    pub async fn acquire(
        state: &StateDb,
        root: &str,
        cancel: &batch_core::CancellationToken,
        mut waiting: impl FnMut(&str),
    ) -> Result<Option<Self>, sqlx::Error> {
        let holder = new_holder();
        let mut dead: Option<String> = None;
        let mut told = false;
        loop {
            let Some(current) = state.try_lock(root, &holder, expires_at(), dead.as_deref()).await? else {
                continue; // released between our two statements: free now
            };
            if current == holder {
                break;
            }
            if job_queue::local_process_ended(&current) {
                dead = Some(current);
                continue;
            }
            if !told {
                waiting(&current);
                told = true;
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(None),
                () = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
        let renewer = tokio::spawn({
            let (state, root, holder) = (state.clone(), root.to_owned(), holder.clone());
            async move {
                let mut ticks = tokio::time::interval(RENEW_EVERY);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    match state.renew_lock(&root, &holder, expires_at()).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(%root, "lost the folder's lease to another holder");
                            return;
                        }
                        Err(error) => tracing::warn!(%root, %error, "renewing the folder's lease failed; retrying"),
                    }
                }
            }
        });
        Ok(Some(Self { state: state.clone(), root: root.to_owned(), holder, renewer, released: false }))
    }

    /// Gives the folder up.
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        self.released = true;
        self.renewer.abort();
        self.state.unlock(&self.root, &self.holder).await
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released {
            return;
        }
        // An error or a cancelled future: give the folder up now rather than after the lease.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (state, root, holder) = (self.state.clone(), std::mem::take(&mut self.root), self.holder.clone());
            runtime.spawn(async move {
                let _ = state.unlock(&root, &holder).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_holder_of_this_machine_whose_process_ended_is_dead() {
        let me = super::new_holder();
        assert!(!job_queue::local_process_ended(&me), "this process is alive");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let host = job_queue::process_tag().split(':').next().unwrap().to_owned();
        assert!(job_queue::local_process_ended(&format!("{host}:{pid}:x")));
        assert!(!job_queue::local_process_ended(&format!("another-host:{pid}:x")), "another machine's waits");
        assert!(!job_queue::local_process_ended("garbage"));
    }
}
