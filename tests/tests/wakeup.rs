//! Wake-up notifications: a reader that sends "batch N committed" to SQS
//! and a writer waiting on that queue deliver an idle stream's next change
//! within moments, though the writer polls the stage only once a minute;
//! a writer whose wake-up queue cannot be read polls as usual.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use strata_stager::Stage;
use strata_tests::emulator::Emulator;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, config, config_text, wait_for_slot};
use strata_tests::sqs::{Sqs, spawn_service};
use strata_tests::writer::{spec, wait_caught_up};
use strata_writer::spec::{PostgresMode, StartPosition};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");
const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

/// A source with table `t`, an empty destination database, and a local stage.
struct Setup {
    src_url: String,
    dst_url: String,
    src: tokio_postgres::Client,
    dir: tempfile::TempDir,
    stage_dir: std::path::PathBuf,
    stage: Stage,
}

async fn setup() -> Setup {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let dst_url = cluster.fresh_database().await.unwrap();
    let src = connect(&src_url).await.unwrap();
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let stage = Stage::local(&stage_dir).unwrap();
    strata_writer::control::add(&stage, &spec("mirror", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    Setup { src_url, dst_url, src, dir, stage_dir, stage }
}

/// How long until row `id` is at the destination.
async fn arrival(dst: &tokio_postgres::Client, id: i32, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let n: i64 = dst.query_one("SELECT count(*) FROM t WHERE id = $1", &[&id]).await.map(|r| r.get(0)).unwrap_or(0);
        if n == 1 {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "row {id} did not arrive within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_writer_delivers_on_a_wake_up_not_on_its_poll() {
    let emulator = Emulator::start().await.unwrap();
    let sqs = Sqs::new(&emulator).await;
    let queue = sqs.create_queue("writer-1", None).await.unwrap();
    let Setup { src_url, dst_url, src, dir, stage_dir, stage } = setup().await;
    let reader_text = config_text(&src_url, &stage_dir, &format!("[wakeup]\npublish = [{queue:?}]\n"));
    let reader = spawn_service(READER, dir.path(), "reader", &reader_text, &emulator);
    wait_for_slot(&src, "strata_main").await.unwrap();
    let writer_text = config_text(&src_url, &stage_dir, &format!("[wakeup]\nqueue = {queue:?}\nfallback_poll = \"60s\"\n"));
    let writer = spawn_service(WRITER, dir.path(), "writer", &writer_text, &emulator);
    src.batch_execute("INSERT INTO t VALUES (0)").await.unwrap();
    wait_caught_up(&stage, "mirror").await;
    let dst = connect(&dst_url).await.unwrap();
    let mut took = Vec::new();
    for id in 1..=3 {
        // Idle long enough that the worker is waiting, not mid-poll.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        src.batch_execute(&format!("INSERT INTO t VALUES ({id})")).await.unwrap();
        took.push(arrival(&dst, id, Duration::from_secs(20)).await);
    }
    assert!(took.iter().all(|t| *t < Duration::from_secs(5)), "each change arrived within moments, not a minute's poll: {took:?}");
    let stats = sqs.stats("writer-1").await.unwrap();
    assert!(stats["single_sends"] >= 4, "the reader sent a wake-up per batch: {stats:?}");
    assert!(writer.terminate().unwrap().success());
    assert!(reader.terminate().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_whose_wake_up_queue_cannot_be_read_polls_the_stage() {
    let emulator = Emulator::start().await.unwrap();
    let missing = format!("{}/000000000000/no-such-queue", emulator.endpoint());
    let Setup { src_url, dst_url, src, dir, stage_dir, stage } = setup().await;
    let reader = RunningReader::start(config(&src_url, &stage_dir, ""));
    wait_for_slot(&src, "strata_main").await.unwrap();
    let writer_text = config_text(&src_url, &stage_dir, &format!("[wakeup]\nqueue = {missing:?}\nfallback_poll = \"60s\"\n"));
    let writer = spawn_service(WRITER, dir.path(), "writer", &writer_text, &emulator);
    src.batch_execute("INSERT INTO t VALUES (0)").await.unwrap();
    wait_caught_up(&stage, "mirror").await;
    let dst = connect(&dst_url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    src.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    let took = arrival(&dst, 1, Duration::from_secs(20)).await;
    assert!(took < Duration::from_secs(5), "delivered by polling: {took:?}");
    assert!(writer.terminate().unwrap().success());
    reader.stop().await.unwrap();
}
