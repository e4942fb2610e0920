//! DDL that gives existing rows values without any WAL change: a column
//! added with a default (PostgreSQL's "missing value", no rewrite), a
//! volatile default, a stored generated column and a type change `USING` an
//! expression (all three rewrite the table). Under a concurrent workload, a
//! mirror must end equal to the source, and a history must show the rows the
//! rewrites changed as reads of the backfill that follows them.
//!
//! PostgreSQL 15's pgoutput never sends generated columns: the mirror
//! defines them with the source's expression and computes them itself, as
//! a native subscriber does, so the comparison covers them too.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_reader::backfill::{BackfillState, list};
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::pg::PgCluster;
use strata_tests::reader::{RunningReader, config, wait_for_slot};
use strata_tests::writer::{checksum, session, spec, wait_caught_up, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

/// Waits until at least `n` backfills were requested and all are done.
async fn wait_backfills(log: &StreamLog, n: usize) {
    for _ in 0..1200 {
        let all = list(log).await.unwrap();
        if let Some(failed) = all.iter().find(|r| r.value.state == BackfillState::Failed) {
            panic!("backfill of {} failed: {:?}", failed.value.table, failed.value.error);
        }
        if all.len() >= n && all.iter().all(|r| r.value.state == BackfillState::Done) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} backfills were not requested and done within 120 s");
}

/// Every row of `t` in its text form.
async fn rows(c: &tokio_postgres::Client) -> std::collections::BTreeSet<String> {
    let r = c.query("SELECT t::text FROM t", &[]).await.unwrap();
    r.iter().map(|r| r.get::<_, String>(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn columns_filled_without_wal_changes_reach_the_mirror() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let mirror_url = cluster.fresh_database().await.unwrap();
    let history_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 300) g;
         CREATE TABLE m (id int PRIMARY KEY, v text); INSERT INTO m SELECT g, 'row ' || g FROM generate_series(1, 200) g;
         CREATE TABLE gen (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED, b text);
         INSERT INTO gen (id, a, b) SELECT g, g, 'x' FROM generate_series(1, 50) g;
         CREATE TABLE odd (id int PRIMARY KEY, ts timestamp, grid int[], price numeric(10,2));
         INSERT INTO odd SELECT g, CASE WHEN g % 2 = 0 THEN '294276-12-31 23:59:59.999999' ELSE '2000-01-01' END::timestamp,
           CASE WHEN g % 3 = 0 THEN '{{1,2},{3,4}}' ELSE '{5}' END::int[], CASE WHEN g % 5 = 0 THEN 'NaN'::numeric ELSE g END
           FROM generate_series(1, 100) g",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(config(&src_url, dir.path(), "max_rows = 40\n"));
    wait_for_slot(&src, "strata_main").await.unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    let token = CancellationToken::new();
    let t = token.clone();
    let writer_cfg = config(&src_url, dir.path(), "");
    let writer = tokio::spawn(async move { strata_writer::run::run(&writer_cfg, t).await });
    strata_writer::control::add(&stage, &spec("mirror", &mirror_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    strata_writer::control::add(&stage, &spec("history", &history_url, StartPosition::Earliest, PostgresMode::History)).await.unwrap();

    // A workload on other rows throughout, values typed columns cannot hold included.
    let stop = Arc::new(AtomicBool::new(false));
    let workload = {
        let (url, stop) = (src_url.clone(), stop.clone());
        tokio::spawn(async move {
            let c = session(&url).await;
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) && i < 3000 {
                c.batch_execute(&format!(
                    "INSERT INTO t (id, v) VALUES ({i}, 'w'); UPDATE t SET v = v || '.' WHERE id = {prev};
                     INSERT INTO odd (id, ts, grid, price) VALUES ({i}, '294276-06-0{d} 00:00:00', '[0:1][1:1]={{{{{i}}},{{7}}}}', 'NaN');
                     UPDATE odd SET price = 'NaN', grid = '{{{{1}},{{2}}}}' WHERE id = {prev}",
                    prev = i - 1,
                    d = 1 + i % 9
                ))
                .await
                .unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Table m sees only missing values: nothing is backfilled, so only the
    // recorded values can make its mirror equal.
    for ddl in [
        "ALTER TABLE m ADD COLUMN c int DEFAULT 42",
        "ALTER TABLE m ADD COLUMN s timestamptz DEFAULT now(), ADD COLUMN q text DEFAULT E'it''s a \\\\ {x}', ADD COLUMN a int[] DEFAULT '{1,2}'",
        "ALTER TABLE m ADD COLUMN e text DEFAULT NULL",
        // A missing value that the typed column cannot hold either.
        "ALTER TABLE odd ADD COLUMN far timestamp DEFAULT '294276-12-31 23:59:59'",
    ] {
        src.batch_execute(ddl).await.unwrap_or_else(|e| panic!("{ddl}: {e}"));
        src.batch_execute("UPDATE m SET v = v || '*' WHERE id = 1").await.unwrap();
    }
    for ddl in [
        // Missing values: no rewrite, existing rows read the default.
        "ALTER TABLE t ADD COLUMN c int DEFAULT 42",
        "ALTER TABLE t ADD COLUMN s timestamptz DEFAULT now(), ADD COLUMN q text DEFAULT E'it''s a \\\\ {x}'",
        "ALTER TABLE t ADD COLUMN a int[] DEFAULT '{1,2}'",
        // Rewrites: every existing row gets a value of its own.
        "ALTER TABLE t ADD COLUMN r timestamptz DEFAULT clock_timestamp()",
        "ALTER TABLE t ADD COLUMN g bigint GENERATED ALWAYS AS (id * 2) STORED",
        "ALTER TABLE t ALTER COLUMN c TYPE bigint USING c * 10 + id",
        "ALTER TABLE odd ADD COLUMN r timestamptz DEFAULT clock_timestamp()",
    ] {
        src.batch_execute(ddl).await.unwrap_or_else(|e| panic!("{ddl}: {e}"));
        // A change after it, so pgoutput sends the new relation.
        src.batch_execute("UPDATE t SET v = v || '*' WHERE id = 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    src.batch_execute("UPDATE gen SET a = a + 100 WHERE id <= 10; INSERT INTO gen (id, a, b) VALUES (51, 7, 'y')").await.unwrap();
    stop.store(true, Ordering::Relaxed);
    workload.await.unwrap();
    src.batch_execute("UPDATE t SET v = 'last' WHERE id = 2").await.unwrap();
    wait_staged(&src).await;
    let log = StreamLog::new(&stage, "main").unwrap();
    wait_backfills(&log, 1).await;
    wait_staged(&src).await;
    wait_caught_up(&stage, "mirror").await;
    wait_caught_up(&stage, "history").await;

    let mirror = session(&mirror_url).await;
    assert!(list(&log).await.unwrap().iter().all(|r| r.value.table.name != "m"), "m was never rewritten, so never backfilled");
    let expected_m = checksum(&src, "public.m").await;
    assert_eq!(expected_m.0, 200);
    assert_eq!(checksum(&mirror, "public.m").await, expected_m, "existing rows of m got the missing values");
    // Created at the mirror with its generated column in place.
    let expected_gen = checksum(&src, "public.gen").await;
    assert_eq!(expected_gen.0, 51);
    assert_eq!(checksum(&mirror, "public.gen").await, expected_gen, "generated columns are computed at the mirror");
    let expected_odd = checksum(&src, "public.odd").await;
    assert!(expected_odd.0 > 100, "{} rows", expected_odd.0);
    assert_eq!(checksum(&mirror, "public.odd").await, expected_odd, "odd values, DDL and workload: the mirror equals the source");
    eprintln!("mirror equals source: t {expected:?}, m {expected_m:?}, odd {expected_odd:?}", expected = checksum(&src, "public.t").await);
    let expected = checksum(&src, "public.t").await;
    assert!(expected.0 > 300, "{} rows", expected.0);
    if checksum(&mirror, "public.t").await != expected {
        let (a, b) = (rows(&src).await, rows(&mirror).await);
        let only_src: Vec<_> = a.difference(&b).take(5).collect();
        let only_mirror: Vec<_> = b.difference(&a).take(5).collect();
        panic!("the mirror differs from the source:\nsource only: {only_src:#?}\nmirror only: {only_mirror:#?}");
    }
    let history = session(&history_url).await;
    let reads: i64 = history.query_one("SELECT count(*) FROM t WHERE _strata_op = 'r' AND r IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(reads >= 300, "the history shows the rewritten rows as backfill reads ({reads})");

    token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();
}
