//! Writes each table's changes of a (rolled-up) batch as one file.

use std::sync::Arc;

use bytes::Bytes;
use strata_common::{Change, Timestamp};
use strata_stager::codec::{decode_file, encode_file};
use strata_stager::keys::{partition, table_segment};
use strata_stager::schema::TableSchema;
use strata_stager::{Stage, StageError, splice};

use super::config::{FileFormat, FilesSpec};
use super::retry::classify;
use crate::destinations::{Batch, DestError, Destination};
use crate::envelope::{EnvelopeFormat, bodies};

pub struct FilesSink {
    store: Stage,
    format: FileFormat,
    envelope: EnvelopeFormat,
}

impl FilesSink {
    pub fn connect(spec: &FilesSpec) -> Result<FilesSink, DestError> {
        let url = crate::destinations::expand_env(&spec.url).map_err(DestError::Permanent)?;
        let store = Stage::open(&url, &Default::default()).map_err(|e| DestError::Permanent(format!("files url: {e}")))?;
        Ok(FilesSink { store, format: spec.format, envelope: spec.envelope })
    }
}

/// `{schema}.{table}/{YYYY-MM-DD}/{HH}/{first seq}[-p{file}-{chunk}]-v{version}.{ext}`:
/// a part of a batch delivered part by part has its own file, named by the
/// part's place in the batch, so a redelivery overwrites it.
pub fn file_path(schema: &TableSchema, first_commit: Timestamp, batch: &Batch, format: FileFormat) -> String {
    let ext = match format {
        FileFormat::Parquet => "parquet",
        FileFormat::Jsonl => "jsonl",
    };
    let part = batch.part.map(|p| format!("-p{:04}-{:04}", p.file, p.chunk)).unwrap_or_default();
    format!("{}/{}/{:020}{part}-v{:04}.{ext}", table_segment(&schema.table), partition(first_commit), batch.first_seq, schema.version)
}

impl Destination for FilesSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), DestError> {
        // One file per table and schema version, its changes in commit order.
        let mut groups: Vec<(Arc<TableSchema>, Vec<usize>)> = Vec::new();
        for (i, t) in batch.tables.iter().enumerate() {
            match groups.iter_mut().find(|(s, _)| s.table == t.schema.table && s.version == t.schema.version) {
                Some((_, entries)) => entries.push(i),
                None => groups.push((t.schema.clone(), vec![i])),
            }
        }
        for (schema, entries) in groups {
            let staged: Option<Vec<Bytes>> = entries.iter().map(|&i| batch.file(i).map(|f| f.bytes.clone())).collect();
            let file = match staged {
                Some(files) if self.format == FileFormat::Parquet => join_staged(&schema, batch, files).await?,
                _ => self.encode(&schema, batch, &entries).await?,
            };
            let Some((path, bytes)) = file else { continue };
            let key = object_store::path::Path::parse(&path).map_err(|e| DestError::Permanent(format!("file key {path}: {e}")))?;
            self.store.put(&key, bytes).await.map_err(|e| classify(&format!("writing {path}"), &e))?;
        }
        Ok(())
    }
}

impl FilesSink {
    /// The file of `entries` (of one table and version), from their changes
    /// (decoding those given undecoded); `None` without changes.
    async fn encode(&self, schema: &Arc<TableSchema>, batch: &Batch, entries: &[usize]) -> Result<Option<(String, Bytes)>, DestError> {
        let mut changes: Vec<Change> = Vec::new();
        for &i in entries {
            match batch.file(i) {
                Some(f) => {
                    let bytes = f.bytes.clone();
                    let decoded = blocking("decoder", move || decode_file(&object_store::path::Path::from("staged file"), bytes)).await?;
                    changes.extend(decoded.changes);
                }
                None => changes.extend(batch.tables[i].changes.iter().cloned()),
            }
        }
        changes.sort_by_key(|c| (c.lsn, c.ord));
        let Some(first) = changes.first() else {
            return Ok(None);
        };
        let path = file_path(schema, first.commit_ts, batch, self.format);
        let bytes = match self.format {
            FileFormat::Parquet => {
                let s = schema.clone();
                blocking("encoder", move || encode_file(&s, &changes)).await?
            }
            FileFormat::Jsonl => {
                let batched = batch.batched(self.envelope);
                let mut out = Vec::new();
                for c in &changes {
                    for body in bodies(&batched, schema, c) {
                        out.extend_from_slice(body.text.as_bytes());
                        out.push(b'\n');
                    }
                }
                out.into()
            }
        };
        Ok(Some((path, bytes)))
    }
}

/// The file of staged data files of one table and version, joined without
/// decoding: the same rows and bytes per column chunk as the stage holds,
/// in seq order (which is commit order, except that the rows of a snapshot
/// copied by several workers keep the order they were staged in rather
/// than their ordinals'). `None` without rows.
async fn join_staged(schema: &TableSchema, batch: &Batch, files: Vec<Bytes>) -> Result<Option<(String, Bytes)>, DestError> {
    let joined = blocking("joiner", move || {
        let mut first = None;
        for f in &files {
            first = splice::first_commit_ts(f)?;
            if first.is_some() {
                break;
            }
        }
        Ok(first.map(|t| (t, splice::join(&files))))
    })
    .await?;
    let Some((first, bytes)) = joined else { return Ok(None) };
    let bytes = bytes.map_err(|e| DestError::Permanent(format!("joining staged files of {} v{}: {e}", schema.table, schema.version)))?;
    Ok(Some((file_path(schema, first, batch, FileFormat::Parquet), bytes)))
}

/// Runs CPU-bound work off the async threads; its errors are permanent
/// (the same staged bytes fail the same way).
async fn blocking<T: Send + 'static>(what: &str, f: impl FnOnce() -> Result<T, StageError> + Send + 'static) -> Result<T, DestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DestError::Transient(format!("{what} task: {e}")))?
        .map_err(|e| DestError::Permanent(format!("{what}: {e}")))
}
