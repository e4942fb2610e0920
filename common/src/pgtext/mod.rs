//! Parsing PostgreSQL's text output into [`Value`]s.
//!
//! pgoutput sends column values in their type's text output form. The reader
//! parses each into the [`Value`] its column's [`ColumnType`] calls for. The
//! forms depend on session settings, which the reader pins on its replication
//! connection ([`REQUIRED_SETTINGS`]): ISO dates, ISO 8601 intervals, UTC,
//! hex bytea and round-trip float digits. A value that does not parse is an
//! error naming what was expected — never a silent NULL.
//!
//! The reader does not stop on such an error: PostgreSQL accepted the value,
//! so it is legal, and only our typed storage cannot hold it (a timestamp
//! past 294247 AD, which overflows microseconds since 1970; a
//! multi-dimensional array; `NaN` in a `numeric(p,s)`). [`parse_lossless`]
//! keeps its exact text as [`Value::Raw`] instead, and says why.

use crate::change::{Value, decimal_fits};
use crate::types::ColumnType;

mod format;

pub use format::format_text;

/// Session settings under which [`parse_text`] understands every output form.
pub const REQUIRED_SETTINGS: &[(&str, &str)] =
    &[("DateStyle", "ISO, YMD"), ("IntervalStyle", "iso_8601"), ("TimeZone", "UTC"), ("bytea_output", "hex"), ("extra_float_digits", "3")];

/// The `SET` statements of [`REQUIRED_SETTINGS`], each with its setting's
/// name (for errors), values quoted: what every session whose text output
/// strata reads, or whose input it writes, runs first.
pub fn setting_statements() -> impl Iterator<Item = (&'static str, String)> {
    REQUIRED_SETTINGS.iter().map(|(name, value)| (*name, format!("SET {name} = '{}'", value.replace('\'', "''"))))
}

/// A value whose text does not match its column type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {text:?} as {expected}: {reason}")]
pub struct TextError {
    pub text: String,
    pub expected: &'static str,
    pub reason: String,
}

fn err<T>(text: &str, expected: &'static str, reason: impl Into<String>) -> Result<T, TextError> {
    let shown: String = if text.chars().count() > 100 { text.chars().take(100).chain("…".chars()).collect() } else { text.to_owned() };
    Err(TextError { text: shown, expected, reason: reason.into() })
}

/// Parses one non-NULL value like [`parse_text`], but never fails: a value
/// the typed column cannot hold comes back as [`Value::Raw`] with its exact
/// text, together with the reason, for the caller to count and report.
pub fn parse_lossless(ty: &ColumnType, text: &str) -> (Value, Option<TextError>) {
    match parse_text(ty, text) {
        Ok(v) => (v, None),
        Err(e) => (Value::Raw(text.to_owned()), Some(e)),
    }
}

/// Parses one non-NULL value of type `ty` from its PostgreSQL text form.
pub fn parse_text(ty: &ColumnType, text: &str) -> Result<Value, TextError> {
    match ty {
        ColumnType::Bool => match text {
            "t" | "true" => Ok(Value::Bool(true)),
            "f" | "false" => Ok(Value::Bool(false)),
            _ => err(text, "boolean", "expected t or f"),
        },
        ColumnType::Int16 => text.parse().map(Value::Int16).or_else(|e| err(text, "smallint", e.to_string())),
        ColumnType::Int32 => text.parse().map(Value::Int32).or_else(|e| err(text, "integer", e.to_string())),
        ColumnType::Int64 => text.parse().map(Value::Int64).or_else(|e| err(text, "bigint", e.to_string())),
        ColumnType::Float32 => parse_float(text).map(|f| Value::Float32(f as f32)).or_else(|r| err(text, "real", r)),
        ColumnType::Float64 => parse_float(text).map(Value::Float64).or_else(|r| err(text, "double precision", r)),
        ColumnType::Decimal { precision, scale } => parse_decimal(text, *precision, *scale).map(Value::Decimal),
        ColumnType::Text => Ok(Value::Text(text.to_owned())),
        ColumnType::Json => Ok(Value::Json(text.to_owned())),
        ColumnType::Bytea => parse_bytea(text).map(Value::Bytes),
        ColumnType::Date => parse_date(text).map(Value::Date),
        ColumnType::Time => parse_time(text).map(Value::Time).or_else(|r| err(text, "time", r)),
        ColumnType::Timestamp => parse_timestamp(text, false).map(Value::Timestamp),
        ColumnType::TimestampTz => parse_timestamp(text, true).map(Value::TimestampTz),
        ColumnType::Interval => parse_interval(text),
        ColumnType::Uuid => parse_uuid(text).map(Value::Uuid),
        ColumnType::Array { element } => parse_array(element, text),
    }
}

fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ if text.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) && !text.is_empty() => {
            text.parse().map_err(|e: std::num::ParseFloatError| e.to_string())
        }
        _ => Err("not a number".to_owned()),
    }
}

/// `-123.45` with scale 3 → `-123450`; NaN and infinities do not fit a decimal column.
fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, TextError> {
    const WHAT: &str = "numeric";
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return err(text, WHAT, format!("numeric({precision},{scale}) columns are staged as decimals, which have no {text}"));
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return err(text, WHAT, "not a decimal number");
    }
    let scale = scale.max(0) as usize;
    // Digits past the scale must be zeros (PostgreSQL rounds to the scale).
    let (kept, extra) = frac.split_at(frac.len().min(scale));
    if extra.bytes().any(|b| b != b'0') {
        return err(text, WHAT, format!("has more than {scale} decimal places"));
    }
    let mut v: i128 = 0;
    for b in int.bytes().chain(kept.bytes()).chain(std::iter::repeat_n(b'0', scale - kept.len())) {
        v = match v.checked_mul(10).and_then(|v| v.checked_add(i128::from(b - b'0'))) {
            Some(v) => v,
            None => return err(text, WHAT, "too many digits"),
        };
    }
    let v = if negative { -v } else { v };
    if !decimal_fits(v, precision) {
        return err(text, WHAT, format!("more than {precision} digits"));
    }
    Ok(v)
}

fn parse_bytea(text: &str) -> Result<Vec<u8>, TextError> {
    let Some(hex) = text.strip_prefix("\\x") else {
        return err(text, "bytea", "expected hex format (\\x…); the connection sets bytea_output = hex");
    };
    if hex.len() % 2 != 0 {
        return err(text, "bytea", "odd number of hex digits");
    }
    // Also keeps the pairs below on character boundaries.
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return err(text, "bytea", "invalid hex digit");
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .or_else(|_| err(text, "bytea", "invalid hex digit"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// `YYYY-MM-DD` (years may have more than 4 digits) → days since 1970,
/// with a trailing ` BC` already removed by the caller into `bc`.
fn parse_ymd(s: &str, bc: bool) -> Result<i64, String> {
    let mut parts = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected YYYY-MM-DD".to_owned());
    };
    let num = |p: &str| if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) { p.parse::<i64>().ok() } else { None };
    let (Some(y), Some(m), Some(d)) = (num(y), num(m), num(d)) else {
        return Err("expected YYYY-MM-DD".to_owned());
    };
    // PostgreSQL's dates end in 5874897 AD; a longer year would overflow
    // the day count below.
    if y > MAX_YEAR {
        return Err(format!("year {y} out of range"));
    }
    // Year n BC is astronomical year 1 - n.
    let year = if bc { 1 - y } else { y };
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => return Err(format!("month {m} out of range")),
    };
    if d < 1 || d > days_in_month {
        return Err(format!("day {d} out of range"));
    }
    Ok(days_from_civil(year, m as u32, d as u32))
}

/// Past PostgreSQL's last date (5874897 AD) and its first (4713 BC).
const MAX_YEAR: i64 = 9_999_999;

fn strip_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    }
}

fn parse_date(text: &str) -> Result<i32, TextError> {
    match text {
        "infinity" => return Ok(i32::MAX),
        "-infinity" => return Ok(i32::MIN),
        _ => {}
    }
    let (s, bc) = strip_bc(text);
    let days = parse_ymd(s, bc).or_else(|r| err(text, "date", r))?;
    i32::try_from(days).or_else(|_| err(text, "date", "out of range"))
}

/// `HH:MM:SS[.ffffff]` → microseconds since midnight.
fn parse_time(s: &str) -> Result<i64, String> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let (Some(h), Some(m), Some(sec), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("expected HH:MM:SS".to_owned());
    };
    let two = |p: &str| if p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) { p.parse::<i64>().ok() } else { None };
    let (Some(h), Some(m), Some(sec)) = (two(h), two(m), two(sec)) else {
        return Err("expected HH:MM:SS".to_owned());
    };
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err("fraction of a second must be up to 6 digits".to_owned());
    }
    let micros: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| "bad fraction".to_owned())? };
    let total = ((h * 60 + m) * 60 + sec) * 1_000_000 + micros;
    if h > 24 || m > 59 || sec > 60 || total > 86_400_000_000 {
        return Err("time of day out of range".to_owned());
    }
    Ok(total)
}

/// `±HH[:MM[:SS]]` → seconds east of UTC.
fn parse_offset(s: &str) -> Result<i64, String> {
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err("expected a UTC offset like +00".to_owned()),
    };
    let mut secs = 0i64;
    for (i, part) in rest.split(':').enumerate() {
        if i > 2 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err("expected a UTC offset like +00, +05:30 or -03:00:00".to_owned());
        }
        let n: i64 = part.parse().map_err(|_| "bad offset".to_owned())?;
        secs += n * [3600, 60, 1][i];
    }
    Ok(sign * secs)
}

fn parse_timestamp(text: &str, with_zone: bool) -> Result<i64, TextError> {
    let what = if with_zone { "timestamp with time zone" } else { "timestamp" };
    match text {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let (s, bc) = strip_bc(text);
    let Some((date, time)) = s.split_once(' ') else {
        return err(text, what, "expected YYYY-MM-DD HH:MM:SS");
    };
    let days = parse_ymd(date, bc).or_else(|r| err(text, what, r))?;
    let (time, offset) = if with_zone {
        let at = time.rfind(['+', '-']).ok_or(()).or_else(|_| err(text, what, "missing UTC offset"))?;
        let offset = parse_offset(&time[at..]).or_else(|r| err(text, what, r))?;
        (&time[..at], offset)
    } else {
        (time, 0)
    };
    let micros = parse_time(time).or_else(|r| err(text, what, r))?;
    days.checked_mul(86_400_000_000)
        .and_then(|d| d.checked_add(micros))
        .and_then(|t| t.checked_sub(offset * 1_000_000))
        .map_or_else(|| err(text, what, "out of range"), Ok)
}

/// ISO 8601 as PostgreSQL's `IntervalStyle = iso_8601` prints it:
/// `P1Y2M3DT4H5M6.5S`, each number signed, `PT0S` for zero.
fn parse_interval(text: &str) -> Result<Value, TextError> {
    const WHAT: &str = "interval";
    let Some(rest) = text.strip_prefix('P') else {
        return err(text, WHAT, "expected ISO 8601 (P…); the connection sets IntervalStyle = iso_8601");
    };
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i128);
    let mut in_time = false;
    let mut num = String::new();
    for c in rest.chars() {
        match c {
            'T' if num.is_empty() && !in_time => in_time = true,
            '0'..='9' | '-' | '+' | '.' => num.push(c),
            unit => {
                let bad = || err::<Value>(text, WHAT, format!("bad number before {unit}"));
                let out_of_range = || err::<Value>(text, WHAT, format!("{num}{unit} is out of range"));
                match (in_time, unit) {
                    (false, 'Y' | 'M' | 'W' | 'D') => {
                        let n: i64 = match num.parse() {
                            Ok(n) => n,
                            Err(_) => return bad(),
                        };
                        let (sum, factor) = match unit {
                            'Y' => (&mut months, 12),
                            'M' => (&mut months, 1),
                            'W' => (&mut days, 7),
                            _ => (&mut days, 1),
                        };
                        match n.checked_mul(factor).and_then(|n| sum.checked_add(n)) {
                            Some(v) => *sum = v,
                            None => return out_of_range(),
                        }
                    }
                    (true, 'H' | 'M') => {
                        let n: i128 = match num.parse() {
                            Ok(n) => n,
                            Err(_) => return bad(),
                        };
                        match n.checked_mul(if unit == 'H' { 3_600_000_000 } else { 60_000_000 }).and_then(|n| micros.checked_add(n)) {
                            Some(v) => micros = v,
                            None => return out_of_range(),
                        }
                    }
                    (true, 'S') => {
                        let (negative, digits) = match num.strip_prefix('-') {
                            Some(d) => (true, d),
                            None => (false, num.as_str()),
                        };
                        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
                        if frac.len() > 6 || whole.is_empty() || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
                            return bad();
                        }
                        let Ok(whole) = whole.parse::<i128>() else { return bad() };
                        let frac: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().unwrap_or(0) };
                        match whole.checked_mul(1_000_000).and_then(|w| w.checked_add(frac)).and_then(|v| micros.checked_add(if negative { -v } else { v })) {
                            Some(v) => micros = v,
                            None => return out_of_range(),
                        }
                    }
                    _ => return err(text, WHAT, format!("unexpected {unit:?}")),
                }
                num.clear();
            }
        }
    }
    if !num.is_empty() {
        return err(text, WHAT, "number without a unit at the end");
    }
    match (i32::try_from(months), i32::try_from(days), i64::try_from(micros)) {
        (Ok(months), Ok(days), Ok(micros)) => Ok(Value::Interval { months, days, micros }),
        _ => err(text, WHAT, "out of range"),
    }
}

fn parse_uuid(text: &str) -> Result<[u8; 16], TextError> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    // All hex digits also keeps the pairs below on character boundaries.
    if hex.len() != 32 || text.len() != 36 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return err(text, "uuid", "expected 8-4-4-4-12 hex digits");
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).or_else(|_| err(text, "uuid", "invalid hex digit"))?;
    }
    Ok(out)
}

/// A one-dimensional array literal: `{1,NULL,"a \"b\""}`, optionally with
/// explicit bounds (`[0:1]={…}`), which are dropped: the list keeps order.
fn parse_array(element: &ColumnType, text: &str) -> Result<Value, TextError> {
    const WHAT: &str = "array";
    let body = match text.strip_prefix('[') {
        Some(_) => match text.split_once('=') {
            Some((dims, body)) if dims.matches('[').count() == 1 => body,
            Some(_) => return err(text, WHAT, "multi-dimensional arrays are not supported; they stage as text only when the column is declared as text"),
            None => return err(text, WHAT, "bounds without '='"),
        },
        None => text,
    };
    let Some(inner) = body.strip_prefix('{').and_then(|b| b.strip_suffix('}')) else {
        return err(text, WHAT, "expected {…}");
    };
    let mut items = Vec::new();
    if inner.is_empty() {
        return Ok(Value::Array(items));
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let (raw, quoted) = match chars.peek() {
            Some('"') => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(c) => s.push(c),
                            None => return err(text, WHAT, "unterminated escape"),
                        },
                        Some('"') => break,
                        Some(c) => s.push(c),
                        None => return err(text, WHAT, "unterminated quoted element"),
                    }
                }
                (s, true)
            }
            Some('{') => return err(text, WHAT, "multi-dimensional arrays are not supported"),
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    if c == '"' || c == '{' || c == '}' {
                        return err(text, WHAT, format!("unexpected {c:?} in an unquoted element"));
                    }
                    s.push(c);
                    chars.next();
                }
                (s.trim_end().to_owned(), false)
            }
        };
        let value = if !quoted && raw.eq_ignore_ascii_case("NULL") {
            Value::Null
        } else {
            parse_text(element, &raw).map_err(|e| TextError { text: text.to_owned(), expected: WHAT, reason: format!("element {}: {e}", items.len()) })?
        };
        items.push(value);
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => return err(text, WHAT, format!("unexpected {c:?} after element {}", items.len() - 1)),
        }
    }
    Ok(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{PG_EPOCH_OFFSET_DAYS, format_date, format_timestamp};

    fn p(ty: ColumnType, s: &str) -> Value {
        parse_text(&ty, s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn scalars() {
        assert_eq!(p(ColumnType::Bool, "t"), Value::Bool(true));
        assert_eq!(p(ColumnType::Int16, "-32768"), Value::Int16(i16::MIN));
        assert_eq!(p(ColumnType::Int64, "9223372036854775807"), Value::Int64(i64::MAX));
        assert!(parse_text(&ColumnType::Int16, "32768").is_err());
        assert_eq!(p(ColumnType::Float64, "-Infinity"), Value::Float64(f64::NEG_INFINITY));
        assert_eq!(p(ColumnType::Float64, "1.7976931348623157e+308"), Value::Float64(f64::MAX));
        assert!(matches!(p(ColumnType::Float32, "NaN"), Value::Float32(f) if f.is_nan()));
        assert!(parse_text(&ColumnType::Float64, "inf").is_err());
        assert_eq!(p(ColumnType::Bytea, "\\x00ff10"), Value::Bytes(vec![0, 255, 16]));
        assert!(parse_text(&ColumnType::Bytea, "\\000").is_err());
        assert_eq!(
            p(ColumnType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Value::Uuid([0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11])
        );
    }

    #[test]
    fn decimals() {
        let d = |p: u8, s: i8| ColumnType::Decimal { precision: p, scale: s };
        assert_eq!(p(d(10, 2), "-123.45"), Value::Decimal(-12345));
        assert_eq!(p(d(10, 2), "7"), Value::Decimal(700));
        assert_eq!(p(d(10, 2), "0.50"), Value::Decimal(50));
        assert_eq!(p(d(38, 0), "99999999999999999999999999999999999999"), Value::Decimal(10i128.pow(38) - 1));
        assert!(parse_text(&d(5, 2), "1000.00").is_err());
        assert!(parse_text(&d(5, 2), "1.234").is_err());
        let nan = parse_text(&d(5, 2), "NaN").unwrap_err();
        assert!(nan.reason.contains("no NaN"), "{nan}");
        assert!(parse_text(&d(5, 2), "1e5").is_err());
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(p(ColumnType::Date, "1970-01-01"), Value::Date(0));
        assert_eq!(p(ColumnType::Date, "2000-02-29"), Value::Date(PG_EPOCH_OFFSET_DAYS + 59));
        assert_eq!(p(ColumnType::Date, "infinity"), Value::Date(i32::MAX));
        assert!(parse_text(&ColumnType::Date, "2001-02-29").is_err());
        // 4713 BC is PostgreSQL's earliest date; 5874897 AD its latest.
        let Value::Date(early) = p(ColumnType::Date, "4713-01-01 BC") else { unreachable!() };
        assert_eq!(format_date(early), "-4712-01-01");
        let Value::Date(late) = p(ColumnType::Date, "5874897-12-31") else { unreachable!() };
        assert_eq!(format_date(late), "5874897-12-31");
        assert_eq!(p(ColumnType::Time, "24:00:00"), Value::Time(86_400_000_000));
        assert_eq!(p(ColumnType::Time, "13:45:06.5"), Value::Time(49_506_500_000));
        assert_eq!(p(ColumnType::Timestamp, "1970-01-01 00:00:01.000001"), Value::Timestamp(1_000_001));
        assert_eq!(p(ColumnType::TimestampTz, "1970-01-01 01:00:00+01"), Value::TimestampTz(0));
        assert_eq!(p(ColumnType::TimestampTz, "1969-12-31 18:30:00-05:30"), Value::TimestampTz(0));
        assert_eq!(p(ColumnType::TimestampTz, "-infinity"), Value::TimestampTz(i64::MIN));
        let Value::TimestampTz(bc) = p(ColumnType::TimestampTz, "0044-03-15 12:00:00+00 BC") else { unreachable!() };
        assert_eq!(format_timestamp(bc, true), "-0043-03-15T12:00:00.000000Z");
        assert!(parse_text(&ColumnType::TimestampTz, "2020-01-01 00:00:00").is_err());
        assert!(parse_text(&ColumnType::Time, "25:00:00").is_err());
    }

    #[test]
    fn intervals() {
        let iv = |months, days, micros| Value::Interval { months, days, micros };
        assert_eq!(p(ColumnType::Interval, "PT0S"), iv(0, 0, 0));
        assert_eq!(p(ColumnType::Interval, "P1Y2M3DT4H5M6.5S"), iv(14, 3, 14_706_500_000));
        assert_eq!(p(ColumnType::Interval, "P-1Y-2M3DT-4H-5M-6.000001S"), iv(-14, 3, -14_706_000_001));
        assert_eq!(p(ColumnType::Interval, "P2W"), iv(0, 14, 0));
        assert!(parse_text(&ColumnType::Interval, "1 day").is_err());
        assert!(parse_text(&ColumnType::Interval, "P1").is_err());
    }

    use proptest::prelude::*;

    fn value_for(ty: &ColumnType) -> BoxedStrategy<Value> {
        match ty.clone() {
            ColumnType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            ColumnType::Int16 => any::<i16>().prop_map(Value::Int16).boxed(),
            ColumnType::Int32 => any::<i32>().prop_map(Value::Int32).boxed(),
            ColumnType::Int64 => any::<i64>().prop_map(Value::Int64).boxed(),
            ColumnType::Float32 => any::<f32>().prop_map(Value::Float32).boxed(),
            ColumnType::Float64 => any::<f64>().prop_map(Value::Float64).boxed(),
            ColumnType::Decimal { precision, .. } => {
                let max = 10i128.pow(u32::from(precision)) - 1;
                (-max..=max).prop_map(Value::Decimal).boxed()
            }
            ColumnType::Text => "\\PC{0,16}".prop_map(Value::Text).boxed(),
            ColumnType::Json => Just(Value::Json("{\"k\": [1, \"v\"]}".to_owned())).boxed(),
            ColumnType::Bytea => prop::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes).boxed(),
            // PostgreSQL's own ranges: 4713 BC to 5874897 AD, ±infinity.
            ColumnType::Date => prop_oneof![Just(i32::MAX), Just(i32::MIN), -2_440_588i32..=2_147_483_494].prop_map(Value::Date).boxed(),
            ColumnType::Time => (0i64..=86_400_000_000).prop_map(Value::Time).boxed(),
            ColumnType::Timestamp => (-210_866_803_200_000_000i64..=9_224_318_015_999_999).prop_map(Value::Timestamp).boxed(),
            ColumnType::TimestampTz => (-210_866_803_200_000_000i64..=9_224_318_015_999_999).prop_map(Value::TimestampTz).boxed(),
            ColumnType::Interval => {
                (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(months, days, micros)| Value::Interval { months, days, micros }).boxed()
            }
            ColumnType::Uuid => any::<[u8; 16]>().prop_map(Value::Uuid).boxed(),
            ColumnType::Array { element } => {
                prop::collection::vec(prop_oneof![1 => Just(Value::Null), 3 => value_for(&element)], 0..4).prop_map(Value::Array).boxed()
            }
        }
    }

    fn column_type() -> impl Strategy<Value = ColumnType> {
        let scalar = prop_oneof![
            Just(ColumnType::Bool),
            Just(ColumnType::Int16),
            Just(ColumnType::Int32),
            Just(ColumnType::Int64),
            Just(ColumnType::Float32),
            Just(ColumnType::Float64),
            (1u8..=38).prop_flat_map(|p| (Just(p), 0..=p as i8)).prop_map(|(precision, scale)| ColumnType::Decimal { precision, scale }),
            Just(ColumnType::Text),
            Just(ColumnType::Json),
            Just(ColumnType::Bytea),
            Just(ColumnType::Date),
            Just(ColumnType::Time),
            Just(ColumnType::Timestamp),
            Just(ColumnType::TimestampTz),
            Just(ColumnType::Interval),
            Just(ColumnType::Uuid),
        ];
        prop_oneof![3 => scalar.clone(), 1 => scalar.prop_map(|e| ColumnType::Array { element: Box::new(e) })]
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
            _ => a == b,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn format_text_is_the_inverse_of_parse_text((ty, v) in column_type().prop_flat_map(|t| { let s = value_for(&t); (Just(t), s) })) {
            let text = format_text(&ty, &v).unwrap();
            let back = parse_text(&ty, &text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            prop_assert!(same(&v, &back), "{v:?} -> {text:?} -> {back:?}");
        }
    }

    #[test]
    fn values_typed_storage_cannot_hold_stay_exact_as_raw() {
        // Each is a value PostgreSQL accepts; none fits its typed column.
        let cases = [
            (ColumnType::Timestamp, "294276-12-31 23:59:59.999999"),
            (ColumnType::TimestampTz, "294276-12-31 23:59:59.999999+00"),
            (ColumnType::Array { element: Box::new(ColumnType::Int32) }, "{{1,2},{3,4}}"),
            (ColumnType::Array { element: Box::new(ColumnType::Int32) }, "[1:2][1:2]={{1,2},{3,4}}"),
            (ColumnType::Decimal { precision: 10, scale: 2 }, "NaN"),
        ];
        for (ty, text) in cases {
            let (v, why) = parse_lossless(&ty, text);
            assert_eq!(v, Value::Raw(text.to_owned()), "{text}");
            assert!(why.is_some(), "{text}");
            assert_eq!(format_text(&ty, &v).as_deref(), Some(text));
        }
        // The latest timestamp the typed column holds still parses typed.
        let (v, why) = parse_lossless(&ColumnType::Timestamp, "294246-12-31 23:59:59.999999");
        assert!(matches!(v, Value::Timestamp(_)) && why.is_none(), "{v:?}");
    }

    #[test]
    fn malformed_text_is_an_error_never_a_panic() {
        // Inputs of the pgtext fuzz target (fuzz/regressions/pgtext/), each
        // of which panicked: a hex pair split inside a character, or an
        // overflow in the day or microsecond arithmetic.
        let cases = [
            (ColumnType::Bytea, "\\x0\u{414}f", "invalid hex digit"),
            (ColumnType::Uuid, "\u{20ac}aaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa", "expected 8-4-4-4-12 hex digits"),
            (ColumnType::TimestampTz, "255555555555555550-1-2 00+:0055555555550-1-2 00+:00+0", "year 255555555555555550 out of range"),
            (ColumnType::Date, "10000000-01-01", "year 10000000 out of range"),
            (ColumnType::Interval, "P-3333333333333333301Y1", "-3333333333333333301Y is out of range"),
            (ColumnType::Interval, "PT-04000033333333333333300000000000H", "-04000033333333333333300000000000H is out of range"),
            (ColumnType::Interval, "PT-00004800000000000000000000000000000010001S", "is out of range"),
            (ColumnType::Interval, "P2147483647M1M", "out of range"),
        ];
        for (ty, text, reason) in cases {
            let e = parse_text(&ty, text).unwrap_err();
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
        // The largest year PostgreSQL prints still parses (as text where
        // the typed column cannot hold it).
        assert!(parse_text(&ColumnType::Date, "5874897-12-31").is_ok());
    }

    #[test]
    fn arrays() {
        let ints = ColumnType::Array { element: Box::new(ColumnType::Int32) };
        let texts = ColumnType::Array { element: Box::new(ColumnType::Text) };
        assert_eq!(p(ints.clone(), "{}"), Value::Array(vec![]));
        assert_eq!(p(ints.clone(), "{1,NULL,-3}"), Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(-3)]));
        assert_eq!(p(ints.clone(), "[0:1]={5,6}"), Value::Array(vec![Value::Int32(5), Value::Int32(6)]));
        assert_eq!(
            p(texts.clone(), r#"{"a,b","say \"hi\"",NULL,"NULL",plain,"back\\slash"}"#),
            Value::Array(vec![
                Value::Text("a,b".to_owned()),
                Value::Text("say \"hi\"".to_owned()),
                Value::Null,
                Value::Text("NULL".to_owned()),
                Value::Text("plain".to_owned()),
                Value::Text("back\\slash".to_owned()),
            ])
        );
        assert!(parse_text(&ints, "{{1,2},{3,4}}").is_err());
        assert!(parse_text(&ints, "[1:2][1:2]={{1,2},{3,4}}").is_err());
        assert!(parse_text(&ints, "{1,x}").is_err());
        assert!(parse_text(&texts, r#"{"open"#).is_err());
    }
}
