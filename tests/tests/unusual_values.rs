//! Values PostgreSQL accepts but the stage's typed columns cannot hold — a
//! timestamp past 294247 AD, multi-dimensional arrays, `NaN` in a
//! `numeric(p,s)` — in the snapshot and in the stream, in new rows, old rows
//! and primary keys: none stops the reader, each is staged as its exact text
//! beside a NULL typed cell, and a mirror ends equal to the source.

#![allow(clippy::unwrap_used)]

use strata_common::Value;
use strata_tests::pg::PgCluster;
use strata_tests::reader::{RunningReader, config, staged_changes, wait_for_slot};
use strata_tests::writer::{checksum, session, spec, wait_caught_up, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

const FAR_TS: &str = "294276-12-31 23:59:59.999999";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_typed_columns_cannot_hold_reach_a_mirror_exactly() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let mirror_url = cluster.fresh_database().await.unwrap();
    let history_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute(&format!(
        r#"
        CREATE TABLE edge (id int PRIMARY KEY, ts timestamp, tz timestamptz, grid int[], price numeric(10,2), stamps timestamp[], d date);
        ALTER TABLE edge REPLICA IDENTITY FULL;
        CREATE TABLE far_key (k timestamptz PRIMARY KEY, v text);
        INSERT INTO edge VALUES
          (1, '{FAR_TS}', '{FAR_TS}+00', '{{{{1,2}},{{3,4}}}}', 'NaN', '{{"{FAR_TS}","2000-01-01"}}', '5874897-12-31'),
          (2, '2026-01-01', '2026-01-01 00:00+00', '{{1}}', 1.50, '{{}}', 'infinity');
        INSERT INTO far_key VALUES ('294270-06-01 00:00:00+00', 'snapshot'), ('2020-01-01 00:00:00+00', 'ordinary');
        "#
    ))
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = strata_tests::process::free_port();
    let mut cfg = config(&src_url, dir.path(), "max_rows = 3\n");
    cfg.telemetry.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let reader = RunningReader::start(cfg);
    wait_for_slot(&src, "strata_main").await.unwrap();

    for sql in [
        // Non-default bounds on a two-dimensional array, NaN again, and the
        // earliest dates, which the typed columns do hold.
        "INSERT INTO edge VALUES (3, '294276-06-30 00:00:00', '4713-01-01 00:00:00+00 BC', '[0:1][1:2]={{5,6},{7,8}}', 'NaN', NULL, '4713-01-01 BC')",
        "UPDATE edge SET price = 'NaN' WHERE id = 2",
        // Old rows (REPLICA IDENTITY FULL) holding raw values.
        "UPDATE edge SET ts = '2000-01-01' WHERE id = 1",
        "DELETE FROM edge WHERE id = 3",
        "INSERT INTO edge VALUES (4, NULL, NULL, '{{{1}}}', 'NaN', NULL, NULL)",
        // Keys the typed column cannot hold: insert, update, move, delete.
        "INSERT INTO far_key VALUES ('294276-12-31 23:59:59.999999+00', 'stream')",
        "UPDATE far_key SET v = 'updated' WHERE k = '294270-06-01 00:00:00+00'",
        "UPDATE far_key SET k = '294275-01-01 00:00:00+00' WHERE k = '294276-12-31 23:59:59.999999+00'",
        "DELETE FROM far_key WHERE k = '2020-01-01 00:00:00+00'",
        // The stream goes on after them.
        "INSERT INTO edge VALUES (5, '2001-02-03', '2001-02-03 04:05:06+00', '{1,2}', 9.99, '{}', '2001-02-03')",
    ] {
        src.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    wait_staged(&src).await;
    assert!(!reader.is_finished(), "the reader is still running");

    // The stage holds the exact text beside NULL typed cells.
    let staged = staged_changes(&strata_stager::Stage::local(dir.path()).unwrap(), "main").await.unwrap();
    let raw: Vec<&str> = staged
        .iter()
        .flat_map(|(_, _, c)| c.after.iter().chain(c.before.iter()).flatten())
        .filter_map(|v| match v {
            Value::Raw(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    for text in [FAR_TS, "{{1,2},{3,4}}", "[0:1][1:2]={{5,6},{7,8}}", "NaN", "294276-06-30 00:00:00", "294276-12-31 23:59:59.999999+00"] {
        assert!(raw.contains(&text), "{text} is staged as raw text: {raw:?}");
    }
    let metrics = strata_tests::http::get(port, "/metrics").await;
    assert!(metrics.contains(r#"strata_reader_values_staged_as_text_total{stream="main",table="public.edge",column="price"} 7"#), "{metrics}");

    let writer_cfg = config(&src_url, dir.path(), "");
    let token = CancellationToken::new();
    let t = token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&writer_cfg, t).await });
    let stage = strata_stager::Stage::local(dir.path()).unwrap();
    strata_writer::control::add(&stage, &spec("mirror", &mirror_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    strata_writer::control::add(&stage, &spec("history", &history_url, StartPosition::Earliest, PostgresMode::History)).await.unwrap();
    wait_caught_up(&stage, "mirror").await;
    wait_caught_up(&stage, "history").await;

    let mirror = session(&mirror_url).await;
    for (table, rows) in [("edge", 4), ("far_key", 2)] {
        let expected = checksum(&src, table).await;
        assert_eq!(expected.0, rows, "{table} has rows to compare");
        assert_eq!(checksum(&mirror, table).await, expected, "{table} in the mirror equals the source");
    }
    // The history holds every staged change of edge, raw values exact.
    let history = session(&history_url).await;
    let staged_edge = staged.iter().filter(|(_, _, c)| c.table.name == "edge").count() as i64;
    let rows: i64 = history.query_one("SELECT count(*) FROM edge", &[]).await.unwrap().get(0);
    assert_eq!(rows, staged_edge);
    let far: i64 = history
        .query_one(&format!("SELECT count(*) FROM edge WHERE ts = '{FAR_TS}' AND price = 'NaN' AND grid = '{{{{1,2}},{{3,4}}}}'"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(far, 1, "the snapshot read of row 1 keeps every raw value");

    token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();
}
