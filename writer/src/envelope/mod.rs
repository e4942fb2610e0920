//! The change envelope: one JSON shape for every message-style destination,
//! the shape Debezium consumers already parse, plus strata's stable `id`.
//!
//! ```json
//! {
//!   "id": "main:24383936:2",
//!   "op": "u",
//!   "before": {"id": 7},
//!   "after": {"id": 7, "email": "ada@example.com", "bio": {"__strata_unchanged": true}},
//!   "source": {"connector": "strata", "stream": "main", "db": "shop", "schema": "public",
//!              "table": "customers", "lsn": 24383936, "txId": 771, "ts_ms": 1795536000123, "snapshot": "false"},
//!   "ts_ms": 1795536000456
//! }
//! ```
//!
//! - `op`: `r` snapshot or backfill read, `c` insert, `u` update, `d` delete,
//!   `t` truncate (both images null).
//! - `before`: the old row under REPLICA IDENTITY FULL; otherwise only the
//!   key columns, and only when PostgreSQL sent them (deletes, key changes).
//! - Values: numerics as exact strings, bytea as base64, dates and times as
//!   ISO 8601, ±infinity and NaN as strings, json/jsonb as their text, arrays
//!   as arrays. A TOASTed value the update did not touch is
//!   `{"__strata_unchanged": true}`, never null.
//! - `id` is `{stream}:{lsn}:{ord}` (commit LSN as a decimal, position in
//!   the transaction): the same for every delivery of the change, so
//!   consumers and queues deduplicate on it.
//! - `source.ts_ms` is the commit time; the top-level `ts_ms` is when the
//!   reader staged the change. Both are fixed, so every delivery of a change
//!   is byte for byte the same envelope.

//!
//! A message destination can send Debezium's records instead
//! ([`EnvelopeFormat`], the spec's `envelope`; see [`debezium`]).

pub mod debezium;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use strata_common::{Change, Lsn, Op, Timestamp, Value};
use strata_stager::schema::{ReplicaIdentity, TableSchema};

/// What a message destination sends for each change: its `envelope` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EnvelopeFormat {
    /// strata's envelope (this module's), with the change's `id`.
    #[default]
    Strata,
    /// What Debezium's PostgreSQL connector emits at its default settings,
    /// as its JSON converter writes it by default: `{"schema", "payload"}`.
    Debezium,
    /// The same records without their schema (`schemas.enable=false`).
    DebeziumSchemaless,
}

impl EnvelopeFormat {
    pub fn is_strata(&self) -> bool {
        *self == EnvelopeFormat::Strata
    }

    /// `, debezium envelope` for a destination description; empty for strata's.
    pub fn note(&self) -> String {
        if self.is_strata() { String::new() } else { format!(", {} envelope", self.name()) }
    }

    pub fn name(&self) -> &'static str {
        match self {
            EnvelopeFormat::Strata => "strata",
            EnvelopeFormat::Debezium => "debezium",
            EnvelopeFormat::DebeziumSchemaless => "debezium-schemaless",
        }
    }
}

/// One message a destination sends for a change: its body (a JSON text),
/// and the Debezium record's key (JSON text) where the format has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub text: String,
    pub key: Option<String>,
}

/// What the bodies of a batch's changes share.
#[derive(Debug, Clone, Copy)]
pub struct Batched<'a> {
    pub format: EnvelopeFormat,
    pub stream: &'a str,
    pub staged_at: Timestamp,
    /// See [`debezium::Origin::snapshot_points`].
    pub snapshot_points: &'a [Lsn],
}

/// The messages of `change` in `batched.format`: its envelope, or its
/// Debezium records less the tombstones (none of strata's message
/// destinations has a message key to give one; they exist for Kafka's log
/// compaction). Empty for a truncate in a Debezium format, which Debezium
/// skips by default.
pub fn bodies(batched: &Batched, schema: &TableSchema, change: &Change) -> Vec<Body> {
    let schemas = match batched.format {
        EnvelopeFormat::Strata => return vec![Body { text: envelope(batched.stream, schema, change, batched.staged_at).to_string(), key: None }],
        EnvelopeFormat::Debezium => true,
        EnvelopeFormat::DebeziumSchemaless => false,
    };
    let origin = debezium::Origin { stream: batched.stream, staged_at: batched.staged_at, snapshot_points: batched.snapshot_points, schemas };
    debezium::records(&origin, schema, change)
        .into_iter()
        .filter_map(|r| r.value.map(|v| Body { text: v.to_text(), key: r.key.map(|k| k.to_text()) }))
        .collect()
}

/// The change's stable id: `{stream}:{lsn}:{ord}`.
pub fn change_id(stream: &str, change: &Change) -> String {
    format!("{stream}:{}:{}", change.lsn.as_u64(), change.ord)
}

fn row(schema: &TableSchema, values: &[Value], keys_only: bool) -> Json {
    let mut out = Map::new();
    for (c, v) in schema.columns.iter().zip(values) {
        if !keys_only || c.key {
            out.insert(c.name.clone(), v.to_json(&c.column_type));
        }
    }
    Json::Object(out)
}

fn millis(t: Timestamp) -> i64 {
    t.0.div_euclid(1000)
}

/// The envelope of `change`, a change of `schema`'s table in `stream`,
/// staged at `staged_at`.
pub fn envelope(stream: &str, schema: &TableSchema, change: &Change, staged_at: Timestamp) -> Json {
    let full_before = schema.replica_identity == ReplicaIdentity::Full;
    let before = change.before.as_deref().map_or(Json::Null, |b| row(schema, b, !full_before));
    let after = change.after.as_deref().map_or(Json::Null, |a| row(schema, a, false));
    json!({
        "id": change_id(stream, change),
        "op": change.op.code().to_string(),
        "before": before,
        "after": after,
        "source": {
            "connector": "strata",
            "stream": stream,
            "db": schema.database,
            "schema": schema.table.schema,
            "table": schema.table.name,
            "lsn": change.lsn.as_u64(),
            "txId": change.xid,
            "ts_ms": millis(change.commit_ts),
            "snapshot": if change.op == Op::Read { "true" } else { "false" },
        },
        "ts_ms": millis(staged_at),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strata_common::{ColumnType, Lsn, TableName};
    use strata_stager::schema::ColumnSchema;

    use super::*;

    fn schema(identity: ReplicaIdentity) -> TableSchema {
        let col = |name: &str, ty: ColumnType, key: bool| ColumnSchema::new(name, "", 0, ty, key);
        TableSchema {
            format: 1,
            stream: "main".into(),
            table: TableName::new("public", "t").unwrap(),
            version: 1,
            relation_oid: None,
            replica_identity: identity,
            columns: vec![
                col("id", ColumnType::Int64, true),
                col("price", ColumnType::Decimal { precision: 10, scale: 2 }, false),
                col("blob", ColumnType::Bytea, false),
                col("at", ColumnType::TimestampTz, false),
                col("bio", ColumnType::Text, false),
            ],
            since_lsn: None,
            database: Some("shop".into()),
            relfilenode: None,
            generated: Vec::new(),
        }
    }

    fn change(op: Op, after: Option<Vec<Value>>, before: Option<Vec<Value>>) -> Change {
        Change {
            op,
            table: Arc::new(TableName::new("public", "t").unwrap()),
            lsn: Lsn(0x1_0000_0010),
            ord: 3,
            xid: (op != Op::Read).then_some(771),
            commit_ts: Timestamp(1_795_536_000_123_456),
            after,
            before,
        }
    }

    #[test]
    fn values_are_faithful_and_unchanged_toast_is_marked() {
        let after = vec![Value::Int64(7), Value::Decimal(1999), Value::Bytes(vec![0, 255]), Value::TimestampTz(1_795_536_000_000_000), Value::Unchanged];
        let e = envelope(
            "main",
            &schema(ReplicaIdentity::Default),
            &change(Op::Update, Some(after), Some(vec![Value::Int64(6), Value::Null, Value::Null, Value::Null, Value::Null])),
            Timestamp(1_795_536_000_456_000),
        );
        assert_eq!(e["id"], "main:4294967312:3");
        assert_eq!(e["op"], "u");
        assert_eq!(e["after"], json!({"id": 7, "price": "19.99", "blob": "AP8=", "at": "2026-11-24T16:00:00.000000Z", "bio": {"__strata_unchanged": true}}));
        // A key identity sends the old key only.
        assert_eq!(e["before"], json!({"id": 6}));
        assert_eq!(
            e["source"],
            json!({"connector": "strata", "stream": "main", "db": "shop", "schema": "public", "table": "t",
                   "lsn": 4294967312u64, "txId": 771, "ts_ms": 1795536000123i64, "snapshot": "false"})
        );
        assert_eq!(e["ts_ms"], 1795536000456i64);
    }

    #[test]
    fn ops_reads_deletes_and_truncates() {
        let full = vec![Value::Int64(1), Value::Null, Value::Null, Value::Null, Value::Text("x".into())];
        let read = envelope("s", &schema(ReplicaIdentity::Default), &change(Op::Read, Some(full.clone()), None), Timestamp(0));
        assert_eq!((read["op"].as_str(), read["source"]["snapshot"].as_str(), &read["source"]["txId"]), (Some("r"), Some("true"), &Json::Null));
        assert_eq!(read["before"], Json::Null);
        let delete = envelope("s", &schema(ReplicaIdentity::Full), &change(Op::Delete, None, Some(full)), Timestamp(0));
        assert_eq!(delete["before"]["bio"], "x", "REPLICA IDENTITY FULL sends the whole old row");
        assert_eq!(delete["after"], Json::Null);
        let truncate = envelope("s", &schema(ReplicaIdentity::Default), &change(Op::Truncate, None, None), Timestamp(0));
        assert_eq!((truncate["op"].as_str(), &truncate["before"], &truncate["after"]), (Some("t"), &Json::Null, &Json::Null));
    }
}
