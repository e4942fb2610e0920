//! The stage is a dataset other engines read directly: pyarrow and DuckDB
//! open a table's folder, with Hive partitioning or without, and see our
//! rows and types — never a folder name in place of a user column.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::Stage;
use strata_stager::log::{StreamLog, TableBatch};
use strata_stager::manifest::BatchKind;
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};

fn column(name: &str, pg_type: &str, ty: ColumnType) -> ColumnSchema {
    ColumnSchema {
        name: name.to_owned(),
        pg_type: pg_type.to_owned(),
        type_oid: 0,
        type_modifier: -1,
        column_type: ty,
        key: name == "id",
        attnum: None,
        former_names: Vec::new(),
        missing_value: None,
    }
}

#[tokio::test]
async fn pyarrow_reads_a_tables_change_files() {
    let dir = tempfile::tempdir().unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    let table = TableName::new("public", "events").unwrap();
    let schema = Arc::new(TableSchema {
        format: 1,
        stream: "main".to_owned(),
        table: table.clone(),
        version: 1,
        relation_oid: None,
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            column("id", "bigint", ColumnType::Int64),
            column("amount", "numeric(12,2)", ColumnType::Decimal { precision: 12, scale: 2 }),
            column("tags", "text[]", ColumnType::Array { element: Box::new(ColumnType::Text) }),
            column("at", "timestamp with time zone", ColumnType::TimestampTz),
        ],
        since_lsn: None,
        database: None,
        relfilenode: None,
        generated: Vec::new(),
    });
    let log = StreamLog::new(&stage, "main").unwrap();
    log.write_schema(&schema).await.unwrap();
    let t = Arc::new(table);
    // Two batches an hour apart land in two hour folders.
    let base = 1_790_000_000_000_000i64;
    let mut start = Lsn(0);
    for (seq, hour) in [(1u64, 0i64), (2, 1)] {
        let changes: Vec<Change> = (0..5)
            .map(|i| Change {
                op: Op::Insert,
                table: t.clone(),
                lsn: Lsn(seq * 100),
                ord: i,
                xid: Some(9),
                commit_ts: Timestamp(base + hour * 3_600_000_000),
                after: Some(vec![
                    Value::Int64(seq as i64 * 10 + i as i64),
                    Value::Decimal(1999),
                    Value::Array(vec![Value::Text("ä".to_owned()), Value::Null]),
                    Value::TimestampTz(base),
                ]),
                before: None,
            })
            .collect();
        let m = log.write_batch(seq, BatchKind::Changes, start, vec![TableBatch { schema: schema.clone(), changes }]).await.unwrap();
        start = m.lsn.end;
    }

    let folder = dir.path().join("streams/main/tables/public.events");
    let script = r#"
import sys, json
import pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet", partitioning="hive")
t = d.to_table()
print(json.dumps({
    "rows": t.num_rows,
    "columns": t.column_names,
    "types": {f.name: str(f.type) for f in t.schema},
    "files": sorted(f.split("/public.events/")[1] for f in d.files),
    "ops": sorted(set(t.column("_strata_op").to_pylist())),
    "amount": str(t.column("amount")[0].as_py()),
}))
"#;
    let out = std::process::Command::new(strata_tests::venv_python()).arg("-c").arg(script).arg(&folder).output().unwrap();
    assert!(out.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["rows"], 10);
    let columns: Vec<&str> = r["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(&columns[..6], ["_strata_op", "_strata_lsn", "_strata_ord", "_strata_xid", "_strata_commit_ts", "_strata_unchanged"]);
    assert_eq!(columns.len(), 6 + 3 + 4, "metadata, raw and before columns, then the table's; no partition column: {columns:?}");
    assert_eq!(r["types"]["amount"], "decimal128(12, 2)");
    assert_eq!(r["types"]["_strata_commit_ts"], "timestamp[us, tz=UTC]");
    assert_eq!(r["types"]["tags"], "list<item: string>");
    assert_eq!(r["amount"], "19.99");
    assert_eq!(r["ops"], serde_json::json!(["c"]));
    let hours: std::collections::BTreeSet<&str> = r["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().rsplit_once('/').unwrap().0).collect();
    assert_eq!(hours.len(), 2, "two {{YYYY-MM-DD}}/{{HH}} folders: {}", r["files"]);
}

/// What a DuckDB or pyarrow user does with a live stage: a table whose
/// columns are named like v1's partition keys (`dt`, `hr`) reads back with
/// its own values under Hive partitioning, and a table with two schema
/// versions reads whole through the README's recipe — the committed files
/// from `strata-stage files`, `union_by_name` — even with an uncommitted
/// file beside them, which a glob would read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duckdb_and_pyarrow_read_columns_named_like_partitions_and_schema_versions() {
    use strata_tests::pg::PgCluster;
    use strata_tests::reader::{RunningReader, config, wait_for_slot};
    use strata_tests::writer::{session, wait_staged};

    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let src = session(&url).await;
    src.batch_execute("CREATE TABLE ev (id int PRIMARY KEY, dt date, hr int, v text); CREATE TABLE grow (id int PRIMARY KEY, v text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(config(&url, dir.path(), ""));
    wait_for_slot(&src, "strata_main").await.unwrap();
    src.batch_execute("INSERT INTO ev VALUES (1, '1999-01-02', 7, 'a'), (2, NULL, 23, 'b'); INSERT INTO grow VALUES (1, 'old')").await.unwrap();
    src.batch_execute("ALTER TABLE grow ADD COLUMN extra text; INSERT INTO grow VALUES (2, 'new', 'x')").await.unwrap();
    wait_staged(&src).await;
    reader.stop().await.unwrap();

    let stage = Stage::local(dir.path()).unwrap();
    let log = StreamLog::new(&stage, "main").unwrap();
    let grow = TableName::new("public", "grow").unwrap();
    let files: Vec<String> = log.committed_files(&grow, None).await.unwrap().iter().map(|k| stage.location(k)).collect();
    assert_eq!(files.len(), 2, "one file per schema version: {files:?}");
    // A file uploaded for a batch that never committed, as a crash leaves it.
    let stray = std::path::Path::new(&files[1]).with_file_name("99999999999999999999-0000.parquet");
    std::fs::copy(&files[1], &stray).unwrap();

    let script = r#"
import sys, json, glob
import duckdb, pyarrow.dataset as ds, pyarrow.parquet as pq, pyarrow as pa
ev, files = sys.argv[1], json.loads(sys.argv[2])
t = ds.dataset(ev, format="parquet", partitioning="hive").to_table().sort_by("id")
by_duckdb = duckdb.sql(f"SELECT id, dt::VARCHAR, hr FROM read_parquet('{ev}/**/*.parquet', hive_partitioning = true) ORDER BY id").fetchall()
recipe = duckdb.sql("SELECT id, v, extra FROM read_parquet($files, union_by_name = true, hive_partitioning = true) ORDER BY id", params={"files": files}).fetchall()
globbed = duckdb.sql(f"SELECT count(*) FROM read_parquet('{ev}/../public.grow/**/*.parquet', union_by_name = true)").fetchall()[0][0]
pa_recipe = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default").sort_by("id")
print(json.dumps({
    "pyarrow_dt": [str(x) if x is not None else None for x in t.column("dt").to_pylist()],
    "pyarrow_hr": t.column("hr").to_pylist(),
    "pyarrow_types": {f.name: str(f.type) for f in t.schema if f.name in ("dt", "hr")},
    "duckdb": [[r[0], r[1], r[2]] for r in by_duckdb],
    "recipe": [list(r) for r in recipe],
    "globbed": globbed,
    "pyarrow_recipe": [pa_recipe.column("id").to_pylist(), pa_recipe.column("extra").to_pylist()],
}))
"#;
    let ev = dir.path().join("streams/main/tables/public.ev");
    let out =
        std::process::Command::new(strata_tests::venv_python()).arg("-c").arg(script).arg(&ev).arg(serde_json::to_string(&files).unwrap()).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["pyarrow_dt"], serde_json::json!(["1999-01-02", null]), "{r}");
    assert_eq!(r["pyarrow_hr"], serde_json::json!([7, 23]), "{r}");
    assert_eq!(r["pyarrow_types"]["dt"], "date32[day]", "{r}");
    assert_eq!(r["duckdb"], serde_json::json!([[1, "1999-01-02", 7], [2, null, 23]]), "{r}");
    assert_eq!(r["recipe"], serde_json::json!([[1, "old", null], [2, "new", "x"]]), "{r}");
    assert_eq!(r["globbed"], 3, "a glob reads the uncommitted file too, which is why the recipe lists files");
    assert_eq!(r["pyarrow_recipe"], serde_json::json!([[1, 2], [null, "x"]]), "{r}");
}
