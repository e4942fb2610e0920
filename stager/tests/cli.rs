//! `strata-stage` as a user runs it: exit codes, messages, no panics.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::sync::Arc;

use bytes::Bytes;
use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::Stage;
use strata_stager::control::{BackfillRequest, BackfillState, Phase, SnapshotState, TablePoint};
use strata_stager::log::{StreamLog, TableBatch};
use strata_stager::manifest::{BatchKind, Manifest};
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};

fn strata_stage(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata-stage")).args(args).arg("--stage").arg(dir).env_remove("RUST_LOG").output().expect("running strata-stage")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn three_batches(stage: &Stage) -> Vec<Manifest> {
    let table = TableName::new("public", "orders").unwrap();
    let schema = Arc::new(TableSchema {
        format: 1,
        stream: "main".to_owned(),
        table: table.clone(),
        version: 1,
        relation_oid: None,
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            ColumnSchema {
                name: "id".to_owned(),
                pg_type: "integer".to_owned(),
                type_oid: 23,
                type_modifier: -1,
                column_type: ColumnType::Int32,
                key: true,
                attnum: None,
                former_names: Vec::new(),
                missing_value: None,
            },
            ColumnSchema {
                name: "total".to_owned(),
                pg_type: "numeric(10,2)".to_owned(),
                type_oid: 1700,
                type_modifier: (10 << 16 | 2) + 4,
                column_type: ColumnType::Decimal { precision: 10, scale: 2 },
                key: false,
                attnum: None,
                former_names: Vec::new(),
                missing_value: None,
            },
        ],
        since_lsn: None,
        database: None,
        relfilenode: None,
        generated: Vec::new(),
    });
    let log = StreamLog::new(stage, "main").unwrap();
    log.write_schema(&schema).await.unwrap();
    let table = Arc::new(table);
    let mut out = Vec::new();
    let mut start = Lsn(0);
    for seq in 1..=3u64 {
        let changes = vec![Change {
            op: Op::Insert,
            table: table.clone(),
            lsn: Lsn(seq * 16),
            ord: 0,
            xid: Some(seq as u32),
            commit_ts: Timestamp(1_790_000_000_000_000 + seq as i64),
            after: Some(vec![Value::Int32(seq as i32), Value::Decimal(12_345)]),
            before: None,
        }];
        let m = log.write_batch(seq, BatchKind::Changes, start, vec![TableBatch { schema: schema.clone(), changes }]).await.unwrap();
        start = m.lsn.end;
        out.push(m);
    }
    out
}

#[tokio::test]
async fn ls_show_and_verify_a_healthy_stage() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    three_batches(&stage).await;

    let ls = strata_stage(dir.path(), &["ls"]);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let out = text(&ls.stdout);
    assert_eq!(out.lines().count(), 4, "header and three batches:\n{out}");
    assert!(out.contains("public.orders") && out.contains("(0/20, 0/30]"), "{out}");

    let show = strata_stage(dir.path(), &["show", "2", "--format", "jsonl"]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let row: serde_json::Value = serde_json::from_str(text(&show.stdout).trim()).unwrap();
    assert_eq!(row["after"]["total"], "123.45");
    assert_eq!(row["op"], "c");
    assert_eq!(row["table"], "public.orders");

    let table = strata_stage(dir.path(), &["show", "1"]);
    assert!(text(&table.stdout).contains("123.45"), "{}", text(&table.stdout));

    let verify = strata_stage(dir.path(), &["verify"]);
    assert!(verify.status.success(), "{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(text(&verify.stdout).contains("3 batches, 3 files checked, 0 problems"));
}

#[tokio::test]
async fn files_lists_a_tables_committed_files_up_to_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    let ms = three_batches(&stage).await;
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let located = |m: &Manifest| root.join(&m.files[0].path).display().to_string();
    // An uploaded file no manifest lists is not among them.
    let stray = root.join(&ms[2].files[0].path).with_file_name("00000000000000000004-0000.parquet");
    std::fs::copy(root.join(&ms[2].files[0].path), &stray).unwrap();

    let all = strata_stage(dir.path(), &["files", "--table", "public.orders"]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    let expected: Vec<String> = ms.iter().map(located).collect();
    assert_eq!(text(&all.stdout).lines().collect::<Vec<_>>(), expected);

    let as_of = ms[1].commit_ts.max.to_string();
    let some = strata_stage(dir.path(), &["files", "--table", "public.orders", "--as-of", &as_of]);
    assert_eq!(text(&some.stdout).lines().collect::<Vec<_>>(), expected[..2]);

    let none = strata_stage(dir.path(), &["files", "--table", "public.other"]);
    assert!(none.status.success() && none.stdout.is_empty());
    let bad = strata_stage(dir.path(), &["files", "--table", "public.orders", "--as-of", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--as-of"), "{}", text(&bad.stderr));
}

/// A stage written in format 1 (Hive `dt=`/`hr=` folders) reads with
/// every command of this build.
#[tokio::test]
async fn a_format_1_stage_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    let ms = three_batches(&stage).await;
    for m in &ms {
        let mut v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        let new = m.files[0].path.clone();
        let (folder, name) = new.rsplit_once('/').unwrap();
        let (table, time) = folder.split_at(folder.len() - "2026-11-20/10".len());
        let (date, hour) = time.split_once('/').unwrap();
        let old = format!("{table}dt={date}/hr={hour}/{name}");
        std::fs::create_dir_all(dir.path().join(&old).parent().unwrap()).unwrap();
        std::fs::rename(dir.path().join(&new), dir.path().join(&old)).unwrap();
        v["format"] = 1.into();
        v["files"][0]["path"] = old.into();
        std::fs::write(dir.path().join(format!("streams/main/log/{:020}.json", m.seq)), v.to_string()).unwrap();
    }
    for args in [&["ls"][..], &["show", "2"], &["verify"], &["files", "--table", "public.orders"]] {
        let out = strata_stage(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    }
    let files = strata_stage(dir.path(), &["files", "--table", "public.orders"]);
    assert!(text(&files.stdout).lines().all(|l| l.contains("/dt=")), "{}", text(&files.stdout));
    let show = strata_stage(dir.path(), &["show", "2", "--format", "jsonl"]);
    assert!(text(&show.stdout).contains("123.45"), "{}", text(&show.stdout));
}

#[tokio::test]
async fn streams_shows_head_reader_snapshot_and_backfills() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    three_batches(&stage).await;
    let log = StreamLog::new(&stage, "main").unwrap();
    let leases = strata_stager::lease::Leases::new(&stage, log.keys().reader());
    let held = leases.acquire("reader@host:1", std::time::Duration::from_secs(60), Timestamp::now()).await.unwrap();
    leases.renew(&held, std::time::Duration::from_secs(60), Timestamp::now(), serde_json::json!({"state": "snapshot"})).await.unwrap();
    let table = |name: &str| TablePoint { table: TableName::new("public", name).unwrap(), point: Lsn(7) };
    let snapshot = SnapshotState {
        format: 1,
        point: Lsn(7),
        phase: Phase::Copying,
        started_at: Timestamp::now(),
        finished_at: None,
        tables: vec![table("a"), table("b")],
        publication: None,
    };
    stage.put_json_if(&log.keys().snapshot(), &snapshot, None).await.unwrap();
    let backfill = |id: &str, state: BackfillState| BackfillRequest {
        format: 1,
        id: id.to_owned(),
        table: TableName::new("public", "a").unwrap(),
        reason: "requested".to_owned(),
        requested_at: Timestamp::now(),
        state,
        last_key: None,
        rows: 0,
        chunks: 0,
        error: None,
        finished_at: None,
    };
    stage.put_json_if(&log.keys().backfill("b1").unwrap(), &backfill("b1", BackfillState::Running), None).await.unwrap();
    stage.put_json_if(&log.keys().backfill("b0").unwrap(), &backfill("b0", BackfillState::Done), None).await.unwrap();

    let out = strata_stage(dir.path(), &["streams"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "main\thead 3\treader snapshot (reader@host:1)\tsnapshot copying\t1 backfills running\n");
    let out = strata_stage(dir.path(), &["streams", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshot"]["tables_done"], 2);
    assert_eq!(v["reader"]["live"], true);
    assert_eq!(v["reader"]["status"]["state"], "snapshot");

    // A control object that is not what its key says is an error naming it.
    std::fs::write(dir.path().join(log.keys().snapshot().to_string()), r#"{"phase": "copying"}"#).unwrap();
    let out = strata_stage(dir.path(), &["streams"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("snapshot.json"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn verify_names_a_deleted_and_a_corrupted_file_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    let ms = three_batches(&stage).await;
    let deleted = &ms[0].files[0].path;
    let corrupted = &ms[1].files[0].path;
    std::fs::remove_file(dir.path().join(deleted)).unwrap();
    std::fs::write(dir.path().join(corrupted), b"PAR1 not really").unwrap();

    let verify = strata_stage(dir.path(), &["verify"]);
    let out = text(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{out}{}", text(&verify.stderr));
    assert!(out.contains(deleted.as_str()) && out.contains("missing"), "{out}");
    assert!(out.contains(corrupted.as_str()), "{out}");
    assert!(out.contains("2 problems"), "{out}");
    assert!(!text(&verify.stderr).contains("panicked"));
}

#[tokio::test]
async fn corrupt_manifests_and_bad_input_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    let ms = three_batches(&stage).await;
    let manifest = dir.path().join("streams/main/log/00000000000000000002.json");
    std::fs::write(&manifest, b"{\"format\": 1, \"seq\": \"two\"").unwrap();
    let verify = strata_stage(dir.path(), &["verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(text(&verify.stdout).contains("00000000000000000002.json"), "{}", text(&verify.stdout));

    let show = strata_stage(dir.path(), &["show", "2"]);
    assert_eq!(show.status.code(), Some(2));
    assert!(text(&show.stderr).contains("00000000000000000002.json is corrupt"), "{}", text(&show.stderr));

    // A manifest pointing outside its stream is refused, not followed.
    let mut evil = ms[2].clone();
    evil.files[0].path = "destinations/x/cursor.json".to_owned();
    stage.put(&object_store::path::Path::from("streams/main/log/00000000000000000003.json"), Bytes::from(evil.to_json())).await.unwrap();
    let show = strata_stage(dir.path(), &["show", "3"]);
    assert_eq!(show.status.code(), Some(2));
    assert!(text(&show.stderr).contains("outside"), "{}", text(&show.stderr));

    let missing = strata_stage(dir.path(), &["show", "99"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("does not exist"), "{}", text(&missing.stderr));

    let bad_url = Command::new(env!("CARGO_BIN_EXE_strata-stage")).args(["ls", "--stage", "gopher://x"]).output().unwrap();
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(text(&bad_url.stderr).contains("unsupported scheme"), "{}", text(&bad_url.stderr));
}
