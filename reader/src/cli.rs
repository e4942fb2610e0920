//! The `strata-reader` command line, in the library so that test harnesses
//! can build the same binary.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use strata_common::TableName;
use strata_common::cli::CommonArgs;
use strata_common::config::{Config, has_literal_password};
use strata_stager::Stage;
use strata_stager::log::StreamLog;

#[derive(Parser)]
#[command(name = "strata-reader", version, about = "Stream a PostgreSQL database's changes into a strata stage")]
struct Cli {
    /// --config (its [source] section names the database) and --log-format.
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check the configuration without connecting to anything: every
    /// problem named at once; exit 1 if there is any.
    Validate,
    /// Re-stage a table's current rows while the stream keeps running
    /// (picked up by the running reader; progress in the request object).
    Backfill {
        /// The table, `schema.name` (quote odd names: `'"My Schema"."T.1"'`).
        #[arg(long)]
        table: String,
    },
    /// Run a round of a query pull now: the running reader picks the
    /// request up within seconds. Waits for the outcome and prints it
    /// (exit 1 if the round failed) unless --no-wait.
    Pull {
        /// The pull's name (`[[pull]] name`, its stream).
        name: String,
        /// Print the request's id and return at once.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long (the request stays pending).
        #[arg(long, default_value = "5m", value_parser = strata_common::config::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show each stream of this config (the CDC stream and every pull):
    /// its state, last batch and last error, from its reader.json.
    Status {
        /// One JSON array instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove strata from the source database: drop the stream's
    /// replication slot, and its publication if the reader created it.
    /// Without --yes, print what it would drop and exit 1. Refuses while a
    /// reader runs; leaves the stage as it is.
    Teardown {
        /// Drop what is listed.
        #[arg(long, conflicts_with = "dry_run")]
        yes: bool,
        /// Print what would be dropped, drop nothing, exit 0.
        #[arg(long)]
        dry_run: bool,
    },
}

async fn run(cli: Cli) -> Result<ExitCode> {
    cli.common.require_stage(false)?;
    let config = cli.common.start()?;
    match cli.command {
        Some(Command::Backfill { table }) => return backfill(&config, &table).await,
        Some(Command::Validate) => return Ok(validate(&config, &cli.common.origin())),
        Some(Command::Pull { name, no_wait, timeout }) => return pull(&config, &name, no_wait, timeout).await,
        Some(Command::Status { json }) => return status(&config, json).await,
        Some(Command::Teardown { yes, dry_run }) => {
            let confirm = match (yes, dry_run) {
                (true, _) => crate::teardown::Confirm::Yes,
                (false, true) => crate::teardown::Confirm::DryRun,
                (false, false) => crate::teardown::Confirm::Ask,
            };
            return crate::teardown::teardown(&config, confirm).await;
        }
        None => {}
    }
    let shutdown = strata_common::service::shutdown_on_signals();
    crate::run::run(&config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn backfill(config: &Config, table: &str) -> Result<ExitCode> {
    let source = config.source.as_ref().context("backfill needs the [source] section of the stream")?;
    let table = TableName::parse(table).with_context(|| format!("--table {table:?}"))?;
    let db = crate::setup::SourceDb::connect(source).await?;
    let publication = source.publication_name();
    let published = db
        .client()
        .query_opt("SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3", &[&publication, &table.schema, &table.name])
        .await
        .context("checking the publication")?
        .is_some();
    if !published {
        anyhow::bail!("{table} is not in publication {publication:?} of stream {:?}; add it to the publication first", source.stream);
    }
    let stage = Stage::open(&config.stage.url, &config.stage.options).with_context(|| format!("opening stage {}", config.stage.url))?;
    let log = StreamLog::new(&stage, &source.stream)?;
    let req = strata_stager::control::BackfillRequest::submit(&log, &table, "requested").await.context("recording the backfill request")?;
    println!("backfill {} of {table} requested; the running reader of stream {:?} picks it up", req.id, source.stream);
    println!("progress: {}", log.keys().backfill(&req.id)?);
    Ok(ExitCode::SUCCESS)
}

/// `strata-reader pull NAME`: records a request for a round of the pull,
/// and waits for the running reader to answer it, as `strata-writer
/// replay` waits for a replay.
async fn pull(config: &Config, name: &str, no_wait: bool, timeout: std::time::Duration) -> Result<ExitCode> {
    use strata_stager::control::{PullRequest, PullRequestState};
    if !config.pulls.iter().any(|p| p.name == name) {
        let known: Vec<&str> = config.pulls.iter().map(|p| p.name.as_str()).collect();
        anyhow::bail!("no [[pull]] named {name:?} in the config (pulls: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") });
    }
    let stage = Stage::open(&config.stage.url, &config.stage.options).with_context(|| format!("opening stage {}", config.stage.url))?;
    let log = StreamLog::new(&stage, name)?;
    let req = PullRequest::submit(&log).await.with_context(|| format!("recording a pull request for stream {name:?}"))?;
    let key = log.keys().pull_request(&req.id)?;
    println!("pull {} of {name:?} requested; the running reader picks it up within seconds", req.id);
    if no_wait {
        println!("progress: {key}");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let now = stage.get_json::<PullRequest>(&key).await.with_context(|| format!("reading {key}"))?.map(|v| v.value);
        match now {
            Some(r) if r.state == PullRequestState::Done => {
                println!("pull {} of {name:?} done: {} rows in {} batches", r.id, r.rows, r.batches);
                return Ok(ExitCode::SUCCESS);
            }
            Some(r) if r.state == PullRequestState::Failed => {
                println!("pull {} of {name:?} failed: {}", r.id, r.error.unwrap_or_default());
                return Ok(ExitCode::from(1));
            }
            _ if std::time::Instant::now() >= deadline => {
                println!(
                    "pull {} of {name:?} still pending after {}; is a reader running this pull? (progress: {key})",
                    req.id,
                    strata_common::config::format_duration(timeout)
                );
                return Ok(ExitCode::from(1));
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
}

/// `strata-reader status`: each stream's lease status, as the reader
/// holding it last published it (a stopped reader's last status stays).
async fn status(config: &Config, json: bool) -> Result<ExitCode> {
    let stage = Stage::open(&config.stage.url, &config.stage.options).with_context(|| format!("opening stage {}", config.stage.url))?;
    let streams = config.source.iter().map(|s| (s.stream.clone(), "cdc")).chain(config.pulls.iter().map(|p| (p.name.clone(), "pull")));
    let mut rows = Vec::new();
    for (stream, kind) in streams {
        let log = StreamLog::new(&stage, &stream)?;
        let lease = strata_stager::lease::Leases::new(&stage, log.keys().reader())
            .read()
            .await
            .with_context(|| format!("reading the reader lease of stream {stream:?}"))?;
        let live = lease.as_ref().is_some_and(|l| !l.value.is_expired(strata_common::Timestamp::now()));
        let status = lease.map(|l| l.value.status).unwrap_or_default();
        let state = match (live, status["state"].as_str()) {
            (true, Some(s)) => s.to_owned(),
            (false, Some("failed")) => "failed (no reader running)".to_owned(),
            (false, _) => "not running".to_owned(),
            (true, None) => "running".to_owned(),
        };
        let head = log.head(None).await.with_context(|| format!("finding the last batch of stream {stream:?}"))?;
        rows.push(serde_json::json!({"stream": stream, "kind": kind, "state": state, "head": head, "error": status["last_error"]}));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            let error = r["error"].as_str().map(|e| format!(", error: {e}")).unwrap_or_default();
            println!(
                "{} ({}): {}, head {}{error}",
                r["stream"].as_str().unwrap_or_default(),
                r["kind"].as_str().unwrap_or_default(),
                r["state"].as_str().unwrap_or_default(),
                r["head"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the reader needs beyond a configuration that loads (which names its
/// own problems): a source, a connection string that parses, a stage URL
/// it can open. Prints each problem, or a summary; no I/O.
fn validate(config: &Config, origin: &str) -> ExitCode {
    let mut problems = Vec::new();
    if let Err(e) = Stage::check_url(&config.stage.url, &config.stage.options) {
        problems.push(format!("`stage.url`: {e}"));
    }
    match &config.source {
        None if config.pulls.is_empty() => {
            problems.push("`source`: missing; the reader needs [source] with url (or STRATA_SOURCE__URL), or at least one [[pull]]".to_owned())
        }
        None => {}
        Some(source) => check_url("source.url", source.url.expose(), &mut problems),
    }
    for (i, pull) in config.pulls.iter().enumerate() {
        if let Some(url) = &pull.url {
            check_url(&format!("pull[{i}].url"), url.expose(), &mut problems);
        }
    }
    if problems.is_empty() {
        let mut source = config.source.as_ref().map(|s| format!("stream {:?} from {}, tables {}", s.stream, s.url, s.tables.join(", "))).unwrap_or_default();
        if !config.pulls.is_empty() {
            let names: Vec<&str> = config.pulls.iter().map(|p| p.name.as_str()).collect();
            source = format!("{source}{}pulls {}", if source.is_empty() { "" } else { "; " }, names.join(", "));
        }
        println!("config {origin}: ok ({source}; stage {})", config.stage.url);
        return ExitCode::SUCCESS;
    }
    println!("config {origin}: {} problem{}:", problems.len(), if problems.len() == 1 { "" } else { "s" });
    for p in &problems {
        println!("  - {p}");
    }
    ExitCode::from(1)
}

/// A connection string's problems, for `validate`: it must parse, and a
/// literal password earns a note.
fn check_url(key: &str, url: &str, problems: &mut Vec<String>) {
    if let Err(e) = url.parse::<tokio_postgres::Config>() {
        problems.push(format!("`{key}`: not a PostgreSQL connection string ({e})"));
    }
    if has_literal_password(url) {
        println!("note: `{key}` holds a literal password; prefer ${{VAR}} or ${{file:PATH}}");
    }
}

/// The `strata-reader` command line: parses arguments, runs until SIGTERM
/// or Ctrl-C, and returns the exit status (0 clean stop, 1 error, 2 usage).
pub fn main() -> ExitCode {
    strata_common::service::main(run(Cli::parse()))
}
