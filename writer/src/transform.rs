//! Per-destination transforms, applied between the stage and the
//! destination: which tables, which columns, which rows, and masking.
//!
//! ```json
//! "transforms": {
//!   "exclude": ["audit.*"],
//!   "columns": [
//!     {"table": "public.users", "column": "ssn",   "action": "drop"},
//!     {"table": "public.users", "column": "email", "action": "fake", "kind": "email"},
//!     {"table": "public.users", "column": "name",  "action": "fake", "kind": "name"},
//!     {"table": "public.users", "column": "phone", "action": "hash"},
//!     {"table": "public.notes", "column": "body",  "action": "redact", "text": "[redacted]"},
//!     {"table": "public.notes", "column": "ip",    "action": "null"}
//!   ],
//!   "filters": [{"table": "public.orders", "column": "region", "op": "in", "values": ["eu", "uk"]}],
//!   "hash_key": "${MASK_KEY}"
//! }
//! ```
//!
//! - `include` / `exclude`: `schema.table` or `schema.*`; no `include`
//!   means every table.
//! - `drop` removes the column (the destination never gets it); `null`
//!   empties it; `redact` replaces it with fixed text; `hash` with the hex
//!   HMAC-SHA256 of its text form under `hash_key` (deterministic, so joins
//!   on hashed columns still work, and not reversible without the key);
//!   `fake` with a realistic value (`email`, `name`, `phone`) derived the
//!   same way, so a value always fakes to the same fake. `redact`, `hash`
//!   and `fake` make the column `text`.
//! - Masking applies to old and new images alike; NULL stays NULL and an
//!   unchanged TOASTed value stays unchanged (the destination keeps its
//!   masked value).
//! - `filters` keep a change when its row matches: every filter of its
//!   table must hold on the new image, or the old one for a delete (a
//!   delete whose old image lacks the column is kept). Values compare as
//!   text forms.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_common::pgtext::format_text;
use strata_common::{Change, ColumnType, TableName, Value};
use strata_stager::schema::TableSchema;

use crate::destinations::{Batch, TableBatch};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transforms {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RowFilter>,
    /// `${VAR}` naming the key of `hash` and `fake`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    pub table: String,
    pub column: String,
    pub action: Action,
    /// The replacement of `redact` (default `[redacted]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// What `fake` makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FakeKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Drop,
    Null,
    Redact,
    Hash,
    Fake,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FakeKind {
    Email,
    Name,
    Phone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilter {
    pub table: String,
    pub column: String,
    pub op: FilterOp,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Ne,
    In,
    NotIn,
    IsNull,
    NotNull,
}

/// `schema.table` or `schema.*` against a table.
fn matches(pattern: &str, table: &TableName) -> bool {
    match pattern.strip_suffix(".*") {
        Some(schema) => TableName::parse(&format!("{schema}.x")).is_ok_and(|t| t.schema == table.schema),
        None => TableName::parse(pattern).is_ok_and(|t| &t == table),
    }
}

impl Transforms {
    pub fn is_empty(&self) -> bool {
        self == &Transforms::default()
    }

    /// Checks patterns, filter arities and that hashing has a `${VAR}` key.
    pub fn validate(&self) -> Result<(), String> {
        let pattern = |p: &str| {
            let t = p.strip_suffix(".*").map_or_else(|| p.to_owned(), |s| format!("{s}.x"));
            TableName::parse(&t).map(|_| ()).map_err(|e| format!("transforms: table pattern {p:?}: {e}"))
        };
        for p in self.include.iter().chain(&self.exclude) {
            pattern(p)?;
        }
        for r in &self.columns {
            pattern(&r.table)?;
            let fits = match r.action {
                Action::Fake => r.kind.is_some() && r.text.is_none(),
                Action::Redact => r.kind.is_none(),
                Action::Drop | Action::Null | Action::Hash => r.kind.is_none() && r.text.is_none(),
            };
            if !fits {
                return Err(format!(
                    "transforms: rule for {}.{}: `fake` takes `kind` (email, name or phone), `redact` may take `text`, the others neither",
                    r.table, r.column
                ));
            }
        }
        for f in &self.filters {
            pattern(&f.table)?;
            let arity_ok = match f.op {
                FilterOp::Eq | FilterOp::Ne => f.values.len() == 1,
                FilterOp::In | FilterOp::NotIn => !f.values.is_empty(),
                FilterOp::IsNull | FilterOp::NotNull => f.values.is_empty(),
            };
            if !arity_ok {
                return Err(format!("transforms: filter on {}.{} with op {:?} has {} values", f.table, f.column, f.op, f.values.len()));
            }
        }
        let keyed = self.columns.iter().any(|r| matches!(r.action, Action::Hash | Action::Fake));
        match &self.hash_key {
            None if keyed => Err("transforms: hash and fake need hash_key, a ${VAR} or ${file:PATH} reference to the key".to_owned()),
            Some(k) if !strata_common::config::is_reference(k) => {
                Err("transforms: hash_key must be a ${VAR} or ${file:PATH} reference: specs are stored in the stage".to_owned())
            }
            _ => Ok(()),
        }
    }

    /// Resolves the key from the environment, ready to apply.
    pub fn prepare(&self) -> Result<Prepared, String> {
        let key = self.hash_key.as_deref().map(crate::destinations::expand_env).transpose()?.map(String::into_bytes);
        Ok(Prepared { rules: self.clone(), key: key.unwrap_or_default(), schemas: HashMap::new() })
    }
}

/// Transforms with their key, caching the transformed schema per version.
pub struct Prepared {
    rules: Transforms,
    key: Vec<u8>,
    schemas: HashMap<(TableName, u32), Arc<TableSchema>>,
}

fn mac(key: &[u8], text: &str) -> [u8; 32] {
    crate::hmac_sha256(key, &[text.as_bytes()])
}

const FIRST: [&str; 16] =
    ["Ada", "Alan", "Grace", "Linus", "Barbara", "Edsger", "Frances", "Ken", "Margaret", "Dennis", "Radia", "Niklaus", "Hedy", "Tim", "Sophie", "John"];
const LAST: [&str; 16] = [
    "Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Dijkstra", "Allen", "Thompson", "Hamilton", "Ritchie", "Perlman", "Wirth", "Lamarr", "Berners",
    "Wilson", "Backus",
];

/// A realistic value of `kind`, the same for the same input and key.
pub fn fake(kind: FakeKind, key: &[u8], text: &str) -> String {
    let h = mac(key, text);
    let n = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
    let (first, last) = (FIRST[usize::from(h[0] % 16)], LAST[usize::from(h[1] % 16)]);
    match kind {
        FakeKind::Name => format!("{first} {last}"),
        FakeKind::Email => format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), n % 10_000),
        FakeKind::Phone => format!("+1-555-{:03}-{:04}", n % 1000, (n / 1000) % 10_000),
    }
}

impl Prepared {
    fn keeps_table(&self, t: &TableName) -> bool {
        (self.rules.include.is_empty() || self.rules.include.iter().any(|p| matches(p, t))) && !self.rules.exclude.iter().any(|p| matches(p, t))
    }

    fn mask(&self, rule: &ColumnRule, ty: &ColumnType, v: &Value) -> Value {
        match v {
            Value::Null | Value::Unchanged => return v.clone(),
            _ => {}
        }
        let text = || format_text(ty, v).unwrap_or_default();
        match (rule.action, rule.kind) {
            (Action::Drop | Action::Null, _) => Value::Null,
            (Action::Redact, _) => Value::Text(rule.text.clone().unwrap_or_else(|| "[redacted]".to_owned())),
            (Action::Hash, _) => Value::Text(hex::encode(mac(&self.key, &text()))),
            (Action::Fake, Some(kind)) => Value::Text(fake(kind, &self.key, &text())),
            // Refused by `validate`; null rather than leak the value.
            (Action::Fake, None) => Value::Null,
        }
    }

    /// The transformed schema of `schema`: dropped columns gone, masked
    /// columns retyped to text where their values become text.
    fn schema(&mut self, schema: &Arc<TableSchema>) -> Arc<TableSchema> {
        let key = (schema.table.clone(), schema.version);
        if let Some(s) = self.schemas.get(&key) {
            return s.clone();
        }
        let mut out = (**schema).clone();
        let rules: Vec<&ColumnRule> = self.rules.columns.iter().filter(|r| matches(&r.table, &schema.table)).collect();
        out.columns.retain(|c| !rules.iter().any(|r| r.column == c.name && r.action == Action::Drop));
        for c in &mut out.columns {
            if rules.iter().any(|r| r.column == c.name && matches!(r.action, Action::Redact | Action::Hash | Action::Fake)) {
                c.column_type = ColumnType::Text;
                c.pg_type = "text".to_owned();
                c.type_oid = 25;
                c.type_modifier = -1;
            }
        }
        let out = Arc::new(out);
        self.schemas.insert(key, out.clone());
        out
    }

    fn row(&self, schema: &TableSchema, rules: &[&ColumnRule], row: &[Value]) -> Vec<Value> {
        schema
            .columns
            .iter()
            .zip(row)
            .filter_map(|(c, v)| match rules.iter().find(|r| r.column == c.name) {
                Some(r) if r.action == Action::Drop => None,
                Some(r) => Some(self.mask(r, &c.column_type, v)),
                None => Some(v.clone()),
            })
            .collect()
    }

    fn keeps_change(&self, schema: &TableSchema, filters: &[&RowFilter], c: &Change) -> bool {
        let image = match c.op {
            strata_common::Op::Delete => c.before.as_ref(),
            strata_common::Op::Truncate => return true,
            _ => c.after.as_ref(),
        };
        let Some(image) = image else { return true };
        filters.iter().all(|f| {
            let Some(i) = schema.columns.iter().position(|col| col.name == f.column) else {
                return true;
            };
            let text = match &image[i] {
                Value::Null => None,
                // Not sent, so not known: keep the change.
                Value::Unchanged => return true,
                v => format_text(&schema.columns[i].column_type, v),
            };
            let is_in = |t: &Option<String>| t.as_ref().is_some_and(|t| f.values.contains(t));
            match f.op {
                FilterOp::Eq | FilterOp::In => is_in(&text),
                FilterOp::Ne | FilterOp::NotIn => text.is_some() && !is_in(&text),
                FilterOp::IsNull => text.is_none(),
                FilterOp::NotNull => text.is_some(),
            }
        })
    }

    /// `batch` as this destination should get it. Takes the batch, so a
    /// destination without transforms gets it as it is, not a copy: a
    /// rolled-up batch is held once.
    pub fn apply(&mut self, mut batch: Batch) -> Batch {
        if self.rules.is_empty() {
            return batch;
        }
        let tables = std::mem::take(&mut batch.tables);
        let mut out = batch;
        for t in tables {
            if !self.keeps_table(&t.schema.table) {
                continue;
            }
            let schema = self.schema(&t.schema);
            let rules: Vec<&ColumnRule> = self.rules.columns.iter().filter(|r| matches(&r.table, &t.schema.table)).collect();
            let filters: Vec<&RowFilter> = self.rules.filters.iter().filter(|f| matches(&f.table, &t.schema.table)).collect();
            let changes: Vec<Change> = t
                .changes
                .into_iter()
                .filter(|c| self.keeps_change(&t.schema, &filters, c))
                .map(|c| Change {
                    after: c.after.as_deref().map(|r| self.row(&t.schema, &rules, r)),
                    before: c.before.as_deref().map(|r| self.row(&t.schema, &rules, r)),
                    ..c
                })
                .collect();
            if !changes.is_empty() {
                out.tables.push(TableBatch { schema, changes });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(v: serde_json::Value) -> Result<Transforms, String> {
        let t: Transforms = serde_json::from_value(v).map_err(|e| e.to_string())?;
        t.validate().map(|()| t)
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let hash = serde_json::json!({"table": "public.u", "column": "c", "action": "hash"});
        assert!(rules(serde_json::json!({"columns": [hash]})).unwrap_err().contains("hash_key"));
        assert!(rules(serde_json::json!({"columns": [hash], "hash_key": "literal"})).unwrap_err().contains("${VAR}"));
        assert!(rules(serde_json::json!({"columns": [hash], "hash_key": "${K}"})).is_ok());
        let fake = serde_json::json!({"table": "public.u", "column": "c", "action": "fake"});
        assert!(rules(serde_json::json!({"columns": [fake], "hash_key": "${K}"})).unwrap_err().contains("kind"));
        let filter = serde_json::json!({"table": "public.u", "column": "c", "op": "eq", "values": []});
        assert!(rules(serde_json::json!({"filters": [filter]})).unwrap_err().contains("values"));
        assert!(rules(serde_json::json!({"include": ["not a table"]})).is_err());
        assert!(rules(serde_json::json!({"columns": [{"table": "public.u", "column": "c", "action": "drop", "extra": 1}]})).is_err());
    }

    #[test]
    fn fakes_are_deterministic_per_key_and_look_real() {
        let a = fake(FakeKind::Email, b"k", "ada@corp.example");
        assert_eq!(a, fake(FakeKind::Email, b"k", "ada@corp.example"));
        assert_ne!(a, fake(FakeKind::Email, b"other key", "ada@corp.example"));
        assert!(a.ends_with("@example.com") && a.contains('.'), "{a}");
        assert_eq!(fake(FakeKind::Name, b"k", "x").split(' ').count(), 2);
        assert!(fake(FakeKind::Phone, b"k", "x").starts_with("+1-555-"));
    }

    #[test]
    fn tables_match_by_name_and_schema() {
        let t = TableName::parse("public.users").unwrap();
        assert!(matches("public.*", &t) && matches("public.users", &t));
        assert!(!matches("audit.*", &t) && !matches("public.orders", &t));
        assert!(matches(r#""public".*"#, &t));
    }
}
