//! Change rows ↔ Arrow record batches ↔ Parquet files.
//!
//! Encoding checks every value against its column's [`ColumnType`] and
//! reports a mismatch as [`StageError::Encode`] naming table, column, LSN and
//! ordinal — never a panic. Decoding trusts nothing in the file: every
//! column's Arrow type is compared with the type its metadata declares before
//! any downcast, and anything off is [`StageError::Corrupt`] naming the key.
//!
//! [`Value::Unchanged`] is stored as NULL in its column plus the column's name
//! in `_strata_unchanged`, and restored on decode, so an untouched TOASTed
//! value never reads back as NULL. [`Value::Raw`] likewise: NULL in its
//! typed column, its text in `_strata_raw` (`_strata_before_raw` for the old
//! row) under the column's name.
//!
//! A table with no columns (legal in PostgreSQL) has no `_strata_before`
//! column, since Parquet cannot store an empty group; an empty before image
//! of such a table carries nothing and reads back as none.

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType, TimestampMicrosecondType, UInt32Type,
    UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, ListArray, MapArray, RecordBatch, StringArray, StructArray, Time64MicrosecondArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, SchemaRef};
use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::serialized_reader::SerializedPageReader;
use strata_common::change::decimal_fits;
use strata_common::types::{META_COLUMN_TYPE, META_PG_TYPE, interval_fields};
use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};

use crate::error::{Result, StageError};
use crate::schema::{
    COL_BEFORE, COL_BEFORE_RAW, COL_COMMIT_TS, COL_LSN, COL_OP, COL_ORD, COL_RAW, COL_UNCHANGED, COL_XID, META_SCHEMA_VERSION, META_TABLE, RESERVED_PREFIX,
    TableSchema, raw_type,
};

/// Parquet writer settings for every data file: zstd, page statistics (so
/// engines prune on `_strata_lsn` and `_strata_commit_ts`).
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Builds one record batch of `changes`, all of `schema`'s table.
pub fn encode_batch(schema: &TableSchema, changes: &[Change]) -> Result<RecordBatch> {
    let table = schema.table.to_string();
    let fail =
        |c: &Change, column: &str, reason: String| StageError::Encode { table: table.clone(), lsn: c.lsn, ord: c.ord, column: column.to_owned(), reason };
    let width = schema.columns.len();
    for c in changes {
        if *c.table != schema.table {
            return Err(fail(c, "", format!("change belongs to table {}", c.table)));
        }
        for (image, row) in [("after", &c.after), ("before", &c.before)] {
            if let Some(row) = row
                && row.len() != width
            {
                return Err(fail(c, "", format!("{image} image has {} values, schema v{} has {width} columns", row.len(), schema.version)));
            }
        }
        let after_expected = matches!(c.op, Op::Read | Op::Insert | Op::Update);
        if c.after.is_some() != after_expected {
            return Err(fail(c, "", format!("op {} {} a new row", c.op, if after_expected { "needs" } else { "cannot have" })));
        }
        if let Some(before) = &c.before
            && let Some(i) = before.iter().position(|v| matches!(v, Value::Unchanged))
        {
            return Err(fail(c, &schema.columns[i].name, "the before image cannot hold an unchanged-TOAST marker".to_owned()));
        }
    }

    let ops = StringArray::from_iter_values(changes.iter().map(|c| c.op.code().to_string()));
    let lsns = UInt64Array::from_iter_values(changes.iter().map(|c| c.lsn.as_u64()));
    let ords = UInt32Array::from_iter_values(changes.iter().map(|c| c.ord));
    let xids = UInt32Array::from_iter(changes.iter().map(|c| c.xid));
    let ts = TimestampMicrosecondArray::from_iter_values(changes.iter().map(|c| c.commit_ts.micros())).with_timezone("UTC");
    let mut unchanged = ListBuilder::new(StringBuilder::new());
    for c in changes {
        let names: Vec<&str> = match &c.after {
            Some(row) => row.iter().zip(&schema.columns).filter(|(v, _)| matches!(v, Value::Unchanged)).map(|(_, col)| col.name.as_str()).collect(),
            None => Vec::new(),
        };
        if names.is_empty() {
            unchanged.append_null();
        } else {
            for n in names {
                unchanged.values().append_value(n);
            }
            unchanged.append(true);
        }
    }

    let arrow_schema = schema.arrow_schema();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ops), Arc::new(lsns), Arc::new(ords), Arc::new(xids), Arc::new(ts), Arc::new(unchanged.finish())];
    let user_column = |image: fn(&Change) -> Option<&Vec<Value>>, i: usize| -> Result<ArrayRef> {
        let col = &schema.columns[i];
        let vals: Vec<&Value> = changes.iter().map(|c| image(c).map_or(&Value::Null, |row| &row[i])).collect();
        build_array(&col.column_type, &vals).map_err(|(row, reason)| fail(&changes[row], &col.name, reason))
    };
    if width > 0 {
        let before_fields = match arrow_schema.field_with_name(COL_BEFORE).map(|f| f.data_type().clone()) {
            Ok(DataType::Struct(fields)) => fields,
            _ => unreachable!("arrow_schema always has a struct before-image when there are columns"),
        };
        let children = (0..width).map(|i| user_column(|c| c.before.as_ref(), i)).collect::<Result<Vec<_>>>()?;
        let valid = NullBuffer::from(changes.iter().map(|c| c.before.is_some()).collect::<Vec<bool>>());
        let before = StructArray::try_new(before_fields, children, Some(valid))
            .map_err(|e| StageError::Invalid { what: format!("before image of {table}"), reason: e.to_string() })?;
        columns.push(raw_map(schema, changes.iter().map(|c| c.after.as_deref())));
        columns.push(Arc::new(before));
        columns.push(raw_map(schema, changes.iter().map(|c| c.before.as_deref())));
    }
    for i in 0..width {
        columns.push(user_column(|c| c.after.as_ref(), i)?);
    }
    RecordBatch::try_new(arrow_schema, columns).map_err(|e| StageError::Invalid { what: format!("record batch of {table}"), reason: e.to_string() })
}

/// The `_strata_raw` (or `_strata_before_raw`) column of one image of
/// `changes`: a map of column name → text for each row holding a
/// [`Value::Raw`], NULL for the others.
fn raw_map<'a>(schema: &TableSchema, images: impl Iterator<Item = Option<&'a [Value]>>) -> ArrayRef {
    let names = MapFieldNames { entry: "key_value".to_owned(), key: "key".to_owned(), value: "value".to_owned() };
    let mut map = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for image in images {
        let mut any = false;
        for (v, col) in image.unwrap_or_default().iter().zip(&schema.columns) {
            if let Value::Raw(text) = v {
                map.keys().append_value(&col.name);
                map.values().append_value(text);
                any = true;
            }
        }
        // Only fails when keys and values differ in length, which the loop rules out.
        map.append(any).expect("keys and values are appended in pairs");
    }
    Arc::new(map.finish())
}

/// Writes record batches of one schema as a Parquet file.
pub fn write_parquet(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Bytes> {
    let invalid = |e: parquet::errors::ParquetError| StageError::Invalid { what: "parquet file".to_owned(), reason: e.to_string() };
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(writer_properties())).map_err(invalid)?;
    for b in batches {
        w.write(b).map_err(invalid)?;
    }
    w.close().map_err(invalid)?;
    Ok(Bytes::from(out))
}

/// Encodes `changes` as one Parquet file of `schema`.
pub fn encode_file(schema: &TableSchema, changes: &[Change]) -> Result<Bytes> {
    let batch = encode_batch(schema, changes)?;
    write_parquet(batch.schema(), &[batch])
}

/// A column as a data file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileColumn {
    pub name: String,
    pub column_type: ColumnType,
    pub pg_type: String,
}

/// A decoded data file.
#[derive(Debug, Clone)]
pub struct DecodedFile {
    pub table: Arc<TableName>,
    pub schema_version: u32,
    pub columns: Vec<FileColumn>,
    pub changes: Vec<Change>,
}

/// The number of rows a Parquet file's footer declares.
pub fn parquet_row_count(path: &Path, bytes: Bytes) -> Result<u64> {
    let builder = open_builder(bytes).map_err(|reason| StageError::Corrupt { path: path.clone(), reason })?;
    u64::try_from(builder.metadata().file_metadata().num_rows())
        .map_err(|_| StageError::Corrupt { path: path.clone(), reason: "negative row count".to_owned() })
}

/// Decodes a data file written by [`encode_file`]; `path` names it in errors.
pub fn decode_file(path: &Path, bytes: Bytes) -> Result<DecodedFile> {
    let mut reader = FileReader::open(path, bytes, DECODE_BATCH_ROWS)?;
    let mut changes = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        changes.extend(chunk);
    }
    Ok(DecodedFile { table: reader.table, schema_version: reader.schema_version, columns: reader.columns, changes })
}

/// Rows decoded at a time by [`decode_file`].
const DECODE_BATCH_ROWS: usize = 8192;

/// What a chunk of a [`FileReader`] may take decoded, about: 20,000 changes
/// of a narrow table, a few thousand of 4 KiB rows.
pub const CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// Rows of the file `metadata` describes that take about `budget` bytes
/// decoded: its uncompressed column data per row (from the footer), plus
/// some 48 bytes a value for the decoded values themselves.
fn rows_within(metadata: &ParquetMetaData, budget: u64) -> usize {
    let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0).max(1);
    let data: u64 = metadata.row_groups().iter().map(|g| u64::try_from(g.total_byte_size()).unwrap_or(0)).sum();
    let columns = metadata.file_metadata().schema_descr().num_columns() as u64;
    let per_row = (data / rows).saturating_add(48 * columns).max(1);
    usize::try_from(budget / per_row).unwrap_or(usize::MAX)
}

/// A data file decoded a chunk of rows at a time, so that a reader of a
/// large file holds its compressed bytes and one chunk of changes, never
/// all its rows at once.
pub struct FileReader {
    path: Path,
    pub table: Arc<TableName>,
    pub schema_version: u32,
    pub columns: Vec<FileColumn>,
    reader: ParquetRecordBatchReader,
    /// Why the reader panicked, if it did: its state is not to be trusted
    /// after, so every later chunk fails the same way.
    failed: Option<String>,
}

impl FileReader {
    /// Opens a data file written by [`encode_file`], checking its metadata;
    /// chunks hold up to `chunk_rows` changes, and fewer when the file's rows
    /// are wide: about [`CHUNK_BYTES`] decoded at most. `path` names it in
    /// errors.
    pub fn open(path: &Path, bytes: Bytes, chunk_rows: usize) -> Result<FileReader> {
        let corrupt = |reason: String| StageError::Corrupt { path: path.clone(), reason };
        let builder = open_builder(bytes.clone()).map_err(corrupt)?;
        // The builder's schema carries the file's key-value metadata; the built
        // reader's (projected) schema does not.
        let schema = builder.schema().clone();
        guard::contained("checking column chunks", || check_chunks(&bytes, builder.metadata())).map_err(corrupt)?;
        let chunk_rows = chunk_rows.min(rows_within(builder.metadata(), CHUNK_BYTES)).max(1);
        let reader = guard::contained("opening", || builder.with_batch_size(chunk_rows).build().map_err(|e| format!("not a readable Parquet file: {e}")))
            .map_err(corrupt)?;
        // Columns are looked up by name: a second column of a name would be
        // read as the first, whatever its type.
        let mut names = std::collections::HashSet::new();
        if let Some(twice) = schema.fields().iter().find(|f| !names.insert(f.name())) {
            return Err(corrupt(format!("column {:?} appears twice", twice.name())));
        }
        let meta = schema.metadata();
        let table: TableName =
            meta.get(META_TABLE).and_then(|t| serde_json::from_str(t).ok()).ok_or_else(|| corrupt(format!("missing or invalid {META_TABLE} metadata")))?;
        table.validate().map_err(|e| corrupt(e.to_string()))?;
        let schema_version: u32 =
            meta.get(META_SCHEMA_VERSION).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt(format!("missing or invalid {META_SCHEMA_VERSION} metadata")))?;

        let columns: Vec<FileColumn> = schema
            .fields()
            .iter()
            .filter(|f| !f.name().starts_with(RESERVED_PREFIX))
            .map(|f| {
                let ty = f
                    .metadata()
                    .get(META_COLUMN_TYPE)
                    .ok_or_else(|| corrupt(format!("column {:?} has no {META_COLUMN_TYPE} metadata", f.name())))
                    .and_then(|t| ColumnType::from_json(t).map_err(|e| corrupt(format!("column {:?}: {e}", f.name()))))?;
                if !f.data_type().equals_datatype(&ty.arrow_type()) {
                    return Err(corrupt(format!("column {:?} is stored as {} but declared {}", f.name(), f.data_type(), ty.to_json())));
                }
                Ok(FileColumn { name: f.name().clone(), column_type: ty, pg_type: f.metadata().get(META_PG_TYPE).cloned().unwrap_or_default() })
            })
            .collect::<Result<_>>()?;
        Ok(FileReader { path: path.clone(), table: Arc::new(table), schema_version, columns, reader, failed: None })
    }

    /// The next chunk of changes in file order; `None` after the last.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<Change>>> {
        let corrupt = |reason: String| StageError::Corrupt { path: self.path.clone(), reason };
        if let Some(reason) = &self.failed {
            return Err(corrupt(reason.clone()));
        }
        let reader = &mut self.reader;
        let batch = match guard::contained("reading rows", || Ok(reader.next())) {
            Ok(None) => return Ok(None),
            Ok(Some(batch)) => batch.map_err(|e| corrupt(format!("reading rows: {e}")))?,
            Err(reason) => {
                self.failed = Some(reason.clone());
                return Err(corrupt(reason));
            }
        };
        let mut changes = Vec::with_capacity(batch.num_rows());
        decode_batch(&batch, &self.table, &self.columns, &mut changes).map_err(corrupt)?;
        Ok(Some(changes))
    }
}

/// The Parquet reader of a file's bytes, its footer walked first (see
/// [`guard`]) and a panic while parsing it contained.
fn open_builder(bytes: Bytes) -> std::result::Result<ParquetRecordBatchReaderBuilder<Bytes>, String> {
    guard::check_footer(&bytes)?;
    guard::contained("reading the footer", || ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| format!("not a readable Parquet file: {e}")))
}

/// Checks what the Parquet reader trusts before it reads rows, where it
/// would panic or allocate without bound: a negative column chunk range
/// (`ColumnChunkMetaData::byte_range` panics); a dictionary page's count of
/// values, by which it sizes the dictionary however few bytes the page
/// holds (a count of 2^31 allocates gigabytes); and a dictionary-encoded
/// page before any dictionary (it `expect`s one). So a chunk's pages are
/// read once more up to its dictionary, which is the first page whenever
/// there is one, so that only chunks without a dictionary are read whole.
/// (`get_next_page`, not `peek_next_page`, which panics on a malformed header.)
/// Every page header is walked before ([`guard::check_page_headers`]).
fn check_chunks(bytes: &Bytes, metadata: &ParquetMetaData) -> std::result::Result<(), String> {
    let file = Arc::new(bytes.clone());
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for c in group.columns() {
            let at = || format!("row group {g}: column chunk {}", c.column_path());
            if c.dictionary_page_offset().unwrap_or(c.data_page_offset()) < 0 || c.compressed_size() < 0 {
                return Err(format!("{} has a negative offset or length", at()));
            }
            guard::check_page_headers(bytes, c).map_err(|e| format!("{}: {e}", at()))?;
            let rows = usize::try_from(group.num_rows()).unwrap_or(0);
            let mut pages = SerializedPageReader::new(file.clone(), c, rows, None).map_err(|e| format!("{}: {e}", at()))?;
            while let Some(page) = pages.get_next_page().map_err(|e| format!("{}: {e}", at()))? {
                match page {
                    // A dictionary value takes at least one byte (four for a length-prefixed string).
                    Page::DictionaryPage { buf, num_values, .. } if num_values as usize > buf.len() => {
                        return Err(format!("{}: a dictionary page of {} bytes claims {num_values} values", at(), buf.len()));
                    }
                    Page::DictionaryPage { .. } => break,
                    p if matches!(p.encoding(), Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY) => {
                        return Err(format!("{}: a page is dictionary-encoded before any dictionary", at()));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn column<'a>(batch: &'a RecordBatch, name: &str, expected: &DataType) -> std::result::Result<&'a ArrayRef, String> {
    let col = batch.column_by_name(name).ok_or_else(|| format!("missing column {name}"))?;
    if !col.data_type().equals_datatype(expected) {
        return Err(format!("column {name} is {} instead of {expected}", col.data_type()));
    }
    Ok(col)
}

fn decode_batch(batch: &RecordBatch, table: &Arc<TableName>, columns: &[FileColumn], out: &mut Vec<Change>) -> std::result::Result<(), String> {
    let meta_schema = crate::schema::TableSchema {
        format: crate::FORMAT_VERSION,
        stream: String::new(),
        table: (**table).clone(),
        version: 1,
        relation_oid: None,
        replica_identity: crate::schema::ReplicaIdentity::Default,
        columns: Vec::new(),
        since_lsn: None,
        database: None,
        relfilenode: None,
        generated: Vec::new(),
    }
    .arrow_schema();
    let ty = |name: &str| meta_schema.field_with_name(name).map(|f| f.data_type().clone()).map_err(|e| e.to_string());
    let ops = column(batch, COL_OP, &ty(COL_OP)?)?.as_string::<i32>();
    let lsns = column(batch, COL_LSN, &ty(COL_LSN)?)?.as_primitive::<UInt64Type>();
    let ords = column(batch, COL_ORD, &ty(COL_ORD)?)?.as_primitive::<UInt32Type>();
    let xids = column(batch, COL_XID, &ty(COL_XID)?)?.as_primitive::<UInt32Type>();
    let ts = column(batch, COL_COMMIT_TS, &ty(COL_COMMIT_TS)?)?.as_primitive::<TimestampMicrosecondType>();
    let unchanged = column(batch, COL_UNCHANGED, &ty(COL_UNCHANGED)?)?.as_list::<i32>();
    for (name, arr) in [(COL_OP, ops.nulls()), (COL_LSN, lsns.nulls()), (COL_ORD, ords.nulls()), (COL_COMMIT_TS, ts.nulls())] {
        if arr.is_some_and(|n| n.null_count() > 0) {
            return Err(format!("column {name} has nulls"));
        }
    }
    let user: Vec<&ArrayRef> =
        columns.iter().map(|c| batch.column_by_name(&c.name).ok_or_else(|| format!("missing column {:?}", c.name))).collect::<std::result::Result<_, _>>()?;
    let before = if columns.is_empty() {
        None
    } else {
        let fields: Vec<Field> = columns.iter().map(|c| Field::new(&c.name, c.column_type.arrow_type(), true)).collect();
        Some(column(batch, COL_BEFORE, &DataType::Struct(fields.into()))?.as_struct())
    };
    // Files written before the raw maps existed have none.
    let raw_column = |name: &str| match batch.column_by_name(name) {
        None => Ok(None),
        Some(_) => column(batch, name, &raw_type()).map(|c| Some(c.as_map())),
    };
    let (raw, before_raw) = (raw_column(COL_RAW)?, raw_column(COL_BEFORE_RAW)?);

    for row in 0..batch.num_rows() {
        let op = Op::from_code(ops.value(row)).ok_or_else(|| format!("row {row}: unknown op {:?}", ops.value(row)))?;
        let lsn = Lsn(lsns.value(row));
        let ord = ords.value(row);
        let after = match op {
            Op::Read | Op::Insert | Op::Update => {
                let mut vals: Vec<Value> = columns.iter().zip(&user).map(|(c, arr)| read_value(&c.column_type, arr.as_ref(), row)).collect();
                if !unchanged.is_null(row) {
                    let names = unchanged.value(row);
                    let names = names.as_string::<i32>();
                    for n in names.iter() {
                        let n = n.ok_or_else(|| format!("row {row}: null name in {COL_UNCHANGED}"))?;
                        let i = columns.iter().position(|c| c.name == n).ok_or_else(|| format!("row {row}: {COL_UNCHANGED} names unknown column {n:?}"))?;
                        vals[i] = Value::Unchanged;
                    }
                }
                restore_raw(raw, COL_RAW, columns, row, &mut vals)?;
                Some(vals)
            }
            Op::Delete | Op::Truncate => None,
        };
        let before = match before {
            Some(b) if !b.is_null(row) => {
                let mut vals: Vec<Value> = columns.iter().enumerate().map(|(i, c)| read_value(&c.column_type, b.column(i).as_ref(), row)).collect();
                restore_raw(before_raw, COL_BEFORE_RAW, columns, row, &mut vals)?;
                Some(vals)
            }
            _ => None,
        };
        out.push(Change {
            op,
            table: table.clone(),
            lsn,
            ord,
            xid: (!xids.is_null(row)).then(|| xids.value(row)),
            commit_ts: Timestamp(ts.value(row)),
            after,
            before,
        });
    }
    Ok(())
}

/// Puts the raw texts of `row` (from the map column `name`) into `vals`,
/// where the typed cells must be NULL.
fn restore_raw(raw: Option<&MapArray>, name: &str, columns: &[FileColumn], row: usize, vals: &mut [Value]) -> std::result::Result<(), String> {
    let Some(raw) = raw.filter(|m| !m.is_null(row)) else { return Ok(()) };
    let entries = raw.value(row);
    let (keys, texts) = (entries.column(0).as_string::<i32>(), entries.column(1).as_string::<i32>());
    for (k, text) in keys.iter().zip(texts.iter()) {
        let (Some(k), Some(text)) = (k, text) else {
            return Err(format!("row {row}: null entry in {name}"));
        };
        let i = columns.iter().position(|c| c.name == k).ok_or_else(|| format!("row {row}: {name} names unknown column {k:?}"))?;
        if !matches!(vals[i], Value::Null) {
            return Err(format!("row {row}: {name} holds column {k:?}, whose typed cell is not NULL"));
        }
        vals[i] = Value::Raw(text.to_owned());
    }
    Ok(())
}

/// Reads one value. The caller has checked `arr`'s type against `ty`.
fn read_value(ty: &ColumnType, arr: &dyn Array, row: usize) -> Value {
    if arr.is_null(row) {
        return Value::Null;
    }
    match ty {
        ColumnType::Bool => Value::Bool(arr.as_boolean().value(row)),
        ColumnType::Int16 => Value::Int16(arr.as_primitive::<Int16Type>().value(row)),
        ColumnType::Int32 => Value::Int32(arr.as_primitive::<Int32Type>().value(row)),
        ColumnType::Int64 => Value::Int64(arr.as_primitive::<Int64Type>().value(row)),
        ColumnType::Float32 => Value::Float32(arr.as_primitive::<Float32Type>().value(row)),
        ColumnType::Float64 => Value::Float64(arr.as_primitive::<Float64Type>().value(row)),
        ColumnType::Decimal { .. } => Value::Decimal(arr.as_primitive::<Decimal128Type>().value(row)),
        ColumnType::Text => Value::Text(arr.as_string::<i32>().value(row).to_owned()),
        ColumnType::Json => Value::Json(arr.as_string::<i32>().value(row).to_owned()),
        ColumnType::Bytea => Value::Bytes(arr.as_binary::<i32>().value(row).to_vec()),
        ColumnType::Date => Value::Date(arr.as_primitive::<Date32Type>().value(row)),
        ColumnType::Time => Value::Time(arr.as_primitive::<Time64MicrosecondType>().value(row)),
        ColumnType::Timestamp => Value::Timestamp(arr.as_primitive::<TimestampMicrosecondType>().value(row)),
        ColumnType::TimestampTz => Value::TimestampTz(arr.as_primitive::<TimestampMicrosecondType>().value(row)),
        ColumnType::Interval => {
            let s = arr.as_struct();
            Value::Interval {
                months: s.column(0).as_primitive::<Int32Type>().value(row),
                days: s.column(1).as_primitive::<Int32Type>().value(row),
                micros: s.column(2).as_primitive::<Int64Type>().value(row),
            }
        }
        ColumnType::Uuid => {
            let b = arr.as_fixed_size_binary().value(row);
            let mut u = [0u8; 16];
            u.copy_from_slice(b);
            Value::Uuid(u)
        }
        ColumnType::Array { element } => {
            let items = arr.as_list::<i32>().value(row);
            Value::Array((0..items.len()).map(|i| read_value(element, items.as_ref(), i)).collect())
        }
    }
}

type BuildResult<T> = std::result::Result<T, (usize, String)>;

/// Collects one `Option<T>` per value, `None` for NULL/unchanged, an error
/// naming the row for a value of the wrong variant.
fn collect<'a, T>(ty: &ColumnType, vals: &[&'a Value], f: impl Fn(&'a Value) -> Option<T>) -> BuildResult<Vec<Option<T>>> {
    vals.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Null | Value::Unchanged | Value::Raw(_) => Ok(None),
            v => f(v).map(Some).ok_or_else(|| (i, mismatch(ty, v))),
        })
        .collect()
}

fn mismatch(ty: &ColumnType, v: &Value) -> String {
    let shown = format!("{v:?}");
    let shown: String = if shown.chars().count() > 80 { shown.chars().take(80).chain("…".chars()).collect() } else { shown };
    format!("value {shown} does not fit column type {}", ty.to_json())
}

fn nulls_of(vals: &[&Value]) -> Option<NullBuffer> {
    let valid: Vec<bool> = vals.iter().map(|v| !matches!(v, Value::Null | Value::Unchanged | Value::Raw(_))).collect();
    if valid.iter().all(|v| *v) { None } else { Some(NullBuffer::from(valid)) }
}

/// Builds the Arrow array of one column.
fn build_array(ty: &ColumnType, vals: &[&Value]) -> BuildResult<ArrayRef> {
    Ok(match ty {
        ColumnType::Bool => Arc::new(BooleanArray::from(collect(ty, vals, |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })?)),
        ColumnType::Int16 => Arc::new(Int16Array::from(collect(ty, vals, |v| match v {
            Value::Int16(x) => Some(*x),
            _ => None,
        })?)),
        ColumnType::Int32 => Arc::new(Int32Array::from(collect(ty, vals, |v| match v {
            Value::Int32(x) => Some(*x),
            _ => None,
        })?)),
        ColumnType::Int64 => Arc::new(Int64Array::from(collect(ty, vals, |v| match v {
            Value::Int64(x) => Some(*x),
            _ => None,
        })?)),
        ColumnType::Float32 => Arc::new(Float32Array::from(collect(ty, vals, |v| match v {
            Value::Float32(x) => Some(*x),
            _ => None,
        })?)),
        ColumnType::Float64 => Arc::new(Float64Array::from(collect(ty, vals, |v| match v {
            Value::Float64(x) => Some(*x),
            _ => None,
        })?)),
        ColumnType::Decimal { precision, scale } => {
            let xs = collect(ty, vals, |v| match v {
                Value::Decimal(x) if decimal_fits(*x, *precision) => Some(*x),
                _ => None,
            })?;
            Arc::new(Decimal128Array::from(xs).with_precision_and_scale(*precision, *scale).map_err(|e| (0, format!("decimal({precision},{scale}): {e}")))?)
        }
        ColumnType::Text => Arc::new(StringArray::from(collect(ty, vals, |v| match v {
            Value::Text(s) => Some(s.as_str()),
            _ => None,
        })?)),
        ColumnType::Json => Arc::new(StringArray::from(collect(ty, vals, |v| match v {
            Value::Json(s) => Some(s.as_str()),
            _ => None,
        })?)),
        ColumnType::Bytea => Arc::new(BinaryArray::from(collect(ty, vals, |v| match v {
            Value::Bytes(b) => Some(b.as_slice()),
            _ => None,
        })?)),
        ColumnType::Date => Arc::new(Date32Array::from(collect(ty, vals, |v| match v {
            Value::Date(d) => Some(*d),
            _ => None,
        })?)),
        ColumnType::Time => Arc::new(Time64MicrosecondArray::from(collect(ty, vals, |v| match v {
            Value::Time(t) => Some(*t),
            _ => None,
        })?)),
        ColumnType::Timestamp => Arc::new(TimestampMicrosecondArray::from(collect(ty, vals, |v| match v {
            Value::Timestamp(t) => Some(*t),
            _ => None,
        })?)),
        ColumnType::TimestampTz => Arc::new(
            TimestampMicrosecondArray::from(collect(ty, vals, |v| match v {
                Value::TimestampTz(t) => Some(*t),
                _ => None,
            })?)
            .with_timezone("UTC"),
        ),
        ColumnType::Interval => build_interval(ty, vals)?,
        ColumnType::Uuid => {
            let xs = collect(ty, vals, |v| match v {
                Value::Uuid(u) => Some(*u),
                _ => None,
            })?;
            Arc::new(FixedSizeBinaryArray::try_from_sparse_iter_with_size(xs.into_iter(), 16).map_err(|e| (0, format!("uuid: {e}")))?)
        }
        ColumnType::Array { element } => build_list(ty, element, vals)?,
    })
}

/// An interval column: a struct of months, days and microseconds.
fn build_interval(ty: &ColumnType, vals: &[&Value]) -> BuildResult<ArrayRef> {
    let xs = collect(ty, vals, |v| match v {
        Value::Interval { months, days, micros } => Some((*months, *days, *micros)),
        _ => None,
    })?;
    let months: Vec<i32> = xs.iter().map(|x| x.map_or(0, |x| x.0)).collect();
    let days: Vec<i32> = xs.iter().map(|x| x.map_or(0, |x| x.1)).collect();
    let micros: Vec<i64> = xs.iter().map(|x| x.map_or(0, |x| x.2)).collect();
    let children: Vec<ArrayRef> = vec![Arc::new(Int32Array::from(months)), Arc::new(Int32Array::from(days)), Arc::new(Int64Array::from(micros))];
    Ok(Arc::new(StructArray::try_new(interval_fields(), children, nulls_of(vals)).map_err(|e| (0, format!("interval: {e}")))?))
}

/// An array column: a list of `element` values; NULL, unchanged and raw
/// rows are null lists.
fn build_list(ty: &ColumnType, element: &ColumnType, vals: &[&Value]) -> BuildResult<ArrayRef> {
    let mut offsets = Vec::with_capacity(vals.len() + 1);
    offsets.push(0i32);
    let mut items: Vec<&Value> = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        match v {
            Value::Null | Value::Unchanged | Value::Raw(_) => {}
            Value::Array(xs) => {
                if let Some(bad) = xs.iter().find(|x| matches!(x, Value::Unchanged | Value::Raw(_) | Value::Array(_))) {
                    return Err((i, mismatch(ty, bad)));
                }
                items.extend(xs.iter());
            }
            other => return Err((i, mismatch(ty, other))),
        }
        let end = i32::try_from(items.len()).map_err(|_| (i, "array column exceeds 2^31 elements in one file".to_owned()))?;
        offsets.push(end);
    }
    // Element errors carry the element index; map it back to its row.
    let child = build_array(element, &items).map_err(|(item, reason)| {
        let row = offsets.partition_point(|&o| o as usize <= item).saturating_sub(1);
        (row, reason)
    })?;
    let field = Arc::new(Field::new("item", element.arrow_type(), true));
    Ok(Arc::new(ListArray::try_new(field, OffsetBuffer::new(ScalarBuffer::from(offsets)), child, nulls_of(vals)).map_err(|e| (0, format!("array: {e}")))?))
}

mod guard;
#[cfg(test)]
mod tests;
