//! Reading committed batches: the counterpart of [`BatchWriter`](crate::log::BatchWriter).
//!
//! A [`BatchReader`] fetches a batch by seq (one GET of `log/{seq}.json`, no
//! listing), resolves its schemas through a cache, fetches and checks its
//! data files, decodes them on a blocking thread, and keeps the changes
//! inside a commit-time [`Window`]. After each whole batch it starts
//! fetching the next one in the background, so a caller that delivers a
//! batch while the next is fetched and decoded overlaps the two without
//! doing anything for it.
//!
//! On a remote stage, where each batch costs a manifest GET and a data-file
//! GET (some 30-80 ms on S3) one after the other, a reader that keeps
//! finding its batches already read ahead (it is behind: catching up, or
//! gathering batches into one delivery) reads up to
//! [`REMOTE_READ_AHEAD`] batches ahead at once, so a run of small batches
//! costs about one round trip rather than one per batch. The read-ahead
//! protocol:
//!
//! ```text
//!   fetch(seq)  ──  front read-ahead is seq, same window?
//!        │ yes, and it found the batch     │ no / found nothing / failed
//!        ▼                                 ▼
//!   served: keep seq+1..seq+depth       abort every read-ahead, read seq
//!   running (start the missing ones)    now; if found, start seq+1 only
//!        │                                 │
//!        └──── a Large batch: abort every read-ahead, start none ────┘
//! ```
//!
//! Invariants: read-aheads are always for the seqs right after the last
//! one returned, in order, for `Window { from: None, ..window }` (`from`
//! cuts only the first batch); a read-ahead that found nothing or failed
//! is never trusted, the batch is read again on demand (it may have been
//! committed since); nothing is read ahead past a [`LargeBatch`], whose data
//! is only ever read chunk by chunk. Memory: the read-ahead of the next
//! batch may hold a whole batch, as one always could; the ones beyond it
//! hold only batches of at most [`FAR_AHEAD_MAX_BYTES`] and
//! [`FAR_AHEAD_MAX_ROWS`] (a larger one keeps only its manifest and is
//! read when its turn comes), so all of them together hold at most about
//! two whole batches (see [`REMOTE_READ_AHEAD`]).
//!
//! A batch holding more rows (or staged bytes) than the reader decodes
//! whole is returned as a [`LargeBatch`]: its header and file list, to be read a chunk at a time
//! through [`BatchReader::chunks`], so a transaction of any size costs one
//! chunk of decoded memory.
//!
//! A reader made [`with_files`](BatchReader::with_files) (for a destination
//! that writes the stage's own Parquet files) returns a batch the window
//! keeps whole, and of at most [`STAGED_BATCH_MAX_BYTES`], undecoded: each
//! data file's checked bytes in [`StagedBatch::files`], no changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use strata_common::{Change, Lsn, TableName, Timestamp};
use tokio::task::JoinHandle;

use crate::codec::FileReader;
use crate::error::Result;
use crate::log::{StreamLog, TableBatch, blocking, first_at_or_after};
use crate::manifest::{FileEntry, Manifest};
use crate::schema::TableSchema;

/// Batches holding more rows than this are returned as a [`LargeBatch`]
/// instead of decoded whole: a decoded change of a narrow table takes some
/// 600 bytes, so a whole batch stays near 30 MiB.
pub const WHOLE_BATCH_MAX_ROWS: u64 = 50_000;

/// Batches whose data files take more than this are returned as a
/// [`LargeBatch`] too, however few their rows: wide rows (4 KiB each, say)
/// decode to several times 30 MiB long before [`WHOLE_BATCH_MAX_ROWS`].
pub const WHOLE_BATCH_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Batches of data files up to this size are returned undecoded to a
/// reader [`with_files`](BatchReader::with_files); larger ones are read as
/// any other, a chunk at a time.
pub const STAGED_BATCH_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// How many batches a reader on a remote stage reads ahead at most (on a
/// local stage, whose reads cost little, one). Eight hides the latency of
/// a run of small batches on S3 (eight round trips in flight while one
/// batch is delivered). Memory bound: the next batch's read-ahead holds at
/// most one whole batch (up to [`WHOLE_BATCH_MAX_BYTES`] staged, some
/// 30 MiB decoded; or [`STAGED_BATCH_MAX_BYTES`] undecoded for a reader
/// [`with_files`](BatchReader::with_files)), and the seven beyond it at
/// most [`FAR_AHEAD_MAX_BYTES`] staged and [`FAR_AHEAD_MAX_ROWS`] rows
/// each, an eighth of a whole batch: 7 MiB staged, some 26 MiB decoded, in
/// all. So a reader holds at most about two whole batches ahead, well
/// inside the writer's 256 MiB, rather than eight (8 x 32 MiB would not
/// be).
pub const REMOTE_READ_AHEAD: usize = 8;

/// The largest batch (in staged bytes) that a read-ahead beyond the next
/// batch fetches whole: an eighth of [`WHOLE_BATCH_MAX_BYTES`], see
/// [`REMOTE_READ_AHEAD`]. The batches that need reading ahead are the
/// small ones; a larger batch amortises its own round trips.
pub const FAR_AHEAD_MAX_BYTES: u64 = WHOLE_BATCH_MAX_BYTES / 8;

/// The most rows a read-ahead beyond the next batch decodes: an eighth of
/// [`WHOLE_BATCH_MAX_ROWS`], as for [`FAR_AHEAD_MAX_BYTES`].
pub const FAR_AHEAD_MAX_ROWS: u64 = WHOLE_BATCH_MAX_ROWS / 8;

/// The commit times to keep: changes committed at or after `from` and at or
/// before `until` (both inclusive; `None` is unbounded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Window {
    /// The changes of one file (in commit order) inside the window.
    pub fn apply(self, mut changes: Vec<Change>) -> Vec<Change> {
        if let Some(t) = self.from {
            changes.drain(..first_at_or_after(&changes, t));
        }
        if let Some(t) = self.until {
            changes.retain(|c| c.commit_ts <= t);
        }
        changes
    }

    /// Whether every change committed from `min` to `max` is inside.
    pub fn keeps_all(self, min: Timestamp, max: Timestamp) -> bool {
        self.from.is_none_or(|t| t <= min) && self.until.is_none_or(|t| max <= t)
    }
}

/// A data file as staged: its Parquet bytes, checked against the manifest.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub rows: u64,
    pub bytes: bytes::Bytes,
}

/// A committed batch, decoded: the manifest's facts and each data file's
/// changes, in the manifest's file order (a table's files stay in commit
/// order).
#[derive(Debug, Clone)]
pub struct StagedBatch {
    pub seq: u64,
    pub stream: String,
    pub lsn_end: Lsn,
    pub commit_ts_min: Timestamp,
    pub commit_ts_max: Timestamp,
    /// When the reader committed the batch to the stage.
    pub staged_at: Timestamp,
    /// The size of its data files as staged.
    pub staged_bytes: u64,
    pub tables: Vec<TableBatch>,
    /// For a batch read undecoded: each data file, in `tables`' order
    /// (whose changes are then empty). Empty for a decoded batch.
    pub files: Vec<StagedFile>,
    /// For a batch of the initial snapshot (or of a newer snapshot of some
    /// tables): its consistent point, which all its rows carry as their LSN.
    pub snapshot_point: Option<Lsn>,
}

/// A batch too large to decode whole: `header.tables` has one entry per
/// data file (its schema, no changes), in the manifest's order, and `files`
/// the matching manifest entries.
#[derive(Debug, Clone)]
pub struct LargeBatch {
    pub header: StagedBatch,
    pub files: Vec<FileEntry>,
}

/// What [`BatchReader::fetch`] returns for a committed batch.
#[derive(Debug)]
pub enum Fetched {
    /// Decoded whole, inside the window.
    Whole(StagedBatch),
    /// To be read a chunk at a time.
    Large(LargeBatch),
}

impl Fetched {
    /// The batch's facts (for a large batch, with no changes).
    pub fn header(&self) -> &StagedBatch {
        match self {
            Fetched::Whole(b) => b,
            Fetched::Large(l) => &l.header,
        }
    }
}

type SchemaCache = Arc<Mutex<HashMap<(TableName, u32), Arc<TableSchema>>>>;

/// What a read-ahead found in a committed batch.
#[derive(Debug)]
enum Read {
    /// The batch, as [`BatchReader::fetch`] returns it.
    Fetched(Fetched),
    /// Only the manifest of a batch too large to read this far ahead (see
    /// [`FAR_AHEAD_MAX_BYTES`]): the rest is read when its turn comes.
    Deferred(Manifest),
}

/// The fetch of a batch after the last one returned, running.
#[derive(Debug)]
struct Ahead {
    seq: u64,
    window: Window,
    task: JoinHandle<Result<Option<Read>>>,
}

/// What every fetch of one reader shares.
#[derive(Debug, Clone)]
struct Source {
    log: StreamLog,
    schemas: SchemaCache,
    files: bool,
}

/// Reads one stream's committed batches; see the module docs.
#[derive(Debug)]
pub struct BatchReader {
    src: Source,
    /// Read-aheads of the seqs right after the last one returned, in order.
    ahead: VecDeque<Ahead>,
    /// How many batches to keep reading ahead while they are found.
    depth: usize,
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        self.abort_ahead();
    }
}

impl BatchReader {
    /// A reader reading one batch ahead on a local stage and up to
    /// [`REMOTE_READ_AHEAD`] on a remote one.
    pub fn new(log: &StreamLog) -> BatchReader {
        let depth = if log.stage().is_local() { 1 } else { REMOTE_READ_AHEAD };
        BatchReader { src: Source { log: log.clone(), schemas: SchemaCache::default(), files: false }, ahead: VecDeque::new(), depth }
    }

    /// Returns batches undecoded where it can (see the module docs).
    pub fn with_files(mut self, files: bool) -> BatchReader {
        self.src.files = files;
        self
    }

    /// Reads up to `depth` batches ahead (0: none) instead of the stage's
    /// default; see [`REMOTE_READ_AHEAD`] for what each one may hold.
    pub fn with_read_ahead(mut self, depth: usize) -> BatchReader {
        self.depth = depth;
        self
    }

    pub fn log(&self) -> &StreamLog {
        &self.src.log
    }

    /// Batch `seq` with its changes inside `window`, or `None` while it is
    /// not committed. A whole batch starts the fetch of `seq + 1` (window
    /// `until` kept, `from` dropped: it cuts only the first batch), and of
    /// the batches after it while read-aheads keep finding them (see the
    /// module docs).
    pub async fn fetch(&mut self, seq: u64, window: Window) -> Result<Option<Fetched>> {
        let (fetched, served) = match self.take_ahead(seq, window).await {
            Some(Read::Fetched(f)) => (f, true),
            Some(Read::Deferred(m)) => (complete(&self.src, seq, window, m).await?, true),
            None => match self.src.log.read_opt(seq).await? {
                Some(m) => (complete(&self.src, seq, window, m).await?, false),
                None => return Ok(None),
            },
        };
        match fetched {
            Fetched::Whole(_) => self.read_ahead(seq, Window { from: None, ..window }, served),
            Fetched::Large(_) => self.abort_ahead(),
        }
        Ok(Some(fetched))
    }

    /// What the read-ahead of `seq` found, if there is one for `window` and
    /// it found the batch. Otherwise every read-ahead is dropped: they are
    /// for other seqs, or the ones after a batch not found yet found
    /// nothing either. A read-ahead that failed is done again by the caller,
    /// whose errors are retried as any other.
    async fn take_ahead(&mut self, seq: u64, window: Window) -> Option<Read> {
        let read = match self.ahead.pop_front() {
            Some(a) if a.seq == seq && a.window == window => a.task.await.ok().and_then(|r| r.ok()).flatten(),
            Some(a) => {
                a.task.abort();
                None
            }
            None => None,
        };
        if read.is_none() {
            self.abort_ahead();
        }
        read
    }

    /// Starts the read-aheads after `seq`, up to the reader's depth if the
    /// fetch of `seq` was `served` by one (the stream is ahead of the
    /// reader), else only `seq + 1`. Only the read-ahead of `seq + 1` may
    /// hold a whole batch of any size.
    fn read_ahead(&mut self, seq: u64, window: Window, served: bool) {
        let want = if served { self.depth } else { self.depth.min(1) };
        while self.ahead.len() < want {
            let next = seq + 1 + self.ahead.len() as u64;
            let far = next > seq + 1;
            let task = tokio::spawn(read(self.src.clone(), next, window, far));
            self.ahead.push_back(Ahead { seq: next, window, task });
        }
    }

    fn abort_ahead(&mut self) {
        for a in self.ahead.drain(..) {
            a.task.abort();
        }
    }

    /// Reads a large batch's data file `entry` a chunk of `chunk_rows`
    /// changes at a time, each decoded on a blocking thread.
    pub async fn chunks(&self, entry: &FileEntry, chunk_rows: usize) -> Result<Chunks> {
        let reader = self.src.log.open_file(entry, chunk_rows).await?;
        Ok(Chunks { reader: Some(reader) })
    }
}

/// The chunks of one data file; see [`BatchReader::chunks`].
pub struct Chunks {
    reader: Option<FileReader>,
}

impl Chunks {
    /// The next chunk of changes in commit order, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<Change>>> {
        let Some(mut reader) = self.reader.take() else {
            return Ok(None);
        };
        let (reader, chunk) = blocking(move || {
            let chunk = reader.next_chunk()?;
            Ok((reader, chunk))
        })
        .await?;
        if chunk.is_some() {
            self.reader = Some(reader);
        }
        Ok(chunk)
    }
}

/// Reads batch `seq` ahead of its fetch; only its manifest if it is `far`
/// ahead and larger than such a read-ahead may hold.
async fn read(src: Source, seq: u64, window: Window, far: bool) -> Result<Option<Read>> {
    let Some(m) = src.log.read_opt(seq).await? else {
        return Ok(None);
    };
    let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
    if far && (bytes > FAR_AHEAD_MAX_BYTES || m.counts.rows > FAR_AHEAD_MAX_ROWS) {
        return Ok(Some(Read::Deferred(m)));
    }
    Ok(Some(Read::Fetched(complete(&src, seq, window, m).await?)))
}

/// Batch `seq`, whose manifest is `m`: see [`BatchReader::fetch`].
async fn complete(src: &Source, seq: u64, window: Window, m: Manifest) -> Result<Fetched> {
    let (log, files) = (&src.log, src.files);
    let mut tables = Vec::with_capacity(m.files.len());
    for f in &m.files {
        tables.push(TableBatch { schema: schema(log, &src.schemas, &f.table, f.schema_version).await?, changes: Vec::new() });
    }
    let mut batch = StagedBatch {
        seq,
        stream: m.stream,
        lsn_end: m.lsn.end,
        commit_ts_min: m.commit_ts.min,
        commit_ts_max: m.commit_ts.max,
        staged_at: m.created_at,
        staged_bytes: m.files.iter().map(|f| f.bytes).sum(),
        tables,
        files: Vec::new(),
        snapshot_point: m.snapshot.as_ref().map(|s| s.point),
    };
    if files && window.keeps_all(m.commit_ts.min, m.commit_ts.max) && batch.staged_bytes <= STAGED_BATCH_MAX_BYTES {
        for f in &m.files {
            let bytes = log.fetch_checked_file(f).await?;
            batch.files.push(StagedFile { rows: f.rows, bytes });
        }
        return Ok(Fetched::Whole(batch));
    }
    if m.counts.rows > WHOLE_BATCH_MAX_ROWS || batch.staged_bytes > WHOLE_BATCH_MAX_BYTES {
        return Ok(Fetched::Large(LargeBatch { header: batch, files: m.files }));
    }
    for (t, f) in batch.tables.iter_mut().zip(&m.files) {
        t.changes = window.apply(log.read_file(f).await?.changes);
    }
    Ok(Fetched::Whole(batch))
}

/// A schema version, from the cache or the stage.
async fn schema(log: &StreamLog, schemas: &SchemaCache, table: &TableName, version: u32) -> Result<Arc<TableSchema>> {
    let key = (table.clone(), version);
    if let Some(s) = schemas.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(s);
    }
    let s = Arc::new(log.read_schema(table, version).await?);
    if let Ok(mut c) = schemas.lock() {
        c.insert(key, s.clone());
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
