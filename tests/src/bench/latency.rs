//! `latency`: a steady rate of single-row insert transactions delivered into
//! Postgres by strata-reader and strata-writer, then (a second phase, its
//! own source and destination databases, the same workload) by a native
//! subscription.
//!
//! A row's latency is the time it arrived at the destination minus the
//! commit time of its source transaction. Source and destination share a
//! cluster, so one clock. The source's commit time is
//! `pg_xact_commit_timestamp(xmin)` (the cluster runs with
//! `track_commit_timestamp`). The arrival is `clock_timestamp()` recorded
//! into a table `arrivals` by a deferred constraint trigger on the
//! destination table, which fires as the destination transaction commits,
//! when its rows become visible. (The destination's own commit timestamps
//! cannot serve: native apply records the origin's commit time as the
//! applied transaction's.) The trigger is `ENABLE ALWAYS`, so it fires
//! under native apply too; strata's writer mirrors columns and leaves
//! triggers and other tables alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_postgres::Client;

use super::{Args, native_subscription, peak_rss_mib, record, today};
use crate::pg::{ClusterOptions, PgCluster, connect};
use crate::reader::{ServiceProcess, wait_for_slot, write_config};
use crate::writer::{checksum, spec};

/// The workload's table: each row carries the time it was inserted.
pub(super) const TICKS_DDL: &str = "CREATE TABLE public.ticks (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// The destination's record of arrivals and the trigger that fills it, for
/// a `ticks` table that exists. Names are schema-qualified: native apply
/// runs triggers with an empty `search_path`, and in strata's destination
/// the default one starts with the schema `strata` (the writer's own,
/// named like the user).
const ARRIVALS_DDL: &str = "CREATE TABLE public.arrivals (id bigint PRIMARY KEY, at timestamptz NOT NULL);
    CREATE FUNCTION public.note_arrival() RETURNS trigger LANGUAGE plpgsql AS
      $$ BEGIN INSERT INTO public.arrivals VALUES (NEW.id, pg_catalog.clock_timestamp()) ON CONFLICT DO NOTHING; RETURN NULL; END $$;
    CREATE CONSTRAINT TRIGGER note_arrival AFTER INSERT ON public.ticks DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.note_arrival();
    ALTER TABLE public.ticks ENABLE ALWAYS TRIGGER note_arrival;";

/// Connections the workload spreads its transactions over: one connection
/// waits for each commit, so one alone cannot reach thousands a second.
const CONNECTIONS: u64 = 8;

/// What one phase measured.
struct Phase {
    /// Rows of the timed workload.
    rows: u64,
    /// Transactions committed per second.
    achieved: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub async fn run(args: &Args) -> Result<()> {
    let cluster = PgCluster::start_with(ClusterOptions { conf: "track_commit_timestamp = on\n".to_owned(), ..Default::default() })?;
    let (strata, reader_mib, writer_mib) = strata_phase(&cluster, args).await?;
    let native = native_phase(&cluster, args).await?;
    let line = format!(
        "| {} | latency into Postgres | single-row insert transactions at {}/s for {} s (achieved: strata phase {:.0}/s, native phase {:.0}/s) | strata p50 {:.1} ms, p99 {:.1} ms ({} rows; peak RSS reader {reader_mib} MiB, writer {writer_mib} MiB) | native subscription p50 {:.1} ms, p99 {:.1} ms ({} rows) | **{:.3}×** |",
        today(),
        args.rate,
        args.seconds,
        strata.achieved,
        native.achieved,
        strata.p50_ms,
        strata.p99_ms,
        strata.rows,
        native.p50_ms,
        native.p99_ms,
        native.rows,
        native.p50_ms / strata.p50_ms
    );
    record(args.record.as_ref(), "latency into Postgres", &line)
}

/// strata-reader and strata-writer (processes) into a Postgres mirror;
/// returns the phase and their peak RSS in MiB.
async fn strata_phase(cluster: &PgCluster, args: &Args) -> Result<(Phase, u64, u64)> {
    let (src_url, dst_url) = (cluster.fresh_database().await?, cluster.fresh_database().await?);
    let (src, dst) = (connect(&src_url).await?, connect(&dst_url).await?);
    src.batch_execute(TICKS_DDL).await.context("creating the source table")?;
    let dir = tempfile::tempdir().context("creating the bench's temp dir")?;
    let stage_dir = dir.path().join("stage");
    let config = write_config(dir.path(), &src_url, &stage_dir, "").context("writing the services' config")?;
    let stage = strata_stager::Stage::local(&stage_dir)?;
    strata_writer::control::add(&stage, &spec("latency", &dst_url, StartPosition::Earliest, PostgresMode::Mirror))
        .await
        .context("adding strata's destination")?;
    let reader = ServiceProcess::spawn(&super::service_exe("strata-reader-under-test")?, &config)?;
    let writer = ServiceProcess::spawn(&super::service_exe("strata-writer-under-test")?, &config)?;
    wait_for_slot(&src, "strata_main").await?;
    let phase = measure(&src, &src_url, &dst, args).await?;
    let (reader_mib, writer_mib) = (peak_rss_mib(&reader)?, peak_rss_mib(&writer)?);
    writer.terminate().context("stopping the writer")?;
    reader.terminate().context("stopping the reader")?;
    Ok((phase, reader_mib, writer_mib))
}

/// A native subscription into a table made beforehand.
async fn native_phase(cluster: &PgCluster, args: &Args) -> Result<Phase> {
    let (src_url, dst_url) = (cluster.fresh_database().await?, cluster.fresh_database().await?);
    let (src, dst) = (connect(&src_url).await?, connect(&dst_url).await?);
    src.batch_execute(TICKS_DDL).await.context("creating the source table")?;
    dst.batch_execute(TICKS_DDL).await.context("creating the native destination's table")?;
    dst.batch_execute(ARRIVALS_DDL).await.context("installing the arrivals trigger")?;
    native_subscription(cluster, &src, &src_url, &dst, "public.ticks").await?;
    dst.batch_execute("ALTER SUBSCRIPTION native ENABLE").await.context("enabling the native subscription")?;
    let phase = measure(&src, &src_url, &dst, args).await?;
    dst.batch_execute("ALTER SUBSCRIPTION native DISABLE").await.context("disabling the native subscription")?;
    Ok(phase)
}

/// Delivers a first row (so the pipeline is up and the destination table
/// exists; the arrivals trigger is installed then if it is not yet), runs
/// the timed workload, waits until every row arrived, checks the
/// destination equals the source and computes the latencies.
async fn measure(src: &Client, src_url: &str, dst: &Client, args: &Args) -> Result<Phase> {
    src.batch_execute("INSERT INTO public.ticks (id) VALUES (0)").await.context("inserting the warm-up row")?;
    wait_arrived(dst, 1, Duration::from_secs(60)).await.context("waiting for the warm-up row")?;
    let installed: bool = dst.query_one("SELECT to_regclass('public.arrivals') IS NOT NULL", &[]).await.context("looking for the arrivals table")?.get(0);
    if !installed {
        dst.batch_execute(ARRIVALS_DDL).await.context("installing the arrivals trigger")?;
    }
    eprintln!("workload: {} single-row insert transactions a second for {} s", args.rate, args.seconds);
    let (rows, secs) = steady_workload(src_url, args.rate, args.seconds).await?;
    wait_arrived(dst, rows + 1, Duration::from_secs(120)).await?;
    let (want, got) = (checksum(src, "public.ticks").await, checksum(dst, "public.ticks").await);
    if got != want {
        bail!("the destination differs from the source: {got:?}, source {want:?}");
    }
    let mut latencies = latencies_ms(src, dst).await?;
    latencies.sort_by(f64::total_cmp);
    Ok(Phase { rows, achieved: rows as f64 / secs, p50_ms: percentile(&latencies, 0.50), p99_ms: percentile(&latencies, 0.99) })
}

/// Inserts one row per transaction at `rate` a second for `seconds`, over
/// [`CONNECTIONS`] connections each paced by its own interval (a late
/// connection catches up in a burst); returns (rows, seconds taken). Ids
/// run from 1.
pub(super) async fn steady_workload(url: &str, rate: u64, seconds: u64) -> Result<(u64, f64)> {
    let connections = CONNECTIONS.min(rate);
    let mut clients = Vec::new();
    for _ in 0..connections {
        let c = connect(url).await?;
        let insert = c.prepare("INSERT INTO public.ticks (id) VALUES ($1)").await.context("preparing the workload's insert")?;
        clients.push((c, insert));
    }
    let period = Duration::from_secs_f64(connections as f64 / rate as f64);
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (j, (c, insert)) in (0..connections).zip(clients) {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut sent = 0u64;
            loop {
                tick.tick().await;
                if Instant::now() >= until {
                    return Ok::<u64, anyhow::Error>(sent);
                }
                let id = i64::try_from(1 + j + sent * connections).context("row id")?;
                c.execute(&insert, &[&id]).await.with_context(|| format!("inserting row {id}"))?;
                sent += 1;
            }
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await.context("a workload connection's task panicked")??;
    }
    Ok((rows, t0.elapsed().as_secs_f64()))
}

/// Waits until the destination's `ticks` holds `rows` rows (it may not
/// exist yet: strata's writer creates it with the first batch).
pub(super) async fn wait_arrived(dst: &Client, rows: u64, within: Duration) -> Result<()> {
    let started = Instant::now();
    let mut held = 0;
    loop {
        let exists: bool = dst.query_one("SELECT to_regclass('public.ticks') IS NOT NULL", &[]).await.context("looking for the destination table")?.get(0);
        if exists {
            let n: i64 = dst.query_one("SELECT count(*) FROM public.ticks", &[]).await.context("counting the destination's rows")?.get(0);
            held = n as u64;
            if held >= rows {
                return Ok(());
            }
        }
        if started.elapsed() > within {
            bail!("the destination holds {held} rows of {rows} after {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each timed row's arrival at the destination minus its source commit
/// time, in milliseconds.
async fn latencies_ms(src: &Client, dst: &Client) -> Result<Vec<f64>> {
    let sent = micros_by_id(src, SOURCE_COMMITS).await.context("reading the source's commit times")?;
    let arrived = micros_by_id(dst, ARRIVALS).await.context("reading the arrivals")?;
    if arrived.len() != sent.len() {
        bail!("{} timed rows arrived of {}", arrived.len(), sent.len());
    }
    sent.iter()
        .map(|(id, at)| {
            let got = arrived.get(id).with_context(|| format!("row {id} has no arrival"))?;
            Ok((got - at) as f64 / 1000.0)
        })
        .collect()
}

/// The commit time of each timed row's source transaction.
const SOURCE_COMMITS: &str = "SELECT id, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint FROM public.ticks WHERE id > 0";
/// The arrival time of each timed row at the destination.
const ARRIVALS: &str = "SELECT id, (extract(epoch FROM at) * 1000000)::bigint FROM public.arrivals WHERE id > 0";

/// (id, µs since the epoch) pairs `query` returns, by id.
async fn micros_by_id(c: &Client, query: &str) -> Result<HashMap<i64, i64>> {
    let rows = c.query(query, &[]).await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let at: Option<i64> = r.get(1);
            Ok((id, at.with_context(|| format!("no time for row {id}"))?))
        })
        .collect()
}

/// The value at fraction `p` of `sorted` (nearest rank); NaN when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
