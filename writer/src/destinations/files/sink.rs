//! Writes each table's changes of a (rolled-up) batch as one file.

use std::sync::Arc;

use strata_common::Change;
use strata_stager::Stage;
use strata_stager::keys::{partition, table_segment};
use strata_stager::schema::TableSchema;

use super::config::{FileFormat, FilesSpec};
use super::retry::classify;
use crate::destinations::{Batch, DestError, Destination};
use crate::envelope::envelope;

pub struct FilesSink {
    store: Stage,
    format: FileFormat,
}

impl FilesSink {
    pub fn connect(spec: &FilesSpec) -> Result<FilesSink, DestError> {
        let url = crate::destinations::expand_env(&spec.url).map_err(DestError::Permanent)?;
        let store = Stage::open(&url, &Default::default()).map_err(|e| DestError::Permanent(format!("files url: {e}")))?;
        Ok(FilesSink { store, format: spec.format })
    }
}

/// `{schema}.{table}/{YYYY-MM-DD}/{HH}/{first seq}[-p{file}-{chunk}]-v{version}.{ext}`:
/// a part of a batch delivered part by part has its own file, named by the
/// part's place in the batch, so a redelivery overwrites it.
pub fn file_path(schema: &TableSchema, first: &Change, batch: &Batch, format: FileFormat) -> String {
    let ext = match format {
        FileFormat::Parquet => "parquet",
        FileFormat::Jsonl => "jsonl",
    };
    let part = batch.part.map(|p| format!("-p{:04}-{:04}", p.file, p.chunk)).unwrap_or_default();
    format!("{}/{}/{:020}{part}-v{:04}.{ext}", table_segment(&schema.table), partition(first.commit_ts), batch.first_seq, schema.version)
}

impl Destination for FilesSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), DestError> {
        // One file per table and schema version, its changes in commit order.
        let mut groups: Vec<(Arc<TableSchema>, Vec<Change>)> = Vec::new();
        for t in &batch.tables {
            match groups.iter_mut().find(|(s, _)| s.table == t.schema.table && s.version == t.schema.version) {
                Some((_, changes)) => changes.extend(t.changes.iter().cloned()),
                None => groups.push((t.schema.clone(), t.changes.clone())),
            }
        }
        for (schema, mut changes) in groups {
            changes.sort_by_key(|c| (c.lsn, c.ord));
            let Some(first) = changes.first() else {
                continue;
            };
            let path = file_path(&schema, first, batch, self.format);
            let bytes = match self.format {
                FileFormat::Parquet => {
                    let s = schema.clone();
                    tokio::task::spawn_blocking(move || strata_stager::codec::encode_file(&s, &changes))
                        .await
                        .map_err(|e| DestError::Transient(format!("encoder task: {e}")))?
                        .map_err(|e| DestError::Permanent(format!("encoding {path}: {e}")))?
                }
                FileFormat::Jsonl => {
                    let mut out = Vec::new();
                    for c in &changes {
                        out.extend_from_slice(envelope(&batch.stream, &schema, c, batch.staged_at).to_string().as_bytes());
                        out.push(b'\n');
                    }
                    out.into()
                }
            };
            let key = object_store::path::Path::parse(&path).map_err(|e| DestError::Permanent(format!("file key {path}: {e}")))?;
            self.store.put(&key, bytes).await.map_err(|e| classify(&format!("writing {path}"), &e))?;
        }
        Ok(())
    }
}
