//! `strata.toml`: loading, defaults, environment overrides, validation.
//!
//! Loading happens in three steps, and each names what it rejects:
//!
//! 1. The file is parsed as TOML; `${NAME}` in any string is replaced by the
//!    environment variable `NAME` (an unset one is an error), `${file:PATH}`
//!    by the contents of a file, and `$${` is a literal `${`
//!    ([`expand_references`]). This is how secrets stay out of the file.
//! 2. Environment variables `STRATA_<SECTION>__<KEY>` override keys
//!    (`STRATA_SOURCE__URL`, `STRATA_BATCH__MAX_ROWS`); the double underscore
//!    separates levels because keys themselves contain single ones. A value is
//!    typed like the key it replaces (an integer key parses as an integer).
//!    Variables without `__` are not config (`STRATA_VENV` is for scripts).
//!    `${…}` references in an override expand as in the file.
//! 3. The result is deserialized with unknown keys rejected, then
//!    [`Config::validate`] checks values without doing any I/O.
//!
//! Every field has a documented default, so an empty file is a valid config
//! for everything but the reader's `[source]`.
//!
//! Secrets ([`SecretString`], [`SecretUrl`]) print as `****` through both
//! `Debug` and `Display`; only [`SecretString::expose`] gives the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod check;
mod overrides;
pub mod schedule;
mod secrets;
mod units;

pub use check::{Problem, check_log_level};
pub use overrides::{ENV_PREFIX, ENV_SEPARATOR};

pub use secrets::{ReferenceError, SecretString, SecretUrl, expand_references, has_literal_password, is_reference, redact_conn_str};
use units::{byte_size, duration, opt_duration, opt_listen};
pub use units::{format_duration, parse_byte_size, parse_duration, parse_listen};

/// Everything that can be wrong with a configuration, naming where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// (The I/O error is a field, not a `source`: printed once, in this message.)
    #[error("reading config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config {origin}: key `{key}` references ${{{var}}}, which is not set in the environment")]
    MissingEnv { origin: String, key: String, var: String },
    #[error("config {origin}: key `{key}` has an unterminated ${{…}} reference")]
    BadReference { origin: String, key: String },
    #[error("environment variable {var}: {message}")]
    Override { var: String, message: String },
    #[error("config {origin}: `{key}`: {message}")]
    Invalid { origin: String, key: String, message: String },
    /// Every problem found, each with its key.
    #[error("config {origin}: {}", check::describe(problems))]
    Problems { origin: String, problems: Vec<Problem> },
}

/// The whole `strata.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the stage lives.
    #[serde(default)]
    pub stage: StageConfig,
    /// The source database; required by the reader only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,
    /// When the reader cuts a batch.
    #[serde(default)]
    pub batch: BatchConfig,
    /// The initial snapshot of a new stream.
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// Garbage collection of the stage.
    #[serde(default)]
    pub gc: GcConfig,
    /// Logs, metrics and health endpoints.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Wake-up notifications through SQS (optional; polling is the default).
    #[serde(default)]
    pub wakeup: WakeupConfig,
    /// Query pulls (`[[pull]]`): streams read by querying, without a
    /// replication slot ([`PullConfig`]).
    #[serde(default, rename = "pull", skip_serializing_if = "Vec::is_empty")]
    pub pulls: Vec<PullConfig>,
}

/// Default stage location: a directory beside where the service runs, so a
/// first run needs no server and no setting.
pub const DEFAULT_STAGE_URL: &str = "./strata-stage";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// `file:///abs/path`, a plain path (relative to the working directory),
    /// or `s3://bucket/prefix`. S3 credentials, region and endpoint come from
    /// the standard `AWS_*` variables unless set in `options`.
    #[serde(default = "default_stage_url")]
    pub url: String,
    /// Extra object store options (`aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, …), passed to the store builder. Values are
    /// treated as secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, SecretString>,
}

fn default_stage_url() -> String {
    DEFAULT_STAGE_URL.to_owned()
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig { url: default_stage_url(), options: BTreeMap::new() }
    }
}

/// Default stream name, for the common case of one database per stage.
pub const DEFAULT_STREAM: &str = "main";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `postgres://user:password@host:port/db` or a libpq key=value string.
    /// Put the password in an environment variable: `url = "postgres://app:${PGPASSWORD}@db/app"`.
    pub url: SecretUrl,
    /// Name of this stream in the stage (`streams/{stream}/`).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Publication to create or use; default `strata_{stream}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
    /// Replication slot to create or use; default `strata_{stream}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Tables to capture: `schema.table` or `schema.*`.
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
}

fn default_stream() -> String {
    DEFAULT_STREAM.to_owned()
}

fn default_tables() -> Vec<String> {
    vec!["public.*".to_owned()]
}

impl SourceConfig {
    pub fn publication_name(&self) -> String {
        self.publication.clone().unwrap_or_else(|| format!("strata_{}", self.stream))
    }

    pub fn slot_name(&self) -> String {
        self.slot.clone().unwrap_or_else(|| format!("strata_{}", self.stream))
    }
}

/// Rows per batch before the reader cuts it: large enough that Parquet
/// compresses well, small enough that one batch decodes in a few MiB.
pub const DEFAULT_BATCH_MAX_ROWS: u64 = 50_000;
/// Memory of the changes buffered for one batch before a cut (16 MiB,
/// decoded values counted as held): the reader holds up to three batches
/// at once (filling, queued, encoding), so this bounds most of its memory,
/// and keeps a writer's fetch of one batch well under a second on S3.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Longest a change waits before its batch is cut (250 ms): sub-second
/// end-to-end latency on a quiet database, without a file per transaction.
pub const DEFAULT_BATCH_MAX_AGE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    #[serde(default = "default_max_bytes", with = "byte_size")]
    pub max_bytes: u64,
    #[serde(default = "default_max_age", with = "duration")]
    pub max_age: Duration,
}

fn default_max_rows() -> u64 {
    DEFAULT_BATCH_MAX_ROWS
}
fn default_max_bytes() -> u64 {
    DEFAULT_BATCH_MAX_BYTES
}
fn default_max_age() -> Duration {
    DEFAULT_BATCH_MAX_AGE
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_rows: DEFAULT_BATCH_MAX_ROWS, max_bytes: DEFAULT_BATCH_MAX_BYTES, max_age: DEFAULT_BATCH_MAX_AGE }
    }
}

/// Whether a new stream starts with a copy of the tables' existing rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Copy every published table once, consistent with the change stream
    /// that follows (the default).
    #[default]
    Initial,
    /// Capture changes only, from the moment the slot is created.
    Never,
}

/// Parallel copy workers of a snapshot (4): COPY is bounded by the source's
/// scan and the reader's parsing, so a few workers keep both busy without
/// swamping a production database.
pub const DEFAULT_SNAPSHOT_WORKERS: usize = 4;
/// Heap bytes of a table per copy range (128 MiB): small enough that a large
/// table spreads over every worker, large enough that a range is one
/// efficient TID range scan.
pub const DEFAULT_SNAPSHOT_RANGE_BYTES: u64 = 128 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    #[serde(default)]
    pub mode: SnapshotMode,
    /// Copy workers: tables, and ranges of large tables, copied at once.
    /// Each holds one source connection and at most one batch in memory.
    #[serde(default = "default_snapshot_workers")]
    pub workers: usize,
    /// Heap size of one range of a large table (split by page ranges).
    #[serde(default = "default_snapshot_range_bytes", with = "byte_size")]
    pub range_bytes: u64,
    /// How often a streaming reader looks for tables added to the
    /// publication with existing rows, to backfill them (mode `initial`).
    #[serde(default = "default_new_tables_check", with = "duration")]
    pub new_tables_check: Duration,
}

fn default_snapshot_workers() -> usize {
    DEFAULT_SNAPSHOT_WORKERS
}
fn default_snapshot_range_bytes() -> u64 {
    DEFAULT_SNAPSHOT_RANGE_BYTES
}
fn default_new_tables_check() -> Duration {
    DEFAULT_NEW_TABLES_CHECK
}

/// Period of the check for tables added to the publication (30 s).
pub const DEFAULT_NEW_TABLES_CHECK: Duration = Duration::from_secs(30);

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::Initial,
            workers: DEFAULT_SNAPSHOT_WORKERS,
            range_bytes: DEFAULT_SNAPSHOT_RANGE_BYTES,
            new_tables_check: DEFAULT_NEW_TABLES_CHECK,
        }
    }
}

/// How long an unreferenced data file is kept (24 h): far longer than any
/// upload-to-commit gap, so a file is never collected between its upload and
/// its manifest's creation.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    #[serde(default = "default_gc_grace", with = "duration")]
    pub grace: Duration,
    /// Batches whose newest commit is older than this are deleted by `gc`
    /// (never past a destination's cursor). Unset: keep history forever,
    /// which is what replay and `--as-of` rebuilds need.
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
}

fn default_gc_grace() -> Duration {
    DEFAULT_GC_GRACE
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { grace: DEFAULT_GC_GRACE, retention: None }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`: `IP:port`, or `:port`
    /// for every interface; each service has its own default (reader
    /// `127.0.0.1:9464`, writer `127.0.0.1:9465`).
    #[serde(default, with = "opt_listen", skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// `tracing` filter, e.g. `info` or `strata_reader=debug,info`; `RUST_LOG` wins when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// How often an idle worker still looks at the stage when it waits on
/// wake-ups: a lost or late notification costs at most this much latency,
/// and an idle destination costs one GET per this period instead of five a
/// second.
pub const DEFAULT_WAKEUP_FALLBACK_POLL: Duration = Duration::from_secs(30);

/// `[wakeup]`: "batch N committed" notifications through SQS, so that idle
/// writers start delivering at once instead of polling the stage. The
/// reader publishes to every queue in `publish`; a writer long-polls its
/// own `queue`. SQS hands a message to one receiver, so each writer process
/// (or group of writers that may share wake-ups) needs a queue of its own,
/// listed in the reader's `publish`. Without a queue, or when SQS cannot be
/// reached, writers poll the stage as they do by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeupConfig {
    /// Reader: SQS queue URLs that get a message for each committed batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Writer: the SQS queue URL this writer waits on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// AWS region; else the environment's, else the queue URL's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A custom SQS endpoint (a VPC endpoint, an emulator); else
    /// `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Writer, with `queue`: how often an idle worker still polls the stage.
    #[serde(default = "default_wakeup_fallback_poll", with = "duration")]
    pub fallback_poll: Duration,
}

fn default_wakeup_fallback_poll() -> Duration {
    DEFAULT_WAKEUP_FALLBACK_POLL
}

impl Default for WakeupConfig {
    fn default() -> Self {
        WakeupConfig { publish: Vec::new(), queue: None, region: None, endpoint: None, fallback_poll: DEFAULT_WAKEUP_FALLBACK_POLL }
    }
}

/// Rows per page of a query pull (10 000): one page is one batch and is
/// held in memory while it is encoded, so this bounds a pull's memory; large
/// enough that a page compresses well and a round costs few queries.
pub const DEFAULT_PULL_PAGE_ROWS: u64 = 10_000;

/// `[[pull]]`: a stream read by querying instead of logical replication.
///
/// Each round reads the rows whose `(watermark, key)` is past the last
/// staged one, in pages ordered by `(watermark, key…)`, and stages each page
/// as a `changes` batch of upserts (`c` in the very first round). Deletes
/// are not seen unless `soft_delete` says which rows are deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// The stream it feeds (`streams/{name}/`); not the CDC stream's name.
    pub name: String,
    /// The database to query; default `source.url`. A standby's or a
    /// SELECT-only role's URL goes here; secrets as in `source.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretUrl>,
    /// A table or view, `schema.name` (exactly one of `table` and `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// A SQL query whose rows are pulled (exactly one of `table` and `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Columns that identify a row.
    #[serde(default)]
    pub key: Vec<String>,
    /// A column whose value only grows (`updated_at`, an id).
    #[serde(default)]
    pub watermark: String,
    #[serde(default = "default_pull_page_rows")]
    pub page_rows: u64,
    /// `continuous`, `every 10m`, or a five-field cron expression (UTC).
    #[serde(default, skip_serializing_if = "schedule::Schedule::is_continuous")]
    pub schedule: schedule::Schedule,
    /// How far back before the last staged watermark each round starts
    /// again, to catch rows committed late with an older watermark.
    #[serde(default, with = "duration")]
    pub look_back: Duration,
    /// A SQL boolean expression over the row (`deleted_at IS NOT NULL`):
    /// rows for which it is true are staged as deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete: Option<String>,
}

fn default_pull_page_rows() -> u64 {
    DEFAULT_PULL_PAGE_ROWS
}

impl PullConfig {
    /// The URL to query: the pull's own, else the source's.
    pub fn url<'a>(&'a self, source: Option<&'a SourceConfig>) -> Option<&'a SecretUrl> {
        self.url.as_ref().or(source.map(|s| &s.url))
    }
}

/// Whether `url` looks like an SQS queue URL (`http(s)://host/account/name`).
pub fn is_queue_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, rest)| (scheme == "https" || scheme == "http") && rest.trim_end_matches('/').split('/').count() >= 3)
}

impl Config {
    /// Loads `path` (or an empty config when `None`) with the process
    /// environment for `${…}` references and `STRATA_*` overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|error| ConfigError::Read { path: p.to_owned(), error })?;
                (p.display().to_string(), text)
            }
            None => ("(defaults)".to_owned(), String::new()),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::from_toml(&origin, &text, &env)
    }

    /// Loads from text with an explicit environment; `origin` names the text
    /// in errors. Pure: what tests and [`Config::load`] share.
    pub fn from_toml(origin: &str, text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax { path: origin.to_owned(), message: e.to_string() })?;
        expand_table(&mut table, origin, "", env)?;
        // Defaults fill in keys the file left out, so an override of such a
        // key is typed like the default (an integer default takes an integer).
        let defaults = toml::Value::try_from(Config::default()).ok();
        let overridden =
            overrides::apply(&mut table, env, defaults.as_ref().and_then(|d| d.as_table())).map_err(|(var, message)| ConfigError::Override { var, message })?;
        let problems = |mut problems: Vec<Problem>| {
            for p in &mut problems {
                if let Some((_, var)) = overridden.iter().find(|(path, _)| p.key.starts_with(path.as_str())) {
                    p.message.push_str(&format!(" (set by {var})"));
                }
            }
            ConfigError::Problems { origin: origin.to_owned(), problems }
        };
        let config: Config = match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
            Ok(c) => c,
            // Each section on its own, to name a problem in every section.
            Err(_) => return Err(problems(check::sections(&table))),
        };
        match config.problems() {
            found if found.is_empty() => Ok(config),
            found => Err(problems(found)),
        }
    }
}

/// Stream and destination names: anything printable, since keys percent-encode
/// them, but not empty, not over 200 bytes and without control characters,
/// which no one types on purpose.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > 200 {
        return Err(format!("{name:?} is longer than 200 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} contains control characters"));
    }
    Ok(())
}

fn is_slot_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn expand_table(table: &mut toml::Table, origin: &str, prefix: &str, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        expand_value(v, origin, &key, env)?;
    }
    Ok(())
}

fn expand_value(v: &mut toml::Value, origin: &str, key: &str, env: &[(String, String)]) -> Result<(), ConfigError> {
    match v {
        toml::Value::String(s) => *s = expand_str(s, origin, key, env)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, origin, &format!("{key}[{i}]"), env)?;
            }
        }
        toml::Value::Table(t) => expand_table(t, origin, key, env)?,
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, origin: &str, key: &str, env: &[(String, String)]) -> Result<String, ConfigError> {
    let lookup = |var: &str| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone());
    expand_references(s, &lookup).map_err(|e| match e {
        ReferenceError::Unterminated => ConfigError::BadReference { origin: origin.to_owned(), key: key.to_owned() },
        ReferenceError::MissingEnv(var) => ConfigError::MissingEnv { origin: origin.to_owned(), key: key.to_owned(), var },
        ReferenceError::File { path, message } => {
            ConfigError::Invalid { origin: origin.to_owned(), key: key.to_owned(), message: format!("reading secret file {path}: {message}") }
        }
    })
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

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::from_toml("t", "", &[]).unwrap();
        assert_eq!(c.stage.url, DEFAULT_STAGE_URL);
        assert_eq!(c.batch.max_rows, DEFAULT_BATCH_MAX_ROWS);
        assert_eq!(c.batch.max_age, DEFAULT_BATCH_MAX_AGE);
        assert!(c.source.is_none());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml("strata.toml", "[batch]\nmax_rowz = 3\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("strata.toml") && msg.contains("batch") && msg.contains("max_rowz"), "{msg}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = Config::from_toml("strata.toml", "[batch\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("strata.toml"));
    }

    #[test]
    fn env_references_expand_and_missing_ones_fail() {
        let text = "[source]\nurl = \"postgres://app:${PW}@db/app\"\ntables = [\"public.*\"]\n";
        let c = Config::from_toml("t", text, &env(&[("PW", "s3cret")])).unwrap();
        let source = c.source.unwrap();
        assert_eq!(source.url.expose(), "postgres://app:s3cret@db/app");
        let err = Config::from_toml("t", text, &[]).unwrap_err();
        assert!(matches!(&err, ConfigError::MissingEnv { var, key, .. } if var == "PW" && key == "source.url"), "{err}");
        let lit = Config::from_toml("t", "[stage]\nurl = \"/x/$${HOME}\"\n", &[]).unwrap();
        assert_eq!(lit.stage.url, "/x/${HOME}");
    }

    #[test]
    fn references_are_whole_and_single() {
        for yes in ["${PW}", "${file:/run/secrets/pg}"] {
            assert!(is_reference(yes), "{yes}");
        }
        for no in ["${}", "hunter2", "${A}${B}", "x${PW}", "${PW}x", "${PW", "$${PW}"] {
            assert!(!is_reference(no), "{no}");
        }
    }

    #[test]
    fn file_references_read_mounted_secrets() {
        let dir = std::env::temp_dir().join(format!("strata-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pg");
        std::fs::write(&file, "s3cret\n").unwrap();
        let text = format!("[source]\nurl = \"postgres://app:${{file:{}}}@db/app\"\n", file.display());
        let c = Config::from_toml("t", &text, &[]).unwrap();
        assert_eq!(c.source.unwrap().url.expose(), "postgres://app:s3cret@db/app", "the trailing newline is dropped");
        let missing = text.replace("/pg}", "/absent}");
        let err = Config::from_toml("t", &missing, &[]).unwrap_err().to_string();
        assert!(err.contains("source.url") && err.contains("absent") && !err.contains("s3cret"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overrides_are_typed_like_their_key() {
        let c = Config::from_toml(
            "t",
            "[batch]\nmax_rows = 5\n",
            &env(&[("STRATA_BATCH__MAX_ROWS", "7"), ("STRATA_BATCH__MAX_AGE", "2s"), ("STRATA_STAGE__URL", "s3://b/p"), ("STRATA_VENV", "/ignored")]),
        )
        .unwrap();
        assert_eq!(c.batch.max_rows, 7);
        assert_eq!(c.batch.max_age, Duration::from_secs(2));
        assert_eq!(c.stage.url, "s3://b/p");
        let err = Config::from_toml("t", "", &env(&[("STRATA_BATCH__MAX_ROWS", "many")])).unwrap_err();
        assert!(err.to_string().contains("STRATA_BATCH__MAX_ROWS"), "{err}");
        let err = Config::from_toml("t", "", &env(&[("STRATA_BATCH__NOPE", "1")])).unwrap_err();
        assert!(err.to_string().contains("STRATA_BATCH__NOPE"), "{err}");
    }

    #[test]
    fn a_size_override_takes_a_unit_as_the_file_does() {
        let c = Config::from_toml("t", "", &env(&[("STRATA_BATCH__MAX_BYTES", "8MiB")])).unwrap();
        assert_eq!(c.batch.max_bytes, 8 << 20);
        let c = Config::from_toml("t", "[batch]\nmax_bytes = \"4MiB\"\n", &env(&[("STRATA_BATCH__MAX_BYTES", "1048576")])).unwrap();
        assert_eq!(c.batch.max_bytes, 1 << 20);
        // A count is not a size: the key's own parser refuses it, naming the key.
        let err = Config::from_toml("t", "", &env(&[("STRATA_BATCH__MAX_ROWS", "8MiB")])).unwrap_err();
        assert!(format!("{err:#}").contains("max_rows"), "{err:#}");
    }

    #[test]
    fn validation_names_the_field() {
        let err = Config::from_toml("t", "[batch]\nmax_bytes = 0\n", &[]).unwrap_err();
        assert!(err.to_string().contains("batch.max_bytes"), "{err}");
        let err = Config::from_toml("t", "[source]\nurl = \"postgres://x\"\nstream = \"Big-Name\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("source.slot"), "{err}");
        let err = Config::from_toml("t", "[source]\nurl = \"postgres://x\"\ntables = [\"nodot\"]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("source.tables[0]"), "{err}");
        let err = Config::from_toml("t", "[wakeup]\npublish = [\"https://sqs.eu-west-1.amazonaws.com/1/a\", \"wakeups\"]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("wakeup.publish[1]"), "{err}");
        let err = Config::from_toml("t", "[wakeup]\nfallback_poll = \"0s\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("wakeup.fallback_poll"), "{err}");
        let c = Config::from_toml("t", "[wakeup]\nqueue = \"http://127.0.0.1:4566/000000000000/w1\"\nfallback_poll = \"10s\"\n", &[]).unwrap();
        assert_eq!(c.wakeup.fallback_poll, Duration::from_secs(10));
    }

    #[test]
    fn secrets_never_print() {
        let text = "[source]\nurl = \"postgres://app:hunter2@db:5432/app?sslmode=require&password=hunter2\"\n\
                    [stage.options]\naws_secret_access_key = \"hunter2\"\n";
        let c = Config::from_toml("t", text, &[]).unwrap();
        let debug = format!("{c:?}");
        let display = c.source.as_ref().unwrap().url.to_string();
        let written = toml::to_string(&c).unwrap();
        for out in [&debug, &display, &written] {
            assert!(!out.contains("hunter2"), "{out}");
        }
        assert!(display.starts_with("postgres://app:****@db:5432/app"), "{display}");
        assert_eq!(redact_conn_str("host=db password=hunter2 user=app"), "host=db password=**** user=app");
        assert_eq!(redact_conn_str("host=db password = hunter2"), "host=db password = ****");
        assert_eq!(redact_conn_str("password='hun ter2' host=db"), "password=**** host=db");
        assert_eq!(redact_conn_str(r"password='it\'s hunter2'"), "password=****");
        assert_eq!(redact_conn_str("host=db password='unterminated hunter2"), "****");
        assert_eq!(redact_conn_str("hunter2"), "****");
        assert_eq!(redact_conn_str("postgres://[bad"), "****");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_byte_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_byte_size("1000").unwrap(), 1000);
        assert!(parse_byte_size("1 TiB").is_err());
        let c = Config::from_toml("t", "[batch]\nmax_bytes = \"1MiB\"\n", &[]).unwrap();
        assert_eq!(c.batch.max_bytes, 1 << 20);
    }

    #[test]
    fn overrides_expand_references_like_the_file() {
        let e = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let env = e(&[("STRATA_SOURCE__URL", "postgres://app:${PGPASSWORD}@db/app"), ("PGPASSWORD", "s3cret"), ("STRATA_TELEMETRY__LISTEN", ":9464")]);
        let c = Config::from_toml("t", "[source]\nurl = \"postgres://x@y/z\"\n", &env).unwrap();
        assert_eq!(c.source.unwrap().url.expose(), "postgres://app:s3cret@db/app");
        assert_eq!(c.telemetry.listen, Some("0.0.0.0:9464".parse().unwrap()));
        let err = Config::from_toml("t", "", &e(&[("STRATA_STAGE__URL", "${NOPE}")])).unwrap_err().to_string();
        assert!(err.contains("STRATA_STAGE__URL") && err.contains("NOPE"), "{err}");
    }
}
