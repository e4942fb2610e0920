//! Schema versions of the stream's tables: the one part of decoding that
//! reads the catalog and writes to the stage.
//!
//! A Relation message whose columns, types, key flags or replica identity
//! differ from the table's current version stages a new version
//! (`schemas/{table}/{version}.json`) before any row uses it; one that
//! matches reuses it, so restarts and the Relation messages PostgreSQL
//! repeats per session never mint spurious versions. A new version that
//! rewrote the table (a new storage file: a volatile default, a stored
//! generated column, a type change) first requests a backfill, since its
//! existing rows got values no WAL change carries.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use strata_common::{Lsn, TableName};
use strata_stager::control::BackfillRequest;
use strata_stager::log::StreamLog;
use strata_stager::schema::{GeneratedColumn, ReplicaIdentity, TableSchema};

use crate::setup::SourceDb;
use crate::source::Relation;

/// The latest schema version of each table, staged.
pub struct SchemaVersions {
    log: StreamLog,
    latest: HashMap<TableName, Arc<TableSchema>>,
}

impl SchemaVersions {
    pub fn new(log: &StreamLog) -> Self {
        SchemaVersions { log: log.clone(), latest: HashMap::new() }
    }

    /// The schema version of a table with `rel`'s columns as of `at`: the
    /// latest one if it has the same shape, else a new one, staged (after a
    /// backfill request when it rewrote the table).
    pub async fn version(&mut self, db: &mut SourceDb, rel: &Relation, at: Lsn) -> Result<Arc<TableSchema>> {
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
            generated: Vec::new(),
        };
        let latest = match self.latest.get(&table) {
            Some(s) => Some(s.clone()),
            None => self.log.latest_schema(&table).await.with_context(|| format!("reading schema versions of {table}"))?.map(Arc::new),
        };
        candidate.generated = generated_as_of(
            db.generated_columns(rel.oid).await?,
            &db.plain_column_numbers(rel.oid).await?,
            &rel.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            latest.as_ref().map_or(&[][..], |l| &l.generated),
        );
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
                    let req = BackfillRequest::submit(&self.log, &table, &reason).await.with_context(|| format!("requesting a backfill of {table}"))?;
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
}

/// The stored generated columns a Relation message's table had, from the
/// catalog's `now` (pgoutput does not send generated columns). A message
/// decoded after later DDL must not gain generated columns added after it
/// was written: that would put them before the columns added in between,
/// at a destination that adds columns as versions come. A generated column
/// counts if the message has every plain column the catalog numbers before
/// it (one it lacks was added after the message, so the generated column
/// was too), or if the latest version had it already.
fn generated_as_of(now: Vec<GeneratedColumn>, plain: &[(String, i16)], message: &[&str], latest: &[GeneratedColumn]) -> Vec<GeneratedColumn> {
    now.into_iter()
        .filter(|g| {
            let before = |n: i16| g.attnum.is_none_or(|at| n < at);
            latest.iter().any(|l| l.name == g.name) || plain.iter().filter(|(_, n)| before(*n)).all(|(name, _)| message.contains(&name.as_str()))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(name: &str, attnum: i16) -> GeneratedColumn {
        GeneratedColumn { name: name.to_owned(), pg_type: "bigint".to_owned(), expression: "(id * 2)".to_owned(), attnum: Some(attnum) }
    }

    fn names(g: &[GeneratedColumn]) -> Vec<&str> {
        g.iter().map(|g| g.name.as_str()).collect()
    }

    #[test]
    fn a_message_older_than_a_generated_column_does_not_get_it() {
        // Now: id 1, v 2, r 3 (plain), g 4 (generated, added after r).
        let plain = [("id".to_owned(), 1), ("v".to_owned(), 2), ("r".to_owned(), 3)];
        let now = || vec![generated("g", 4)];
        // A message from before r was added: g came later still.
        assert_eq!(names(&generated_as_of(now(), &plain, &["id", "v"], &[])), Vec::<&str>::new());
        // A message with r: g may exist, and comes after r either way.
        assert_eq!(names(&generated_as_of(now(), &plain, &["id", "v", "r"], &[])), ["g"]);
        // A version that had g keeps it, stale message or not.
        assert_eq!(names(&generated_as_of(now(), &plain, &["id", "v"], &[generated("g", 4)])), ["g"]);
        // A generated column numbered before a newer plain column is not held back by it.
        let plain = [("id".to_owned(), 1), ("r".to_owned(), 3)];
        assert_eq!(names(&generated_as_of(vec![generated("g", 2)], &plain, &["id"], &[])), ["g"]);
    }
}
