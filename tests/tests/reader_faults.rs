//! strata-reader under faults: killed with SIGKILL at random points,
//! PostgreSQL restarted under it, a transaction far larger than its memory,
//! a slot of the configured name in another database,
//! and a second reader on the same stream. In every case the stage ends up
//! holding each committed change exactly once.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::{Duration, Instant};

use strata_common::{Op, Value};
use strata_stager::Stage;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config, staged_changes, wait_for_changes, wait_for_slot, write_config};
use strata_tests::workload::{Rng, workload};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");

/// Checks the stage holds exactly the committed inserts, once each.
async fn assert_exactly_once(stage: &Stage, ids: &[i64], changes: u64) {
    let staged = wait_for_changes(stage, "main", changes as usize).await.unwrap();
    assert_eq!(staged.len() as u64, changes, "no change lost or duplicated");
    let mut inserted: HashMap<i64, usize> = HashMap::new();
    for (_, _, c) in &staged {
        if c.op == Op::Insert
            && let Some(Value::Int64(id)) = c.after.as_ref().map(|r| &r[0])
        {
            *inserted.entry(*id).or_default() += 1;
        }
    }
    assert_eq!(inserted.len(), ids.len(), "every committed insert is staged");
    assert!(inserted.values().all(|n| *n == 1), "no insert staged twice");
    assert!(ids.iter().all(|id| inserted.contains_key(id)));
    let report = strata_stager::verify::verify_stream(&strata_stager::log::StreamLog::new(stage, "main").unwrap()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_twenty_times_during_a_workload_loses_and_duplicates_nothing() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let admin = connect(&url).await.unwrap();
    admin.batch_execute("CREATE TABLE events (id bigint PRIMARY KEY, payload text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let cfg = write_config(dir.path(), &url, &stage_dir, "max_rows = 200\n").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let mut rng = Rng(0x5eed_1234);
    let mut reader = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let load = tokio::spawn(workload(url.clone(), stop.clone(), committed.clone(), 42));
    let stage = Stage::local(&stage_dir).unwrap();
    let log = strata_stager::log::StreamLog::new(&stage, "main").unwrap();
    for round in 0..20 {
        // Kill only a reader that is streaming: wait until it has committed
        // a batch of its own, then let it run a random while longer.
        let before = log.head(None).await.unwrap().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while log.head(Some(before)).await.unwrap().unwrap_or(0) <= before {
            assert!(Instant::now() < deadline, "round {round}: the restarted reader staged nothing within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(700))).await;
        reader.kill9().unwrap();
        // Sometimes restart at once, sometimes after the workload ran on alone.
        if round % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(800))).await;
        }
        reader = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let ids = load.await.unwrap();
    assert_exactly_once(&stage, &ids, committed.load(Ordering::SeqCst)).await;
    let status = reader.terminate().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status}");
    assert!(ids.len() > 500, "the workload ran throughout ({} rows)", ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarting_mid_stream_loses_nothing() {
    // A cluster of our own: restarting the shared one would disturb other tests.
    let cluster = PgCluster::start().unwrap();
    let url = cluster.fresh_database().await.unwrap();
    let admin = connect(&url).await.unwrap();
    admin.batch_execute("CREATE TABLE events (id bigint PRIMARY KEY, payload text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(config(&url, dir.path(), ""));
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(workload(url.clone(), stop.clone(), committed.clone(), 7));
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.restart().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let ids = load.await.unwrap();
    assert_exactly_once(&Stage::local(dir.path()).unwrap(), &ids, committed.load(Ordering::SeqCst)).await;
    assert!(!reader.is_finished(), "the reader reconnected rather than exiting");
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_million_row_transaction_stays_within_memory() {
    const ROWS: i64 = 2_000_000;
    const LIMIT_KIB: u64 = 256 * 1024;
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let admin = connect(&url).await.unwrap();
    admin.batch_execute("CREATE TABLE big (id bigint PRIMARY KEY, payload text, n int)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let cfg = write_config(dir.path(), &url, &stage_dir, "").unwrap();
    let mut reader = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin.batch_execute("INSERT INTO big VALUES (0, 'before', 0)").await.unwrap();
    let started = Instant::now();
    admin.batch_execute(&format!("INSERT INTO big SELECT g, md5(g::text), g % 1000 FROM generate_series(1, {ROWS}) g")).await.unwrap();
    admin.batch_execute("INSERT INTO big VALUES (-1, 'after', 0)").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let log = strata_stager::log::StreamLog::new(&stage, "main").unwrap();
    let mut peak = 0;
    let total = ROWS as u64 + 2;
    loop {
        peak = peak.max(reader.peak_rss_kib().unwrap());
        if let Some(status) = reader.try_wait().unwrap() {
            panic!("the reader exited with {status}");
        }
        let head = log.head(None).await.unwrap().unwrap_or(0);
        let mut rows = 0;
        for seq in 1..=head {
            rows += log.read(seq).await.unwrap().counts.rows;
        }
        if rows >= total {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "staging 2M rows took over 10 minutes ({rows} staged)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    peak = peak.max(reader.peak_rss_kib().unwrap());
    eprintln!("2,000,000-row transaction staged in {:.1}s; reader peak RSS {} MiB", elapsed.as_secs_f64(), peak / 1024);
    // The big transaction is one batch: all its rows share one commit LSN and one seq.
    let head = log.head(None).await.unwrap().unwrap();
    let mut big_batches = Vec::new();
    for seq in 1..=head {
        let m = log.read(seq).await.unwrap();
        if m.counts.rows >= ROWS as u64 {
            big_batches.push((seq, m.files.len(), m.counts.transactions));
        }
    }
    assert_eq!(big_batches.len(), 1, "committed by a single manifest: {big_batches:?}");
    assert!(big_batches[0].1 > 1, "written in several parts as it arrived: {big_batches:?}");
    assert!(peak < LIMIT_KIB, "reader peak RSS {} MiB exceeds 256 MiB", peak / 1024);
    let status = reader.terminate().unwrap();
    assert!(status.success());
    let staged = staged_changes(&stage, "main").await.unwrap();
    assert_eq!(staged.len() as u64, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_reader_waits_and_takes_over_when_the_first_stops() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let admin = connect(&url).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let cfg = write_config(dir.path(), &url, &stage_dir, "").unwrap();
    let first = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let port = strata_tests::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut second = ServiceProcess::spawn_with(Path::new(READER), &cfg, std::process::Stdio::null(), &[("STRATA_TELEMETRY__LISTEN", &listen)]).unwrap();
    admin.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    wait_for_changes(&stage, "main", 1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(second.try_wait().unwrap().is_none(), "the second reader waits rather than exiting");
    // Waiting is alive but not ready, as an orchestrator's probes need.
    assert!(strata_tests::http::get(port, "/healthz").await.starts_with("HTTP/1.1 200"), "the waiting reader is alive");
    assert!(strata_tests::http::get(port, "/readyz").await.starts_with("HTTP/1.1 503"), "the waiting reader is not ready");
    let lease: serde_json::Value = serde_json::from_slice(&std::fs::read(stage_dir.join("streams/main/reader.json")).unwrap()).unwrap();
    let holder = lease["holder"].as_str().unwrap().to_owned();
    assert!(holder.contains(&first.pid().to_string()), "the first reader holds the stream: {holder}");
    assert!(first.terminate().unwrap().success());
    admin.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let staged = wait_for_changes(&stage, "main", 2).await.unwrap();
    assert_eq!(staged.len(), 2, "nothing staged twice across the hand-over");
    let lease: serde_json::Value = serde_json::from_slice(&std::fs::read(stage_dir.join("streams/main/reader.json")).unwrap()).unwrap();
    assert!(lease["holder"].as_str().unwrap().contains(&second.pid().to_string()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !strata_tests::http::get(port, "/readyz").await.starts_with("HTTP/1.1 200") {
        assert!(std::time::Instant::now() < deadline, "the reader that took over became ready within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(second.terminate().unwrap().success());
}

/// A slot of the configured name that belongs to another database says
/// nothing about this one: the reader refuses it, naming both, and stages
/// nothing, rather than snapshotting from the other database's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_of_another_database_is_refused_before_the_snapshot() {
    let cluster = PgCluster::shared();
    let other = connect(&cluster.fresh_database().await.unwrap()).await.unwrap();
    other.batch_execute("SELECT pg_create_logical_replication_slot('strata_main', 'pgoutput')").await.unwrap();
    let url = cluster.fresh_database().await.unwrap();
    connect(&url).await.unwrap().batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(config(&url, dir.path(), ""));
    let ended = tokio::time::timeout(Duration::from_secs(60), reader.stop_when_finished()).await.expect("the reader exited within 60 s");
    let error = format!("{:#}", ended.expect_err("the reader refused the slot"));
    assert!(error.contains("\"strata_main\"") && error.contains("choose another source.slot"), "{error}");
    let staged = staged_changes(&Stage::local(dir.path()).unwrap(), "main").await.unwrap();
    assert!(staged.is_empty(), "nothing was staged: {staged:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_slot_was_dropped_stops_rather_than_skip_what_committed_meanwhile() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let admin = connect(&url).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    let reader = RunningReader::start(config(&url, dir.path(), ""));
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    wait_for_changes(&stage, "main", 2).await.unwrap();
    reader.stop().await.unwrap();

    // The slot goes (by hand, or a teardown), and the source moves on.
    admin.batch_execute("SELECT pg_drop_replication_slot('strata_main'); INSERT INTO t VALUES (3)").await.unwrap();
    let before = staged_changes(&stage, "main").await.unwrap().len();
    for attempt in 0..2 {
        let reader = RunningReader::start(config(&url, dir.path(), ""));
        let ended = tokio::time::timeout(Duration::from_secs(60), reader.stop_when_finished()).await.expect("the reader exited within 60 s");
        let error = format!("{:#}", ended.expect_err("the reader refused to stream past the gap"));
        assert!(error.contains("\"strata_main\" was missing") && error.contains("new stream name"), "attempt {attempt}: {error}");
        let slots: i64 = admin.query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'strata_main'", &[]).await.unwrap().get(0);
        assert_eq!(slots, 0, "attempt {attempt}: the slot it created is dropped again, so a restart refuses too");
    }
    assert_eq!(staged_changes(&stage, "main").await.unwrap().len(), before, "nothing staged past the gap");
}
