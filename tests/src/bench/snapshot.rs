//! `snapshot`: strata-reader's initial snapshot into the stage against the
//! read limit of the same tables, parallel `COPY … TO STDOUT` into nothing.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;

use super::{Args, copy_to_nothing, record, staged_rows, today};
use crate::pg::{PgCluster, connect};
use crate::reader::{RunningReader, config_text};

/// `snapshot`: strata's initial snapshot against the COPY read limit.
pub async fn run(args: &Args) -> Result<()> {
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    let tables: Vec<String> = (0..4).map(|i| format!("snap_{i}")).collect();
    let target = (args.gib * 1024.0 * 1024.0 * 1024.0) as i64;
    for t in &tables {
        src.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, k int, a text, b text, amount numeric(12,2), ts timestamptz, flag bool)")).await?;
    }
    let (rows, heap) = fill_tables(&src, &src_url, &tables, target).await?;
    eprintln!("{rows} rows, {:.2} GiB heap", heap as f64 / 1073741824.0);

    let (before_secs, copy_bytes) = copy_to_nothing(&src_url, &tables, args.workers).await?;
    eprintln!("reference COPY TO STDOUT: {before_secs:.1} s");

    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let extra = format!("[snapshot]\nworkers = {}\n", args.workers);
    let cfg = Config::from_toml("bench", &config_text(&src_url, &stage_dir, &extra), &[])?;
    let stage = Stage::local(&stage_dir)?;
    let log = StreamLog::new(&stage, "main")?;
    let t0 = Instant::now();
    let reader = RunningReader::start(cfg);
    loop {
        let state = stage.get_json::<strata_reader::snapshot::SnapshotState>(&log.keys().snapshot()).await?;
        if state.is_some_and(|s| s.value.phase == strata_reader::snapshot::Phase::Done) {
            break;
        }
        if reader.is_finished() {
            bail!("the reader stopped during the snapshot");
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("the snapshot did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let strata_secs = t0.elapsed().as_secs_f64();
    reader.stop().await?;
    let staged = staged_rows(&stage).await?;
    if staged != rows as u64 {
        bail!("the snapshot staged {staged} rows, the tables hold {rows}");
    }
    let stage_bytes: u64 = {
        let mut total = 0;
        for seq in 1..=log.head(None).await?.unwrap_or(0) {
            total += log.read(seq).await?.counts.bytes;
        }
        total
    };
    let (after_secs, _) = copy_to_nothing(&src_url, &tables, args.workers).await?;
    eprintln!("strata snapshot: {strata_secs:.1} s; reference again: {after_secs:.1} s");
    let reference_secs = before_secs.min(after_secs);
    let mb = copy_bytes as f64 / 1e6;
    let line = format!(
        "| {} | snapshot into the stage | {rows} rows, {:.2} GiB heap, {mb:.0} MB COPY text, {} workers | strata {strata_secs:.1} s ({:.0} rows/s, {:.0} MB/s; staged {:.0} MB Parquet) | COPY TO STDOUT ×{} {reference_secs:.1} s ({:.0} rows/s, {:.0} MB/s) | **{:.2}×** |",
        today(),
        heap as f64 / 1073741824.0,
        args.workers,
        rows as f64 / strata_secs,
        mb / strata_secs,
        stage_bytes as f64 / 1e6,
        args.workers,
        rows as f64 / reference_secs,
        mb / reference_secs,
        reference_secs / strata_secs
    );
    record(args.record.as_ref(), "snapshot into the stage", &line)
}

/// Fills `tables` side by side until their heap reaches `target` bytes;
/// returns their rows and heap bytes.
async fn fill_tables(src: &tokio_postgres::Client, src_url: &str, tables: &[String], target: i64) -> Result<(i64, i64)> {
    eprintln!("generating {:.1} GiB of rows in {} tables", target as f64 / 1073741824.0, tables.len());
    let chunk = 500_000i64;
    let mut next = 1i64;
    loop {
        let size: i64 =
            src.query_one(&format!("SELECT {} ", tables.iter().map(|t| format!("pg_relation_size('{t}')")).collect::<Vec<_>>().join(" + ")), &[]).await?.get(0);
        if size >= target {
            break;
        }
        // Fill the tables side by side, one statement per table in parallel.
        let mut fills = Vec::new();
        for t in tables {
            let (url, t) = (src_url.to_owned(), t.clone());
            let (lo, hi) = (next, next + chunk - 1);
            fills.push(tokio::spawn(async move {
                let c = connect(&url).await?;
                c.batch_execute(&format!(
                    "INSERT INTO {t} SELECT g, g % 100000, md5(g::text), md5(g::text) || md5((g * 7)::text), (g % 1000000) / 100.0, \
                     timestamptz '2026-01-01' + g * interval '1 second', g % 3 = 0 FROM generate_series({lo}, {hi}) g"
                ))
                .await?;
                Ok::<(), anyhow::Error>(())
            }));
        }
        for f in fills {
            f.await??;
        }
        next += chunk;
        eprint!("\r{:.2} GiB", size as f64 / 1073741824.0);
    }
    eprintln!();
    src.batch_execute(&format!("VACUUM ANALYZE {}", tables.join(", "))).await?;
    let (rows, heap): (i64, i64) = {
        let r = src
            .query_one(
                &format!(
                    "SELECT ({}), ({})",
                    tables.iter().map(|t| format!("(SELECT count(*) FROM {t})")).collect::<Vec<_>>().join(" + "),
                    tables.iter().map(|t| format!("pg_relation_size('{t}')")).collect::<Vec<_>>().join(" + ")
                ),
                &[],
            )
            .await?;
        (r.get(0), r.get(1))
    };
    Ok((rows, heap))
}
