//! PostgreSQL text output → typed values (`strata_common::pgtext`), what the
//! reader does with every column value pgoutput sends.
//!
//! Input: one byte choosing the column type (type family, array or not,
//! decimal precision and scale from the next two bytes), then the text.
//! Checks: no panic; a value that parses formats back to text that parses
//! to the same value (`format_text` is the inverse of `parse_text`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_common::pgtext::{format_text, parse_lossless, parse_text};
use strata_common::{ColumnType, Value};

const SCALARS: [ColumnType; 16] = [
    ColumnType::Bool,
    ColumnType::Int16,
    ColumnType::Int32,
    ColumnType::Int64,
    ColumnType::Float32,
    ColumnType::Float64,
    ColumnType::Decimal { precision: 1, scale: 0 },
    ColumnType::Text,
    ColumnType::Json,
    ColumnType::Bytea,
    ColumnType::Date,
    ColumnType::Time,
    ColumnType::Timestamp,
    ColumnType::TimestampTz,
    ColumnType::Interval,
    ColumnType::Uuid,
];

/// The column type the first bytes select, and the rest of the input.
/// Decimals take any precision and scale the type mapping produces
/// (1 ≤ precision ≤ 38, 0 ≤ scale ≤ precision).
fn column_type(data: &[u8]) -> Option<(ColumnType, &[u8])> {
    let (&selector, mut rest) = data.split_first()?;
    let mut ty = SCALARS[usize::from(selector & 0x0f)].clone();
    if let ColumnType::Decimal { .. } = ty {
        let (&p, tail) = rest.split_first()?;
        let (&s, tail) = tail.split_first()?;
        let precision = 1 + p % 38;
        ty = ColumnType::Decimal { precision, scale: (s % (precision + 1)) as i8 };
        rest = tail;
    }
    if selector & 0x10 != 0 {
        ty = ColumnType::Array { element: Box::new(ty) };
    }
    Some((ty, rest))
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((ty, text)) = column_type(data) else { return };
    // pgoutput sends text the reader has checked is UTF-8.
    let Ok(text) = std::str::from_utf8(text) else { return };
    let (lossless, _) = parse_lossless(&ty, text);
    let Ok(value) = parse_text(&ty, text) else {
        assert_eq!(lossless, Value::Raw(text.to_owned()));
        return;
    };
    let formatted = format_text(&ty, &value).expect("a parsed value has a text form");
    let back = parse_text(&ty, &formatted).unwrap_or_else(|e| panic!("{text:?} parsed to {value:?}, formatted as {formatted:?}, which does not parse: {e}"));
    assert!(same(&value, &back), "{text:?} parsed to {value:?}, formatted as {formatted:?}, parsed back to {back:?}");
});
