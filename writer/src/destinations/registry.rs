//! The one place that lists every kind of destination.
//!
//! Each destination's folder holds its spec (`config`: settings, validation,
//! a one-line description) and its [`Destination`](super::Destination) (`sink`: the constructor
//! and delivery). This module joins them: the spec's `type` tag, the flags of
//! `destination add`, and the build step from spec to a running
//! destination. Adding a kind of destination adds a folder and one arm to
//! each match here; nothing outside `destinations/` changes.

use clap::ArgGroup;
use serde::{Deserialize, Serialize};
use strata_stager::Stage;

use super::files::FilesSink;
use super::files::config::{FileFormat, FilesSpec};
use super::postgres::PostgresSink;
use super::postgres::config::{PostgresMode, PostgresSpec};
use super::sqs::SqsSink;
use super::sqs::config::{Oversize, SqsSpec};
use super::stdout::StdoutSink;
use super::stdout::config::StdoutSpec;
use super::webhook::WebhookSink;
use super::webhook::config::WebhookSpec;
use super::{AnyDestination, DestError, RollUp};
use crate::envelope::EnvelopeFormat;

/// Where a destination's changes go: the `destination` object of a spec,
/// tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum DestinationKind {
    /// PostgreSQL tables, exactly once: a mirror of the source or a history of changes.
    Postgres(PostgresSpec),
    /// JSON Lines of change envelopes on the writer's standard output.
    Stdout(StdoutSpec),
    /// Change envelopes POSTed as signed JSON arrays.
    Webhook(WebhookSpec),
    /// Parquet or JSON Lines files on any object store, rolled up.
    Files(FilesSpec),
    /// Change envelopes as SQS messages (standard or FIFO queues).
    Sqs(SqsSpec),
}

impl DestinationKind {
    /// Checks the settings without I/O, naming the failing field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            DestinationKind::Postgres(p) => p.validate(),
            DestinationKind::Stdout(_) => Ok(()),
            DestinationKind::Webhook(w) => w.validate(),
            DestinationKind::Files(f) => f.validate(),
            DestinationKind::Sqs(q) => q.validate(),
        }
    }

    /// One line for `destination list` and logs; never a secret (specs hold
    /// none: `validate` refuses literal passwords, and `${VAR}` names no secret).
    pub fn describe(&self) -> String {
        match self {
            DestinationKind::Postgres(p) => p.describe(),
            DestinationKind::Stdout(s) => format!("stdout (json lines{})", s.envelope.note()),
            DestinationKind::Webhook(w) => w.describe(),
            DestinationKind::Files(f) => f.describe(),
            DestinationKind::Sqs(q) => q.describe(),
        }
    }

    /// How this destination wants consecutive batches gathered into one
    /// delivery, if at all.
    /// Whether the `skip` policy can work here: the destination can find
    /// the changes it rejects without delivering the others.
    pub fn can_skip(&self) -> bool {
        matches!(self, DestinationKind::Postgres(_) | DestinationKind::Sqs(_))
    }

    /// The `type` of its spec.
    pub fn type_name(&self) -> &'static str {
        match self {
            DestinationKind::Postgres(_) => "postgres",
            DestinationKind::Stdout(_) => "stdout",
            DestinationKind::Webhook(_) => "webhook",
            DestinationKind::Files(_) => "files",
            DestinationKind::Sqs(_) => "sqs",
        }
    }

    /// Whether this destination writes the stage's own data files, so a
    /// batch it takes whole can be given to it undecoded.
    pub fn reads_staged_files(&self) -> bool {
        matches!(self, DestinationKind::Files(f) if f.format == FileFormat::Parquet)
    }

    pub fn roll_up(&self) -> Option<RollUp> {
        match self {
            DestinationKind::Files(f) => Some(f.roll_up()),
            _ => None,
        }
    }

    /// Builds the destination `name` and connects it.
    pub async fn connect(&self, name: &str, stage: &Stage) -> Result<AnyDestination, DestError> {
        Ok(match self {
            DestinationKind::Postgres(p) => Box::new(PostgresSink::connect(name, p).await?),
            DestinationKind::Stdout(s) => Box::new(StdoutSink::new(s.envelope)),
            DestinationKind::Webhook(w) => Box::new(WebhookSink::connect(w)?),
            DestinationKind::Files(f) => Box::new(FilesSink::connect(f)?),
            DestinationKind::Sqs(q) => Box::new(SqsSink::connect(name, q, stage).await?),
        })
    }
}

/// The flags of `strata-writer destination add` that say where changes go.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["postgres", "stdout", "webhook", "files", "sqs"])))]
pub struct KindArgs {
    /// A PostgreSQL destination: its connection string, the password as ${VAR}.
    #[arg(long)]
    postgres: Option<String>,
    /// With --postgres: keep the same rows as the source (mirror, the
    /// default), or append every change (history).
    #[arg(long, value_enum)]
    mode: Option<PostgresMode>,
    /// JSON Lines of change envelopes on the writer's standard output.
    #[arg(long)]
    stdout: bool,
    /// A webhook: POST change envelopes as JSON arrays to this http(s) URL.
    #[arg(long)]
    webhook: Option<String>,
    /// Webhook signing secret, as ${VAR} (the variable is read by the writer).
    #[arg(long)]
    secret: Option<String>,
    /// Files on an object store: file:///path, a path, or s3://bucket/prefix.
    #[arg(long)]
    files: Option<String>,
    /// Format of --files (default parquet).
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// An SQS queue URL; a name ending in .fifo is a FIFO queue (per-key
    /// order, deduplicated by change id).
    #[arg(long)]
    sqs: Option<String>,
    /// With --sqs: a table's own queue, as schema.table=QUEUE_URL (repeatable).
    #[arg(long = "sqs-route", value_name = "TABLE=URL")]
    sqs_routes: Vec<String>,
    /// With --sqs: the AWS region (else the environment's, else the queue URL's).
    #[arg(long)]
    region: Option<String>,
    /// With --sqs: a custom endpoint (an emulator, a VPC endpoint).
    #[arg(long)]
    endpoint: Option<String>,
    /// With --sqs: SendMessageBatch calls in flight (default 8).
    #[arg(long)]
    in_flight: Option<usize>,
    /// With --sqs: a message over the queue's size limit is rejected (see
    /// --on-error, the default) or stored in the stage and sent as a pointer.
    #[arg(long, value_enum)]
    oversize: Option<Oversize>,
    /// Envelopes per request (webhook, default 100) or per SendMessageBatch (sqs, at most 10).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seconds a request may take (webhook, sqs).
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// With --files: rows gathered into one file.
    #[arg(long)]
    roll_up_rows: Option<u64>,
    /// With --files: longest a staged batch waits for others to share its file.
    #[arg(long)]
    roll_up_secs: Option<u64>,
    /// With --sqs: the largest message sent (bytes; at most the queue's limit).
    #[arg(long)]
    max_message_bytes: Option<usize>,
    /// What message destinations send (--stdout, --webhook, --sqs, --files
    /// with --format jsonl): strata's envelope (the default), or the records
    /// Debezium's PostgreSQL connector emits at its defaults, with their
    /// schema (debezium) or without (debezium-schemaless).
    #[arg(long, value_enum)]
    envelope: Option<EnvelopeFormat>,
}

impl KindArgs {
    /// The destination these flags name, not yet validated.
    pub fn into_kind(self) -> Result<DestinationKind, String> {
        let KindArgs {
            postgres,
            mode,
            stdout,
            webhook,
            secret,
            files,
            format,
            sqs,
            sqs_routes,
            region,
            endpoint,
            in_flight,
            oversize,
            batch_size,
            timeout_secs,
            roll_up_rows,
            roll_up_secs,
            max_message_bytes,
            envelope,
        } = self;
        // Each flag applies to some kinds only: refused elsewhere, rather
        // than silently ignored.
        let (is_postgres, is_webhook, is_files, is_sqs) = (postgres.is_some(), webhook.is_some(), files.is_some(), sqs.is_some());
        let applies = [
            (mode.is_some(), "--mode", is_postgres, "--postgres"),
            (secret.is_some(), "--secret", is_webhook, "--webhook"),
            (format.is_some(), "--format", is_files, "--files"),
            (roll_up_rows.is_some(), "--roll-up-rows", is_files, "--files"),
            (roll_up_secs.is_some(), "--roll-up-secs", is_files, "--files"),
            (!sqs_routes.is_empty(), "--sqs-route", is_sqs, "--sqs"),
            (region.is_some(), "--region", is_sqs, "--sqs"),
            (endpoint.is_some(), "--endpoint", is_sqs, "--sqs"),
            (in_flight.is_some(), "--in-flight", is_sqs, "--sqs"),
            (oversize.is_some(), "--oversize", is_sqs, "--sqs"),
            (max_message_bytes.is_some(), "--max-message-bytes", is_sqs, "--sqs"),
            (batch_size.is_some(), "--batch-size", is_webhook || is_sqs, "--webhook and --sqs"),
            (timeout_secs.is_some(), "--timeout-secs", is_webhook || is_sqs, "--webhook and --sqs"),
            (envelope.is_some(), "--envelope", !is_postgres, "--stdout, --webhook, --sqs and --files"),
        ];
        if let Some((_, flag, _, kinds)) = applies.iter().find(|(set, _, fits, _)| *set && !fits) {
            return Err(format!("{flag} applies to {kinds} destinations only"));
        }
        Ok(if let Some(url) = postgres {
            DestinationKind::Postgres(PostgresSpec { url, mode: mode.unwrap_or_default() })
        } else if let Some(url) = webhook {
            let mut w = WebhookSpec::new(url, secret);
            w.batch_size = batch_size.unwrap_or(w.batch_size);
            w.timeout_secs = timeout_secs.unwrap_or(w.timeout_secs);
            w.envelope = envelope.unwrap_or_default();
            DestinationKind::Webhook(w)
        } else if let Some(url) = sqs {
            let mut q = SqsSpec::new(url);
            for route in sqs_routes {
                let (table, url) = route.split_once('=').ok_or_else(|| format!("--sqs-route {route:?}: expected schema.table=QUEUE_URL"))?;
                q.routes.insert(table.trim().to_owned(), url.trim().to_owned());
            }
            q.region = region;
            q.endpoint = endpoint;
            q.in_flight = in_flight.unwrap_or(q.in_flight);
            q.batch_size = batch_size.unwrap_or(q.batch_size);
            q.oversize = oversize.unwrap_or(q.oversize);
            q.timeout_secs = timeout_secs.unwrap_or(q.timeout_secs);
            q.max_message_bytes = max_message_bytes.unwrap_or(q.max_message_bytes);
            q.envelope = envelope.unwrap_or_default();
            DestinationKind::Sqs(q)
        } else if let Some(url) = files {
            let mut f = FilesSpec::new(url, format.unwrap_or_default());
            f.roll_up_rows = roll_up_rows.unwrap_or(f.roll_up_rows);
            f.roll_up_secs = roll_up_secs.unwrap_or(f.roll_up_secs);
            f.envelope = envelope.unwrap_or_default();
            DestinationKind::Files(f)
        } else if stdout {
            DestinationKind::Stdout(StdoutSpec { envelope: envelope.unwrap_or_default() })
        } else {
            return Err("name the destination: --postgres URL, --webhook URL, --sqs QUEUE_URL, --files URL or --stdout".to_owned());
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        kind: KindArgs,
    }

    fn kind(args: &[&str]) -> Result<DestinationKind, String> {
        Flags::try_parse_from(std::iter::once("add").chain(args.iter().copied())).map_err(|e| e.to_string())?.kind.into_kind()
    }

    #[test]
    fn the_envelope_is_an_option_of_message_destinations_only() {
        assert_eq!(kind(&["--stdout", "--envelope", "debezium"]), Ok(DestinationKind::Stdout(StdoutSpec { envelope: EnvelopeFormat::Debezium })));
        let Ok(DestinationKind::Sqs(q)) = kind(&["--sqs", "https://sqs.eu-west-1.amazonaws.com/1/q", "--envelope", "debezium-schemaless"]) else {
            panic!("an sqs destination")
        };
        assert_eq!(q.envelope, EnvelopeFormat::DebeziumSchemaless);
        let err = kind(&["--postgres", "postgres://h/db", "--envelope", "debezium"]).unwrap_err();
        assert!(err.contains("--envelope applies to --stdout, --webhook, --sqs and --files"), "{err}");
        // Parquet files hold rows, not envelopes: refused by validation, naming the fix.
        let parquet = kind(&["--files", "/tmp/lake", "--envelope", "debezium"]).unwrap();
        assert!(parquet.validate().unwrap_err().contains("applies to format jsonl only"));
        assert!(kind(&["--files", "/tmp/lake", "--format", "jsonl", "--envelope", "debezium"]).unwrap().validate().is_ok());
        // A pointer message is strata's shape, not Debezium's.
        let staged = kind(&["--sqs", "https://sqs.eu-west-1.amazonaws.com/1/q", "--oversize", "stage", "--envelope", "debezium"]).unwrap();
        assert!(staged.validate().unwrap_err().contains("use oversize reject with envelope debezium"));
        assert!(kind(&["--stdout", "--envelope", "kafka"]).unwrap_err().contains("invalid value 'kafka'"));
    }

    #[test]
    fn specs_name_the_envelope_only_when_it_is_not_stratas() {
        let strata = serde_json::to_value(DestinationKind::Stdout(StdoutSpec::default())).unwrap();
        assert_eq!(strata, serde_json::json!({"type": "stdout"}), "existing specs are unchanged");
        let debezium: DestinationKind = serde_json::from_value(serde_json::json!({"type": "webhook", "url": "https://h/x", "envelope": "debezium"})).unwrap();
        assert_eq!(debezium.describe(), "webhook https://h/x (100 per request, debezium envelope)");
        let err =
            serde_json::from_value::<DestinationKind>(serde_json::json!({"type": "postgres", "url": "postgres://h/db", "envelope": "debezium"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `envelope`"), "{err}");
    }
}
