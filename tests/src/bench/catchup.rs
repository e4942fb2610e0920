//! `catchup`: strata-writer delivering a staged backlog into Postgres
//! against native logical replication catching up the same changes.

use std::time::{Duration, Instant};

use anyhow::Result;
use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

use super::{Args, BENCH_DDL, catchup_workload, check_equal, native_catch_up, native_subscription, record, today, wait_staged_rows, wal_position};
use crate::pg::{PgCluster, connect};
use crate::reader::{RunningReader, config_text, wait_for_slot};
use crate::writer::{spec, wait_caught_up};

pub async fn run(args: &Args) -> Result<()> {
    let rows = args.changes / 2;
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let strata_url = cluster.fresh_database().await?;
    let native_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    src.batch_execute(BENCH_DDL).await?;
    let native = connect(&native_url).await?;
    native.batch_execute(BENCH_DDL).await?;
    native_subscription(&cluster, &src, &src_url, &native, "bench").await?;

    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let cfg = Config::from_toml("bench", &config_text(&src_url, &stage_dir, ""), &[])?;
    let reader = RunningReader::start(cfg.clone());
    wait_for_slot(&src, "strata_main").await?;
    catchup_workload(&src, rows).await?;
    let stage = Stage::local(&stage_dir)?;
    wait_staged_rows(&stage, 2 * rows, Duration::from_secs(1800)).await?;
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
    let native_secs = native_catch_up(&src, &native, &wal_position(&src).await?).await?;

    check_equal(&src, &strata_url, &native).await?;
    let changes = 2 * rows;
    let strata_rate = changes as f64 / strata_secs;
    let native_rate = changes as f64 / native_secs;
    let line = format!(
        "| {} | catch-up into Postgres | {changes} changes, {batches} batches | strata {strata_secs:.1} s ({strata_rate:.0}/s) | native CREATE SUBSCRIPTION {native_secs:.1} s ({native_rate:.0}/s) | **{:.2}×** |",
        today(),
        strata_rate / native_rate
    );
    drop(native);
    record(args.record.as_ref(), "catch-up into Postgres", &line)
}
