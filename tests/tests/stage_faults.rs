//! The pipeline on a stage whose requests fail: a reader and a writer (the
//! services' own binaries, built with the `faults` feature) run with 5% of
//! their object-store requests failed — errors, timeouts, latency spikes
//! and writes that land but report failure — while a workload commits on
//! the source. Afterwards a mirror equals the source, a history destination
//! holds every staged change exactly once, the log has no gap and verifies
//! clean, and neither service stopped: the log did not fork and nothing
//! stalled past the waits below. Run on a local stage and on the S3
//! emulator. `STRATA_FAULT_RUN_SECS` lengthens the workload for a fault run.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::emulator::Emulator;
use strata_tests::http::get;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::process::free_port;
use strata_tests::reader::{ServiceProcess, config_text_for, wait_for_slot};
use strata_tests::workload::workload;
use strata_tests::writer::{checksum, session, spec, wait_caught_up, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");
const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

/// Injected faults: 5% of requests, every kind.
fn plan(seed: u64) -> String {
    format!("rate=0.05,seed={seed},kinds=error+timeout+latency+lost-ack")
}

/// Faults injected by a service, by kind, from its `/metrics`.
async fn injected(port: u16) -> Vec<(String, u64)> {
    let text = get(port, "/metrics").await;
    text.lines()
        .filter_map(|l| l.strip_prefix("strata_stage_faults_injected_total{kind=\""))
        .map(|rest| {
            let (kind, n) = rest.split_once("\"} ").unwrap();
            (kind.to_owned(), n.trim().parse().unwrap())
        })
        .collect()
}

async fn converges_under_faults(stage_toml: &str, stage: Stage, seed: u64) {
    let started = std::time::Instant::now();
    let cluster = PgCluster::shared();
    let (src_url, mirror_url, history_url) =
        (cluster.fresh_database().await.unwrap(), cluster.fresh_database().await.unwrap(), cluster.fresh_database().await.unwrap());
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE events (id bigint PRIMARY KEY, payload text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, config_text_for(&src_url, stage_toml, "max_rows = 200\n")).unwrap();
    let (reader_port, writer_port) = (free_port(), free_port());
    let spawn = |exe: &str, port: u16, seed: u64| {
        let (listen, faults) = (format!("127.0.0.1:{port}"), plan(seed));
        ServiceProcess::spawn_with(
            Path::new(exe),
            &config,
            std::process::Stdio::null(),
            &[("STRATA_TELEMETRY__LISTEN", &listen), ("STRATA_TEST_STAGE_FAULTS", &faults)],
        )
        .unwrap()
    };
    let mut reader = spawn(READER, reader_port, seed);
    wait_for_slot(&admin, "strata_main").await.unwrap();
    strata_writer::control::add(&stage, &spec("mirror", &mirror_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    strata_writer::control::add(&stage, &spec("history", &history_url, StartPosition::Earliest, PostgresMode::History)).await.unwrap();
    let mut writer = spawn(WRITER, writer_port, seed + 1);

    let secs = std::env::var("STRATA_FAULT_RUN_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let (stop, committed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let load = tokio::spawn(workload(src_url.clone(), stop.clone(), committed.clone(), seed));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    wait_staged(&admin).await;
    wait_caught_up(&stage, "mirror").await;
    wait_caught_up(&stage, "history").await;

    let (by_reader, by_writer) = (injected(reader_port).await, injected(writer_port).await);
    assert!(reader.try_wait().unwrap().is_none() && writer.try_wait().unwrap().is_none(), "neither service stopped under faults");
    assert!(writer.terminate().unwrap().success() && reader.terminate().unwrap().success());
    let total = |v: &[(String, u64)]| v.iter().map(|(_, n)| n).sum::<u64>();
    assert!(total(&by_reader) >= 10 && total(&by_writer) >= 10, "faults were injected: reader {by_reader:?}, writer {by_writer:?}");
    for kind in ["error", "timeout", "latency", "lost-ack"] {
        let n: u64 = by_reader.iter().chain(&by_writer).filter(|(k, _)| k == kind).map(|(_, n)| n).sum();
        assert!(n > 0, "some {kind} faults: reader {by_reader:?}, writer {by_writer:?}");
    }

    let src = session(&src_url).await;
    assert_eq!(checksum(&session(&mirror_url).await, "public.events").await, checksum(&src, "public.events").await, "the mirror equals the source");
    let log = StreamLog::new(&stage, "main").unwrap();
    let head = log.head(None).await.unwrap().unwrap();
    assert_eq!(log.list_seqs().await.unwrap(), (1..=head).collect::<Vec<_>>(), "the log has no gap");
    let report = strata_stager::verify::verify_stream(&log).await.unwrap();
    assert!(report.is_ok(), "the stage verifies clean: {:?}", report.problems);
    let mut staged = 0;
    for seq in 1..=head {
        staged += log.read(seq).await.unwrap().counts.rows;
    }
    let history = session(&history_url).await;
    let rows: i64 = history.query_one("SELECT count(*) FROM public.events", &[]).await.unwrap().get(0);
    let distinct: i64 = history.query_one("SELECT count(*) FROM (SELECT DISTINCT _strata_lsn, _strata_ord FROM public.events) d", &[]).await.unwrap().get(0);
    assert_eq!((rows as u64, distinct as u64), (staged, staged), "every staged change is in the history exactly once");
    assert_eq!(staged, committed.load(Ordering::SeqCst), "every committed change was staged once");
    // The run's figures, for bench/RESULTS.md (shown with --no-capture).
    eprintln!(
        "fault run: stage {}, seed {seed}, {secs} s of workload, {staged} changes in {head} batches, {} s in all; injected: reader {by_reader:?}, writer {by_writer:?}",
        stage.url(),
        started.elapsed().as_secs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_stage_with_five_percent_faults_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    converges_under_faults(&format!("url = {:?}\n", stage_dir.display().to_string()), Stage::local(&stage_dir).unwrap(), 11).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_stage_with_five_percent_faults_loses_and_duplicates_nothing() {
    let emulator = Emulator::start().await.unwrap();
    let (toml, stage) = emulator.stage_config("faults").await.unwrap();
    converges_under_faults(&toml, stage, 23).await;
}
