//! Schema versions: `streams/{stream}/schemas/{schema}.{table}/{version:010}.json`.
//!
//! A table gets a new version whenever its columns change (the reader sees a
//! pgoutput `Relation` message that differs from the current version). Every
//! data file names the version it was written with, and carries the same
//! information in its Arrow field metadata, so a file decodes on its own.
//!
//! The Arrow schema of a data file is the metadata columns, then the table's
//! columns in `attnum` order:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `_strata_op` | Utf8 | `r` snapshot read, `c` insert, `u` update, `d` delete, `t` truncate |
//! | `_strata_lsn` | UInt64 | commit LSN of the transaction |
//! | `_strata_ord` | UInt32 | position in the transaction |
//! | `_strata_xid` | UInt32, nullable | transaction id (null for snapshot rows) |
//! | `_strata_commit_ts` | Timestamp(µs, UTC) | commit time |
//! | `_strata_unchanged` | `List<Utf8>`, nullable | columns whose TOASTed value was not sent |
//! | `_strata_raw` | Map<Utf8, Utf8>, nullable | column → exact text of a new-row value its typed column cannot hold |
//! | `_strata_before` | Struct of the table's columns, nullable | old key or old row, when sent |
//! | `_strata_before_raw` | Map<Utf8, Utf8>, nullable | the same for the old row |
//!
//! A value in `_strata_raw` stands beside a NULL typed cell: a timestamp
//! past 294247 AD (microseconds since 1970 overflow 64 bits), a
//! multi-dimensional array, `NaN` in a `numeric(p,s)`. The text is
//! PostgreSQL's output form under the reader's pinned settings (ISO dates,
//! UTC), so `CAST(_strata_raw['c'] AS …)` in PostgreSQL gives the value back.
//! `_strata_before` and both raw maps exist only in tables with columns
//! (Parquet cannot store an empty group); files written before the raw maps
//! existed read as having none.
//!
//! PostgreSQL's `infinity` and `-infinity` are stored as the extreme values of
//! the storage type, as PostgreSQL stores them: `date` as `i32::MAX` and
//! `i32::MIN` days (Arrow prints 5881580-07-11 and -5877641-06-23), timestamps
//! as `i64::MAX` and `i64::MIN` microseconds (294247-01-10T04:00:54.775807
//! and -290308-12-21T19:59:05.224192). A query that must tell them apart from
//! real dates compares with those values; no real date reaches them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use strata_common::{ColumnType, Lsn, TableName};

use crate::error::{Result, StageError};

pub const COL_OP: &str = "_strata_op";
pub const COL_LSN: &str = "_strata_lsn";
pub const COL_ORD: &str = "_strata_ord";
pub const COL_XID: &str = "_strata_xid";
pub const COL_COMMIT_TS: &str = "_strata_commit_ts";
pub const COL_UNCHANGED: &str = "_strata_unchanged";
pub const COL_BEFORE: &str = "_strata_before";
pub const COL_RAW: &str = "_strata_raw";
pub const COL_BEFORE_RAW: &str = "_strata_before_raw";

/// Prefix reserved for metadata columns; no user column may start with it.
pub const RESERVED_PREFIX: &str = "_strata_";

/// Schema-level metadata keys of a data file.
pub const META_TABLE: &str = "strata.table";
pub const META_SCHEMA_VERSION: &str = "strata.schema_version";
pub const META_FORMAT: &str = "strata.format";

/// REPLICA IDENTITY of the table: what PostgreSQL sends as the old row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaIdentity {
    /// The primary key (old key sent only when it changes, or on delete).
    Default,
    /// The whole old row.
    Full,
    /// The columns of a chosen unique index.
    Index,
    /// Nothing: updates and deletes carry no old image.
    Nothing,
}

/// One column of a schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSchema {
    pub name: String,
    /// The PostgreSQL type as `format_type` prints it.
    pub pg_type: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// How values are staged.
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Part of the replica identity key (pgoutput's key flag).
    pub key: bool,
    /// The column's number at the source (`pg_attribute.attnum`), which a
    /// rename keeps and a drop-and-add does not; absent if unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attnum: Option<i16>,
    /// Earlier names of this column (same attnum), oldest first, so a
    /// destination can rename instead of dropping and re-adding it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_names: Vec<String>,
    /// The value rows that existed when this column was added received
    /// without any WAL change (`ADD COLUMN … DEFAULT` with a non-volatile
    /// default: PostgreSQL's `attmissingval`), as PostgreSQL's text form;
    /// absent when none (no default, a NULL one, or a table rewritten since).
    /// A destination adding the column gives existing rows this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_value: Option<String>,
}

impl ColumnSchema {
    /// A column of a built-in type with no modifier, number or history.
    pub fn new(name: &str, pg_type: &str, type_oid: u32, column_type: ColumnType, key: bool) -> ColumnSchema {
        ColumnSchema {
            name: name.to_owned(),
            pg_type: pg_type.to_owned(),
            type_oid,
            type_modifier: -1,
            column_type,
            key,
            attnum: None,
            former_names: Vec::new(),
            missing_value: None,
        }
    }
}

/// A schema version file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub format: u32,
    pub stream: String,
    pub table: TableName,
    pub version: u32,
    /// The table's OID at the source, as pgoutput reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_oid: Option<u32>,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<ColumnSchema>,
    /// LSN of the first transaction written with this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_lsn: Option<Lsn>,
    /// The source database's name (`current_database()`), for message
    /// envelopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The table's storage file at the source (`pg_relation_filenode`) when
    /// this version was staged. A later version with another one means the
    /// table was rewritten (a volatile default, a stored generated column
    /// added, a type change `USING` an expression): existing rows changed
    /// without WAL changes, and the reader backfills the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relfilenode: Option<u32>,
    /// The table's stored generated columns. PostgreSQL 15's pgoutput
    /// does not send them (nor do the snapshot and backfill read them), so
    /// they carry no values in the stage; a mirror defines them with the
    /// same expression and computes its own, as a native subscriber does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated: Vec<GeneratedColumn>,
}

/// A stored generated column (`GENERATED ALWAYS AS (expression) STORED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedColumn {
    pub name: String,
    /// The type as `format_type` prints it.
    pub pg_type: String,
    /// The expression as `pg_get_expr` prints it.
    pub expression: String,
    /// The column's number at the source, for its place among the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attnum: Option<i16>,
}

impl TableSchema {
    /// Checks the rules a schema must satisfy to be staged: version ≥ 1,
    /// valid names, unique column names outside the reserved prefix, column
    /// types within range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| StageError::Invalid { what: format!("schema of {} v{}", self.table, self.version), reason };
        self.table.validate().map_err(|e| invalid(e.to_string()))?;
        if self.version == 0 {
            return Err(invalid("versions start at 1".to_owned()));
        }
        crate::check_format(self.format).map_err(invalid)?;
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            if c.name.is_empty() {
                return Err(invalid("a column has an empty name".to_owned()));
            }
            if c.name.starts_with(RESERVED_PREFIX) {
                return Err(invalid(format!(
                    "column {:?} starts with {RESERVED_PREFIX:?}, which is reserved for strata's metadata columns; rename it at the source",
                    c.name
                )));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(invalid(format!("column {:?} appears twice", c.name)));
            }
            c.column_type.check().map_err(|e| invalid(format!("column {:?}: {e}", c.name)))?;
        }
        for g in &self.generated {
            if g.name.is_empty() || g.name.starts_with(RESERVED_PREFIX) || !seen.insert(g.name.as_str()) {
                return Err(invalid(format!("generated column {:?} is empty, reserved or appears twice", g.name)));
            }
        }
        Ok(())
    }

    /// Whether `other` describes the same columns (names, types, key flags,
    /// order) and identity, i.e. no new version is needed.
    /// A column's number counts only where both sides know it (versions
    /// staged before attnums were recorded do not).
    pub fn same_shape(&self, other: &TableSchema) -> bool {
        let same = |a: &ColumnSchema, b: &ColumnSchema| {
            a.name == b.name
                && a.pg_type == b.pg_type
                && a.type_oid == b.type_oid
                && a.type_modifier == b.type_modifier
                && a.column_type == b.column_type
                && a.key == b.key
                && (a.attnum.is_none() || b.attnum.is_none() || a.attnum == b.attnum)
        };
        self.replica_identity == other.replica_identity
            && self.generated == other.generated
            && self.columns.len() == other.columns.len()
            && self.columns.iter().zip(&other.columns).all(|(a, b)| same(a, b))
    }

    /// Carries earlier names over from `previous` (the version before this
    /// one): a column with the same attnum under another name was renamed.
    pub fn inherit_names(&mut self, previous: &TableSchema) {
        for c in &mut self.columns {
            let Some(attnum) = c.attnum else { continue };
            if let Some(p) = previous.columns.iter().find(|p| p.attnum == Some(attnum)) {
                let mut names = p.former_names.clone();
                if p.name != c.name {
                    names.push(p.name.clone());
                }
                names.retain(|n| n != &c.name);
                c.former_names = names;
            }
        }
    }

    /// The Arrow schema of this version's data files.
    pub fn arrow_schema(&self) -> SchemaRef {
        let user: Vec<Field> = self.columns.iter().map(|c| c.column_type.arrow_field(&c.name, &c.pg_type)).collect();
        let mut fields = metadata_fields();
        // Parquet cannot store an empty group, so a table with no columns
        // (legal in PostgreSQL) has no before-image column.
        if !user.is_empty() {
            fields.push(raw_field(COL_RAW));
            fields.push(Field::new(COL_BEFORE, DataType::Struct(Fields::from(user.clone())), true));
            fields.push(raw_field(COL_BEFORE_RAW));
        }
        fields.extend(user);
        let mut meta = HashMap::new();
        meta.insert(META_FORMAT.to_owned(), crate::FORMAT_VERSION.to_string());
        meta.insert(META_TABLE.to_owned(), serde_json::to_string(&self.table).expect("table names serialize"));
        meta.insert(META_SCHEMA_VERSION.to_owned(), self.version.to_string());
        Arc::new(Schema::new_with_metadata(fields, meta))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("schemas serialize")
    }

    pub fn from_json(path: &object_store::path::Path, bytes: &[u8]) -> Result<TableSchema> {
        let s: TableSchema =
            serde_json::from_slice(bytes).map_err(|e| StageError::Corrupt { path: path.clone(), reason: format!("not a schema version file: {e}") })?;
        s.validate().map_err(|e| StageError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        Ok(s)
    }
}

/// The Arrow type of `_strata_raw` and `_strata_before_raw`: column name →
/// text, with Parquet's standard names for a map's parts.
pub fn raw_type() -> DataType {
    let entries = Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Utf8, true)]);
    DataType::Map(Arc::new(Field::new("key_value", DataType::Struct(entries), false)), false)
}

fn raw_field(name: &str) -> Field {
    Field::new(name, raw_type(), true)
}

/// The metadata columns every file has, in order; tables with columns add
/// `_strata_raw`, `_strata_before` and `_strata_before_raw`.
fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new(COL_OP, DataType::Utf8, false),
        Field::new(COL_LSN, DataType::UInt64, false),
        Field::new(COL_ORD, DataType::UInt32, false),
        Field::new(COL_XID, DataType::UInt32, true),
        Field::new(COL_COMMIT_TS, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new(COL_UNCHANGED, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(columns: &[(&str, Option<i16>)]) -> TableSchema {
        TableSchema {
            format: crate::FORMAT_VERSION,
            stream: "main".into(),
            table: TableName::new("public", "t").unwrap(),
            version: 1,
            relation_oid: None,
            replica_identity: ReplicaIdentity::Default,
            columns: columns
                .iter()
                .map(|(name, attnum)| ColumnSchema {
                    name: (*name).into(),
                    pg_type: "integer".into(),
                    type_oid: 23,
                    type_modifier: -1,
                    column_type: ColumnType::Int32,
                    key: false,
                    attnum: *attnum,
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

    #[test]
    fn renames_are_told_from_drop_and_add_by_attnum() {
        let v1 = schema(&[("id", Some(1)), ("a", Some(2)), ("gone", Some(3))]);
        // a renamed to b; gone dropped and a new column of that name added.
        let mut v2 = schema(&[("id", Some(1)), ("b", Some(2)), ("gone", Some(4))]);
        assert!(!v2.same_shape(&v1), "a drop and add of the same name is a new version");
        v2.inherit_names(&v1);
        assert_eq!(v2.columns[1].former_names, ["a"]);
        assert!(v2.columns[0].former_names.is_empty() && v2.columns[2].former_names.is_empty());
        // Renamed again, and back: the chain is kept, without the current name.
        let mut v3 = schema(&[("id", Some(1)), ("c", Some(2)), ("gone", Some(4))]);
        v3.inherit_names(&v2);
        assert_eq!(v3.columns[1].former_names, ["a", "b"]);
        let mut v4 = schema(&[("id", Some(1)), ("a", Some(2)), ("gone", Some(4))]);
        v4.inherit_names(&v3);
        assert_eq!(v4.columns[1].former_names, ["b", "c"]);
        // A version staged before attnums were recorded matches by shape.
        let old = schema(&[("id", None), ("a", None)]);
        assert!(schema(&[("id", Some(1)), ("a", Some(2))]).same_shape(&old));
    }
}
