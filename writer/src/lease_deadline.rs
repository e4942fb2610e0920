//! A worker's lease deadline: the moment by which it must have stopped
//! unless its lease was renewed first.
//!
//! Another writer takes a destination over once its lease has expired, so
//! a worker whose lease renewals fall behind (a slow stage, a stalled
//! reconcile pass) must stop delivering before then, or two writers would
//! deliver to one destination at once. The deadline is the lease's time to
//! live counted from the moment its acquisition or renewal was *sent*, less
//! a fifth of it as a margin, on this process's monotonic clock; a worker
//! run through [`guarded`] is dropped where it stands when it passes, even
//! in the middle of a delivery (a transactional destination rolls back; the
//! others were at least once already).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

/// Shared between the reconcile loop, which extends it on each renewal,
/// and the worker's task, which ends when it passes.
#[derive(Debug, Clone)]
pub struct LeaseDeadline(Arc<Mutex<Instant>>);

impl LeaseDeadline {
    /// The deadline of a lease of `ttl` whose acquisition was sent at `sent`.
    pub fn new(sent: Instant, ttl: Duration) -> LeaseDeadline {
        LeaseDeadline(Arc::new(Mutex::new(Self::of(sent, ttl))))
    }

    /// Moves the deadline to that of a renewal of `ttl` sent at `sent`.
    pub fn extend(&self, sent: Instant, ttl: Duration) {
        if let Ok(mut at) = self.0.lock() {
            // Not past a lease already lost.
            if *at > Instant::now() {
                *at = (*at).max(Self::of(sent, ttl));
            }
        }
    }

    /// Moves the deadline to now: the lease is lost.
    pub fn expire(&self) {
        if let Ok(mut at) = self.0.lock() {
            *at = Instant::now();
        }
    }

    fn of(sent: Instant, ttl: Duration) -> Instant {
        sent + ttl - ttl / 5
    }

    fn at(&self) -> Instant {
        // A poisoned lock: a holder panicked while setting it; stop now.
        self.0.lock().map(|at| *at).unwrap_or_else(|_| Instant::now())
    }

    /// Returns once the deadline has passed without being extended.
    async fn passed(&self) {
        loop {
            let at = self.at();
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

/// Runs `work` (a worker) until it ends or `deadline` passes, whichever
/// comes first; the latter is an error saying why the worker stopped.
pub async fn guarded(deadline: LeaseDeadline, work: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::select! {
        result = work => result,
        () = deadline.passed() => Err(anyhow::anyhow!(
            "the destination's lease was not renewed in time; its worker stopped before the lease could expire, so that no other writer delivers to it at the same time"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_worker_is_stopped_a_fifth_of_its_lease_before_expiry_unless_renewed() {
        let deadline = LeaseDeadline::new(Instant::now(), Duration::from_secs(15));
        let started = Instant::now();
        let e = guarded(deadline, std::future::pending()).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(12));
        assert!(e.to_string().contains("lease was not renewed in time"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn each_renewal_moves_the_deadline() {
        let deadline = LeaseDeadline::new(Instant::now(), Duration::from_secs(15));
        let renewing = deadline.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                renewing.extend(Instant::now(), Duration::from_secs(15));
            }
        });
        // Renewed at 5, 10 and 15 s: stopped at 15 + 12 s.
        guarded(deadline, std::future::pending()).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(27));
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_ends_first_returns_its_own_result() {
        let deadline = LeaseDeadline::new(Instant::now(), Duration::from_secs(15));
        let work = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Err(anyhow::anyhow!("its own error"))
        };
        assert_eq!(guarded(deadline, work).await.unwrap_err().to_string(), "its own error");
    }
}
