//! `strata-bench`: benchmarks measured as ratios against a reference in the
//! same run, on this machine.
//!
//! ```text
//! strata-bench catchup [--changes 1000000] [--record bench/RESULTS.md]
//! strata-bench snapshot [--gib 5] [--workers 4] [--record bench/RESULTS.md]
//! strata-bench sqs [--changes 20000] [--record bench/RESULTS.md]
//! strata-bench capture [--changes 1000000] [--record bench/RESULTS.md]
//! strata-bench load [--changes 2000000] [--record bench/RESULTS.md]
//! strata-bench bigtx [--changes 5000000] [--record bench/RESULTS.md]
//! strata-bench e2e [--changes 1000000] [--record bench/RESULTS.md]
//! strata-bench replay [--changes 1000000] [--record bench/RESULTS.md]
//! strata-bench latency [--rate 5000] [--seconds 20] [--record bench/RESULTS.md]
//! strata-bench cost [--changes 200000] [--rate 5000] [--record bench/RESULTS.md]
//! strata-bench backlog [--gib 10] [--record bench/RESULTS.md]
//! strata-bench pull [--changes 1000000] [--record bench/RESULTS.md]
//! strata-bench all [--record bench/RESULTS.md]
//! ```
//!
//! `catchup`: a backlog of changes (half inserts, half updates, in 10,000-row
//! transactions) is staged by strata-reader; then the time for strata-writer
//! to deliver it into an empty Postgres destination is compared with the time
//! PostgreSQL's native logical replication (CREATE SUBSCRIPTION, its slot
//! created before the workload so the same changes are pending) takes to
//! catch up the same changes. Both destinations are checked equal to the
//! source afterwards.
//!
//! `snapshot`: four tables holding `--gib` GiB of heap in total are staged by
//! strata-reader's initial snapshot; the reference is the read limit of the
//! same tables, `COPY … TO STDOUT` into nothing, with as many COPY streams
//! in parallel as the snapshot has workers, run before and after it (the
//! faster counts). Both rates are rows/s and MB/s of COPY text.
//!
//! `sqs`: a staged backlog delivered by strata-writer (its own process) into
//! an SQS queue of the emulator, against one `SendMessage` per change.
//!
//! `capture`: a backlog of changes is left in two logical replication
//! slots of the same publication; strata-reader (its own process) stages it
//! from one, and `pg_recvlogical` drains the other into /dev/null. Both
//! pay the server's decoding and the transfer; strata also parses every
//! value, encodes Parquet and commits batches to a local-disk stage, while
//! pg_recvlogical writes the raw stream nowhere.
//!
//! `load`: one table of `--changes` rows is loaded into an empty Postgres
//! destination by strata (reader snapshot into the stage and writer into
//! the destination, each its own process, running together) and by
//! native logical replication's initial table copy (`CREATE SUBSCRIPTION`
//! with `copy_data`); both destinations are checked equal to the source.
//!
//! `bigtx`: one source transaction inserting `--changes` rows, pending in
//! strata's slot and in a native subscription's; strata-reader and
//! strata-writer (each its own process, started together) deliver it into
//! an empty Postgres destination, against native logical replication
//! catching up the same transaction. Reports both processes' peak RSS (the
//! goal: at most 256 MiB each, whatever the transaction's size).
//!
//! `e2e`: `catchup`'s backlog, left in strata's slot and in a native
//! subscription's, delivered end to end: strata-reader and strata-writer
//! started together, timed until the destination holds every change,
//! against native logical replication catching up.
//!
//! `replay`: `capture`'s backlog staged by strata-reader (the capture rate),
//! then delivered from the earliest batch into a new files destination
//! (Parquet on local disk) by strata-writer (the replay rate); the files
//! are read back and must hold every change once. Ratio = replay rate /
//! capture rate (the goal: at least 10).
//!
//! `latency`: a steady `--rate` of single-row insert transactions for
//! `--seconds`, delivered into Postgres by strata-reader and strata-writer
//! and, in a second phase with its own source database, by a native
//! subscription; a row's latency is its arrival at the destination
//! (recorded by a trigger firing at the destination's commit) minus its
//! source transaction's commit time. Reports p50 and p99 of each.
//!
//! `cost`: strata-reader and strata-writer on a stage in the S3 emulator
//! with three Postgres destinations, busy (`--changes` single-row
//! transactions at `--rate` a second) and then idle; every stage request
//! each process makes is counted by kind and priced at S3's list price,
//! per 1,000,000 changes and per idle destination-day.
//!
//! `backlog`: `--gib` GiB of stage files (wide rows, rewritten round after
//! round) staged by strata-reader, then delivered from the earliest batch
//! into a new Postgres destination by strata-writer while the workload goes
//! on; reports the writer's peak RSS (the goal: at most 256 MiB) and the
//! delivery rate against the rate the reader staged the backlog.
//!
//! `pull`: a `bench` table of `--changes` rows staged by a query pull
//! (`[[pull]]`, no replication slot) in strata-reader's own process, timed
//! until the stage holds every row, against `COPY (SELECT * FROM bench
//! ORDER BY <watermark>, id) TO STDOUT` into nothing over one connection,
//! run before and after (the faster counts); reports the reader's peak
//! RSS and checks each key is staged once.
//!
//! `all`: every benchmark above but `snapshot`, `sqs`, `backlog` and `pull`, twice each, at
//! sizes that together take about 15 minutes on the 2-core reference
//! machine.

pub mod all;
pub mod backlog;
pub mod bigtx;
pub mod capture;
pub mod catchup;
pub mod cost;
pub mod e2e;
pub mod latency;
pub mod load;
pub mod pull;
pub mod replay;
pub mod snapshot;
pub mod sqs;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_common::Timestamp;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use tokio_postgres::Client;

use crate::pg::{PgCluster, connect};
use crate::reader::{ServiceProcess, wait_for_slot, write_config};
use crate::writer::checksum;

pub const USAGE: &str = "usage: strata-bench catchup [--changes N] [--record FILE] | snapshot [--gib N] [--workers N] [--record FILE] \
     | sqs [--changes N] [--record FILE] | capture [--changes N] [--record FILE] | load [--changes N] [--record FILE] \
     | bigtx [--changes N] [--record FILE] | e2e [--changes N] [--record FILE] | replay [--changes N] [--record FILE] \
     | latency [--rate TX_PER_S] [--seconds N] [--record FILE] | cost [--changes N] [--rate TX_PER_S] [--record FILE] \
     | backlog [--gib N] [--record FILE] | pull [--changes N] [--record FILE] | all [--record FILE]";

/// The table of `catchup`, `capture`, `load`, `bigtx`, `e2e` and `replay`:
/// bigint key, int, md5 text, timestamptz.
pub const BENCH_DDL: &str = "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz)";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bench {
    Catchup,
    Snapshot,
    Sqs,
    Capture,
    Load,
    Bigtx,
    E2e,
    Replay,
    Latency,
    Cost,
    Backlog,
    Pull,
    All,
}

/// Each benchmark by the word that names it on the command line.
const BENCHES: [(&str, Bench); 13] = [
    ("catchup", Bench::Catchup),
    ("snapshot", Bench::Snapshot),
    ("sqs", Bench::Sqs),
    ("capture", Bench::Capture),
    ("load", Bench::Load),
    ("bigtx", Bench::Bigtx),
    ("e2e", Bench::E2e),
    ("replay", Bench::Replay),
    ("latency", Bench::Latency),
    ("cost", Bench::Cost),
    ("backlog", Bench::Backlog),
    ("pull", Bench::Pull),
    ("all", Bench::All),
];

impl Bench {
    /// The word that names it on the command line.
    pub fn name(self) -> &'static str {
        BENCHES.iter().find(|(_, b)| *b == self).map_or("?", |(n, _)| n)
    }
}

#[derive(Debug, Clone)]
pub struct Args {
    pub bench: Bench,
    /// The workload's changes (rows for `load` and `bigtx`).
    pub changes: u64,
    /// `snapshot`: GiB of heap to stage; `backlog`: GiB of stage files.
    pub gib: f64,
    /// `snapshot`: the reader's snapshot workers, and the reference's COPY streams.
    pub workers: usize,
    /// `latency`: insert transactions per second.
    pub rate: u64,
    /// `latency`: how long the workload runs.
    pub seconds: u64,
    pub record: Option<PathBuf>,
}

impl Args {
    /// `bench` with its default sizes.
    pub fn new(bench: Bench) -> Args {
        let changes = match bench {
            Bench::Sqs => 20_000,
            Bench::Load => 2_000_000,
            Bench::Bigtx => 5_000_000,
            Bench::Cost => 200_000,
            _ => 1_000_000,
        };
        let gib = if bench == Bench::Backlog { 10.0 } else { 5.0 };
        Args { bench, changes, gib, workers: 4, rate: 5000, seconds: 20, record: None }
    }

    /// Parses the command line after the program name.
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args> {
        let word = it.next();
        let Some(&(_, bench)) = BENCHES.iter().find(|(n, _)| Some(*n) == word.as_deref()) else { bail!(USAGE) };
        let mut a = Args::new(bench);
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value; {USAGE}"));
            match flag.as_str() {
                "--record" => a.record = Some(value()?.into()),
                _ if bench == Bench::All => bail!("all takes only --record: it runs every benchmark at its own sizes"),
                "--changes" => a.changes = value()?.parse().context("--changes N")?,
                "--gib" => a.gib = value()?.parse().context("--gib N")?,
                "--workers" => a.workers = value()?.parse().context("--workers N")?,
                "--rate" => a.rate = value()?.parse().context("--rate TX_PER_S")?,
                "--seconds" => a.seconds = value()?.parse().context("--seconds N")?,
                other => bail!("unknown argument {other}; {USAGE}"),
            }
        }
        if a.changes < 2 {
            bail!("--changes must be at least 2");
        }
        if a.gib.is_nan() || a.gib <= 0.0 || a.workers == 0 || a.rate == 0 || a.seconds == 0 {
            bail!("--gib, --workers, --rate and --seconds must be positive");
        }
        Ok(a)
    }
}

/// Runs the benchmark `args` names. Each is boxed: their futures are large.
pub async fn run(args: &Args) -> Result<()> {
    match args.bench {
        Bench::Catchup => Box::pin(catchup::run(args)).await,
        Bench::Snapshot => Box::pin(snapshot::run(args)).await,
        Bench::Sqs => Box::pin(sqs::run(args)).await,
        Bench::Capture => Box::pin(capture::run(args)).await,
        Bench::Load => Box::pin(load::run(args)).await,
        Bench::Bigtx => Box::pin(bigtx::run(args)).await,
        Bench::E2e => Box::pin(e2e::run(args)).await,
        Bench::Replay => Box::pin(replay::run(args)).await,
        Bench::Latency => Box::pin(latency::run(args)).await,
        Bench::Cost => Box::pin(cost::run(args)).await,
        Bench::Backlog => Box::pin(backlog::run(args)).await,
        Bench::Pull => Box::pin(pull::run(args)).await,
        Bench::All => Box::pin(all::run(args)).await,
    }
}

/// Prints `line` and, with `--record`, adds it to the file after the last
/// row of the same benchmark (`| … | {what} | …`), or at the end.
pub fn record(path: Option<&PathBuf>, what: &str, line: &str) -> Result<()> {
    println!("{line}");
    let Some(path) = path else { return Ok(()) };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().collect();
    let marker = format!("| {what} |");
    let at = lines.iter().rposition(|l| l.contains(&marker)).map_or(lines.len(), |i| i + 1);
    lines.insert(at, line);
    std::fs::write(path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Today's date, `YYYY-MM-DD` (UTC), for a result row.
pub fn today() -> String {
    Timestamp::now().to_string().get(..10).unwrap_or("").to_owned()
}

/// The path of a service binary built next to this one
/// (`strata-reader-under-test`, `strata-writer-under-test`).
pub fn service_exe(name: &str) -> Result<PathBuf> {
    Ok(std::env::current_exe().context("locating strata-bench")?.with_file_name(name))
}

/// Reads every `COPY` source (a table, or a query in parentheses) with
/// `COPY … TO STDOUT` over `streams` connections side by side, discarding
/// the data: the read limit a bench compares strata with. Returns
/// (seconds, bytes).
pub async fn copy_to_nothing(url: &str, sources: &[String], streams: usize) -> Result<(f64, u64)> {
    use futures::StreamExt;
    let queue = std::sync::Arc::new(std::sync::Mutex::new(sources.to_vec()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (queue, url) = (queue.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await?;
            let mut bytes = 0u64;
            loop {
                let Some(source) = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop() else { return Ok::<u64, anyhow::Error>(bytes) };
                let out = c.copy_out(&format!("COPY {source} TO STDOUT")).await.with_context(|| format!("starting the reference COPY of {source}"))?;
                futures::pin_mut!(out);
                while let Some(chunk) = out.next().await {
                    bytes += chunk.with_context(|| format!("reading the reference COPY of {source}"))?.len() as u64;
                }
            }
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    Ok((t0.elapsed().as_secs_f64(), bytes))
}

/// Peak resident memory of `process` so far, in MiB.
pub fn peak_rss_mib(process: &ServiceProcess) -> Result<u64> {
    Ok(process.peak_rss_kib().with_context(|| format!("reading the peak RSS of process {}", process.pid()))? / 1024)
}

/// The stage a chaos or many-writers run uses: a bucket of `emulator`'s
/// under prefix `name`, or `dir/stage` on local disk; its config TOML and itself.
pub async fn run_stage(emulator: Option<&crate::emulator::Emulator>, dir: &std::path::Path, name: &str) -> Result<(String, Stage)> {
    match emulator {
        Some(e) => e.stage_config(name).await,
        None => {
            let stage_dir = dir.join("stage");
            Ok((format!("url = {:?}\n", stage_dir.display().to_string()), Stage::local(&stage_dir)?))
        }
    }
}

/// The database name at the end of a connection URL.
pub fn database_of(url: &str) -> Result<&str> {
    url.rsplit('/').next().with_context(|| format!("no database name in {url}"))
}

/// Rows of every staged batch of stream `main`.
pub async fn staged_rows(stage: &Stage) -> Result<u64> {
    StagedRows::new(stage)?.count().await
}

/// Rows staged on a stream (`main` unless named), counted incrementally:
/// manifests never change once committed, so each is read once however
/// often this polls.
pub struct StagedRows {
    log: StreamLog,
    seq: u64,
    rows: u64,
}

impl StagedRows {
    pub fn new(stage: &Stage) -> Result<StagedRows> {
        StagedRows::of_stream(stage, "main")
    }

    /// Rows staged on `stream` (a pull's stream, say).
    pub fn of_stream(stage: &Stage, stream: &str) -> Result<StagedRows> {
        Ok(StagedRows { log: StreamLog::new(stage, stream)?, seq: 0, rows: 0 })
    }

    /// Rows staged up to the current head.
    pub async fn count(&mut self) -> Result<u64> {
        let head = self.log.head(Some(self.seq)).await.context("reading the stream's head")?.unwrap_or(0);
        for seq in self.seq + 1..=head {
            self.rows += self.log.read(seq).await.with_context(|| format!("reading manifest {seq}"))?.counts.rows;
        }
        self.seq = self.seq.max(head);
        Ok(self.rows)
    }
}

/// Waits until the stage holds `rows` staged rows.
pub async fn wait_staged_rows(stage: &Stage, rows: u64, within: Duration) -> Result<()> {
    let started = Instant::now();
    let mut staged = StagedRows::new(stage)?;
    while staged.count().await? < rows {
        if started.elapsed() > within {
            bail!("the reader did not stage the workload within {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Waits until `rows` changes are staged and `destination`'s cursor has
/// reached the stream's head: the destination holds every change.
pub async fn wait_delivered(stage: &Stage, destination: &str, rows: u64, within: Duration) -> Result<()> {
    let log = StreamLog::new(stage, "main")?;
    let cursors = strata_stager::cursor::Cursors::new(stage, destination)?;
    let mut staged = StagedRows::new(stage)?;
    let started = Instant::now();
    loop {
        // Staged rows first: once all are staged the head read after them is final.
        let rows_now = staged.count().await?;
        let head = log.head(None).await.context("reading the stream's head")?.unwrap_or(0);
        let cursor = cursors.load().await.with_context(|| format!("reading the cursor of {destination}"))?.map_or(0, |c| c.value.seq);
        if rows_now >= rows && head > 0 && cursor >= head {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("{destination} did not receive {rows} changes within {} s ({rows_now} staged, cursor {cursor} of {head})", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the reader's initial snapshot of stream `main` is recorded as done.
pub async fn snapshot_done(stage: &Stage) -> Result<bool> {
    let log = StreamLog::new(stage, "main")?;
    Ok(stage
        .get_json::<strata_stager::control::SnapshotState>(&log.keys().snapshot())
        .await
        .context("reading the snapshot state")?
        .is_some_and(|s| s.value.phase == strata_stager::control::Phase::Done))
}

/// Waits until the snapshot is done and `destination` has every staged batch.
pub async fn wait_loaded(stage: &Stage, destination: &str, within: Duration) -> Result<()> {
    let log = StreamLog::new(stage, "main")?;
    let cursors = strata_stager::cursor::Cursors::new(stage, destination)?;
    let started = Instant::now();
    loop {
        let done = snapshot_done(stage).await?;
        let head = log.head(None).await?.unwrap_or(0);
        let cursor = cursors.load().await?.map_or(0, |c| c.value.seq);
        if done && head > 0 && cursor >= head {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("the destination was not loaded within {} s (snapshot done: {done}, cursor {cursor} of {head})", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `rows` inserts, then an update of each, in 10,000-row transactions.
pub async fn catchup_workload(src: &Client, rows: u64) -> Result<()> {
    eprintln!("workload: {rows} inserts then {rows} updates, in 10,000-row transactions");
    let chunk = 10_000u64;
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + chunk - 1).min(rows);
        src.batch_execute(&format!("INSERT INTO bench SELECT g, g % 1000, md5(g::text), now() FROM generate_series({lo}, {hi}) g"))
            .await
            .context("workload insert")?;
        lo = hi + 1;
    }
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + chunk - 1).min(rows);
        src.batch_execute(&format!("UPDATE bench SET a = a + 1, b = b || 'x' WHERE id BETWEEN {lo} AND {hi}")).await.context("workload update")?;
        lo = hi + 1;
    }
    Ok(())
}

/// Publication `native_pub` of `table` on the source, its slot `native_sub`
/// (created now, so every later change waits in it) and subscription
/// `native` on `native`, disabled; `table` must exist on both sides.
/// The slot is made beforehand because source and subscriber share a
/// cluster: CREATE SUBSCRIPTION creating it would wait for itself.
pub async fn native_subscription(cluster: &PgCluster, src: &Client, src_url: &str, native: &Client, table: &str) -> Result<()> {
    src.batch_execute(&format!("CREATE PUBLICATION native_pub FOR TABLE {table}")).await.context("creating the native publication")?;
    // Its own statement: a slot cannot be created in a transaction that wrote.
    src.batch_execute("SELECT pg_create_logical_replication_slot('native_sub', 'pgoutput')").await.context("creating the native slot")?;
    native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port={} dbname={} user={}' PUBLICATION native_pub \
             WITH (create_slot = false, slot_name = 'native_sub', copy_data = false, enabled = false)",
            cluster.port,
            database_of(src_url)?,
            crate::pg::SUPERUSER
        ))
        .await
        .context("creating the native subscription")
}

/// The source's current WAL position, as text.
pub async fn wal_position(src: &Client) -> Result<String> {
    Ok(src.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.context("reading the WAL position")?.get(0))
}

/// Enables the native subscription and times it catching up to WAL
/// position `target`; seconds.
pub async fn native_catch_up(src: &Client, native: &Client, target: &str) -> Result<f64> {
    let t0 = Instant::now();
    native.batch_execute("ALTER SUBSCRIPTION native ENABLE").await?;
    loop {
        let done: bool =
            src.query_one("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'native_sub'", &[&target]).await?.get(0);
        if done {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("native replication did not catch up within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    native.batch_execute("ALTER SUBSCRIPTION native DISABLE").await?;
    Ok(secs)
}

/// Fails unless `public.bench` of strata's destination and of native's
/// equals the source's, by full-row checksum.
pub async fn check_equal(src: &Client, strata_url: &str, native: &Client) -> Result<()> {
    let want = checksum(src, "public.bench").await;
    let got_strata = checksum(&connect(strata_url).await?, "public.bench").await;
    let got_native = checksum(native, "public.bench").await;
    if got_strata != want || got_native != want {
        bail!("destinations differ from the source: strata {got_strata:?}, native {got_native:?}, source {want:?}");
    }
    Ok(())
}

/// A source with table `bench` whose changes wait in strata's slot: the
/// reader (its own process) made its publication and slot, then stopped.
/// `capture`, `replay`, `bigtx` and `e2e` write their workload into it and
/// start the reader again, timed.
pub struct Backlog {
    pub cluster: PgCluster,
    pub src_url: String,
    pub src: Client,
    pub stage: Stage,
    /// The config file of both services.
    pub config: PathBuf,
    /// Holds the stage and the config; removed on drop.
    pub dir: tempfile::TempDir,
}

impl Backlog {
    pub async fn new() -> Result<Backlog> {
        let cluster = PgCluster::start()?;
        let src_url = cluster.fresh_database().await?;
        let src = connect(&src_url).await?;
        src.batch_execute(BENCH_DDL).await.context("creating the source table")?;
        let dir = tempfile::tempdir().context("creating the bench's temp dir")?;
        let stage_dir = dir.path().join("stage");
        let config = write_config(dir.path(), &src_url, &stage_dir, "").context("writing the services' config")?;
        let reader = ServiceProcess::spawn(&service_exe("strata-reader-under-test")?, &config)?;
        wait_for_slot(&src, "strata_main").await?;
        // The slot shows as active while it is being created, before the
        // reader records its (empty) initial snapshot. Stopped before that,
        // the reader would take the snapshot on its next start, copying
        // the rows written meanwhile instead of staging them as changes.
        let stage = Stage::local(&stage_dir)?;
        let started = Instant::now();
        while !snapshot_done(&stage).await? {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the reader did not finish its initial snapshot of an empty table within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reader.terminate().context("stopping the reader after it made its slot")?;
        Ok(Backlog { cluster, src_url, src, stage, config, dir })
    }

    /// Starts the service `exe` names (`strata-reader-under-test`, …) on the config.
    pub fn spawn(&self, exe: &str) -> Result<ServiceProcess> {
        ServiceProcess::spawn(&service_exe(exe)?, &self.config)
    }

    /// Batches on the stream.
    pub async fn batches(&self) -> Result<u64> {
        Ok(StreamLog::new(&self.stage, "main")?.head(None).await.context("reading the stream's head")?.unwrap_or(0))
    }

    /// Starts the reader and times it staging `changes` changes; returns
    /// (seconds, the reader's peak RSS in MiB) and checks the stage holds
    /// exactly `changes` changes, each once.
    pub async fn stage_all(&self, changes: u64) -> Result<(f64, u64)> {
        let t0 = Instant::now();
        let reader = self.spawn("strata-reader-under-test")?;
        wait_staged_rows(&self.stage, changes, Duration::from_secs(1800)).await?;
        let secs = t0.elapsed().as_secs_f64();
        let rss = peak_rss_mib(&reader)?;
        reader.terminate().context("stopping the reader")?;
        let staged = crate::reader::staged_changes(&self.stage, "main").await?.len() as u64;
        if staged != changes {
            bail!("the reader staged {staged} changes of {changes}");
        }
        Ok((secs, rss))
    }

    /// Starts the reader and writer together and times them until
    /// `destination` holds all `changes` changes; returns (seconds, reader
    /// MiB, writer MiB) with the processes' peak RSS.
    pub async fn deliver_all(&self, destination: &str, changes: u64) -> Result<(f64, u64, u64)> {
        let t0 = Instant::now();
        let reader = self.spawn("strata-reader-under-test")?;
        let writer = self.spawn("strata-writer-under-test")?;
        wait_delivered(&self.stage, destination, changes, Duration::from_secs(3600)).await?;
        let secs = t0.elapsed().as_secs_f64();
        let (reader_mib, writer_mib) = (peak_rss_mib(&reader)?, peak_rss_mib(&writer)?);
        writer.terminate().context("stopping the writer")?;
        reader.terminate().context("stopping the reader")?;
        Ok((secs, reader_mib, writer_mib))
    }
}
