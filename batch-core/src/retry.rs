//! Retry with exponential backoff and jitter, for errors marked retryable.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Why one item failed, and whether trying again might help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ItemError {
    /// What went wrong, for a person.
    pub reason: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// How long the other side asked us to wait (e.g. HTTP `Retry-After`);
    /// used instead of the policy's backoff for the next attempt.
    pub retry_after: Option<Duration>,
}

impl ItemError {
    /// A failure that may pass on another attempt (a timeout, a lost connection).
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retryable: true, retry_after: None }
    }

    /// A retryable failure whose next attempt should wait `delay`.
    pub fn retry_after(reason: impl Into<String>, delay: Duration) -> Self {
        Self { reason: reason.into(), retryable: true, retry_after: Some(delay) }
    }

    /// A failure that will fail again (bad input, a constraint).
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retryable: false, retry_after: None }
    }
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// Wait before the second attempt; later waits grow by `multiplier`.
    pub base_delay: Duration,
    /// Upper bound of any one wait.
    pub max_delay: Duration,
    /// Growth of the wait from one attempt to the next (2.0 doubles it).
    pub multiplier: f64,
    /// Fraction of each delay that is random, 0.0 to 1.0: the delay is drawn
    /// from `[d * (1 - jitter), d]` so many clients do not retry in lockstep.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// No retry at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// `max_attempts` attempts with the default backoff.
    pub fn attempts(max_attempts: u32) -> Self {
        Self { max_attempts, ..Self::default() }
    }

    /// The delay before attempt `attempt + 1`, after `attempt` failures (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let raw = self.base_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = raw.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * fastrand::f64();
        Duration::from_secs_f64(capped * factor)
    }
}

/// Runs `op` until it succeeds, fails permanently, runs out of attempts or
/// `cancel` fires during a backoff. `op` gets the 1-based attempt number.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, cancel: &CancellationToken, mut op: F) -> Result<T, ItemError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ItemError>>,
{
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(value) => return Ok(value),
            Err(error) if !error.retryable || attempt >= policy.max_attempts.max(1) => {
                return Err(error);
            }
            Err(error) => {
                let delay = error.retry_after.unwrap_or_else(|| policy.delay_after(attempt));
                tracing::debug!(attempt, ?delay, reason = %error.reason, "retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return Err(error),
                }
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn retries_the_configured_number_of_times_with_growing_delays() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let started = Instant::now();
        let times = Mutex::new(Vec::new());
        let result: Result<(), _> = retry(&policy, &CancellationToken::new(), |_| {
            times.lock().unwrap().push(started.elapsed());
            async { Err(ItemError::retryable("flaky")) }
        })
        .await;
        assert_eq!(result.unwrap_err().reason, "flaky");
        let times = times.into_inner().unwrap();
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 100, 300, 700]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_requested_delay_replaces_the_backoff() {
        let started = Instant::now();
        let result = retry(&RetryPolicy::attempts(2), &CancellationToken::new(), |attempt| async move {
            if attempt == 1 { Err(ItemError::retry_after("busy", Duration::from_secs(7))) } else { Ok(attempt) }
        })
        .await;
        assert_eq!(result, Ok(2));
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = retry(&RetryPolicy::attempts(5), &CancellationToken::new(), |_| {
            calls += 1;
            async { Err(ItemError::permanent("bad input")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_on_a_later_attempt() {
        let result = retry(&RetryPolicy::attempts(3), &CancellationToken::new(), |attempt| async move {
            if attempt < 3 { Err(ItemError::retryable("not yet")) } else { Ok(attempt) }
        })
        .await;
        assert_eq!(result, Ok(3));
    }

    #[test]
    fn jitter_stays_within_its_band_and_delay_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            multiplier: 3.0,
            jitter: 0.5,
        };
        for _ in 0..200 {
            let d = policy.delay_after(2).as_secs_f64();
            assert!((1.5..=3.0).contains(&d), "{d}");
            assert!(policy.delay_after(20) <= Duration::from_secs(5));
        }
    }
}
