//! The destination boundary.
//!
//! A [`Destination`] receives staged batches in commit order and returns from
//! [`Destination::apply`] only once the batch is *durable* there: only then
//! may the worker move the cursor. A destination that can store its position
//! atomically with the data (Postgres) reports it through
//! [`Destination::durable_seq`], which is then authoritative, and applying a
//! batch at or below it is a no-op — so redelivery after a crash is harmless.
//!
//! One folder per destination, the same files in each: `config` (its spec:
//! settings, validation, description), `sink` (the [`Destination`]
//! implementation and its constructor), `retry` (which errors are
//! transient). [`registry`] is the one list of them all: spec → validate →
//! connect. The worker holds any destination as an [`AnyDestination`].

pub mod files;
pub mod postgres;
pub mod registry;
pub mod sqs;
pub mod stdout;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;

pub use registry::DestinationKind;
use strata_common::{Lsn, Timestamp};
use strata_stager::read::{StagedBatch, StagedFile};

/// One table's changes of a batch, in commit order: the stage's own type.
pub use strata_stager::log::TableBatch;

/// A staged batch, decoded, ready to deliver — or, for a batch delivered
/// part by part, one of its parts (`part` set, `tables` that part's).
#[derive(Debug, Clone)]
pub struct Batch {
    /// The last staged batch this holds (the cursor moves to it).
    pub seq: u64,
    /// The first staged batch this holds: `seq` unless batches were rolled
    /// up into one delivery.
    pub first_seq: u64,
    pub stream: String,
    pub lsn_end: Lsn,
    pub commit_ts_min: Timestamp,
    pub commit_ts_max: Timestamp,
    /// When the reader committed the batch to the stage.
    pub staged_at: Timestamp,
    /// The size of the batch's data files as staged (of all it holds).
    pub staged_bytes: u64,
    /// In the manifest's file order: a table's parts stay in commit order.
    pub tables: Vec<TableBatch>,
    /// Empty, or one entry per `tables` entry: a data file delivered as
    /// staged, undecoded (its `changes` are then empty). Only a destination
    /// that [reads staged files](DestinationKind::reads_staged_files) is
    /// given these.
    pub files: Vec<Option<StagedFile>>,
    /// Which part of a batch delivered part by part this is; `None` for a
    /// whole batch.
    pub part: Option<PartId>,
    /// The consistent points of the snapshot batches this holds: a read
    /// ([`Op::Read`](strata_common::Op::Read)) at one of them is a
    /// snapshot row, any other a backfill's.
    pub snapshot_points: Vec<Lsn>,
}

/// A part of a batch delivered part by part: a chunk of rows of one of its
/// data files. Both numbers depend on the staged batch alone, so a
/// redelivery cuts the same parts (the files destination names files by them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartId {
    /// The data file's index in the manifest.
    pub file: u32,
    /// The chunk's index in the file.
    pub chunk: u32,
}

/// A change a destination refuses: `batch.tables[table].changes[change]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub table: usize,
    pub change: usize,
    pub error: String,
}

/// How a destination wants consecutive batches gathered into one delivery.
#[derive(Debug, Clone, Copy)]
pub struct RollUp {
    pub rows: u64,
    pub max_wait: std::time::Duration,
}

impl From<StagedBatch> for Batch {
    fn from(b: StagedBatch) -> Batch {
        Batch {
            seq: b.seq,
            first_seq: b.seq,
            stream: b.stream,
            lsn_end: b.lsn_end,
            commit_ts_min: b.commit_ts_min,
            commit_ts_max: b.commit_ts_max,
            staged_at: b.staged_at,
            staged_bytes: b.staged_bytes,
            tables: b.tables,
            files: b.files.into_iter().map(Some).collect(),
            part: None,
            snapshot_points: b.snapshot_point.into_iter().collect(),
        }
    }
}

impl Batch {
    /// What the message bodies of this batch's changes share, in `format`.
    pub fn batched(&self, format: crate::envelope::EnvelopeFormat) -> crate::envelope::Batched<'_> {
        crate::envelope::Batched { format, stream: &self.stream, staged_at: self.staged_at, snapshot_points: &self.snapshot_points }
    }

    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.changes.len() as u64).sum::<u64>() + self.files.iter().flatten().map(|f| f.rows).sum::<u64>()
    }

    /// The staged file given for `tables[i]`, if it was not decoded.
    pub fn file(&self, i: usize) -> Option<&StagedFile> {
        self.files.get(i).and_then(Option::as_ref)
    }

    /// Consecutive batches as one delivery; `parts` is not empty and in seq order.
    pub fn merge(parts: Vec<Batch>) -> Batch {
        let mut it = parts.into_iter();
        let mut out = it.next().unwrap_or_else(|| unreachable!("merge of no batches"));
        for b in it {
            out.seq = b.seq;
            out.lsn_end = b.lsn_end;
            out.commit_ts_min = out.commit_ts_min.min(b.commit_ts_min);
            out.commit_ts_max = out.commit_ts_max.max(b.commit_ts_max);
            out.staged_bytes += b.staged_bytes;
            // Keep `files` aligned with `tables` when only some parts have them.
            if !b.files.is_empty() || !out.files.is_empty() {
                out.files.resize(out.tables.len(), None);
                let mut files = b.files;
                files.resize(b.tables.len(), None);
                out.files.extend(files);
            }
            out.tables.extend(b.tables);
            for p in b.snapshot_points {
                if !out.snapshot_points.contains(&p) {
                    out.snapshot_points.push(p);
                }
            }
        }
        out
    }

    /// This batch without the rejected changes.
    pub fn without(&self, rejects: &[Reject]) -> Batch {
        let mut out = self.clone();
        for (ti, t) in out.tables.iter_mut().enumerate() {
            let mut i = 0;
            t.changes.retain(|_| {
                let keep = !rejects.iter().any(|r| r.table == ti && r.change == i);
                i += 1;
                keep
            });
        }
        let kept: Vec<bool> = (0..out.tables.len()).map(|i| !out.tables[i].changes.is_empty() || out.file(i).is_some()).collect();
        let mut keep = kept.iter();
        out.tables.retain(|_| keep.next().copied().unwrap_or(false));
        if !out.files.is_empty() {
            let mut keep = kept.iter();
            out.files.retain(|_| keep.next().copied().unwrap_or(false));
        }
        out
    }
}

/// A delivery failure, split by what the worker should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestError {
    /// Worth retrying: the destination is down, overloaded, or the
    /// transaction lost a race. Retried with backoff, forever.
    #[error("{0}")]
    Transient(String),
    /// Retrying the same batch will fail the same way (rejected data,
    /// permissions, a schema the destination cannot take): the destination
    /// is paused with this error shown in `status`.
    #[error("{0}")]
    Permanent(String),
    /// The destination asked to be left alone for a while (HTTP 429 or 503
    /// with Retry-After): retried no sooner than `after`.
    #[error("{message} (retry after {after:?})")]
    Throttled { after: std::time::Duration, message: String },
}

impl DestError {
    pub fn is_retriable(&self) -> bool {
        !matches!(self, DestError::Permanent(_))
    }

    /// The least time to wait before retrying, when the destination said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            DestError::Throttled { after, .. } => Some(*after),
            _ => None,
        }
    }
}

/// Expands a spec's secret references from the writer's environment and
/// files (`${VAR}`, `${file:PATH}`: the rule of `strata.toml`).
pub fn expand_env(s: &str) -> Result<String, String> {
    strata_common::config::expand_references(s, &|var| std::env::var(var).ok()).map_err(|e| format!("{e} (referenced by the destination spec)"))
}

pub trait Destination: Send {
    /// The last batch this destination holds durably, if it records that
    /// itself (atomically with the data); `None` if it does not (the
    /// default: the worker's cursor is then the position).
    fn durable_seq(&mut self) -> impl Future<Output = Result<Option<u64>, DestError>> + Send {
        async { Ok(None) }
    }

    /// Delivers `batch`; returns once it is durable. Delivering a batch that
    /// is already durable must not apply it twice where the destination
    /// promises exactly-once.
    fn apply(&mut self, batch: &Batch) -> impl Future<Output = Result<(), DestError>> + Send;

    /// The changes of `batch` this destination refuses permanently, each with
    /// its reason, found by trying them one by one in a transaction that is
    /// then rolled back: nothing is applied. Used by the `skip` policy, which
    /// dead-letters these and applies the rest.
    ///
    /// The default suits destinations that accept any change.
    fn rejects(&mut self, batch: &Batch) -> impl Future<Output = Result<Vec<Reject>, DestError>> + Send {
        let _ = batch;
        async { Ok(Vec::new()) }
    }

    /// Sets the destination's own position back to `seq` for a replay,
    /// first emptying `truncate` (the tables of a rebuild), atomically.
    ///
    /// The default suits destinations that keep no position and no tables:
    /// what they delivered stays, and a replay delivers the changes again.
    fn reset(&mut self, seq: u64, truncate: &[strata_common::TableName]) -> impl Future<Output = Result<(), DestError>> + Send {
        let _ = (seq, truncate);
        async { Ok(()) }
    }

    /// Starts delivering a batch too large to hold at once (`header` has no
    /// tables): its parts follow through [`Destination::apply_part`], in
    /// order, then [`Destination::finish_parts`]. Returns false when the
    /// batch is durable here already, and no part should be sent.
    ///
    /// The default suits destinations without transactions: nothing to
    /// open, and each part is delivered as it comes (at least once: after a
    /// failure the whole batch is delivered again).
    fn begin_parts(&mut self, header: &Batch) -> impl Future<Output = Result<bool, DestError>> + Send {
        let _ = header;
        async { Ok(true) }
    }

    /// Delivers one part (`part.part` is set); a transactional destination
    /// applies it inside the transaction [`Destination::begin_parts`] opened.
    fn apply_part(&mut self, part: &Batch) -> impl Future<Output = Result<(), DestError>> + Send {
        self.apply(part)
    }

    /// Returns once every part of `header`'s batch is durable (a
    /// transactional destination commits them, with its position, here).
    fn finish_parts(&mut self, header: &Batch) -> impl Future<Output = Result<(), DestError>> + Send {
        let _ = header;
        async { Ok(()) }
    }
}

/// A boxed destination future.
pub type DestFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DestError>> + Send + 'a>>;

/// [`Destination`] as a trait object: the same methods, their futures boxed
/// (one allocation per call, per batch or part). Every [`Destination`] is one.
pub trait DynDestination: Send {
    fn durable_seq(&mut self) -> DestFuture<'_, Option<u64>>;
    fn apply<'a>(&'a mut self, batch: &'a Batch) -> DestFuture<'a, ()>;
    fn rejects<'a>(&'a mut self, batch: &'a Batch) -> DestFuture<'a, Vec<Reject>>;
    fn reset<'a>(&'a mut self, seq: u64, truncate: &'a [strata_common::TableName]) -> DestFuture<'a, ()>;
    fn begin_parts<'a>(&'a mut self, header: &'a Batch) -> DestFuture<'a, bool>;
    fn apply_part<'a>(&'a mut self, part: &'a Batch) -> DestFuture<'a, ()>;
    fn finish_parts<'a>(&'a mut self, header: &'a Batch) -> DestFuture<'a, ()>;
}

impl<D: Destination> DynDestination for D {
    fn durable_seq(&mut self) -> DestFuture<'_, Option<u64>> {
        Box::pin(Destination::durable_seq(self))
    }
    fn apply<'a>(&'a mut self, batch: &'a Batch) -> DestFuture<'a, ()> {
        Box::pin(Destination::apply(self, batch))
    }
    fn rejects<'a>(&'a mut self, batch: &'a Batch) -> DestFuture<'a, Vec<Reject>> {
        Box::pin(Destination::rejects(self, batch))
    }
    fn reset<'a>(&'a mut self, seq: u64, truncate: &'a [strata_common::TableName]) -> DestFuture<'a, ()> {
        Box::pin(Destination::reset(self, seq, truncate))
    }
    fn begin_parts<'a>(&'a mut self, header: &'a Batch) -> DestFuture<'a, bool> {
        Box::pin(Destination::begin_parts(self, header))
    }
    fn apply_part<'a>(&'a mut self, part: &'a Batch) -> DestFuture<'a, ()> {
        Box::pin(Destination::apply_part(self, part))
    }
    fn finish_parts<'a>(&'a mut self, header: &'a Batch) -> DestFuture<'a, ()> {
        Box::pin(Destination::finish_parts(self, header))
    }
}

/// A connected destination of any kind (see [`registry`]).
pub type AnyDestination = Box<dyn DynDestination>;
