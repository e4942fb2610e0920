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
use strata_common::config::{is_reference, redact_conn_str, validate_name};

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

/// How the Postgres destination writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    /// Same tables, same rows as the source.
    #[default]
    Mirror,
    /// Every change appended, with its metadata columns.
    History,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSpec {
    /// Connection string; the password as `${VAR}`.
    pub url: String,
    #[serde(default)]
    pub mode: PostgresMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum DestinationKind {
    Postgres(PostgresSpec),
    /// JSON Lines of change envelopes on the writer's standard output.
    Stdout(crate::destinations::stdout::config::StdoutSpec),
    /// Change envelopes POSTed as signed JSON arrays.
    Webhook(crate::destinations::webhook::config::WebhookSpec),
    /// Parquet or JSON Lines files on any object store, rolled up.
    Files(crate::destinations::files::config::FilesSpec),
    /// Change envelopes as SQS messages (standard or FIFO queues).
    Sqs(crate::destinations::sqs::config::SqsSpec),
}

/// What a destination does with a change it rejects permanently (bad
/// data for it: a constraint, a value it cannot hold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
        match &self.destination {
            DestinationKind::Postgres(p) => {
                if p.url.trim().is_empty() {
                    return Err("postgres url must not be empty".to_owned());
                }
                if has_literal_password(&p.url) {
                    return Err(format!(
                        "postgres url {} holds a password, and specs are stored in the stage: write it as ${{VAR}} \
                         (e.g. postgres://app:${{DEST_PGPASSWORD}}@db/app) and set VAR in the writer's environment",
                        redact_conn_str(&p.url)
                    ));
                }
            }
            DestinationKind::Stdout(_) => {}
            DestinationKind::Webhook(w) => w.validate()?,
            DestinationKind::Files(f) => f.validate()?,
            DestinationKind::Sqs(q) => q.validate()?,
        }
        Ok(())
    }

    /// One line for `destination list` and logs: never the connection string.
    pub fn describe(&self) -> String {
        // Files and webhook URLs are shown as stored: `validate` keeps
        // literal passwords out of them, and `${VAR}` names no secret.
        let what = match &self.destination {
            DestinationKind::Postgres(p) => format!("postgres ({})", format!("{:?}", p.mode).to_lowercase()),
            DestinationKind::Stdout(_) => "stdout (json lines)".to_owned(),
            DestinationKind::Files(f) => format!("files {} ({}, up to {} rows per file)", f.url, format!("{:?}", f.format).to_lowercase(), f.roll_up_rows),
            DestinationKind::Webhook(w) => format!("webhook {} ({} per request{})", w.url, w.batch_size, if w.secret.is_some() { ", signed" } else { "" }),
            DestinationKind::Sqs(q) => format!(
                "sqs {}{} ({} per call, {} in flight, oversize {})",
                q.queue_url,
                if q.routes.is_empty() { String::new() } else { format!(" + {} routed tables", q.routes.len()) },
                q.batch_size,
                q.in_flight,
                format!("{:?}", q.oversize).to_lowercase()
            ),
        };
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

/// Whether a connection string carries a password that is not a `${VAR}` reference.
pub(crate) fn has_literal_password(url: &str) -> bool {
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
            && !password.is_empty()
            && !is_reference(password)
        {
            return true;
        }
        if let Some(query) = rest.split_once('?').map(|(_, q)| q) {
            return query.split('&').any(|kv| kv.split_once('=').is_some_and(|(k, v)| k.eq_ignore_ascii_case("password") && !v.is_empty() && !is_reference(v)));
        }
        return false;
    }
    url.split_whitespace().any(|t| t.split_once('=').is_some_and(|(k, v)| k.eq_ignore_ascii_case("password") && !v.is_empty() && !is_reference(v)))
}

/// Expands a spec's secret references from the writer's environment and
/// files (`${VAR}`, `${file:PATH}`: the rule of `strata.toml`).
pub fn expand_env(s: &str) -> Result<String, String> {
    strata_common::config::expand_references(s, &|var| std::env::var(var).ok()).map_err(|e| format!("{e} (referenced by the destination spec)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_passwords_are_refused() {
        assert!(has_literal_password("postgres://app:hunter2@db/app"));
        assert!(!has_literal_password("postgres://app:${PW}@db/app"));
        assert!(!has_literal_password("postgres://app@db/app"));
        assert!(has_literal_password("postgres://app@db/app?password=x"));
        assert!(has_literal_password("host=db password=x"));
        assert!(!has_literal_password("host=db password=${PW}"));
        assert!(!has_literal_password("host=db user=app"));
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!("earliest".parse::<StartPosition>().unwrap(), StartPosition::Earliest);
        assert!(matches!("2026-11-20T10:00:00Z".parse::<StartPosition>().unwrap(), StartPosition::At(_)));
        assert!("yesterday".parse::<StartPosition>().is_err());
    }
}
