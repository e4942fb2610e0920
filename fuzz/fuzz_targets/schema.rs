//! Table schema versions (`streams/{s}/schemas/{table}/{v}.json`):
//! `TableSchema::from_json` (decode and validate), then what the stage does
//! with a valid one: its Arrow schema, and a data file of it encoded and
//! decoded again.
//!
//! Checks: no panic; a schema that validates round-trips through JSON, and
//! a file of one all-NULL row written with it decodes (any schema the
//! reader may stage is one the codec can write and read).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use object_store::path::Path;
use strata_common::{Change, Lsn, Op, Timestamp, Value};
use strata_stager::codec::{decode_file, encode_file};
use strata_stager::schema::TableSchema;

fuzz_target!(|data: &[u8]| {
    let path = Path::from("streams/main/schemas/fuzz/1.json");
    let Ok(schema) = TableSchema::from_json(&path, data) else { return };
    let again = TableSchema::from_json(&path, &schema.to_json()).expect("a valid schema round-trips");
    assert_eq!(again, schema);
    assert!(schema.same_shape(&again));
    let _ = schema.arrow_schema();
    let row = vec![Value::Null; schema.columns.len()];
    let change = Change {
        op: Op::Insert,
        table: Arc::new(schema.table.clone()),
        lsn: Lsn(1),
        ord: 0,
        xid: Some(1),
        commit_ts: Timestamp(0),
        after: Some(row.clone()),
        before: Some(row),
    };
    let file = encode_file(&schema, &[change]).unwrap_or_else(|e| panic!("a valid schema cannot encode a row of NULLs: {e}"));
    let decoded = decode_file(&Path::from("fuzz.parquet"), file).unwrap_or_else(|e| panic!("a file of a valid schema does not decode: {e}"));
    assert_eq!(decoded.changes.len(), 1);
});
