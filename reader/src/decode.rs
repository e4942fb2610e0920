//! From pgoutput events to staged changes.
//!
//! The decoder keeps the relation cache: for each relation OID, the table and
//! the schema version its rows are written with (which version that is, is
//! decided by [`schemas`](crate::schemas), the one part that reads the
//! catalog and writes to the stage).
//!
//! Tuples become [`Value`]s by parsing each column's text form per its
//! [`ColumnType`](strata_common::ColumnType); a value the typed column cannot
//! hold is staged as its exact text ([`Value::Raw`]) through
//! [`TextFallbacks`], which counts and reports it: PostgreSQL accepted it, so
//! it must never stop the stream.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, bail};
use strata_common::pgtext::{TextError, parse_lossless};
use strata_common::telemetry::Registry;
use strata_common::{Change, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::schema::{ColumnSchema, TableSchema};

use crate::source::{Datum, OldTuple};

/// Where a change sits: its transaction's commit LSN, xid, time, and its
/// ordinal inside the transaction.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub lsn: Lsn,
    pub ord: u32,
    pub xid: u32,
    pub commit_ts: Timestamp,
}

/// Tuples to changes: no I/O. A Relation message's schema version comes
/// from [`SchemaVersions`](crate::schemas::SchemaVersions), which reads the
/// catalog and stages versions; [`Decoder::register`] then decodes that
/// relation's tuples with it.
pub struct Decoder {
    relations: HashMap<u32, (Arc<TableName>, Arc<TableSchema>)>,
    fallbacks: TextFallbacks,
}

impl Decoder {
    pub fn new(fallbacks: TextFallbacks) -> Self {
        Decoder { relations: HashMap::new(), fallbacks }
    }

    /// Decodes the tuples of relation `oid` with `schema` from now on.
    pub fn register(&mut self, oid: u32, schema: Arc<TableSchema>) {
        self.relations.insert(oid, (Arc::new(schema.table.clone()), schema));
    }

    fn lookup(&self, relation: u32) -> Result<&(Arc<TableName>, Arc<TableSchema>)> {
        self.relations.get(&relation).ok_or_else(|| anyhow!("change for relation {relation} before its Relation message"))
    }

    fn row(&self, schema: &TableSchema, datums: Vec<Datum>, image: &str, at: Position) -> Result<Vec<Value>> {
        if datums.len() != schema.columns.len() {
            bail!("{} at LSN {}: {image} tuple has {} columns, the Relation message announced {}", schema.table, at.lsn, datums.len(), schema.columns.len());
        }
        datums
            .into_iter()
            .zip(&schema.columns)
            .map(|(d, col)| match d {
                Datum::Null => Ok(Value::Null),
                Datum::Unchanged if image == "new" => Ok(Value::Unchanged),
                Datum::Unchanged => bail!("{} at LSN {}: old tuple marks column {:?} unchanged", schema.table, at.lsn, col.name),
                Datum::Text(bytes) => {
                    let text =
                        std::str::from_utf8(&bytes).map_err(|_| anyhow!("{} column {:?} at LSN {}: value is not UTF-8", schema.table, col.name, at.lsn))?;
                    Ok(self.fallbacks.parse(&schema.table, col, text))
                }
            })
            .collect()
    }

    /// An insert, update or delete as a staged change.
    pub fn change(
        &self,
        op: Op,
        relation: u32,
        new: Option<Vec<Datum>>,
        old: Option<(OldTuple, Vec<Datum>)>,
        at: Position,
    ) -> Result<(Arc<TableSchema>, Change)> {
        let (table, schema) = self.lookup(relation)?;
        let after = new.map(|d| self.row(schema, d, "new", at)).transpose()?;
        let before = old.map(|(_, d)| self.row(schema, d, "old", at)).transpose()?;
        Ok((schema.clone(), Change { op, table: table.clone(), lsn: at.lsn, ord: at.ord, xid: Some(at.xid), commit_ts: at.commit_ts, after, before }))
    }

    /// A truncate of one relation as a staged change.
    pub fn truncate(&self, relation: u32, at: Position) -> Result<(Arc<TableSchema>, Change)> {
        self.change(Op::Truncate, relation, None, None, at)
    }
}

/// Values staged as their exact text (`_strata_raw`) because their typed
/// column cannot hold them. Each is counted in
/// `strata_reader_values_staged_as_text_total{table,column}`, and the first
/// of each table and column is logged with the reason: a legal value never
/// stops the stream, but nobody should be surprised by a NULL typed cell.
#[derive(Clone)]
pub struct TextFallbacks {
    registry: Registry,
    stream: String,
    logged: Arc<Mutex<HashSet<(TableName, String)>>>,
}

impl TextFallbacks {
    pub fn new(registry: &Registry, stream: &str) -> Self {
        TextFallbacks { registry: registry.clone(), stream: stream.to_owned(), logged: Arc::default() }
    }

    /// Parses a value of `column` of `table`, keeping what does not parse as
    /// [`Value::Raw`], counted and reported.
    pub fn parse(&self, table: &TableName, column: &ColumnSchema, text: &str) -> Value {
        let (value, error) = parse_lossless(&column.column_type, text);
        if let Some(e) = error {
            self.record(table, column, &e);
        }
        value
    }

    fn record(&self, table: &TableName, column: &ColumnSchema, error: &TextError) {
        let name = table.to_string();
        let l = [("stream", self.stream.as_str()), ("table", name.as_str()), ("column", column.name.as_str())];
        self.registry
            .counter("strata_reader_values_staged_as_text_total", "Values staged as exact text in _strata_raw because their typed column cannot hold them.", &l)
            .inc_by(1);
        let first = self.logged.lock().unwrap_or_else(|p| p.into_inner()).insert((table.clone(), column.name.clone()));
        if first {
            tracing::warn!(
                table = %table,
                column = %column.name,
                pg_type = %column.pg_type,
                reason = %error.reason,
                "a value its typed column cannot hold is staged as exact text in _strata_raw; later ones of this column are only counted"
            );
        }
    }
}
