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
use serde::{Deserialize, Serialize};
use strata_common::{Change, TableName, Timestamp};

use crate::codec::{DecodedFile, decode_file};
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
}

impl StreamLog {
    pub fn new(stage: &Stage, stream: &str) -> Result<Self> {
        Ok(StreamLog { stage: stage.clone(), keys: StreamKeys::new(stream)? })
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
            Ok(()) => Ok(()),
            Err(StageError::Conflict { .. }) => match self.read_opt(m.seq).await? {
                Some(existing) if existing == *m => Ok(()),
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

    /// The first batch whose newest commit is at or after `t`, by binary
    /// search over manifests; `None` when every batch is older. Replay starts
    /// there and skips that batch's rows older than `t`
    /// ([`first_at_or_after`]).
    pub async fn seek_time(&self, t: Timestamp) -> Result<Option<u64>> {
        let Some(head) = self.head(None).await? else { return Ok(None) };
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
        let mut seqs: Vec<u64> =
            self.stage.list(&self.keys.log_prefix()).await?.iter().filter_map(|m| self.keys.parse_manifest_key(&m.location)).collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Stages a schema version. Versions are immutable: writing one that
    /// exists succeeds only if it is identical.
    pub async fn write_schema(&self, schema: &TableSchema) -> Result<()> {
        schema.validate()?;
        if schema.stream != self.keys.stream() {
            return Err(StageError::Invalid {
                what: format!("schema of {}", schema.table),
                reason: format!("belongs to stream {:?}", schema.stream),
            });
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

    /// The newest schema version of `table`, by listing its folder.
    pub async fn latest_schema(&self, table: &TableName) -> Result<Option<TableSchema>> {
        let prefix = self.keys.schema_prefix(table);
        let newest = self
            .stage
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse::<u32>().ok())
            .max();
        match newest {
            Some(v) => self.read_schema(table, v).await.map(Some),
            None => Ok(None),
        }
    }

    /// Fetches a batch's data file, checks size and checksum, and decodes it.
    pub async fn read_file(&self, entry: &FileEntry) -> Result<DecodedFile> {
        let path = entry.key()?;
        let bytes = self.stage.get(&path).await?;
        check_file(&path, entry, &bytes)?;
        let decoded = decode_file(&path, bytes)?;
        if *decoded.table != entry.table || decoded.schema_version != entry.schema_version {
            return Err(StageError::Corrupt {
                path,
                reason: format!("holds {} v{}, manifest says {} v{}", decoded.table, decoded.schema_version, entry.table, entry.schema_version),
            });
        }
        Ok(decoded)
    }
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
    /// Writes a whole batch: encodes each table's changes into a Parquet file
    /// (on a blocking thread), uploads the files, then commits the manifest.
    /// `lsn_start` is the previous batch's `lsn.end`. Nothing is visible
    /// until the commit succeeds.
    pub async fn write_batch(
        &self,
        seq: u64,
        kind: crate::manifest::BatchKind,
        lsn_start: strata_common::Lsn,
        tables: Vec<TableBatch>,
    ) -> Result<Manifest> {
        use crate::manifest::{BatchKind, Counts, LsnRange, TimeRange};
        let all = || tables.iter().flat_map(|t| &t.changes);
        let invalid = |reason: &str| StageError::Invalid { what: format!("batch {seq}"), reason: reason.to_owned() };
        let (Some(min_ts), Some(max_ts), Some(end)) =
            (all().map(|c| c.commit_ts).min(), all().map(|c| c.commit_ts).max(), all().map(|c| c.lsn).max())
        else {
            return Err(invalid("has no changes"));
        };
        let transactions = match kind {
            BatchKind::Snapshot => 0,
            BatchKind::Changes => all().map(|c| c.lsn).collect::<std::collections::HashSet<_>>().len() as u64,
        };
        let mut files = Vec::with_capacity(tables.len());
        for (part, t) in tables.into_iter().enumerate() {
            let Some(first) = t.changes.first() else { continue };
            let part = u32::try_from(part).map_err(|_| invalid("has more than 2^32 files"))?;
            let path = self.keys.data_file(&t.schema.table, first.commit_ts, seq, part);
            let rows = t.changes.len() as u64;
            let (table, version) = (t.schema.table.clone(), t.schema.version);
            let bytes = tokio::task::spawn_blocking(move || crate::codec::encode_file(&t.schema, &t.changes))
                .await
                .map_err(|e| invalid(&format!("encoder task failed: {e}")))??;
            let entry = FileEntry {
                table,
                schema_version: version,
                path: path.to_string(),
                rows,
                bytes: bytes.len() as u64,
                checksum: checksum(&bytes),
            };
            self.stage.put(&path, bytes).await?;
            files.push(entry);
        }
        let counts = Counts {
            transactions,
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
        };
        let m = Manifest {
            format: crate::FORMAT_VERSION,
            stream: self.keys.stream().to_owned(),
            seq,
            kind,
            lsn: LsnRange { start: lsn_start.min(end), end },
            commit_ts: TimeRange { min: min_ts, max: max_ts },
            counts,
            files,
            created_at: Timestamp::now(),
        };
        self.commit(&m).await?;
        Ok(m)
    }
}
