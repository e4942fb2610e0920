use std::sync::Arc;

use proptest::prelude::*;
use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};

use super::*;
use crate::schema::{ColumnSchema, ReplicaIdentity, TableSchema};

/// Value equality where floats compare by bit pattern, so NaN round-trips count.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits(),
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

fn same_row(a: &Option<Vec<Value>>, b: &Option<Vec<Value>>) -> bool {
    match (a, b) {
        // A table without columns has no before-image column: an empty image reads back as none.
        (Some(a), None) | (None, Some(a)) if a.is_empty() => true,
        (None, None) => true,
        (Some(a), Some(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        _ => false,
    }
}

fn schema_of(types: &[ColumnType]) -> TableSchema {
    TableSchema {
        format: crate::FORMAT_VERSION,
        stream: "s".to_owned(),
        table: TableName::new("Schéma \"x\"", "ta.ble/1").unwrap(),
        version: 3,
        relation_oid: Some(16384),
        replica_identity: ReplicaIdentity::Full,
        columns: types
            .iter()
            .enumerate()
            .map(|(i, t)| ColumnSchema {
                name: format!("c{i} ünïcode"),
                pg_type: format!("{t:?}"),
                type_oid: 0,
                type_modifier: -1,
                column_type: t.clone(),
                key: i == 0,
                attnum: None,
                former_names: Vec::new(),
                missing_value: None,
            })
            .collect(),
        since_lsn: None,
        database: None,
        relfilenode: None,
        generated: Vec::new(),
    }
}

fn scalar_type() -> impl Strategy<Value = ColumnType> {
    prop_oneof![
        Just(ColumnType::Bool),
        Just(ColumnType::Int16),
        Just(ColumnType::Int32),
        Just(ColumnType::Int64),
        Just(ColumnType::Float32),
        Just(ColumnType::Float64),
        (1u8..=38).prop_flat_map(|p| (Just(p), 0..=p as i8)).prop_map(|(precision, scale)| ColumnType::Decimal { precision, scale }),
        Just(ColumnType::Text),
        Just(ColumnType::Bytea),
        Just(ColumnType::Date),
        Just(ColumnType::Time),
        Just(ColumnType::Timestamp),
        Just(ColumnType::TimestampTz),
        Just(ColumnType::Interval),
        Just(ColumnType::Uuid),
        Just(ColumnType::Json),
    ]
}

fn column_type() -> impl Strategy<Value = ColumnType> {
    prop_oneof![
        3 => scalar_type(),
        1 => scalar_type().prop_map(|e| ColumnType::Array { element: Box::new(e) }),
    ]
}

fn scalar_value(ty: &ColumnType) -> BoxedStrategy<Value> {
    match ty.clone() {
        ColumnType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ColumnType::Int16 => any::<i16>().prop_map(Value::Int16).boxed(),
        ColumnType::Int32 => any::<i32>().prop_map(Value::Int32).boxed(),
        ColumnType::Int64 => prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()].prop_map(Value::Int64).boxed(),
        ColumnType::Float32 => any::<f32>().prop_map(Value::Float32).boxed(),
        ColumnType::Float64 => {
            prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(-0.0), any::<f64>()].prop_map(Value::Float64).boxed()
        }
        ColumnType::Decimal { precision, .. } => {
            let max = 10i128.pow(u32::from(precision)) - 1;
            prop_oneof![Just(max), Just(-max), Just(0), -max..=max].prop_map(Value::Decimal).boxed()
        }
        ColumnType::Text => "\\PC{0,24}".prop_map(Value::Text).boxed(),
        ColumnType::Json => {
            prop_oneof![Just("{}".to_owned()), "\\PC{0,12}".prop_map(|s| serde_json::json!({"k": s}).to_string())].prop_map(Value::Json).boxed()
        }
        ColumnType::Bytea => prop::collection::vec(any::<u8>(), 0..32).prop_map(Value::Bytes).boxed(),
        ColumnType::Date => prop_oneof![Just(i32::MAX), Just(i32::MIN), any::<i32>()].prop_map(Value::Date).boxed(),
        ColumnType::Time => (0i64..=86_400_000_000).prop_map(Value::Time).boxed(),
        ColumnType::Timestamp => prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()].prop_map(Value::Timestamp).boxed(),
        ColumnType::TimestampTz => prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()].prop_map(Value::TimestampTz).boxed(),
        ColumnType::Interval => (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(months, days, micros)| Value::Interval { months, days, micros }).boxed(),
        ColumnType::Uuid => any::<[u8; 16]>().prop_map(Value::Uuid).boxed(),
        ColumnType::Array { element } => {
            prop::collection::vec(prop_oneof![1 => Just(Value::Null), 4 => scalar_value(&element)], 0..5).prop_map(Value::Array).boxed()
        }
    }
}

/// Any text, as the fallback for a value the typed column cannot hold
/// carries: empty, unicode, the map's own punctuation.
fn raw_value() -> BoxedStrategy<Value> {
    "\\PC{0,24}".prop_map(Value::Raw).boxed()
}

fn value(ty: &ColumnType, allow_unchanged: bool) -> BoxedStrategy<Value> {
    let unchanged_weight = if allow_unchanged { 1 } else { 0 };
    prop_oneof![1 => Just(Value::Null), unchanged_weight => Just(Value::Unchanged), 1 => raw_value(), 6 => scalar_value(ty)].boxed()
}

fn row(types: &[ColumnType], allow_unchanged: bool) -> BoxedStrategy<Vec<Value>> {
    types.iter().map(|t| value(t, allow_unchanged)).collect::<Vec<_>>().boxed()
}

fn change(types: Vec<ColumnType>, table: Arc<TableName>) -> impl Strategy<Value = Change> {
    let ops = prop_oneof![Just(Op::Read), Just(Op::Insert), Just(Op::Update), Just(Op::Delete), Just(Op::Truncate)];
    (ops, any::<u64>(), any::<u32>(), any::<Option<u32>>(), any::<i64>()).prop_flat_map(move |(op, lsn, ord, xid, ts)| {
        let after = match op {
            Op::Read | Op::Insert | Op::Update => row(&types, op == Op::Update).prop_map(Some).boxed(),
            _ => Just(None).boxed(),
        };
        let before = match op {
            Op::Update | Op::Delete => prop::option::of(row(&types, false)).boxed(),
            _ => Just(None).boxed(),
        };
        let table = table.clone();
        (after, before).prop_map(move |(after, before)| Change { op, table: table.clone(), lsn: Lsn(lsn), ord, xid, commit_ts: Timestamp(ts), after, before })
    })
}

fn table_and_changes() -> impl Strategy<Value = (TableSchema, Vec<Change>)> {
    prop::collection::vec(column_type(), 0..7).prop_flat_map(|types| {
        let schema = schema_of(&types);
        let table = Arc::new(schema.table.clone());
        (Just(schema), prop::collection::vec(change(types, table), 0..12))
    })
}

fn assert_round_trip(schema: &TableSchema, changes: &[Change]) {
    let path = object_store::path::Path::from("t/file.parquet");
    let bytes = encode_file(schema, changes).expect("encode");
    let decoded = decode_file(&path, bytes).expect("decode");
    assert_eq!(*decoded.table, schema.table);
    assert_eq!(decoded.schema_version, schema.version);
    let types: Vec<&ColumnType> = decoded.columns.iter().map(|c| &c.column_type).collect();
    assert_eq!(types, schema.columns.iter().map(|c| &c.column_type).collect::<Vec<_>>());
    assert_eq!(decoded.changes.len(), changes.len());
    for (a, b) in changes.iter().zip(&decoded.changes) {
        assert_eq!((a.op, a.lsn, a.ord, a.xid, a.commit_ts, &a.table), (b.op, b.lsn, b.ord, b.xid, b.commit_ts, &b.table));
        assert!(same_row(&a.after, &b.after), "after differs:\n{:?}\n{:?}", a.after, b.after);
        assert!(same_row(&a.before, &b.before), "before differs:\n{:?}\n{:?}", a.before, b.before);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_type_round_trips_through_parquet((schema, changes) in table_and_changes()) {
        assert_round_trip(&schema, &changes);
    }
}

fn all_types() -> Vec<ColumnType> {
    let scalars = vec![
        ColumnType::Bool,
        ColumnType::Int16,
        ColumnType::Int32,
        ColumnType::Int64,
        ColumnType::Float32,
        ColumnType::Float64,
        ColumnType::Decimal { precision: 38, scale: 10 },
        ColumnType::Text,
        ColumnType::Bytea,
        ColumnType::Date,
        ColumnType::Time,
        ColumnType::Timestamp,
        ColumnType::TimestampTz,
        ColumnType::Interval,
        ColumnType::Uuid,
        ColumnType::Json,
    ];
    let arrays: Vec<ColumnType> = scalars.iter().map(|e| ColumnType::Array { element: Box::new(e.clone()) }).collect();
    scalars.into_iter().chain(arrays).collect()
}

#[test]
fn extremes_nulls_and_unchanged_round_trip() {
    let types = all_types();
    let schema = schema_of(&types);
    let table = Arc::new(schema.table.clone());
    let extremes = vec![
        Value::Bool(true),
        Value::Int16(i16::MIN),
        Value::Int32(i32::MAX),
        Value::Int64(i64::MIN),
        Value::Float32(f32::NAN),
        Value::Float64(f64::NEG_INFINITY),
        Value::Decimal(-(10i128.pow(38) - 1)),
        Value::Text("żółw 🐢 \u{0} \"quoted\"".to_owned()),
        Value::Bytes(vec![]),
        Value::Date(i32::MIN),
        Value::Time(86_400_000_000),
        Value::Timestamp(i64::MAX),
        Value::TimestampTz(i64::MIN),
        Value::Interval { months: i32::MIN, days: i32::MAX, micros: -1 },
        Value::Uuid([0xff; 16]),
        Value::Json(r#"{"a": [1, 2.5e300, null]}"#.to_owned()),
    ];
    let mut after = extremes.clone();
    after.extend(extremes.iter().map(|v| Value::Array(vec![v.clone(), Value::Null])));
    let empty_arrays: Vec<Value> = types.iter().map(|t| if matches!(t, ColumnType::Array { .. }) { Value::Array(vec![]) } else { Value::Unchanged }).collect();
    let nulls = vec![Value::Null; types.len()];
    let mk = |op, ord, after: Option<Vec<Value>>, before: Option<Vec<Value>>| Change {
        op,
        table: table.clone(),
        lsn: Lsn(u64::MAX),
        ord,
        xid: Some(u32::MAX),
        commit_ts: Timestamp(0),
        after,
        before,
    };
    let changes = vec![
        mk(Op::Insert, 0, Some(after.clone()), None),
        mk(Op::Update, 1, Some(empty_arrays), Some(after.clone())),
        mk(Op::Update, 2, Some(nulls.clone()), Some(nulls)),
        mk(Op::Delete, 3, None, Some(after)),
        mk(Op::Truncate, 4, None, None),
    ];
    assert_round_trip(&schema, &changes);
}

#[test]
fn raw_values_read_back_exact_beside_null_typed_cells() {
    let ts = ColumnType::Timestamp;
    let ints = ColumnType::Array { element: Box::new(ColumnType::Int32) };
    let dec = ColumnType::Decimal { precision: 10, scale: 2 };
    let schema = schema_of(&[ColumnType::Int64, ts, ints, dec]);
    let table = Arc::new(schema.table.clone());
    let far = Value::Raw("294276-12-31 23:59:59.999999".to_owned());
    let grid = Value::Raw("[0:1][1:2]={{1,2},{3,4}}".to_owned());
    let nan = Value::Raw("NaN".to_owned());
    let change = |op, after: Option<Vec<Value>>, before: Option<Vec<Value>>| Change {
        op,
        table: table.clone(),
        lsn: Lsn(7),
        ord: 0,
        xid: Some(1),
        commit_ts: Timestamp(0),
        after,
        before,
    };
    let changes = vec![
        change(Op::Insert, Some(vec![Value::Int64(1), far.clone(), grid.clone(), nan.clone()]), None),
        change(
            Op::Update,
            Some(vec![Value::Int64(1), Value::Timestamp(0), Value::Unchanged, Value::Decimal(5)]),
            Some(vec![Value::Int64(1), far.clone(), grid.clone(), nan.clone()]),
        ),
        change(Op::Delete, None, Some(vec![Value::Int64(1), Value::Null, Value::Null, nan])),
    ];
    assert_round_trip(&schema, &changes);

    // The typed cells are NULL: a reader of the file sees no made-up value.
    let batch = encode_batch(&schema, &changes).unwrap();
    let typed = batch.column_by_name(&schema.columns[1].name).unwrap();
    assert!(typed.is_null(0));
    let raw = batch.column_by_name(COL_RAW).unwrap().as_map();
    assert!(!raw.is_null(0) && raw.is_null(1) && raw.is_null(2));
    assert_eq!(raw.value(0).len(), 3);
}

#[test]
fn unchanged_is_not_null() {
    let schema = schema_of(&[ColumnType::Int32, ColumnType::Text]);
    let table = Arc::new(schema.table.clone());
    let c = Change {
        op: Op::Update,
        table,
        lsn: Lsn(10),
        ord: 0,
        xid: Some(1),
        commit_ts: Timestamp(1),
        after: Some(vec![Value::Int32(1), Value::Unchanged]),
        before: None,
    };
    let path = object_store::path::Path::from("x");
    let decoded = decode_file(&path, encode_file(&schema, &[c]).unwrap()).unwrap();
    assert_eq!(decoded.changes[0].after.as_ref().unwrap()[1], Value::Unchanged);
}

#[test]
fn mismatches_are_errors_naming_the_column() {
    let schema = schema_of(&[ColumnType::Int32, ColumnType::Decimal { precision: 3, scale: 1 }]);
    let table = Arc::new(schema.table.clone());
    let base = Change {
        op: Op::Insert,
        table,
        lsn: Lsn(0x1_0000_0010),
        ord: 7,
        xid: None,
        commit_ts: Timestamp(1),
        after: Some(vec![Value::Text("x".to_owned()), Value::Decimal(1)]),
        before: None,
    };
    let err = encode_file(&schema, std::slice::from_ref(&base)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StageError::Encode { ref column, ord: 7, .. } if column == "c0 ünïcode"), "{msg}");
    assert!(msg.contains("1/10"), "{msg}");

    let mut too_precise = base.clone();
    too_precise.after = Some(vec![Value::Int32(1), Value::Decimal(1000)]);
    assert!(matches!(encode_file(&schema, &[too_precise]), Err(StageError::Encode { .. })));

    let mut short = base.clone();
    short.after = Some(vec![Value::Int32(1)]);
    assert!(matches!(encode_file(&schema, &[short]), Err(StageError::Encode { .. })));

    let mut delete_with_after = base.clone();
    delete_with_after.op = Op::Delete;
    delete_with_after.after = Some(vec![Value::Int32(1), Value::Null]);
    assert!(matches!(encode_file(&schema, &[delete_with_after]), Err(StageError::Encode { .. })));

    let mut nested = base;
    let arr = schema_of(&[ColumnType::Array { element: Box::new(ColumnType::Int32) }]);
    nested.table = Arc::new(arr.table.clone());
    nested.after = Some(vec![Value::Array(vec![Value::Int32(1), Value::Array(vec![])])]);
    assert!(matches!(encode_file(&arr, &[nested]), Err(StageError::Encode { .. })));
}

#[test]
fn garbage_is_corrupt_not_a_panic() {
    let path = object_store::path::Path::from("streams/s/tables/x/file.parquet");
    for bytes in [&b""[..], b"PAR1", b"PAR1\0\0\0\0PAR1", b"not parquet at all, just text"] {
        let err = decode_file(&path, Bytes::copy_from_slice(bytes)).unwrap_err();
        assert!(matches!(err, StageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("streams/s/tables/x/file.parquet"));
    }
    // A valid Parquet file that is not a strata file.
    let batch = RecordBatch::try_from_iter([("a", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]).unwrap();
    let bytes = write_parquet(batch.schema(), &[batch]).unwrap();
    assert!(matches!(decode_file(&path, bytes), Err(StageError::Corrupt { .. })));
}

#[test]
fn a_footer_with_a_negative_column_chunk_range_is_corrupt_not_a_panic() {
    // An input of the parquet fuzz target (fuzz/regressions/parquet/): a data
    // file whose footer gives a column chunk a negative offset, on which the
    // Parquet reader panicked while reading rows.
    let bytes = include_bytes!("../../../fuzz/regressions/parquet/negative-column-offset.parquet");
    let e = decode_file(&Path::from("t.parquet"), Bytes::from_static(bytes)).unwrap_err();
    assert!(matches!(&e, StageError::Corrupt { path, reason } if path.as_ref() == "t.parquet" && reason.contains("negative offset or length")), "{e}");
}

#[test]
fn a_file_with_a_column_name_twice_is_corrupt_not_a_panic() {
    // A seed made for the parquet fuzz target (fuzz/regressions/parquet/): a
    // captured data file with column `big` (text) renamed `id`, after the
    // int32 `id`. Columns are looked up by name, so the text column was read
    // as the int32 one, and the downcast panicked.
    let bytes = include_bytes!("../../../fuzz/regressions/parquet/duplicate-column-name.parquet");
    let e = decode_file(&Path::from("t.parquet"), Bytes::from_static(bytes)).unwrap_err();
    assert!(matches!(&e, StageError::Corrupt { reason, .. } if reason.contains("column \"id\" appears twice")), "{e}");
}

#[test]
fn a_dictionary_page_claiming_more_values_than_bytes_is_corrupt_not_an_allocation() {
    // An input of the parquet fuzz target (fuzz/regressions/parquet/): a
    // captured data file whose dictionary page header claims 665,845,759
    // int32 values; the Parquet reader allocated them all (2.6 GB) before
    // reading the page's few bytes.
    let bytes = include_bytes!("../../../fuzz/regressions/parquet/dictionary-of-665-million-values.parquet");
    let e = decode_file(&Path::from("t.parquet"), Bytes::from_static(bytes)).unwrap_err();
    assert!(matches!(&e, StageError::Corrupt { reason, .. } if reason.contains("dictionary page of")), "{e}");
}

#[test]
fn a_page_header_missing_its_type_header_is_corrupt_not_a_panic() {
    // Inputs of the parquet fuzz target (fuzz/regressions/parquet/): page
    // headers of type DATA_PAGE and DATA_PAGE_V2 without the header of that
    // type, on which `PageReader::peek_next_page` panicked when the
    // dictionary check used it.
    for bytes in [
        &include_bytes!("../../../fuzz/regressions/parquet/page-without-its-data-page-header.parquet")[..],
        &include_bytes!("../../../fuzz/regressions/parquet/page-without-its-v2-header.parquet")[..],
    ] {
        let e = decode_file(&Path::from("t.parquet"), Bytes::from_static(bytes)).unwrap_err();
        assert!(matches!(&e, StageError::Corrupt { .. }), "{e}");
    }
}

#[test]
fn a_dictionary_encoded_page_without_a_dictionary_is_corrupt_not_a_panic() {
    // An input of the parquet fuzz target (fuzz/regressions/parquet/): an
    // uncompressed captured file mutated so that a chunk has a
    // dictionary-encoded data page and no dictionary page, on which the
    // Parquet reader's `expect` panicked.
    let bytes = include_bytes!("../../../fuzz/regressions/parquet/dictionary-encoded-page-without-dictionary.parquet");
    let e = decode_file(&Path::from("t.parquet"), Bytes::from_static(bytes)).unwrap_err();
    assert!(matches!(&e, StageError::Corrupt { reason, .. } if reason.contains("dictionary-encoded before any dictionary")), "{e}");
}

#[test]
fn a_page_header_declaring_billions_of_booleans_is_refused_at_once() {
    // Found by the parquet fuzz target: a page header whose unknown field is a
    // list declaring up to 2^31 Booleans, which the Parquet reader skips
    // element by element without reading a byte, for seconds per header.
    let bytes = include_bytes!("../../../fuzz/regressions/parquet/thrift-list-of-booleans.parquet");
    let started = std::time::Instant::now();
    let e = decode_file(&Path::from("t.parquet"), Bytes::from_static(bytes)).unwrap_err();
    assert!(matches!(&e, StageError::Corrupt { .. }), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_millis(500), "refusing it took {:?}", started.elapsed());
}

#[test]
fn definition_levels_out_of_bounds_are_corrupt_not_a_panic() {
    // Found by the parquet fuzz target under ASan: a data page whose
    // definition levels run past their buffer, on which an assertion in the
    // Parquet reader's decoders panicked. The page header walk now refuses
    // it first (the reader skips a list of Booleans in an earlier header
    // without reading its bytes, so it read the later headers from the
    // wrong place); a panic that gets past the walk is contained
    // (`guard::tests::a_panic_inside_becomes_an_error`).
    let bytes = include_bytes!("../../../fuzz/regressions/parquet/definition-levels-out-of-bounds.parquet");
    let e = decode_file(&Path::from("t.parquet"), Bytes::from_static(bytes)).unwrap_err();
    assert!(matches!(&e, StageError::Corrupt { path, .. } if path.as_ref() == "t.parquet"), "{e}");
}

#[test]
fn definition_levels_past_the_null_bitmap_are_corrupt_not_a_panic() {
    // Found by the parquet fuzz target after the header walk: definition
    // levels that pass the walk but run past the null bitmap the reader
    // builds from them ("offset + len out of bounds" in arrow-buffer). The
    // panic is contained and the file is Corrupt; the fuzz target counts it
    // because libFuzzer's panic hook aborts on every panic, caught or not.
    // It was met reading the file two rows at a time, as a writer reads parts.
    let bytes = Bytes::from_static(include_bytes!("../../../fuzz/regressions/parquet/definition-levels-past-the-null-bitmap.parquet"));
    let path = Path::from("t.parquet");
    let e = decode_file(&path, bytes.clone()).unwrap_err();
    assert!(matches!(&e, StageError::Corrupt { path, .. } if path.as_ref() == "t.parquet"), "{e}");
    let mut reader = FileReader::open(&path, bytes, 2).unwrap();
    let e = loop {
        match reader.next_chunk() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a corrupt file read to its end"),
            Err(e) => break e,
        }
    };
    assert!(matches!(&e, StageError::Corrupt { path, .. } if path.as_ref() == "t.parquet"), "{e}");
}

#[test]
fn every_page_header_of_a_written_file_passes_the_walk() {
    // The walk must accept whatever the writer writes: several row groups
    // and pages, a dictionary, nulls, lists, a wide text column.
    let types = [ColumnType::Int64, ColumnType::Text, ColumnType::Array { element: Box::new(ColumnType::Int32) }, ColumnType::Bool];
    let schema = schema_of(&types);
    let table = Arc::new(schema.table.clone());
    let changes: Vec<Change> = (0..50_000i64)
        .map(|i| Change {
            op: Op::Insert,
            table: table.clone(),
            lsn: Lsn(i as u64),
            ord: 0,
            xid: Some(7),
            commit_ts: Timestamp(0),
            after: Some(vec![
                Value::Int64(i),
                if i % 7 == 0 { Value::Null } else { Value::Text(format!("{}-{}", i % 13, "x".repeat((i % 300) as usize))) },
                Value::Array(vec![Value::Int32(i as i32), Value::Null]),
                Value::Bool(i % 2 == 0),
            ]),
            before: None,
        })
        .collect();
    let bytes = encode_file(&schema, &changes).unwrap();
    let metadata = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap().metadata().clone();
    assert!(metadata.row_groups().iter().map(|g| g.columns().len()).sum::<usize>() > 4);
    guard::check_footer(&bytes).unwrap();
    for c in metadata.row_groups().iter().flat_map(|g| g.columns()) {
        guard::check_page_headers(&bytes, c).unwrap();
    }
    assert_eq!(decode_file(&Path::from("t.parquet"), bytes).unwrap().changes.len(), 50_000);
}

#[test]
fn chunks_of_wide_rows_hold_fewer_rows_than_asked() {
    let schema = schema_of(&[ColumnType::Int64, ColumnType::Text]);
    let table = Arc::new(schema.table.clone());
    let file = |rows: i64, width: usize| {
        let changes: Vec<Change> = (0..rows)
            .map(|i| Change {
                op: Op::Insert,
                table: table.clone(),
                lsn: Lsn(i as u64),
                ord: 0,
                xid: None,
                commit_ts: Timestamp(0),
                after: Some(vec![Value::Int64(i), Value::Text(format!("{i:0width$}"))]),
                before: None,
            })
            .collect();
        encode_file(&schema, &changes).unwrap()
    };
    // 8 KiB a row (compressing to almost nothing): 16 MiB is under 2,000 rows.
    let mut wide = FileReader::open(&Path::from("w.parquet"), file(4_000, 8192), 20_000).unwrap();
    let first = wide.next_chunk().unwrap().unwrap().len();
    assert!((1_000..2_000).contains(&first), "a chunk of {first} rows of 8 KiB");
    // Narrow rows: as many as asked.
    let mut narrow = FileReader::open(&Path::from("n.parquet"), file(30_000, 8), 20_000).unwrap();
    assert_eq!(narrow.next_chunk().unwrap().unwrap().len(), 20_000);
}
