//! `cost`: what strata's requests to an S3 stage cost at S3's list price,
//! busy and idle.
//!
//! strata-reader and strata-writer run as processes on a stage in the S3
//! emulator, with three Postgres mirror destinations and no wake-up queue.
//! Busy: `--changes` single-row insert transactions at `--rate` a second,
//! until every destination holds them. Idle: after the pipeline has been
//! quiet for [`SETTLE`], [`IDLE`] of nothing. Both phases read the
//! requests each process made from its `strata_stage_requests_total`
//! (every stage request, counted by kind) and price them per 1,000,000
//! changes and per idle destination-day. The emulator's speed does not
//! enter: requests are counted, not timed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use strata_stager::requests::Op;
use strata_writer::spec::{PostgresMode, StartPosition};

use super::latency::{TICKS_DDL, steady_workload, wait_arrived};
use super::{Args, record, today};
use crate::emulator::Emulator;
use crate::pg::{PgCluster, connect};
use crate::process::free_port;
use crate::reader::{ServiceProcess, config_text_for, wait_for_slot};
use crate::writer::spec;

/// Destinations the writer delivers to.
const DESTINATIONS: u64 = 3;
/// Quiet time before the idle phase, so idle polls have slowed down and
/// the destinations' leases have become the idle ones (after `IDLE_AFTER`
/// caught up, at the next renewal, a third of the short lease later).
const SETTLE: Duration = Duration::from_secs(strata_writer::run::IDLE_AFTER.as_secs() + strata_writer::run::LEASE_TTL.as_secs() / 3 + 5);
/// The idle phase: two renewal periods of an idle destination's lease, so
/// that its renewals are counted (a shorter window can fall between them).
const IDLE: Duration = Duration::from_secs(2 * strata_writer::run::IDLE_LEASE_RENEW.as_secs());

/// Requests by kind, as a process's /metrics shows them.
#[derive(Debug, Default, Clone)]
struct Requests(BTreeMap<String, u64>);

impl Requests {
    async fn scrape(port: u16) -> Result<Requests> {
        Ok(Requests(crate::http::stage_requests(port).await?))
    }

    fn since(&self, before: &Requests) -> Requests {
        Requests(self.0.iter().map(|(op, n)| (op.clone(), n - before.0.get(op).copied().unwrap_or(0))).collect())
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Dollars at S3's list price.
    fn usd(&self) -> f64 {
        Op::ALL.iter().map(|op| self.0.get(op.name()).copied().unwrap_or(0) as f64 * op.usd_per_thousand() / 1000.0).sum()
    }

    /// `put 12, get 40, …`, scaled by `factor`.
    fn describe(&self, factor: f64) -> String {
        self.0.iter().filter(|(_, n)| **n > 0).map(|(op, n)| format!("{op} {:.0}", *n as f64 * factor)).collect::<Vec<_>>().join(", ")
    }
}

/// Both services' requests.
struct Scrape {
    reader: Requests,
    writer: Requests,
}

impl Scrape {
    async fn take(reader_port: u16, writer_port: u16) -> Result<Scrape> {
        Ok(Scrape { reader: Requests::scrape(reader_port).await?, writer: Requests::scrape(writer_port).await? })
    }

    fn since(&self, before: &Scrape) -> Scrape {
        Scrape { reader: self.reader.since(&before.reader), writer: self.writer.since(&before.writer) }
    }
}

pub async fn run(args: &Args) -> Result<()> {
    let emulator = Emulator::start().await?;
    let (stage_toml, stage) = emulator.stage_config("strata").await?;
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    src.batch_execute(TICKS_DDL).await.context("creating the source table")?;
    let mut destinations = Vec::new();
    for i in 0..DESTINATIONS {
        let url = cluster.fresh_database().await?;
        strata_writer::control::add(&stage, &spec(&format!("d{i}"), &url, StartPosition::Earliest, PostgresMode::Mirror)).await?;
        destinations.push(connect(&url).await?);
    }
    let dir = tempfile::tempdir().context("creating the bench's temp dir")?;
    let (reader_port, writer_port) = (free_port(), free_port());
    let config = |name: &str, port: u16| -> Result<std::path::PathBuf> {
        // The services' default batch age, not the tests' quick one.
        let text = config_text_for(&src_url, &stage_toml, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}")).replace("max_age = \"50ms\"", "");
        let path = dir.path().join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let reader = ServiceProcess::spawn(&super::service_exe("strata-reader-under-test")?, &config("reader.toml", reader_port)?)?;
    let writer = ServiceProcess::spawn(&super::service_exe("strata-writer-under-test")?, &config("writer.toml", writer_port)?)?;
    wait_for_slot(&src, "strata_main").await?;
    let before = Scrape::take(reader_port, writer_port).await?;
    let seconds = args.changes.div_ceil(args.rate);
    eprintln!("busy: {} single-row transactions a second for {seconds} s", args.rate);
    let (rows, _) = steady_workload(&src_url, args.rate, seconds).await?;
    for d in &destinations {
        wait_arrived(d, rows, Duration::from_secs(600)).await?;
    }
    let busy = Scrape::take(reader_port, writer_port).await?.since(&before);
    eprintln!("idle: {} s to settle, then {} s measured", SETTLE.as_secs(), IDLE.as_secs());
    tokio::time::sleep(SETTLE).await;
    let quiet = Scrape::take(reader_port, writer_port).await?;
    tokio::time::sleep(IDLE).await;
    let idle = Scrape::take(reader_port, writer_port).await?.since(&quiet);
    writer.terminate().context("stopping the writer")?;
    reader.terminate().context("stopping the reader")?;

    let per_million = 1e6 / rows as f64;
    let busy_usd = (busy.reader.usd() + busy.writer.usd()) * per_million;
    let line = format!(
        "| {} | stage requests per 1,000,000 changes | {rows} single-row transactions at {}/s, {DESTINATIONS} Postgres destinations, S3 emulator, no wake-ups | reader {} requests ({}), writer {} ({}) per 1,000,000 changes: **${busy_usd:.4}** | goal $0.05 | **{:.2}×** |",
        today(),
        args.rate,
        (busy.reader.total() as f64 * per_million).round(),
        busy.reader.describe(per_million),
        (busy.writer.total() as f64 * per_million).round(),
        busy.writer.describe(per_million),
        0.05 / busy_usd
    );
    record(args.record.as_ref(), "stage requests per 1,000,000 changes", &line)?;
    let per_day = 86_400.0 / IDLE.as_secs_f64();
    let destination_day = idle.writer.usd() * per_day / DESTINATIONS as f64;
    let line = format!(
        "| {} | stage requests per idle day | {DESTINATIONS} idle Postgres destinations, S3 emulator, no wake-ups, {} s measured after {} s quiet | writer {} requests a destination-day ({}): **${destination_day:.4}**; reader {} a stream-day ({}): ${:.4} | goal $0.01 a destination-day | **{:.2}×** |",
        today(),
        IDLE.as_secs(),
        SETTLE.as_secs(),
        (idle.writer.total() as f64 * per_day / DESTINATIONS as f64).round(),
        idle.writer.describe(per_day / DESTINATIONS as f64),
        (idle.reader.total() as f64 * per_day).round(),
        idle.reader.describe(per_day),
        idle.reader.usd() * per_day,
        0.01 / destination_day
    );
    record(args.record.as_ref(), "stage requests per idle day", &line)
}
