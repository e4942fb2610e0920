//! A copy worker: one source connection inside the exported snapshot, taking
//! page ranges off a shared queue and turning each into encoded parts.
//!
//! Memory per worker is one batch of parsed rows (`batch.max_rows` /
//! `batch.max_bytes`) plus one encoded part held back: the last part of a
//! range is sent marked as such, so the committer knows a table is complete
//! in the same manifest that holds its last rows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use strata_common::config::SecretUrl;
use strata_common::ident::quote_ident;
use strata_common::pgtext::setting_statements;
use strata_common::{Change, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::log::{EncodedPart, TableBatch};
use strata_stager::schema::{ColumnSchema, TableSchema};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::copytext::{Fields, Lines, fields};
use super::plan::{PageRange, Shape};
use crate::batch::change_size;
use crate::decode::TextFallbacks;

/// One table being copied, shared by the workers copying its ranges.
pub struct TableCopy {
    pub table: Arc<TableName>,
    pub oid: u32,
    /// The table as the snapshot saw it.
    pub shape: Shape,
    pub schema: Arc<TableSchema>,
    pub level: u32,
    pub partitioned: bool,
    pub estimated_rows: u64,
    pub rows: AtomicU64,
    /// Bytes of COPY text read: the size of the rows as the source sends them.
    pub bytes: AtomicU64,
    pub done: AtomicBool,
}

pub struct Job {
    pub table: Arc<TableCopy>,
    pub range: PageRange,
}

/// What workers hand the committer, in order per worker.
pub enum Msg {
    Part {
        table: Arc<TableCopy>,
        part: EncodedPart,
        range_done: bool,
    },
    /// A range whose rows (if any) were all in parts already sent.
    RangeDone {
        table: Arc<TableCopy>,
    },
}

/// What every worker of one snapshot shares.
pub struct Shared {
    pub point: Lsn,
    pub commit_ts: Timestamp,
    pub max_rows: u64,
    pub max_bytes: u64,
    /// Next `_strata_ord`: unique among the rows of one point.
    pub ords: AtomicU64,
    pub jobs: Mutex<VecDeque<Job>>,
    pub fallbacks: TextFallbacks,
}

/// Opens a connection with the session settings the text parser expects,
/// reading inside `snapshot_name` when given.
pub async fn connect(url: &SecretUrl, snapshot_name: Option<&str>) -> Result<Client> {
    let (client, _task) = strata_common::pgconn::connect(url.expose(), "source snapshot").await?;
    let mut setup = String::new();
    for (_, sql) in setting_statements() {
        setup.push_str(&sql);
        setup.push_str("; ");
    }
    if let Some(name) = snapshot_name {
        setup.push_str(&format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}';", name.replace('\'', "''")));
    }
    client.batch_execute(&setup).await.with_context(|| format!("setting up a source session (snapshot {snapshot_name:?})"))?;
    Ok(client)
}

/// Copies jobs until the queue is empty (or `token` is cancelled).
pub async fn worker(client: Client, shared: Arc<Shared>, tx: mpsc::Sender<Msg>, token: CancellationToken) -> Result<Client> {
    loop {
        let job = shared.jobs.lock().map_err(|_| anyhow!("snapshot job queue poisoned"))?.pop_front();
        let Some(job) = job else { return Ok(client) };
        if token.is_cancelled() {
            return Ok(client);
        }
        let what = describe(&job);
        copy_range(&client, &shared, job, &tx, &token).await.with_context(|| format!("copying {what}"))?;
    }
}

fn describe(job: &Job) -> String {
    match job.range {
        PageRange { start: 0, end: None } => job.table.table.to_string(),
        PageRange { start, end: Some(end) } => format!("{} pages {start}..{end}", job.table.table),
        PageRange { start, end: None } => format!("{} pages {start}..", job.table.table),
    }
}

fn copy_sql(job: &Job) -> String {
    let t = &job.table;
    let columns: Vec<String> = t.schema.columns.iter().map(|c| quote_ident(&c.name)).collect();
    // ONLY: inheritance children are tables of their own in a publication;
    // a partitioned root (published via its root) is read with its partitions.
    let from = if t.partitioned { t.table.quoted() } else { format!("ONLY {}", t.table.quoted()) };
    let mut sql = format!("COPY (SELECT {} FROM {from}", columns.join(", "));
    match job.range {
        PageRange { start: 0, end: None } => {}
        PageRange { start, end } => {
            sql.push_str(&format!(" WHERE ctid >= '({start},0)'::tid"));
            if let Some(end) = end {
                sql.push_str(&format!(" AND ctid < '({end},0)'::tid"));
            }
        }
    }
    sql.push_str(") TO STDOUT");
    sql
}

async fn copy_range(client: &Client, shared: &Shared, job: Job, tx: &mpsc::Sender<Msg>, token: &CancellationToken) -> Result<()> {
    let table = job.table.clone();
    let stream = client.copy_out(&copy_sql(&job)).await?;
    futures::pin_mut!(stream);
    let mut lines = Lines::default();
    let mut rows: Vec<Change> = Vec::new();
    let mut bytes = 0u64;
    let mut held: Option<EncodedPart> = None;
    let mut row_number = 0u64;
    let mut counted = 0u64;
    while let Some(chunk) = stream.next().await {
        if token.is_cancelled() {
            return Ok(());
        }
        let chunk = chunk?;
        table.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        lines.push(&chunk);
        lines.for_each(|line| {
            row_number += 1;
            let change = row(shared, &table, line).with_context(|| format!("row {row_number} of the range"))?;
            bytes += change_size(&change);
            rows.push(change);
            Ok::<_, anyhow::Error>(())
        })?;
        table.rows.fetch_add(rows.len() as u64 - counted, Ordering::Relaxed);
        counted = rows.len() as u64;
        // Cut between network chunks: a batch may exceed the limits by one chunk's rows.
        if rows.len() as u64 >= shared.max_rows || bytes >= shared.max_bytes {
            let part = encode(&table, std::mem::take(&mut rows)).await?;
            bytes = 0;
            counted = 0;
            if let Some(previous) = held.replace(part) {
                send(tx, Msg::Part { table: table.clone(), part: previous, range_done: false }).await?;
            }
        }
    }
    if lines.remainder() > 0 {
        return Err(anyhow!("COPY ended inside a row ({} bytes without a newline)", lines.remainder()));
    }
    let tail = if rows.is_empty() { None } else { Some(encode(&table, rows).await?) };
    match (held, tail) {
        (Some(previous), Some(last)) => {
            send(tx, Msg::Part { table: table.clone(), part: previous, range_done: false }).await?;
            send(tx, Msg::Part { table: table.clone(), part: last, range_done: true }).await
        }
        (Some(last), None) | (None, Some(last)) => send(tx, Msg::Part { table: table.clone(), part: last, range_done: true }).await,
        (None, None) => send(tx, Msg::RangeDone { table: table.clone() }).await,
    }
}

async fn send(tx: &mpsc::Sender<Msg>, msg: Msg) -> Result<()> {
    tx.send(msg).await.map_err(|_| anyhow!("the snapshot committer stopped (see its error)"))
}

async fn encode(table: &TableCopy, changes: Vec<Change>) -> Result<EncodedPart> {
    let batch = TableBatch { schema: table.schema.clone(), changes };
    Ok(tokio::task::spawn_blocking(move || EncodedPart::encode(batch)).await.map_err(|e| anyhow!("encoder task failed: {e}"))??)
}

/// The raw fields of a COPY text row of `table`'s `columns`, unescaped, and
/// their values; a value its typed column cannot hold is kept as its text.
pub fn values<'a>(table: &TableName, columns: &[ColumnSchema], line: &'a [u8], fallbacks: &TextFallbacks) -> Result<(Fields<'a>, Vec<Value>)> {
    if columns.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let raw = fields(line).map_err(|e| anyhow!("malformed COPY row: {e}"))?;
    if raw.len() != columns.len() {
        return Err(anyhow!("COPY row has {} fields, the table has {} columns", raw.len(), columns.len()));
    }
    let values = field_values(table, columns, &raw, fallbacks)?;
    Ok((raw, values))
}

/// The values of raw COPY fields, one per column of `columns`.
pub fn field_values(table: &TableName, columns: &[ColumnSchema], raw: &Fields<'_>, fallbacks: &TextFallbacks) -> Result<Vec<Value>> {
    raw.iter()
        .zip(columns)
        .map(|(f, col)| match f {
            None => Ok(Value::Null),
            Some(bytes) => {
                let text = std::str::from_utf8(bytes).map_err(|_| anyhow!("column {:?}: value is not UTF-8", col.name))?;
                Ok(fallbacks.parse(table, col, text))
            }
        })
        .collect()
}

/// One COPY row as a snapshot read.
fn row(shared: &Shared, table: &TableCopy, line: &[u8]) -> Result<Change> {
    let (_, values) = values(&table.table, &table.schema.columns, line, &shared.fallbacks)?;
    let ord = shared.ords.fetch_add(1, Ordering::Relaxed);
    let ord = u32::try_from(ord).map_err(|_| anyhow!("more than 2^32 snapshot rows at one point; the ordinal would wrap"))?;
    Ok(Change { op: Op::Read, table: table.table.clone(), lsn: shared.point, ord, xid: None, commit_ts: shared.commit_ts, after: Some(values), before: None })
}
