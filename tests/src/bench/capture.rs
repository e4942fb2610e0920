//! `capture`: strata-reader staging a WAL backlog against `pg_recvlogical`
//! draining the same backlog from a slot of its own.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{Args, Backlog, catchup_workload, database_of, record, today, wal_position};
use crate::pg::PgCluster;

pub async fn run(args: &Args) -> Result<()> {
    let rows = args.changes / 2;
    // The reader creates its publication and slot, then stops: the backlog
    // waits in its slot, and in pg_recvlogical's, created at the same point.
    let backlog = Backlog::new().await?;
    let src = &backlog.src;
    src.batch_execute("SELECT pg_create_logical_replication_slot('recv', 'pgoutput')").await.context("creating slot recv")?;
    catchup_workload(src, rows).await?;
    let target = wal_position(src).await?;
    let changes = 2 * rows;

    let (strata_secs, reader_rss_mib) = backlog.stage_all(changes).await?;

    let recv_secs = recvlogical(&backlog.cluster, &backlog.src_url, &target).await?;
    let confirmed: bool =
        src.query_one("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'recv'", &[&target]).await?.get(0);
    if !confirmed {
        bail!("pg_recvlogical stopped before {target}");
    }
    let (strata_rate, recv_rate) = (changes as f64 / strata_secs, changes as f64 / recv_secs);
    let line = format!(
        "| {} | capture | {changes} changes (inserts then updates, 10,000-row transactions) | strata-reader {strata_secs:.1} s ({strata_rate:.0}/s; peak RSS {reader_rss_mib} MiB) | pg_recvlogical to /dev/null {recv_secs:.1} s ({recv_rate:.0}/s) | **{:.2}×** |",
        today(),
        strata_rate / recv_rate
    );
    record(args.record.as_ref(), "capture", &line)
}

/// Runs `pg_recvlogical` on slot `recv` until `target`, output to
/// /dev/null; seconds.
async fn recvlogical(cluster: &PgCluster, src_url: &str, target: &str) -> Result<f64> {
    let conninfo = format!("host=127.0.0.1 port={} dbname={} user={}", cluster.port, database_of(src_url)?, crate::pg::SUPERUSER);
    let t0 = Instant::now();
    let status = tokio::process::Command::new(cluster.program("pg_recvlogical"))
        .args(["--dbname", &conninfo, "--slot", "recv", "--start", "--no-loop", "--file", "/dev/null", "--endpos", target])
        .args(["--option", "proto_version=1", "--option", "publication_names=strata_main"])
        .status()
        .await
        .context("running pg_recvlogical")?;
    if !status.success() {
        bail!("pg_recvlogical exited with {status}");
    }
    Ok(t0.elapsed().as_secs_f64())
}
