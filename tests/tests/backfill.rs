//! Backfill while the stream runs: on request (`strata-reader backfill`) and
//! for a table added to the publication later. The stage is checked by
//! delivering it to a mirror destination and comparing with the source.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_common::config::Config;
use strata_common::{Op, TableName};
use strata_stager::Stage;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, config_text, staged_changes, wait_backfill_done, wait_for_slot};
use strata_tests::workload::Rng;
use strata_tests::writer::assert_mirror_equals_source;

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");

/// Updates, deletes and inserts on `table` (id bigint key, n int) until `stop`.
async fn writes(url: String, table: &'static str, rows: u64, stop: Arc<AtomicBool>) -> u64 {
    let c = connect(&url).await.unwrap();
    let mut rng = Rng(99);
    let mut next = rows + 1;
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = 1 + rng.below(rows);
        let sql = match rng.below(4) {
            0 => format!("DELETE FROM {table} WHERE id = {id}"),
            1 => {
                next += 1;
                format!("INSERT INTO {table} VALUES ({next}, 0, 'new')")
            }
            _ => format!("UPDATE {table} SET n = n + 1, note = 'u' WHERE id BETWEEN {id} AND {}", id + 50),
        };
        c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        done += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_on_request_under_writes_reconstructs_the_table() {
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, n int, note text); \
             INSERT INTO accounts SELECT g, 0, repeat('x', 50) FROM generate_series(1, 30000) g; \
             CREATE TABLE unpublished (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    // No initial snapshot: the existing rows reach the stage only by the backfill.
    let text = config_text(&src_url, &stage_dir, "max_rows = 5000\n[snapshot]\nmode = \"never\"\n").replace("\"public.*\"", "\"public.accounts\"");
    let config_path = dir.path().join("strata.toml");
    std::fs::write(&config_path, &text).unwrap();
    let reader = RunningReader::start(Config::from_toml("t", &text, &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(writes(src_url.clone(), "accounts", 30000, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The command refuses a table outside the publication, then records a request.
    let refused =
        std::process::Command::new(READER).args(["--config", config_path.to_str().unwrap(), "backfill", "--table", "public.unpublished"]).output().unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("public.unpublished") && err.contains("not in publication"), "{err}");
    let ok = std::process::Command::new(READER).args(["--config", config_path.to_str().unwrap(), "backfill", "--table", "public.accounts"]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("requested"));

    let stage = Stage::local(&stage_dir).unwrap();
    let done = wait_backfill_done(&stage, &TableName::parse("public.accounts").unwrap()).await;
    assert!(done.chunks >= 6, "the table went in chunks of 5000 rows ({})", done.chunks);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let writes_done = load.await.unwrap();
    assert!(writes_done > 100, "writes ran during the backfill ({writes_done})");

    // Reads sit among the changes, in the watermarks' transactions.
    let staged = staged_changes(&stage, "main").await.unwrap();
    let reads = staged.iter().filter(|(_, _, c)| c.op == Op::Read).count() as u64;
    assert!(reads <= done.rows, "no more reads staged ({reads}) than the chunks held ({})", done.rows);
    assert!(reads > 25_000, "the existing rows were staged as reads ({reads})");
    assert_mirror_equals_source(&stage, &stage_dir, &src_url, &["public.accounts"], 1000).await;
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_added_to_the_publication_is_backfilled() {
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE first (id bigint PRIMARY KEY, n int, note text); \
             INSERT INTO first SELECT g, 0, 'a' FROM generate_series(1, 2000) g; \
             CREATE TABLE later (id bigint PRIMARY KEY, n int, note text); \
             INSERT INTO later SELECT g, 0, 'b' FROM generate_series(1, 25000) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let text = config_text(&src_url, &stage_dir, "[snapshot]\nnew_tables_check = \"1s\"\n").replace("\"public.*\"", "\"public.first\"");
    let reader = RunningReader::start(Config::from_toml("t", &text, &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(writes(src_url.clone(), "later", 25000, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin.batch_execute("ALTER PUBLICATION strata_main ADD TABLE later").await.unwrap();
    let done = wait_backfill_done(&stage, &TableName::parse("public.later").unwrap()).await;
    assert_eq!(done.reason, "added to the publication");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_mirror_equals_source(&stage, &stage_dir, &src_url, &["public.first", "public.later"], 1000).await;
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_column_added_during_a_backfill_is_in_the_chunks_after_it() {
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE first (id int PRIMARY KEY); INSERT INTO first VALUES (1); \
             CREATE TABLE later (id bigint PRIMARY KEY, note text); \
             INSERT INTO later SELECT g, 'b' FROM generate_series(1, 30000) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let text = config_text(&src_url, &stage_dir, "max_rows = 500\n[snapshot]\nnew_tables_check = \"1s\"\n").replace("\"public.*\"", "\"public.first\"");
    let reader = RunningReader::start(Config::from_toml("t", &text, &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    admin.batch_execute("ALTER PUBLICATION strata_main ADD TABLE later").await.unwrap();
    // A few chunks in, a column is added (and set on rows not yet copied).
    let log = strata_stager::log::StreamLog::new(&stage, "main").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !strata_reader::backfill::list(&log).await.unwrap().iter().any(|r| r.value.chunks >= 3) {
        assert!(std::time::Instant::now() < deadline, "the backfill made 3 chunks within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.batch_execute("ALTER TABLE later ADD COLUMN extra int").await.unwrap();
    let done = wait_backfill_done(&stage, &TableName::parse("public.later").unwrap()).await;
    assert!(done.chunks > 10, "the DDL fell inside the backfill ({} chunks)", done.chunks);
    assert_mirror_equals_source(&stage, &stage_dir, &src_url, &["public.later"], 1000).await;
    reader.stop().await.unwrap();
}
