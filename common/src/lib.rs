//! Types shared by every strata component.
//!
//! - [`change`]: the change model — one committed row change as the reader
//!   decodes it and the writers deliver it.
//! - [`types`]: the PostgreSQL → Arrow type mapping, decided once per column
//!   when a schema version is created, and the [`Value`]s that
//!   fit each mapped type.
//! - [`lsn`]: PostgreSQL log sequence numbers (`X/Y`).
//! - [`time`]: commit timestamps (microseconds since the Unix epoch, UTC).
//! - [`backoff`]: the retry delays of every retry loop.
//! - `cli` (feature `cli`): the options every command line shares.
//! - [`config`]: `strata.toml` loading with environment overrides and secrets
//!   that never print; [`config::schedule`], the `continuous` / `every 10m` /
//!   cron grammar of destination and pull schedules.
//! - [`ident`]: validated table identities.
//! - `pgconn` (feature `postgres`): connections to PostgreSQL with libpq's
//!   TLS settings.
//! - [`pgtext`]: parsing PostgreSQL text output (what pgoutput sends) into values.
//! - [`telemetry`]: logs, metrics and the health endpoints of the services.
//! - [`service`]: runtime, signals and exit status of the service binaries.
//! - [`wakeup`]: "batch committed" notifications through SQS, and (feature
//!   `aws`) the AWS set-up of every SQS client.
//!
//! The invariants: a [`Value`] always fits the Arrow type
//! its column was mapped to, and every text form PostgreSQL prints parses
//! back to the same value or is an error naming it; a secret prints as
//! `****` through `Debug`, `Display` and `Serialize`, so no log line,
//! status or stage object can carry one by accident. Without the `aws` and
//! `postgres` features this crate does no network I/O, which keeps the
//! stage format crate free of database and cloud clients.

#![cfg_attr(test, allow(clippy::unwrap_used))]

/// Implements `Serialize`/`Deserialize` for a type through its `Display` and
/// `FromStr`, so it is stored exactly as it prints (`"16/B374D848"`). Used
/// by every crate for such types (`strata_common::serde_as_string!(T)`).
#[macro_export]
macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod backoff;
pub mod change;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod ident;
pub mod lsn;
#[cfg(feature = "postgres")]
pub mod pgconn;
pub mod pgtext;
pub mod service;
pub mod telemetry;
pub mod time;
pub mod types;
pub mod wakeup;

pub use change::{Change, Op, Value};
pub use ident::TableName;
pub use lsn::Lsn;
pub use time::Timestamp;
pub use types::ColumnType;
