//! The `strata-stage` command line: inspect and maintain a stage. In the
//! library, as the reader's and the writer's are, so that test harnesses
//! can build the same binary.
//!
//! ```text
//! strata-stage ls     [--stream S] [--json]          batches: seq, kind, time and LSN range, counts, tables
//! strata-stage show   SEQ [--stream S] [--format table|jsonl] [--table schema.name]
//! strata-stage verify [--stream S] [--json]          exit 1 when anything is missing or corrupt
//! strata-stage gc     [--stream S] [--grace 24h] [--retention 30d] [--dry-run] [--json]
//! strata-stage files  --table schema.name [--stream S] [--as-of T]   committed data files, one per line
//! ```
//!
//! The stage is `--stage URL`, else the config's `stage.url` (`--config`,
//! `STRATA_CONFIG`, or `STRATA_STAGE__URL`); with none of them, or a local
//! stage directory that does not exist, the command refuses. Exit codes: 0
//! ok, 1 verify found problems, 2 error.

use std::process::ExitCode;

use crate::codec::FileColumn;
use crate::control::{BackfillRequest, BackfillState, Phase, ReaderStatus, SnapshotState, lease_status};
use crate::gc::{GcOptions, gc_stream};
use crate::keys::{decode_name, streams_prefix};
use crate::lease::Lease;
use crate::log::StreamLog;
use crate::verify::verify_stream;
use crate::{Stage, StageError};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use strata_common::cli::CommonArgs;
use strata_common::config::{Config, parse_duration};
use strata_common::{Change, Lsn, TableName, Timestamp};

#[derive(Parser)]
#[command(name = "strata-stage", version, about = "Inspect and maintain a strata stage")]
struct Cli {
    /// Stage URL: file:///path, a plain path, or s3://bucket/prefix.
    #[arg(long, global = true)]
    stage: Option<String>,
    /// --config (a strata.toml to take the stage URL and options from) and --log-format.
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the streams of the stage with their head, reader and snapshot.
    Streams {
        /// One JSON object per stream and line.
        #[arg(long)]
        json: bool,
    },
    /// List batches.
    Ls {
        #[arg(long)]
        stream: Option<String>,
        /// One JSON manifest summary per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the rows of one batch.
    Show {
        seq: u64,
        #[arg(long)]
        stream: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ShowFormat,
        /// Only this table (schema.name).
        #[arg(long)]
        table: Option<String>,
    },
    /// Check every manifest and data file; exit 1 on any problem.
    Verify {
        #[arg(long)]
        stream: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the committed data files of a table, one location per line, in
    /// commit order: what a query engine should read (a glob also finds
    /// files no manifest lists yet, or any more).
    Files {
        /// The table (schema.name).
        #[arg(long)]
        table: String,
        #[arg(long)]
        stream: Option<String>,
        /// Only batches committed at or before this time (RFC 3339); the
        /// last one may hold later rows: filter on `_strata_commit_ts`.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Delete unreferenced files past the grace period, and batches past the retention.
    Gc {
        #[arg(long)]
        stream: Option<String>,
        /// Keep unreferenced files younger than this (default: gc.grace, 24h).
        #[arg(long)]
        grace: Option<String>,
        /// Delete batches older than this (default: gc.retention, unset = keep all).
        #[arg(long)]
        retention: Option<String>,
        /// Report what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ShowFormat {
    Table,
    Jsonl,
}

/// The `strata-stage` command line: parses arguments, runs the command and
/// returns its exit status (0 ok, 1 verify found problems, 2 error).
#[tokio::main]
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings only: the output is the command's.
    strata_common::telemetry::init(cli.common.log_format.unwrap_or_default(), Some("warn"));
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    cli.common.require_stage(cli.stage.is_some())?;
    let config = Config::load(cli.common.config.as_deref())?;
    let url = cli.stage.clone().unwrap_or_else(|| config.stage.url.clone());
    let options = if cli.stage.is_some() { Default::default() } else { config.stage.options.clone() };
    let stage = Stage::open_existing(&url, &options).with_context(|| format!("opening stage {url}"))?;
    match cli.command {
        Command::Streams { json } => {
            for s in streams(&stage).await? {
                let summary = stream_summary(&StreamLog::new(&stage, &s)?).await.with_context(|| format!("reading stream {s:?}"))?;
                if json {
                    println!("{}", serde_json::to_string(&summary)?);
                } else {
                    println!("{summary}");
                }
            }
        }
        Command::Ls { stream, json } => {
            let log = StreamLog::new(&stage, &pick_stream(&stage, stream).await?)?;
            ls(&log, json).await?;
        }
        Command::Show { seq, stream, format, table } => {
            let log = StreamLog::new(&stage, &pick_stream(&stage, stream).await?)?;
            let table = table.map(|t| TableName::parse(&t)).transpose().context("--table")?;
            show(&log, seq, format, table.as_ref()).await?;
        }
        Command::Verify { stream, json } => {
            let mut ok = true;
            for s in streams_or(&stage, stream).await? {
                let report = verify_stream(&StreamLog::new(&stage, &s)?).await.with_context(|| format!("verifying stream {s:?}"))?;
                ok &= report.is_ok();
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    for p in &report.problems {
                        println!("stream {s:?}: {}: {}", p.key, p.message);
                    }
                    println!("stream {s:?}: {} batches, {} files checked, {} problems", report.batches, report.files, report.problems.len());
                }
            }
            if !ok {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Files { table, stream, as_of } => {
            let log = StreamLog::new(&stage, &pick_stream(&stage, stream).await?)?;
            let table = TableName::parse(&table).context("--table")?;
            let as_of = as_of.map(|t| t.parse::<Timestamp>()).transpose().map_err(anyhow::Error::msg).context("--as-of")?;
            for key in log.committed_files(&table, as_of).await.with_context(|| format!("listing the files of {table}"))? {
                println!("{}", stage.location(&key));
            }
        }
        Command::Gc { stream, grace, retention, dry_run, json } => {
            let grace = match grace {
                Some(g) => parse_duration(&g).map_err(anyhow::Error::msg).context("--grace")?,
                None => config.gc.grace,
            };
            let retention = match retention {
                Some(r) => Some(parse_duration(&r).map_err(anyhow::Error::msg).context("--retention")?),
                None => config.gc.retention,
            };
            let opts = GcOptions { grace, retention, dry_run, now: Timestamp::now() };
            for s in streams_or(&stage, stream).await? {
                let r = gc_stream(&stage, &s, &opts).await.with_context(|| format!("collecting stream {s:?}"))?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    let verb = if dry_run { "would delete" } else { "deleted" };
                    println!(
                        "stream {s:?}: {verb} {} batches and {} files ({} bytes); kept {} unreferenced files in grace, {} in flight{}",
                        r.batches_deleted,
                        r.files_deleted,
                        r.bytes_deleted,
                        r.files_in_grace,
                        r.files_in_flight,
                        r.retention_limited_by.map(|l| format!("; retention stopped: {l}")).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn streams(stage: &Stage) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for dir in stage.list_dirs(&streams_prefix()).await? {
        if let Some(seg) = dir.filename() {
            out.push(decode_name(seg).with_context(|| format!("stage key {dir}"))?);
        }
    }
    out.sort();
    Ok(out)
}

/// What `streams` shows of a stream: head, reader lease and status,
/// snapshot state and active backfills, from its control objects.
#[derive(Serialize)]
struct StreamSummary {
    stream: String,
    head: Option<u64>,
    reader: Option<ReaderSummary>,
    snapshot: Option<SnapshotSummary>,
    backfills_active: usize,
}

#[derive(Serialize)]
struct ReaderSummary {
    holder: String,
    live: bool,
    /// The reader's own state while its lease is live, else `stopped`.
    state: String,
    status: Option<ReaderStatus>,
}

#[derive(Serialize)]
struct SnapshotSummary {
    phase: Phase,
    point: Lsn,
    tables_done: usize,
}

impl std::fmt::Display for StreamSummary {
    /// One line: `main  head 3  reader streaming (host:1)  snapshot copying  1 backfills running`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = self.head.map_or("null".to_owned(), |h| h.to_string());
        write!(f, "{}\thead {head}\t", self.stream)?;
        match &self.reader {
            Some(r) => write!(f, "reader {} ({})", r.state, r.holder)?,
            None => f.write_str("no reader")?,
        }
        if let Some(s) = &self.snapshot {
            let phase = match s.phase {
                Phase::Copying => "copying",
                Phase::Done => "done",
            };
            write!(f, "\tsnapshot {phase}")?;
        }
        if self.backfills_active > 0 {
            write!(f, "\t{} backfills running", self.backfills_active)?;
        }
        Ok(())
    }
}

async fn stream_summary(log: &StreamLog) -> Result<StreamSummary> {
    let stage = log.stage();
    let head = log.head(None).await?;
    let reader = stage.get_json::<Lease>(&log.keys().reader()).await?.filter(|l| !l.value.holder.is_empty()).map(|l| {
        let live = !l.value.is_expired(Timestamp::now());
        let status: Option<ReaderStatus> = lease_status(&l.value);
        let state = if live { status.as_ref().map_or("?".to_owned(), |s| s.state.clone()) } else { "stopped".to_owned() };
        ReaderSummary { holder: l.value.holder, live, state, status }
    });
    let snapshot = stage.get_json::<SnapshotState>(&log.keys().snapshot()).await?.map(|s| SnapshotSummary {
        phase: s.value.phase,
        point: s.value.point,
        tables_done: s.value.tables.len(),
    });
    let mut backfills_active = 0;
    for meta in stage.list(&log.keys().backfills_prefix()).await? {
        if let Some(b) = stage.get_json::<BackfillRequest>(&meta.location).await?
            && matches!(b.value.state, BackfillState::Pending | BackfillState::Running)
        {
            backfills_active += 1;
        }
    }
    Ok(StreamSummary { stream: log.keys().stream().to_owned(), head, reader, snapshot, backfills_active })
}

async fn streams_or(stage: &Stage, stream: Option<String>) -> Result<Vec<String>> {
    match stream {
        Some(s) => Ok(vec![s]),
        None => streams(stage).await,
    }
}

async fn pick_stream(stage: &Stage, stream: Option<String>) -> Result<String> {
    if let Some(s) = stream {
        return Ok(s);
    }
    let all = streams(stage).await?;
    match all.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("stage {} holds no streams yet", stage.url()),
        many => bail!("stage {} holds several streams ({}); pick one with --stream", stage.url(), many.join(", ")),
    }
}

async fn ls(log: &StreamLog, json: bool) -> Result<()> {
    let seqs = log.list_seqs().await?;
    if !json {
        println!(
            "{:>8}  {:<8}  {:<27}  {:<27}  {:<23}  {:>6}  {:>9}  {:>10}  tables",
            "seq", "kind", "first commit", "last commit", "lsn (start, end]", "txns", "rows", "bytes"
        );
    }
    for seq in seqs {
        let m = match log.read(seq).await {
            Ok(m) => m,
            Err(e @ StageError::Corrupt { .. }) => {
                eprintln!("warning: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let tables: Vec<String> = m.tables().iter().map(|t| t.to_string()).collect();
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "seq": m.seq, "kind": m.kind, "commit_ts": m.commit_ts, "lsn": m.lsn,
                    "counts": m.counts, "tables": tables, "files": m.files.len(),
                })
            );
        } else {
            println!(
                "{:>8}  {:<8}  {:<27}  {:<27}  {:<23}  {:>6}  {:>9}  {:>10}  {}",
                m.seq,
                serde_json::to_value(m.kind)?.as_str().unwrap_or("?"),
                m.commit_ts.min.to_string(),
                m.commit_ts.max.to_string(),
                format!("({}, {}]", m.lsn.start, m.lsn.end),
                m.counts.transactions,
                m.counts.rows,
                m.counts.bytes,
                tables.join(", ")
            );
        }
    }
    Ok(())
}

fn row_json(columns: &[FileColumn], row: &[strata_common::Value]) -> serde_json::Value {
    serde_json::Value::Object(columns.iter().zip(row).map(|(c, v)| (c.name.clone(), v.to_json(&c.column_type))).collect())
}

fn change_json(columns: &[FileColumn], c: &Change) -> serde_json::Value {
    serde_json::json!({
        "table": c.table.to_string(),
        "op": c.op.code().to_string(),
        "lsn": c.lsn.to_string(),
        "ord": c.ord,
        "xid": c.xid,
        "commit_ts": c.commit_ts.to_string(),
        "after": c.after.as_ref().map(|r| row_json(columns, r)),
        "before": c.before.as_ref().map(|r| row_json(columns, r)),
    })
}

/// Cell text for the table view: JSON scalars unquoted, long values cut.
fn cell(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "NULL".to_owned(),
        serde_json::Value::Object(o) if o.contains_key(strata_common::change::UNCHANGED_JSON_KEY) => "(unchanged)".to_owned(),
        other => other.to_string(),
    };
    let s = s.replace(['\n', '\t'], " ");
    if s.chars().count() > 40 { s.chars().take(39).chain(std::iter::once('…')).collect() } else { s }
}

async fn show(log: &StreamLog, seq: u64, format: ShowFormat, only: Option<&TableName>) -> Result<()> {
    let m = log.read(seq).await.with_context(|| format!("reading batch {seq}"))?;
    for f in m.files.iter().filter(|f| only.is_none_or(|t| *t == f.table)) {
        let decoded = log.read_file(f).await.with_context(|| format!("reading {}", f.path))?;
        match format {
            ShowFormat::Jsonl => {
                for c in &decoded.changes {
                    println!("{}", change_json(&decoded.columns, c));
                }
            }
            ShowFormat::Table => {
                println!("{} (schema v{}, {} rows)", f.table, f.schema_version, f.rows);
                let mut header = vec!["op".to_owned(), "lsn".to_owned(), "ord".to_owned(), "commit_ts".to_owned()];
                header.extend(decoded.columns.iter().map(|c| c.name.clone()));
                let rows: Vec<Vec<String>> = decoded
                    .changes
                    .iter()
                    .map(|c| {
                        let mut r = vec![c.op.code().to_string(), c.lsn.to_string(), c.ord.to_string(), c.commit_ts.to_string()];
                        // Deletes show the old key/row they carry.
                        let image = c.after.as_ref().or(c.before.as_ref());
                        r.extend(decoded.columns.iter().enumerate().map(|(i, col)| match image {
                            Some(row) => cell(&row[i].to_json(&col.column_type)),
                            None => String::new(),
                        }));
                        r
                    })
                    .collect();
                let widths: Vec<usize> =
                    (0..header.len()).map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0)).collect();
                let line = |r: &[String]| r.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect::<Vec<_>>().join(" | ").trim_end().to_owned();
                println!("{}", line(&header));
                println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
                for r in &rows {
                    println!("{}", line(r));
                }
                println!();
            }
        }
    }
    Ok(())
}
