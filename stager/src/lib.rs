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
//! - [`log`]: the commit protocol and head / commit-time lookup.
//! - [`cursor`], [`lease`]: conditional state of destinations and readers.
//! - [`gc`], [`verify`]: maintenance.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod codec;
pub mod cursor;
pub mod error;
pub mod gc;
pub mod keys;
pub mod lease;
pub mod log;
pub mod manifest;
pub mod schema;
pub mod store;
pub mod verify;

pub use error::{Result, StageError};
pub use store::{Stage, Versioned};

/// The staging format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
