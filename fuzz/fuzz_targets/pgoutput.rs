//! pgoutput messages → events → staged changes: what the reader does with
//! the payload of every XLogData frame of its replication stream.
//!
//! `pg_walstream` parses the protocol; `strata_reader::walstream::
//! decode_message` turns its message into our event (refusing what we did
//! not ask for), and the [`Decoder`] turns tuples into typed changes. The
//! Relation → schema step reads the catalog, so here every relation is
//! registered with a schema of as many columns as its tuple has, typed in
//! turn by every column type, and each column's text goes through the same
//! parsing as in production.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pg_walstream::LogicalReplicationParser;
use strata_common::telemetry::Registry;
use strata_common::{ColumnType, Lsn, Op, TableName, Timestamp};
use strata_reader::decode::{Decoder, Position, TextFallbacks};
use strata_reader::source::{Datum, SourceEvent};
use strata_reader::walstream::decode_message;
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};

fn types() -> Vec<ColumnType> {
    let scalars = [
        ColumnType::Bool,
        ColumnType::Int16,
        ColumnType::Int32,
        ColumnType::Int64,
        ColumnType::Float32,
        ColumnType::Float64,
        ColumnType::Decimal { precision: 12, scale: 3 },
        ColumnType::Text,
        ColumnType::Json,
        ColumnType::Bytea,
        ColumnType::Date,
        ColumnType::Time,
        ColumnType::Timestamp,
        ColumnType::TimestampTz,
        ColumnType::Interval,
        ColumnType::Uuid,
    ];
    let arrays = scalars.clone().map(|e| ColumnType::Array { element: Box::new(e) });
    scalars.into_iter().chain(arrays).collect()
}

fn schema(oid: u32, columns: usize) -> Arc<TableSchema> {
    let types = types();
    let columns = (0..columns)
        .map(|i| {
            let ty = types[i % types.len()].clone();
            ColumnSchema::new(&format!("c{i}"), "fuzz", 0, ty, i == 0)
        })
        .collect();
    Arc::new(TableSchema {
        format: strata_stager::FORMAT_VERSION,
        stream: "main".to_owned(),
        table: TableName::new("public", "fuzz").expect("a valid name"),
        version: 1,
        relation_oid: Some(oid),
        replica_identity: ReplicaIdentity::Default,
        columns,
        since_lsn: None,
        database: None,
        relfilenode: None,
        generated: Vec::new(),
    })
}

fn tuple_len(d: &Option<Vec<Datum>>) -> usize {
    d.as_ref().map_or(0, Vec::len)
}

fuzz_target!(|data: &[u8]| {
    let mut parser = LogicalReplicationParser::with_protocol_version(1);
    let Ok(event) = decode_message(&mut parser, bytes::Bytes::copy_from_slice(data)) else { return };
    let at = Position { lsn: Lsn(1), ord: 0, xid: 1, commit_ts: Timestamp(0) };
    let mut decoder = Decoder::new(TextFallbacks::new(&Registry::default(), "main"));
    let _ = match event {
        SourceEvent::Insert { relation, new } => {
            decoder.register(relation, schema(relation, new.len()));
            decoder.change(Op::Insert, relation, Some(new), None, at)
        }
        SourceEvent::Update { relation, old, new } => {
            let new = Some(new);
            let columns = tuple_len(&new).max(old.as_ref().map_or(0, |(_, d)| d.len()));
            decoder.register(relation, schema(relation, columns));
            decoder.change(Op::Update, relation, new, old, at)
        }
        SourceEvent::Delete { relation, old } => {
            decoder.register(relation, schema(relation, old.1.len()));
            decoder.change(Op::Delete, relation, None, Some(old), at)
        }
        SourceEvent::Truncate { relations, .. } => {
            for &r in &relations {
                decoder.register(r, schema(r, 1));
                let _ = decoder.truncate(r, at);
            }
            return;
        }
        other => {
            // Begin, Commit, Relation, Type, Origin, Message, Keepalive:
            // the batcher only reads their fields.
            let _ = format!("{other:?}");
            return;
        }
    };
});
