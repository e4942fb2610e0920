//! `strata-writer`: delivers staged changes to destinations (DESIGN.md,
//! "Writer protocol"), and the control CLI that edits destination specs.
//!
//! - [`cli`]: the `strata-writer` command line (run, destination, replay, status).
//! - [`spec`], [`control`]: destination specs in the stage, the desired state.
//! - [`destinations`]: the [`Destination`](destinations::Destination)
//!   boundary, one folder per destination, and the registry of them all.
//! - [`envelope`]: the JSON change envelope of the webhook, SQS, stdout and
//!   JSON Lines destinations, or Debezium's records in its place.
//! - [`transform`]: tables, columns, rows and masking between stage and destination.
//! - [`schedule`]: continuous, interval and cron delivery schedules.
//! - [`worker`]: one destination's delivery loop (plan, deliver, cursor).
//! - [`replay`]: replay and as-of rebuild requests.
//! - [`run`]: the reconcile loop that runs workers under leases.
//! - [`wakeup`]: idle workers woken by SQS messages, or on a local stage by
//!   file-system notifications, rather than by their polls alone.
//!
//! The invariants everything here keeps: one writer delivers a destination
//! at a time, by lease; batches reach a destination in seq order, and its
//! cursor moves only after the destination reports a batch durable; a
//! destination that records its position itself (Postgres) does so in the
//! same transaction as the data, and that position wins, so a redelivery
//! after a crash applies nothing twice; a transient error is retried with
//! backoff and shown while it lasts, and one retrying cannot heal stops the
//! destination, shown, until its spec changes; specs in the stage never
//! hold a secret, only `${VAR}` references the writer expands.

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
pub mod declare;
pub mod destinations;
pub mod envelope;
mod held;
pub mod lease_deadline;
pub mod metrics;
pub mod replay;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod transform;
pub mod validate;
pub mod wakeup;
pub mod worker;
