//! `strata-reader`: streams one PostgreSQL database's committed changes into
//! the stage (DESIGN.md, "Reader protocol").
//!
//! - [`cli`]: the `strata-reader` command line (run, validate, backfill, teardown).
//! - [`run`]: the service: lease, snapshot, then the change stream with its
//!   committer, reconnecting with backoff.
//! - [`source`]: the [`ChangeSource`](source::ChangeSource) boundary and its
//!   event model; [`walstream`] implements it over `pg_walstream`.
//! - [`setup`]: checks, publication, slot and catalog lookups.
//! - [`schemas`]: Relation messages to schema versions (catalog reads, staged versions).
//! - [`decode`]: tuples to changes, without I/O.
//! - [`batch`]: the [`Batcher`](batch::Batcher): transaction framing, and
//!   when a batch is cut or a large transaction spills.
//! - [`snapshot`]: the initial copy of every table, in parallel page ranges.
//! - [`backfill`]: copying a table again (or one that joined the
//!   publication) while the stream runs, in chunks placed by watermarks.
//! - [`pull`]: query pulls, the second read strategy: a table, view or
//!   query read on a schedule without a replication slot, into its own stream.
//! - [`lease`]: the reader lease of a stream, and the status it carries.
//! - [`metrics`]: what `/metrics` shows.
//! - [`wakeup`]: "batch committed" messages to SQS for waiting writers.
//! - [`teardown`]: dropping the stream's slot and publication, when asked.
//!
//! The invariants everything here keeps: one reader per stream, by lease;
//! a transaction is never split across batches (a large one spills part
//! files into the batch in progress, which commits whole); a batch is
//! committed only after its data files are in the stage, with the next
//! dense seq; the slot is confirmed only up to the end of the last
//! committed batch, so the server keeps everything not yet staged; a
//! restart resumes after the last staged batch and skips transactions at or
//! before it; and a table copied as of a point skips stream changes at or
//! before that point, so no change is staged twice or lost at the seam.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backfill;
pub mod batch;
pub mod cli;
pub mod decode;
pub mod lease;
pub mod metrics;
pub mod pull;
pub mod run;
pub mod schemas;
pub mod setup;
pub mod snapshot;
pub mod source;
pub mod teardown;
pub mod wakeup;
pub mod walstream;
