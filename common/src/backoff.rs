//! Retry delays: the one backoff of every retry loop in reader and writer.
//!
//! A [`Backoff`] starts at a step of `first`, doubles it after each delay up
//! to `max`, and draws each delay at random from the upper half of the
//! current step ("equal jitter"): retries of many workers spread out, no
//! delay exceeds `max`, and none is shorter than half a step. A success
//! [`reset`](Backoff::reset)s it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff whose delays grow from about `first` to at most `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, attempts: 0 }
    }

    /// The delay before retry number `attempt` (from 0), for a caller that
    /// counts attempts itself (per message, say): a step of `first` doubled
    /// `attempt` times, at most `max`, less up to half of it at random.
    pub fn delay(&self, attempt: u32) -> Duration {
        let step = self.first.saturating_mul(1 << attempt.min(31)).min(self.max);
        step / 2 + jitter(step - step / 2)
    }

    /// The delay before the next attempt; the step grows for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        d
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Delays drawn since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Sleeps the next delay, or `at_least` if that is longer (a server's
    /// Retry-After), unless `token` is cancelled first: false when it was.
    pub async fn wait(&mut self, token: &CancellationToken, at_least: Duration) -> bool {
        let delay = self.next_delay().max(at_least);
        tokio::select! {
            _ = token.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// A random duration below `cap` (zero for a zero cap).
pub fn jitter(cap: Duration) -> Duration {
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand_u64() % nanos)
}

/// A random number from the standard library's randomly keyed hasher (no
/// dependency; not for cryptography).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_doubling_within_half_a_step_and_stay_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let steps = [100, 200, 400, 800, 1000, 1000];
        for step in steps {
            let d = b.next_delay();
            let step = Duration::from_millis(step);
            assert!(d >= step / 2 && d <= step, "{d:?} outside [{:?}, {step:?}]", step / 2);
        }
        assert_eq!(b.attempts(), steps.len() as u32);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_below_its_cap() {
        let cap = Duration::from_millis(10);
        let draws: std::collections::HashSet<_> = (0..50).map(|_| jitter(cap)).collect();
        assert!(draws.iter().all(|d| *d < cap));
        assert!(draws.len() > 10, "50 draws gave {} distinct values", draws.len());
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_cancelled_wait_returns_false_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!b.wait(&token, Duration::ZERO).await);
    }
}
