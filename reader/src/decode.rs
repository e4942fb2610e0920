//! From pgoutput events to staged changes.
//!
//! The decoder keeps the relation cache: for each relation OID, the table and
//! the schema version its rows are written with. A Relation message whose
//! columns, types, key flags or replica identity differ from the current
//! version stages a new version (`schemas/{table}/{version}.json`) before any
//! row uses it; one that matches reuses it, so restarts and the Relation
//! messages PostgreSQL repeats per session never mint spurious versions.
//!
//! Tuples become [`Value`]s by parsing each column's text form per its
//! [`ColumnType`](strata_common::ColumnType); a value the typed column cannot
//! hold is staged as its exact text ([`Value::Raw`]) through
//! [`TextFallbacks`], which counts and reports it: PostgreSQL accepted it, so
//! it must never stop the stream.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use strata_common::pgtext::{TextError, parse_lossless};
use strata_common::telemetry::Registry;
use strata_common::{Change, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::log::StreamLog;
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};

use crate::setup::SourceDb;
use crate::source::{Datum, OldTuple, Relation};

/// Where a change sits: its transaction's commit LSN, xid, time, and its
/// ordinal inside the transaction.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub lsn: Lsn,
    pub ord: u32,
    pub xid: u32,
    pub commit_ts: Timestamp,
}

pub struct Decoder {
    log: StreamLog,
    relations: HashMap<u32, (Arc<TableName>, Arc<TableSchema>)>,
    latest: HashMap<TableName, Arc<TableSchema>>,
    fallbacks: TextFallbacks,
}

fn identity(code: u8) -> Result<ReplicaIdentity> {
    Ok(match code {
        b'd' => ReplicaIdentity::Default,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        b'n' => ReplicaIdentity::Nothing,
        other => bail!("unknown replica identity {:?}", other as char),
    })
}

impl Decoder {
    pub fn new(log: &StreamLog, fallbacks: TextFallbacks) -> Self {
        Decoder { log: log.clone(), relations: HashMap::new(), latest: HashMap::new(), fallbacks }
    }

    /// Handles a Relation message seen in the transaction committing at `at`;
    /// returns the schema version its rows are staged with.
    pub async fn relation(&mut self, db: &mut SourceDb, rel: Relation, at: Lsn) -> Result<Arc<TableSchema>> {
        let oid = rel.oid;
        let schema = self.version(db, rel, at).await?;
        self.relations.insert(oid, (Arc::new(schema.table.clone()), schema.clone()));
        Ok(schema)
    }

    /// The schema version of a table with `rel`'s columns: the latest one if
    /// it has the same shape, else a new one, staged. Unlike
    /// [`Decoder::relation`] this leaves the decoding of stream tuples alone
    /// (a backfill reads the catalog of now, the stream may be behind it).
    pub async fn version(&mut self, db: &mut SourceDb, rel: Relation, at: Lsn) -> Result<Arc<TableSchema>> {
        let table = TableName::new(rel.namespace.clone(), rel.name.clone()).map_err(|e| anyhow!("relation {}: {e}", rel.oid))?;
        let columns = db.column_schemas(rel.oid, &rel.columns).await?;
        let mut candidate = TableSchema {
            format: strata_stager::FORMAT_VERSION,
            stream: self.log.keys().stream().to_owned(),
            table: table.clone(),
            version: 1,
            relation_oid: Some(rel.oid),
            replica_identity: identity(rel.replica_identity)?,
            columns,
            since_lsn: Some(at),
            database: Some(db.database().await?),
            relfilenode: db.relfilenode(rel.oid).await?,
            generated: db.generated_columns(rel.oid).await?,
        };
        let latest = match self.latest.get(&table) {
            Some(s) => Some(s.clone()),
            None => self.log.latest_schema(&table).await.with_context(|| format!("reading schema versions of {table}"))?.map(Arc::new),
        };
        // A column the catalog no longer knows by this name (renamed since
        // this message was written) keeps the number it had under this name.
        if let Some(l) = &latest {
            for c in candidate.columns.iter_mut().filter(|c| c.attnum.is_none()) {
                c.attnum = l.columns.iter().find(|p| p.name == c.name).and_then(|p| p.attnum);
            }
        }
        let schema = match latest {
            Some(l) if l.same_shape(&candidate) => l,
            latest => {
                if let Some(l) = &latest {
                    candidate.inherit_names(l);
                }
                candidate.version = latest.as_ref().map_or(1, |l| l.version + 1);
                if let Some(before) = latest.as_ref().and_then(|l| l.relfilenode)
                    && candidate.relfilenode.is_some_and(|now| now != before)
                {
                    // The change rewrote the table: existing rows got values
                    // no WAL change carries, so they are read again. Asked
                    // before the version is staged, so a crash in between
                    // repeats the request rather than losing it.
                    let reason = format!("schema v{} rewrote the table (volatile default, stored generated column or type change)", candidate.version);
                    let req = crate::backfill::request(&self.log, &table, &reason).await.with_context(|| format!("requesting a backfill of {table}"))?;
                    tracing::info!(table = %table, version = candidate.version, backfill = req.id, "table rewritten by a schema change; backfilling it");
                }
                self.log.write_schema(&candidate).await.with_context(|| format!("staging schema v{} of {table}", candidate.version))?;
                tracing::info!(table = %table, version = candidate.version, "new schema version");
                Arc::new(candidate)
            }
        };
        self.latest.insert(table, schema.clone());
        Ok(schema)
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
