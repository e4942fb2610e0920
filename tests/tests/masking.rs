//! Per-destination transforms, the QA-copy case: one stream, a raw mirror,
//! and a QA mirror whose users are faked, hashed and stripped of their SSN
//! and whose orders are filtered to one region.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use strata_common::config::Config;
use strata_stager::Stage;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, wait_for_slot};
use strata_tests::writer::{checksum, session, spec, wait_caught_up, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};
use strata_writer::transform::Transforms;

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

fn qa_transforms() -> Transforms {
    serde_json::from_value(serde_json::json!({
        "columns": [
            {"table": "public.users", "column": "ssn", "action": "drop"},
            {"table": "public.users", "column": "email", "action": "fake", "kind": "email"},
            {"table": "public.users", "column": "name", "action": "fake", "kind": "name"},
            {"table": "public.users", "column": "phone", "action": "hash"},
        ],
        "filters": [{"table": "public.orders", "column": "region", "op": "in", "values": ["eu"]}],
        "hash_key": "${MASK_KEY}",
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_qa_copy_holds_no_original_value_and_the_raw_copy_is_untouched() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let raw_url = cluster.fresh_database().await.unwrap();
    let qa_url = cluster.fresh_database().await.unwrap();
    let qa2_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text, name text, ssn text, phone text); \
         CREATE TABLE orders (id int PRIMARY KEY, user_id int, region text, total numeric(10,2)); \
         INSERT INTO users SELECT g, 'person' || g || '@corp.example', 'Person Number' || g, '000-00-' || lpad(g::text, 4, '0'), '+44 20 7946 ' || lpad(g::text, 4, '0') \
           FROM generate_series(1, 200) g; \
         UPDATE users SET email = 'shared@corp.example', phone = '+44 20 7946 9999' WHERE id IN (1, 2);",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, "max_rows = 50\n"), &[]).unwrap());
    wait_for_slot(&src, "strata_main").await.unwrap();
    src.batch_execute(
        "INSERT INTO orders SELECT g, 1 + g % 200, CASE WHEN g % 3 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 300) g; \
         UPDATE users SET email = 'changed' || id || '@corp.example' WHERE id BETWEEN 100 AND 120; \
         DELETE FROM users WHERE id > 190; \
         UPDATE orders SET total = total + 1 WHERE id % 5 = 0;",
    )
    .await
    .unwrap();
    wait_staged(&src).await;
    let stage = Stage::local(&stage_dir).unwrap();
    strata_writer::control::add(&stage, &spec("raw", &raw_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    for (name, url) in [("qa", &qa_url), ("qa2", &qa2_url)] {
        let mut qa = spec(name, url, StartPosition::Earliest, PostgresMode::Mirror);
        qa.transforms = qa_transforms();
        strata_writer::control::add(&stage, &qa).await.unwrap();
    }
    let config_path = dir.path().join("writer.toml");
    std::fs::write(&config_path, config_text(&src_url, &stage_dir, "")).unwrap();
    let writer = ServiceProcess::spawn_with(Path::new(WRITER), &config_path, std::process::Stdio::null(), &[("MASK_KEY", "qa key")]).unwrap();
    for d in ["raw", "qa", "qa2"] {
        wait_caught_up(&stage, d).await;
    }
    assert!(writer.terminate().unwrap().success());

    // The raw copy is the source.
    let raw = session(&raw_url).await;
    for t in ["public.users", "public.orders"] {
        assert_eq!(checksum(&raw, t).await, checksum(&src, t).await, "{t} untouched in the raw copy");
    }
    // The QA copy: same rows, no SSN column, no original value anywhere.
    let qa = connect(&qa_url).await.unwrap();
    let columns: String = qa
        .query_one("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'users'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(columns, "id,email,name,phone");
    let qa_rows: Vec<String> = qa.query("SELECT t::text FROM users t", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(qa_rows.len(), 190);
    let originals: Vec<String> = src.query("SELECT unnest(ARRAY[email, name, ssn, phone]) FROM users", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for row in &qa_rows {
        for o in &originals {
            assert!(!row.contains(o.as_str()), "QA row {row} holds the original value {o}");
        }
        assert!(row.contains("@example.com"), "a realistic fake email in {row}");
    }
    // Deterministic: equal inputs mask alike; a second destination (another
    // run, other batches) holds exactly the same masked table.
    let pair: Vec<(String, String)> =
        qa.query("SELECT email, phone FROM users WHERE id IN (1, 2)", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(pair[0], pair[1]);
    assert_eq!(pair[0].1.len(), 64, "hex HMAC-SHA256");
    let qa2 = session(&qa2_url).await;
    assert_eq!(checksum(&qa2, "public.users").await, checksum(&session(&qa_url).await, "public.users").await);
    // Only EU orders reached the QA copy.
    let eu: i64 = src.query_one("SELECT count(*) FROM orders WHERE region = 'eu'", &[]).await.unwrap().get(0);
    let got: Vec<(i64, i64)> =
        qa.query("SELECT count(*), count(*) FILTER (WHERE region = 'eu') FROM orders", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(eu, eu)]);
    reader.stop().await.unwrap();
}
