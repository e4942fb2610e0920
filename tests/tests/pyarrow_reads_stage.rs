//! The stage is a dataset other engines read directly: pyarrow opens a
//! table's folder with Hive partitioning and sees our rows and types.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::Stage;
use strata_stager::log::{StreamLog, TableBatch};
use strata_stager::manifest::BatchKind;
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};

fn column(name: &str, pg_type: &str, ty: ColumnType) -> ColumnSchema {
    ColumnSchema { name: name.to_owned(), pg_type: pg_type.to_owned(), type_oid: 0, type_modifier: -1, column_type: ty, key: name == "id", attnum: None, former_names: Vec::new(), missing_value: None }
}

#[tokio::test]
async fn pyarrow_reads_hive_partitioned_change_files() {
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
    });
    let log = StreamLog::new(&stage, "main").unwrap();
    log.write_schema(&schema).await.unwrap();
    let t = Arc::new(table);
    // Two batches an hour apart land in two hr= partitions.
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
    "hours": sorted(set(t.column("hr").to_pylist())),
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
    assert!(columns.contains(&"dt") && columns.contains(&"hr"), "Hive partitions recognised: {columns:?}");
    assert_eq!(r["types"]["amount"], "decimal128(12, 2)");
    assert_eq!(r["types"]["_strata_commit_ts"], "timestamp[us, tz=UTC]");
    assert_eq!(r["types"]["tags"], "list<item: string>");
    assert_eq!(r["amount"], "19.99");
    assert_eq!(r["ops"], serde_json::json!(["c"]));
    assert_eq!(r["hours"].as_array().unwrap().len(), 2, "{}", r["hours"]);
}
