//! Ctrl-C and SIGTERM: the first asks a command to wind down, a second
//! ends the process; and what an interrupted command reports.

use crate::describe;
use anyhow::Result;
use batch_core::CancellationToken;
use directory_sync::Database;
use embedding::EMBED_JOB;
use std::sync::Arc;
use std::time::Duration;

/// After Ctrl-C or SIGTERM, how long a command lets its job wind down.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long a command's worker lets running jobs finish when it stops
/// before it gives them back to the queue.
pub(crate) const COMMAND_SHUTDOWN: Duration = Duration::from_secs(1);

/// Ctrl-C or SIGTERM: the first asks the command to wind down (bounded by
/// [`STOP_GRACE`]), a second ends the process at once.
pub(crate) struct Stop {
    pub(crate) token: CancellationToken,
    /// The first signal's number, once it came.
    pub(crate) signal: Arc<std::sync::atomic::AtomicI32>,
}

impl Stop {
    /// Resolves at the first signal.
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// 128 + the signal's number, as shells report a command a signal ended.
    pub(crate) fn exit_code(&self) -> i32 {
        128 + self.signal.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The flags the stop handlers set: stopping, and which signal came.
pub(crate) type StopFlags = (Arc<std::sync::atomic::AtomicBool>, Arc<std::sync::atomic::AtomicUsize>);

/// Installs the handlers once per process. They only set flags (and, on a
/// second signal, exit at once), and a task looks at the flags: a flag
/// cannot be missed the way a wake-up can (tokio's signal streams were seen
/// here to leave a Ctrl-C unanswered for seconds on an idle runtime).
pub(crate) fn install_stop_handlers() -> std::io::Result<StopFlags> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    static INSTALLED: std::sync::OnceLock<StopFlags> = std::sync::OnceLock::new();
    if let Some(flags) = INSTALLED.get() {
        return Ok(flags.clone());
    }
    let flags: StopFlags = (Arc::default(), Arc::default());
    for signal in [SIGINT, SIGTERM] {
        // In this order: a signal that finds the flag set already is the second one.
        flag::register_conditional_shutdown(signal, 128 + signal, flags.0.clone())?;
        flag::register_usize(signal, flags.1.clone(), signal.unsigned_abs() as usize)?;
        flag::register(signal, flags.0.clone())?;
    }
    Ok(INSTALLED.get_or_init(|| flags).clone())
}

/// How often the noted signal is looked at.
pub(crate) const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Listens for Ctrl-C and SIGTERM from now on: a signal that arrives
/// before anyone waits still counts.
pub(crate) fn stop_signal() -> Result<Stop> {
    let flags = install_stop_handlers()?;
    let stop = Stop { token: CancellationToken::new(), signal: Arc::default() };
    let (token, noted) = (stop.token.clone(), stop.signal.clone());
    tokio::spawn(async move {
        while !flags.0.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(SIGNAL_POLL).await;
        }
        let signal = i32::try_from(flags.1.load(std::sync::atomic::Ordering::SeqCst)).unwrap_or(2);
        noted.store(signal, std::sync::atomic::Ordering::SeqCst);
        token.cancel();
    });
    Ok(stop)
}

/// The lines and exit code of a command stopped by a signal: what was
/// done, and what stays queued for whom.
pub(crate) async fn interrupted(db: &Database, why: Option<anyhow::Error>, stop: &Stop) -> Result<i32> {
    if let Some(why) = why {
        errln!("directory-sync: {}", describe(&why));
    }
    let left = tokio::time::timeout(STOP_GRACE, db.queue.unfinished(Some(EMBED_JOB))).await;
    if let Ok(Ok(left)) = left
        && left > 0
    {
        errln!(
            "{left} embedding jobs stay queued: the next command on this database or a `directory-sync worker` runs them"
        );
    }
    Ok(stop.exit_code())
}
