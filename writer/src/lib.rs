//! `strata-writer`: delivers staged changes to destinations (DESIGN.md,
//! "Writer protocol"), and the control CLI that edits destination specs.
//!
//! - [`spec`], [`control`]: destination specs in the stage, the desired state.
//! - [`destinations`]: the [`Destination`](destinations::Destination)
//!   boundary and one folder per destination.
//! - [`worker`]: one destination's delivery loop.
//! - [`replay`]: replay and as-of rebuild requests.
//! - [`run`]: the reconcile loop that runs workers under leases.
//! - [`wakeup`]: idle workers woken by SQS messages instead of polling.

#![cfg_attr(test, allow(clippy::unwrap_used))]

/// HMAC-SHA256 of the concatenation of `parts` under `key`: the one keyed
/// hash of the writer (webhook signatures, masking).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length.
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub mod cli;
pub mod control;
pub mod destinations;
pub mod envelope;
pub mod replay;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod transform;
pub mod wakeup;
pub mod worker;
