//! Writes a small synthetic change history into a stage, to show the staging
//! format before a database is connected: a snapshot batch, then batches of
//! inserts, an update that leaves a TOASTed column unchanged, a primary-key
//! change, a delete, a schema change and a truncate.
//!
//! `cargo run -p strata-stager --example demo -- --stage /tmp/stage`
//! then `strata-stage ls --stage /tmp/stage`. The data is made up and says so
//! (stream `demo`); real streams come from `strata-reader`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use strata_common::types::oid;
use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::Stage;
use strata_stager::log::{StreamLog, TableBatch};
use strata_stager::manifest::BatchKind;
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};

fn col(name: &str, pg_type: &str, type_oid: u32, key: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.to_owned(),
        pg_type: pg_type.to_owned(),
        type_oid,
        type_modifier: -1,
        column_type: ColumnType::from_builtin(type_oid, -1).unwrap_or(ColumnType::Text),
        key,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = match args.as_slice() {
        [_, flag, url] if flag == "--stage" => url.clone(),
        _ => bail!("usage: demo --stage URL"),
    };
    let stage = Stage::open(&url, &Default::default()).with_context(|| format!("opening {url}"))?;
    let log = StreamLog::new(&stage, "demo")?;
    if log.head(None).await?.is_some() {
        println!("stage {} already holds the demo stream; leaving it as it is", stage.url());
        return Ok(());
    }
    let users = TableName::new("public", "users")?;
    let v1 = Arc::new(TableSchema {
        format: strata_stager::FORMAT_VERSION,
        stream: "demo".to_owned(),
        table: users.clone(),
        version: 1,
        relation_oid: Some(16385),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            col("id", "bigint", oid::INT8, true),
            col("email", "text", oid::TEXT, false),
            col("bio", "text", oid::TEXT, false),
            col("created_at", "timestamp with time zone", oid::TIMESTAMPTZ, false),
        ],
        since_lsn: None,
    });
    let mut v2 = (*v1).clone();
    v2.version = 2;
    v2.columns.push(col("plan", "text", oid::TEXT, false));
    let v2 = Arc::new(v2);
    log.write_schema(&v1).await?;
    log.write_schema(&v2).await?;

    let table = Arc::new(users);
    let t0 = Timestamp::now().saturating_sub_micros(3_600_000_000);
    let text = |s: &str| Value::Text(s.to_owned());
    let change = |op, lsn: u64, ord, secs: i64, after: Option<Vec<Value>>, before: Option<Vec<Value>>| Change {
        op,
        table: table.clone(),
        lsn: Lsn(lsn),
        ord,
        xid: (op != Op::Read).then_some(700 + lsn as u32 % 100),
        commit_ts: Timestamp(t0.0 + secs * 1_000_000),
        after,
        before,
    };
    let long_bio = "a long biography that PostgreSQL stores out of line. ".repeat(200);
    let row = |id: i64, email: &str, bio: &str| vec![Value::Int64(id), text(email), text(bio), Value::TimestampTz(t0.0)];

    let snapshot = vec![
        change(Op::Read, 0x100, 0, 0, Some(row(1, "ada@example.com", &long_bio)), None),
        change(Op::Read, 0x100, 1, 0, Some(row(2, "alan@example.com", "computing")), None),
    ];
    let m = log.write_batch(1, BatchKind::Snapshot, Lsn(0x100), vec![TableBatch { schema: v1.clone(), changes: snapshot }]).await?;

    let changes = vec![
        change(Op::Insert, 0x200, 0, 60, Some(row(3, "grace@example.com", "compilers")), None),
        // The bio is TOASTed and untouched: PostgreSQL does not send it.
        change(Op::Update, 0x300, 0, 120, Some(vec![Value::Int64(1), text("ada@lovelace.org"), Value::Unchanged, Value::TimestampTz(t0.0)]), None),
        // A primary-key change carries the old key.
        change(
            Op::Update,
            0x400,
            0,
            180,
            Some(row(20, "alan@example.com", "computing")),
            Some(vec![Value::Int64(2), Value::Null, Value::Null, Value::Null]),
        ),
        change(Op::Delete, 0x500, 0, 240, None, Some(vec![Value::Int64(3), Value::Null, Value::Null, Value::Null])),
    ];
    let m = log.write_batch(2, BatchKind::Changes, m.lsn.end, vec![TableBatch { schema: v1.clone(), changes }]).await?;

    let mut with_plan = row(4, "edsger@example.com", "structured");
    with_plan.push(text("pro"));
    let changes = vec![
        change(Op::Insert, 0x600, 0, 300, Some(with_plan), None),
        change(Op::Truncate, 0x700, 0, 360, None, None),
    ];
    log.write_batch(3, BatchKind::Changes, m.lsn.end, vec![TableBatch { schema: v2, changes }]).await?;
    println!("wrote 3 demo batches of stream \"demo\" to {}", stage.url());
    Ok(())
}
