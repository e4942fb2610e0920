//! Settings of a files destination, as stored in its spec.

use serde::{Deserialize, Serialize};
use strata_common::config::{has_literal_password, redact_conn_str};

use crate::destinations::RollUp;
use crate::envelope::EnvelopeFormat;

/// Rows gathered per file unless set.
pub const DEFAULT_ROLL_UP_ROWS: u64 = 100_000;
/// Longest a staged batch waits for others to share its file, unless set.
pub const DEFAULT_ROLL_UP_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// The stage's row format: metadata columns, then the table's.
    #[default]
    Parquet,
    /// One change envelope per line.
    Jsonl,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSpec {
    /// `file:///path`, a plain path, or `s3://bucket/prefix` (credentials
    /// from the writer's AWS_* environment).
    pub url: String,
    #[serde(default)]
    pub format: FileFormat,
    #[serde(default = "default_rows")]
    pub roll_up_rows: u64,
    #[serde(default = "default_secs")]
    pub roll_up_secs: u64,
    /// With `format = "jsonl"`: strata's envelope (the default), or
    /// Debezium's records (their values, one per line).
    #[serde(default, skip_serializing_if = "EnvelopeFormat::is_strata")]
    pub envelope: EnvelopeFormat,
}

fn default_rows() -> u64 {
    DEFAULT_ROLL_UP_ROWS
}
fn default_secs() -> u64 {
    DEFAULT_ROLL_UP_SECS
}

impl FilesSpec {
    pub fn new(url: String, format: FileFormat) -> FilesSpec {
        FilesSpec { url, format, roll_up_rows: DEFAULT_ROLL_UP_ROWS, roll_up_secs: DEFAULT_ROLL_UP_SECS, envelope: EnvelopeFormat::Strata }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("files url must not be empty".to_owned());
        }
        if has_literal_password(&self.url) {
            return Err(format!("files url {} holds a password; write it as ${{VAR}}", redact_conn_str(&self.url)));
        }
        // Refused now rather than when the destination first writes (a
        // `${VAR}` in it is expanded only then).
        if !self.url.contains("${")
            && let Err(e) = strata_stager::Stage::check_url(&self.url, &Default::default())
        {
            return Err(format!("files url: {e}"));
        }
        if self.format == FileFormat::Parquet && !self.envelope.is_strata() {
            return Err(format!("files envelope {} applies to format jsonl only: parquet files hold the stage's rows, not envelopes", self.envelope.name()));
        }
        if self.roll_up_rows == 0 || self.roll_up_secs > 86_400 {
            return Err("files roll_up_rows must be > 0 and roll_up_secs at most 86400".to_owned());
        }
        Ok(())
    }

    /// One line for `destination list`: the URL as stored (no literal password).
    pub fn describe(&self) -> String {
        let format = format!("{:?}", self.format).to_lowercase();
        format!("files {} ({format}{}, up to {} rows per file)", self.url, self.envelope.note(), self.roll_up_rows)
    }

    /// Batches gathered into one file: up to `roll_up_rows`, or what has
    /// waited `roll_up_secs`.
    pub fn roll_up(&self) -> RollUp {
        RollUp { rows: self.roll_up_rows, max_wait: std::time::Duration::from_secs(self.roll_up_secs) }
    }
}
