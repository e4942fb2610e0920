//! The reader as the least-privilege role of the README: REPLICATION, USAGE
//! on the schema and SELECT on the published tables, with a publication an
//! administrator created. The whole pipeline runs; with one privilege
//! taken away the reader exits non-zero naming it and its object.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use strata_common::TableName;
use strata_common::config::Config;
use strata_stager::Stage;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, config_text, wait_backfill_done, wait_for_slot};
use strata_tests::writer::assert_mirror_equals_source;

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");

/// A source database with two published tables and one that is not, and a
/// login role (unique in the cluster) with only REPLICATION. Returns the
/// superuser URL, the role's URL and the role's name.
async fn source_and_role() -> (String, String, String) {
    let cluster = PgCluster::shared();
    let db = cluster.create_database().await.unwrap();
    let admin = cluster.connect(&db).await.unwrap();
    let role = format!("strata_lp_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    admin
        .batch_execute(&format!(
            "CREATE TABLE orders (id int PRIMARY KEY, note text); \
             CREATE TABLE items (order_id int, n int, PRIMARY KEY (order_id, n)); \
             CREATE TABLE payroll (id int PRIMARY KEY, salary numeric); \
             INSERT INTO orders SELECT g, 'o' || g FROM generate_series(1, 400) g; \
             INSERT INTO items SELECT g, k FROM generate_series(1, 400) g, generate_series(1, 3) k; \
             CREATE ROLE {role} LOGIN REPLICATION"
        ))
        .await
        .unwrap();
    let role_url = format!("postgres://{role}@127.0.0.1:{}/{db}", cluster.port);
    (cluster.url(&db), role_url, role)
}

fn reader_config(dir: &std::path::Path, url: &str) -> (std::path::PathBuf, String) {
    let text = config_text(url, &dir.join("stage"), "max_rows = 200\n").replace("[\"public.*\"]", "[\"public.orders\", \"public.items\"]");
    let path = dir.join("strata.toml");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

/// Runs the reader binary until it exits (at most 30 s); its status and stderr.
async fn reader_exit(config: &std::path::Path) -> (std::process::ExitStatus, String) {
    let child = tokio::process::Command::new(READER)
        .args(["--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out =
        tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("the reader exits by itself on a missing privilege").unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_runs_as_the_least_privilege_role() {
    let (admin_url, role_url, role) = source_and_role().await;
    let admin = connect(&admin_url).await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE PUBLICATION strata_main FOR TABLE orders, items; \
             GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON orders, items TO {role}"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config_path, text) = reader_config(dir.path(), &role_url);
    let reader = RunningReader::start(Config::from_toml("t", &text, &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin
        .batch_execute(
            "INSERT INTO orders SELECT g, 'late ' || g FROM generate_series(401, 600) g; \
             UPDATE orders SET note = note || '!' WHERE id % 5 = 0; DELETE FROM items WHERE n = 2 AND order_id % 3 = 0; \
             INSERT INTO payroll VALUES (1, 100)",
        )
        .await
        .unwrap();
    let out = std::process::Command::new(READER).args(["--config", config_path.to_str().unwrap(), "backfill", "--table", "public.orders"]).output().unwrap();
    assert!(out.status.success(), "backfill request as the role: {}", String::from_utf8_lossy(&out.stderr));
    let stage_dir = dir.path().join("stage");
    let stage = Stage::local(&stage_dir).unwrap();
    wait_backfill_done(&stage, &TableName::parse("public.orders").unwrap()).await;
    assert!(!reader.is_finished(), "the reader runs as {role}");
    assert_mirror_equals_source(&stage, &stage_dir, &admin_url, &["public.orders", "public.items"], 500).await;
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_privilege_is_named_with_its_object() {
    let (admin_url, role_url, role) = source_and_role().await;
    let admin = connect(&admin_url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config_path, _) = reader_config(dir.path(), &role_url);

    // No publication, and the role may neither create one nor publish tables it does not own.
    let (status, stderr) = reader_exit(&config_path).await;
    assert!(!status.success(), "{stderr}");
    for part in ["publication \"strata_main\" does not exist", "CREATE on database", "ownership of table public.orders", "administrator"] {
        assert!(stderr.contains(part), "names {part:?}: {stderr}");
    }

    // The publication exists; SELECT on one table is missing.
    admin
        .batch_execute(&format!(
            "CREATE PUBLICATION strata_main FOR TABLE orders, items; \
             GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON orders TO {role}"
        ))
        .await
        .unwrap();
    let (status, stderr) = reader_exit(&config_path).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("SELECT on table public.items (GRANT SELECT ON \"public\".\"items\" TO \"{role}\")")), "{stderr}");
    assert!(!stderr.contains("public.orders"), "only what is missing is named: {stderr}");

    // Without REPLICATION.
    admin.batch_execute(&format!("GRANT SELECT ON items TO {role}; ALTER ROLE {role} NOREPLICATION")).await.unwrap();
    let (status, stderr) = reader_exit(&config_path).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("may not start replication") && stderr.contains("REPLICATION"), "{stderr}");
}
