//! Table identities.
//!
//! PostgreSQL identifiers may hold any character but NUL, including dots,
//! quotes, slashes, spaces and non-ASCII text. strata keeps them exactly as the
//! catalog spells them; quoting for SQL and percent-encoding for stage keys
//! happen at the edges, never by pasting strings together.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A schema-qualified table name, as spelled in the catalog (unquoted).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

/// An identifier that cannot name a PostgreSQL object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} {value:?} contains a NUL character")]
    Nul { what: &'static str, value: String },
    #[error("table {input:?} is not of the form schema.table (quote parts that contain dots: \"my.schema\".\"my.table\")")]
    NotQualified { input: String },
    #[error("table {input:?}: unterminated quoted identifier")]
    Unterminated { input: String },
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Result<Self, IdentError> {
        let t = TableName { schema: schema.into(), name: name.into() };
        t.validate()?;
        Ok(t)
    }

    /// Checks both parts are non-empty and NUL-free.
    pub fn validate(&self) -> Result<(), IdentError> {
        validate_ident("schema name", &self.schema)?;
        validate_ident("table name", &self.name)
    }

    /// Parses `schema.table` as a user writes it in config or on the command
    /// line: parts are taken literally unless double-quoted, and inside quotes
    /// `""` stands for one `"` (SQL's rule). Unquoted parts are *not*
    /// case-folded: `Public.Users` names the table the catalog spells that way.
    pub fn parse(input: &str) -> Result<Self, IdentError> {
        let parts = split_qualified(input)?;
        match parts.as_slice() {
            [schema, name] => TableName::new(schema.clone(), name.clone()),
            _ => Err(IdentError::NotQualified { input: input.to_owned() }),
        }
    }

    /// The name as SQL: `"schema"."table"`, each part quoted and escaped.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    /// Prints `schema.table`, quoting a part only when it would not parse back
    /// as itself, so `TableName::parse(&t.to_string()) == t`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |s: &str| {
            if s.is_empty() || s.contains(['.', '"']) || s.trim() != s { quote_ident(s) } else { s.to_owned() }
        };
        write!(f, "{}.{}", part(&self.schema), part(&self.name))
    }
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableName({self})")
    }
}

/// Quotes a string constant for SQL as an escape string (`E'…'`), which
/// reads the same whatever `standard_conforming_strings` says: `it's a\b`
/// becomes `E'it''s a\\b'`.
pub fn quote_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes an identifier for SQL: `a"b` becomes `"a""b"`.
pub fn quote_ident(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn validate_ident(what: &'static str, value: &str) -> Result<(), IdentError> {
    if value.is_empty() {
        return Err(IdentError::Empty { what });
    }
    if value.contains('\0') {
        return Err(IdentError::Nul { what, value: value.to_owned() });
    }
    Ok(())
}

/// Splits `a."b.c".d` into `["a", "b.c", "d"]`.
fn split_qualified(input: &str) -> Result<Vec<String>, IdentError> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = input.chars().peekable();
    let mut quoted_part = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if cur.is_empty() && !quoted_part => {
                quoted_part = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                        None => return Err(IdentError::Unterminated { input: input.to_owned() }),
                    }
                }
            }
            '.' => {
                parts.push(std::mem::take(&mut cur));
                quoted_part = false;
            }
            _ if quoted_part => return Err(IdentError::NotQualified { input: input.to_owned() }),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literals_quote_quotes_and_backslashes() {
        assert_eq!(quote_literal("plain"), "E'plain'");
        assert_eq!(quote_literal(r"it's a\b"), r"E'it''s a\\b'");
    }

    #[test]
    fn parses_plain_and_quoted() {
        assert_eq!(TableName::parse("public.users").unwrap(), TableName::new("public", "users").unwrap());
        assert_eq!(TableName::parse(r#""my.schema"."we""ird""#).unwrap(), TableName::new("my.schema", "we\"ird").unwrap());
        assert_eq!(TableName::parse("Public.Users").unwrap().name, "Users");
    }

    #[test]
    fn rejects_bad() {
        assert!(matches!(TableName::parse("users"), Err(IdentError::NotQualified { .. })));
        assert!(matches!(TableName::parse("a.b.c"), Err(IdentError::NotQualified { .. })));
        assert!(matches!(TableName::parse(".b"), Err(IdentError::Empty { .. })));
        assert!(matches!(TableName::parse("\"a.b"), Err(IdentError::Unterminated { .. })));
        assert!(matches!(TableName::parse("\"a\"x.b"), Err(IdentError::NotQualified { .. })));
    }

    #[test]
    fn quotes_for_sql() {
        assert_eq!(TableName::new("s", "a\"b").unwrap().quoted(), r#""s"."a""b""#);
    }

    proptest! {
        #[test]
        fn display_parses_back(schema in "[^\u{0}]{1,12}", name in "[^\u{0}]{1,12}") {
            let t = TableName::new(schema, name).unwrap();
            prop_assert_eq!(TableName::parse(&t.to_string()).unwrap(), t);
        }
    }
}
