//! From a change to an SQS message: its body (the change envelope), its
//! FIFO message group and deduplication id, and what is done with a body
//! that is too large.
//!
//! - The group is the table plus the primary key's values, so a FIFO queue
//!   keeps every key's changes in commit order while different keys are
//!   consumed in parallel. A table without a key, and a truncate, use the
//!   table alone. A key change is grouped by its new key.
//! - The deduplication id is the change id `{stream}:{lsn}:{ord}`: SQS drops a
//!   redelivery within its five-minute window, consumers dedup on `id` after it.
//! - Both must be 1–128 characters of ASCII punctuation and alphanumerics;
//!   a value that is not (a unicode key, a long composite key) is replaced
//!   by the hex SHA-256 of itself, which keeps it stable and distinct.

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use strata_common::{Change, Op};
use strata_stager::keys::table_segment;
use strata_stager::schema::TableSchema;

/// The longest group or deduplication id SQS takes.
const MAX_ID_CHARS: usize = 128;

/// `s` if SQS takes it as a group or deduplication id, else a stable hash.
fn sqs_id(s: String) -> String {
    let valid = !s.is_empty() && s.len() <= MAX_ID_CHARS && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if valid { s } else { format!("sha256-{}", hex::encode(Sha256::digest(s.as_bytes()))) }
}

/// The FIFO message group of `change`: table and key values.
pub fn group_id(schema: &TableSchema, change: &Change) -> String {
    let table = table_segment(&schema.table);
    let image = match change.op {
        Op::Truncate => None,
        Op::Delete => change.before.as_deref(),
        _ => change.after.as_deref().or(change.before.as_deref()),
    };
    let keys: Vec<Json> = match image {
        Some(row) => schema.columns.iter().zip(row).filter(|(c, _)| c.key).map(|(c, v)| v.to_json(&c.column_type)).collect(),
        None => Vec::new(),
    };
    if keys.is_empty() {
        return sqs_id(table);
    }
    sqs_id(format!("{table}:{}", Json::Array(keys)))
}

/// The FIFO deduplication id of the change with id `change_id`.
pub fn dedup_id(change_id: &str) -> String {
    sqs_id(change_id.to_owned())
}

/// Where an oversized envelope was put, as the pointer message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offloaded {
    pub url: String,
    pub bytes: usize,
    pub sha256: String,
}

/// The message sent instead of an oversized envelope: the envelope's `id`,
/// `op`, `source` and `ts_ms`, both images null, and `offloaded` saying
/// where the whole envelope is.
pub fn pointer(envelope: &Json, offloaded: &Offloaded) -> Json {
    let mut p = envelope.clone();
    if let Some(obj) = p.as_object_mut() {
        obj.insert("before".to_owned(), Json::Null);
        obj.insert("after".to_owned(), Json::Null);
        obj.insert("offloaded".to_owned(), serde_json::json!({"url": offloaded.url, "bytes": offloaded.bytes, "sha256": offloaded.sha256}));
    }
    p
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strata_common::{ColumnType, Lsn, TableName, Timestamp, Value};
    use strata_stager::schema::{ColumnSchema, ReplicaIdentity};

    use super::*;

    fn schema(keyed: bool) -> TableSchema {
        TableSchema {
            format: 1,
            stream: "main".into(),
            table: TableName::new("public", "orders").unwrap(),
            version: 1,
            relation_oid: None,
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                ColumnSchema::new("id", "", 0, ColumnType::Int64, keyed),
                ColumnSchema::new("region", "", 0, ColumnType::Text, keyed),
                ColumnSchema::new("note", "", 0, ColumnType::Text, false),
            ],
            since_lsn: None,
            database: None,
            relfilenode: None,
            generated: Vec::new(),
        }
    }

    fn change(op: Op, after: Option<Vec<Value>>, before: Option<Vec<Value>>) -> Change {
        Change { op, table: Arc::new(schema(true).table), lsn: Lsn(7), ord: 0, xid: Some(1), commit_ts: Timestamp(0), after, before }
    }

    fn row(id: i64, region: &str) -> Vec<Value> {
        vec![Value::Int64(id), Value::Text(region.into()), Value::Text("n".into())]
    }

    #[test]
    fn groups_are_table_and_key() {
        let s = schema(true);
        let insert = change(Op::Insert, Some(row(7, "eu")), None);
        assert_eq!(group_id(&s, &insert), r#"public.orders:[7,"eu"]"#);
        // The delete of that key, whose old image is the key alone, is in the same group.
        let delete = change(Op::Delete, None, Some(vec![Value::Int64(7), Value::Text("eu".into()), Value::Null]));
        assert_eq!(group_id(&s, &delete), group_id(&s, &insert));
        assert_ne!(group_id(&s, &change(Op::Insert, Some(row(8, "eu")), None)), group_id(&s, &insert));
        // Truncates and keyless tables: the table.
        assert_eq!(group_id(&s, &change(Op::Truncate, None, None)), "public.orders");
        assert_eq!(group_id(&schema(false), &insert), "public.orders");
    }

    #[test]
    fn ids_sqs_refuses_are_hashed_stably() {
        let s = schema(true);
        let unicode = change(Op::Insert, Some(row(1, "köln")), None);
        let g = group_id(&s, &unicode);
        assert!(g.starts_with("sha256-") && g.len() == 71, "{g}");
        assert_eq!(g, group_id(&s, &unicode));
        let long = change(Op::Insert, Some(row(1, &"x".repeat(200))), None);
        assert!(group_id(&s, &long).len() <= MAX_ID_CHARS);
        assert_eq!(dedup_id("main:24383936:2"), "main:24383936:2");
        assert!(dedup_id("straße:1:0").starts_with("sha256-"));
        assert!(dedup_id("a b:1:0").starts_with("sha256-"), "a space is not allowed");
    }

    #[test]
    fn pointers_keep_the_identity_and_drop_the_images() {
        let e = serde_json::json!({"id": "main:7:0", "op": "c", "before": null, "after": {"big": "x"}, "source": {"table": "t"}, "ts_ms": 1});
        let p = pointer(&e, &Offloaded { url: "s3://b/p.json".into(), bytes: 9, sha256: "ab".into() });
        assert_eq!(p["id"], "main:7:0");
        assert_eq!(p["after"], Json::Null);
        assert_eq!(p["source"]["table"], "t");
        assert_eq!(p["offloaded"], serde_json::json!({"url": "s3://b/p.json", "bytes": 9, "sha256": "ab"}));
    }
}
