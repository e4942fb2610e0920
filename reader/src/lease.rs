//! The reader lease of a stream (`streams/{stream}/reader.json`): one
//! reader per stream, and the status it publishes for `status` readers.
//! The CDC stream and every query pull hold one each.
//!
//! A lease is taken with a conditional put, at once when the previous
//! holder's process is gone (a local one killed), else once it expires;
//! it is renewed every third of its TTL with the current status, and
//! released with the last status, which stays readable after the reader
//! stopped (a failure says why after the process exited).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use strata_common::Timestamp;
use strata_stager::control::ReaderStatus;
use strata_stager::lease::{Lease, Leases};
use strata_stager::{StageError, Versioned};
use tokio_util::sync::CancellationToken;

/// How long a reader lease lasts without renewal. A crashed reader's stream
/// is free again after this; a live one renews every third of it.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// A reader's status, shared between the task that updates it and the
/// task that renews the lease with it.
pub type SharedStatus = Arc<Mutex<ReaderStatus>>;

/// Changes the shared status (a poisoned lock leaves it as it was).
pub fn update(status: &SharedStatus, f: impl FnOnce(&mut ReaderStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// Takes the lease, waiting while another live reader holds it; `None`
/// when `shutdown` came first.
pub async fn acquire_lease(leases: &Leases, holder: &str, shutdown: &CancellationToken) -> Result<Option<Versioned<Lease>>> {
    let mut reported = false;
    loop {
        match leases.acquire_unless_live(holder, LEASE_TTL, Timestamp::now(), strata_stager::lease::is_dead_local_holder).await {
            Ok(l) => return Ok(Some(l)),
            Err(StageError::LeaseHeld { owner, expires_at, .. }) => {
                if !reported {
                    tracing::warn!(owner, %expires_at, "another reader holds this stream; waiting until it stops or its lease expires");
                    reported = true;
                }
                // Poll rather than sleep to expiry: a holder that stops cleanly
                // releases the lease early.
                let until_expiry = Duration::from_micros(u64::try_from(expires_at.0 - Timestamp::now().0).unwrap_or(0));
                let wait = until_expiry.clamp(Duration::from_millis(200), Duration::from_secs(2));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(StageError::Conflict { .. }) => continue,
            Err(e) => return Err(e).context("acquiring the reader lease"),
        }
    }
}

/// Renews the lease every third of its TTL, publishing the status. Cancels
/// `work` (and `lost`) if the lease is lost or cannot be renewed before it
/// expires. Returns the lease still held when `work` ends.
async fn renew_loop_inner(
    leases: &Leases,
    mut held: Versioned<Lease>,
    work: &CancellationToken,
    lost: &CancellationToken,
    status: &SharedStatus,
) -> Option<Versioned<Lease>> {
    loop {
        tokio::select! {
            _ = work.cancelled() => return Some(held),
            _ = tokio::time::sleep(LEASE_TTL / 3) => {}
        }
        let snapshot = status.lock().map(|s| serde_json::to_value(&*s).unwrap_or_default()).unwrap_or_default();
        match leases.renew(&held, LEASE_TTL, Timestamp::now(), snapshot).await {
            Ok(l) => held = l,
            Err(StageError::Conflict { .. }) => {
                tracing::error!("the reader lease was taken over by another process; stopping");
                lost.cancel();
                work.cancel();
                return None;
            }
            Err(e) if Timestamp::now() < held.value.expires_at => {
                tracing::warn!(error = %e, "could not renew the reader lease; retrying");
            }
            Err(e) => {
                tracing::error!(error = %e, "the reader lease expired before it could be renewed; stopping");
                lost.cancel();
                work.cancel();
                return None;
            }
        }
    }
}

pub async fn renew_lease(
    leases: Leases,
    held: Versioned<Lease>,
    work: CancellationToken,
    lost: CancellationToken,
    status: SharedStatus,
) -> Option<Versioned<Lease>> {
    renew_loop_inner(&leases, held, &work, &lost, &status).await
}
