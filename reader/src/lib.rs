//! `strata-reader`: streams one PostgreSQL database's committed changes into
//! the stage (DESIGN.md, "Reader protocol").
//!
//! - [`source`]: the [`ChangeSource`](source::ChangeSource) boundary and its
//!   event model; [`walstream`] implements it over `pg_walstream`.
//! - [`setup`]: checks, publication, slot and catalog lookups.
//! - [`decode`]: Relation messages to schema versions, tuples to changes.
//! - [`batch`], [`run`]: batching, spilling, committing and acknowledging.
//! - [`metrics`]: what `/metrics` shows.
//! - [`wakeup`]: "batch committed" messages to SQS for waiting writers.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backfill;
pub mod batch;
pub mod cli;
pub mod decode;
pub mod metrics;
pub mod run;
pub mod setup;
pub mod snapshot;
pub mod source;
pub mod wakeup;
pub mod walstream;
