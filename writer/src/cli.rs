//! The `strata-writer` command line: the service, and the control commands
//! that edit destination specs in the stage.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use strata_common::Timestamp;
use strata_common::cli::CommonArgs;
use strata_common::config::Config;
use strata_stager::control::{ReplayRequest, ReplayState, WorkerStatus, lease_status};
use strata_stager::cursor::Cursors;
use strata_stager::keys::DestinationKeys;
use strata_stager::lease::{Lease, Leases};
use strata_stager::log::StreamLog;
use strata_stager::{Stage, Versioned};

use crate::control;
use crate::spec::{DestinationSpec, OnError, StartPosition};

#[derive(Parser)]
#[command(name = "strata-writer", version, about = "Deliver staged changes to destinations")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run destination workers (the default).
    Run,
    /// Add, list, remove, pause or resume destinations.
    #[command(subcommand)]
    Destination(DestinationCommand),
    /// Re-deliver changes from a time, or rebuild a destination as of a time.
    Replay {
        #[arg(long)]
        destination: String,
        /// Re-deliver exactly the changes committed at or after this RFC 3339 time.
        #[arg(long, conflicts_with = "as_of")]
        from: Option<String>,
        /// Rebuild the destination as it was at this RFC 3339 time.
        #[arg(long)]
        as_of: Option<String>,
        /// After an --as-of rebuild: stop (pause the destination) or continue.
        #[arg(long, value_enum, default_value = "stop")]
        then: ThenArg,
    },
    /// Check the configuration and every destination spec in the stage,
    /// connecting to nothing: every problem named at once; exit 1 if any.
    Validate,
    /// Streams, destinations, cursors, lag and errors.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DestinationCommand {
    /// Add a destination; running writers start it within seconds.
    Add(Box<AddArgs>),
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        name: String,
    },
    /// Make the stage's destinations what a file declares (create, update;
    /// remove the others with --prune); idempotent.
    Apply {
        /// The destinations file (see `destination export` for its form).
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
        /// Also remove destinations the file does not declare.
        #[arg(long)]
        prune: bool,
        /// Say what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the file that declares every destination as it is (TOML;
    /// secrets as written, `${VAR}`).
    Export,
    /// Edit one destination's declaration in $VISUAL or $EDITOR (default
    /// vi) and apply what is saved.
    Edit {
        name: String,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ThenArg {
    Stop,
    Continue,
}

#[derive(clap::Args)]
struct AddArgs {
    name: String,
    /// Stream to deliver.
    #[arg(long, default_value = strata_common::config::DEFAULT_STREAM)]
    stream: String,
    #[command(flatten)]
    kind: crate::destinations::registry::KindArgs,
    /// earliest, latest, or an RFC 3339 time.
    #[arg(long, default_value = "earliest")]
    start: String,
    /// A change the destination rejects: pause the destination, or skip
    /// it into destinations/NAME/dead-letter/ and deliver the rest.
    #[arg(long, value_enum, default_value = "pause")]
    on_error: OnError,
    /// continuous, `every 10m`, or a cron expression (`0 3 * * *`, UTC).
    #[arg(long, default_value = "continuous")]
    schedule: String,
    /// A JSON file of transforms: include/exclude tables, drop, null,
    /// redact, hash or fake columns, filter rows (see the README).
    #[arg(long)]
    transforms: Option<std::path::PathBuf>,
}

fn stage(config: &Config) -> Result<Stage> {
    Stage::open(&config.stage.url, &config.stage.options).with_context(|| format!("opening stage {}", config.stage.url))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    cli.common.require_stage(false)?;
    let config = cli.common.start()?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Validate => return crate::validate::validate(&config, &cli.common.origin()).await,
        Command::Run => {
            let shutdown = strata_common::service::shutdown_on_signals();
            crate::run::run(&config, shutdown).await?;
        }
        Command::Destination(cmd) => destination(&stage(&config)?, cmd).await?,
        Command::Status { json } => status(&stage(&config)?, json).await?,
        Command::Replay { destination, from, as_of, then } => {
            let time = |s: Option<String>, flag: &str| -> Result<Option<Timestamp>> {
                s.map(|t| t.parse::<Timestamp>().map_err(anyhow::Error::msg).with_context(|| flag.to_owned())).transpose()
            };
            let now = Timestamp::now();
            let id = format!(
                "{}-{}",
                now.to_datetime().map(|d| d.format("%Y%m%dT%H%M%S").to_string()).unwrap_or_default(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let request = crate::replay::ReplayRequest {
                format: 1,
                id: id.clone(),
                destination,
                from: time(from, "--from")?,
                as_of: time(as_of, "--as-of")?,
                then: match then {
                    ThenArg::Stop => crate::replay::Then::Stop,
                    ThenArg::Continue => crate::replay::Then::Continue,
                },
                state: crate::replay::ReplayState::Pending,
                created_at: now,
                updated_at: now,
                error: None,
            };
            crate::replay::submit(&stage(&config)?, &request).await?;
            println!("replay {id} requested; the writer that owns {:?} starts it within seconds (see status)", request.destination);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn destination(stage: &Stage, cmd: DestinationCommand) -> Result<()> {
    match cmd {
        DestinationCommand::Add(args) => {
            let AddArgs { name, stream, kind, start, on_error, transforms, schedule } = *args;
            let kind = kind.into_kind().map_err(anyhow::Error::msg)?;
            let schedule: crate::schedule::Schedule = schedule.parse().map_err(anyhow::Error::msg).context("--schedule")?;
            let transforms = match transforms {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text).with_context(|| format!("{}: not a transforms object", path.display()))?
                }
                None => Default::default(),
            };
            let start: StartPosition = start.parse().map_err(anyhow::Error::msg).context("--start")?;
            let now = Timestamp::now();
            let spec = DestinationSpec {
                format: 1,
                name: name.clone(),
                stream,
                start,
                paused: false,
                on_error,
                transforms,
                schedule,
                destination: kind,
                created_at: now,
                updated_at: now,
            };
            control::add(stage, &spec).await?;
            println!("added destination {name:?} ({}), starting at {start}", spec.describe());
            if let Some(note) = control::empty_stream_note(stage, &spec.stream).await? {
                eprintln!("note: {note}");
            }
        }
        DestinationCommand::List { json } => {
            for s in control::list(stage).await? {
                let s = s.value;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"name": s.name, "stream": s.stream, "kind": s.describe(), "start": s.start, "paused": s.paused, "spec": s})
                    );
                } else {
                    println!("{}\t{}\t{}\tstart {}{}", s.name, s.stream, s.describe(), s.start, if s.paused { "\tpaused" } else { "" });
                }
            }
        }
        DestinationCommand::Remove { name } => {
            control::remove(stage, &name).await?;
            println!("removed destination {name:?}");
        }
        DestinationCommand::Apply { file, prune, dry_run } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let declared = crate::declare::parse(&file.display().to_string(), &text)?;
            for change in crate::declare::apply(stage, &declared, prune, dry_run).await? {
                let would = dry_run && !matches!(change, crate::declare::Change::Unchanged(_));
                println!("{}{change}", if would { "would " } else { "" });
            }
            let streams: std::collections::BTreeSet<&String> = declared.destination.values().map(|d| &d.stream).collect();
            for stream in streams {
                if let Some(note) = control::empty_stream_note(stage, stream).await? {
                    eprintln!("note: {note}");
                }
            }
        }
        DestinationCommand::Export => print!("{}", crate::declare::export(stage).await?),
        DestinationCommand::Edit { name } => {
            let editor = ["VISUAL", "EDITOR"].iter().find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty())).unwrap_or_else(|| "vi".to_owned());
            match crate::declare::edit(stage, &name, &editor).await? {
                crate::declare::Edited::Updated => println!("updated destination {name:?}; running writers apply it within seconds"),
                crate::declare::Edited::Unchanged => println!("destination {name:?} unchanged"),
            }
        }
        DestinationCommand::Pause { name } => {
            control::update(stage, &name, |s| s.paused = true).await?;
            println!("paused destination {name:?}");
        }
        DestinationCommand::Resume { name } => {
            control::update(stage, &name, |s| s.paused = false).await?;
            println!("resumed destination {name:?}");
        }
    }
    Ok(())
}

/// One row of `status`: a destination, where it is, and what is wrong.
/// What is unknown or does not apply is left out, never `null`.
#[derive(Serialize)]
struct DestinationStatus {
    destination: String,
    stream: String,
    kind: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    cursor: u64,
    /// The stream's last batch; absent while nothing is staged.
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head_commit_ts: Option<Timestamp>,
    lag_batches: u64,
    /// How long ago the oldest change not yet delivered was committed;
    /// 0 when caught up.
    lag_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_at: Option<Timestamp>,
    on_error: OnError,
    schedule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_run: Option<Timestamp>,
    dead_letters: usize,
    replays: Vec<ReplayStatus>,
}

#[derive(Serialize)]
struct ReplayStatus {
    id: String,
    state: ReplayState,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl std::fmt::Display for DestinationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let position = match self.head {
            Some(head) => format!("cursor {} of {head}\tlag {} batches, {}", self.cursor, self.lag_batches, seconds(self.lag_seconds)),
            None => "nothing staged yet".to_owned(),
        };
        write!(f, "{}\tstream {}\t{}\t{position}\t{}", self.destination, self.stream, self.state, self.schedule)?;
        if let Some(t) = self.next_run {
            write!(f, " (next run {t})")?;
        }
        if let Some(o) = &self.owner {
            write!(f, "\towner {o}")?;
        }
        if let Some(e) = &self.error {
            write!(f, "\terror: {e}")?;
        }
        if let Some(t) = self.failed_at {
            write!(f, " (since {t})")?;
        }
        if self.dead_letters > 0 {
            write!(f, "\t{} changes dead-lettered", self.dead_letters)?;
        }
        Ok(())
    }
}

/// A lag for people: `0 s`, `42 s`, `3 min 20 s`, `5 h 2 min`.
fn seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

async fn status(stage: &Stage, json: bool) -> Result<()> {
    let replays = crate::replay::list(stage).await?;
    let mut rows = Vec::new();
    for s in control::list(stage).await? {
        rows.push(destination_status(stage, s.value, &replays).await?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in rows {
            println!("{r}");
        }
    }
    Ok(())
}

async fn destination_status(stage: &Stage, s: DestinationSpec, replays: &[Versioned<ReplayRequest>]) -> Result<DestinationStatus> {
    let log = StreamLog::new(stage, &s.stream)?;
    let head = log.head(None).await?;
    let head_commit_ts = match head {
        Some(h) => Some(log.read(h).await?.commit_ts.max),
        None => None,
    };
    let keys = DestinationKeys::new(&s.name)?;
    let cursor = Cursors::new(stage, &s.name)?.load().await?.map_or(0, |c| c.value.seq);
    // The first batch not delivered says how old the lag is (or, when it
    // was collected, the oldest still staged).
    let lag_seconds = match head {
        Some(h) if h > cursor => {
            let oldest = log.read(log.low().await?.max(cursor + 1)).await?.commit_ts.min;
            (Timestamp::now().0 - oldest.0).max(0) as f64 / 1e6
        }
        _ => 0.0,
    };
    let lease: Option<Lease> = Leases::new(stage, keys.lease()).read().await?.map(|l| l.value);
    let worker: Option<WorkerStatus> = lease.as_ref().and_then(lease_status);
    let live = lease.as_ref().is_some_and(|l| !l.is_expired(Timestamp::now()));
    // A failure outlives the writer that saw it: the released lease
    // keeps its last status until a writer takes the destination again.
    let failed = worker.as_ref().is_some_and(|w| w.state == "failed");
    let state = match (s.paused, live, failed) {
        (true, _, _) => "paused".to_owned(),
        (false, true, _) => worker.as_ref().map_or("running".to_owned(), |w| w.state.clone()),
        (false, false, true) => "failed (no writer holds it)".to_owned(),
        (false, false, false) => "unassigned".to_owned(),
    };
    let shown = worker.filter(|_| live || failed);
    Ok(DestinationStatus {
        kind: s.describe(),
        state,
        owner: lease.filter(|_| live).map(|l| l.holder),
        cursor,
        head,
        head_commit_ts,
        lag_batches: head.map_or(0, |h| h.saturating_sub(cursor)),
        lag_seconds,
        error: shown.as_ref().and_then(|w| w.last_error.clone()),
        failed_at: shown.as_ref().filter(|_| failed).and_then(|w| w.failed_at),
        on_error: s.on_error,
        schedule: s.schedule.to_string(),
        next_run: shown.as_ref().filter(|_| live).and_then(|w| w.next_run),
        dead_letters: stage.list(&keys.dead_letter_prefix()).await?.len(),
        replays: replays
            .iter()
            .filter(|r| r.value.destination == s.name && r.value.state != ReplayState::Done)
            .map(|r| ReplayStatus { id: r.value.id.clone(), state: r.value.state, error: r.value.error.clone() })
            .collect(),
        destination: s.name,
        stream: s.stream,
    })
}

/// Parses arguments, runs, and returns the exit status (0 ok, 1 error).
pub fn main() -> ExitCode {
    strata_common::service::limit_arenas(strata_common::service::WRITER_ARENAS);
    strata_common::service::main(run(Cli::parse()))
}
