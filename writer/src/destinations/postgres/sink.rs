//! The Postgres [`Destination`]: see the module docs of `postgres`.

use std::collections::HashMap;
use std::sync::Arc;

use strata_common::ident::{quote_ident, quote_literal};
use strata_common::pgtext::format_text;
use strata_common::{Change, ColumnType, TableName, Value};
use strata_stager::schema::{GeneratedColumn, TableSchema};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::config::connect;
use super::config::{PostgresMode, PostgresSpec};
use super::copy::{TextRow, copy_in, copy_unless_held, execute as tx_execute, quoted};
use super::mirror::{DirectCopy, MirrorApply, apply_mirror, key_columns};
use super::retry::{classify, err};
use crate::destinations::{Batch, DestError, Destination, Reject};

pub struct PostgresSink {
    client: Client,
    conn: tokio::task::JoinHandle<()>,
    destination: String,
    mode: PostgresMode,
    /// Destination column types of each staged table version.
    types: HashMap<(TableName, u32), Arc<Vec<String>>>,
    /// The staged version each destination table was last brought in line with.
    synced: HashMap<TableName, u32>,
    /// The delivery whose transaction is open, between `begin_parts` and
    /// `finish_parts`.
    open: Option<OpenDelivery>,
    /// Which mirror tables take fresh inserts by a direct COPY.
    direct: DirectCopy,
}

/// What a delivery in progress has done inside its transaction.
#[derive(Default)]
struct OpenDelivery {
    /// Temp tables created (each is named by this count).
    temps: u32,
    /// Tables brought in line with a staged version; recorded in the sink
    /// once the transaction commits.
    synced: Vec<(TableName, u32)>,
    /// The batch is one a replay re-delivers, which the destination held
    /// before (`strata.cursors.held_until`): mirror tables without a key
    /// skip it.
    held: bool,
}

impl Drop for PostgresSink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl PostgresSink {
    pub async fn connect(destination: &str, spec: &PostgresSpec) -> Result<Self, DestError> {
        let (client, conn) = connect(spec).await?;
        Ok(PostgresSink {
            client,
            conn,
            destination: destination.to_owned(),
            mode: spec.mode,
            types: HashMap::new(),
            synced: HashMap::new(),
            open: None,
            direct: DirectCopy::default(),
        })
    }

    /// Resolves, outside any transaction, the destination type of each
    /// column of `schema`: the source's type where the destination knows it
    /// (built-ins, or a same-named type the user created), else `text`, which
    /// holds every staged value's text form.
    async fn resolve_types(&mut self, schema: &TableSchema) -> Result<Arc<Vec<String>>, DestError> {
        let key = (schema.table.clone(), schema.version);
        if let Some(t) = self.types.get(&key) {
            return Ok(t.clone());
        }
        let mut out = Vec::with_capacity(schema.columns.len());
        for c in &schema.columns {
            let resolved = self.client.query_one("SELECT format_type(to_regtype($1), $2)", &[&c.pg_type, &c.type_modifier]).await;
            let name: Option<String> = match resolved {
                Ok(row) => row.get(0),
                // A type name this server cannot even parse.
                Err(e) if e.code().is_some() => None,
                Err(e) => return Err(classify("resolving column types", &e)),
            };
            out.push(name.unwrap_or_else(|| "text".to_owned()));
        }
        let out = Arc::new(out);
        self.types.insert(key, out.clone());
        Ok(out)
    }
}

impl Destination for PostgresSink {
    async fn durable_seq(&mut self) -> Result<Option<u64>, DestError> {
        let ddl = "CREATE SCHEMA IF NOT EXISTS strata; \
                   CREATE TABLE IF NOT EXISTS strata.cursors (destination text PRIMARY KEY, stream text NOT NULL, \
                   seq bigint NOT NULL, lsn text NOT NULL, commit_ts timestamptz, updated_at timestamptz NOT NULL DEFAULT now())";
        if let Err(e) = self.client.batch_execute(ddl).await {
            // Two writers creating it at once: one loses with a duplicate; the table is there.
            if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
                return Err(classify("creating strata.cursors", &e));
            }
        }
        // Added after the first release: tables created before lack it.
        self.client
            .batch_execute("ALTER TABLE strata.cursors ADD COLUMN IF NOT EXISTS held_until bigint")
            .await
            .map_err(err("adding strata.cursors.held_until"))?;
        // A row always exists, so that every apply can lock it.
        self.client
            .execute(
                "INSERT INTO strata.cursors (destination, stream, seq, lsn) VALUES ($1, '', 0, '0/0') ON CONFLICT (destination) DO NOTHING",
                &[&self.destination],
            )
            .await
            .map_err(err("initialising the cursor row"))?;
        let seq: i64 = self
            .client
            .query_one("SELECT seq FROM strata.cursors WHERE destination = $1", &[&self.destination])
            .await
            .map_err(err("reading the cursor row"))?
            .get(0);
        Ok((seq > 0).then_some(seq as u64))
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), DestError> {
        // A whole batch is a batch of one part.
        if !self.begin_parts(batch).await? {
            return Ok(());
        }
        self.apply_part(batch).await?;
        self.finish_parts(batch).await
    }

    async fn rejects(&mut self, batch: &Batch) -> Result<Vec<Reject>, DestError> {
        let mut types = Vec::with_capacity(batch.tables.len());
        for t in &batch.tables {
            types.push(self.resolve_types(&t.schema).await?);
        }
        let history = self.mode == PostgresMode::History;
        let tx = self.client.transaction().await.map_err(err("beginning"))?;
        let mut out = Vec::new();
        let mut temps = 0u32;
        // Each change alone, in order, behind a savepoint: what fails is rolled
        // back and recorded, what succeeds stays so later changes see it.
        for (ti, (t, types)) in batch.tables.iter().zip(&types).enumerate() {
            tx_execute(tx.client(), "SAVEPOINT strata_table").await?;
            if let Err(e) = sync_table(tx.client(), &t.schema, types, history).await {
                if e.is_retriable() {
                    return Err(e);
                }
                tx_execute(tx.client(), "ROLLBACK TO SAVEPOINT strata_table").await?;
                out.extend((0..t.changes.len()).map(|ci| Reject { table: ti, change: ci, error: e.to_string() }));
                continue;
            }
            for (ci, c) in t.changes.iter().enumerate() {
                tx_execute(tx.client(), "SAVEPOINT strata_change").await?;
                let one = std::slice::from_ref(c);
                let applied = if history {
                    apply_history(tx.client(), &t.schema, one).await
                } else {
                    apply_mirror(MirrorApply { tx: tx.client(), temps: &mut temps, direct: None }, &t.schema, types, one).await
                };
                match applied {
                    Ok(()) => tx_execute(tx.client(), "RELEASE SAVEPOINT strata_change").await?,
                    Err(e) if e.is_retriable() => return Err(e),
                    Err(e) => {
                        tx_execute(tx.client(), "ROLLBACK TO SAVEPOINT strata_change").await?;
                        out.push(Reject { table: ti, change: ci, error: e.to_string() });
                    }
                }
            }
        }
        tx.rollback().await.map_err(err("rolling back"))?;
        Ok(out)
    }

    async fn begin_parts(&mut self, header: &Batch) -> Result<bool, DestError> {
        if self.open.take().is_some() {
            // Left open by a delivery abandoned midway (its stage read failed).
            self.client.batch_execute("ROLLBACK").await.map_err(err("rolling back an abandoned delivery"))?;
        }
        // Types are resolved before the transaction: a type name the server
        // cannot parse is an error, which would abort it.
        for t in &header.tables {
            self.resolve_types(&t.schema).await?;
        }
        self.client.batch_execute("BEGIN").await.map_err(err("beginning"))?;
        let locked = self.client.query_one("SELECT seq, held_until FROM strata.cursors WHERE destination = $1 FOR UPDATE", &[&self.destination]).await;
        let (done, held_until): (i64, Option<i64>) = match locked {
            Ok(row) => (row.get(0), row.get(1)),
            Err(e) => return Err(self.abandon(classify("locking the cursor row", &e)).await),
        };
        if done as u64 >= header.seq {
            // Already applied (a redelivery after a crash, or another writer).
            self.client.batch_execute("ROLLBACK").await.map_err(err("rolling back"))?;
            return Ok(false);
        }
        let held = held_until.is_some_and(|h| header.seq as i64 <= h);
        self.open = Some(OpenDelivery { held, ..Default::default() });
        Ok(true)
    }

    async fn apply_part(&mut self, part: &Batch) -> Result<(), DestError> {
        let Some(mut open) = self.open.take() else {
            return Err(DestError::Permanent(format!("part of batch {} delivered outside its transaction", part.seq)));
        };
        let applied = self.apply_tables(part, &mut open).await;
        match applied {
            Ok(()) => {
                self.open = Some(open);
                Ok(())
            }
            Err(e) => Err(self.abandon(e).await),
        }
    }

    async fn finish_parts(&mut self, header: &Batch) -> Result<(), DestError> {
        let Some(open) = self.open.take() else {
            return Err(DestError::Permanent(format!("batch {} finished outside its transaction", header.seq)));
        };
        let seq = i64::try_from(header.seq).map_err(|_| DestError::Permanent(format!("seq {} out of range", header.seq)))?;
        let moved = self
            .client
            .execute(
                "UPDATE strata.cursors SET seq = $2, stream = $3, lsn = $4, commit_ts = $5::text::timestamptz, updated_at = now() \
                 WHERE destination = $1",
                &[&self.destination, &seq, &header.stream, &header.lsn_end.to_string(), &header.commit_ts_max.to_string()],
            )
            .await;
        if let Err(e) = moved {
            return Err(self.abandon(classify("moving the cursor row", &e)).await);
        }
        if let Err(e) = self.client.batch_execute("COMMIT").await {
            return Err(classify("committing", &e));
        }
        self.synced.extend(open.synced);
        Ok(())
    }

    async fn reset(&mut self, seq: u64, truncate: &[TableName]) -> Result<(), DestError> {
        self.reset_position(seq, truncate).await
    }
}

impl PostgresSink {
    /// Applies the tables of one part inside the open transaction.
    async fn apply_tables(&mut self, part: &Batch, open: &mut OpenDelivery) -> Result<(), DestError> {
        let history = self.mode == PostgresMode::History;
        for t in &part.tables {
            if !history && open.held && key_columns(&t.schema).is_empty() {
                // Re-delivered by a replay to a table without a key, which
                // holds these changes already and cannot match them again:
                // neither its rows nor its columns go back to this batch.
                continue;
            }
            let types = self.resolve_types(&t.schema).await?;
            let version = (t.schema.table.clone(), t.schema.version);
            let synced = self.synced.get(&t.schema.table) == Some(&t.schema.version) || open.synced.contains(&version);
            if !synced {
                sync_table(&self.client, &t.schema, &types, history).await?;
                open.synced.retain(|(table, _)| *table != t.schema.table);
                open.synced.push(version);
            }
            if history {
                apply_history(&self.client, &t.schema, &t.changes).await?;
            } else {
                // A replay re-delivers inserts the tables may hold.
                let direct = (!open.held).then_some(&mut self.direct);
                apply_mirror(MirrorApply { tx: &self.client, temps: &mut open.temps, direct }, &t.schema, &types, &t.changes).await?;
            }
        }
        Ok(())
    }

    /// Rolls the open transaction back after `e` (best effort: a broken
    /// connection has rolled it back already) and returns `e`.
    async fn abandon(&mut self, e: DestError) -> DestError {
        self.open = None;
        if let Err(rollback) = self.client.batch_execute("ROLLBACK").await {
            tracing::debug!(destination = self.destination, error = %rollback, "rollback after a failed delivery");
        }
        e
    }

    async fn reset_position(&mut self, seq: u64, truncate: &[TableName]) -> Result<(), DestError> {
        self.durable_seq().await?;
        let tx = self.client.transaction().await.map_err(err("beginning"))?;
        let held: i64 = tx
            .query_one("SELECT seq FROM strata.cursors WHERE destination = $1 FOR UPDATE", &[&self.destination])
            .await
            .map_err(err("locking the cursor row"))?
            .get(0);
        for t in truncate {
            let exists: bool = tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.quoted()]).await.map_err(err("looking up a table"))?.get(0);
            if exists {
                tx.batch_execute(&format!("TRUNCATE {}", t.quoted())).await.map_err(err(&format!("truncating {t}")))?;
            }
        }
        let seq = i64::try_from(seq).map_err(|_| DestError::Permanent(format!("seq {seq} out of range")))?;
        // What the tables hold up to now is re-delivered; mirror tables
        // without a key must not apply it twice. A rebuild empties them.
        let held_until = truncate.is_empty().then_some(held);
        tx.execute(
            "UPDATE strata.cursors SET seq = $2, updated_at = now(), \
             held_until = CASE WHEN $3::bigint IS NULL THEN NULL ELSE GREATEST(held_until, $3) END WHERE destination = $1",
            &[&self.destination, &seq, &held_until],
        )
        .await
        .map_err(err("resetting the cursor row"))?;
        tx.commit().await.map_err(err("committing"))
    }
}

/// The metadata columns a history table starts with; `(_strata_lsn,
/// _strata_ord)` is its primary key, so a change can never be stored twice.
const HISTORY_COLUMNS: &[(&str, &str)] = &[
    ("_strata_op", "text NOT NULL"),
    ("_strata_lsn", "pg_lsn NOT NULL"),
    ("_strata_ord", "bigint NOT NULL"),
    ("_strata_xid", "bigint"),
    ("_strata_commit_ts", "timestamptz NOT NULL"),
    ("_strata_unchanged", "text[]"),
];

/// Creates the destination table, or brings its columns in line with the
/// staged version: adds new columns, drops removed ones, and changes types
/// through their text form. A history table starts with the metadata
/// columns, which are never dropped.
async fn sync_table(tx: &Client, schema: &TableSchema, types: &[String], history: bool) -> Result<(), DestError> {
    let target = schema.table.quoted();
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&schema.table.schema))).await.map_err(err("creating the schema"))?;
    let exists: bool = tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&target]).await.map_err(err("looking up the table"))?.get(0);
    if !exists {
        let mut defs: Vec<String> = if history { HISTORY_COLUMNS.iter().map(|(n, t)| format!("{n} {t}")).collect() } else { Vec::new() };
        let mut columns: Vec<(Option<i16>, String)> =
            schema.columns.iter().zip(types).map(|(c, t)| (c.attnum, format!("{} {t}", quote_ident(&c.name)))).collect();
        if !history {
            columns.extend(schema.generated.iter().map(|g| (g.attnum, generated_def(g))));
            // In the source's column order where every number is known.
            if columns.iter().all(|(n, _)| n.is_some()) {
                columns.sort_by_key(|(n, _)| *n);
            }
        }
        defs.extend(columns.into_iter().map(|(_, d)| d));
        let keys = key_columns(schema);
        if history {
            defs.push("PRIMARY KEY (_strata_lsn, _strata_ord)".to_owned());
        } else if !keys.is_empty() {
            let names: Vec<String> = keys.iter().map(|&i| quote_ident(&schema.columns[i].name)).collect();
            defs.push(format!("PRIMARY KEY ({})", names.join(", ")));
        }
        let ddl = format!("CREATE TABLE {target} ({})", defs.join(", "));
        tx.batch_execute(&ddl).await.map_err(err(&format!("creating {}", schema.table)))?;
        tracing::info!(table = %schema.table, version = schema.version, "created destination table");
        return Ok(());
    }
    let rows = tx
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&target],
        )
        .await
        .map_err(err("reading destination columns"))?;
    let mut existing: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // Renamed columns keep their values: a staged column the destination
    // lacks, whose former name it still has (and no staged column takes).
    for c in &schema.columns {
        if existing.contains_key(&c.name) {
            continue;
        }
        let former = c.former_names.iter().rev().find(|f| existing.contains_key(*f) && !schema.columns.iter().any(|o| &o.name == *f));
        if let Some(former) = former {
            let ddl = format!("ALTER TABLE {target} RENAME COLUMN {} TO {}", quote_ident(former), quote_ident(&c.name));
            tx.batch_execute(&ddl).await.map_err(err(&format!("renaming {former:?} of {}", schema.table)))?;
            tracing::info!(table = %schema.table, from = former, to = c.name, "renamed destination column");
            if let Some(t) = existing.remove(former) {
                existing.insert(c.name.clone(), t);
            }
        }
    }
    let mut alters = Vec::new();
    // Columns added with the value existing source rows received (their
    // default, which PostgreSQL filled in without WAL changes): existing
    // mirror rows get it too. Not in a history, whose rows are past changes.
    let mut filled = Vec::new();
    for (c, t) in schema.columns.iter().zip(types) {
        let col = quote_ident(&c.name);
        match existing.get(&c.name) {
            None => match c.missing_value.as_deref().filter(|_| !history) {
                Some(v) => {
                    alters.push(format!("ADD COLUMN {col} {t} DEFAULT {}::{t}", quote_literal(v)));
                    filled.push(format!("ALTER COLUMN {col} DROP DEFAULT"));
                }
                None => alters.push(format!("ADD COLUMN {col} {t}")),
            },
            Some(have) if have != t => alters.push(format!("ALTER COLUMN {col} TYPE {t} USING {col}::text::{t}")),
            Some(_) => {}
        }
    }
    let generated: &[GeneratedColumn] = if history { &[] } else { &schema.generated };
    for name in existing.keys() {
        let metadata = history && HISTORY_COLUMNS.iter().any(|(n, _)| n == name);
        if !metadata && !schema.columns.iter().any(|c| &c.name == name) && !generated.iter().any(|g| &g.name == name) {
            alters.push(format!("DROP COLUMN {}", quote_ident(name)));
        }
    }
    // Generated columns are added after the others, which they may read;
    // the destination computes their values for existing rows.
    for g in generated.iter().filter(|g| !existing.contains_key(&g.name)) {
        alters.push(format!("ADD COLUMN {}", generated_def(g)));
    }
    if !alters.is_empty() {
        let ddl = format!("ALTER TABLE {target} {}", alters.join(", "));
        tx.batch_execute(&ddl).await.map_err(err(&format!("altering {}", schema.table)))?;
        tracing::info!(table = %schema.table, version = schema.version, changes = alters.len(), "altered destination table");
    }
    if !filled.is_empty() {
        // The default served the existing rows only; later rows carry their own values.
        let ddl = format!("ALTER TABLE {target} {}", filled.join(", "));
        tx.batch_execute(&ddl).await.map_err(err(&format!("altering {}", schema.table)))?;
    }
    Ok(())
}

/// `name type GENERATED ALWAYS AS (expression) STORED`, as at the source.
fn generated_def(g: &GeneratedColumn) -> String {
    format!("{} {} GENERATED ALWAYS AS ({}) STORED", quote_ident(&g.name), g.pg_type, g.expression)
}

/// History mode: every change appended with its metadata; deletes carry
/// their old image, truncates a row of NULLs.
async fn apply_history(tx: &Client, schema: &TableSchema, changes: &[Change]) -> Result<(), DestError> {
    let mut columns: Vec<String> = HISTORY_COLUMNS.iter().map(|(n, _)| (*n).to_owned()).collect();
    let all: Vec<usize> = (0..schema.columns.len()).collect();
    columns.extend(quoted(schema, &all));
    let names = ColumnType::Array { element: Box::new(ColumnType::Text) };
    let rows: Vec<TextRow> = changes
        .iter()
        .map(|c| {
            let image = c.after.as_ref().or(c.before.as_ref());
            let unchanged: Vec<Value> = match &c.after {
                Some(after) => {
                    schema.columns.iter().zip(after).filter(|(_, v)| matches!(v, Value::Unchanged)).map(|(col, _)| Value::Text(col.name.clone())).collect()
                }
                None => Vec::new(),
            };
            let mut row: TextRow = vec![
                Some(c.op.code().to_string()),
                Some(c.lsn.to_string()),
                Some(c.ord.to_string()),
                c.xid.map(|x| x.to_string()),
                format_text(&ColumnType::TimestampTz, &Value::TimestampTz(c.commit_ts.micros())),
                (!unchanged.is_empty()).then(|| format_text(&names, &Value::Array(unchanged))).flatten(),
            ];
            row.extend(all.iter().map(|&i| image.and_then(|r| format_text(&schema.columns[i].column_type, &r[i]))));
            row
        })
        .collect();
    // A replay re-delivers changes the table may hold already (the cursor
    // was moved back, the rows were not): the plain COPY fails on the key,
    // and the batch goes in again keeping what is there, so each change is
    // stored once. The savepoint keeps the fast path a single COPY.
    let target = schema.table.quoted();
    if copy_unless_held(tx, &target, &columns, &rows).await? {
        return Ok(());
    }
    let tmp = "strata_history_redelivered";
    tx_execute(tx, &format!("CREATE TEMP TABLE {tmp} (LIKE {target}) ON COMMIT DROP")).await?;
    copy_in(tx, tmp, &columns, &rows).await?;
    let list = columns.join(", ");
    let sql = format!("INSERT INTO {target} ({list}) SELECT {list} FROM {tmp} ON CONFLICT (_strata_lsn, _strata_ord) DO NOTHING");
    tx.execute(&sql, &[]).await.map_err(err(&format!("appending redelivered changes to {}", schema.table)))?;
    tx_execute(tx, &format!("DROP TABLE {tmp}")).await
}
