//! A stream's log: the commit protocol and lookups over it.
//!
//! ```text
//!   reader                                   stage
//!   ──────                                   ─────
//!   put tables/…/{seq}-0000.parquet  ──▶  (invisible: no manifest names it)
//!   put tables/…/{seq}-0001.parquet  ──▶
//!   create log/{seq}.json            ──▶  If-None-Match: * / hard link
//!        ok             → batch committed, ack its `lsn.end` to PostgreSQL
//!        AlreadyExists  → read the winner: ours (a retried request)? done.
//!                         someone else's? → SeqTaken: another reader owns the stream
//! ```
//!
//! Seqs are dense from the low-water mark (1, or what retention left) to the
//! head, so the head is found with O(log n) HEAD requests by galloping from a
//! hint, and the first batch at or after a commit time with O(log n) GETs by
//! binary search — no listing on any hot path.

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use strata_common::{Change, TableName, Timestamp};

use crate::codec::{DecodedFile, FileReader, decode_file};
use crate::error::{Result, StageError};
use crate::keys::StreamKeys;
use crate::manifest::{FileEntry, Manifest, checksum};
use crate::schema::TableSchema;
use crate::store::Stage;

/// `streams/{stream}/retention.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retention {
    pub format: u32,
    /// First seq that retention keeps; every seq below is deleted or being deleted.
    pub low: u64,
    pub updated_at: Timestamp,
}

/// One stream's log in a stage.
#[derive(Debug, Clone)]
pub struct StreamLog {
    stage: Stage,
    keys: StreamKeys,
    /// Told the seq of every batch this log (or a clone of it) commits.
    commits: Option<std::sync::Arc<tokio::sync::watch::Sender<u64>>>,
}

impl StreamLog {
    pub fn new(stage: &Stage, stream: &str) -> Result<Self> {
        Ok(StreamLog { stage: stage.clone(), keys: StreamKeys::new(stream)?, commits: None })
    }

    /// This log, telling `commits` the seq of each batch it commits, once
    /// the manifest is durable (the reader's wake-up publisher listens).
    pub fn with_commit_notices(mut self, commits: std::sync::Arc<tokio::sync::watch::Sender<u64>>) -> Self {
        self.commits = Some(commits);
        self
    }

    fn committed(&self, seq: u64) {
        if let Some(tx) = &self.commits {
            tx.send_replace(seq);
        }
    }

    pub fn keys(&self) -> &StreamKeys {
        &self.keys
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// Commits `m`: creates `log/{seq}.json` if absent. The data files must
    /// already be in the stage. A retried commit whose first attempt did land
    /// succeeds; a different manifest at that seq is [`StageError::SeqTaken`].
    pub async fn commit(&self, m: &Manifest) -> Result<()> {
        m.validate(&self.keys).map_err(|reason| StageError::Invalid { what: format!("manifest {}", m.seq), reason })?;
        match self.stage.create(&self.keys.manifest(m.seq), Bytes::from(m.to_json())).await {
            Ok(()) => {
                self.committed(m.seq);
                Ok(())
            }
            Err(StageError::Conflict { .. }) => match self.read_opt(m.seq).await? {
                Some(existing) if existing == *m => {
                    self.committed(m.seq);
                    Ok(())
                }
                _ => Err(StageError::SeqTaken { stream: self.keys.stream().to_owned(), seq: m.seq }),
            },
            Err(e) => Err(e),
        }
    }

    pub async fn read(&self, seq: u64) -> Result<Manifest> {
        let bytes = self.stage.get(&self.keys.manifest(seq)).await?;
        Manifest::from_json(&self.keys, seq, &bytes)
    }

    pub async fn read_opt(&self, seq: u64) -> Result<Option<Manifest>> {
        match self.stage.get_opt(&self.keys.manifest(seq)).await? {
            Some(bytes) => Manifest::from_json(&self.keys, seq, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub async fn exists(&self, seq: u64) -> Result<bool> {
        self.stage.exists(&self.keys.manifest(seq)).await
    }

    /// The first seq retention keeps (1 until `gc` applies a retention).
    pub async fn low(&self) -> Result<u64> {
        Ok(self.stage.get_json::<Retention>(&self.keys.retention()).await?.map_or(1, |r| r.value.low.max(1)))
    }

    /// The last committed seq, `None` for an empty log. `hint` (a seq known
    /// or believed to exist, e.g. from `reader.json`) only saves requests.
    pub async fn head(&self, hint: Option<u64>) -> Result<Option<u64>> {
        let low = self.low().await?;
        let start = hint.unwrap_or(low).max(low);
        let (mut known, mut missing) = if self.exists(start).await? {
            // Gallop forward until a seq is missing.
            let mut known = start;
            let mut step = 1u64;
            loop {
                let probe = known.saturating_add(step);
                if probe == known || !self.exists(probe).await? {
                    break (known, probe);
                }
                known = probe;
                step = step.saturating_mul(2);
            }
        } else if start == low || !self.exists(low).await? {
            return Ok(None);
        } else {
            (low, start)
        };
        while missing - known > 1 {
            let mid = known + (missing - known) / 2;
            if self.exists(mid).await? {
                known = mid;
            } else {
                missing = mid;
            }
        }
        Ok(Some(known))
    }

    /// The keys of `table`'s data files in committed batches, in commit
    /// order, up to the last batch whose first commit is at or before
    /// `as_of` (that batch may hold later rows: filter on
    /// `_strata_commit_ts`). What a query engine should read: a glob also
    /// finds files no manifest lists, uploaded before a commit or left for gc.
    pub async fn committed_files(&self, table: &TableName, as_of: Option<Timestamp>) -> Result<Vec<Path>> {
        let mut out = Vec::new();
        let Some(head) = self.head(None).await? else {
            return Ok(out);
        };
        for seq in self.low().await?..=head {
            let m = self.read(seq).await?;
            if as_of.is_some_and(|t| m.commit_ts.min > t) {
                break;
            }
            for f in m.files.iter().filter(|f| f.table == *table) {
                let key =
                    Path::parse(&f.path).map_err(|e| StageError::Corrupt { path: self.keys.manifest(seq), reason: format!("file path {:?}: {e}", f.path) })?;
                out.push(key);
            }
        }
        Ok(out)
    }

    /// The first batch whose newest commit is at or after `t`, by binary
    /// search over manifests; `None` when every batch is older. Replay starts
    /// there and skips that batch's rows older than `t`
    /// ([`first_at_or_after`]).
    pub async fn seek_time(&self, t: Timestamp) -> Result<Option<u64>> {
        let Some(head) = self.head(None).await? else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (self.low().await?, head + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.read(mid).await?.commit_ts.max >= t {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok((lo <= head).then_some(lo))
    }

    /// Committed seqs by listing `log/` (maintenance only: `ls`, `verify`, `gc`).
    pub async fn list_seqs(&self) -> Result<Vec<u64>> {
        let mut seqs: Vec<u64> = self.stage.list(&self.keys.log_prefix()).await?.iter().filter_map(|m| self.keys.parse_manifest_key(&m.location)).collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Stages a schema version. Versions are immutable: writing one that
    /// exists succeeds only if it is identical.
    pub async fn write_schema(&self, schema: &TableSchema) -> Result<()> {
        schema.validate()?;
        if schema.stream != self.keys.stream() {
            return Err(StageError::Invalid { what: format!("schema of {}", schema.table), reason: format!("belongs to stream {:?}", schema.stream) });
        }
        let path = self.keys.schema(&schema.table, schema.version);
        match self.stage.create(&path, Bytes::from(schema.to_json())).await {
            Ok(()) => Ok(()),
            Err(StageError::Conflict { .. }) => {
                let existing = TableSchema::from_json(&path, &self.stage.get(&path).await?)?;
                if existing == *schema { Ok(()) } else { Err(StageError::Conflict { path }) }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn read_schema(&self, table: &TableName, version: u32) -> Result<TableSchema> {
        let path = self.keys.schema(table, version);
        let s = TableSchema::from_json(&path, &self.stage.get(&path).await?)?;
        if s.table != *table || s.version != version {
            return Err(StageError::Corrupt { path, reason: format!("holds {} v{}", s.table, s.version) });
        }
        Ok(s)
    }

    /// Every table the stream has staged a schema for.
    pub async fn tables(&self) -> Result<Vec<TableName>> {
        let mut out = Vec::new();
        for dir in self.stage.list_dirs(&self.keys.schemas_prefix()).await? {
            if let Some(seg) = dir.filename() {
                out.push(crate::keys::parse_table_segment(seg)?);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The newest schema version of `table`, by listing its folder.
    pub async fn latest_schema(&self, table: &TableName) -> Result<Option<TableSchema>> {
        let prefix = self.keys.schema_prefix(table);
        let newest = self.stage.list(&prefix).await?.iter().filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse::<u32>().ok()).max();
        match newest {
            Some(v) => self.read_schema(table, v).await.map(Some),
            None => Ok(None),
        }
    }
}

impl StreamLog {
    /// Fetches a batch's data file, checks size and checksum, and decodes
    /// it on a blocking thread.
    pub async fn read_file(&self, entry: &FileEntry) -> Result<DecodedFile> {
        let (path, bytes) = self.fetch_file(entry).await?;
        let entry = entry.clone();
        blocking(move || {
            let decoded = decode_file(&path, bytes)?;
            check_identity(&path, &entry, &decoded.table, decoded.schema_version)?;
            Ok(decoded)
        })
        .await
    }

    /// A data file's bytes, undecoded, once its size, checksum and footer
    /// (table and schema version) match its manifest entry.
    pub async fn fetch_checked_file(&self, entry: &FileEntry) -> Result<Bytes> {
        let (path, bytes) = self.fetch_file(entry).await?;
        let (entry, checked) = (entry.clone(), bytes.clone());
        blocking(move || {
            let reader = FileReader::open(&path, checked, 1)?;
            check_identity(&path, &entry, &reader.table, reader.schema_version)
        })
        .await?;
        Ok(bytes)
    }

    /// Opens a data file to decode `chunk_rows` changes at a time (a large
    /// part of a huge transaction, read without holding all its rows).
    pub async fn open_file(&self, entry: &FileEntry, chunk_rows: usize) -> Result<FileReader> {
        let (path, bytes) = self.fetch_file(entry).await?;
        let entry = entry.clone();
        blocking(move || {
            let reader = FileReader::open(&path, bytes, chunk_rows)?;
            check_identity(&path, &entry, &reader.table, reader.schema_version)?;
            Ok(reader)
        })
        .await
    }

    /// A data file's bytes, checked against its manifest entry.
    async fn fetch_file(&self, entry: &FileEntry) -> Result<(Path, Bytes)> {
        let path = entry.key()?;
        let bytes = self.stage.get(&path).await?;
        check_file(&path, entry, &bytes)?;
        Ok((path, bytes))
    }
}

/// Runs CPU-bound decoding off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StageError::Invalid { what: "decoding a data file".to_owned(), reason: format!("decoder task failed: {e}") })?
}

/// Checks that a data file holds the table and version its manifest entry says.
fn check_identity(path: &Path, entry: &FileEntry, table: &TableName, version: u32) -> Result<()> {
    if *table != entry.table || version != entry.schema_version {
        return Err(StageError::Corrupt {
            path: path.clone(),
            reason: format!("holds {table} v{version}, manifest says {} v{}", entry.table, entry.schema_version),
        });
    }
    Ok(())
}

/// Checks a data file's bytes against its manifest entry.
pub fn check_file(path: &object_store::path::Path, entry: &FileEntry, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != entry.bytes {
        return Err(StageError::Corrupt { path: path.clone(), reason: format!("is {} bytes, manifest says {}", bytes.len(), entry.bytes) });
    }
    let actual = checksum(bytes);
    if actual != entry.checksum {
        return Err(StageError::ChecksumMismatch { path: path.clone(), expected: entry.checksum.clone(), actual });
    }
    Ok(())
}

/// Index of the first change committed at or after `t`: where a replay
/// `--from t` starts inside the batch [`StreamLog::seek_time`] found.
pub fn first_at_or_after(changes: &[Change], t: Timestamp) -> usize {
    changes.iter().position(|c| c.commit_ts >= t).unwrap_or(changes.len())
}

/// One table's part of a batch to write.
#[derive(Debug, Clone)]
pub struct TableBatch {
    pub schema: std::sync::Arc<TableSchema>,
    /// The table's changes in commit order.
    pub changes: Vec<Change>,
}

impl StreamLog {
    /// Writes a whole batch at once: see [`BatchWriter`].
    pub async fn write_batch(&self, seq: u64, kind: crate::manifest::BatchKind, lsn_start: strata_common::Lsn, tables: Vec<TableBatch>) -> Result<Manifest> {
        let mut w = BatchWriter::new(self, seq, kind);
        for t in tables {
            w.add(t).await?;
        }
        w.commit(lsn_start).await
    }
}

/// One table's rows encoded as a Parquet part file, not yet uploaded: its
/// key depends on the seq of the batch it joins.
#[derive(Debug)]
pub struct EncodedPart {
    pub table: TableName,
    pub schema_version: u32,
    pub rows: u64,
    pub bytes: Bytes,
    first_commit_ts: Timestamp,
    min_ts: Timestamp,
    max_ts: Timestamp,
    max_lsn: strata_common::Lsn,
    commit_lsns: std::collections::HashSet<strata_common::Lsn>,
}

impl EncodedPart {
    /// Encodes `t` (CPU-bound: call it off the async threads). `t` must not
    /// be empty.
    pub fn encode(t: TableBatch) -> Result<EncodedPart> {
        let first = t
            .changes
            .first()
            .ok_or_else(|| StageError::Invalid { what: format!("rows of {}", t.schema.table), reason: "an empty part cannot be encoded".to_owned() })?;
        let (mut min_ts, mut max_ts, mut max_lsn) = (first.commit_ts, first.commit_ts, first.lsn);
        let mut commit_lsns = std::collections::HashSet::new();
        for c in &t.changes {
            min_ts = min_ts.min(c.commit_ts);
            max_ts = max_ts.max(c.commit_ts);
            max_lsn = max_lsn.max(c.lsn);
            commit_lsns.insert(c.lsn);
        }
        let bytes = crate::codec::encode_file(&t.schema, &t.changes)?;
        Ok(EncodedPart {
            table: t.schema.table.clone(),
            schema_version: t.schema.version,
            rows: t.changes.len() as u64,
            bytes,
            first_commit_ts: first.commit_ts,
            min_ts,
            max_ts,
            max_lsn,
            commit_lsns,
        })
    }
}

/// Builds one batch incrementally: each [`BatchWriter::add`] encodes one
/// table's rows into a Parquet part file (on a blocking thread) and uploads
/// it; [`BatchWriter::commit`] then creates the manifest naming every part.
/// Until then nothing is visible, so a transaction larger than memory can be
/// written out part by part as it arrives and still commit atomically.
#[derive(Debug)]
pub struct BatchWriter {
    log: StreamLog,
    seq: u64,
    kind: crate::manifest::BatchKind,
    files: Vec<FileEntry>,
    commit_lsns: std::collections::HashSet<strata_common::Lsn>,
    min_ts: Option<Timestamp>,
    max_ts: Option<Timestamp>,
    max_lsn: Option<strata_common::Lsn>,
    snapshot: Option<crate::manifest::SnapshotInfo>,
    watermark: Option<crate::manifest::WatermarkRange>,
}

impl BatchWriter {
    pub fn new(log: &StreamLog, seq: u64, kind: crate::manifest::BatchKind) -> Self {
        BatchWriter {
            log: log.clone(),
            seq,
            kind,
            files: Vec::new(),
            commit_lsns: Default::default(),
            min_ts: None,
            max_ts: None,
            max_lsn: None,
            snapshot: None,
            watermark: None,
        }
    }

    /// Sets what a query pull's batch records in its manifest.
    pub fn set_watermark(&mut self, range: crate::manifest::WatermarkRange) {
        self.watermark = Some(range);
    }

    /// Sets what a `snapshot` batch records in its manifest.
    pub fn set_snapshot(&mut self, info: crate::manifest::SnapshotInfo) {
        self.snapshot = Some(info);
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Encodes and uploads one table's changes as the next part file.
    pub async fn add(&mut self, t: TableBatch) -> Result<()> {
        if t.changes.is_empty() {
            return Ok(());
        }
        let seq = self.seq;
        let encoded = tokio::task::spawn_blocking(move || EncodedPart::encode(t))
            .await
            .map_err(|e| StageError::Invalid { what: format!("batch {seq}"), reason: format!("encoder task failed: {e}") })??;
        self.add_encoded(encoded).await
    }

    /// Uploads a part encoded elsewhere (by a parallel worker) as the next
    /// part file.
    pub async fn add_encoded(&mut self, p: EncodedPart) -> Result<()> {
        let part = u32::try_from(self.files.len())
            .map_err(|_| StageError::Invalid { what: format!("batch {}", self.seq), reason: "more than 2^32 files".to_owned() })?;
        let path = self.log.keys.data_file(&p.table, p.first_commit_ts, self.seq, part);
        self.min_ts = Some(self.min_ts.map_or(p.min_ts, |m| m.min(p.min_ts)));
        self.max_ts = Some(self.max_ts.map_or(p.max_ts, |m| m.max(p.max_ts)));
        self.max_lsn = Some(self.max_lsn.map_or(p.max_lsn, |m| m.max(p.max_lsn)));
        self.commit_lsns.extend(p.commit_lsns);
        let entry = FileEntry {
            table: p.table,
            schema_version: p.schema_version,
            path: path.to_string(),
            rows: p.rows,
            bytes: p.bytes.len() as u64,
            checksum: checksum(&p.bytes),
        };
        self.log.stage.put(&path, p.bytes).await?;
        self.files.push(entry);
        Ok(())
    }

    /// Commits the batch: `lsn_start` is the previous batch's `lsn.end`.
    pub async fn commit(self, lsn_start: strata_common::Lsn) -> Result<Manifest> {
        use crate::manifest::{BatchKind, Counts, LsnRange, TimeRange};
        let (Some(min), Some(max), Some(end)) = (self.min_ts, self.max_ts, self.max_lsn) else {
            return Err(StageError::Invalid { what: format!("batch {}", self.seq), reason: "has no changes".to_owned() });
        };
        let transactions = match self.kind {
            BatchKind::Snapshot => 0,
            BatchKind::Changes => self.commit_lsns.len() as u64,
        };
        let counts = Counts { transactions, rows: self.files.iter().map(|f| f.rows).sum(), bytes: self.files.iter().map(|f| f.bytes).sum() };
        let m = Manifest {
            format: crate::FORMAT_VERSION,
            stream: self.log.keys.stream().to_owned(),
            seq: self.seq,
            kind: self.kind,
            lsn: LsnRange { start: lsn_start.min(end), end },
            commit_ts: TimeRange { min, max },
            counts,
            files: self.files,
            created_at: Timestamp::now(),
            snapshot: self.snapshot,
            watermark: self.watermark,
        };
        self.log.commit(&m).await?;
        Ok(m)
    }
}
