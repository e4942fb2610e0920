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
