//! One stream feeding four destinations at once — Postgres, files, and two
//! webhooks — with one webhook down: the others keep up, the down one
//! catches up once it is back.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::cursor::Cursors;
use strata_stager::log::StreamLog;
use strata_tests::http::TestServer;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, config_text, wait_for_slot};
use strata_tests::writer::{checksum, session, spec, spec_of, wait_caught_up, wait_staged};
use strata_writer::destinations::files::config::{FileFormat, FilesSpec};
use strata_writer::destinations::webhook::config::WebhookSpec;
use strata_writer::spec::{DestinationKind, PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

async fn lag(stage: &Stage, destination: &str) -> u64 {
    let head = StreamLog::new(stage, "main").unwrap().head(None).await.unwrap().unwrap_or(0);
    head - Cursors::new(stage, destination).unwrap().load().await.unwrap().map_or(0, |c| c.value.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_down_destination_does_not_hold_back_three_others() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let dst_url = cluster.fresh_database().await.unwrap();
    let src = connect(&src_url).await.unwrap();
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)").await.unwrap();
    let up = TestServer::start(|_, _| (200, vec![])).await.unwrap();
    let back = Arc::new(AtomicBool::new(false));
    let b = back.clone();
    let down = TestServer::start(move |_, _| (if b.load(Ordering::Relaxed) { 200 } else { 503 }, vec![])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let cfg = Config::from_toml("t", &config_text(&src_url, &stage_dir, "max_rows = 20\n"), &[]).unwrap();
    let reader = RunningReader::start(cfg.clone());
    wait_for_slot(&src, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let mut files = FilesSpec::new(dir.path().join("lake").display().to_string(), FileFormat::Jsonl);
    files.roll_up_secs = 0;
    for s in [
        spec("pg", &dst_url, StartPosition::Earliest, PostgresMode::Mirror),
        spec_of("files", StartPosition::Earliest, DestinationKind::Files(files)),
        spec_of("up", StartPosition::Earliest, DestinationKind::Webhook(WebhookSpec::new(up.url("/"), None))),
        spec_of("down", StartPosition::Earliest, DestinationKind::Webhook(WebhookSpec::new(down.url("/"), None))),
    ] {
        strata_writer::control::add(&stage, &s).await.unwrap();
    }
    let token = CancellationToken::new();
    let t = token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&cfg, t).await });
    for i in 0..30 {
        src.batch_execute(&format!("INSERT INTO t SELECT g, 'v' || g FROM generate_series({}, {}) g", i * 10 + 1, i * 10 + 10)).await.unwrap();
    }
    wait_staged(&src).await;
    let started = Instant::now();
    for d in ["pg", "files", "up"] {
        wait_caught_up(&stage, d).await;
    }
    assert!(started.elapsed() < Duration::from_secs(15), "the healthy three kept up ({:?})", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while down.requests().len() < 3 {
        assert!(Instant::now() < deadline, "the down webhook is retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lag(&stage, "down").await > 0, "the down webhook is behind");
    assert_eq!(checksum(&session(&dst_url).await, "public.t").await, checksum(&session(&src_url).await, "public.t").await);

    back.store(true, Ordering::Relaxed);
    wait_caught_up(&stage, "down").await;
    token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();
}
