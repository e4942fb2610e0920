//! The Debezium envelope: for each change, the records Debezium's PostgreSQL
//! connector emits at its default settings, key and value, as its embedded
//! engine's JSON format (Kafka's `JsonConverter`) writes them — with the
//! schema (`schemas.enable=true`, the converter's default) or without.
//!
//! Checked field by field against recorded Debezium 3.6.3.Final output
//! (`tests/fixtures/debezium/`, `tests/tests/debezium_envelope.rs`).
//!
//! ```text
//! r, c, u          one record                      key: the primary key, or null without one
//! u changing a key  d (old key) + tombstone + c     as Debezium does
//! d                d + tombstone                   tombstone: the key, a null value
//! t                nothing                         Debezium's skipped.operations=t
//! ```
//!
//! Value fields, in Debezium's order: `before`, `after`, `source`,
//! `transaction` (always null: no transaction metadata by default), `op`,
//! `ts_ms`, `ts_us`, `ts_ns`. Where strata's stage holds something other
//! than what Debezium would write, the choice made:
//!
//! - `source.version` names the Debezium release whose output this
//!   reproduces ([`DEBEZIUM_VERSION`]); `connector` is `postgresql`;
//!   `name` (Debezium's `topic.prefix`) is the stream; schema names are
//!   `{stream}.{schema}.{table}.Key|Value|Envelope`.
//! - `source.ts_ms/us/ns`: the commit time (for snapshot rows, when the
//!   snapshot started), as Debezium's. The top-level `ts_ms/us/ns` are
//!   Debezium's processing time; here, when the reader staged the change,
//!   so that every delivery of a change is the same bytes.
//! - `source.lsn`: the stage holds the commit LSN of each transaction, not
//!   each change's own WAL position, so every change of a transaction has
//!   its commit LSN (later than Debezium's, which points inside the
//!   transaction); `sequence` is `["{lsn}","{lsn}"]`, ordered as Debezium's.
//!   Snapshot rows: the snapshot's consistent point, `sequence`
//!   `[null,"{lsn}"]`, as Debezium's.
//! - `source.txId`: the transaction's id; null for snapshot rows (the stage
//!   does not keep the snapshot transaction's id).
//! - `source.snapshot`: `true` for initial-snapshot rows (Debezium also
//!   writes `first`, `first_in_data_collection`, `last_in_data_collection`
//!   and `last` at the edges; a writer delivering batch by batch does not
//!   know the edges), `incremental` for rows of a backfill (the analogue of
//!   Debezium's incremental snapshot), `false` for changes.
//! - Keys: the stage marks the replica identity's columns; under REPLICA
//!   IDENTITY FULL that is every column, and the primary key is unknown, so
//!   such a table's records have a null key and all-optional fields (as
//!   Debezium's for a table without a primary key).
//! - Schemas: the stage does not hold NOT NULL (other than of key columns),
//!   column defaults or enum labels, so a non-key NOT NULL column is
//!   `optional`, no `default` is written, and an enum is a plain string.

pub mod json;
pub mod values;

use std::sync::LazyLock;

use strata_common::{Change, Lsn, Op, Timestamp, Value};
use strata_stager::schema::{ReplicaIdentity, TableSchema};

pub use self::json::Json;
use self::values::Kind;

/// The Debezium release whose output this reproduces.
pub const DEBEZIUM_VERSION: &str = "3.6.3.Final";

/// The `source` block's schema (`io.debezium.connector.postgresql.Source`).
const SOURCE_SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"},{"type":"string","optional":true,"field":"origin"},{"type":"int64","optional":true,"field":"origin_lsn"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"}"#;
/// The fields after `source` in an envelope's schema.
const TAIL_SCHEMA: &str = r#"[{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},{"type":"int64","optional":false,"field":"data_collection_order"}],"optional":true,"name":"event.block","version":1,"field":"transaction"},{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"}]"#;

static SOURCE: LazyLock<Json> = LazyLock::new(|| Json::parse(SOURCE_SCHEMA).unwrap_or_else(|e| unreachable!("SOURCE_SCHEMA is JSON: {e}")));
static TAIL: LazyLock<Vec<Json>> = LazyLock::new(|| match Json::parse(TAIL_SCHEMA) {
    Ok(Json::Arr(items)) => items,
    other => unreachable!("TAIL_SCHEMA is a JSON array: {other:?}"),
});

/// One Debezium record: a key (null for a table without one) and a value
/// (null: a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: Option<Json>,
    pub value: Option<Json>,
}

/// What the records of a batch's changes share.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub stream: &'a str,
    /// When the reader staged the batch (the top-level `ts_*`).
    pub staged_at: Timestamp,
    /// The consistent points of the initial-snapshot batches among them: a
    /// read at one of these is a snapshot row, any other a backfill's.
    pub snapshot_points: &'a [Lsn],
    /// With the Connect schema (`{"schema", "payload"}`), or the payload alone.
    pub schemas: bool,
}

/// A table's Debezium shape: its columns' kinds and which form its key.
struct Shape<'a> {
    /// `{stream}.{schema}.{table}`: Debezium's topic, and its schemas' name prefix.
    topic: String,
    schema: &'a TableSchema,
    kinds: Vec<Kind>,
    /// Key columns' indexes; empty when the table has no known primary key.
    keys: Vec<usize>,
}

impl<'a> Shape<'a> {
    fn of(stream: &str, schema: &'a TableSchema) -> Shape<'a> {
        let known = schema.replica_identity != ReplicaIdentity::Full;
        let keys = schema.columns.iter().enumerate().filter(|(_, c)| known && c.key).map(|(i, _)| i).collect();
        let topic = format!("{stream}.{}.{}", schema.table.schema, schema.table.name);
        Shape { topic, schema, kinds: schema.columns.iter().map(Kind::of).collect(), keys }
    }

    fn row(&self, values: &[Value]) -> Json {
        Json::Obj(self.schema.columns.iter().zip(&self.kinds).zip(values).map(|((c, k), v)| (c.name.clone(), k.value(v))).collect())
    }

    fn key(&self, values: &[Value]) -> Option<Json> {
        (!self.keys.is_empty()).then(|| Json::Obj(self.keys.iter().map(|&i| (self.schema.columns[i].name.clone(), self.kinds[i].value(&values[i]))).collect()))
    }

    fn field_schemas(&self, indexes: impl Iterator<Item = usize>) -> Json {
        Json::Arr(
            indexes
                .map(|i| {
                    let mut s = self.kinds[i].schema(!self.keys.contains(&i));
                    s.push(("field".into(), Json::str(self.schema.columns[i].name.as_str())));
                    Json::Obj(s)
                })
                .collect(),
        )
    }

    fn key_schema(&self) -> Json {
        Json::obj([
            ("type", Json::str("struct")),
            ("fields", self.field_schemas(self.keys.iter().copied())),
            ("optional", Json::Bool(false)),
            ("name", Json::Str(format!("{}.Key", self.topic))),
        ])
    }

    fn value_schema(&self) -> Json {
        let topic = &self.topic;
        let row = |field: &str| {
            Json::obj([
                ("type", Json::str("struct")),
                ("fields", self.field_schemas(0..self.schema.columns.len())),
                ("optional", Json::Bool(true)),
                ("name", Json::Str(format!("{topic}.Value"))),
                ("field", Json::str(field)),
            ])
        };
        let mut fields = vec![row("before"), row("after"), SOURCE.clone()];
        fields.extend(TAIL.iter().cloned());
        Json::obj([
            ("type", Json::str("struct")),
            ("fields", Json::Arr(fields)),
            ("optional", Json::Bool(false)),
            ("name", Json::Str(format!("{topic}.Envelope"))),
            ("version", Json::Int(2)),
        ])
    }
}

/// `ts_ms`, `ts_us`, `ts_ns` of a time in µs.
fn times(prefix: &str, t: Timestamp) -> [(String, Json); 3] {
    [
        (format!("{prefix}ms"), Json::Int(t.0.div_euclid(1000))),
        (format!("{prefix}us"), Json::Int(t.0)),
        (format!("{prefix}ns"), Json::Int(t.0.saturating_mul(1000))),
    ]
}

fn source(origin: &Origin, schema: &TableSchema, change: &Change) -> Json {
    let lsn = change.lsn.as_u64().to_string();
    let initial = change.op == Op::Read && origin.snapshot_points.contains(&change.lsn);
    let snapshot = match change.op {
        Op::Read if initial => "true",
        Op::Read => "incremental",
        _ => "false",
    };
    let sequence = if initial { format!("[null,\"{lsn}\"]") } else { format!("[\"{lsn}\",\"{lsn}\"]") };
    let [ms, us, ns] = times("ts_", change.commit_ts);
    let fields = vec![
        ("version".to_owned(), Json::str(DEBEZIUM_VERSION)),
        ("connector".to_owned(), Json::str("postgresql")),
        ("name".to_owned(), Json::str(origin.stream)),
        ms,
        ("snapshot".to_owned(), Json::str(snapshot)),
        ("db".to_owned(), Json::str(schema.database.clone().unwrap_or_default())),
        ("sequence".to_owned(), Json::Str(sequence)),
        us,
        ns,
        ("schema".to_owned(), Json::str(schema.table.schema.as_str())),
        ("table".to_owned(), Json::str(schema.table.name.as_str())),
        ("txId".to_owned(), change.xid.map_or(Json::Null, |x| Json::Int(i64::from(x)))),
        ("lsn".to_owned(), Json::Int(i64::try_from(change.lsn.as_u64()).unwrap_or(i64::MAX))),
        ("xmin".to_owned(), Json::Null),
        ("origin".to_owned(), Json::Null),
        ("origin_lsn".to_owned(), Json::Null),
    ];
    Json::Obj(fields)
}

/// The records of `change`, a change of `schema`'s table (see the module docs).
pub fn records(origin: &Origin, schema: &TableSchema, change: &Change) -> Vec<Record> {
    let shape = Shape::of(origin.stream, schema);
    let event = |op: &str, before: Option<&[Value]>, after: Option<&[Value]>| {
        let mut payload = vec![
            ("before".to_owned(), before.map_or(Json::Null, |b| shape.row(b))),
            ("after".to_owned(), after.map_or(Json::Null, |a| shape.row(a))),
            ("source".to_owned(), source(origin, schema, change)),
            ("transaction".to_owned(), Json::Null),
            ("op".to_owned(), Json::str(op)),
        ];
        payload.extend(times("ts_", origin.staged_at));
        let payload = Json::Obj(payload);
        if origin.schemas { Json::obj([("schema", shape.value_schema()), ("payload", payload)]) } else { payload }
    };
    let key = |row: &[Value]| shape.key(row).map(|k| if origin.schemas { Json::obj([("schema", shape.key_schema()), ("payload", k)]) } else { k });
    let (before, after) = (change.before.as_deref(), change.after.as_deref());
    let record = |k: Option<Json>, v: Json| Record { key: k, value: Some(v) };
    let tombstone = |k: Option<Json>| Record { key: k, value: None };
    match (change.op, before, after) {
        (Op::Truncate, _, _) => Vec::new(),
        (Op::Read, _, Some(a)) => vec![record(key(a), event("r", None, Some(a)))],
        (Op::Insert, _, Some(a)) => vec![record(key(a), event("c", None, Some(a)))],
        (Op::Update, Some(b), Some(a)) if shape.key(b) != shape.key(a) => {
            vec![record(key(b), event("d", Some(b), None)), tombstone(key(b)), record(key(a), event("c", None, Some(a)))]
        }
        // The old row only under REPLICA IDENTITY FULL; PostgreSQL sends the
        // old key alone only when it changed (above).
        (Op::Update, b, Some(a)) => {
            let full = schema.replica_identity == ReplicaIdentity::Full;
            vec![record(key(a), event("u", b.filter(|_| full), Some(a)))]
        }
        (Op::Delete, Some(b), _) => vec![record(key(b), event("d", Some(b), None)), tombstone(key(b))],
        // Not made by the reader: a row image missing where its op needs one.
        (_, b, a) => vec![record(b.or(a).and_then(key), event(&change.op.code().to_string(), b, a))],
    }
}
