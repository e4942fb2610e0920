//! `e2e`: a WAL backlog delivered end to end into Postgres — strata-reader
//! and strata-writer started together — against native logical replication
//! catching up the same changes.

use anyhow::{Context, Result};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_postgres::Client;

use super::{Args, BENCH_DDL, Backlog, catchup_workload, check_equal, native_catch_up, native_subscription, record, today, wal_position};
use crate::pg::connect;
use crate::writer::spec;

pub async fn run(args: &Args) -> Result<()> {
    let rows = args.changes / 2;
    let changes = 2 * rows;
    let m = end_to_end("e2e", changes, async |src: &Client| catchup_workload(src, rows).await).await?;
    let line = format!(
        "| {} | end to end from a WAL backlog | {changes} changes (inserts then updates, 10,000-row transactions), {} batches | {} | {} | **{:.2}×** |",
        today(),
        m.batches,
        m.strata(changes, "/s"),
        m.native(changes, "/s"),
        m.native_secs / m.strata_secs
    );
    record(args.record.as_ref(), "end to end from a WAL backlog", &line)
}

/// What [`end_to_end`] measured.
pub struct EndToEnd {
    pub strata_secs: f64,
    pub reader_mib: u64,
    pub writer_mib: u64,
    pub native_secs: f64,
    /// Batches the reader staged.
    pub batches: u64,
}

impl EndToEnd {
    /// The strata column: time, rate (`unit` after the number) and both processes' peak RSS.
    pub fn strata(&self, changes: u64, unit: &str) -> String {
        format!(
            "strata-reader + strata-writer {:.1} s ({:.0}{unit}; peak RSS reader {} MiB, writer {} MiB)",
            self.strata_secs,
            changes as f64 / self.strata_secs,
            self.reader_mib,
            self.writer_mib
        )
    }

    /// The reference column.
    pub fn native(&self, changes: u64, unit: &str) -> String {
        format!("native CREATE SUBSCRIPTION {:.1} s ({:.0}{unit})", self.native_secs, changes as f64 / self.native_secs)
    }
}

/// Leaves the changes `workload` writes into table `bench` pending in
/// strata's slot and in a native subscription's (both made before it);
/// times strata-reader and strata-writer (processes started together)
/// delivering all `changes` of them into an empty Postgres mirror, then the
/// native subscription catching up to the WAL position the workload ended
/// at; checks both destinations equal the source.
pub async fn end_to_end(destination: &str, changes: u64, workload: impl AsyncFnOnce(&Client) -> Result<()>) -> Result<EndToEnd> {
    let backlog = Backlog::new().await?;
    let src = &backlog.src;
    let strata_url = backlog.cluster.fresh_database().await?;
    let native_url = backlog.cluster.fresh_database().await?;
    let native = connect(&native_url).await?;
    native.batch_execute(BENCH_DDL).await.context("creating the native destination's table")?;
    native_subscription(&backlog.cluster, src, &backlog.src_url, &native, "bench").await?;
    workload(src).await?;
    let target = wal_position(src).await?;

    strata_writer::control::add(&backlog.stage, &spec(destination, &strata_url, StartPosition::Earliest, PostgresMode::Mirror))
        .await
        .context("adding strata's destination")?;
    let (strata_secs, reader_mib, writer_mib) = backlog.deliver_all(destination, changes).await?;
    let batches = backlog.batches().await?;
    eprintln!("strata delivered {changes} changes ({batches} batches) in {strata_secs:.1} s");

    let native_secs = native_catch_up(src, &native, &target).await?;
    check_equal(src, &strata_url, &native).await?;
    Ok(EndToEnd { strata_secs, reader_mib, writer_mib, native_secs, batches })
}
