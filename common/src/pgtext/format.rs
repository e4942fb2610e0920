//! Values back to PostgreSQL's text forms: the inverse of parsing.

use crate::change::Value;
use crate::types::ColumnType;

/// Renders a non-NULL value in the text form PostgreSQL's input functions
/// read back to the same value (under [`REQUIRED_SETTINGS`](super::REQUIRED_SETTINGS)): the inverse
/// of [`parse_text`](super::parse_text). `Null` and `Unchanged` have no text form: `None`.
pub fn format_text(ty: &ColumnType, value: &Value) -> Option<String> {
    use crate::change::{format_decimal, format_time, format_uuid};
    let scale = |ty: &ColumnType| match ty {
        ColumnType::Decimal { scale, .. } => *scale,
        _ => 0,
    };
    Some(match value {
        Value::Null | Value::Unchanged => return None,
        Value::Bool(b) => if *b { "t" } else { "f" }.to_owned(),
        Value::Int16(v) => v.to_string(),
        Value::Int32(v) => v.to_string(),
        Value::Int64(v) => v.to_string(),
        Value::Float32(v) => format_float(f64::from(*v), v.to_string()),
        Value::Float64(v) => format_float(*v, v.to_string()),
        Value::Decimal(v) => format_decimal(*v, scale(ty)),
        Value::Text(s) | Value::Json(s) | Value::Raw(s) => s.clone(),
        Value::Bytes(b) => {
            let mut out = String::with_capacity(2 + 2 * b.len());
            out.push_str("\\x");
            for byte in b {
                out.push_str(&format!("{byte:02x}"));
            }
            out
        }
        Value::Date(d) => pg_date(*d),
        Value::Time(t) => format_time(*t),
        Value::Timestamp(t) => pg_timestamp(*t, false),
        Value::TimestampTz(t) => pg_timestamp(*t, true),
        Value::Interval { months, days, micros } => {
            let sign = if *micros < 0 { "-" } else { "" };
            let abs = micros.unsigned_abs();
            format!("P{months}M{days}DT{sign}{}.{:06}S", abs / 1_000_000, abs % 1_000_000)
        }
        Value::Uuid(u) => format_uuid(u),
        Value::Array(items) => {
            let element = match ty {
                ColumnType::Array { element } => element.as_ref(),
                other => other,
            };
            let parts: Vec<String> = items
                .iter()
                .map(|v| match format_text(element, v) {
                    None => "NULL".to_owned(),
                    Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
    })
}

fn format_float(v: f64, shortest: String) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        // Rust's shortest round-trip form is valid PostgreSQL float input.
        shortest
    }
}

/// `YYYY-MM-DD`, with ` BC` for years before 1; `±infinity` as PostgreSQL spells them.
fn pg_ymd(days: i64) -> String {
    let (y, m, d) = crate::change::civil_from_days(days);
    if y <= 0 { format!("{:04}-{m:02}-{d:02} BC", 1 - y) } else { format!("{y:04}-{m:02}-{d:02}") }
}

fn pg_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".to_owned(),
        i32::MIN => "-infinity".to_owned(),
        d => pg_ymd(i64::from(d)),
    }
}

fn pg_timestamp(micros: i64, utc: bool) -> String {
    match micros {
        i64::MAX => return "infinity".to_owned(),
        i64::MIN => return "-infinity".to_owned(),
        _ => {}
    }
    let days = micros.div_euclid(86_400_000_000);
    let time = crate::change::format_time(micros.rem_euclid(86_400_000_000));
    let date = pg_ymd(days);
    let zone = if utc { "+00" } else { "" };
    match date.strip_suffix(" BC") {
        Some(d) => format!("{d} {time}{zone} BC"),
        None => format!("{date} {time}{zone}"),
    }
}
