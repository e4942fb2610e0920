//! Commit timestamps.
//!
//! PostgreSQL sends commit times as microseconds since 2000-01-01; strata keeps
//! microseconds since the Unix epoch, UTC — the unit of Parquet's
//! `TIMESTAMP(MICROS, UTC)` — and prints RFC 3339 with microseconds.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

/// Microseconds between 1970-01-01 and 2000-01-01, the PostgreSQL epoch.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A point in time, microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_micros())
    }

    /// From PostgreSQL's wire form: microseconds since 2000-01-01.
    pub fn from_pg_micros(pg: i64) -> Self {
        Timestamp(pg.saturating_add(PG_EPOCH_OFFSET_MICROS))
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// This time as a chrono value, `None` when out of chrono's range.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0)
    }

    /// `d` later, at the end of the range if that is past it.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_micros(d)))
    }

    /// `d` earlier, at the start of the range if that is before it.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_micros(d)))
    }
}

/// `d` in microseconds, `i64::MAX` for a longer one.
fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 3339 has four-digit years; anything else prints as raw
        // microseconds, which FromStr reads back.
        match self.to_datetime() {
            Some(dt) if (0..=9999).contains(&dt.year()) => f.write_str(&dt.to_rfc3339_opts(SecondsFormat::Micros, true)),
            _ => write!(f, "@{}us", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// A time string that is not RFC 3339 (`2026-11-20T10:00:00Z`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {input:?}: expected RFC 3339 like 2026-11-20T10:00:00Z or 2026-11-20T10:00:00.123456+01:00")]
pub struct ParseTimestampError {
    pub input: String,
}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(micros) = s.strip_prefix('@').and_then(|r| r.strip_suffix("us")) {
            return micros.parse().map(Timestamp).map_err(|_| ParseTimestampError { input: s.to_owned() });
        }
        DateTime::parse_from_rfc3339(s).map(|dt| Timestamp(dt.timestamp_micros())).map_err(|_| ParseTimestampError { input: s.to_owned() })
    }
}

serde_as_string!(Timestamp);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pg_epoch() {
        assert_eq!(Timestamp::from_pg_micros(0).to_string(), "2000-01-01T00:00:00.000000Z");
    }

    #[test]
    fn parses_offsets() {
        let a: Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();
        let b: Timestamp = "2026-11-20T11:00:00+01:00".parse().unwrap();
        assert_eq!(a, b);
        assert!("2026-11-20 10:00".parse::<Timestamp>().is_err());
    }

    proptest! {
        #[test]
        fn round_trips(v in i64::MIN..i64::MAX) {
            let t = Timestamp(v);
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
    }
}
