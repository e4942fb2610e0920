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
//! A batch holding more rows (or staged bytes) than the reader decodes
//! whole is returned as a [`LargeBatch`]: its header and file list, to be read a chunk at a time
//! through [`BatchReader::chunks`], so a transaction of any size costs one
//! chunk of decoded memory.
//!
//! A reader made [`with_files`](BatchReader::with_files) (for a destination
//! that writes the stage's own Parquet files) returns a batch the window
//! keeps whole, and of at most [`STAGED_BATCH_MAX_BYTES`], undecoded: each
//! data file's checked bytes in [`StagedBatch::files`], no changes.
//!
//! On a remote stage such a reader reads further ahead while it is behind:
//! each fetch costs two round trips or more, and a destination rolling
//! small batches up into files of its own size would otherwise fetch them
//! one after another. While the batches read ahead were all there, the
//! depth doubles up to [`FILES_AHEAD_MAX`] batches (and
//! [`FILES_AHEAD_BYTES`] of them, judged by the last one's size); the first
//! batch that was not there yet brings it back to one, so near the head of
//! the stream no more than one look is spent on a batch not yet committed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::future::try_join_all;
use strata_common::{Change, Lsn, TableName, Timestamp};
use tokio::task::JoinHandle;

use crate::codec::FileReader;
use crate::error::Result;
use crate::log::{StreamLog, TableBatch, blocking, first_at_or_after};
use crate::manifest::FileEntry;
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

/// The most batches a reader [`with_files`](BatchReader::with_files) reads
/// ahead on a remote stage.
pub const FILES_AHEAD_MAX: usize = 8;

/// About the most staged bytes such a reader holds read ahead.
pub const FILES_AHEAD_BYTES: u64 = 8 * 1024 * 1024;

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

/// The fetch of a batch after the last one returned, running.
#[derive(Debug)]
struct Ahead {
    seq: u64,
    window: Window,
    task: JoinHandle<Result<Option<Fetched>>>,
}

/// Reads one stream's committed batches; see the module docs.
#[derive(Debug)]
pub struct BatchReader {
    log: StreamLog,
    schemas: SchemaCache,
    /// Fetches of the batches after the last one returned, in seq order.
    ahead: VecDeque<Ahead>,
    /// How many batches to keep read ahead.
    depth: usize,
    files: bool,
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        self.drop_ahead();
    }
}

impl BatchReader {
    pub fn new(log: &StreamLog) -> BatchReader {
        BatchReader { log: log.clone(), schemas: SchemaCache::default(), ahead: VecDeque::new(), depth: 1, files: false }
    }

    /// Returns batches undecoded where it can (see the module docs).
    pub fn with_files(mut self, files: bool) -> BatchReader {
        self.files = files;
        self
    }

    pub fn log(&self) -> &StreamLog {
        &self.log
    }

    /// Batch `seq` with its changes inside `window`, or `None` while it is
    /// not committed. A whole batch starts the fetch of `seq + 1`, and of
    /// more batches after it when reading staged files behind the head of a
    /// remote stream (see the module docs); their window keeps `until` and
    /// drops `from`, which cuts only the first batch.
    pub async fn fetch(&mut self, seq: u64, window: Window) -> Result<Option<Fetched>> {
        let ahead = match self.ahead.pop_front() {
            Some(a) if a.seq == seq && a.window == window => a.task.await.ok(),
            Some(a) => {
                a.task.abort();
                self.drop_ahead();
                None
            }
            None => None,
        };
        // A read-ahead that found nothing yet, or failed, is done again now:
        // the batch may have been committed since, and an error is retried
        // by the caller as any other.
        let (fetched, was_ahead) = match ahead {
            Some(Ok(Some(f))) => (f, true),
            _ => match fetch(self.log.clone(), self.schemas.clone(), seq, window, self.files).await? {
                Some(f) => (f, false),
                None => return Ok(None),
            },
        };
        if let Fetched::Whole(b) = &fetched {
            let depth = self.depth_after(was_ahead, b.staged_bytes);
            let next = Window { from: None, ..window };
            let mut at = self.ahead.back().map_or(seq + 1, |a| a.seq + 1);
            while self.ahead.len() < depth {
                let task = tokio::spawn(fetch(self.log.clone(), self.schemas.clone(), at, next, self.files));
                self.ahead.push_back(Ahead { seq: at, window: next, task });
                at += 1;
            }
        }
        Ok(Some(fetched))
    }

    /// How many batches to keep read ahead after one of `staged_bytes` was
    /// returned, `was_ahead` if a read-ahead had found it (see the module
    /// docs). One, but for a reader of staged files on a remote stage.
    fn depth_after(&mut self, was_ahead: bool, staged_bytes: u64) -> usize {
        if !self.files || self.log.stage().is_local() {
            return 1;
        }
        self.depth = if was_ahead { (self.depth * 2).min(FILES_AHEAD_MAX) } else { 1 };
        let fit = usize::try_from(FILES_AHEAD_BYTES / staged_bytes.max(1)).unwrap_or(usize::MAX).max(1);
        self.depth.min(fit)
    }

    fn drop_ahead(&mut self) {
        for a in self.ahead.drain(..) {
            a.task.abort();
        }
    }

    /// Reads a large batch's data file `entry` a chunk of `chunk_rows`
    /// changes at a time, each decoded on a blocking thread.
    pub async fn chunks(&self, entry: &FileEntry, chunk_rows: usize) -> Result<Chunks> {
        let reader = self.log.open_file(entry, chunk_rows).await?;
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

/// Fetches batch `seq`: see [`BatchReader::fetch`].
async fn fetch(log: StreamLog, schemas: SchemaCache, seq: u64, window: Window, files: bool) -> Result<Option<Fetched>> {
    let Some(m) = log.read_opt(seq).await? else {
        return Ok(None);
    };
    // What the manifest names (schema versions, data files) is read side by
    // side: on a remote stage a batch costs two round trips, the manifest's
    // and one more, not one per schema and file.
    let schemas = try_join_all(m.files.iter().map(|f| schema(&log, &schemas, &f.table, f.schema_version)));
    let staged_bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
    let header = |schemas: Vec<Arc<TableSchema>>| StagedBatch {
        seq,
        stream: m.stream.clone(),
        lsn_end: m.lsn.end,
        commit_ts_min: m.commit_ts.min,
        commit_ts_max: m.commit_ts.max,
        staged_at: m.created_at,
        staged_bytes,
        tables: schemas.into_iter().map(|schema| TableBatch { schema, changes: Vec::new() }).collect(),
        files: Vec::new(),
        snapshot_point: m.snapshot.as_ref().map(|s| s.point),
    };
    if files && window.keeps_all(m.commit_ts.min, m.commit_ts.max) && staged_bytes <= STAGED_BATCH_MAX_BYTES {
        let (schemas, bytes) = tokio::try_join!(schemas, try_join_all(m.files.iter().map(|f| log.fetch_checked_file(f))))?;
        let mut batch = header(schemas);
        batch.files = m.files.iter().zip(bytes).map(|(f, bytes)| StagedFile { rows: f.rows, bytes }).collect();
        return Ok(Some(Fetched::Whole(batch)));
    }
    if m.counts.rows > WHOLE_BATCH_MAX_ROWS || staged_bytes > WHOLE_BATCH_MAX_BYTES {
        let header = header(schemas.await?);
        return Ok(Some(Fetched::Large(LargeBatch { header, files: m.files })));
    }
    let (schemas, decoded) = tokio::try_join!(schemas, try_join_all(m.files.iter().map(|f| log.read_file(f))))?;
    let mut batch = header(schemas);
    for (t, d) in batch.tables.iter_mut().zip(decoded) {
        t.changes = window.apply(d.changes);
    }
    Ok(Some(Fetched::Whole(batch)))
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
