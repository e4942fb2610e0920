//! Delivery schedules switched on a running writer: continuous, then
//! `every 6s`, then continuous again, each in force within one reconcile
//! period, with the schedule and next run shown in the status.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::cursor::Cursors;
use strata_stager::keys::DestinationKeys;
use strata_stager::lease::Leases;
use strata_stager::log::StreamLog;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, config_text, wait_for_slot};
use strata_tests::writer::{spec, wait_caught_up, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

async fn lag(stage: &Stage) -> u64 {
    let head = StreamLog::new(stage, "main").unwrap().head(None).await.unwrap().unwrap_or(0);
    let cursor = Cursors::new(stage, "d").unwrap().load().await.unwrap().map_or(0, |c| c.value.seq);
    head - cursor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_change_takes_effect_within_a_reconcile_period() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let dst_url = cluster.fresh_database().await.unwrap();
    let src = connect(&src_url).await.unwrap();
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let cfg = Config::from_toml("t", &config_text(&src_url, &stage_dir, ""), &[]).unwrap();
    let reader = RunningReader::start(cfg.clone());
    wait_for_slot(&src, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    strata_writer::control::add(&stage, &spec("d", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let token = CancellationToken::new();
    let t = token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&cfg, t).await });

    // Continuous: delivered at once.
    src.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    wait_staged(&src).await;
    wait_caught_up(&stage, "d").await;

    // Every 6 s: a change waits for the next run, and the status says when.
    strata_writer::control::update(&stage, "d", |s| s.schedule = "every 6s".parse().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    src.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    wait_staged(&src).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(lag(&stage).await > 0, "a scheduled destination waits for its run");
    let lease = Leases::new(&stage, DestinationKeys::new("d").unwrap().lease());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = lease.read().await.unwrap().map(|l| l.value.status).unwrap_or_default();
        if status["schedule"] == "every 6s" && status["state"] == "sleeping" && status["next_run"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the status shows the schedule and next run: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while lag(&stage).await > 0 {
        assert!(Instant::now() < deadline, "the scheduled run delivered within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Back to continuous: delivered within a reconcile period again.
    strata_writer::control::update(&stage, "d", |s| s.schedule = Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    src.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    wait_staged(&src).await;
    let started = Instant::now();
    while lag(&stage).await > 0 {
        assert!(started.elapsed() < Duration::from_secs(3), "continuous delivery is back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n: i64 = connect(&dst_url).await.unwrap().query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
    token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();
}
