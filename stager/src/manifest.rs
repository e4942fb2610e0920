//! Batch manifests: `streams/{stream}/log/{seq:020}.json`, the commit point.
//!
//! A batch exists once its manifest exists; data files no manifest references
//! are invisible (and garbage after a grace period). Manifests are immutable.
//! Seqs start at 1 and have no gaps; `lsn` is the half-open range
//! `(start, end]` of commit LSNs the batch covers, so batch `n+1` starts where
//! batch `n` ends and a restarted reader resumes after `end`.
//!
//! Within format 1 new optional fields may be added; readers ignore fields
//! they do not know, and refuse a different `format`.

use serde::{Deserialize, Serialize};
use strata_common::{Lsn, TableName, Timestamp};

use crate::error::{Result, StageError};
use crate::keys::StreamKeys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchKind {
    /// Rows of the initial snapshot (`_strata_op = r`).
    Snapshot,
    /// Committed transactions from the replication stream.
    Changes,
}

/// `(start, end]` of commit LSNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsnRange {
    pub start: Lsn,
    pub end: Lsn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub min: Timestamp,
    pub max: Timestamp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub transactions: u64,
    pub rows: u64,
    /// Sum of the data files' sizes.
    pub bytes: u64,
}

/// One data file of a batch: one table's rows, in commit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub table: TableName,
    pub schema_version: u32,
    /// Key of the file relative to the stage root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// `sha256:{hex}` of the file's bytes.
    pub checksum: String,
}

impl FileEntry {
    /// The file's key. `path` is stored as written (already percent-encoded),
    /// so it is parsed, never re-encoded.
    pub fn key(&self) -> Result<object_store::path::Path> {
        object_store::path::Path::parse(&self.path).map_err(|e| StageError::Invalid { what: format!("file path {:?}", self.path), reason: e.to_string() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub stream: String,
    pub seq: u64,
    pub kind: BatchKind,
    pub lsn: LsnRange,
    pub commit_ts: TimeRange,
    pub counts: Counts,
    pub files: Vec<FileEntry>,
    /// Wall-clock time the manifest was written, for lag figures.
    pub created_at: Timestamp,
    /// For `snapshot` batches: where the rows sit in the stream and in the
    /// tables' load order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    /// For batches of a query pull: where its rows sit in the pulled
    /// query's `(watermark, key)` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<WatermarkRange>,
}

/// What a query pull's batch adds to its manifest, as PostgreSQL's text
/// forms (under the reader's pinned session settings): `from`, the
/// watermark of the batch's first row; `(to, last_key)`, the greatest
/// `(watermark, key)` the stream has staged up to and including this batch
/// (its last row's, unless a look-back batch re-read rows below it). `to`
/// never decreases along the log, and is where a restarted pull continues.
/// No WAL position exists for such rows: their `_strata_lsn` is the batch's
/// seq and `_strata_ord` the row's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkRange {
    pub from: String,
    pub to: String,
    pub last_key: Vec<String>,
}

/// What a `snapshot` batch adds to its manifest.
///
/// Rows of a table are its contents as of `point`: the change stream holds
/// exactly that table's transactions committing at or after `point`. Tables
/// are loaded by `level`: a table references (by foreign key) only tables of
/// lower levels, or tables of its own cycle, so a writer loads level by level,
/// the tables of one level in any order or in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub point: Lsn,
    pub level: u32,
    /// The tables of this batch and the tables each references.
    pub tables: Vec<SnapshotTable>,
    /// Tables whose last rows are in this batch: their snapshot is complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<TableName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTable {
    pub table: TableName,
    /// Tables this one references by foreign key (itself excluded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TableName>,
    /// The other tables of a foreign-key cycle this one is part of: no
    /// order loads such tables with their constraints checked row by row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<TableName>,
}

impl Manifest {
    /// Checks internal consistency, and that it is the manifest `keys` expects
    /// at `seq`. Everything a reader of the stage relies on is checked here,
    /// so a hand-edited or truncated manifest is refused with a reason.
    pub fn validate(&self, keys: &StreamKeys) -> std::result::Result<(), String> {
        crate::check_format(self.format)?;
        if self.stream != keys.stream() {
            return Err(format!("belongs to stream {:?}, not {:?}", self.stream, keys.stream()));
        }
        if self.seq == 0 {
            return Err("seq 0: seqs start at 1".to_owned());
        }
        if self.lsn.start > self.lsn.end {
            return Err(format!("lsn range ({}, {}] is reversed", self.lsn.start, self.lsn.end));
        }
        if self.commit_ts.min > self.commit_ts.max {
            return Err(format!("commit_ts min {} is after max {}", self.commit_ts.min, self.commit_ts.max));
        }
        let tables = keys.tables_prefix();
        let mut rows = 0u64;
        let mut bytes = 0u64;
        for f in &self.files {
            if !f.path.starts_with(&format!("{}/", tables.as_ref())) || f.path.contains("/../") {
                return Err(format!("file {:?} is outside {}", f.path, tables));
            }
            let Ok(key) = f.key() else {
                return Err(format!("file {:?} is not a valid key", f.path));
            };
            if StreamKeys::parse_data_file_seq(&key) != Some(self.seq) {
                return Err(format!("file {:?} is not named for seq {}", f.path, self.seq));
            }
            if !f.checksum.starts_with("sha256:") || f.checksum.len() != 7 + 64 {
                return Err(format!("file {:?} has checksum {:?}, expected sha256:<64 hex digits>", f.path, f.checksum));
            }
            if f.schema_version == 0 {
                return Err(format!("file {:?} names schema version 0", f.path));
            }
            rows = rows.saturating_add(f.rows);
            bytes = bytes.saturating_add(f.bytes);
        }
        if rows != self.counts.rows {
            return Err(format!("counts.rows is {} but the files hold {rows}", self.counts.rows));
        }
        if bytes != self.counts.bytes {
            return Err(format!("counts.bytes is {} but the files hold {bytes}", self.counts.bytes));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifests serialize")
    }

    /// Decodes and validates the manifest stored at `keys.manifest(seq)`.
    pub fn from_json(keys: &StreamKeys, seq: u64, bytes: &[u8]) -> Result<Manifest> {
        let path = keys.manifest(seq);
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| StageError::Corrupt { path: path.clone(), reason: format!("not a manifest: {e}") })?;
        m.validate(keys).map_err(|reason| StageError::Corrupt { path: path.clone(), reason })?;
        if m.seq != seq {
            return Err(StageError::Corrupt { path, reason: format!("says seq {}", m.seq) });
        }
        Ok(m)
    }

    /// Tables of this batch, in first-appearance order, without repeats.
    pub fn tables(&self) -> Vec<&TableName> {
        let mut out: Vec<&TableName> = Vec::new();
        for f in &self.files {
            if !out.contains(&&f.table) {
                out.push(&f.table);
            }
        }
        out
    }
}

/// `sha256:{hex}` of `bytes`.
pub fn checksum(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
