//! Data files joined without decoding: the row groups of several files of
//! one table and schema version, their encoded column chunks copied as
//! they are (pages, statistics, page indexes) into one file, with the first
//! file's key-value metadata (the Arrow schema, table and version). What a
//! destination writing the stage's own format does with batches it takes
//! unchanged, at the cost of a copy instead of a decode and an encode.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::writer::SerializedFileWriter;
use strata_common::Timestamp;

use crate::codec::writer_properties;
use crate::error::{Result, StageError};
use crate::schema::COL_COMMIT_TS;

fn invalid(e: impl std::fmt::Display) -> StageError {
    StageError::Invalid { what: "joining staged data files".to_owned(), reason: e.to_string() }
}

/// One file holding the rows of `files`, in order. The files must share
/// their Parquet schema and key-value metadata (one table, one schema
/// version); a single file is returned as it is.
pub fn join(files: &[Bytes]) -> Result<Bytes> {
    if let [one] = files {
        return Ok(one.clone());
    }
    let inputs: Vec<(&Bytes, ParquetMetaData)> = files
        .iter()
        .map(|b| Ok((b, ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Optional).parse_and_finish(b).map_err(invalid)?)))
        .collect::<Result<_>>()?;
    let Some((_, first)) = inputs.first() else {
        return Err(invalid("no files to join"));
    };
    let (schema, metadata) = (first.file_metadata().schema(), first.file_metadata().key_value_metadata());
    if let Some(i) = inputs.iter().position(|(_, m)| m.file_metadata().schema() != schema || m.file_metadata().key_value_metadata() != metadata) {
        return Err(invalid(format!("file {i} of {} has another schema or metadata than the first", inputs.len())));
    }
    let root = first.file_metadata().schema_descr().root_schema_ptr();
    let mut writer = SerializedFileWriter::new(Vec::new(), root, Arc::new(writer_properties())).map_err(invalid)?;
    for kv in metadata.into_iter().flatten() {
        writer.append_key_value_metadata(kv.clone());
    }
    for (input, meta) in &inputs {
        let index = meta.page_index();
        for (g, group) in meta.row_groups().iter().enumerate() {
            let mut out = writer.next_row_group().map_err(invalid)?;
            for (c, column) in group.columns().iter().enumerate() {
                let chunk = ColumnCloseResult {
                    bytes_written: u64::try_from(column.compressed_size()).map_err(invalid)?,
                    rows_written: u64::try_from(group.num_rows()).map_err(invalid)?,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: index.and_then(|i| i.column_index(g, c)).cloned(),
                    offset_index: index.and_then(|i| i.offset_index(g, c)).cloned(),
                };
                out.append_column(*input, chunk).map_err(invalid)?;
            }
            out.close().map_err(invalid)?;
        }
    }
    Ok(Bytes::from(writer.into_inner().map_err(invalid)?))
}

/// The commit time of a data file's first row (`None` for a file without
/// rows), decoding only that row's `_strata_commit_ts`.
pub fn first_commit_ts(file: &Bytes) -> Result<Option<Timestamp>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.clone()).map_err(invalid)?;
    let index =
        builder.parquet_schema().columns().iter().position(|c| c.name() == COL_COMMIT_TS).ok_or_else(|| invalid(format!("no {COL_COMMIT_TS} column")))?;
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [index]);
    let mut reader = builder.with_projection(mask).with_batch_size(1).with_limit(1).build().map_err(invalid)?;
    let Some(batch) = reader.next().transpose().map_err(invalid)? else {
        return Ok(None);
    };
    let column = batch.column(0).as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(|| invalid(format!("{COL_COMMIT_TS} is not a timestamp")))?;
    Ok((!column.is_empty()).then(|| Timestamp(column.value(0))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_file, encode_file};
    use crate::schema::{ColumnSchema, ReplicaIdentity, TableSchema};
    use object_store::path::Path;
    use strata_common::{Change, ColumnType, Lsn, Op, TableName, Value};

    fn schema() -> TableSchema {
        TableSchema {
            format: crate::FORMAT_VERSION,
            stream: "main".to_owned(),
            table: TableName::new("public", "t").unwrap(),
            version: 1,
            relation_oid: None,
            replica_identity: ReplicaIdentity::Default,
            columns: vec![ColumnSchema::new("id", "bigint", 20, ColumnType::Int64, true), ColumnSchema::new("v", "text", 25, ColumnType::Text, false)],
            since_lsn: None,
            database: None,
            relfilenode: None,
            generated: Vec::new(),
        }
    }

    fn changes(from: i64, n: i64) -> Vec<Change> {
        (from..from + n)
            .map(|i| Change {
                op: Op::Insert,
                table: Arc::new(schema().table),
                lsn: Lsn(i as u64),
                ord: 0,
                xid: Some(7),
                commit_ts: Timestamp(1_000_000 + i),
                after: Some(vec![Value::Int64(i), Value::Text(format!("row {i}"))]),
                before: None,
            })
            .collect()
    }

    #[test]
    fn joined_files_read_back_as_their_rows_in_order() {
        let s = schema();
        let parts = [changes(1, 3), changes(4, 1000), changes(1004, 2)];
        let files: Vec<Bytes> = parts.iter().map(|c| encode_file(&s, c).unwrap()).collect();
        let joined = join(&files).unwrap();
        let decoded = decode_file(&Path::from("joined"), joined.clone()).unwrap();
        assert_eq!(decoded.changes, parts.concat());
        assert_eq!((decoded.table.as_ref(), decoded.schema_version), (&s.table, 1));
        assert_eq!(first_commit_ts(&joined).unwrap(), Some(Timestamp(1_000_001)));
        assert_eq!(first_commit_ts(&encode_file(&s, &[]).unwrap()).unwrap(), None);
    }

    #[test]
    fn files_of_another_version_are_not_joined() {
        let s = schema();
        let mut other = schema();
        other.version = 2;
        let files = [encode_file(&s, &changes(1, 2)).unwrap(), encode_file(&other, &changes(3, 2)).unwrap()];
        let e = join(&files).unwrap_err().to_string();
        assert!(e.contains("file 1 of 2 has another schema or metadata"), "{e}");
    }
}
