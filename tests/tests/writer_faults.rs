//! strata-writer under faults: killed with SIGKILL at random points, two
//! writers on one stage, and a destination database that goes away.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::cursor::Cursors;
use strata_stager::keys::DestinationKeys;
use strata_stager::lease::Leases;
use strata_stager::log::StreamLog;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, wait_for_slot};
use strata_tests::workload::{Rng, workload};
use strata_tests::writer::{checksum, session, spec, wait_caught_up, wait_failed, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

/// Staged changes of the stream, counted from the manifests.
async fn staged_rows(stage: &Stage) -> u64 {
    let log = StreamLog::new(stage, "main").unwrap();
    let mut rows = 0;
    for seq in 1..=log.head(None).await.unwrap().unwrap_or(0) {
        rows += log.read(seq).await.unwrap().counts.rows;
    }
    rows
}

fn writer_config(dir: &Path, stage_dir: &Path, db_url: &str, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config_text(db_url, stage_dir, "")).unwrap();
    path
}

async fn cursor(stage: &Stage, destination: &str) -> u64 {
    Cursors::new(stage, destination).unwrap().load().await.unwrap().map_or(0, |c| c.value.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_twenty_times_applies_nothing_twice() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let mirror_url = cluster.fresh_database().await.unwrap();
    let history_url = cluster.fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE events (id bigint PRIMARY KEY, payload text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader_cfg = Config::from_toml("t", &config_text(&src_url, &stage_dir, "max_rows = 40\n"), &[]).unwrap();
    let reader = RunningReader::start(reader_cfg);
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    strata_writer::control::add(&stage, &spec("mirror", &mirror_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    strata_writer::control::add(&stage, &spec("history", &history_url, StartPosition::Earliest, PostgresMode::History)).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(workload(src_url.clone(), stop.clone(), committed.clone(), 99));
    let cfg = writer_config(dir.path(), &stage_dir, &src_url, "writer");
    let mut rng = Rng(0xfeed_beef);
    let mut writer = ServiceProcess::spawn(Path::new(WRITER), &cfg).unwrap();
    for round in 0..20 {
        // Kill a writer that is delivering: wait for it to move a cursor.
        let before = cursor(&stage, "mirror").await + cursor(&stage, "history").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while cursor(&stage, "mirror").await + cursor(&stage, "history").await <= before {
            assert!(Instant::now() < deadline, "round {round}: the writer delivered nothing within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        writer.kill9().unwrap();
        writer = ServiceProcess::spawn(Path::new(WRITER), &cfg).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    wait_staged(&admin).await;
    wait_caught_up(&stage, "mirror").await;
    wait_caught_up(&stage, "history").await;
    assert!(writer.terminate().unwrap().success(), "SIGTERM drains and exits 0");
    reader.stop().await.unwrap();

    let src = session(&src_url).await;
    let mirror = session(&mirror_url).await;
    assert_eq!(checksum(&mirror, "public.events").await, checksum(&src, "public.events").await, "the mirror equals the source");
    // The history table's primary key (_strata_lsn, _strata_ord) would have
    // refused a change applied twice; its row count says none was skipped.
    let history = session(&history_url).await;
    let rows: i64 = history.query_one("SELECT count(*) FROM public.events", &[]).await.unwrap().get(0);
    let distinct: i64 = history.query_one("SELECT count(*) FROM (SELECT DISTINCT _strata_lsn, _strata_ord FROM public.events) d", &[]).await.unwrap().get(0);
    let staged = staged_rows(&stage).await;
    assert_eq!((rows as u64, distinct as u64), (staged, staged), "every staged change is in the history exactly once");
    assert_eq!(staged, committed.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_share_destinations_and_take_over_from_a_killed_one() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, ""), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let mut dests = Vec::new();
    for i in 0..4 {
        let url = cluster.fresh_database().await.unwrap();
        let name = format!("d{i}");
        strata_writer::control::add(&stage, &spec(&name, &url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
        dests.push((name, url));
    }
    let a = ServiceProcess::spawn(Path::new(WRITER), &writer_config(dir.path(), &stage_dir, &src_url, "a")).unwrap();
    let b = ServiceProcess::spawn(Path::new(WRITER), &writer_config(dir.path(), &stage_dir, &src_url, "b")).unwrap();
    admin.batch_execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g").await.unwrap();
    wait_staged(&admin).await;
    for (name, _) in &dests {
        wait_caught_up(&stage, name).await;
    }
    let holders = |stage: Stage, dests: Vec<(String, String)>| async move {
        let mut out = Vec::new();
        for (name, _) in &dests {
            let lease = Leases::new(&stage, DestinationKeys::new(name).unwrap().lease()).read().await.unwrap().unwrap();
            out.push(lease.value.holder);
        }
        out
    };
    let owners = holders(stage.clone(), dests.clone()).await;
    let pid_a = format!(":{}:", a.pid());
    let pid_b = format!(":{}:", b.pid());
    assert!(owners.iter().all(|h| h.contains(&pid_a) || h.contains(&pid_b)), "every destination has one owner: {owners:?}");
    // Kill the owner of d0; its destinations move to the survivor.
    let (victim, survivor_pid) = if owners[0].contains(&pid_a) { (a, pid_b.clone()) } else { (b, pid_a.clone()) };
    victim.kill9().unwrap();
    admin.batch_execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(101, 200) g").await.unwrap();
    wait_staged(&admin).await;
    for (name, _) in &dests {
        wait_caught_up(&stage, name).await;
    }
    let owners = holders(stage.clone(), dests.clone()).await;
    assert!(owners.iter().all(|h| h.contains(&survivor_pid)), "the survivor owns every destination: {owners:?}");
    let src = session(&src_url).await;
    for (_, url) in &dests {
        assert_eq!(checksum(&session(url).await, "public.t").await, checksum(&src, "public.t").await);
    }
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_destination_does_not_delay_another_and_catches_up() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let healthy_url = cluster.fresh_database().await.unwrap();
    // The destination that goes down lives on a cluster of its own.
    let down = PgCluster::start().unwrap();
    let down_url = down.fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, ""), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    strata_writer::control::add(&stage, &spec("healthy", &healthy_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    strata_writer::control::add(&stage, &spec("flaky", &down_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let writer = ServiceProcess::spawn(Path::new(WRITER), &writer_config(dir.path(), &stage_dir, &src_url, "w")).unwrap();
    admin.batch_execute("INSERT INTO t VALUES (1, 'one')").await.unwrap();
    wait_staged(&admin).await;
    wait_caught_up(&stage, "healthy").await;
    wait_caught_up(&stage, "flaky").await;

    down.stop().unwrap();
    for i in 2..=20 {
        admin.batch_execute(&format!("INSERT INTO t VALUES ({i}, 'v')")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_staged(&admin).await;
    let started = Instant::now();
    wait_caught_up(&stage, "healthy").await;
    assert!(started.elapsed() < Duration::from_secs(5), "the healthy destination kept up while the other was down");
    let head = StreamLog::new(&stage, "main").unwrap().head(None).await.unwrap().unwrap();
    assert!(cursor(&stage, "flaky").await < head, "the stopped destination is behind");

    down.start_again().unwrap();
    wait_caught_up(&stage, "flaky").await;
    let src = session(&src_url).await;
    assert_eq!(checksum(&session(&down_url).await, "public.t").await, checksum(&src, "public.t").await);
    assert!(writer.terminate().unwrap().success());
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_error_is_shown_in_status_and_retried_after_resume() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, ""), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    // A database that does not exist (yet): a permanent error, not a retry loop.
    let missing = format!("db_missing_{}", uuid::Uuid::new_v4().simple());
    strata_writer::control::add(&stage, &spec("later", &cluster.url(&missing), StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let writer = ServiceProcess::spawn(Path::new(WRITER), &writer_config(dir.path(), &stage_dir, &src_url, "w")).unwrap();
    admin.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    wait_staged(&admin).await;
    let error = wait_failed(&stage, "later").await;
    assert!(error.contains("does not exist"), "status shows the error: {error}");
    admin.batch_execute(&format!("CREATE DATABASE {missing}")).await.unwrap();
    strata_writer::control::update(&stage, "later", |s| s.paused = false).await.unwrap();
    wait_caught_up(&stage, "later").await;
    let src = session(&src_url).await;
    assert_eq!(checksum(&session(&cluster.url(&missing)).await, "public.t").await, checksum(&src, "public.t").await);
    assert!(writer.terminate().unwrap().success());
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejected_changes_go_to_the_dead_letter_folder_under_skip_and_pause_otherwise() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let skip_url = cluster.fresh_database().await.unwrap();
    let pause_url = cluster.fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE items (id int PRIMARY KEY, qty int)").await.unwrap();
    // The destinations refuse what the source allows.
    for url in [&skip_url, &pause_url] {
        connect(url).await.unwrap().batch_execute("CREATE TABLE items (id int PRIMARY KEY, qty int CHECK (qty >= 0))").await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, ""), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    for sql in [
        "INSERT INTO items SELECT g, g FROM generate_series(1, 20) g",
        "BEGIN; INSERT INTO items VALUES (21, -5); UPDATE items SET qty = -1 WHERE id = 3; UPDATE items SET qty = 100 WHERE id = 4; COMMIT",
        "INSERT INTO items SELECT g, g FROM generate_series(22, 30) g",
    ] {
        admin.batch_execute(sql).await.unwrap();
        // One batch per transaction, so the bad one is a batch of its own.
        wait_staged(&admin).await;
    }
    let stage = Stage::local(&stage_dir).unwrap();
    let mut skip = spec("skip", &skip_url, StartPosition::Earliest, PostgresMode::Mirror);
    skip.on_error = strata_writer::spec::OnError::Skip;
    strata_writer::control::add(&stage, &skip).await.unwrap();
    strata_writer::control::add(&stage, &spec("pause", &pause_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let writer = ServiceProcess::spawn(Path::new(WRITER), &writer_config(dir.path(), &stage_dir, &src_url, "w")).unwrap();
    wait_caught_up(&stage, "skip").await;

    // Everything but the two rejected changes arrived, the good change of
    // the same transaction included.
    let dst = connect(&skip_url).await.unwrap();
    let rows: Vec<(i32, i32)> = dst.query("SELECT id, qty FROM items ORDER BY id", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut expected: Vec<(i32, i32)> = (1..=30).filter(|&i| i != 21).map(|i| (i, i)).collect();
    expected[3].1 = 100;
    assert_eq!(rows, expected);
    let mut letters = Vec::new();
    for meta in stage.list(&DestinationKeys::new("skip").unwrap().dead_letter_prefix()).await.unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&stage.get(&meta.location).await.unwrap()).unwrap();
        letters.push((v["op"].as_str().unwrap().to_owned(), v["after"]["id"].clone(), v["after"]["qty"].clone(), v["error"].as_str().unwrap().to_owned()));
    }
    letters.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!((letters[0].0.as_str(), &letters[0].1, &letters[0].2), ("c", &serde_json::json!(21), &serde_json::json!(-5)));
    assert_eq!((letters[1].0.as_str(), &letters[1].1, &letters[1].2), ("u", &serde_json::json!(3), &serde_json::json!(-1)));
    assert!(letters.iter().all(|l| l.3.contains("items_qty_check")), "{letters:?}");

    // The default policy stops at the bad batch, with the error shown.
    let error = wait_failed(&stage, "pause").await;
    assert!(error.contains("items_qty_check"), "{error}");
    let paused_at: i64 = connect(&pause_url).await.unwrap().query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(paused_at, 20, "nothing past the rejected batch");
    assert!(writer.terminate().unwrap().success());
    reader.stop().await.unwrap();
}

/// A data file that no longer decodes is an error retrying cannot heal: the
/// destination is shown `failed` with the file named, in `status` and in
/// `/metrics`, is not retried, and still shows so after the writer exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_stage_file_fails_the_destination_visibly_and_is_not_retried() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let dst_url = cluster.fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, ""), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    wait_staged(&admin).await;
    reader.stop().await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let log = StreamLog::new(&stage, "main").unwrap();
    let head = log.head(None).await.unwrap().unwrap();
    let file = log.read(head).await.unwrap().files[0].path.clone();
    std::fs::write(stage_dir.join(&file), b"not parquet").unwrap();

    strata_writer::control::add(&stage, &spec("m", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let port = strata_tests::process::free_port();
    let config = dir.path().join("w.toml");
    std::fs::write(&config, config_text(&src_url, &stage_dir, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))).unwrap();
    let writer = ServiceProcess::spawn(Path::new(WRITER), &config).unwrap();
    let error = wait_failed(&stage, "m").await;
    assert!(error.contains(&file) && error.contains("corrupt"), "the error names the file: {error}");
    // Several reconcile passes later it is still failed, and was never retried.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let keys = DestinationKeys::new("m").unwrap();
    let status = Leases::new(&stage, keys.lease()).read().await.unwrap().unwrap().value.status;
    assert_eq!(status["state"], "failed");
    assert_eq!(status["retries"], 0, "{status}");
    assert!(status["failed_at"].is_string(), "{status}");
    let metrics = strata_tests::http::get(port, "/metrics").await;
    assert!(metrics.contains(r#"strata_writer_destination_state{destination="m",stream="main",state="failed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"strata_writer_destination_state{destination="m",stream="main",state="running"} 0"#), "{metrics}");
    assert!(metrics.contains(r#"strata_writer_retries_total{destination="m",stream="main"} 0"#), "{metrics}");
    let failed_at = strata_tests::http::metric(&metrics, r#"strata_writer_last_error_timestamp_seconds{destination="m",stream="main"}"#);
    assert!(failed_at > 1.7e9, "the failure's time is shown: {failed_at}");
    assert!(writer.terminate().unwrap().success());

    // After the writer exits, `status` still says why.
    let out = std::process::Command::new(WRITER).args(["status", "--json", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["state"], "failed (no writer holds it)", "{row}");
    assert!(row["error"].as_str().unwrap().contains(&file), "{row}");
    assert!(row["failed_at"].is_string(), "{row}");
}
