//! End to end: source → strata-reader → stage → strata-writer → Postgres
//! destination, checked by per-table checksums.

#![allow(clippy::unwrap_used)]

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::fixtures::{ALL_TYPES_DDL, ALL_TYPES_ROWS};
use strata_tests::pg::PgCluster;
use strata_tests::reader::{RunningReader, config_text_for, wait_for_slot};
use strata_tests::writer::{checksum, session, spec, wait_caught_up, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

const TABLES: [&str; 4] = ["public.all_types", "public.kv", "public.doc", "public.\"Mixed.Case\""];

fn cfg(db_url: &str, stage: &str, extra: &str) -> Config {
    Config::from_toml("test config", &config_text_for(db_url, stage, extra), &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_on_a_local_stage() {
    let dir = tempfile::tempdir().unwrap();
    let stage_toml = format!("url = {:?}\n", dir.path().display().to_string());
    mixed_workload_reaches_destinations(&stage_toml, Stage::local(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_on_an_s3_stage() {
    let emulator = strata_tests::emulator::Emulator::start().await.unwrap();
    let (stage_toml, stage) = emulator.stage_config("strata").await.unwrap();
    mixed_workload_reaches_destinations(&stage_toml, stage).await;
}

/// A mixed workload reaches a mirror destination, and a destination added
/// later catches up from `earliest`, with no restart of anything.
async fn mixed_workload_reaches_destinations(stage_toml: &str, stage: Stage) {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let dst_url = cluster.fresh_database().await.unwrap();
    let late_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute(ALL_TYPES_DDL).await.unwrap();
    src.batch_execute(
        r#"
        CREATE TABLE kv (k text PRIMARY KEY, v text);
        CREATE TABLE doc (id int PRIMARY KEY, body text, n int);
        CREATE TABLE "Mixed.Case" (x int, y text);
        ALTER TABLE "Mixed.Case" REPLICA IDENTITY FULL;
        "#,
    )
    .await
    .unwrap();
    let reader = RunningReader::start(cfg(&src_url, stage_toml, "max_rows = 50\n"));
    wait_for_slot(&src, "strata_main").await.unwrap();

    let writer_cfg = cfg(&src_url, stage_toml, "");
    let writer_token = CancellationToken::new();
    let wt = writer_token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&writer_cfg, wt).await });
    strata_writer::control::add(&stage, &spec("mirror", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();

    src.batch_execute(ALL_TYPES_ROWS).await.unwrap();
    src.batch_execute(
        r#"
        INSERT INTO kv SELECT 'k' || g, 'v' || g FROM generate_series(1, 300) g;
        INSERT INTO doc SELECT 1, string_agg(md5(i::text || random()::text), ''), 1 FROM generate_series(1, 4000) i;
        INSERT INTO "Mixed.Case" VALUES (1, 'a'), (1, 'a'), (2, NULL);
        "#,
    )
    .await
    .unwrap();
    for sql in [
        "UPDATE kv SET v = 'changed' WHERE k IN ('k1', 'k2', 'k3')",
        "UPDATE kv SET k = 'moved' WHERE k = 'k4'",
        "DELETE FROM kv WHERE k IN ('k5', 'k6')",
        "BEGIN; UPDATE kv SET v = 'twice' WHERE k = 'k7'; UPDATE kv SET v = 'thrice' WHERE k = 'k7'; DELETE FROM kv WHERE k = 'k8'; INSERT INTO kv VALUES ('k8', 'back'); COMMIT",
        "UPDATE doc SET n = 2",
        "UPDATE doc SET id = 10",
        "UPDATE all_types SET t = 'changed', ai = '{}' WHERE id = 1",
        "DELETE FROM all_types WHERE id = 2",
        "DELETE FROM \"Mixed.Case\" WHERE x = 1 AND y = 'a'",
        "UPDATE \"Mixed.Case\" SET y = 'b' WHERE x = 2",
        "ALTER TABLE kv ADD COLUMN extra int",
        "UPDATE kv SET extra = 7 WHERE k = 'k9'",
        "INSERT INTO kv VALUES ('new', 'row', 8)",
        // A rename keeps the column's values at the destination.
        "ALTER TABLE kv RENAME COLUMN v TO val",
        "UPDATE kv SET val = 'renamed' WHERE k = 'k10'",
        "ALTER TABLE all_types DROP COLUMN other",
        "UPDATE all_types SET b = NOT coalesce(b, false)",
        "TRUNCATE \"Mixed.Case\"",
        "INSERT INTO \"Mixed.Case\" VALUES (9, 'after truncate')",
    ] {
        src.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    wait_staged(&src).await;
    wait_caught_up(&stage, "mirror").await;
    let dst = session(&dst_url).await;
    for t in TABLES {
        let expected = checksum(&src, t).await;
        assert!(expected.0 > 0, "{t} has rows to compare");
        assert_eq!(checksum(&dst, t).await, expected, "{t} equals the source");
    }
    let columns =
        |c: &'static str| format!("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = '{c}'");
    let names: String = dst.query_one(&columns("kv"), &[]).await.unwrap().get(0);
    assert_eq!(names, "k,val,extra", "the renamed column kept its place and values");

    // A destination added while everything runs catches up from earliest,
    // onto a database that already holds some of the rows, with other
    // values: inserts of keys it holds take the upsert path.
    let late = session(&late_url).await;
    late.batch_execute("CREATE TABLE kv (k text PRIMARY KEY, v text); INSERT INTO kv SELECT 'k' || g, 'stale' FROM generate_series(20, 30) g").await.unwrap();
    strata_writer::control::add(&stage, &spec("late", &late_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    wait_caught_up(&stage, "late").await;
    for t in TABLES {
        assert_eq!(checksum(&late, t).await, checksum(&src, t).await, "{t} equals the source in the late destination");
    }
    // Exactly once: the cursor row moved with every batch, in the same transactions.
    let head = StreamLog::new(&stage, "main").unwrap().head(None).await.unwrap().unwrap();
    let seq: i64 = dst.query_one("SELECT seq FROM strata.cursors WHERE destination = 'mirror'", &[]).await.unwrap().get(0);
    assert_eq!(seq as u64, head);

    writer_token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();
}
