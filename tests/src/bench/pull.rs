//! `pull`: a query pull (`[[pull]]`, the read strategy without a
//! replication slot) staging a table into the stage, against the server
//! reading the same rows in the same order, `COPY (SELECT * FROM bench
//! ORDER BY <watermark>, id) TO STDOUT` into nothing over one connection.
//!
//! Both sides pay the server's scan in `(watermark, key)` order and the
//! transfer of COPY text. strata also pays a query per page (each page
//! starts strictly after the last row of the one before), parsing every
//! value, Parquet encoding and a stage commit per page; the reference
//! discards the bytes as they arrive. The reference runs before and after
//! the pull (the faster counts). The pull runs in strata-reader's own
//! process with a config holding only the pull (no `[source]`: no slot),
//! timed from its start until the stage holds every row; the stage is then
//! checked to hold each key exactly once.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_common::Value;
use strata_stager::Stage;
use strata_stager::log::StreamLog;

use super::{Args, BENCH_DDL, StagedRows, copy_to_nothing, peak_rss_mib, record, service_exe, today};
use crate::pg::{PgCluster, connect};
use crate::reader::ServiceProcess;

/// The pull's stream.
const STREAM: &str = "bench_pull";
/// The pull's watermark and key: `id` only grows, and its primary key
/// index serves the page order, as an index on `(updated_at, id)` would
/// for a timestamp watermark.
const ORDER: &str = "id";
/// What the result rows are recorded under.
const WHAT: &str = "query pull into the stage";

pub async fn run(args: &Args) -> Result<()> {
    let rows = args.changes;
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    eprintln!("loading {rows} rows into bench");
    src.batch_execute(&format!("{BENCH_DDL}; INSERT INTO bench SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, {rows}) g"))
        .await
        .context("loading the source table")?;
    // Its own statement: VACUUM cannot run inside the load's transaction.
    src.batch_execute("VACUUM ANALYZE bench").await.context("vacuuming the source table")?;

    let (before_secs, copy_bytes) = copy_to_nothing(&src_url, &[reference_query()], 1).await?;
    eprintln!("reference COPY TO STDOUT: {before_secs:.1} s");

    let dir = tempfile::tempdir().context("creating the bench's temp dir")?;
    let stage_dir = dir.path().join("stage");
    let config = dir.path().join("strata.toml");
    let text = format!(
        "[telemetry]\nlisten = \"127.0.0.1:0\"\n[stage]\nurl = {:?}\n\
         [[pull]]\nname = {STREAM:?}\nurl = {src_url:?}\ntable = \"public.bench\"\nkey = [{ORDER:?}]\nwatermark = {ORDER:?}\nschedule = \"continuous\"\n",
        stage_dir.display().to_string()
    );
    std::fs::write(&config, text).context("writing the reader's config")?;
    let stage = Stage::local(&stage_dir)?;
    let t0 = Instant::now();
    let mut reader = ServiceProcess::spawn(&service_exe("strata-reader-under-test")?, &config)?;
    wait_pulled(&stage, &mut reader, rows).await?;
    let strata_secs = t0.elapsed().as_secs_f64();
    let rss = peak_rss_mib(&reader)?;
    reader.terminate().context("stopping the reader")?;
    let (batches, parquet_bytes) = check_each_key_once(&stage, rows).await?;

    let (after_secs, _) = copy_to_nothing(&src_url, &[reference_query()], 1).await?;
    eprintln!("strata pull: {strata_secs:.1} s; reference again: {after_secs:.1} s");
    let reference_secs = before_secs.min(after_secs);
    let mb = copy_bytes as f64 / 1e6;
    let line = format!(
        "| {} | {WHAT} | {rows} rows of bench ({mb:.0} MB COPY text), watermark and key `{ORDER}`, default pages | strata-reader {strata_secs:.1} s ({:.0} rows/s; {batches} batches, {:.0} MB Parquet; peak RSS {rss} MiB); each key staged once | COPY (SELECT * FROM bench ORDER BY {ORDER}, id) TO STDOUT, one connection, {reference_secs:.1} s ({:.0} rows/s, {:.0} MB/s) | **{:.2}×** |",
        today(),
        rows as f64 / strata_secs,
        parquet_bytes as f64 / 1e6,
        rows as f64 / reference_secs,
        mb / reference_secs,
        reference_secs / strata_secs
    );
    record(args.record.as_ref(), WHAT, &line)
}

/// Waits until the pull's stream holds `rows` rows, polling every 200 ms,
/// for at most 30 minutes; fails if the reader exits first.
async fn wait_pulled(stage: &Stage, reader: &mut ServiceProcess, rows: u64) -> Result<()> {
    let started = Instant::now();
    let mut staged = StagedRows::of_stream(stage, STREAM)?;
    loop {
        let now = staged.count().await?;
        if now >= rows {
            return Ok(());
        }
        if let Some(status) = reader.try_wait()? {
            bail!("the reader exited ({status}) after staging {now} of {rows} rows");
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the pull staged {now} of {rows} rows in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fails unless the pull's stream holds exactly the keys `1..=rows`, each
/// once; returns its batches and bytes of Parquet.
async fn check_each_key_once(stage: &Stage, rows: u64) -> Result<(u64, u64)> {
    let log = StreamLog::new(stage, STREAM)?;
    let head = log.head(None).await.context("reading the stream's head")?.unwrap_or(0);
    let mut seen = vec![false; usize::try_from(rows)? + 1];
    let (mut staged, mut bytes) = (0u64, 0u64);
    for seq in 1..=head {
        let manifest = log.read(seq).await.with_context(|| format!("reading manifest {seq}"))?;
        bytes += manifest.counts.bytes;
        for f in &manifest.files {
            for c in log.read_file(f).await.with_context(|| format!("reading a file of batch {seq}"))?.changes {
                let id = match c.after.as_ref().map(|row| &row[0]) {
                    Some(Value::Int64(id)) => *id,
                    other => bail!("batch {seq} holds a row without a bigint key: {other:?}"),
                };
                let slot = usize::try_from(id).ok().and_then(|i| seen.get_mut(i)).filter(|_| id >= 1);
                match slot {
                    Some(s) if !*s => *s = true,
                    Some(_) => bail!("key {id} staged twice"),
                    None => bail!("key {id} is not in the table"),
                }
                staged += 1;
            }
        }
    }
    if staged != rows {
        bail!("the pull staged {staged} rows of {rows}");
    }
    Ok((head, bytes))
}

/// The reference: what the pull reads, in its order, as one `COPY` source.
fn reference_query() -> String {
    format!("(SELECT * FROM bench ORDER BY {ORDER}, id)")
}
