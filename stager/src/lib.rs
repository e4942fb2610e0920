//! The strata staging format v1 and everything that reads or writes it.
//!
//! The stage is a directory of an object store (local disk or S3) holding,
//! per stream, an append-only log of batch manifests and the Parquet data
//! files they reference; plus the control objects of destinations (spec,
//! cursor, lease) and replay requests. See DESIGN.md, "Staging format v1".
//!
//! - [`keys`]: the key layout and name encoding.
//! - [`store`]: the [`Stage`] handle: plain and conditional puts on every backend.
//! - [`manifest`], [`schema`], [`codec`]: what is stored and how it is encoded.
//! - [`log`]: the commit protocol and head / commit-time lookup; writing a batch.
//! - [`read`]: reading committed batches, decoded off the async threads, one ahead.
//! - [`control`]: the typed control objects (snapshot state, backfill and
//!   replay requests, reader and worker status).
//! - [`cursor`], [`lease`]: conditional state of destinations and readers.
//! - [`signal`]: `control.json`, which says control objects changed.
//! - [`gc`], [`verify`]: maintenance.
//! - [`cli`]: the `strata-stage` command line.
//! - [`error`]: [`StageError`], split by what a caller can do about it.
//!
//! The invariants of the format: a batch is committed by creating its
//! manifest (`If-None-Match: *`, or a hard link on disk) after its data
//! files are written, so a reader never sees a partial batch and two
//! writers of one seq cannot both win; seqs are dense from the retention
//! low-water mark to the head, so lookups need no listing; schema versions
//! are immutable once written; data file keys are taken from manifests,
//! never rebuilt; a cursor moves only forward, except by an explicit rewind
//! that starts a new epoch; and every conditional object (cursor, lease,
//! spec) is replaced only if unchanged since it was read.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod codec;
pub mod control;
pub mod cursor;
pub mod error;
pub mod faults;
pub mod gc;
pub mod keys;
pub mod lease;
pub mod log;
pub mod manifest;
pub mod read;
pub mod requests;
pub mod schema;
pub mod signal;
pub mod splice;
pub mod store;
pub mod verify;

pub use error::{Result, StageError};
pub use store::{Stage, Versioned};

/// The staging format version this build writes.
///
/// - 1: the first format.
/// - 2: data files are foldered by plain `{YYYY-MM-DD}/{HH}` (v1's Hive
///   `dt=`/`hr=` shadow user columns of those names when a reader applies
///   Hive partitioning; see [`keys::partition`]), carry `_strata_raw` and
///   `_strata_before_raw`, and schema versions record missing values and
///   the table's storage file. Nothing in the layout of v1 objects changed
///   meaning, so v1 manifests, schemas and data files read as before (keys
///   are always taken from manifests, never rebuilt).
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format this build reads.
pub const OLDEST_FORMAT: u32 = 1;

/// Whether this build reads objects of `format`; the error names both ends.
pub fn check_format(format: u32) -> std::result::Result<(), String> {
    if (OLDEST_FORMAT..=FORMAT_VERSION).contains(&format) {
        Ok(())
    } else {
        Err(format!("format {format} is not supported (this build reads formats {OLDEST_FORMAT} to {FORMAT_VERSION})"))
    }
}
