//! The stdout destination as a user runs it: `strata-writer` printing change
//! envelopes as JSON Lines, killed with SIGKILL mid-delivery and restarted.
//! At-least-once: every staged change appears, duplicates only as whole
//! redelivered batches, and first appearances follow commit order.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, staged_changes, wait_for_slot};
use strata_tests::writer::{spec_of, wait_caught_up, wait_staged};
use strata_writer::spec::{DestinationKind, StartPosition};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdout_prints_every_change_at_least_once_in_commit_order_across_a_kill() {
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric(12,2), data bytea)").await.unwrap();
    admin.batch_execute("INSERT INTO accounts SELECT g, 'o' || g, g * 1.5, '\\x00ff' FROM generate_series(1, 50) g").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, "max_rows = 20\n"), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let config_path = dir.path().join("writer.toml");
    std::fs::write(&config_path, config_text(&src_url, &stage_dir, "")).unwrap();
    strata_writer::control::add(&stage, &spec_of("out", StartPosition::Earliest, DestinationKind::Stdout(Default::default()))).await.unwrap();
    let out_path = dir.path().join("out.jsonl");
    let out = || std::fs::OpenOptions::new().create(true).append(true).open(&out_path).unwrap();
    let mut writer = ServiceProcess::spawn_with(Path::new(WRITER), &config_path, out(), &[]).unwrap();
    for i in 0..40 {
        admin
            .batch_execute(&format!(
                "BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = {}; INSERT INTO accounts VALUES ({}, 'new', 0, NULL); DELETE FROM accounts WHERE id = {}; COMMIT",
                1 + i,
                100 + i,
                50 - i
            ))
            .await
            .unwrap();
        if i == 20 {
            // Kill it mid-delivery, once it has printed something, and restart.
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::fs::metadata(&out_path).map_or(0, |m| m.len()) == 0 {
                assert!(Instant::now() < deadline, "the writer printed within 30 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            writer.kill9().unwrap();
            writer = ServiceProcess::spawn_with(Path::new(WRITER), &config_path, out(), &[]).unwrap();
        }
    }
    wait_staged(&admin).await;
    wait_caught_up(&stage, "out").await;
    assert!(writer.terminate().unwrap().success());

    let lines = read_lines(&out_path);
    let staged = staged_changes(&stage, "main").await.unwrap();
    let expected: Vec<String> = staged.iter().map(|(_, _, c)| format!("main:{}:{}", c.lsn.as_u64(), c.ord)).collect();
    let mut seen = HashSet::new();
    let mut first: Vec<String> = Vec::new();
    for l in &lines {
        let id = l["id"].as_str().unwrap().to_owned();
        if seen.insert(id.clone()) {
            first.push(id);
        }
    }
    assert_eq!(first, expected, "every staged change, first printed in commit order");
    assert!(lines.len() >= expected.len());
    // Values and the envelope's shape.
    let snapshot_row = lines.iter().find(|l| l["op"] == "r" && l["after"]["id"] == 7).unwrap();
    assert_eq!(snapshot_row["after"], serde_json::json!({"id": 7, "owner": "o7", "balance": "10.50", "data": "AP8="}));
    assert_eq!(snapshot_row["source"]["snapshot"], "true");
    assert_eq!(snapshot_row["source"]["table"], "accounts");
    assert!(snapshot_row["source"]["db"].as_str().unwrap().starts_with("db_"), "{}", snapshot_row["source"]);
    let delete = lines.iter().find(|l| l["op"] == "d").unwrap();
    assert_eq!(delete["after"], serde_json::Value::Null);
    assert!(delete["before"]["id"].is_number() && delete["before"].get("owner").is_none(), "a key-only old image: {}", delete["before"]);
    let head = StreamLog::new(&stage, "main").unwrap().head(None).await.unwrap().unwrap();
    assert!(head > 3, "several batches were printed ({head})");
    reader.stop().await.unwrap();
}
