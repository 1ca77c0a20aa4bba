//! How many jobs to hold ahead of the slots, from how long handlers take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long handlers take, to size claims: quick jobs are claimed ahead in
/// big batches (few statements per job, and the next claim overlaps the
/// running jobs), slow ones only as slots free up, so other workers get
/// their share.
#[derive(Default)]
pub(super) struct Pace {
    /// Exponentially weighted mean handler time, in microseconds.
    mean_micros: AtomicU64,
}

impl Pace {
    /// Jobs held ahead keep every slot busy for about this long.
    const BUFFER_TIME: Duration = Duration::from_millis(20);
    /// Most jobs one claim takes (and most held ahead).
    pub(super) const MAX_CLAIM: usize = 1000;

    pub(super) fn record(&self, took: Duration) {
        let took = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.mean_micros.load(Ordering::Relaxed);
        let new = if old == 0 { took.max(1) } else { (old * 7 + took) / 8 };
        self.mean_micros.store(new.max(1), Ordering::Relaxed);
    }

    /// Jobs to hold beyond the free slots: none until a handler time is
    /// known or when handlers take longer than [`Self::BUFFER_TIME`], else
    /// enough for `concurrency` slots to run that long.
    pub(super) fn ahead(&self, concurrency: usize) -> usize {
        let mean = self.mean_micros.load(Ordering::Relaxed);
        if mean == 0 {
            return 0;
        }
        let per_slot = (Self::BUFFER_TIME.as_micros() as u64 / mean) as usize;
        concurrency.saturating_mul(per_slot).min(Self::MAX_CLAIM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_handlers_are_claimed_ahead_and_slow_ones_only_for_free_slots() {
        // (mean handler time in µs, concurrency, jobs held ahead)
        let table = [
            (0, 16, 0),        // nothing known yet: only the free slots
            (5, 16, 1000),     // no-ops: a full claim ahead
            (1_000, 16, 320),  // 1 ms: 20 per slot
            (20_000, 16, 16),  // as long as the buffer time: one each
            (50_000, 16, 0),   // slower than the buffer time: none ahead
            (2_000_000, 1, 0), // an embedding job
        ];
        for (mean, concurrency, expected) in table {
            let pace = Pace::default();
            if mean > 0 {
                pace.record(Duration::from_micros(mean));
            }
            assert_eq!(pace.ahead(concurrency), expected, "mean {mean} µs, {concurrency} slots");
        }
    }
}
