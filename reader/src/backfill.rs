//! Backfill: re-stage a table's current rows while the stream keeps running,
//! by watermarks (the DBLog / incremental-snapshot method).
//!
//! For each chunk of the table, in primary-key order, the backfill task:
//! 1. commits a *low* watermark, a transactional logical message
//!    (`pg_logical_emit_message`, prefix `strata.backfill`);
//! 2. reads the next chunk (`… WHERE key > last ORDER BY key LIMIT n`);
//! 3. hands it to the stream loop and commits a *high* watermark.
//!
//! The stream loop sees the watermarks in commit order among the changes.
//! Between low and high it records the keys of the table's changes; at the
//! high watermark it stages the chunk's rows as reads (`_strata_op = r`)
//! inside the high watermark's transaction, *minus* every row whose key
//! changed in between — the stream has those changes, and the chunk's copy
//! of such a row may be older or newer than them. What is staged is thus
//! the row as of the high watermark, at its place in the log: readers of
//! the stage apply it like any change, and nothing is lost or reordered.
//! A truncate of the table between the watermarks discards the chunk.
//!
//! Progress (the last key) is saved in the request only once the batch
//! holding the chunk is durable; a reader killed in between reads the chunk
//! again after restart, and re-staging a chunk is harmless by the same
//! argument. Requests are control objects, `streams/{stream}/backfills/{id}.json`,
//! written by `strata-reader backfill` or by the reader itself when a table
//! joins the publication after the stream started.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use strata_common::config::SourceConfig;
use strata_common::ident::{quote_ident, quote_literal};
use strata_common::{Change, Lsn, TableName, Timestamp, Value};
use strata_stager::Versioned;
use strata_stager::log::StreamLog;
use strata_stager::schema::{ColumnSchema, TableSchema};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::decode::TextFallbacks;
use crate::setup::SourceDb;
use crate::snapshot::copytext::Lines;
use crate::snapshot::plan;
use crate::snapshot::{Phase, SnapshotState, copy};
use crate::source::Relation;
pub use strata_stager::control::{BackfillRequest, BackfillState};

/// Prefix of the watermark messages.
pub const MESSAGE_PREFIX: &str = "strata.backfill";
/// Most rows per chunk (fewer when `batch.max_rows` is lower): one chunk is
/// held in memory between its watermarks.
pub const MAX_CHUNK_ROWS: u64 = 10_000;
/// How often the task looks at the stage's control signal for new requests
/// (a remote stage's signal at most every [`REMOTE_POLL`](strata_stager::signal::REMOTE_POLL)).
const POLL: Duration = Duration::from_secs(2);

/// Every backfill request of the stream, oldest first.
pub async fn list(log: &StreamLog) -> Result<Vec<Versioned<BackfillRequest>>> {
    let mut out = Vec::new();
    for meta in log.stage().list(&log.keys().backfills_prefix()).await? {
        if let Some(r) = log.stage().get_json::<BackfillRequest>(&meta.location).await? {
            out.push(r);
        }
    }
    out.sort_by_key(|r| (r.value.requested_at, r.value.id.clone()));
    Ok(out)
}

/// A chunk on its way from the task to the stream loop.
pub struct Chunk {
    pub mark: String,
    pub relation: Relation,
    pub rows: Vec<Vec<Value>>,
    /// The commit LSN of the transaction the rows were staged in, or
    /// `Lsn::ZERO` if none was (all discarded).
    pub staged: oneshot::Sender<Lsn>,
}

#[derive(Serialize, Deserialize)]
struct Mark {
    mark: String,
    edge: Edge,
    table: TableName,
    key: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Edge {
    Low,
    High,
}

/// The open watermark window, kept by the stream loop.
struct Window {
    mark: String,
    table: TableName,
    key: Vec<String>,
    changed: HashSet<String>,
    truncated: bool,
}

/// What the stream loop does with watermarks and chunks.
pub struct Windows {
    open: Option<Window>,
    chunks: mpsc::Receiver<Chunk>,
}

/// A chunk's rows to stage, after the window's changes are taken out.
pub struct Ready {
    pub relation: Relation,
    pub rows: Vec<Vec<Value>>,
    pub staged: oneshot::Sender<Lsn>,
}

fn key_string(values: &[&Value]) -> String {
    format!("{values:?}")
}

impl Windows {
    pub fn new(chunks: mpsc::Receiver<Chunk>) -> Windows {
        Windows { open: None, chunks }
    }

    /// A change the stream staged: records its key if a window on its table is open.
    pub fn observe(&mut self, schema: &TableSchema, change: &Change) {
        let Some(w) = self.open.as_mut().filter(|w| w.table == schema.table) else { return };
        if change.op == strata_common::Op::Truncate {
            w.truncated = true;
            return;
        }
        let positions: Option<Vec<usize>> = w.key.iter().map(|k| schema.columns.iter().position(|c| &c.name == k)).collect();
        let Some(positions) = positions else {
            // The key columns are gone from the stream's schema: nothing of the chunk can be trusted.
            w.truncated = true;
            return;
        };
        for image in [&change.after, &change.before].into_iter().flatten() {
            let key: Vec<&Value> = positions.iter().filter_map(|&p| image.get(p)).collect();
            if key.len() == positions.len() && !key.iter().any(|v| matches!(v, Value::Null | Value::Unchanged)) {
                w.changed.insert(key_string(&key));
            }
        }
    }

    /// A logical message in a transaction being staged. Returns the chunk to
    /// stage in this transaction at a high watermark.
    pub fn message(&mut self, prefix: &str, content: &[u8]) -> Result<Option<Ready>> {
        if prefix != MESSAGE_PREFIX {
            return Ok(None);
        }
        let Ok(mark) = serde_json::from_slice::<Mark>(content) else {
            tracing::warn!(content = %String::from_utf8_lossy(content), "ignoring a malformed backfill watermark");
            return Ok(None);
        };
        match mark.edge {
            Edge::Low => {
                self.open = Some(Window { mark: mark.mark, table: mark.table, key: mark.key, changed: HashSet::new(), truncated: false });
                Ok(None)
            }
            Edge::High => {
                // A high watermark of another window (of an earlier process,
                // whose chunk is gone) leaves the open window alone.
                let Some(window) = self.open.take_if(|w| w.mark == mark.mark) else {
                    return Ok(None);
                };
                // The chunk was handed over before the high watermark committed.
                let chunk = loop {
                    match self.chunks.try_recv() {
                        Ok(c) if c.mark == window.mark => break c,
                        Ok(_stale) => continue,
                        Err(_) => return Ok(None),
                    }
                };
                if window.truncated {
                    return Ok(Some(Ready { relation: chunk.relation, rows: Vec::new(), staged: chunk.staged }));
                }
                let positions: Vec<usize> = window
                    .key
                    .iter()
                    .map(|k| chunk.relation.columns.iter().position(|c| &c.name == k))
                    .collect::<Option<_>>()
                    .ok_or_else(|| anyhow!("backfill chunk of {} lacks its key columns", window.table))?;
                let rows = chunk
                    .rows
                    .into_iter()
                    .filter(|r| {
                        let key: Vec<&Value> = positions.iter().filter_map(|&p| r.get(p)).collect();
                        !window.changed.contains(&key_string(&key))
                    })
                    .collect();
                Ok(Some(Ready { relation: chunk.relation, rows, staged: chunk.staged }))
            }
        }
    }
}

/// The backfill task: runs requests one at a time, oldest first, until
/// `token` is cancelled. Also turns tables that join the publication later
/// into requests.
pub struct Task {
    pub source: SourceConfig,
    pub log: StreamLog,
    pub chunks: mpsc::Sender<Chunk>,
    /// The end LSN (and commit time) of the last durable batch.
    pub durable: watch::Receiver<(Lsn, Option<Timestamp>)>,
    /// How often to look for tables added to the publication; `None` for
    /// streams without an initial snapshot (they never promised existing rows).
    pub watch_publication: Option<Duration>,
    /// Rows per chunk.
    pub chunk_rows: u64,
    pub fallbacks: TextFallbacks,
    pub token: CancellationToken,
}

impl Task {
    /// Lists the stream's requests when the stage's control signal moved
    /// (a request submitted anywhere touches it), not every pass.
    pub async fn run(mut self) {
        let mut last_check: Option<tokio::time::Instant> = None;
        let mut control = strata_stager::signal::ControlWatch::for_stage(self.log.stage());
        loop {
            if let Some(every) = self.watch_publication
                && last_check.is_none_or(|t| t.elapsed() >= every)
            {
                last_check = Some(tokio::time::Instant::now());
                if let Err(e) = self.check_publication().await {
                    tracing::warn!(error = format!("{e:#}"), "could not check the publication for new tables");
                }
            }
            let due = control.changed(self.log.stage()).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the control signal; listing backfill requests");
                true
            });
            if due && let Err(e) = self.run_requests().await {
                tracing::warn!(error = format!("{e:#}"), "backfill interrupted; retrying");
                control.invalidate();
            }
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn run_requests(&mut self) -> Result<()> {
        for req in list(&self.log).await? {
            if self.token.is_cancelled() {
                return Ok(());
            }
            if matches!(req.value.state, BackfillState::Pending | BackfillState::Running) {
                self.run_one(req).await?;
            }
        }
        Ok(())
    }

    async fn save(&self, req: &mut Versioned<BackfillRequest>) -> Result<()> {
        let path = self.log.keys().backfill(&req.value.id)?;
        req.version = self.log.stage().put_json_if(&path, &req.value, Some(&req.version)).await?;
        Ok(())
    }

    async fn run_one(&mut self, mut req: Versioned<BackfillRequest>) -> Result<()> {
        let table = req.value.table.clone();
        let client = copy::connect(&self.source.url, None).await?;
        let mut db = SourceDb::connect(&self.source).await?;
        let found = crate::snapshot::plan::relation(&client, &table).await?;
        let failure = match &found {
            None => Some(format!("table {table} does not exist")),
            Some((_, key)) if key.is_empty() => Some(format!("{table} has no primary key or replica identity index to chunk by")),
            Some(_) => None,
        };
        if let Some(error) = failure {
            tracing::error!(id = req.value.id, error, "backfill failed");
            req.value.state = BackfillState::Failed;
            req.value.error = Some(error);
            req.value.finished_at = Some(Timestamp::now());
            return self.save(&mut req).await;
        }
        let (_, key) = found.expect("checked above");
        if req.value.state == BackfillState::Pending {
            req.value.state = BackfillState::Running;
            self.save(&mut req).await?;
            tracing::info!(id = req.value.id, table = %table, reason = req.value.reason, "backfill started");
        }
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
        loop {
            if self.token.is_cancelled() {
                return Ok(());
            }
            let mark = format!("{}/{}/{nonce}", req.value.id, req.value.chunks);
            emit(&client, &Mark { mark: mark.clone(), edge: Edge::Low, table: table.clone(), key: key.clone() }).await?;
            let (n, last, staged_rx) = self.locked_chunk(&client, &mut db, &table, &key, mark, req.value.last_key.as_deref()).await?;
            let at = staged_rx.await.map_err(|_| anyhow!("the stream loop stopped before staging the chunk"))?;
            // Progress only once the rows are durable.
            while self.durable.borrow().0 < at {
                self.durable.changed().await.map_err(|_| anyhow!("the stream loop stopped"))?;
            }
            req.value.chunks += 1;
            req.value.rows += n;
            if let Some(last) = last {
                req.value.last_key = Some(last);
            }
            if n < self.chunk_rows {
                req.value.state = BackfillState::Done;
                req.value.finished_at = Some(Timestamp::now());
                self.save(&mut req).await?;
                tracing::info!(id = req.value.id, table = %table, rows = req.value.rows, chunks = req.value.chunks, "backfill done");
                return Ok(());
            }
            self.save(&mut req).await?;
        }
    }

    /// Tables that joined the publication since the snapshot (or the last
    /// check) are backfilled: their rows from before they joined are in no
    /// snapshot and no change. Membership is compared by how the
    /// publication names tables (see [`plan::Membership`]), so a table created
    /// later inside a published schema, whose rows are all in the stream, is
    /// not copied again.
    async fn check_publication(&mut self) -> Result<()> {
        let key = self.log.keys().snapshot();
        let Some(mut state) = self.log.stage().get_json::<SnapshotState>(&key).await? else { return Ok(()) };
        if state.value.phase != Phase::Done {
            return Ok(());
        }
        let client = copy::connect(&self.source.url, None).await?;
        let publication = self.source.publication_name();
        let now = plan::membership(&client, &publication).await?;
        if let Some(before) = &state.value.publication {
            if *before == now {
                return Ok(());
            }
            let active: HashSet<TableName> = list(&self.log)
                .await?
                .into_iter()
                .filter(|r| matches!(r.value.state, BackfillState::Pending | BackfillState::Running))
                .map(|r| r.value.table)
                .collect();
            for table in plan::joined_since(&client, &publication, before, &now).await? {
                if !active.contains(&table) {
                    let req = BackfillRequest::submit(&self.log, &table, "added to the publication").await?;
                    tracing::info!(id = req.id, table = %table, "table joined the publication; backfilling its existing rows");
                }
            }
        }
        state.value.publication = Some(now);
        self.log.stage().put_json_if(&key, &state.value, Some(&state.version)).await.context("recording the publication's tables")?;
        Ok(())
    }
}

async fn emit(client: &Client, mark: &Mark) -> Result<()> {
    let content = serde_json::to_string(mark)?;
    client.execute("SELECT pg_logical_emit_message(true, $1, $2)", &[&MESSAGE_PREFIX, &content]).await.context("emitting a backfill watermark")?;
    Ok(())
}

/// `'text'::type` literal of a key value.
fn literal(text: &str, pg_type: &str) -> String {
    format!("{}::{pg_type}", quote_literal(text))
}

impl Task {
    /// Reads the chunk after `after`, hands it to the stream loop and emits
    /// its high watermark, all in one transaction holding a share lock on
    /// the table: no DDL commits between the chunk's read and the point it
    /// is staged at, so its rows are in the schema the stream is in there.
    /// The columns are read again for each chunk (a column added since the
    /// last one must be in it). Returns the rows read, the last key, and
    /// where the stream staged them.
    async fn locked_chunk(
        &self,
        client: &Client,
        db: &mut SourceDb,
        table: &TableName,
        key: &[String],
        mark: String,
        after: Option<&[String]>,
    ) -> Result<(u64, Option<Vec<String>>, oneshot::Receiver<Lsn>)> {
        client.batch_execute("BEGIN").await.with_context(|| format!("starting a transaction for a chunk of {table}"))?;
        let read = async {
            client.batch_execute(&format!("LOCK TABLE ONLY {} IN ACCESS SHARE MODE", table.quoted())).await.with_context(|| format!("locking {table}"))?;
            let (relation, now_key) = plan::relation(client, table).await?.with_context(|| format!("{table} was dropped during its backfill"))?;
            if now_key != key {
                bail!("the key of {table} changed during its backfill ({key:?} to {now_key:?})");
            }
            let columns = db.column_schemas(relation.oid, &relation.columns).await?;
            let key_at: Vec<usize> = key
                .iter()
                .map(|k| columns.iter().position(|c| &c.name == k).with_context(|| format!("key column {k:?} of {table} is gone")))
                .collect::<Result<_>>()?;
            let (rows, last) = self.read_chunk(client, table, &columns, &key_at, after).await?;
            let n = rows.len() as u64;
            let (staged_tx, staged_rx) = oneshot::channel();
            self.chunks.send(Chunk { mark: mark.clone(), relation, rows, staged: staged_tx }).await.map_err(|_| anyhow!("the stream loop stopped"))?;
            emit(client, &Mark { mark, edge: Edge::High, table: table.clone(), key: key.to_vec() }).await?;
            Ok((n, last, staged_rx))
        };
        match read.await {
            Ok(done) => {
                client.batch_execute("COMMIT").await.with_context(|| format!("committing the high watermark of a chunk of {table}"))?;
                Ok(done)
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    /// The next chunk after `after` in key order, with the text forms of the
    /// last row's key.
    async fn read_chunk(
        &self,
        client: &Client,
        table: &TableName,
        columns: &[ColumnSchema],
        key_at: &[usize],
        after: Option<&[String]>,
    ) -> Result<(Vec<Vec<Value>>, Option<Vec<String>>)> {
        use futures::StreamExt;
        let (limit, fallbacks) = (self.chunk_rows, &self.fallbacks);
        let list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let key: Vec<String> = key_at.iter().map(|&i| quote_ident(&columns[i].name)).collect();
        let mut sql = format!("COPY (SELECT {} FROM ONLY {}", list.join(", "), table.quoted());
        if let Some(after) = after {
            if after.len() != key_at.len() {
                bail!("the saved position has {} key values, {table} has {} key columns now", after.len(), key_at.len());
            }
            let bound: Vec<String> = after.iter().zip(key_at).map(|(v, &i)| literal(v, &columns[i].pg_type)).collect();
            sql.push_str(&format!(" WHERE ({}) > ({})", key.join(", "), bound.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}) TO STDOUT", key.join(", ")));
        let stream = client.copy_out(&sql).await.with_context(|| format!("reading a chunk of {table}"))?;
        futures::pin_mut!(stream);
        let mut lines = Lines::default();
        let mut rows = Vec::new();
        let mut last = None;
        while let Some(chunk) = stream.next().await {
            lines.push(&chunk?);
            lines.for_each(|line| {
                let (raw, values) = copy::values(table, columns, line, fallbacks).with_context(|| format!("a row of {table}"))?;
                let key_text: Option<Vec<String>> =
                    key_at.iter().map(|&i| raw.get(i).and_then(|f| f.as_deref()).and_then(|b| String::from_utf8(b.to_vec()).ok())).collect();
                last = Some(key_text.ok_or_else(|| anyhow!("a key of {table} is NULL or not UTF-8"))?);
                rows.push(values);
                Ok::<_, anyhow::Error>(())
            })?;
        }
        Ok((rows, last))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strata_common::{ColumnType, Op};
    use strata_stager::schema::ReplicaIdentity;

    use super::*;
    use crate::source::RelationColumn;

    fn table() -> TableName {
        TableName::new("public", "t").unwrap()
    }

    fn schema() -> TableSchema {
        let column = |name: &str, key: bool| ColumnSchema::new(name, "bigint", 20, ColumnType::Int64, key);
        TableSchema {
            format: 1,
            stream: "main".into(),
            table: table(),
            version: 1,
            relation_oid: Some(1),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![column("n", false), column("id", true)],
            since_lsn: None,
            database: None,
            relfilenode: None,
            generated: Vec::new(),
        }
    }

    fn relation() -> Relation {
        let column = |name: &str, key: bool| RelationColumn { name: name.into(), type_oid: 20, type_modifier: -1, key };
        Relation { oid: 1, namespace: "public".into(), name: "t".into(), replica_identity: b'd', columns: vec![column("n", false), column("id", true)] }
    }

    fn mark(mark: &str, edge: Edge) -> Vec<u8> {
        serde_json::to_vec(&Mark { mark: mark.into(), edge, table: table(), key: vec!["id".into()] }).unwrap()
    }

    fn change(op: Op, after: Option<i64>, before: Option<i64>) -> Change {
        let row = |id: i64| vec![Value::Int64(0), Value::Int64(id)];
        Change {
            op,
            table: Arc::new(table()),
            lsn: Lsn(1),
            ord: 0,
            xid: Some(1),
            commit_ts: Timestamp(0),
            after: after.map(row),
            before: before.map(|id| vec![Value::Null, Value::Int64(id)]),
        }
    }

    async fn chunk(tx: &mpsc::Sender<Chunk>, mark: &str, ids: &[i64]) -> oneshot::Receiver<Lsn> {
        let (staged, rx) = oneshot::channel();
        let rows = ids.iter().map(|&id| vec![Value::Int64(7), Value::Int64(id)]).collect();
        tx.send(Chunk { mark: mark.into(), relation: relation(), rows, staged }).await.unwrap();
        rx
    }

    fn ids(ready: &Ready) -> Vec<i64> {
        ready.rows.iter().map(|r| if let Value::Int64(id) = r[1] { id } else { panic!("{r:?}") }).collect()
    }

    #[tokio::test]
    async fn rows_changed_between_the_watermarks_are_left_to_the_stream() {
        let (tx, rx) = mpsc::channel(4);
        let mut w = Windows::new(rx);
        let s = schema();
        // Before the low watermark: not in the window.
        w.observe(&s, &change(Op::Update, Some(1), None));
        assert!(w.message(MESSAGE_PREFIX, &mark("a", Edge::Low)).unwrap().is_none());
        w.observe(&s, &change(Op::Update, Some(2), None));
        w.observe(&s, &change(Op::Update, Some(30), Some(3))); // key change: both keys
        w.observe(&s, &change(Op::Delete, None, Some(4)));
        let mut other = schema();
        other.table = TableName::new("public", "other").unwrap();
        w.observe(&other, &change(Op::Update, Some(5), None));
        let _staged = chunk(&tx, "a", &[1, 2, 3, 4, 5, 6]).await;
        let ready = w.message(MESSAGE_PREFIX, &mark("a", Edge::High)).unwrap().unwrap();
        assert_eq!(ids(&ready), [1, 5, 6]);
        // Other prefixes and stale high watermarks stage nothing.
        assert!(w.message("app", b"whatever").unwrap().is_none());
        assert!(w.message(MESSAGE_PREFIX, &mark("gone", Edge::High)).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_truncate_in_the_window_discards_the_chunk_and_stale_chunks_are_skipped() {
        let (tx, rx) = mpsc::channel(4);
        let mut w = Windows::new(rx);
        let _old = chunk(&tx, "old", &[1]).await;
        w.message(MESSAGE_PREFIX, &mark("b", Edge::Low)).unwrap();
        w.observe(&schema(), &change(Op::Truncate, None, None));
        let _staged = chunk(&tx, "b", &[1, 2]).await;
        let ready = w.message(MESSAGE_PREFIX, &mark("b", Edge::High)).unwrap().unwrap();
        assert!(ready.rows.is_empty());
        // A new low watermark replaces one whose high never came.
        w.message(MESSAGE_PREFIX, &mark("c", Edge::Low)).unwrap();
        w.message(MESSAGE_PREFIX, &mark("d", Edge::Low)).unwrap();
        let _c = chunk(&tx, "c", &[9]).await;
        assert!(w.message(MESSAGE_PREFIX, &mark("c", Edge::High)).unwrap().is_none());
        let _d = chunk(&tx, "d", &[8]).await;
        assert_eq!(ids(&w.message(MESSAGE_PREFIX, &mark("d", Edge::High)).unwrap().unwrap()), [8]);
    }
}
