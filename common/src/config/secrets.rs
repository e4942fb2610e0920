//! Secrets: the one `${…}` reference rule, types that never print their
//! value, and redaction of connection strings.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a reference could not be expanded (never holds a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("unterminated ${{…}} reference")]
    Unterminated,
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("reading secret file {path}: {message}")]
    File { path: String, message: String },
}

/// The one rule for secrets, in `strata.toml` and in destination specs
/// alike: `${NAME}` is the environment variable `NAME`, `${file:PATH}` is
/// the contents of file `PATH` (as Docker and Kubernetes mount secrets;
/// one trailing newline dropped), and `$${` is a literal `${`.
pub fn expand_references(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ReferenceError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(ReferenceError::Unterminated)?;
            let name = &tail[..end];
            let value = match name.strip_prefix("file:") {
                Some(path) => read_secret_file(path)?,
                None => env(name).ok_or_else(|| ReferenceError::MissingEnv(name.to_owned()))?,
            };
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `s` is exactly one secret reference (`${NAME}` or
/// `${file:PATH}`) and nothing else: what a spec stored in the stage may
/// hold in place of a secret.
pub fn is_reference(s: &str) -> bool {
    s.strip_prefix("${").and_then(|rest| rest.strip_suffix('}')).is_some_and(|name| !name.is_empty() && !name.contains(['$', '{', '}']))
}

fn read_secret_file(path: &str) -> Result<String, ReferenceError> {
    let fail = |message: String| ReferenceError::File { path: path.to_owned(), message };
    if path.is_empty() {
        return Err(fail("no path after file:".to_owned()));
    }
    let mut text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Applies `STRATA_A__B=value` overrides; returns `(dotted key, variable)` for
/// error attribution.
/// A secret string: `Debug` and `Display` print `****`.
#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }

    /// The secret itself: call only where it is sent, never where it is logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl Serialize for SecretString {
    /// Serializes redacted: a config written back out never carries secrets.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("****")
    }
}

/// A connection string whose password never prints: `Display` and `Debug`
/// show `postgres://app:****@db/app` (or `password=****` in key=value form).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretUrl(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string with its password replaced by `****`.
    pub fn redacted(&self) -> String {
        redact_conn_str(&self.0)
    }
}

/// Whether a connection string carries a password that is not a `${VAR}` reference.
pub fn has_literal_password(url: &str) -> bool {
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
            && !password.is_empty()
            && !is_reference(password)
        {
            return true;
        }
        if let Some(query) = rest.split_once('?').map(|(_, q)| q) {
            return query.split('&').any(|kv| kv.split_once('=').is_some_and(|(k, v)| k.eq_ignore_ascii_case("password") && !v.is_empty() && !is_reference(v)));
        }
        return false;
    }
    url.split_whitespace().any(|t| t.split_once('=').is_some_and(|(k, v)| k.eq_ignore_ascii_case("password") && !v.is_empty() && !is_reference(v)))
}

/// Redacts the password of a URL or libpq key=value connection string, and
/// any `password=` query parameter. A string that is neither is withheld whole.
pub fn redact_conn_str(s: &str) -> String {
    if s.contains("://") {
        return match url::Url::parse(s) {
            Ok(mut u) => {
                if u.password().is_some() {
                    // Only fails for cannot-be-a-base URLs, which have no password.
                    let _ = u.set_password(Some("****"));
                }
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = is_secret_key(&k);
                        (k.into_owned(), if secret { "****".to_owned() } else { v.into_owned() })
                    })
                    .collect();
                if !pairs.is_empty() {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
                u.to_string()
            }
            Err(_) => "****".to_owned(),
        };
    }
    redact_conninfo(s)
}

fn is_secret_key(k: &str) -> bool {
    matches!(k.to_ascii_lowercase().as_str(), "password" | "sslpassword")
}

/// Redacts a libpq `key = value` string, following libpq's lexing: spaces
/// around `=` are allowed, and a value may be single-quoted with `\'` and
/// `\\` escapes. Anything that does not lex is withheld whole.
fn redact_conninfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String| {
        while let Some(c) = chars.peek().copied().filter(|c| c.is_whitespace()) {
            out.push(c);
            chars.next();
        }
    };
    loop {
        skip_ws(&mut chars, &mut out);
        if chars.peek().is_none() {
            return out;
        }
        let mut key = String::new();
        while let Some(c) = chars.peek().copied().filter(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
            chars.next();
        }
        out.push_str(&key);
        skip_ws(&mut chars, &mut out);
        if chars.next() != Some('=') {
            return "****".to_owned();
        }
        out.push('=');
        skip_ws(&mut chars, &mut out);
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            value.push('\'');
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => {
                        value.push('\\');
                        match chars.next() {
                            Some(c) => value.push(c),
                            None => return "****".to_owned(),
                        }
                    }
                    Some('\'') => {
                        value.push('\'');
                        break;
                    }
                    Some(c) => value.push(c),
                    None => return "****".to_owned(),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| !c.is_whitespace()) {
                value.push(c);
                chars.next();
            }
        }
        out.push_str(if is_secret_key(&key) { "****" } else { &value });
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}
