//! One round of a pull: pages of rows past the last staged position, each
//! staged as one `changes` batch.
//!
//! ```text
//!   stage: last manifest ──▶ position (to, last_key), head seq
//!   source: BEGIN REPEATABLE READ READ ONLY; now() → commit time
//!           describe the query → schema version (a new one if it changed)
//!           COPY page 1 ──▶ batch head+1 (manifest: the commit point)
//!           COPY page 2 ──▶ batch head+2   …until a page is short
//!           COMMIT
//! ```
//!
//! A page is committed by creating its manifest, which records the
//! position after it; a restart reads that manifest and continues after
//! it, so a kill at any moment neither loses a row (the next page starts
//! strictly after the last staged row) nor stages one twice (a page whose
//! manifest was not created is read again whole). Memory is one page.
//!
//! There is no WAL: a page's rows get `_strata_lsn` = the batch's seq and
//! `_strata_ord` = their index, unique and increasing across the stream.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use strata_common::config::{PullConfig, SecretUrl};
use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp};
use strata_stager::log::{BatchWriter, StreamLog, TableBatch};
use strata_stager::manifest::{BatchKind, WatermarkRange};
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};
use tokio_postgres::Client;

use super::query::{PageQuery, Start, Typed};
use super::rebuild::{after, identity, rebuild};
use super::window::Window;
use crate::decode::TextFallbacks;
use crate::snapshot::copy::field_values;
use crate::snapshot::copytext::{Lines, fields};

/// A pull whose query does not fit its config (the watermark or a key
/// column is not in the result): no retry can heal it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Misconfigured(pub String);

/// Where a pull stands in the stage.
#[derive(Debug, Clone, Default)]
struct Position {
    /// The last committed seq (`None`: nothing staged yet).
    head: Option<u64>,
    /// `(watermark, key…)` of the last staged row, as text.
    last: Option<Vec<String>>,
    schema: Option<Arc<TableSchema>>,
}

/// What a round did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// The stream's last batch after the round.
    pub head: Option<u64>,
    pub rows_read: u64,
    pub rows_staged: u64,
    pub batches: u64,
}

/// One page read from the source.
struct Page {
    changes: Vec<Change>,
    read: u64,
    /// `(watermark, key…)` texts of the first and the last row read.
    first: Option<Vec<String>>,
    last: Option<Vec<String>>,
}

/// A pull and what it knows about its stream.
pub struct Puller {
    pub name: String,
    config: PullConfig,
    url: SecretUrl,
    table: Arc<TableName>,
    query: PageQuery,
    log: StreamLog,
    fallbacks: TextFallbacks,
    window: Window,
    /// Whether `window` holds what the stage holds (rebuilt after a start
    /// or a failed round, before the next look-back round).
    window_ready: bool,
    position: Option<Position>,
}

impl Puller {
    pub fn new(config: PullConfig, url: SecretUrl, log: StreamLog, fallbacks: TextFallbacks) -> Result<Puller> {
        let name = config.name.clone();
        let (table, source) = match (&config.table, &config.query) {
            (Some(t), _) => {
                let t = TableName::parse(t).with_context(|| format!("pull {name:?}: table {t:?}"))?;
                let source = format!("SELECT * FROM {}", t.quoted());
                (t, source)
            }
            (None, Some(q)) => (TableName::new("public", name.clone()).with_context(|| format!("pull {name:?}: naming its rows"))?, q.clone()),
            (None, None) => return Err(anyhow!("pull {name:?}: set exactly one of `table` and `query`")),
        };
        let query = PageQuery { source, watermark: config.watermark.clone(), key: config.key.clone(), soft_delete: config.soft_delete.clone() };
        Ok(Puller { name, config, url, table: Arc::new(table), query, log, fallbacks, window: Window::default(), window_ready: false, position: None })
    }

    pub fn log(&self) -> &StreamLog {
        &self.log
    }

    /// Forgets what was read from the stage, to read it again (after a
    /// failed commit: another process may have written the stream).
    /// The window goes too: a failed round may have admitted rows it did
    /// not stage.
    pub fn forget(&mut self) {
        self.position = None;
        self.window = Window::default();
        self.window_ready = false;
    }

    async fn load(&self) -> Result<Position> {
        let head = self.log.head(None).await.with_context(|| format!("finding the last batch of stream {:?}", self.name))?;
        let last = match head {
            Some(seq) => {
                let m = self.log.read(seq).await.with_context(|| format!("reading batch {seq} of stream {:?}", self.name))?;
                let w = m.watermark.ok_or_else(|| anyhow!("batch {seq} of stream {:?} records no watermark: it was not staged by a pull", self.name))?;
                Some(std::iter::once(w.to).chain(w.last_key).collect())
            }
            None => None,
        };
        let schema = self.log.latest_schema(&self.table).await.with_context(|| format!("reading the schema of {} in stream {:?}", self.table, self.name))?;
        Ok(Position { head, last, schema: schema.map(Arc::new) })
    }

    /// Runs one round; stages pages until one is short.
    pub async fn round(&mut self) -> Result<Outcome> {
        let mut pos = match self.position.take() {
            Some(p) => p,
            None => self.load().await?,
        };
        let client = crate::snapshot::copy::connect(&self.url, None).await.with_context(|| format!("connecting for pull {:?}", self.name))?;
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.context("starting the round's transaction")?;
        let now: i64 = client.query_one("SELECT (extract(epoch FROM now()) * 1000000)::int8", &[]).await.context("reading the transaction time")?.get(0);
        let schema = self.schema(&client, &pos).await?;
        pos.schema = Some(schema.clone());
        let order_types = self.order_types(&schema)?;
        self.check_look_back(&schema)?;
        self.ready_window(&client, &schema, &pos, &order_types).await?;
        let op = if pos.head.is_none() { Op::Insert } else { Op::Update };
        let look_back = self.config.look_back;
        let mut start = match &pos.last {
            None => Start::First,
            Some(last) if look_back.is_zero() => Start::After(typed(last, &order_types)),
            Some(last) => Start::LookBack { watermark: typed(&last[..1], &order_types).remove(0), back: look_back },
        };
        let mut outcome = Outcome::default();
        loop {
            let sql = self.query.page_sql(&start, self.config.page_rows);
            let page = self.read_page(&client, &sql, &schema, op, Timestamp(now)).await?;
            outcome.rows_read += page.read;
            let full = page.read >= self.config.page_rows;
            let Some(last) = page.last.clone() else { break };
            // The high-water position: a look-back page below it leaves it.
            let high = match &pos.last {
                Some(h) if !look_back.is_zero() && !after(&client, &typed(&last, &order_types), &typed(h, &order_types)).await? => h.clone(),
                _ => last.clone(),
            };
            if !page.changes.is_empty() {
                outcome.rows_staged += page.changes.len() as u64;
                outcome.batches += 1;
                self.stage(&mut pos, &schema, page, &high).await?;
            }
            // The position moves on even when every row was already staged
            // (a look-back page): the stage's position is behind, never ahead.
            pos.last = Some(high);
            start = Start::After(typed(&last, &order_types));
            if !full {
                break;
            }
        }
        client.batch_execute("COMMIT").await.context("ending the round's transaction")?;
        if !look_back.is_zero() {
            self.window.end_round();
        }
        outcome.head = pos.head;
        self.position = Some(pos);
        Ok(outcome)
    }

    /// Rebuilds the look-back window from the stage when it is not known
    /// to hold what the stage holds (see [`super::rebuild`]).
    async fn ready_window(&mut self, client: &Client, schema: &TableSchema, pos: &Position, order_types: &[String]) -> Result<()> {
        if self.window_ready || self.config.look_back.is_zero() {
            return Ok(());
        }
        if let Some(last) = &pos.last {
            let high = typed(&last[..1], order_types).remove(0);
            let rows = rebuild(client, &self.log, schema, &high, self.config.look_back, &mut self.window).await?;
            tracing::info!(stream = self.name, rows, "rebuilt the look-back window from the stage");
        }
        self.window_ready = true;
        Ok(())
    }

    /// The staged types of the order's columns, to read positions back.
    fn order_types(&self, schema: &TableSchema) -> Result<Vec<String>> {
        self.query
            .order_columns()
            .iter()
            .map(|c| {
                schema.columns.iter().find(|col| col.name == *c).map(|col| col.pg_type.clone()).ok_or_else(|| {
                    anyhow::Error::new(Misconfigured(format!(
                        "pull {:?}: column {c:?} (watermark or key) is not in the result of the query; it has {}",
                        self.name,
                        names(schema)
                    )))
                })
            })
            .collect()
    }

    /// A look-back is a duration: the watermark must be a date or a time.
    fn check_look_back(&self, schema: &TableSchema) -> Result<()> {
        let timely = |t: &ColumnType| matches!(t, ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz);
        let watermark = schema.columns.iter().find(|c| c.name == self.config.watermark);
        match watermark {
            Some(c) if !self.config.look_back.is_zero() && !timely(&c.column_type) => Err(anyhow::Error::new(Misconfigured(format!(
                "pull {:?}: look_back is a duration, but the watermark {:?} is {}; use a date or timestamp watermark, or no look_back",
                self.name, c.name, c.pg_type
            )))),
            _ => Ok(()),
        }
    }

    /// The schema version the result has now: the current one, or a new
    /// version staged when the columns changed.
    async fn schema(&self, client: &Client, pos: &Position) -> Result<Arc<TableSchema>> {
        let statement = client.prepare(&self.query.describe_sql()).await.with_context(|| format!("describing the query of pull {:?}", self.name))?;
        let mut columns = Vec::new();
        for c in statement.columns() {
            let oid = c.type_().oid();
            let pg_type: String =
                client.query_one("SELECT format_type($1::oid, $2::int4)", &[&oid, &c.type_modifier()]).await.context("naming a column's type")?.get(0);
            let column_type = column_type(client, oid, c.type_modifier()).await?;
            let mut col = ColumnSchema::new(c.name(), &pg_type, oid, column_type, self.config.key.iter().any(|k| k == c.name()));
            col.type_modifier = c.type_modifier();
            columns.push(col);
        }
        let database: String = client.query_one("SELECT current_database()::text", &[]).await.context("naming the database")?.get(0);
        let mut schema = TableSchema {
            format: strata_stager::FORMAT_VERSION,
            stream: self.name.clone(),
            table: (*self.table).clone(),
            version: 1,
            relation_oid: None,
            replica_identity: ReplicaIdentity::Default,
            columns,
            since_lsn: Some(Lsn(pos.head.unwrap_or(0) + 1)),
            database: Some(database),
            relfilenode: None,
            generated: Vec::new(),
        };
        if let Some(current) = &pos.schema {
            if current.same_shape(&schema) {
                return Ok(current.clone());
            }
            schema.version = current.version + 1;
            tracing::info!(stream = self.name, version = schema.version, "the pulled result's columns changed; staging a new schema version");
        }
        self.log.write_schema(&schema).await.with_context(|| format!("staging schema v{} of stream {:?}", schema.version, self.name))?;
        Ok(Arc::new(schema))
    }

    async fn read_page(&mut self, client: &Client, sql: &str, schema: &TableSchema, op: Op, commit_ts: Timestamp) -> Result<Page> {
        let stream = client.copy_out(sql).await.with_context(|| format!("querying pull {:?}", self.name))?;
        futures::pin_mut!(stream);
        let order: Vec<usize> = self.query.order_columns().iter().filter_map(|c| schema.columns.iter().position(|col| col.name == *c)).collect();
        let extra = usize::from(self.query.soft_delete.is_some());
        let dedup = !self.config.look_back.is_zero();
        let mut lines = Lines::default();
        let mut page = Page { changes: Vec::new(), read: 0, first: None, last: None };
        while let Some(chunk) = stream.next().await {
            lines.push(&chunk.with_context(|| format!("reading a page of pull {:?}", self.name))?);
            lines.for_each(|line| {
                let raw = fields(line).map_err(|e| anyhow!("malformed COPY row: {e}"))?;
                if raw.len() != schema.columns.len() + extra {
                    return Err(anyhow!("COPY row has {} fields, expected {}", raw.len(), schema.columns.len() + extra));
                }
                let position: Vec<String> =
                    order.iter().map(|&i| raw[i].as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()).collect();
                let deleted = extra == 1 && raw[schema.columns.len()].as_deref() == Some(b"t");
                let values = field_values(&schema.table, &schema.columns, &raw, &self.fallbacks)?;
                page.read += 1;
                page.first.get_or_insert_with(|| position.clone());
                page.last = Some(position);
                if dedup {
                    let (key, content) = identity(schema, &values, deleted);
                    if !self.window.admit(key, content) {
                        return Ok(());
                    }
                }
                let ord = u32::try_from(page.changes.len()).map_err(|_| anyhow!("more than 2^32 rows in a page"))?;
                let (op, after, before) = if deleted { (Op::Delete, None, Some(values)) } else { (op, Some(values), None) };
                page.changes.push(Change { op, table: Arc::new(schema.table.clone()), lsn: Lsn(0), ord, xid: None, commit_ts, after, before });
                Ok(())
            })?;
        }
        if lines.remainder() > 0 {
            return Err(anyhow!("COPY of pull {:?} ended inside a row", self.name));
        }
        Ok(page)
    }

    /// Stages a page as batch `head + 1`, recording `high` as the position
    /// after it.
    async fn stage(&self, pos: &mut Position, schema: &Arc<TableSchema>, mut page: Page, high: &[String]) -> Result<()> {
        let seq = pos.head.map_or(1, |h| h + 1);
        for c in &mut page.changes {
            c.lsn = Lsn(seq);
        }
        let Some(first) = page.first else { return Ok(()) };
        let mut w = BatchWriter::new(&self.log, seq, BatchKind::Changes);
        w.set_watermark(WatermarkRange { from: first[0].clone(), to: high[0].clone(), last_key: high[1..].to_vec() });
        w.add(TableBatch { schema: schema.clone(), changes: page.changes })
            .await
            .with_context(|| format!("uploading batch {seq} of stream {:?}", self.name))?;
        w.commit(Lsn(seq - 1)).await.with_context(|| format!("committing batch {seq} of stream {:?}", self.name))?;
        pos.head = Some(seq);
        Ok(())
    }
}

fn typed(texts: &[String], types: &[String]) -> Vec<Typed> {
    texts.iter().zip(types).map(|(text, pg_type)| Typed { text: text.clone(), pg_type: pg_type.clone() }).collect()
}

fn names(schema: &TableSchema) -> String {
    schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The staged type of a result column: the built-in mapping, else resolved
/// through the catalog (domains to their base, arrays to their element).
async fn column_type(client: &Client, oid: u32, modifier: i32) -> Result<ColumnType> {
    if let Some(t) = ColumnType::from_builtin(oid, modifier) {
        return Ok(t);
    }
    let mut known = std::collections::HashMap::new();
    let mut pending = vec![oid];
    while let Some(o) = pending.pop() {
        if known.contains_key(&o) || ColumnType::from_builtin(o, -1).is_some() {
            continue;
        }
        let t = crate::setup::catalog_type(client, o).await?;
        match &t {
            Some(strata_common::types::CatalogType::Domain { base_oid, .. }) => pending.push(*base_oid),
            Some(strata_common::types::CatalogType::Array { element_oid }) => pending.push(*element_oid),
            _ => {}
        }
        known.insert(o, t);
    }
    Ok(ColumnType::resolve(oid, modifier, &|o| known.get(&o).cloned().flatten()))
}
