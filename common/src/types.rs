//! The PostgreSQL → Arrow type mapping.
//!
//! A column's [`ColumnType`] is decided once, when the reader sees the table's
//! `Relation` message and stages a schema version; every value of that column
//! in that version is a [`Value`](crate::Value) of the matching variant. The
//! rule is *never drop*: a PostgreSQL type without a native Arrow counterpart
//! (money, inet, timetz, ranges, composites, …) is kept as its text form, so a
//! writer can still deliver it and a reader of the Parquet files still sees it.
//!
//! | PostgreSQL | [`ColumnType`] | Arrow |
//! |---|---|---|
//! | bool | `Bool` | Boolean |
//! | int2 / int4 / int8, oid | `Int16` / `Int32` / `Int64` | Int16 / Int32 / Int64 |
//! | float4 / float8 | `Float32` / `Float64` | Float32 / Float64 |
//! | numeric(p,s), 1 ≤ p ≤ 38, 0 ≤ s ≤ p | `Decimal` | Decimal128(p, s) |
//! | numeric (unconstrained or out of range) | `Text` | Utf8 (exact text form) |
//! | text, varchar, bpchar, name, "char", enums | `Text` | Utf8 |
//! | bytea | `Bytea` | Binary |
//! | date | `Date` | Date32 (days since 1970-01-01) |
//! | time | `Time` | Time64(µs) |
//! | timestamp / timestamptz | `Timestamp` / `TimestampTz` | Timestamp(µs) / Timestamp(µs, UTC) |
//! | interval | `Interval` | Struct{months: Int32, days: Int32, micros: Int64} |
//! | uuid | `Uuid` | FixedSizeBinary(16) |
//! | json / jsonb | `Json` | Utf8 |
//! | arrays of the above | `Array` | List |
//! | domains | the base type's mapping | |
//! | anything else | `Text` | Utf8 |
//!
//! PostgreSQL's `infinity` / `-infinity` for date and timestamps are kept as the
//! extreme values of the storage type (`i32::MAX`/`MIN`, `i64::MAX`/`MIN`), as
//! PostgreSQL itself stores them. `interval` is a struct rather than Arrow's
//! MonthDayNano interval because Parquet's INTERVAL holds only milliseconds;
//! the struct keeps PostgreSQL's three fields exactly.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, TimeUnit};
use serde::{Deserialize, Serialize};

/// Field metadata key holding the column's [`ColumnType`] as JSON, so a Parquet
/// file decodes without its schema file.
pub const META_COLUMN_TYPE: &str = "strata.type";
/// Field metadata key holding the PostgreSQL type as `format_type` prints it
/// (`numeric(10,2)`, `character varying(20)`, `my_enum[]`).
pub const META_PG_TYPE: &str = "strata.pg_type";

/// How one column's values are typed in the stage. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnType {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Exact decimal; values are unscaled integers ([`Value::Decimal`](crate::Value::Decimal)).
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Json,
    Array {
        element: Box<ColumnType>,
    },
}

/// Largest precision Arrow's Decimal128 holds.
pub const MAX_DECIMAL128_PRECISION: u8 = 38;

/// Built-in type OIDs (`pg_type.oid`), stable across PostgreSQL versions.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Array type OID → element type OID for the built-in scalar types above.
const BUILTIN_ARRAYS: &[(u32, u32)] = &[
    (1000, oid::BOOL),
    (1001, oid::BYTEA),
    (1002, oid::CHAR),
    (1003, oid::NAME),
    (1005, oid::INT2),
    (1007, oid::INT4),
    (1009, oid::TEXT),
    (1014, oid::BPCHAR),
    (1015, oid::VARCHAR),
    (1016, oid::INT8),
    (1021, oid::FLOAT4),
    (1022, oid::FLOAT8),
    (1028, oid::OID),
    (1115, oid::TIMESTAMP),
    (1182, oid::DATE),
    (1183, oid::TIME),
    (1185, oid::TIMESTAMPTZ),
    (1187, oid::INTERVAL),
    (1231, oid::NUMERIC),
    (2951, oid::UUID),
    (199, oid::JSON),
    (3807, oid::JSONB),
];

/// What the catalog says about a type that is not built in. The reader looks
/// this up (`pg_type`) for OIDs [`ColumnType::from_builtin`] does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogType {
    /// `typtype = 'e'`.
    Enum,
    /// `typtype = 'd'`: the base type and its modifier.
    Domain { base_oid: u32, base_modifier: i32 },
    /// `typcategory = 'A'`: the element type.
    Array { element_oid: u32 },
    /// Anything else (composite, range, extension types): kept as text.
    Other,
}

impl ColumnType {
    /// The mapping of a built-in type OID with its type modifier
    /// (`atttypmod`, -1 when none), or `None` when the OID is not built in
    /// and the catalog must be asked.
    pub fn from_builtin(type_oid: u32, modifier: i32) -> Option<ColumnType> {
        use oid::*;
        Some(match type_oid {
            BOOL => ColumnType::Bool,
            INT2 => ColumnType::Int16,
            INT4 => ColumnType::Int32,
            INT8 | OID => ColumnType::Int64,
            FLOAT4 => ColumnType::Float32,
            FLOAT8 => ColumnType::Float64,
            NUMERIC => numeric(modifier),
            TEXT | VARCHAR | BPCHAR | NAME | CHAR => ColumnType::Text,
            BYTEA => ColumnType::Bytea,
            DATE => ColumnType::Date,
            TIME => ColumnType::Time,
            TIMESTAMP => ColumnType::Timestamp,
            TIMESTAMPTZ => ColumnType::TimestampTz,
            INTERVAL => ColumnType::Interval,
            UUID => ColumnType::Uuid,
            JSON | JSONB => ColumnType::Json,
            _ => {
                let (_, element) = BUILTIN_ARRAYS.iter().find(|(a, _)| *a == type_oid)?;
                // An array's modifier applies to its elements (numeric(10,2)[]).
                let element = ColumnType::from_builtin(*element, modifier)?;
                ColumnType::Array { element: Box::new(element) }
            }
        })
    }

    /// The mapping of any type, asking `catalog` about OIDs that are not built
    /// in. Unknown OIDs and lookup misses map to `Text`: never dropped.
    pub fn resolve(type_oid: u32, modifier: i32, catalog: &dyn Fn(u32) -> Option<CatalogType>) -> ColumnType {
        Self::resolve_depth(type_oid, modifier, catalog, 0)
    }

    fn resolve_depth(type_oid: u32, modifier: i32, catalog: &dyn Fn(u32) -> Option<CatalogType>, depth: u8) -> ColumnType {
        if let Some(t) = ColumnType::from_builtin(type_oid, modifier) {
            return t;
        }
        // Domains over domains over arrays are legal but shallow in practice;
        // the bound only guards against a catalog cycle.
        if depth > 8 {
            return ColumnType::Text;
        }
        match catalog(type_oid) {
            Some(CatalogType::Domain { base_oid, base_modifier }) => Self::resolve_depth(base_oid, base_modifier, catalog, depth + 1),
            Some(CatalogType::Array { element_oid }) => {
                match Self::resolve_depth(element_oid, modifier, catalog, depth + 1) {
                    // PostgreSQL has no arrays of arrays; an array-typed
                    // element means a domain over an array: keep it as text.
                    ColumnType::Array { .. } => ColumnType::Text,
                    element => ColumnType::Array { element: Box::new(element) },
                }
            }
            Some(CatalogType::Enum | CatalogType::Other) | None => ColumnType::Text,
        }
    }

    /// The Arrow type that holds this column's values.
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Int16 => DataType::Int16,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnType::Text | ColumnType::Json => DataType::Utf8,
            ColumnType::Bytea => DataType::Binary,
            ColumnType::Date => DataType::Date32,
            ColumnType::Time => DataType::Time64(TimeUnit::Microsecond),
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Interval => DataType::Struct(interval_fields()),
            ColumnType::Uuid => DataType::FixedSizeBinary(16),
            ColumnType::Array { element } => DataType::List(Arc::new(Field::new("item", element.arrow_type(), true))),
        }
    }

    /// An Arrow field for a column of this type, nullable, carrying the
    /// metadata that lets a file decode on its own.
    pub fn arrow_field(&self, name: &str, pg_type: &str) -> Field {
        let mut meta = HashMap::new();
        meta.insert(META_COLUMN_TYPE.to_owned(), self.to_json());
        meta.insert(META_PG_TYPE.to_owned(), pg_type.to_owned());
        Field::new(name, self.arrow_type(), true).with_metadata(meta)
    }

    /// Compact JSON form, as stored in field metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("ColumnType always serializes")
    }

    pub fn from_json(s: &str) -> Result<ColumnType, serde_json::Error> {
        let t: ColumnType = serde_json::from_str(s)?;
        t.check().map_err(serde::de::Error::custom)?;
        Ok(t)
    }

    /// Checks invariants serde cannot: decimal bounds, no nested arrays.
    pub fn check(&self) -> Result<(), String> {
        match self {
            ColumnType::Decimal { precision, scale } => {
                if *precision == 0 || *precision > MAX_DECIMAL128_PRECISION || *scale < 0 || *scale as u8 > *precision {
                    return Err(format!("decimal({precision},{scale}) is out of range"));
                }
                Ok(())
            }
            ColumnType::Array { element } => match **element {
                ColumnType::Array { .. } => Err("arrays of arrays are not a column type".to_owned()),
                ref e => e.check(),
            },
            _ => Ok(()),
        }
    }
}

/// `numeric(p,s)` becomes an exact decimal when Decimal128 holds it; anything
/// else (unconstrained, p > 38, negative scale or s > p, allowed since
/// PostgreSQL 15) keeps PostgreSQL's exact text form.
fn numeric(modifier: i32) -> ColumnType {
    // VARHDRSZ-offset typmod: ((precision << 16) | (scale & 0x7ff)) + 4.
    if modifier < 4 {
        return ColumnType::Text;
    }
    let m = modifier - 4;
    let precision = (m >> 16) & 0xFFFF;
    let scale = ((m & 0x7FF) ^ 1024) - 1024;
    if (1..=i32::from(MAX_DECIMAL128_PRECISION)).contains(&precision) && (0..=precision).contains(&scale) {
        // Both bounds checked just above.
        ColumnType::Decimal { precision: precision as u8, scale: scale as i8 }
    } else {
        ColumnType::Text
    }
}

/// The struct fields of a staged `interval`.
pub fn interval_fields() -> Fields {
    Fields::from(vec![Field::new("months", DataType::Int32, false), Field::new("days", DataType::Int32, false), Field::new("micros", DataType::Int64, false)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typmod(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7FF)) + 4
    }

    #[test]
    fn numeric_modifiers() {
        assert_eq!(numeric(-1), ColumnType::Text);
        assert_eq!(numeric(typmod(10, 2)), ColumnType::Decimal { precision: 10, scale: 2 });
        assert_eq!(numeric(typmod(38, 0)), ColumnType::Decimal { precision: 38, scale: 0 });
        assert_eq!(numeric(typmod(39, 0)), ColumnType::Text);
        assert_eq!(numeric(typmod(5, -2)), ColumnType::Text);
        assert_eq!(numeric(typmod(3, 5)), ColumnType::Text);
    }

    #[test]
    fn arrays_take_element_modifier() {
        assert_eq!(
            ColumnType::from_builtin(1231, typmod(12, 4)),
            Some(ColumnType::Array { element: Box::new(ColumnType::Decimal { precision: 12, scale: 4 }) })
        );
    }

    #[test]
    fn catalog_types() {
        let catalog = |oid: u32| match oid {
            90001 => Some(CatalogType::Enum),
            90002 => Some(CatalogType::Domain { base_oid: oid::INT4, base_modifier: -1 }),
            90003 => Some(CatalogType::Array { element_oid: 90001 }),
            90004 => Some(CatalogType::Domain { base_oid: 90004, base_modifier: -1 }),
            90005 => Some(CatalogType::Domain { base_oid: 1007, base_modifier: -1 }),
            90006 => Some(CatalogType::Array { element_oid: 90005 }),
            _ => None,
        };
        assert_eq!(ColumnType::resolve(90001, -1, &catalog), ColumnType::Text);
        assert_eq!(ColumnType::resolve(90002, -1, &catalog), ColumnType::Int32);
        assert_eq!(ColumnType::resolve(90003, -1, &catalog), ColumnType::Array { element: Box::new(ColumnType::Text) });
        // A self-referencing domain cannot loop forever.
        assert_eq!(ColumnType::resolve(90004, -1, &catalog), ColumnType::Text);
        // A domain over int4[] is an int4[]; an array of that domain is text.
        assert_eq!(ColumnType::resolve(90005, -1, &catalog), ColumnType::Array { element: Box::new(ColumnType::Int32) });
        assert_eq!(ColumnType::resolve(90006, -1, &catalog), ColumnType::Text);
        assert_eq!(ColumnType::resolve(123456, -1, &catalog), ColumnType::Text);
    }

    #[test]
    fn json_form_round_trips_and_is_checked() {
        let t = ColumnType::Array { element: Box::new(ColumnType::Decimal { precision: 9, scale: 3 }) };
        assert_eq!(ColumnType::from_json(&t.to_json()).unwrap(), t);
        assert!(ColumnType::from_json(r#"{"kind":"decimal","precision":40,"scale":0}"#).is_err());
        assert!(ColumnType::from_json(r#"{"kind":"array","element":{"kind":"array","element":{"kind":"bool"}}}"#).is_err());
        assert!(ColumnType::from_json(r#"{"kind":"money"}"#).is_err());
    }
}
