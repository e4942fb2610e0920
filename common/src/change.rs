//! The change model.
//!
//! A [`Change`] is one row-level event of one committed transaction: its kind
//! ([`Op`]), the table, where it sits in the log (`lsn` is the *commit* LSN of
//! its transaction and `ord` its position inside that transaction, so
//! `(lsn, ord)` is a unique, ordered identity), and the row images.
//!
//! Row images are `Vec<Value>` aligned with the columns of the table's schema
//! version. [`Value::Unchanged`] marks a TOASTed column that PostgreSQL did not
//! send because the UPDATE left it alone: it is *not* NULL, and a destination
//! must keep its current value.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;

use crate::ident::TableName;
use crate::lsn::Lsn;
use crate::time::Timestamp;
use crate::types::ColumnType;

/// What happened to a row. The single-letter codes are the `_strata_op`
/// column's values and match Debezium's `op` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `r`: a row read by the initial snapshot.
    Read,
    /// `c`: INSERT.
    Insert,
    /// `u`: UPDATE.
    Update,
    /// `d`: DELETE.
    Delete,
    /// `t`: TRUNCATE of the whole table.
    Truncate,
}

impl Op {
    pub fn code(self) -> char {
        match self {
            Op::Read => 'r',
            Op::Insert => 'c',
            Op::Update => 'u',
            Op::Delete => 'd',
            Op::Truncate => 't',
        }
    }

    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "r" => Op::Read,
            "c" => Op::Insert,
            "u" => Op::Update,
            "d" => Op::Delete,
            "t" => Op::Truncate,
            _ => return None,
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// One committed row change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub op: Op,
    pub table: Arc<TableName>,
    /// Commit LSN of the transaction (for snapshot rows: the consistent point).
    pub lsn: Lsn,
    /// Position of this change inside its transaction, from 0.
    pub ord: u32,
    /// Transaction id; `None` for snapshot rows.
    pub xid: Option<u32>,
    pub commit_ts: Timestamp,
    /// The new row (`r`, `c`, `u`); `None` for `d` and `t`.
    pub after: Option<Vec<Value>>,
    /// The old key (REPLICA IDENTITY DEFAULT / USING INDEX: key columns set,
    /// others NULL) or old row (FULL), when PostgreSQL sent one (`u`, `d`).
    pub before: Option<Vec<Value>>,
}

/// One column value. Which variant a column holds is fixed by its
/// [`ColumnType`]; `Null` and `Unchanged` fit every column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A TOASTed value the UPDATE did not touch, not sent by PostgreSQL.
    Unchanged,
    Bool(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    /// Unscaled decimal; the scale is the column's.
    Decimal(i128),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01; `i32::MAX` / `i32::MIN` are ±infinity.
    Date(i32),
    /// Microseconds since midnight (24:00:00 is 86 400 000 000).
    Time(i64),
    /// Microseconds since 1970-01-01 00:00, no zone; `i64::MAX` / `MIN` are ±infinity.
    Timestamp(i64),
    /// Microseconds since the Unix epoch, UTC; `i64::MAX` / `MIN` are ±infinity.
    TimestampTz(i64),
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
    Uuid([u8; 16]),
    /// JSON text exactly as PostgreSQL produced it.
    Json(String),
    /// One-dimensional array; elements may be `Null`.
    Array(Vec<Value>),
    /// The exact text form of a legal PostgreSQL value that its column's
    /// typed storage cannot hold: a timestamp past the microsecond range,
    /// a multi-dimensional array, `NaN` in a `numeric(p,s)`, or any value
    /// whose parsing failed for a reason nobody foresaw. The stage keeps
    /// the typed cell NULL and the text in `_strata_raw`; a destination
    /// hands the text back to PostgreSQL, which reads it as the original
    /// value. It fits every column type, but never stands inside an array
    /// (the whole array is raw instead).
    Raw(String),
}

/// Days between 1970-01-01 and 2000-01-01, to shift PostgreSQL dates.
pub const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// Marker a JSON rendering uses for [`Value::Unchanged`], distinct from
/// every rendering of a real value (which are never objects).
pub const UNCHANGED_JSON_KEY: &str = "__strata_unchanged";

impl Value {
    /// Whether this value may stand in a column of type `ty`.
    pub fn fits(&self, ty: &ColumnType) -> bool {
        match (self, ty) {
            (Value::Null | Value::Unchanged | Value::Raw(_), _) => true,
            (Value::Bool(_), ColumnType::Bool)
            | (Value::Int16(_), ColumnType::Int16)
            | (Value::Int32(_), ColumnType::Int32)
            | (Value::Int64(_), ColumnType::Int64)
            | (Value::Float32(_), ColumnType::Float32)
            | (Value::Float64(_), ColumnType::Float64)
            | (Value::Text(_), ColumnType::Text)
            | (Value::Bytes(_), ColumnType::Bytea)
            | (Value::Date(_), ColumnType::Date)
            | (Value::Time(_), ColumnType::Time)
            | (Value::Timestamp(_), ColumnType::Timestamp)
            | (Value::TimestampTz(_), ColumnType::TimestampTz)
            | (Value::Interval { .. }, ColumnType::Interval)
            | (Value::Uuid(_), ColumnType::Uuid)
            | (Value::Json(_), ColumnType::Json) => true,
            (Value::Decimal(v), ColumnType::Decimal { precision, .. }) => decimal_fits(*v, *precision),
            (Value::Array(items), ColumnType::Array { element }) => items.iter().all(|v| !matches!(v, Value::Unchanged | Value::Raw(_)) && v.fits(element)),
            _ => false,
        }
    }

    /// A JSON rendering that loses nothing: decimals as strings (exact),
    /// bytea as base64, times as ISO 8601, ±infinity and NaN as strings,
    /// JSON columns as their text, [`Value::Raw`] as its PostgreSQL text
    /// form, and [`Value::Unchanged`] as `{"__strata_unchanged": true}`.
    pub fn to_json(&self, ty: &ColumnType) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Unchanged => json!({ UNCHANGED_JSON_KEY: true }),
            Value::Bool(b) => json!(b),
            Value::Int16(v) => json!(v),
            Value::Int32(v) => json!(v),
            Value::Int64(v) => json!(v),
            Value::Float32(v) => float_json(f64::from(*v)),
            Value::Float64(v) => float_json(*v),
            Value::Decimal(v) => {
                let scale = match ty {
                    ColumnType::Decimal { scale, .. } => *scale,
                    ColumnType::Array { element } => match **element {
                        ColumnType::Decimal { scale, .. } => scale,
                        _ => 0,
                    },
                    _ => 0,
                };
                json!(format_decimal(*v, scale))
            }
            Value::Text(s) | Value::Json(s) | Value::Raw(s) => json!(s),
            Value::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
            Value::Date(d) => json!(format_date(*d)),
            Value::Time(t) => json!(format_time(*t)),
            Value::Timestamp(t) => json!(format_timestamp(*t, false)),
            Value::TimestampTz(t) => json!(format_timestamp(*t, true)),
            Value::Interval { months, days, micros } => json!(format_interval(*months, *days, *micros)),
            Value::Uuid(u) => json!(format_uuid(u)),
            Value::Array(items) => {
                let element = match ty {
                    ColumnType::Array { element } => element.as_ref(),
                    other => other,
                };
                serde_json::Value::Array(items.iter().map(|v| v.to_json(element)).collect())
            }
        }
    }
}

/// Whether an unscaled decimal has at most `precision` digits.
pub fn decimal_fits(v: i128, precision: u8) -> bool {
    let Some(limit) = 10i128.checked_pow(u32::from(precision)) else {
        return true;
    };
    v.unsigned_abs() < limit.unsigned_abs()
}

fn float_json(v: f64) -> serde_json::Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

/// `12345` with scale 2 → `"123.45"`; exact, any magnitude.
pub fn format_decimal(v: i128, scale: i8) -> String {
    let digits = v.unsigned_abs().to_string();
    let sign = if v < 0 { "-" } else { "" };
    if scale <= 0 {
        let zeros = "0".repeat(scale.unsigned_abs() as usize);
        return if v == 0 { "0".to_owned() } else { format!("{sign}{digits}{zeros}") };
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Proleptic Gregorian civil date from days since 1970-01-01, valid for every
/// `i32` (H. Hinnant's algorithm), so dates outside chrono's range still print.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn format_ymd(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    if y < 0 { format!("-{:04}-{m:02}-{d:02}", -y) } else { format!("{y:04}-{m:02}-{d:02}") }
}

/// ISO 8601 date; `infinity` / `-infinity` as PostgreSQL prints them.
pub fn format_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".to_owned(),
        i32::MIN => "-infinity".to_owned(),
        d => format_ymd(i64::from(d)),
    }
}

/// `HH:MM:SS.ffffff`.
pub fn format_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    format!("{:02}:{:02}:{:02}.{frac:06}", secs / 3600, (secs / 60) % 60, secs % 60)
}

/// ISO 8601 date-time with microseconds, `Z`-suffixed when `utc`.
pub fn format_timestamp(micros: i64, utc: bool) -> String {
    match micros {
        i64::MAX => return "infinity".to_owned(),
        i64::MIN => return "-infinity".to_owned(),
        _ => {}
    }
    let days = micros.div_euclid(86_400_000_000);
    let time = micros.rem_euclid(86_400_000_000);
    format!("{}T{}{}", format_ymd(days), format_time(time), if utc { "Z" } else { "" })
}

/// ISO 8601 duration keeping PostgreSQL's three fields apart:
/// `P{months}M{days}DT{seconds}S`, each part signed.
pub fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("P{months}M{days}DT{sign}{}.{:06}S", abs / 1_000_000, abs % 1_000_000)
}

/// Canonical lowercase hyphenated form.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_codes_round_trip() {
        for op in [Op::Read, Op::Insert, Op::Update, Op::Delete, Op::Truncate] {
            assert_eq!(Op::from_code(&op.code().to_string()), Some(op));
        }
        assert_eq!(Op::from_code("x"), None);
    }

    #[test]
    fn decimals_print_exactly() {
        assert_eq!(format_decimal(12345, 2), "123.45");
        assert_eq!(format_decimal(-5, 3), "-0.005");
        assert_eq!(format_decimal(0, 2), "0.00");
        assert_eq!(format_decimal(7, 0), "7");
        assert_eq!(format_decimal(i128::MIN, 0), "-170141183460469231731687303715884105728");
        assert!(decimal_fits(99_999, 5));
        assert!(!decimal_fits(100_000, 5));
        assert!(decimal_fits(-(10i128.pow(38) - 1), 38));
        assert!(!decimal_fits(i128::MIN, 38));
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(PG_EPOCH_OFFSET_DAYS), "2000-01-01");
        assert_eq!(format_date(19_000), "2022-01-08");
        assert_eq!(format_date(i32::MAX), "infinity");
        assert_eq!(format_date(-719_528), "0000-01-01");
        assert_eq!(format_time(86_400_000_000), "24:00:00.000000");
        assert_eq!(format_timestamp(-1, true), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format_timestamp(i64::MIN, false), "-infinity");
        assert_eq!(format_interval(14, -3, -1_500_000), "P14M-3DT-1.500000S");
    }

    #[test]
    fn json_rendering_marks_unchanged_and_specials() {
        assert_eq!(Value::Unchanged.to_json(&ColumnType::Text), json!({"__strata_unchanged": true}));
        assert_eq!(Value::Float64(f64::NAN).to_json(&ColumnType::Float64), json!("NaN"));
        assert_eq!(Value::Bytes(vec![0, 255]).to_json(&ColumnType::Bytea), json!("AP8="));
        let arr = ColumnType::Array { element: Box::new(ColumnType::Decimal { precision: 5, scale: 1 }) };
        assert_eq!(Value::Array(vec![Value::Decimal(15), Value::Null]).to_json(&arr), json!(["1.5", null]));
    }

    #[test]
    fn fits_checks_variant_and_precision() {
        let dec = ColumnType::Decimal { precision: 3, scale: 0 };
        assert!(Value::Decimal(999).fits(&dec));
        assert!(!Value::Decimal(1000).fits(&dec));
        assert!(!Value::Int32(1).fits(&ColumnType::Int64));
        let arr = ColumnType::Array { element: Box::new(ColumnType::Int32) };
        assert!(Value::Array(vec![Value::Int32(1), Value::Null]).fits(&arr));
        assert!(!Value::Array(vec![Value::Unchanged]).fits(&arr));
        // A raw value fits any column, but only as a whole value.
        assert!(Value::Raw("NaN".into()).fits(&dec));
        assert!(Value::Raw("{{1,2},{3,4}}".into()).fits(&arr));
        assert!(!Value::Array(vec![Value::Raw("1".into())]).fits(&arr));
    }
}
