//! How many jobs to claim at once, from how long handlers take.

use std::time::Duration;

/// How long handlers take, to size claims: quick jobs are claimed in big
/// batches (few statements per job), slow ones no more than there are free
/// slots, so other workers get their share.
#[derive(Default)]
pub(super) struct Pace {
    /// Exponentially weighted mean handler time, in microseconds.
    pub(super) mean_micros: std::sync::atomic::AtomicU64,
}

impl Pace {
    /// Enough jobs to keep every slot busy for about this long.
    const BUFFER_TIME: Duration = Duration::from_millis(20);
    const MAX_CLAIM: usize = 1000;

    pub(super) fn record(&self, took: Duration) {
        let took = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.mean_micros.load(std::sync::atomic::Ordering::Relaxed);
        let new = if old == 0 { took.max(1) } else { (old * 7 + took) / 8 };
        self.mean_micros.store(new.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn claim_size(&self, concurrency: usize) -> usize {
        let mean = self.mean_micros.load(std::sync::atomic::Ordering::Relaxed);
        if mean == 0 {
            return concurrency;
        }
        let per_slot = (Self::BUFFER_TIME.as_micros() as u64 / mean) as usize;
        (concurrency * per_slot).clamp(concurrency, Self::MAX_CLAIM.max(concurrency))
    }
}
