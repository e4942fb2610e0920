//! `backlog`: a large staged backlog (`--gib` GiB of stage files, wide rows)
//! delivered from the earliest batch into a new Postgres destination while
//! the stream goes on; the figure that matters is the writer's peak RSS
//! (the goal: at most 256 MiB, whatever the backlog's size). The reference
//! is the rate at which strata-reader staged the backlog.
//!
//! The workload keeps `bench` at [`ROWS`] rows of about 4 KiB each (random
//! bytes, base64: Zstandard cannot shrink them much, so the stage's size
//! follows the changes' size) and rewrites them round after round, with a
//! few deletes and inserts per transaction, until the stage holds `--gib`
//! GiB. It waits whenever the slot holds more than [`MAX_RETAINED`] of WAL,
//! so the source's disk holds the backlog once, in the stage, and it
//! vacuums the source, and during delivery the destination, every few
//! seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_postgres::Client;

use super::{Args, Backlog, peak_rss_mib, record, today};
use crate::pg::connect;
use crate::writer::{checksum, spec};

/// Rows the table keeps.
const ROWS: i64 = 100_000;
/// Rows each workload transaction rewrites.
const TX_ROWS: i64 = 2_000;
/// WAL the slot may hold before the workload waits for the reader.
const MAX_RETAINED: i64 = 2 << 30;
/// A row's wide column: 3 KiB of random bytes, base64 (4 KiB of text).
const WIDE: &str = "encode(gen_random_bytes(1024) || gen_random_bytes(1024) || gen_random_bytes(1024), 'base64')";

pub async fn run(args: &Args) -> Result<()> {
    let target = (args.gib * f64::from(1u32 << 30)) as u64;
    let backlog = Backlog::new().await?;
    let src = &backlog.src;
    let stage_dir = backlog.dir.path().join("stage");
    src.batch_execute(&format!("CREATE EXTENSION IF NOT EXISTS pgcrypto; INSERT INTO bench SELECT g, 0, {WIDE}, now() FROM generate_series(1, {ROWS}) g"))
        .await
        .context("loading the table")?;

    // Phase 1: the reader stages the workload until the stage is big enough.
    let t0 = Instant::now();
    let reader = backlog.spawn("strata-reader-under-test")?;
    let mut workload = Workload::new();
    while dir_bytes(&stage_dir)? < target {
        for _ in 0..20 {
            workload.transaction(src).await?;
        }
        slot_within(src, MAX_RETAINED).await?;
        vacuum(src, "the source").await?;
        eprintln!("staged {:.2} GiB", dir_bytes(&stage_dir)? as f64 / f64::from(1u32 << 30));
    }
    slot_within(src, 16 << 20).await?;
    crate::writer::wait_staged(src).await;
    let capture_secs = t0.elapsed().as_secs_f64();
    let (staged_bytes, backlog_head) = (dir_bytes(&stage_dir)?, backlog.batches().await?);
    let backlog_changes = super::staged_rows(&backlog.stage).await?;
    eprintln!("backlog: {backlog_changes} changes in {backlog_head} batches, {staged_bytes} bytes staged in {capture_secs:.0} s");

    // Phase 2: a new destination from the earliest batch, the stream going on.
    let dest_url = backlog.cluster.fresh_database().await?;
    strata_writer::control::add(&backlog.stage, &spec("backlog", &dest_url, StartPosition::Earliest, PostgresMode::Mirror))
        .await
        .context("adding the destination")?;
    let t1 = Instant::now();
    let writer = backlog.spawn("strata-writer-under-test")?;
    let cursors = strata_stager::cursor::Cursors::new(&backlog.stage, "backlog")?;
    let dest = connect(&dest_url).await?;
    for round in 0u64.. {
        let cursor = cursors.load().await.context("reading the destination's cursor")?.map_or(0, |c| c.value.seq);
        if cursor >= backlog_head {
            break;
        }
        if t1.elapsed() > Duration::from_secs(7200) {
            bail!("the destination reached batch {cursor} of the backlog's {backlog_head} in 2 hours");
        }
        // The stream goes on: a small transaction every 100 ms.
        workload.small_transaction(src).await?;
        if round % 50 == 49 {
            vacuum(&dest, "the destination").await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliver_secs = t1.elapsed().as_secs_f64();
    crate::writer::wait_staged(src).await;
    super::wait_delivered(&backlog.stage, "backlog", 0, Duration::from_secs(600)).await?;
    let (reader_mib, writer_mib) = (peak_rss_mib(&reader)?, peak_rss_mib(&writer)?);
    let during = super::staged_rows(&backlog.stage).await? - backlog_changes;
    writer.terminate().context("stopping the writer")?;
    reader.terminate().context("stopping the reader")?;

    let (want, got) = (checksum(src, "public.bench").await, checksum(&dest, "public.bench").await);
    if want != got {
        bail!("the destination differs from the source: {got:?}, source {want:?}");
    }
    let gib = staged_bytes as f64 / f64::from(1u32 << 30);
    let (deliver_rate, capture_rate) = (backlog_changes as f64 / deliver_secs, backlog_changes as f64 / capture_secs);
    let line = format!(
        "| {} | large backlog into Postgres | {gib:.2} GiB staged: {backlog_changes} changes of ~4 KiB rows in {backlog_head} batches; {} changes more during delivery | strata-writer from the earliest batch {deliver_secs:.0} s ({deliver_rate:.0}/s, {:.1} MiB/s; peak RSS writer {writer_mib} MiB, reader {reader_mib} MiB); destination equals the source | strata-reader staging it under the workload {capture_secs:.0} s ({capture_rate:.0}/s) | **{:.2}×** |",
        today(),
        during,
        staged_bytes as f64 / deliver_secs / f64::from(1u32 << 20),
        deliver_rate / capture_rate
    );
    record(args.record.as_ref(), "large backlog into Postgres", &line)
}

/// The workload's position: the first key the next transaction rewrites,
/// and the next new key.
struct Workload {
    next: i64,
    next_id: i64,
}

impl Workload {
    fn new() -> Workload {
        Workload { next: 1, next_id: 1_000_000_000 }
    }

    /// Rewrites the next [`TX_ROWS`] keys and replaces ten rows with new ones.
    async fn transaction(&mut self, src: &Client) -> Result<()> {
        self.rewrite(src, TX_ROWS, 10).await
    }

    /// Rewrites ten keys and replaces one row.
    async fn small_transaction(&mut self, src: &Client) -> Result<()> {
        self.rewrite(src, 10, 1).await
    }

    async fn rewrite(&mut self, src: &Client, rows: i64, replace: i64) -> Result<()> {
        let last = format!("SELECT max(id) FROM (SELECT id FROM bench WHERE id >= $1 ORDER BY id LIMIT {rows}) s");
        let mut hi: Option<i64> = src.query_one(&last, &[&self.next]).await.context("reading the next keys")?.get(0);
        if hi.is_none() {
            // Past the last key: the next round starts over.
            self.next = 1;
            hi = src.query_one(&last, &[&self.next]).await.context("reading the next keys")?.get(0);
        }
        let (lo, hi, id) = (self.next, hi.context("the table is empty")?, self.next_id);
        let sql = format!(
            "BEGIN; \
             UPDATE bench SET a = a + 1, b = {WIDE}, c = now() WHERE id BETWEEN {lo} AND {hi}; \
             DELETE FROM bench WHERE id IN (SELECT id FROM bench WHERE id BETWEEN {lo} AND {hi} ORDER BY id LIMIT {replace}); \
             INSERT INTO bench SELECT g, 0, {WIDE}, now() FROM generate_series({id}, {}) g; \
             COMMIT",
            id + replace - 1
        );
        src.batch_execute(&sql).await.context("a workload transaction")?;
        self.next = hi + 1;
        self.next_id += replace;
        Ok(())
    }
}

/// Vacuums `bench` on `client` (`what` names the database in errors).
/// Rewriting 4 KiB rows at tens of MB/s leaves gigabytes of dead rows
/// between autovacuum's passes, on the source as on the destination,
/// which a 10 GiB run cannot leave on the disk beside the stage.
async fn vacuum(client: &Client, what: &str) -> Result<()> {
    match client.batch_execute("VACUUM bench").await {
        // The writer has not created it yet.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(()),
        other => other.with_context(|| format!("vacuuming {what}")),
    }
}

/// Waits until strata's slot holds at most `bytes` of WAL (the reader has
/// staged all but that much), for at most 30 minutes.
async fn slot_within(src: &Client, bytes: i64) -> Result<()> {
    let started = Instant::now();
    loop {
        let held: Option<i64> = src
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'strata_main'",
                &[],
            )
            .await
            .context("reading the slot's retained WAL")?
            .get(0);
        let held = held.unwrap_or(0);
        if held <= bytes {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the reader still had {held} bytes of WAL to stage after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Bytes of every file under `dir` (a file gone meanwhile counts nothing).
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            // A temporary file of the stage's can go between listing and reading.
            let Ok((entry, meta)) = entry.and_then(|e| e.metadata().map(|m| (e, m))) else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}
