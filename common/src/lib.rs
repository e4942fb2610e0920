//! Types shared by every strata component.
//!
//! - [`change`]: the change model — one committed row change as the reader
//!   decodes it and the writers deliver it.
//! - [`types`]: the PostgreSQL → Arrow type mapping, decided once per column
//!   when a schema version is created, and the [`Value`](change::Value)s that
//!   fit each mapped type.
//! - [`lsn`]: PostgreSQL log sequence numbers (`X/Y`).
//! - [`time`]: commit timestamps (microseconds since the Unix epoch, UTC).
//! - [`config`]: `strata.toml` loading with environment overrides and secrets
//!   that never print.
//! - [`ident`]: validated table identities.
//! - [`pgtext`]: parsing PostgreSQL text output (what pgoutput sends) into values.
//! - [`telemetry`]: `tracing` set-up shared by the binaries.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod change;
pub mod config;
pub mod ident;
pub mod lsn;
pub mod pgtext;
pub mod telemetry;
pub mod time;
pub mod types;

pub use change::{Change, Op, Value};
pub use ident::TableName;
pub use lsn::Lsn;
pub use time::Timestamp;
pub use types::ColumnType;
