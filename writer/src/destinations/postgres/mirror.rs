//! Mirror mode: the destination keeps the same rows as the source.
//!
//! Per table and batch the changes are compacted per key — the last change of
//! a key wins — then applied in bulk: deletes through one COPY'd temp table,
//! upserts through another, grouped by which columns are unchanged-TOAST so
//! those are never overwritten. A TRUNCATE applies in order between changes.
//!
//! Keys the batch inserted (its first change to them is an insert or a
//! snapshot read) cannot be at the destination unless it drifted or a
//! replay re-delivers them, so outside replays their rows are COPY'd
//! straight into the table, behind a savepoint: no temp table, no
//! `ON CONFLICT` check. A unique violation rolls that COPY back and sends
//! the rows through the upsert path, and the table skips the direct COPY
//! for its next [`CONFLICT_COOLDOWN`] flushes. This is what makes an
//! initial load one COPY per batch, as PostgreSQL's own initial copy is.
//! Tables without a usable key (no primary key, or REPLICA IDENTITY FULL) are
//! applied change by change, matching rows on their full old image.

use std::collections::HashMap;

use strata_common::ident::quote_ident;
use strata_common::pgtext::format_text;
use strata_common::{Change, ColumnType, Op, TableName, Value};
use strata_stager::schema::{ReplicaIdentity, TableSchema};
use tokio_postgres::Client;

use super::copy::{TextRow, copy_in, copy_unless_held, quoted};
use super::retry::err;
use crate::destinations::DestError;

/// Columns that identify a row at the destination: the replica identity key
/// under DEFAULT or USING INDEX; none under FULL (every column is flagged
/// then) or NOTHING.
pub(super) fn key_columns(schema: &TableSchema) -> Vec<usize> {
    match schema.replica_identity {
        ReplicaIdentity::Default | ReplicaIdentity::Index => schema.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect(),
        ReplicaIdentity::Full | ReplicaIdentity::Nothing => Vec::new(),
    }
}

/// What a key ends up as after a batch's changes to it.
enum Final {
    Delete(Vec<Value>),
    /// `fresh`: the segment's first change to the key inserted it.
    Upsert {
        row: Vec<Value>,
        fresh: bool,
    },
}

/// After a direct COPY met a key the destination held, the table's next
/// flushes go through the upsert path: a destination that holds the rows
/// (a backfill over an existing mirror) would otherwise pay every batch
/// twice.
pub(super) const CONFLICT_COOLDOWN: u32 = 32;

/// Whether fresh inserts may be COPY'd straight into their table; see the
/// module docs. Lives as long as the sink; `None` in its place (a replay,
/// or the change-by-change search for rejects) keeps every row on the
/// upsert path.
#[derive(Default)]
pub(super) struct DirectCopy {
    /// Flushes left before a table that met a held key tries again.
    cooling: HashMap<TableName, u32>,
}

impl DirectCopy {
    /// Whether `table`'s next flush may try the direct COPY (counting one
    /// flush of its cool-down).
    fn admits(&mut self, table: &TableName) -> bool {
        match self.cooling.get_mut(table) {
            Some(0) | None => true,
            Some(left) => {
                *left -= 1;
                false
            }
        }
    }
}

/// Changes of one table between truncates, compacted per key.
#[derive(Default)]
struct Compacted {
    order: Vec<String>,
    last: HashMap<String, Final>,
}

impl Compacted {
    fn set(&mut self, key: String, f: Final) {
        if self.last.insert(key.clone(), f).is_none() {
            self.order.push(key);
        }
    }

    fn upserted(&self, key: &str) -> Option<&Vec<Value>> {
        match self.last.get(key) {
            Some(Final::Upsert { row, .. }) => Some(row),
            _ => None,
        }
    }

    /// Whether the key's first change in the segment inserted it.
    fn fresh(&self, key: &str) -> bool {
        matches!(self.last.get(key), Some(Final::Upsert { fresh: true, .. }))
    }
}

fn key_string(schema: &TableSchema, keys: &[usize], row: &[Value]) -> String {
    keys.iter().map(|&i| format_text(&schema.columns[i].column_type, &row[i]).unwrap_or_else(|| "\u{1}".to_owned())).collect::<Vec<_>>().join("\u{0}")
}

/// `after` with its unchanged columns filled from `base` where known.
fn fill_unchanged(after: &[Value], base: Option<&Vec<Value>>) -> Vec<Value> {
    after
        .iter()
        .enumerate()
        .map(|(i, v)| match (v, base) {
            (Value::Unchanged, Some(b)) => b[i].clone(),
            (v, _) => v.clone(),
        })
        .collect()
}

fn texts(schema: &TableSchema, row: &[Value], cols: &[usize]) -> Vec<Option<String>> {
    cols.iter().map(|&i| format_text(&schema.columns[i].column_type, &row[i])).collect()
}

/// One mirror table's changes applied in a transaction: the session, the
/// temp tables made so far, and whether fresh inserts may go in directly.
pub(super) struct MirrorApply<'a> {
    pub tx: &'a Client,
    pub temps: &'a mut u32,
    pub direct: Option<&'a mut DirectCopy>,
}

pub(super) async fn apply_mirror(m: MirrorApply<'_>, schema: &TableSchema, types: &[String], changes: &[Change]) -> Result<(), DestError> {
    let MirrorApply { tx, temps, mut direct } = m;
    let keys = key_columns(schema);
    if keys.is_empty() {
        return apply_keyless(tx, schema, types, changes).await;
    }
    let target = schema.table.quoted();
    let mut seg = Compacted::default();
    for c in changes {
        let missing = |image: &str| DestError::Permanent(format!("{} at {}/{}: {} has no {image} image", schema.table, c.lsn, c.ord, c.op));
        match c.op {
            Op::Truncate => {
                let flushing = Flush { tx, schema, types, keys: &keys, direct: direct.as_deref_mut() };
                flushing.run(std::mem::take(&mut seg), temps).await?;
                tx.batch_execute(&format!("TRUNCATE {target}")).await.map_err(err(&format!("truncating {}", schema.table)))?;
            }
            Op::Insert | Op::Read => {
                let after = c.after.as_ref().ok_or_else(|| missing("new"))?;
                let key = key_string(schema, &keys, after);
                let fresh = !seg.last.contains_key(&key);
                seg.set(key, Final::Upsert { row: after.clone(), fresh });
            }
            Op::Update => {
                let after = c.after.as_ref().ok_or_else(|| missing("new"))?;
                let new_key = key_string(schema, &keys, after);
                let old_key = c.before.as_ref().map(|b| key_string(schema, &keys, b)).filter(|k| *k != new_key);
                match old_key {
                    None => {
                        let row = fill_unchanged(after, seg.upserted(&new_key));
                        let fresh = seg.fresh(&new_key);
                        seg.set(new_key, Final::Upsert { row, fresh });
                    }
                    Some(old_key) => {
                        let before = c.before.as_ref().ok_or_else(|| missing("old"))?;
                        let row = fill_unchanged(after, seg.upserted(&old_key));
                        if row.iter().any(|v| matches!(v, Value::Unchanged)) {
                            // The key moved and some values stayed in the old
                            // row: move that row in place rather than delete
                            // and re-insert it.
                            let flushing = Flush { tx, schema, types, keys: &keys, direct: direct.as_deref_mut() };
                            flushing.run(std::mem::take(&mut seg), temps).await?;
                            rekey(tx, schema, types, &keys, before, &row).await?;
                        } else {
                            seg.set(old_key, Final::Delete(before.clone()));
                            seg.set(new_key, Final::Upsert { row, fresh: false });
                        }
                    }
                }
            }
            Op::Delete => {
                let before = c.before.as_ref().ok_or_else(|| missing("old"))?;
                seg.set(key_string(schema, &keys, before), Final::Delete(before.clone()));
            }
        }
    }
    Flush { tx, schema, types, keys: &keys, direct }.run(seg, temps).await
}

/// Rows of a segment that carry these columns (the others are
/// unchanged-TOAST, which the destination keeps).
type Group = (Vec<usize>, Vec<TextRow>);

/// Applies a compacted segment of one table.
struct Flush<'a> {
    tx: &'a Client,
    schema: &'a TableSchema,
    types: &'a [String],
    keys: &'a [usize],
    direct: Option<&'a mut DirectCopy>,
}

impl Flush<'_> {
    /// Deletes first, then fresh inserts straight into the table where
    /// allowed, then upserts grouped by the set of columns they carry.
    async fn run(mut self, seg: Compacted, temps: &mut u32) -> Result<(), DestError> {
        if seg.order.is_empty() {
            return Ok(());
        }
        let (schema, keys) = (self.schema, self.keys);
        let direct_allowed = self.direct.as_deref_mut().is_some_and(|d| d.admits(&schema.table));
        let all: Vec<usize> = (0..schema.columns.len()).collect();
        let mut last = seg.last;
        let mut deletes = Vec::new();
        let mut inserts = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        for key in &seg.order {
            match last.remove(key) {
                Some(Final::Delete(before)) => deletes.push(texts(schema, &before, keys)),
                Some(Final::Upsert { row, fresh }) => {
                    let present: Vec<usize> = (0..row.len()).filter(|&i| !matches!(row[i], Value::Unchanged)).collect();
                    let values = texts(schema, &row, &present);
                    if fresh && direct_allowed && present.len() == all.len() {
                        inserts.push(values);
                        continue;
                    }
                    add_to_group(&mut groups, present, values);
                }
                None => {}
            }
        }
        if !deletes.is_empty() {
            self.delete(&deletes, temps).await?;
        }
        if !inserts.is_empty()
            && let Some(refused) = self.insert_directly(&all, inserts).await?
        {
            groups.insert(0, (all, refused));
        }
        for (cols, rows) in groups {
            self.upsert(&cols, &rows, temps).await?;
        }
        Ok(())
    }

    async fn delete(&self, deletes: &[TextRow], temps: &mut u32) -> Result<(), DestError> {
        let (tx, schema, keys) = (self.tx, self.schema, self.keys);
        let cond = keys.iter().map(|&i| format!("t.{c} = d.{c}", c = quote_ident(&schema.columns[i].name))).collect::<Vec<_>>().join(" AND ");
        let tmp = temp_table(tx, schema, self.types, keys, temps).await?;
        copy_in(tx, &tmp, &quoted(schema, keys), deletes).await?;
        tx.batch_execute(&format!("DELETE FROM {} t USING {tmp} d WHERE {cond}", schema.table.quoted()))
            .await
            .map_err(err(&format!("deleting from {}", schema.table)))
    }

    /// COPYs whole rows of fresh keys straight into the table, behind a
    /// savepoint. `Some(rows)` when the table held one of the keys: the COPY
    /// was rolled back and the rows are for the upsert path.
    async fn insert_directly(&mut self, all: &[usize], rows: Vec<TextRow>) -> Result<Option<Vec<TextRow>>, DestError> {
        let schema = self.schema;
        if copy_unless_held(self.tx, &schema.table.quoted(), &quoted(schema, all), &rows).await? {
            return Ok(None);
        }
        if let Some(d) = self.direct.as_deref_mut() {
            d.cooling.insert(schema.table.clone(), CONFLICT_COOLDOWN);
        }
        Ok(Some(rows))
    }

    async fn upsert(&self, cols: &[usize], rows: &[TextRow], temps: &mut u32) -> Result<(), DestError> {
        let (tx, schema, keys) = (self.tx, self.schema, self.keys);
        let target = schema.table.quoted();
        let tmp = temp_table(tx, schema, self.types, cols, temps).await?;
        let names = quoted(schema, cols);
        copy_in(tx, &tmp, &names, rows).await?;
        let updates: Vec<String> =
            cols.iter().filter(|i| !keys.contains(i)).map(|&i| format!("{c} = EXCLUDED.{c}", c = quote_ident(&schema.columns[i].name))).collect();
        let on_conflict = if updates.is_empty() { "DO NOTHING".to_owned() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        let sql = format!(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {tmp} ON CONFLICT ({keys}) {on_conflict}",
            cols = names.join(", "),
            keys = quoted(schema, keys).join(", ")
        );
        tx.batch_execute(&sql).await.map_err(err(&format!("upserting into {}", schema.table)))
    }
}

fn add_to_group(groups: &mut Vec<Group>, cols: Vec<usize>, row: TextRow) {
    match groups.iter_mut().find(|(c, _)| *c == cols) {
        Some((_, rows)) => rows.push(row),
        None => groups.push((cols, vec![row])),
    }
}

async fn temp_table(tx: &Client, schema: &TableSchema, types: &[String], cols: &[usize], temps: &mut u32) -> Result<String, DestError> {
    *temps += 1;
    let name = format!("strata_tmp_{temps}");
    let defs: Vec<String> = cols.iter().map(|&i| format!("{} {}", quote_ident(&schema.columns[i].name), types[i])).collect();
    tx.batch_execute(&format!("CREATE TEMP TABLE {name} ({}) ON COMMIT DROP", defs.join(", "))).await.map_err(err("creating a temp table"))?;
    Ok(name)
}

/// Moves the row at `before`'s key to `row`'s key, setting the columns `row` carries.
async fn rekey(tx: &Client, schema: &TableSchema, types: &[String], keys: &[usize], before: &[Value], row: &[Value]) -> Result<(), DestError> {
    let mut params: Vec<Option<String>> = Vec::new();
    let mut sets = Vec::new();
    for (i, v) in row.iter().enumerate() {
        if matches!(v, Value::Unchanged) {
            continue;
        }
        params.push(format_text(&schema.columns[i].column_type, v));
        sets.push(format!("{} = ${}::text::{}", quote_ident(&schema.columns[i].name), params.len(), types[i]));
    }
    let mut conds = Vec::new();
    for &i in keys {
        params.push(format_text(&schema.columns[i].column_type, &before[i]));
        conds.push(format!("{} = ${}::text::{}", quote_ident(&schema.columns[i].name), params.len(), types[i]));
    }
    let sql = format!("UPDATE {} SET {} WHERE {}", schema.table.quoted(), sets.join(", "), conds.join(" AND "));
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    tx.execute(&sql, &refs).await.map_err(err(&format!("moving a row of {} to its new key", schema.table)))?;
    Ok(())
}

/// Tables without a key: changes in order, rows matched on their whole old
/// image (one matching row per change, as PostgreSQL's own apply does).
async fn apply_keyless(tx: &Client, schema: &TableSchema, types: &[String], changes: &[Change]) -> Result<(), DestError> {
    let target = schema.table.quoted();
    if schema.columns.is_empty() {
        // A table without columns (legal in PostgreSQL): rows are all alike.
        for c in changes {
            let sql = match c.op {
                Op::Insert | Op::Read => format!("INSERT INTO {target} DEFAULT VALUES"),
                Op::Truncate => format!("TRUNCATE {target}"),
                Op::Delete | Op::Update => format!("DELETE FROM {target} WHERE ctid = (SELECT ctid FROM {target} LIMIT 1)"),
            };
            tx.batch_execute(&sql).await.map_err(err(&format!("applying to {}", schema.table)))?;
            if c.op == Op::Update {
                tx.batch_execute(&format!("INSERT INTO {target} DEFAULT VALUES")).await.map_err(err(&format!("applying to {}", schema.table)))?;
            }
        }
        return Ok(());
    }
    let all: Vec<usize> = (0..schema.columns.len()).collect();
    let names = quoted(schema, &all);
    let mut inserts: Vec<Vec<Option<String>>> = Vec::new();
    for c in changes {
        let missing = |image: &str| {
            DestError::Permanent(format!(
                "{} at {}/{}: {} of a table without a key needs the {image} row (set REPLICA IDENTITY FULL at the source)",
                schema.table, c.lsn, c.ord, c.op
            ))
        };
        match c.op {
            Op::Insert | Op::Read => inserts.push(texts(schema, c.after.as_ref().ok_or_else(|| missing("new"))?, &all)),
            Op::Truncate => {
                copy_in(tx, &target, &names, &std::mem::take(&mut inserts)).await?;
                tx.batch_execute(&format!("TRUNCATE {target}")).await.map_err(err(&format!("truncating {}", schema.table)))?;
            }
            Op::Delete | Op::Update => {
                if !inserts.is_empty() {
                    copy_in(tx, &target, &names, &std::mem::take(&mut inserts)).await?;
                }
                let before = c.before.as_ref().ok_or_else(|| missing("old"))?;
                delete_matching(tx, schema, types, before).await?;
                if c.op == Op::Update {
                    let after = fill_unchanged(c.after.as_ref().ok_or_else(|| missing("new"))?, Some(before));
                    inserts.push(texts(schema, &after, &all));
                }
            }
        }
    }
    if !inserts.is_empty() {
        copy_in(tx, &target, &names, &inserts).await?;
    }
    Ok(())
}

async fn delete_matching(tx: &Client, schema: &TableSchema, types: &[String], before: &[Value]) -> Result<(), DestError> {
    let mut params: Vec<Option<String>> = Vec::new();
    let mut conds = Vec::new();
    for (i, c) in schema.columns.iter().enumerate() {
        params.push(format_text(&c.column_type, &before[i]));
        let col = quote_ident(&c.name);
        // json has no equality operator: compare its text, which json keeps verbatim.
        if c.column_type == ColumnType::Json && types[i] == "json" {
            conds.push(format!("{col}::text IS NOT DISTINCT FROM ${}", params.len()));
        } else {
            conds.push(format!("{col} IS NOT DISTINCT FROM ${}::text::{}", params.len(), types[i]));
        }
    }
    let target = schema.table.quoted();
    let sql = format!("DELETE FROM {target} WHERE ctid = (SELECT ctid FROM {target} WHERE {} LIMIT 1)", conds.join(" AND "));
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    tx.execute(&sql, &refs).await.map_err(err(&format!("deleting a row of {}", schema.table)))?;
    Ok(())
}
