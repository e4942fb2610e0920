//! strata-reader against a real PostgreSQL: what is committed is staged
//! exactly once, in commit order, with the values PostgreSQL reports.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use strata_common::pgtext::parse_text;
use strata_common::{Change, Op, TableName, Value};
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_stager::schema::TableSchema;
use strata_tests::pg::PgCluster;
use strata_tests::reader::{RunningReader, config, staged_changes, text_columns, wait_for_changes, wait_for_slot, wait_for_snapshot};
use strata_tests::writer::session;
use tokio_postgres::Client;

/// What the test committed, as PostgreSQL reported it (`col::text`).
#[derive(Debug, Clone)]
struct Expected {
    table: TableName,
    op: Op,
    after: Option<Vec<Option<String>>>,
    before: Option<Vec<Option<String>>>,
    /// The before image holds only the key columns (REPLICA IDENTITY DEFAULT).
    key_only: bool,
}

/// Runs `sql` (which must end without RETURNING) and returns each affected
/// row's columns as text.
async fn returning(c: &Client, sql: &str, table: &TableName) -> Vec<Vec<Option<String>>> {
    let cols = text_columns(c, table).await.unwrap();
    let q = format!("{sql} RETURNING ARRAY[{}]::text[]", cols.join(", "));
    c.query(&q, &[]).await.unwrap_or_else(|e| panic!("{q}: {e}")).iter().map(|r| r.get::<_, Vec<Option<String>>>(0)).collect()
}

fn t(name: &str) -> TableName {
    TableName::new("public", name).unwrap()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits(),
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn check_row(schema: &TableSchema, staged: &[Value], expected: &[Option<String>], key_only: bool, what: &str) {
    assert_eq!(staged.len(), expected.len(), "{what}: column count");
    for ((col, v), e) in schema.columns.iter().zip(staged).zip(expected) {
        let want = match e {
            _ if key_only && !col.key => Value::Null,
            None => Value::Null,
            Some(text) => parse_text(&col.column_type, text).unwrap(),
        };
        assert!(same(v, &want), "{what}: column {:?} ({}) staged {v:?}, committed {want:?}", col.name, col.pg_type);
    }
}

async fn verify(stage: &Stage, expected: &[Expected]) -> Vec<(u64, u32, Change)> {
    let staged = wait_for_changes(stage, "main", expected.len()).await.unwrap();
    let log = StreamLog::new(stage, "main").unwrap();
    let mut schemas: HashMap<(TableName, u32), TableSchema> = HashMap::new();
    assert_eq!(staged.len(), expected.len(), "exactly the committed changes are staged");
    let mut prev: Option<&Change> = None;
    for (i, ((_, version, c), e)) in staged.iter().zip(expected).enumerate() {
        let what = format!("change {i} ({} {} at {}/{})", e.op, e.table, c.lsn, c.ord);
        assert_eq!((&*c.table, c.op), (&e.table, e.op), "{what}: commit order");
        match prev {
            Some(p) if p.lsn == c.lsn => assert_eq!(c.ord, p.ord + 1, "{what}: ordinals are dense"),
            Some(p) => {
                assert!(c.lsn > p.lsn, "{what}: commit LSNs increase");
                assert_eq!(c.ord, 0, "{what}: a transaction starts at ordinal 0");
            }
            None => assert_eq!(c.ord, 0),
        }
        prev = Some(c);
        let key = (c.table.as_ref().clone(), *version);
        if !schemas.contains_key(&key) {
            schemas.insert(key.clone(), log.read_schema(&c.table, *version).await.unwrap());
        }
        let schema = &schemas[&key];
        match (&c.after, &e.after) {
            (Some(s), Some(x)) => check_row(schema, s, x, false, &format!("{what} after")),
            (None, None) => {}
            (s, x) => panic!("{what}: after image staged {s:?}, expected {x:?}"),
        }
        match (&c.before, &e.before) {
            (Some(s), Some(x)) => check_row(schema, s, x, e.key_only, &format!("{what} before")),
            (None, None) => {}
            (s, x) => panic!("{what}: before image staged {s:?}, expected {x:?}"),
        }
    }
    staged
}

fn ins(table: TableName, rows: Vec<Vec<Option<String>>>) -> Vec<Expected> {
    rows.into_iter().map(|r| Expected { table: table.clone(), op: Op::Insert, after: Some(r), before: None, key_only: false }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mapped_type_and_operation_is_staged_exactly_once_in_commit_order() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let c = session(&url).await;
    c.batch_execute(
        r#"
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
        CREATE TABLE all_types (
            id int PRIMARY KEY, b bool, i2 int2, i8 int8, f4 float4, f8 float8, n numeric(12,3), nu numeric,
            t text, vc varchar(10), c char(3), by bytea, d date, tm time, ts timestamp, tz timestamptz,
            iv interval, u uuid, j json, jb jsonb, ai int4[], atx text[], an numeric(5,2)[], e mood, dom posint,
            other inet, "Odd ""Name"" ☃" text);
        CREATE TABLE kv (k text PRIMARY KEY, v text);
        CREATE TABLE full_ident (id int PRIMARY KEY, v text);
        ALTER TABLE full_ident REPLICA IDENTITY FULL;
        CREATE TABLE "Mixed.Case" (x int);
        "#,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(config(&url, dir.path(), "max_rows = 100\n"));
    wait_for_slot(&c, "strata_main").await.unwrap();

    let mut expected = Vec::new();
    let all = t("all_types");
    let kv = t("kv");
    let fi = t("full_ident");
    let mixed = t("Mixed.Case");
    expected.extend(ins(
        all.clone(),
        returning(
            &c,
            r#"INSERT INTO all_types VALUES
              (1, true, 12, 1234567890123, 1.5, 2.25, 123456789.123, 3.14159265358979323846264338327950288419716939937510,
               'plain text', 'varchar', 'ab', '\x00ff', '2026-11-20', '13:45:06.5', '2026-11-20 10:00:00.000001',
               '2026-11-20 10:00:00+02', '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
               '{"a": [1, 2]}', '{"b": null}', '{1,2,3}', '{"x","y z"}', '{1.50,NULL}', 'happy', 7, '10.1.2.3/8', 'odd'),
              (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
              (3, false, -32768, -9223372036854775808, 'NaN', '-Infinity', -999999999.999, 'NaN',
               E'żółw 🐢 "quoted" \\ back', '', '   ', '\x', '4713-01-01 BC', '24:00:00', '-infinity',
               'infinity', '-1 years -2 days +03:04:05.678901', '00000000-0000-0000-0000-000000000000',
               '[]', '{}', '{}', '{"a,b",NULL,"\"",""}', '{}', 'sad', 2147483647, '::1', NULL)"#,
            &all,
        )
        .await,
    ));
    // A multi-statement transaction: one commit LSN, ordinals 0, 1, 2.
    c.batch_execute("BEGIN").await.unwrap();
    expected.extend(ins(kv.clone(), returning(&c, "INSERT INTO kv VALUES ('a', '1'), ('b', '2')", &kv).await));
    let upd = returning(&c, "UPDATE kv SET v = 'x' WHERE k = 'a'", &kv).await;
    expected.push(Expected { table: kv.clone(), op: Op::Update, after: Some(upd[0].clone()), before: None, key_only: true });
    c.batch_execute("COMMIT").await.unwrap();
    // Primary-key change: the old key comes along.
    let upd = returning(&c, "UPDATE kv SET k = 'c' WHERE k = 'b'", &kv).await;
    let old_b = vec![Some("b".to_owned()), Some("2".to_owned())];
    expected.push(Expected { table: kv.clone(), op: Op::Update, after: Some(upd[0].clone()), before: Some(old_b), key_only: true });
    let del = returning(&c, "DELETE FROM kv WHERE k = 'a'", &kv).await;
    expected.push(Expected { table: kv.clone(), op: Op::Delete, after: None, before: Some(del[0].clone()), key_only: true });
    let upd = returning(&c, "UPDATE all_types SET t = 'changed', n = 1.5, ai = NULL WHERE id = 1", &all).await;
    expected.push(Expected { table: all.clone(), op: Op::Update, after: Some(upd[0].clone()), before: None, key_only: true });
    // REPLICA IDENTITY FULL: whole old rows.
    let row = returning(&c, "INSERT INTO full_ident VALUES (1, 'one')", &fi).await;
    expected.extend(ins(fi.clone(), row.clone()));
    let upd = returning(&c, "UPDATE full_ident SET v = 'uno'", &fi).await;
    expected.push(Expected { table: fi.clone(), op: Op::Update, after: Some(upd[0].clone()), before: Some(row[0].clone()), key_only: false });
    let del = returning(&c, "DELETE FROM full_ident", &fi).await;
    expected.push(Expected { table: fi.clone(), op: Op::Delete, after: None, before: Some(del[0].clone()), key_only: false });
    c.batch_execute("TRUNCATE kv").await.unwrap();
    expected.push(Expected { table: kv.clone(), op: Op::Truncate, after: None, before: None, key_only: false });
    expected.extend(ins(kv.clone(), returning(&c, "INSERT INTO kv VALUES ('d', NULL)", &kv).await));
    expected.extend(ins(mixed.clone(), returning(&c, r#"INSERT INTO "Mixed.Case" VALUES (1), (NULL)"#, &mixed).await));
    // Enough single-row transactions to need several batches (max_rows = 100).
    for i in 0..30 {
        let sql = format!(
            "INSERT INTO all_types (id, t, jb) SELECT g, 'bulk ' || g, jsonb_build_object('g', g) FROM generate_series({}, {}) g",
            1000 + i * 10,
            1009 + i * 10
        );
        expected.extend(ins(all.clone(), returning(&c, &sql, &all).await));
    }

    let staged = verify(&Stage::local(dir.path()).unwrap(), &expected).await;
    reader.stop().await.unwrap();
    // Nothing more arrives after a clean stop, and every batch verifies.
    let after_stop = staged_changes(&Stage::local(dir.path()).unwrap(), "main").await.unwrap();
    assert_eq!(after_stop.len(), staged.len());
    let seqs: std::collections::BTreeSet<u64> = staged.iter().map(|(s, _, _)| *s).collect();
    assert!(seqs.len() >= 3, "several batches were cut: {seqs:?}");
    let report = strata_stager::verify::verify_stream(&StreamLog::new(&Stage::local(dir.path()).unwrap(), "main").unwrap()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_untouched_toasted_column_is_staged_as_unchanged() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let c = session(&url).await;
    c.batch_execute("CREATE TABLE doc (id int PRIMARY KEY, body text, n int)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(config(&url, dir.path(), ""));
    wait_for_slot(&c, "strata_main").await.unwrap();
    // ~128 KB of poorly compressible text: stored out of line.
    c.batch_execute("INSERT INTO doc SELECT 1, string_agg(md5(i::text || random()::text), ''), 1 FROM generate_series(1, 4000) i").await.unwrap();
    c.batch_execute("UPDATE doc SET n = 2 WHERE id = 1").await.unwrap();
    let body: String = c.query_one("SELECT body FROM doc", &[]).await.unwrap().get(0);
    let staged = wait_for_changes(&Stage::local(dir.path()).unwrap(), "main", 2).await.unwrap();
    reader.stop().await.unwrap();
    let insert = staged[0].2.after.as_ref().unwrap();
    assert_eq!(insert[1], Value::Text(body));
    let update = &staged[1].2;
    assert_eq!(update.op, Op::Update);
    assert_eq!(update.after.as_ref().unwrap()[1], Value::Unchanged, "the TOASTed body was not sent and is not NULL");
    assert_eq!(update.after.as_ref().unwrap()[2], Value::Int32(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_changes_mid_stream_get_new_versions() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let c = session(&url).await;
    c.batch_execute("CREATE TABLE sc (id int PRIMARY KEY, a text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(config(&url, dir.path(), ""));
    wait_for_slot(&c, "strata_main").await.unwrap();
    // Mid-stream: DDL while the initial copy still runs is another case
    // (a column dropped before the copy reads the table).
    let stage = Stage::local(dir.path()).unwrap();
    wait_for_snapshot(&stage, "main").await.unwrap();
    for sql in [
        "INSERT INTO sc VALUES (1, 'one')",
        "ALTER TABLE sc ADD COLUMN b int",
        "INSERT INTO sc VALUES (2, 'two', 2)",
        "ALTER TABLE sc DROP COLUMN a",
        "INSERT INTO sc VALUES (3, 3)",
        "ALTER TABLE sc ALTER COLUMN b TYPE bigint",
        "INSERT INTO sc VALUES (4, 4)",
        "ALTER TABLE sc RENAME COLUMN b TO c",
        "INSERT INTO sc VALUES (5, 5)",
        "INSERT INTO sc VALUES (6, 6)",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    let staged = match wait_for_changes(&stage, "main", 6).await {
        Ok(staged) => staged,
        Err(e) => panic!("{e:#}; the reader ended with {:?}", reader.stop().await),
    };
    reader.stop().await.unwrap();
    let versions: Vec<u32> = staged.iter().map(|(_, v, _)| *v).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 5], "one version per column change, reused while unchanged");
    let log = StreamLog::new(&stage, "main").unwrap();
    let cols = |s: &TableSchema| s.columns.iter().map(|c| format!("{}:{}", c.name, c.pg_type)).collect::<Vec<_>>().join(",");
    let table = t("sc");
    let mut shapes = Vec::new();
    for v in 1..=5 {
        shapes.push(cols(&log.read_schema(&table, v).await.unwrap()));
    }
    assert_eq!(shapes, vec!["id:integer,a:text", "id:integer,a:text,b:integer", "id:integer,b:integer", "id:integer,b:bigint", "id:integer,c:bigint"]);
    assert_eq!(staged[3].2.after.as_ref().unwrap()[1], Value::Int64(4));
    // Restarting does not mint a new version for an unchanged table.
    let reader = RunningReader::start(config(&url, dir.path(), ""));
    wait_for_slot(&c, "strata_main").await.unwrap();
    c.batch_execute("INSERT INTO sc VALUES (7, 7)").await.unwrap();
    let staged = wait_for_changes(&stage, "main", 7).await.unwrap();
    reader.stop().await.unwrap();
    assert_eq!(staged[6].1, 5);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Asserts the reader's slot confirms the server's current WAL position
/// within 30 s, with nothing to stage.
async fn assert_slot_reaches_wal_end(c: &Client, after: &str) {
    let target: String = c.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    for _ in 0..300 {
        let behind: bool = c
            .query_one("SELECT confirmed_flush_lsn < $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'strata_main'", &[&target])
            .await
            .unwrap()
            .get(0);
        if !behind {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the slot's confirmed_flush_lsn did not reach {target} after WAL from {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_stream_holds_no_wal_back_and_serves_metrics() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let c = session(&url).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE SCHEMA other; CREATE TABLE other.noise (id int, pad text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = strata_tests::process::free_port();
    let mut cfg = config(&url, dir.path(), "");
    cfg.telemetry.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let reader = RunningReader::start(cfg);
    wait_for_slot(&c, "strata_main").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)").await.unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    wait_for_changes(&stage, "main", 3).await.unwrap();

    assert!(strata_tests::http::get(port, "/readyz").await.starts_with("HTTP/1.1 200"));
    assert!(strata_tests::http::get(port, "/healthz").await.starts_with("HTTP/1.1 200"));
    let metrics = strata_tests::http::get(port, "/metrics").await;
    assert!(metrics.contains("strata_reader_changes_total{stream=\"main\"} 3"), "{metrics}");
    // Statements sent in one simple query run as one implicit transaction.
    assert!(metrics.contains("strata_reader_transactions_total{stream=\"main\"} 1"), "{metrics}");
    assert!(metrics.contains("strata_reader_source_lag_bytes{stream=\"main\"}"), "{metrics}");

    // WAL from tables outside the publication: nothing to stage, but the
    // slot must not hold that WAL back.
    c.batch_execute("INSERT INTO other.noise SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g").await.unwrap();
    assert_slot_reaches_wal_end(&c, "a table outside the publication").await;
    // WAL of another database (CREATE DATABASE copies a template into WAL).
    c.batch_execute(&format!("CREATE DATABASE other_{}", uuid::Uuid::new_v4().simple())).await.unwrap();
    assert_slot_reaches_wal_end(&c, "another database").await;
    assert_eq!(staged_changes(&stage, "main").await.unwrap().len(), 3, "unpublished tables are not staged");
    reader.stop().await.unwrap();
}

/// At the default level the reader logs state changes, not protocol
/// traffic: a busy then idle stream writes a few lines, none per standby
/// status update (the replication client logs each at INFO).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_log_level_shows_state_changes_not_protocol_traffic() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let c = session(&url).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = strata_tests::reader::write_config(dir.path(), &url, &dir.path().join("stage"), "").unwrap();
    let log_path = dir.path().join("reader.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata-reader-under-test"))
        .arg("--config")
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_for_slot(&c, "strata_main").await.unwrap();
    for i in 0..200 {
        c.batch_execute(&format!("INSERT INTO t VALUES ({i})")).await.unwrap();
    }
    // Idle: keepalives and status updates keep flowing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().any(|l| l.contains("replication started")), "state changes are logged at INFO:\n{log}");
    assert!(!log.contains("standby status"), "status updates stay at debug:\n{log}");
    // Start-up (lease, endpoints, publication, slot, snapshot, streaming)
    // takes about ten lines; 200 transactions and 6 idle seconds add none.
    assert!(lines.len() <= 25, "{} lines:\n{log}", lines.len());
}

/// A source error retrying cannot heal (here a database that does not
/// exist) ends the reader with a non-zero status and the error, and
/// `reader.json` keeps it after the reader has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_source_error_exits_non_zero_and_stays_in_the_stream_status() {
    let cluster = PgCluster::shared();
    let missing = cluster.url(&format!("db_missing_{}", uuid::Uuid::new_v4().simple()));
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let config_path = strata_tests::reader::write_config(dir.path(), &missing, &stage_dir, "").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata-reader-under-test"))
        .arg("--config")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the reader kept retrying an error that cannot heal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!exit.success(), "exit status {exit}");
    assert!(stderr.contains("does not exist"), "the error is shown: {stderr}");
    let stage = Stage::local(&stage_dir).unwrap();
    let keys = strata_stager::keys::StreamKeys::new("main").unwrap();
    let lease = strata_stager::lease::Leases::new(&stage, keys.reader()).read().await.unwrap().unwrap();
    assert_eq!(lease.value.status["state"], "failed", "{}", lease.value.status);
    assert!(lease.value.status["last_error"].as_str().unwrap().contains("does not exist"), "{}", lease.value.status);
}
