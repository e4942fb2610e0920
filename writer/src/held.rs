//! A destination's lease while a worker of this writer holds it.
//!
//! A task of its own renews it: after a third of its time to live (half,
//! for the long lease of an idle destination on a remote stage), and when
//! what the status it publishes says changes, progress aside
//! ([`renewal_due`]). Renewals used to go out one after
//! another inside the reconcile pass, which on a slow stage could take
//! longer than a lease lives; now no other stage request waits in front of
//! a renewal. Each renewal extends the worker's [`LeaseDeadline`]; a lease
//! another writer took moves the deadline to now, which stops the worker
//! at once, mid-delivery if need be.

use std::sync::Arc;
use std::time::Duration;

use strata_common::Timestamp;
use strata_stager::control::{WorkerStatus, lease_status};
use strata_stager::lease::{Lease, Leases};
use strata_stager::{Stage, StageError, Versioned, signal};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::lease_deadline::LeaseDeadline;
use crate::worker::SharedWorkerStatus;

/// A destination's lease while its worker works: renewed every 5 s, so a
/// dead writer's busy destinations move within this.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// The lease of an idle destination on a remote stage (caught up for
/// [`IDLE_AFTER`]), renewed every [`IDLE_LEASE_RENEW`]. A writer that dies
/// while its destination is idle leaves it for at most this long (a
/// graceful stop releases it at once, and a dead process on the same host
/// is recognised at once); the first batch a worker finds renews its
/// lease at [`LEASE_TTL`].
pub const IDLE_LEASE_TTL: Duration = Duration::from_secs(180);
/// How long a destination stays caught up, its cursor still, before its
/// lease becomes the idle one: a destination of a busy stream is caught up
/// between one batch and the next, and a writer dying in such a moment
/// must not leave it for [`IDLE_LEASE_TTL`].
pub const IDLE_AFTER: Duration = Duration::from_secs(30);
/// Half of [`IDLE_LEASE_TTL`]: 960 PUTs an idle destination-day ($0.0048
/// at S3's list price) instead of 17,280, and still 90 s for a renewal
/// that fails to be retried before the lease lapses.
pub const IDLE_LEASE_RENEW: Duration = Duration::from_secs(90);
/// How often the keeper looks whether a renewal is due.
const CHECK: Duration = Duration::from_millis(500);

pub struct HeldLease {
    leases: Leases,
    lease: Arc<Mutex<Versioned<Lease>>>,
    /// When the worker must have stopped unless the lease is renewed first.
    pub deadline: LeaseDeadline,
    keeper: tokio::task::JoinHandle<()>,
}

impl HeldLease {
    /// Keeps `lease`, acquired by a request sent at `sent`, renewed with
    /// `status` published in it, from now on.
    pub fn keep(stage: &Stage, name: &str, leases: Leases, lease: Versioned<Lease>, sent: Instant, status: SharedWorkerStatus) -> HeldLease {
        let deadline = LeaseDeadline::new(sent, LEASE_TTL);
        let lease = Arc::new(Mutex::new(lease));
        let keeper = tokio::spawn(keep(stage.is_local(), name.to_owned(), leases.clone(), lease.clone(), status, deadline.clone()));
        HeldLease { leases, lease, deadline, keeper }
    }

    /// Gives up the lease, leaving the worker's last status in it, so that
    /// `status` still shows a failure (and its error) after the writer
    /// exits; and signals it, so that other writers read the lease again
    /// now rather than when they thought it would expire.
    pub async fn release(&self, stage: &Stage, status: &SharedWorkerStatus) {
        self.keeper.abort();
        let held = self.lease.lock().await.clone();
        let status = serde_json::to_value(status.get()).unwrap_or_default();
        if self.leases.release_with_status(&held, Timestamp::now(), status).await.is_ok() {
            signal::touch_or_warn(stage, &format!("lease {} released", self.leases.path())).await;
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// The keeper: renews `lease` whenever [`renewal_due`], until the lease is
/// lost or the task is aborted.
async fn keep(local_stage: bool, name: String, leases: Leases, lease: Arc<Mutex<Versioned<Lease>>>, status: SharedWorkerStatus, deadline: LeaseDeadline) {
    let mut idleness = Idleness::default();
    loop {
        tokio::time::sleep(CHECK).await;
        let mut held = lease.lock().await;
        let current = status.get();
        let idle = idleness.observe(&current, Instant::now());
        let ttl = if idle && !local_stage { IDLE_LEASE_TTL } else { LEASE_TTL };
        let now = Timestamp::now();
        if !renewal_due(&held.value, &current, idle, now) {
            continue;
        }
        let published = serde_json::to_value(&current).unwrap_or_default();
        let sent = Instant::now();
        match leases.renew(&held, ttl, now, published).await {
            Ok(l) => {
                *held = l;
                deadline.extend(sent, ttl);
            }
            Err(StageError::Conflict { .. }) => {
                tracing::error!(destination = name, "lost the destination's lease; stopping its worker");
                deadline.expire();
                return;
            }
            Err(e) => tracing::warn!(destination = name, error = %e, "could not renew the lease; retrying"),
        }
    }
}

/// Whether a destination is idle: caught up, its cursor where it was,
/// for [`IDLE_AFTER`] of the keeper's looks in a row.
#[derive(Default)]
struct Idleness {
    /// The cursor last seen, and since when it has been caught up there.
    still: Option<(Option<u64>, Instant)>,
}

impl Idleness {
    fn observe(&mut self, current: &WorkerStatus, now: Instant) -> bool {
        match self.still {
            Some((cursor, since)) if current.caught_up && cursor == current.cursor => now.duration_since(since) >= IDLE_AFTER,
            _ => {
                self.still = current.caught_up.then_some((current.cursor, now));
                false
            }
        }
    }
}

/// Whether a destination's lease is renewed now (each renewal is a
/// conditional PUT):
/// - a third of the lease's time to live has passed since it was renewed
///   ([`IDLE_LEASE_RENEW`] for an idle destination's long lease): the
///   lease held decides, not the one the next renewal will write, so a
///   worker that caught up under a short lease renews it in time, and
///   the first renewal after it has been idle for [`IDLE_AFTER`] gives it
///   the long one;
/// - the destination is no longer `idle` (see [`Idleness`]) under an idle
///   lease's long time to live, which the renewal shortens, so that its
///   writer's death is noticed within [`LEASE_TTL`];
/// - what the status says changed, its progress aside: the state, the
///   error, the schedule. The cursor moving (and the retries counting) waits
///   for the next timed renewal: a busy worker moves it with every batch,
///   and renewing on each move sent a PUT every [`CHECK`] per destination
///   (two a second, 172,800 a day), while `status` reads the cursor itself.
fn renewal_due(lease: &Lease, current: &WorkerStatus, idle: bool, now: Timestamp) -> bool {
    let idle_lease = lease.expires_at > lease.renewed_at.saturating_add(LEASE_TTL);
    let renew_after = if idle_lease { IDLE_LEASE_RENEW } else { LEASE_TTL / 3 };
    let published: WorkerStatus = lease_status(lease).unwrap_or_default();
    now >= lease.renewed_at.saturating_add(renew_after) || (idle_lease && !idle) || !same_but_progress(&published, current)
}

/// Whether two statuses say the same but for the worker's progress.
fn same_but_progress(a: &WorkerStatus, b: &WorkerStatus) -> bool {
    let without = |s: &WorkerStatus| WorkerStatus { cursor: None, cursor_commit_ts: None, retries: 0, caught_up: false, ..s.clone() };
    without(a) == without(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    /// A lease renewed at 100 s for `ttl`, publishing `status`.
    fn lease(ttl: Duration, status: &WorkerStatus) -> Lease {
        let renewed_at = Timestamp(100 * SECOND);
        let expires_at = renewed_at.saturating_add(ttl);
        Lease {
            format: 1,
            holder: "h".to_owned(),
            generation: 1,
            acquired_at: renewed_at,
            renewed_at,
            expires_at,
            status: serde_json::to_value(status).unwrap(),
        }
    }

    fn delivering(cursor: u64) -> WorkerStatus {
        WorkerStatus {
            state: "running".to_owned(),
            cursor: Some(cursor),
            cursor_commit_ts: Some(Timestamp(i64::try_from(cursor).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn a_moving_cursor_waits_for_the_timed_renewal() {
        let held = lease(LEASE_TTL, &delivering(7));
        let moved = WorkerStatus { retries: 3, ..delivering(9) };
        assert!(!renewal_due(&held, &moved, false, Timestamp(101 * SECOND)), "one second after the last renewal");
        assert!(renewal_due(&held, &moved, false, Timestamp(105 * SECOND)), "a third of the time to live has passed");
    }

    #[test]
    fn a_changed_state_or_error_is_published_at_once() {
        let held = lease(LEASE_TTL, &delivering(7));
        let now = Timestamp(101 * SECOND);
        let failing = WorkerStatus { state: "failing".to_owned(), last_error: Some("connection refused".to_owned()), ..delivering(7) };
        assert!(renewal_due(&held, &failing, false, now));
        let paused_schedule = WorkerStatus { next_run: Some(Timestamp(200 * SECOND)), ..delivering(7) };
        assert!(renewal_due(&held, &paused_schedule, false, now));
    }

    #[test]
    fn work_under_an_idle_lease_shortens_it_at_once() {
        let idle = WorkerStatus { caught_up: true, ..delivering(7) };
        let now = Timestamp(101 * SECOND);
        let busy = delivering(8);
        assert!(renewal_due(&lease(IDLE_LEASE_TTL, &idle), &busy, false, now));
        assert!(!renewal_due(&lease(IDLE_LEASE_TTL, &idle), &idle, true, now), "still idle: nothing to publish");
        assert!(!renewal_due(&lease(LEASE_TTL, &idle), &busy, false, now), "the lease is short already");
        assert!(!renewal_due(&lease(IDLE_LEASE_TTL, &idle), &idle, true, Timestamp(105 * SECOND)), "an idle lease waits for its own time");
        assert!(renewal_due(&lease(IDLE_LEASE_TTL, &idle), &idle, true, Timestamp(100 * SECOND).saturating_add(IDLE_LEASE_RENEW)));
        // Caught up again, but at a cursor that moved since the keeper last
        // looked: a batch came and went, the destination is busy.
        assert!(renewal_due(&lease(IDLE_LEASE_TTL, &idle), &WorkerStatus { caught_up: true, ..delivering(8) }, false, now));
    }

    #[test]
    fn a_worker_that_caught_up_under_a_short_lease_renews_it_in_time() {
        let held = lease(LEASE_TTL, &delivering(7));
        let caught_up = WorkerStatus { caught_up: true, ..delivering(9) };
        assert!(!renewal_due(&held, &caught_up, true, Timestamp(101 * SECOND)));
        assert!(renewal_due(&held, &caught_up, true, Timestamp(105 * SECOND)), "the short lease is renewed after a third of it, into the long one");
    }

    #[test]
    fn a_destination_is_idle_only_after_staying_caught_up_at_one_cursor() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let caught_up = |cursor: u64| WorkerStatus { caught_up: true, ..delivering(cursor) };
        let mut idleness = Idleness::default();
        assert!(!idleness.observe(&caught_up(7), at(0)), "just caught up");
        assert!(!idleness.observe(&caught_up(7), at(29)));
        assert!(idleness.observe(&caught_up(7), at(30)), "caught up at 7 for IDLE_AFTER");
        // A busy stream: caught up at each look, the cursor further on each time.
        assert!(!idleness.observe(&caught_up(8), at(31)));
        assert!(!idleness.observe(&caught_up(9), at(62)), "the cursor moved: idle from 62 s on at the earliest");
        assert!(!idleness.observe(&delivering(9), at(93)), "behind");
        assert!(!idleness.observe(&caught_up(9), at(94)));
        assert!(idleness.observe(&caught_up(9), at(124)));
    }
}
