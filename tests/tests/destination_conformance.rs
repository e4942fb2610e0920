//! The destination conformance suite: the same cases for every destination
//! (and mode), through the `Destination` trait alone.
//!
//! - ordering: changes to one key in one batch and across batches end as
//!   the last one says;
//! - idempotency: a batch delivered again (a redelivery after a crash) is
//!   not applied twice;
//! - restart: a new instance resumes from the position the destination
//!   holds, and batches at or below it are no-ops.
//!
//! Message destinations (webhook, stdout) are at-least-once: the same cases
//! check that a redelivery is byte-identical under the same key, so a
//! receiver that deduplicates sees every change once, in commit order.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};
use strata_tests::pg::PgCluster;
use strata_tests::writer::session;
use strata_writer::destinations::postgres::PostgresSink;
use strata_writer::destinations::{Batch, Destination, TableBatch};
use strata_writer::spec::{PostgresMode, PostgresSpec};

fn schema() -> Arc<TableSchema> {
    let col = |name: &str, pg_type: &str, oid: u32, ty: ColumnType, key: bool| ColumnSchema {
        name: name.to_owned(),
        pg_type: pg_type.to_owned(),
        type_oid: oid,
        type_modifier: -1,
        column_type: ty,
        key,
        attnum: None,
        former_names: Vec::new(),
        missing_value: None,
    };
    Arc::new(TableSchema {
        format: 1,
        stream: "main".to_owned(),
        table: TableName::new("public", "Conf \"table\"").unwrap(),
        version: 1,
        relation_oid: None,
        replica_identity: ReplicaIdentity::Default,
        columns: vec![col("id", "integer", 23, ColumnType::Int32, true), col("v", "text", 25, ColumnType::Text, false)],
        since_lsn: None,
        database: None,
        relfilenode: None,
        generated: Vec::new(),
    })
}

fn change(op: Op, lsn: u64, ord: u32, id: i32, v: Option<&str>) -> Change {
    let row = vec![Value::Int32(id), v.map_or(Value::Null, |v| Value::Text(v.to_owned()))];
    let key = vec![Value::Int32(id), Value::Null];
    Change {
        op,
        table: Arc::new(schema().table.clone()),
        lsn: Lsn(lsn),
        ord,
        xid: Some(lsn as u32),
        commit_ts: Timestamp(1_790_000_000_000_000 + lsn as i64),
        after: matches!(op, Op::Insert | Op::Update).then_some(row),
        before: matches!(op, Op::Delete).then_some(key),
    }
}

fn batch(seq: u64, changes: Vec<Change>) -> Batch {
    let lsn_end = changes.iter().map(|c| c.lsn).max().unwrap();
    Batch {
        seq,
        first_seq: seq,
        stream: "main".to_owned(),
        lsn_end,
        commit_ts_min: changes[0].commit_ts,
        commit_ts_max: changes.last().unwrap().commit_ts,
        staged_at: changes.last().unwrap().commit_ts,
        staged_bytes: 0,
        tables: vec![TableBatch { schema: schema(), changes }],
        files: Vec::new(),
        part: None,
        snapshot_points: Vec::new(),
    }
}

/// What a mirror must hold after the batches, and the changes a history must hold.
fn batches() -> Vec<Batch> {
    vec![
        batch(
            1,
            vec![
                change(Op::Insert, 10, 0, 1, Some("a")),
                change(Op::Insert, 10, 1, 2, Some("b")),
                // Several changes to one key in one batch: the last wins.
                change(Op::Update, 20, 0, 1, Some("a2")),
                change(Op::Update, 30, 0, 1, Some("a3")),
            ],
        ),
        batch(2, vec![change(Op::Delete, 40, 0, 2, None), change(Op::Insert, 50, 0, 3, Some("c"))]),
        batch(3, vec![change(Op::Insert, 60, 0, 2, Some("b again")), change(Op::Update, 70, 0, 3, Some("c2"))]),
    ]
}

const MIRROR: &[(i32, &str)] = &[(1, "a3"), (2, "b again"), (3, "c2")];
const CHANGES: i64 = 8;

async fn connect(url: &str, name: &str, mode: PostgresMode) -> PostgresSink {
    PostgresSink::connect(name, &PostgresSpec { url: url.to_owned(), mode }).await.unwrap()
}

async fn check(url: &str, mode: PostgresMode) {
    let c = session(url).await;
    match mode {
        PostgresMode::Mirror => {
            let rows: Vec<(i32, String)> =
                c.query(r#"SELECT id, v FROM public."Conf ""table""" ORDER BY id"#, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
            let want: Vec<(i32, String)> = MIRROR.iter().map(|(i, v)| (*i, (*v).to_owned())).collect();
            assert_eq!(rows, want);
        }
        PostgresMode::History => {
            let n: i64 = c.query_one(r#"SELECT count(*) FROM public."Conf ""table""""#, &[]).await.unwrap().get(0);
            assert_eq!(n, CHANGES, "every change once");
        }
    }
}

async fn conformance(mode: PostgresMode) {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let mut d = connect(&url, "conf", mode).await;
    assert_eq!(d.durable_seq().await.unwrap(), None, "a new destination holds nothing");
    let all = batches();
    d.apply(&all[0]).await.unwrap();
    d.apply(&all[1]).await.unwrap();
    // Redelivery of what is already durable (a crash before the cursor moved).
    d.apply(&all[0]).await.unwrap();
    d.apply(&all[1]).await.unwrap();
    assert_eq!(d.durable_seq().await.unwrap(), Some(2));
    drop(d);
    // Restart: a new instance resumes from the destination's own position.
    let mut d = connect(&url, "conf", mode).await;
    assert_eq!(d.durable_seq().await.unwrap(), Some(2));
    d.apply(&all[1]).await.unwrap();
    d.apply(&all[2]).await.unwrap();
    assert_eq!(d.durable_seq().await.unwrap(), Some(3));
    check(&url, mode).await;
    // Another destination in the same database keeps its own position.
    let mut other = connect(&url, "other", mode).await;
    assert_eq!(other.durable_seq().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mirror_conforms() {
    conformance(PostgresMode::Mirror).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_history_conforms() {
    conformance(PostgresMode::History).await;
}

/// Message destinations are at-least-once: a redelivered batch is sent
/// again, with the same idempotency key and the same bytes, and a receiver
/// that deduplicates on the key (or the envelope ids) sees every change
/// once, first appearances in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_conforms() {
    use strata_tests::http::TestServer;
    use strata_writer::destinations::webhook::WebhookSink;
    use strata_writer::destinations::webhook::config::WebhookSpec;

    let server = TestServer::start(|_, _| (200, vec![])).await.unwrap();
    let mut spec = WebhookSpec::new(server.url("/conf"), None);
    spec.batch_size = 3;
    let mut d = WebhookSink::connect(&spec).unwrap();
    assert_eq!(d.durable_seq().await.unwrap(), None, "the cursor object is the position");
    let all = batches();
    d.apply(&all[0]).await.unwrap();
    d.apply(&all[1]).await.unwrap();
    d.apply(&all[0]).await.unwrap();
    drop(d);
    let mut d = WebhookSink::connect(&spec).unwrap();
    d.apply(&all[1]).await.unwrap();
    d.apply(&all[2]).await.unwrap();
    assert!(d.rejects(&all[0]).await.is_err(), "a webhook cannot be probed for rejects without delivering");

    let mut by_key = std::collections::HashMap::new();
    let mut ids = Vec::new();
    for r in server.requests() {
        let key = r.headers["idempotency-key"].clone();
        if let Some(previous) = by_key.insert(key.clone(), r.body.clone()) {
            assert!(previous == r.body, "redelivery of {key} is byte-identical");
            continue;
        }
        let body: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap();
        assert!(body.len() <= 3);
        ids.extend(body.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
    }
    let want: Vec<String> = all.iter().flat_map(|b| b.tables[0].changes.iter().map(|c| format!("main:{}:{}", c.lsn.as_u64(), c.ord))).collect();
    assert_eq!(ids, want, "every change once after dedup, in commit order");
}

/// stdout prints a batch's changes in commit order across tables.
#[test]
fn stdout_orders_a_batch_across_tables() {
    let mut b = batch(1, vec![change(Op::Insert, 10, 0, 1, Some("a")), change(Op::Insert, 30, 0, 3, Some("c"))]);
    let mut other = b.tables[0].clone();
    other.changes = vec![change(Op::Insert, 20, 0, 2, Some("b")), change(Op::Insert, 10, 1, 4, Some("d"))];
    b.tables.push(other);
    let lines = strata_writer::destinations::stdout::sink::lines(&b, Default::default());
    let ids: Vec<String> =
        String::from_utf8(lines).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["main:10:0", "main:10:1", "main:20:0", "main:30:0"]);
}

/// Every change's id, in commit order.
fn all_ids() -> Vec<String> {
    batches().iter().flat_map(|b| b.tables[0].changes.iter().map(|c| format!("main:{}:{}", c.lsn.as_u64(), c.ord))).collect()
}

/// The same deliveries as the other message destinations: two batches, the
/// first again, a new instance, the second again and the third.
async fn deliver_with_redelivery<D: Destination>(mut connect: impl AsyncFnMut() -> D) {
    let all = batches();
    let mut d = connect().await;
    assert_eq!(d.durable_seq().await.unwrap(), None, "the cursor object is the position");
    d.apply(&all[0]).await.unwrap();
    d.apply(&all[1]).await.unwrap();
    d.apply(&all[0]).await.unwrap();
    drop(d);
    let mut d = connect().await;
    d.apply(&all[1]).await.unwrap();
    d.apply(&all[2]).await.unwrap();
    assert!(d.rejects(&all[0]).await.unwrap().is_empty(), "nothing in these batches is too large or refused");
}

/// SQS is at-least-once: a FIFO queue drops a redelivery itself (the
/// deduplication id is the change id) and keeps each key's changes in
/// commit order; on a standard queue every change arrives, duplicates
/// carry the same id.
async fn sqs_conformance(queue: &str) {
    use strata_tests::emulator::Emulator;
    use strata_tests::sqs::{Sqs, first_ids};
    use strata_writer::destinations::sqs::SqsSink;
    use strata_writer::destinations::sqs::config::SqsSpec;

    let emulator = Emulator::start().await.unwrap();
    let sqs = Sqs::new(&emulator).await;
    let url = sqs.create_queue(queue, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage = strata_stager::Stage::local(dir.path()).unwrap();
    let sdk = Sqs::sdk_config(&emulator).await;
    let mut spec = SqsSpec::new(url.clone());
    spec.batch_size = 3;
    spec.in_flight = 2;
    deliver_with_redelivery(async || SqsSink::with_sdk_config("conf", &spec, &stage, &sdk).await.unwrap()).await;

    let received = sqs.drain(&url, std::time::Duration::from_secs(1), 1000).await.unwrap();
    let mut want = all_ids();
    let fifo = queue.ends_with(".fifo");
    if fifo {
        assert_eq!(received.len(), want.len(), "the FIFO queue dropped every redelivery by its deduplication id");
        // Per key: commit order. Keys are the groups.
        let mut by_group: std::collections::HashMap<String, Vec<String>> = Default::default();
        for r in &received {
            let group = r.group.clone().expect("a FIFO message has a group");
            assert_eq!(group, format!("public.Conf%20%22table%22:[{}]", r.body["after"]["id"].as_i64().or(r.body["before"]["id"].as_i64()).unwrap()));
            by_group.entry(group).or_default().push(r.body["id"].as_str().unwrap().to_owned());
        }
        for ids in by_group.values() {
            let mut sorted = ids.clone();
            sorted.sort_by_key(|id| want.iter().position(|w| w == id));
            assert_eq!(ids, &sorted, "one key's changes in commit order");
        }
    } else {
        assert!(received.len() >= want.len());
    }
    let mut got = first_ids(&received);
    got.sort();
    want.sort();
    assert_eq!(got, want, "every change once after dedup by id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fifo_conforms() {
    sqs_conformance("conf.fifo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_standard_conforms() {
    sqs_conformance("conf").await;
}

/// Files are named by the first batch they hold, so a redelivery writes the
/// same files again: every change is in exactly one file, and the files in
/// name order hold the changes in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_conform() {
    use strata_writer::destinations::files::FilesSink;
    use strata_writer::destinations::files::config::{FileFormat, FilesSpec};

    let dir = tempfile::tempdir().unwrap();
    let spec = FilesSpec::new(dir.path().display().to_string(), FileFormat::Jsonl);
    deliver_with_redelivery(async || FilesSink::connect(&spec).unwrap()).await;
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { files.push(p) }
        }
    }
    files.sort_by_key(|p| p.file_name().unwrap().to_owned());
    assert_eq!(files.len(), 3, "one file per batch: {files:?}");
    let ids: Vec<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, all_ids(), "every change once, in commit order");
}
