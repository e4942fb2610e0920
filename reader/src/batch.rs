//! Batching the change stream: [`Pending`], the changes grouped per table
//! and schema version in commit order with the size figures that decide
//! when to cut or spill, and [`Batcher`], the transaction framing and the
//! cut and spill policy around it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use strata_common::config::BatchConfig;
use strata_common::{Change, Lsn, TableName, Timestamp, Value};
use strata_stager::log::TableBatch;
use strata_stager::schema::TableSchema;

use crate::decode::Position;

#[derive(Default)]
pub struct Pending {
    groups: Vec<TableBatch>,
    index: HashMap<(TableName, u32), usize>,
    pub rows: u64,
    /// Approximate in-memory size of the buffered changes.
    pub bytes: u64,
    /// When the oldest buffered change arrived.
    pub since: Option<Instant>,
}

/// Heap bytes a value holds beyond its own slot.
fn value_heap(v: &Value) -> u64 {
    match v {
        Value::Text(s) | Value::Json(s) => s.capacity() as u64,
        Value::Bytes(b) => b.capacity() as u64,
        Value::Array(items) => (items.capacity() * std::mem::size_of::<Value>()) as u64 + items.iter().map(value_heap).sum::<u64>(),
        _ => 0,
    }
}

/// Memory a buffered change occupies: what `max_bytes` counts, so that the
/// spill threshold bounds real memory, not an estimate of the encoded size.
pub fn change_size(c: &Change) -> u64 {
    let row = |r: &Option<Vec<Value>>| r.as_ref().map_or(0, |r| (r.capacity() * std::mem::size_of::<Value>()) as u64 + r.iter().map(value_heap).sum::<u64>());
    std::mem::size_of::<Change>() as u64 + row(&c.after) + row(&c.before)
}

impl Pending {
    pub fn push(&mut self, schema: &Arc<TableSchema>, change: Change) {
        self.rows += 1;
        self.bytes += change_size(&change);
        self.since.get_or_insert_with(Instant::now);
        let key = (schema.table.clone(), schema.version);
        let i = *self.index.entry(key).or_insert_with(|| {
            self.groups.push(TableBatch { schema: schema.clone(), changes: Vec::new() });
            self.groups.len() - 1
        });
        self.groups[i].changes.push(change);
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes everything buffered, leaving this empty.
    pub fn take(&mut self) -> Vec<TableBatch> {
        self.index.clear();
        self.rows = 0;
        self.bytes = 0;
        self.since = None;
        std::mem::take(&mut self.groups)
    }
}

/// What the batcher hands the committer.
pub enum Work {
    /// Part files of the batch in progress (a large transaction spilling).
    Parts(Vec<TableBatch>),
    /// The rest of the batch; commit it. `lsn_start` is the previous batch's end.
    Commit { tables: Vec<TableBatch>, lsn_start: Lsn },
}

/// The stream's frames arrived in an order pgoutput never sends: the
/// stream is not what the reader assumes, so it stops (permanent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("Begin of {lsn} inside an open transaction")]
    BeginInsideTransaction { lsn: Lsn },
    #[error("Commit of {lsn} outside a transaction")]
    CommitOutsideTransaction { lsn: Lsn },
    #[error("Commit at {commit} for a transaction that announced {announced}")]
    CommitMismatch { commit: Lsn, announced: Lsn },
    #[error("{what} outside a transaction")]
    ChangeOutsideTransaction { what: &'static str },
    #[error("transaction at {lsn} has more than 2^32 changes")]
    TooManyChanges { lsn: Lsn },
}

/// The open transaction.
struct Txn {
    final_lsn: Lsn,
    xid: u32,
    commit_ts: Timestamp,
    ord: u32,
    /// Changes kept (not already in a table's snapshot).
    staged: u32,
}

/// Transaction framing and the cut and spill policy of the change stream.
/// No I/O: the caller feeds it the stream's frames and changes, and sends
/// the [`Work`] it returns to the committer.
///
/// - A batch is cut only between transactions, once it holds a committed
///   transaction and is `max_age` old, or has `max_rows` rows or
///   `max_bytes` bytes, or spilled.
/// - A transaction larger than `max_bytes` spills: its buffered changes go
///   out as part files of the batch in progress, which commits later, whole.
/// - Transactions that end at or before the resume point were staged before
///   a restart and are skipped whole.
pub struct Batcher {
    limits: BatchConfig,
    resume: Lsn,
    pending: Pending,
    /// Rows of the batch in progress, spilled ones included.
    rows: u64,
    spilled: bool,
    /// The commit LSN of the last transaction in the batch in progress.
    end: Option<Lsn>,
    /// The end of the last batch handed over (the next one's `lsn_start`).
    prev_end: Lsn,
    txn: Option<Txn>,
    skipping: bool,
}

impl Batcher {
    pub fn new(resume: Lsn, limits: BatchConfig) -> Batcher {
        Batcher { limits, resume, pending: Pending::default(), rows: 0, spilled: false, end: None, prev_end: resume, txn: None, skipping: false }
    }

    /// The batch to commit now, if it is due by age at `now` or full.
    pub fn cut(&mut self, now: Instant) -> Option<Work> {
        if self.txn.is_some() || self.end.is_none() {
            return None;
        }
        let due = self.pending.since.is_none_or(|t| now.saturating_duration_since(t) >= self.limits.max_age);
        let full = self.rows >= self.limits.max_rows || self.spilled || self.pending.bytes >= self.limits.max_bytes;
        (due || full).then(|| self.take())
    }

    /// What to commit when stopping: the completed transactions. An open
    /// one is abandoned (not confirmed, so the server sends it again).
    pub fn finish(&mut self) -> Option<Work> {
        (self.txn.is_none() && self.end.is_some()).then(|| self.take())
    }

    fn take(&mut self) -> Work {
        let lsn_start = self.prev_end;
        self.prev_end = self.end.take().unwrap_or(lsn_start);
        self.rows = 0;
        self.spilled = false;
        Work::Commit { tables: self.pending.take(), lsn_start }
    }

    /// A transaction begins; one already staged before a restart is skipped.
    pub fn begin(&mut self, final_lsn: Lsn, xid: u32, commit_ts: Timestamp) -> Result<(), FrameError> {
        if self.txn.is_some() {
            return Err(FrameError::BeginInsideTransaction { lsn: final_lsn });
        }
        self.skipping = final_lsn <= self.resume;
        if !self.skipping {
            self.txn = Some(Txn { final_lsn, xid, commit_ts, ord: 0, staged: 0 });
        }
        Ok(())
    }

    /// The transaction commits at `commit_lsn`; returns its commit time when
    /// it staged anything (it then joins the batch in progress).
    pub fn commit(&mut self, commit_lsn: Lsn) -> Result<Option<Timestamp>, FrameError> {
        if self.skipping {
            self.skipping = false;
            return Ok(None);
        }
        let t = self.txn.take().ok_or(FrameError::CommitOutsideTransaction { lsn: commit_lsn })?;
        if t.final_lsn != commit_lsn {
            return Err(FrameError::CommitMismatch { commit: commit_lsn, announced: t.final_lsn });
        }
        if t.staged == 0 {
            return Ok(None);
        }
        self.end = Some(commit_lsn);
        Ok(Some(t.commit_ts))
    }

    /// Whether the current transaction is being skipped.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// The open transaction's commit LSN, if one is open.
    pub fn final_lsn(&self) -> Option<Lsn> {
        self.txn.as_ref().map(|t| t.final_lsn)
    }

    /// The LSN catalog facts are read at: the open transaction's, else the
    /// resume point.
    pub fn catalog_lsn(&self) -> Lsn {
        self.final_lsn().unwrap_or(self.resume)
    }

    /// The position of the open transaction's next change; `what` names
    /// the change in the error when no transaction is open.
    pub fn next_position(&mut self, what: &'static str) -> Result<Position, FrameError> {
        let t = self.txn.as_mut().ok_or(FrameError::ChangeOutsideTransaction { what })?;
        let at = Position { lsn: t.final_lsn, ord: t.ord, xid: t.xid, commit_ts: t.commit_ts };
        t.ord = t.ord.checked_add(1).ok_or(FrameError::TooManyChanges { lsn: t.final_lsn })?;
        Ok(at)
    }

    /// Buffers a change of the open transaction.
    pub fn stage(&mut self, schema: &Arc<TableSchema>, change: Change) {
        self.pending.push(schema, change);
        self.rows += 1;
        if let Some(t) = self.txn.as_mut() {
            t.staged += 1;
        }
    }

    /// The buffered changes as part files, once they reach `max_bytes`.
    pub fn spill(&mut self) -> Option<Work> {
        if self.pending.bytes < self.limits.max_bytes {
            return None;
        }
        self.spilled = true;
        Some(Work::Parts(self.pending.take()))
    }

    /// Nothing open, buffered or waiting to be cut: every change seen is
    /// handed over.
    pub fn is_idle(&self) -> bool {
        self.txn.is_none() && !self.skipping && self.end.is_none() && self.pending.is_empty() && !self.spilled
    }

    /// The end of the last batch handed over.
    pub fn handed_over(&self) -> Lsn {
        self.prev_end
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_common::{ColumnType, Op};
    use strata_stager::schema::{ColumnSchema, ReplicaIdentity};

    use super::*;

    fn schema() -> Arc<TableSchema> {
        let column = ColumnSchema {
            name: "id".to_owned(),
            pg_type: "bigint".to_owned(),
            type_oid: 20,
            type_modifier: -1,
            column_type: ColumnType::Int64,
            key: true,
            attnum: None,
            former_names: Vec::new(),
            missing_value: None,
        };
        Arc::new(TableSchema {
            format: strata_stager::FORMAT_VERSION,
            stream: "main".to_owned(),
            table: TableName::new("public", "t").unwrap(),
            version: 1,
            relation_oid: None,
            replica_identity: ReplicaIdentity::Default,
            columns: vec![column],
            since_lsn: None,
            database: None,
            relfilenode: None,
            generated: Vec::new(),
        })
    }

    fn limits(max_rows: u64, max_bytes: u64, max_age: Duration) -> BatchConfig {
        BatchConfig { max_rows, max_bytes, max_age }
    }

    /// One transaction committing at `lsn` with `rows` inserts.
    fn transaction(b: &mut Batcher, lsn: u64, rows: i64) -> (Option<Timestamp>, Vec<Work>) {
        let s = schema();
        b.begin(Lsn(lsn), 7, Timestamp(lsn as i64)).unwrap();
        let mut spilled = Vec::new();
        for i in 0..rows {
            if b.skipping() {
                continue;
            }
            let at = b.next_position("insert").unwrap();
            let change = Change {
                op: Op::Insert,
                table: Arc::new(s.table.clone()),
                lsn: at.lsn,
                ord: at.ord,
                xid: Some(at.xid),
                commit_ts: at.commit_ts,
                after: Some(vec![Value::Int64(i)]),
                before: None,
            };
            b.stage(&s, change);
            spilled.extend(b.spill());
        }
        (b.commit(Lsn(lsn)).unwrap(), spilled)
    }

    fn commit_of(w: Option<Work>) -> (Vec<i64>, Lsn) {
        match w {
            Some(Work::Commit { tables, lsn_start }) => {
                let ids = tables.iter().flat_map(|t| &t.changes).map(|c| match c.after.as_deref() {
                    Some([Value::Int64(i)]) => *i,
                    other => panic!("unexpected row {other:?}"),
                });
                (ids.collect(), lsn_start)
            }
            Some(Work::Parts(_)) => panic!("expected a commit, got parts"),
            None => panic!("expected a commit, got nothing"),
        }
    }

    #[test]
    fn transactions_staged_before_a_restart_are_skipped_whole() {
        let mut b = Batcher::new(Lsn(100), limits(1000, 1 << 30, Duration::ZERO));
        assert_eq!(transaction(&mut b, 100, 3).0, None, "at the resume point: staged already");
        assert!(b.is_idle() && b.cut(Instant::now()).is_none());
        assert_eq!(transaction(&mut b, 101, 2).0, Some(Timestamp(101)));
        assert_eq!(commit_of(b.cut(Instant::now())), (vec![0, 1], Lsn(100)));
        assert_eq!(b.handed_over(), Lsn(101));
    }

    #[test]
    fn a_batch_is_cut_between_transactions_by_age_or_rows_and_chains_its_lsns() {
        let mut b = Batcher::new(Lsn(0), limits(5, 1 << 30, Duration::from_secs(3600)));
        transaction(&mut b, 10, 3);
        assert!(b.cut(Instant::now()).is_none(), "young and not full");
        assert!(b.cut(Instant::now() + Duration::from_secs(3601)).is_some(), "old enough");
        transaction(&mut b, 20, 3);
        transaction(&mut b, 30, 3);
        // Open transaction: never cut inside it, full or not.
        b.begin(Lsn(40), 7, Timestamp(40)).unwrap();
        assert!(b.cut(Instant::now()).is_none());
        assert!(b.finish().is_none(), "an open transaction is abandoned, not committed");
        b.commit(Lsn(40)).unwrap();
        assert_eq!(commit_of(b.cut(Instant::now())), (vec![0, 1, 2, 0, 1, 2], Lsn(10)));
        assert!(b.is_idle());
    }

    #[test]
    fn a_transaction_over_max_bytes_spills_parts_and_commits_once() {
        let one = change_size(&Change {
            op: Op::Insert,
            table: Arc::new(schema().table.clone()),
            lsn: Lsn(0),
            ord: 0,
            xid: Some(7),
            commit_ts: Timestamp(0),
            after: Some(vec![Value::Int64(0)]),
            before: None,
        });
        let mut b = Batcher::new(Lsn(0), limits(1_000_000, 4 * one, Duration::from_secs(3600)));
        let (_, spilled) = transaction(&mut b, 10, 10);
        assert_eq!(spilled.len(), 2, "two parts of four changes");
        assert!(spilled.iter().all(|w| matches!(w, Work::Parts(t) if t[0].changes.len() == 4)));
        // Spilled: cut at once, young as it is, with the rest.
        assert_eq!(commit_of(b.cut(Instant::now())), (vec![8, 9], Lsn(0)));
    }

    #[test]
    fn frames_out_of_order_are_errors_that_say_where() {
        let mut b = Batcher::new(Lsn(0), limits(10, 1 << 30, Duration::ZERO));
        assert_eq!(b.next_position("row change").unwrap_err(), FrameError::ChangeOutsideTransaction { what: "row change" });
        assert_eq!(b.commit(Lsn(5)).unwrap_err(), FrameError::CommitOutsideTransaction { lsn: Lsn(5) });
        b.begin(Lsn(5), 1, Timestamp(5)).unwrap();
        assert_eq!(b.begin(Lsn(6), 1, Timestamp(6)).unwrap_err(), FrameError::BeginInsideTransaction { lsn: Lsn(6) });
        let mismatch = b.commit(Lsn(6)).unwrap_err();
        assert_eq!(mismatch, FrameError::CommitMismatch { commit: Lsn(6), announced: Lsn(5) });
        assert_eq!(mismatch.to_string(), "Commit at 0/6 for a transaction that announced 0/5");
    }
}
