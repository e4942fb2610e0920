//! `load`: strata's snapshot and writer against native logical
//! replication's initial copy, into empty Postgres tables.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use strata_stager::Stage;
use strata_writer::spec::{PostgresMode, StartPosition};

use super::{Args, BENCH_DDL, check_equal, database_of, peak_rss_mib, record, service_exe, today, wait_loaded};
use crate::pg::{PgCluster, connect};
use crate::reader::{ServiceProcess, write_config};
use crate::writer::spec;

pub async fn run(args: &Args) -> Result<()> {
    let rows = args.changes;
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let (strata_url, native_url) = (cluster.fresh_database().await?, cluster.fresh_database().await?);
    let src = connect(&src_url).await?;
    src.batch_execute(BENCH_DDL).await?;
    eprintln!("loading {rows} rows");
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + 999_999).min(rows);
        src.batch_execute(&format!("INSERT INTO bench SELECT g, g % 1000, md5(g::text), now() FROM generate_series({lo}, {hi}) g")).await?;
        lo = hi + 1;
    }
    src.batch_execute("VACUUM ANALYZE bench").await?;

    // strata: reader and writer processes started together.
    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let config = write_config(dir.path(), &src_url, &stage_dir, "")?;
    let stage = Stage::local(&stage_dir)?;
    strata_writer::control::add(&stage, &spec("load", &strata_url, StartPosition::Earliest, PostgresMode::Mirror)).await?;
    let t0 = Instant::now();
    let reader = ServiceProcess::spawn(&service_exe("strata-reader-under-test")?, &config)?;
    let writer = ServiceProcess::spawn(&service_exe("strata-writer-under-test")?, &config)?;
    wait_loaded(&stage, "load", Duration::from_secs(3600)).await?;
    let strata_secs = t0.elapsed().as_secs_f64();
    let (reader_mib, writer_mib) = (peak_rss_mib(&reader)?, peak_rss_mib(&writer)?);
    writer.terminate()?;
    reader.terminate()?;

    // Native: the initial table copy of a new subscription.
    let native = connect(&native_url).await?;
    native.batch_execute(BENCH_DDL).await?;
    src.batch_execute("CREATE PUBLICATION native_pub FOR TABLE bench").await?;
    let t0 = Instant::now();
    // Source and subscriber share a cluster: the subscription's slot is
    // made beforehand, or CREATE SUBSCRIPTION waits for itself.
    src.batch_execute("SELECT pg_create_logical_replication_slot('native_load', 'pgoutput')").await?;
    native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port={} dbname={} user={}' PUBLICATION native_pub \
             WITH (copy_data = true, create_slot = false, slot_name = 'native_load')",
            cluster.port,
            database_of(&src_url)?,
            crate::pg::SUPERUSER
        ))
        .await?;
    loop {
        let ready: Option<bool> = native.query_one("SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel", &[]).await?.get(0);
        if ready == Some(true) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("the native initial copy did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let native_secs = t0.elapsed().as_secs_f64();

    check_equal(&src, &strata_url, &native).await?;
    native.batch_execute("ALTER SUBSCRIPTION native DISABLE").await?;
    let (strata_rate, native_rate) = (rows as f64 / strata_secs, rows as f64 / native_secs);
    let line = format!(
        "| {} | initial load into Postgres | {rows} rows, one table | strata snapshot + writer {strata_secs:.1} s ({strata_rate:.0} rows/s; peak RSS reader {reader_mib} MiB, writer {writer_mib} MiB) | native initial copy {native_secs:.1} s ({native_rate:.0} rows/s) | **{:.2}×** |",
        today(),
        strata_rate / native_rate
    );
    record(args.record.as_ref(), "initial load into Postgres", &line)
}
