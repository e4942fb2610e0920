//! `strata-bench`: benchmarks measured as ratios against a reference in the
//! same run, on this machine.
//!
//! ```text
//! strata-bench catchup [--changes 1000000] [--record bench/RESULTS.md]
//! ```
//!
//! `catchup`: a backlog of changes (half inserts, half updates, in 10,000-row
//! transactions) is staged by strata-reader; then the time for strata-writer
//! to deliver it into an empty Postgres destination is compared with the time
//! PostgreSQL's native logical replication (CREATE SUBSCRIPTION, its slot
//! created before the workload so the same changes are pending) takes to
//! catch up the same changes. Both destinations are checked equal to the
//! source afterwards.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_common::Timestamp;
use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, config_text, wait_for_slot};
use strata_tests::writer::{checksum, spec, wait_caught_up};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

struct Args {
    changes: u64,
    record: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args { changes: 1_000_000, record: None };
    let mut it = std::env::args().skip(1);
    match it.next().as_deref() {
        Some("catchup") => {}
        _ => bail!("usage: strata-bench catchup [--changes N] [--record FILE]"),
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--changes" => a.changes = it.next().context("--changes N")?.parse().context("--changes N")?,
            "--record" => a.record = Some(it.next().context("--record FILE")?.into()),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.changes < 2 {
        bail!("--changes must be at least 2");
    }
    Ok(a)
}

async fn staged_rows(stage: &Stage) -> Result<u64> {
    let log = StreamLog::new(stage, "main")?;
    let mut rows = 0;
    for seq in 1..=log.head(None).await?.unwrap_or(0) {
        rows += log.read(seq).await?.counts.rows;
    }
    Ok(rows)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = args()?;
    let rows = args.changes / 2;
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let strata_url = cluster.fresh_database().await?;
    let native_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    let ddl = "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz)";
    src.batch_execute(ddl).await?;
    src.batch_execute("CREATE PUBLICATION native_pub FOR TABLE bench").await?;
    // Its own statement: a slot cannot be created in a transaction that wrote.
    src.batch_execute("SELECT pg_create_logical_replication_slot('native_sub', 'pgoutput')").await?;
    let native = connect(&native_url).await?;
    native.batch_execute(ddl).await?;
    let src_db = src_url.rsplit('/').next().context("database name")?;
    native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port={} dbname={src_db} user={}' PUBLICATION native_pub \
             WITH (create_slot = false, slot_name = 'native_sub', copy_data = false, enabled = false)",
            cluster.port,
            strata_tests::pg::SUPERUSER
        ))
        .await?;

    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let cfg = Config::from_toml("bench", &config_text(&src_url, &stage_dir, ""), &[])?;
    let reader = RunningReader::start(cfg.clone());
    wait_for_slot(&src, "strata_main").await?;
    eprintln!("workload: {rows} inserts then {rows} updates, in 10,000-row transactions");
    let chunk = 10_000u64;
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + chunk - 1).min(rows);
        src.batch_execute(&format!("INSERT INTO bench SELECT g, g % 1000, md5(g::text), now() FROM generate_series({lo}, {hi}) g")).await?;
        lo = hi + 1;
    }
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + chunk - 1).min(rows);
        src.batch_execute(&format!("UPDATE bench SET a = a + 1, b = b || 'x' WHERE id BETWEEN {lo} AND {hi}")).await?;
        lo = hi + 1;
    }
    let stage = Stage::local(&stage_dir)?;
    let started = Instant::now();
    while staged_rows(&stage).await? < 2 * rows {
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the reader did not stage the workload within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reader.stop().await?;
    let batches = StreamLog::new(&stage, "main")?.head(None).await?.unwrap_or(0);
    eprintln!("staged {} changes in {batches} batches", 2 * rows);

    // strata: stage → Postgres destination.
    let token = CancellationToken::new();
    let t = token.clone();
    let writer_cfg = cfg.clone();
    strata_writer::control::add(&stage, &spec("bench", &strata_url, StartPosition::Earliest, PostgresMode::Mirror)).await?;
    let t0 = Instant::now();
    let writer = tokio::spawn(async move { strata_writer::run::run(&writer_cfg, t).await });
    wait_caught_up(&stage, "bench").await;
    let strata_secs = t0.elapsed().as_secs_f64();
    token.cancel();
    writer.await??;

    // Native logical replication catching up the same changes from its slot.
    let target: String = src.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    let t0 = Instant::now();
    native.batch_execute("ALTER SUBSCRIPTION native ENABLE").await?;
    loop {
        let done: bool = src
            .query_one("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'native_sub'", &[&target])
            .await?
            .get(0);
        if done {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("native replication did not catch up within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let native_secs = t0.elapsed().as_secs_f64();
    native.batch_execute("ALTER SUBSCRIPTION native DISABLE").await?;

    let want = checksum(&src, "public.bench").await;
    let got_strata = checksum(&connect(&strata_url).await?, "public.bench").await;
    let got_native = checksum(&native, "public.bench").await;
    if got_strata != want || got_native != want {
        bail!("destinations differ from the source: strata {got_strata:?}, native {got_native:?}, source {want:?}");
    }
    let changes = 2 * rows;
    let strata_rate = changes as f64 / strata_secs;
    let native_rate = changes as f64 / native_secs;
    let line = format!(
        "| {} | catch-up into Postgres | {changes} changes, {batches} batches | strata {strata_secs:.1} s ({strata_rate:.0}/s) | native CREATE SUBSCRIPTION {native_secs:.1} s ({native_rate:.0}/s) | **{:.2}×** |",
        Timestamp::now().to_string().get(..10).unwrap_or(""),
        strata_rate / native_rate
    );
    println!("{line}");
    if let Some(path) = args.record {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}")?;
    }
    drop(native);
    Ok(())
}
