//! Column values as Debezium's PostgreSQL connector writes them at its
//! default settings, and the Kafka Connect schema of each column.
//!
//! | setting (default) | what it means here |
//! |---|---|
//! | `decimal.handling.mode=precise` | `numeric(p,s)`: base64 of the unscaled value's big-endian two's complement, the scale in the schema; `numeric`: `{"scale", "value"}` (`VariableScaleDecimal`, trailing fractional zeros dropped); NaN and ±Infinity: null |
//! | `time.precision.mode=adaptive` | date: days since 1970-01-01; time(0–3) ms, time(4–6) µs since midnight; timestamp(0–3) ms, (4–6) µs since the epoch; timestamptz and timetz: ISO strings in UTC |
//! | `interval.handling.mode=numeric` | µs, a month counted as 30.4375 days, computed in `double` as Debezium does |
//! | `binary.handling.mode=bytes` | base64 |
//! | unavailable value placeholder | `__debezium_unavailable_value` for a TOASTed value an update left alone |
//!
//! Debezium's own constants are kept where it has them: ±infinity of a
//! timestamp is PostgreSQL's JDBC driver's `DATE_POSITIVE_INFINITY` /
//! `DATE_NEGATIVE_INFINITY` (in ms, or taken as µs), and ±infinity of a
//! date the day numbers its parser gives them. Every value here is checked
//! against recorded Debezium output (`tests/fixtures/debezium/`).

use base64::Engine as _;
use strata_common::change::{Value, format_timestamp, format_uuid};
use strata_common::types::{ColumnType, oid};
use strata_stager::schema::ColumnSchema;

use super::json::Json;

/// What Debezium writes for a value PostgreSQL did not send (unchanged TOAST).
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";
/// What Debezium writes for `infinity` / `-infinity` in a timestamp column, in ms.
const TIMESTAMP_INFINITY_MS: (i64, i64) = (9_223_372_036_825_200, -9_223_372_036_832_400);
/// What Debezium writes for `infinity` / `-infinity` in a date column.
const DATE_INFINITY: (i32, i32) = (-2_147_472_692, -2_147_472_691);
/// Debezium's average month, in days (365.25 / 12).
const DAYS_PER_MONTH: f64 = 30.4375;
const TIMETZ: u32 = 1266;

/// How Debezium types a column: its Connect schema and value conversion.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// `numeric(p,s)`: Connect's `Decimal`.
    Decimal {
        precision: i32,
        scale: i32,
    },
    /// `numeric` without a precision.
    VariableDecimal,
    Str,
    Bytes,
    Date,
    TimeMillis,
    TimeMicros,
    ZonedTime,
    TimestampMillis,
    TimestampMicros,
    /// `digits`: the column's fractional-second precision.
    ZonedTimestamp {
        digits: u32,
    },
    MicroDuration,
    Uuid,
    Json,
    Array(Box<Kind>),
}

impl Kind {
    /// The kind of a staged column.
    pub fn of(column: &ColumnSchema) -> Kind {
        Kind::from_type(&column.column_type, column.type_oid, column.type_modifier)
    }

    fn from_type(ty: &ColumnType, type_oid: u32, modifier: i32) -> Kind {
        // A time's modifier is its precision; none means 6.
        let precision = if modifier < 0 { 6 } else { modifier };
        match ty {
            ColumnType::Bool => Kind::Bool,
            ColumnType::Int16 => Kind::Int16,
            ColumnType::Int32 => Kind::Int32,
            ColumnType::Int64 => Kind::Int64,
            ColumnType::Float32 => Kind::Float32,
            ColumnType::Float64 => Kind::Float64,
            ColumnType::Decimal { precision, scale } => Kind::Decimal { precision: i32::from(*precision), scale: i32::from(*scale) },
            // Numerics strata keeps as text: unconstrained, or beyond Decimal128.
            ColumnType::Text if type_oid == oid::NUMERIC => match numeric_modifier(modifier) {
                Some((precision, scale)) => Kind::Decimal { precision, scale },
                None => Kind::VariableDecimal,
            },
            ColumnType::Text if type_oid == TIMETZ => Kind::ZonedTime,
            ColumnType::Text => Kind::Str,
            ColumnType::Bytea => Kind::Bytes,
            ColumnType::Date => Kind::Date,
            ColumnType::Time if precision <= 3 => Kind::TimeMillis,
            ColumnType::Time => Kind::TimeMicros,
            ColumnType::Timestamp if precision <= 3 => Kind::TimestampMillis,
            ColumnType::Timestamp => Kind::TimestampMicros,
            ColumnType::TimestampTz => Kind::ZonedTimestamp { digits: precision.clamp(0, 6) as u32 },
            ColumnType::Interval => Kind::MicroDuration,
            ColumnType::Uuid => Kind::Uuid,
            ColumnType::Json => Kind::Json,
            // The element's own OID is not staged; its mapping is.
            ColumnType::Array { element } => Kind::Array(Box::new(Kind::from_type(element, 0, modifier))),
        }
    }

    /// The Connect schema of a column of this kind, without its `field`
    /// name: the keys in the order Kafka's `JsonConverter` writes them.
    pub fn schema(&self, optional: bool) -> Vec<(String, Json)> {
        let named = |ty: &str, name: &str| -> Vec<(String, Json)> {
            vec![("type".into(), Json::str(ty)), ("optional".into(), Json::Bool(optional)), ("name".into(), Json::str(name)), ("version".into(), Json::Int(1))]
        };
        let plain = |ty: &str| vec![("type".into(), Json::str(ty)), ("optional".into(), Json::Bool(optional))];
        match self {
            Kind::Bool => plain("boolean"),
            Kind::Int16 => plain("int16"),
            Kind::Int32 => plain("int32"),
            Kind::Int64 => plain("int64"),
            Kind::Float32 => plain("float"),
            Kind::Float64 => plain("double"),
            Kind::Str => plain("string"),
            Kind::Bytes => plain("bytes"),
            Kind::Decimal { precision, scale } => {
                let mut s = named("bytes", "org.apache.kafka.connect.data.Decimal");
                let parameters = Json::obj([("scale", Json::str(scale.to_string())), ("connect.decimal.precision", Json::str(precision.to_string()))]);
                s.push(("parameters".into(), parameters));
                s
            }
            Kind::VariableDecimal => {
                let part = |ty: &str, field: &str| Json::obj([("type", Json::str(ty)), ("optional", Json::Bool(false)), ("field", Json::str(field))]);
                vec![
                    ("type".into(), Json::str("struct")),
                    ("fields".into(), Json::Arr(vec![part("int32", "scale"), part("bytes", "value")])),
                    ("optional".into(), Json::Bool(optional)),
                    ("name".into(), Json::str("io.debezium.data.VariableScaleDecimal")),
                    ("version".into(), Json::Int(1)),
                    ("doc".into(), Json::str("Variable scaled decimal")),
                ]
            }
            Kind::Date => named("int32", "io.debezium.time.Date"),
            Kind::TimeMillis => named("int32", "io.debezium.time.Time"),
            Kind::TimeMicros => named("int64", "io.debezium.time.MicroTime"),
            Kind::ZonedTime => named("string", "io.debezium.time.ZonedTime"),
            Kind::TimestampMillis => named("int64", "io.debezium.time.Timestamp"),
            Kind::TimestampMicros => named("int64", "io.debezium.time.MicroTimestamp"),
            Kind::ZonedTimestamp { .. } => named("string", "io.debezium.time.ZonedTimestamp"),
            Kind::MicroDuration => named("int64", "io.debezium.time.MicroDuration"),
            Kind::Uuid => named("string", "io.debezium.data.Uuid"),
            Kind::Json => named("string", "io.debezium.data.Json"),
            Kind::Array(element) => {
                vec![("type".into(), Json::str("array")), ("items".into(), Json::Obj(element.schema(true))), ("optional".into(), Json::Bool(optional))]
            }
        }
    }

    /// `value`, a value of a column of this kind, as Debezium writes it.
    /// A value strata kept as text because its typed column cannot hold it
    /// ([`Value::Raw`]: NaN in a `numeric(p,s)`, a timestamp past the µs
    /// range) is null, as Debezium's is for NaN; a numeric's text is parsed.
    pub fn value(&self, value: &Value) -> Json {
        match (self, value) {
            (_, Value::Null) => Json::Null,
            (_, Value::Unchanged) => self.unavailable(),
            (Kind::Bool, Value::Bool(b)) => Json::Bool(*b),
            (_, Value::Int16(v)) => Json::Int(i64::from(*v)),
            (_, Value::Int32(v)) => Json::Int(i64::from(*v)),
            (_, Value::Int64(v)) => Json::Int(*v),
            (_, Value::Float32(v)) if v.is_finite() => Json::Float32(*v),
            (_, Value::Float32(v)) => special_float(f64::from(*v)),
            (_, Value::Float64(v)) if v.is_finite() => Json::Float64(*v),
            (_, Value::Float64(v)) => special_float(*v),
            (Kind::Decimal { .. }, Value::Decimal(v)) => Json::Str(base64(&twos_complement_i128(*v))),
            (Kind::Decimal { scale, .. }, Value::Text(s) | Value::Raw(s)) => {
                parse_decimal(s).and_then(|d| d.unscaled_at(*scale)).map_or(Json::Null, |u| Json::Str(base64(&twos_complement(&u))))
            }
            (Kind::VariableDecimal, Value::Text(s) | Value::Raw(s)) => parse_decimal(s).map_or(Json::Null, |d| {
                let d = d.normalized();
                Json::obj([("scale", Json::Int(i64::from(d.scale))), ("value", Json::Str(base64(&twos_complement(&d.unscaled()))))])
            }),
            (Kind::ZonedTime, Value::Text(s)) => zoned_time(s).map_or(Json::Null, Json::Str),
            (_, Value::Text(s) | Value::Json(s)) => Json::str(s.as_str()),
            (_, Value::Bytes(b)) => Json::Str(base64(b)),
            (_, Value::Date(d)) => Json::Int(i64::from(date_days(*d))),
            (Kind::TimeMillis, Value::Time(t)) => Json::Int(t.div_euclid(1000)),
            (_, Value::Time(t)) => Json::Int(*t),
            (Kind::TimestampMillis, Value::Timestamp(t)) => Json::Int(timestamp_millis(*t)),
            (_, Value::Timestamp(t)) => Json::Int(timestamp_micros(*t)),
            (Kind::ZonedTimestamp { digits }, Value::TimestampTz(t)) => Json::Str(zoned_timestamp(*t, *digits)),
            (_, Value::TimestampTz(t)) => Json::Str(zoned_timestamp(*t, 6)),
            (_, Value::Interval { months, days, micros }) => Json::Int(duration_micros(*months, *days, *micros)),
            (_, Value::Uuid(u)) => Json::Str(format_uuid(u)),
            (Kind::Array(element), Value::Array(items)) => Json::Arr(items.iter().map(|v| element.value(v)).collect()),
            (_, Value::Array(items)) => Json::Arr(items.iter().map(|v| self.value(v)).collect()),
            (_, Value::Bool(b)) => Json::Bool(*b),
            (_, Value::Decimal(_) | Value::Raw(_)) => Json::Null,
        }
    }

    /// Debezium's placeholder for an unchanged TOASTed value: the string,
    /// its bytes for bytea, a one-element list for arrays of strings; null
    /// where the column's type has no room for it.
    fn unavailable(&self) -> Json {
        match self {
            Kind::Str | Kind::Json | Kind::Uuid | Kind::ZonedTime | Kind::ZonedTimestamp { .. } => Json::str(UNAVAILABLE),
            Kind::Bytes => Json::Str(base64(UNAVAILABLE.as_bytes())),
            Kind::Array(element) if matches!(**element, Kind::Str | Kind::Json) => Json::Arr(vec![Json::str(UNAVAILABLE)]),
            _ => Json::Null,
        }
    }
}

/// `numeric(p,s)`'s precision and scale from its modifier; `None` without one.
fn numeric_modifier(modifier: i32) -> Option<(i32, i32)> {
    if modifier < 4 {
        return None;
    }
    let m = modifier - 4;
    Some(((m >> 16) & 0xFFFF, ((m & 0x7FF) ^ 1024) - 1024))
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Jackson writes a non-finite double as a string.
fn special_float(v: f64) -> Json {
    Json::str(if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    })
}

/// Java's `BigInteger.toByteArray`: big-endian two's complement, as short
/// as the sign allows.
pub fn twos_complement_i128(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let redundant = |b: u8, next: u8| (b == 0 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0);
    let mut start = 0;
    while start + 1 < bytes.len() && redundant(bytes[start], bytes[start + 1]) {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// A decimal number as PostgreSQL prints it: sign, all its digits, and how
/// many of them are after the point.
#[derive(Debug, Clone, PartialEq)]
pub struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    scale: i32,
}

/// Parses `-123.4500`; NaN, ±Infinity and anything else: `None`.
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    Some(Decimal { negative, digits, scale: i32::try_from(frac.len()).ok()? })
}

impl Decimal {
    /// Trailing zeros after the point dropped (Debezium's `VariableScaleDecimal`).
    fn normalized(mut self) -> Decimal {
        while self.scale > 0 && self.digits.last() == Some(&0) {
            self.digits.pop();
            self.scale -= 1;
        }
        self
    }

    /// The unscaled value at its own scale: (negative, decimal digits).
    fn unscaled(&self) -> (bool, Vec<u8>) {
        (self.negative, self.digits.clone())
    }

    /// The unscaled value at `scale` (a column's): digits added or, for a
    /// negative scale, zeros removed; `None` if that would lose a digit.
    fn unscaled_at(&self, scale: i32) -> Option<(bool, Vec<u8>)> {
        let mut digits = self.digits.clone();
        let mut have = self.scale;
        while have < scale {
            digits.push(0);
            have += 1;
        }
        while have > scale {
            if digits.pop()? != 0 {
                return None;
            }
            have -= 1;
        }
        Some((self.negative, digits))
    }
}

/// [`twos_complement_i128`] of a number of any size, given by its sign and
/// decimal digits.
pub fn twos_complement((negative, digits): &(bool, Vec<u8>)) -> Vec<u8> {
    // Base 10 to base 256, most significant byte first.
    let mut magnitude: Vec<u8> = Vec::new();
    for &d in digits {
        let mut carry = u32::from(d);
        for byte in magnitude.iter_mut().rev() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xFF) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.insert(0, (carry & 0xFF) as u8);
            carry >>= 8;
        }
    }
    let is_zero = magnitude.iter().all(|b| *b == 0);
    // One byte more than the magnitude holds the sign.
    let mut out = vec![0u8];
    out.extend_from_slice(&magnitude);
    if *negative && !is_zero {
        for b in out.iter_mut() {
            *b = !*b;
        }
        for b in out.iter_mut().rev() {
            let (v, overflow) = b.overflowing_add(1);
            *b = v;
            if !overflow {
                break;
            }
        }
    }
    let redundant = |b: u8, next: u8| (b == 0 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0);
    let mut start = 0;
    while start + 1 < out.len() && redundant(out[start], out[start + 1]) {
        start += 1;
    }
    out[start..].to_vec()
}

fn date_days(d: i32) -> i32 {
    match d {
        i32::MAX => DATE_INFINITY.0,
        i32::MIN => DATE_INFINITY.1,
        d => d,
    }
}

fn timestamp_millis(us: i64) -> i64 {
    match us {
        i64::MAX => TIMESTAMP_INFINITY_MS.0,
        i64::MIN => TIMESTAMP_INFINITY_MS.1,
        us => us.div_euclid(1000),
    }
}

fn timestamp_micros(us: i64) -> i64 {
    match us {
        i64::MAX => TIMESTAMP_INFINITY_MS.0 * 1000,
        i64::MIN => TIMESTAMP_INFINITY_MS.1 * 1000,
        us => us,
    }
}

/// `io.debezium.time.ZonedTimestamp`: ISO 8601 in UTC with the column's
/// fractional digits; ±infinity as PostgreSQL prints them.
pub fn zoned_timestamp(us: i64, digits: u32) -> String {
    let iso = format_timestamp(us, true);
    if us == i64::MAX || us == i64::MIN {
        return iso;
    }
    // `YYYY-MM-DDTHH:MM:SS.ffffffZ`, years past 9999 with a `+` as Java writes them.
    let (body, _) = iso.split_at(iso.len() - 1);
    let (seconds, fraction) = body.split_at(body.len() - 7);
    let fraction = if digits == 0 { String::new() } else { fraction[..=digits as usize].to_owned() };
    let year_digits = seconds.trim_start_matches('-').split('-').next().map_or(0, str::len);
    let sign = if year_digits > 4 && !seconds.starts_with('-') { "+" } else { "" };
    format!("{sign}{seconds}{fraction}Z")
}

/// `io.debezium.time.ZonedTime`: a `timetz` as PostgreSQL prints it
/// (`13:45:06.5+02`, `12:00:00-03:30`), moved to UTC, with as many
/// fractional digits as it needs (`11:45:06.5Z`).
pub fn zoned_time(text: &str) -> Option<String> {
    let at = text.rfind(['+', '-'])?;
    let (time, offset) = text.split_at(at);
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next().unwrap_or("0"));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac_us: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").get(..6)?.parse().ok()? };
    let local = (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60 + whole.parse::<i64>().ok()?) * 1_000_000 + frac_us;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut off = offset[1..].split(':').map(|p| p.parse::<i64>());
    let offset_secs = sign * (off.next()?.ok()? * 3600 + off.next().transpose().ok()?.unwrap_or(0) * 60 + off.next().transpose().ok()?.unwrap_or(0));
    let utc = (local - offset_secs * 1_000_000).rem_euclid(86_400_000_000);
    let (secs, us) = (utc / 1_000_000, utc % 1_000_000);
    let fraction = if us == 0 { String::new() } else { format!(".{us:06}").trim_end_matches('0').to_owned() };
    Some(format!("{:02}:{:02}:{:02}{fraction}Z", secs / 3600, secs / 60 % 60, secs % 60))
}

/// `io.debezium.time.MicroDuration`: Debezium's `MicroDuration.durationMicros`
/// on the fields its JDBC driver's `PGInterval` parses from PostgreSQL's
/// text, step for step in `double` (so that large intervals round alike).
pub fn duration_micros(months: i32, days: i32, micros: i64) -> i64 {
    let sign = if micros < 0 { -1.0 } else { 1.0 };
    let abs = micros.unsigned_abs();
    let hours = sign * (abs / 3_600_000_000) as f64;
    let minutes = sign * (abs / 60_000_000 % 60) as f64;
    let seconds = sign * ((abs / 1_000_000 % 60) as f64 + (abs % 1_000_000) as f64 / 1_000_000.0);
    let number_of_days = f64::from(months) * DAYS_PER_MONTH + f64::from(days);
    let number_of_seconds = ((number_of_days * 24.0 + hours) * 60.0 + minutes) * 60.0 + seconds;
    // Java's d2l: truncation toward zero, saturating, as `as` does.
    (number_of_seconds * 1_000_000.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Json) -> Vec<u8> {
        let Json::Str(s) = v else { panic!("{v:?} is not a string") };
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn decimals_are_javas_big_integer_bytes() {
        assert_eq!(twos_complement_i128(0), [0]);
        assert_eq!(twos_complement_i128(-1), [0xFF]);
        assert_eq!(twos_complement_i128(127), [0x7F]);
        assert_eq!(twos_complement_i128(128), [0x00, 0x80]);
        assert_eq!(twos_complement_i128(-128), [0x80]);
        assert_eq!(twos_complement_i128(-129), [0xFF, 0x7F]);
        assert_eq!(twos_complement_i128(i128::MIN).len(), 16);
        for v in [0i128, 1, -1, 255, -256, 123_456_789_123, -999_999_999_999, i128::MAX, i128::MIN + 1] {
            let text = (v < 0, v.unsigned_abs().to_string().bytes().map(|b| b - b'0').collect::<Vec<u8>>());
            assert_eq!(twos_complement(&text), twos_complement_i128(v), "{v}");
        }
        // Recorded: numeric(12,3) 123456789.123 and -999999999.999.
        assert_eq!(Kind::Decimal { precision: 12, scale: 3 }.value(&Value::Decimal(123_456_789_123)), Json::str("HL6ZGoM="));
        assert_eq!(Kind::Decimal { precision: 12, scale: 3 }.value(&Value::Decimal(-999_999_999_999)), Json::str("/xcrWvAB"));
        assert_eq!(Kind::Decimal { precision: 12, scale: 3 }.value(&Value::Raw("NaN".into())), Json::Null);
    }

    #[test]
    fn variable_scale_decimals_drop_fractional_zeros_only() {
        let k = Kind::VariableDecimal;
        let v = k.value(&Value::Text("123456789012345678901234567890.123456789012345678901234567890".into()));
        assert_eq!(v.get("scale"), Some(&Json::Int(29)));
        assert_eq!(v.get("value").map(Json::to_text).as_deref(), Some(r#""Afd+5uOsaXA1hlpdOME4xULa4ZgorjmBFQ==""#));
        let big = k.value(&Value::Text(format!("1{}", "0".repeat(40))));
        assert_eq!(big.get("scale"), Some(&Json::Int(0)), "1e40 keeps scale 0");
        let tiny = k.value(&Value::Text(format!("-0.{}1", "0".repeat(41))));
        assert_eq!((tiny.get("scale"), b64(tiny.get("value").unwrap())), (Some(&Json::Int(42)), vec![0xFF]));
        for special in ["NaN", "Infinity", "-Infinity"] {
            assert_eq!(k.value(&Value::Text(special.into())), Json::Null);
        }
        assert_eq!(k.value(&Value::Text("0".into())).to_text(), r#"{"scale":0,"value":"AA=="}"#);
        // A numeric(50,10) strata keeps as text is a fixed-scale Decimal.
        assert_eq!(b64(&Kind::Decimal { precision: 50, scale: 10 }.value(&Value::Text("1.5".into()))), twos_complement_i128(15_000_000_000));
        assert!(parse_decimal("1e5").is_none() && parse_decimal("").is_none() && parse_decimal("-").is_none());
    }

    #[test]
    fn times_follow_adaptive_precision_and_debeziums_infinities() {
        let col = |ty: ColumnType, oid: u32, modifier: i32| {
            let mut c = ColumnSchema::new("c", "", oid, ty, false);
            c.type_modifier = modifier;
            Kind::of(&c)
        };
        assert_eq!(col(ColumnType::Time, 1083, 3), Kind::TimeMillis);
        assert_eq!(col(ColumnType::Time, 1083, -1), Kind::TimeMicros);
        assert_eq!(col(ColumnType::Timestamp, 1114, 0), Kind::TimestampMillis);
        assert_eq!(col(ColumnType::Text, 1266, -1), Kind::ZonedTime);
        assert_eq!(col(ColumnType::Text, 1700, -1), Kind::VariableDecimal);
        assert_eq!(Kind::TimeMillis.value(&Value::Time(49_506_123_000)), Json::Int(49_506_123));
        assert_eq!(Kind::TimestampMicros.value(&Value::Timestamp(i64::MAX)), Json::Int(9_223_372_036_825_200_000));
        assert_eq!(Kind::TimestampMillis.value(&Value::Timestamp(i64::MIN)), Json::Int(-9_223_372_036_832_400));
        assert_eq!(Kind::TimestampMillis.value(&Value::Timestamp(-1)), Json::Int(-1), "floor, not toward zero");
        assert_eq!(Kind::Date.value(&Value::Date(i32::MAX)), Json::Int(-2_147_472_692));
        assert_eq!(zoned_timestamp(1_795_168_800_000_000 - 7_200_000_000, 6), "2026-11-20T08:00:00.000000Z");
        assert_eq!(zoned_timestamp(0, 3), "1970-01-01T00:00:00.000Z");
        assert_eq!(zoned_timestamp(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(zoned_timestamp(i64::MAX, 6), "infinity");
        assert_eq!(zoned_timestamp(-63_517_780_800_000_000, 6), "-0043-03-15T12:00:00.000000Z");
        assert_eq!(zoned_timestamp(253_402_300_800_000_000, 6), "+10000-01-01T00:00:00.000000Z");
        assert_eq!(zoned_time("13:45:06.5+02").as_deref(), Some("11:45:06.5Z"));
        assert_eq!(zoned_time("00:00:00-14").as_deref(), Some("14:00:00Z"));
        assert_eq!(zoned_time("23:59:59.999999+14").as_deref(), Some("09:59:59.999999Z"));
        assert_eq!(zoned_time("12:00:00-03:30").as_deref(), Some("15:30:00Z"));
        assert_eq!(zoned_time("garbage"), None);
    }

    #[test]
    fn intervals_round_as_debeziums_doubles() {
        assert_eq!(duration_micros(14, 3, 14_706_700_000), 37_091_106_700_000);
        assert_eq!(duration_micros(-12, -2, 11_045_678_901), -31_719_354_321_099);
        assert_eq!(duration_micros(-3, 4, -1_000_000), -7_543_801_000_000);
        // 10000 years 11 mons 30 days 23:59:59.999999: the double rounds up.
        assert_eq!(duration_micros(120_011, 30, 86_399_999_999), 315_607_606_200_000_000);
        assert_eq!(duration_micros(i32::MAX, i32::MAX, i64::MAX), i64::MAX, "saturates like Java's d2l");
    }

    #[test]
    fn unchanged_toast_is_the_placeholder_and_floats_keep_their_specials() {
        assert_eq!(Kind::Str.value(&Value::Unchanged), Json::str(UNAVAILABLE));
        assert_eq!(b64(&Kind::Bytes.value(&Value::Unchanged)), UNAVAILABLE.as_bytes());
        assert_eq!(Kind::Int32.value(&Value::Unchanged), Json::Null);
        assert_eq!(Kind::Float32.value(&Value::Float32(f32::NAN)), Json::str("NaN"));
        assert_eq!(Kind::Float64.value(&Value::Float64(f64::NEG_INFINITY)), Json::str("-Infinity"));
        assert_eq!(Kind::Float32.value(&Value::Float32(0.1)).to_text(), "0.1");
    }
}
