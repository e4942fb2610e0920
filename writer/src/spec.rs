//! Destination specs: `destinations/{name}/spec.json`, the desired state.
//!
//! A spec says where a destination's changes go and from where it starts.
//! It is the source of truth: `strata-writer destination add|remove|pause|
//! resume` edit it (conditionally, so two editors cannot lose each other's
//! change), and running writers converge on it.
//!
//! Specs are stored in the stage, so they must never hold a secret: a
//! connection string names its password as `${VAR}`, expanded from the
//! writer's environment when it connects. `validate` refuses a literal one.

use serde::{Deserialize, Serialize};
use strata_common::Timestamp;
use strata_common::config::validate_name;

pub use crate::destinations::DestinationKind;
pub use crate::destinations::postgres::config::{PostgresMode, PostgresSpec};

/// Where a new destination starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The first batch of the stream: everything staged.
    Earliest,
    /// After the head at the time the destination first runs.
    Latest,
    /// The first change committed at or after this time.
    At(Timestamp),
}

impl std::str::FromStr for StartPosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(StartPosition::Earliest),
            "latest" => Ok(StartPosition::Latest),
            t => t
                .parse::<Timestamp>()
                .map(StartPosition::At)
                .map_err(|_| format!("start {s:?}: expected earliest, latest or an RFC 3339 time like 2026-11-20T10:00:00Z")),
        }
    }
}

impl std::fmt::Display for StartPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartPosition::Earliest => f.write_str("earliest"),
            StartPosition::Latest => f.write_str("latest"),
            StartPosition::At(t) => write!(f, "{t}"),
        }
    }
}

strata_common::serde_as_string!(StartPosition);

/// What a destination does with a change it rejects permanently (bad
/// data for it: a constraint, a value it cannot hold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop the destination with the error in `status` until its spec changes.
    #[default]
    Pause,
    /// Write the change to `destinations/{name}/dead-letter/` and deliver
    /// the rest of its batch.
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    pub format: u32,
    pub name: String,
    pub stream: String,
    pub start: StartPosition,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub on_error: OnError,
    /// When to deliver: continuous, `every 10m`, or a cron expression.
    #[serde(default, skip_serializing_if = "crate::schedule::Schedule::is_continuous")]
    pub schedule: crate::schedule::Schedule,
    /// Tables, columns, rows and masking, between the stage and the destination.
    #[serde(default, skip_serializing_if = "crate::transform::Transforms::is_empty")]
    pub transforms: crate::transform::Transforms,
    pub destination: DestinationKind,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl DestinationSpec {
    /// Checks names and that no secret is written into the stage. No I/O.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name).map_err(|e| format!("destination name: {e}"))?;
        validate_name(&self.stream).map_err(|e| format!("stream: {e}"))?;
        self.transforms.validate()?;
        if self.on_error == OnError::Skip && !self.destination.can_skip() {
            return Err(format!(
                "on_error skip needs a destination that can tell which changes it rejects (postgres, sqs); a {} destination cannot: use pause",
                self.destination.type_name()
            ));
        }
        self.destination.validate()
    }

    /// One line for `destination list` and logs: never the connection string.
    pub fn describe(&self) -> String {
        let what = self.destination.describe();
        let mut extra = Vec::new();
        if self.on_error == OnError::Skip {
            extra.push("rejected changes skipped".to_owned());
        }
        if !self.schedule.is_continuous() {
            extra.push(format!("schedule {}", self.schedule));
        }
        if !self.transforms.is_empty() {
            extra.push("transformed".to_owned());
        }
        if extra.is_empty() { what } else { format!("{what}; {}", extra.join(", ")) }
    }
}

#[cfg(test)]
impl DestinationSpec {
    /// A stdout destination of stream `main` from its earliest batch, for
    /// unit tests that need any spec at all.
    pub(crate) fn stdout_for_tests(name: &str) -> DestinationSpec {
        DestinationSpec {
            format: 1,
            name: name.to_owned(),
            stream: "main".to_owned(),
            start: StartPosition::Earliest,
            paused: false,
            on_error: OnError::default(),
            schedule: Default::default(),
            transforms: Default::default(),
            destination: DestinationKind::Stdout(Default::default()),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!("earliest".parse::<StartPosition>().unwrap(), StartPosition::Earliest);
        assert!(matches!("2026-11-20T10:00:00Z".parse::<StartPosition>().unwrap(), StartPosition::At(_)));
        assert!("yesterday".parse::<StartPosition>().is_err());
    }
}
