//! Connections to PostgreSQL with libpq's TLS settings, for every ordinary
//! connection strata opens (the reader's queries, snapshot and backfill, and
//! every Postgres destination), and the same settings handed to the
//! replication connection.
//!
//! A connection string is a libpq URI or `key=value` string. The TLS keys
//! mean what they mean to libpq:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow` | only if the server insists | not checked |
//! | `prefer` (default) | if the server offers it; a failed handshake falls back to plain text | not checked |
//! | `require` | always | not checked, unless `sslrootcert` is given (then as `verify-ca`) |
//! | `verify-ca` | always | signed by a CA in `sslrootcert` |
//! | `verify-full` | always | signed by a CA in `sslrootcert` and naming the host |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the
//! Mozilla root set built into strata (the same on every machine); without
//! it `~/.postgresql/root.crt` is used when it exists, as libpq does.
//! `sslcert` and `sslkey` name a client certificate and its key (PEM;
//! PKCS#8, PKCS#1 or SEC1, unencrypted). Unix-socket hosts never use TLS.
//!
//! A failure that retrying cannot heal — a certificate from the wrong CA, a
//! host name the certificate does not name, `require` against a server
//! without TLS, an unreadable key file — is a [`ConnectError`] whose
//! [`is_transient`](ConnectError::is_transient) is false, so services stop on
//! it and show it instead of reconnecting forever.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio_postgres::Client;
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

mod verify;

use verify::{AnyCertificate, ChainVerifier};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether this mode never connects without TLS.
    pub fn requires_tls(self) -> bool {
        self >= SslMode::Require
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!("sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"));
            }
        })
    }
}

/// Where the CA certificates that sign the server's certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file.
    File(PathBuf),
    /// `sslrootcert=system`: the Mozilla root set built into strata.
    System,
}

/// The TLS settings of one connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_certs: Option<RootCerts>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsSettings {
    /// The mode libpq actually applies: `require` with a root certificate
    /// verifies the CA.
    pub fn effective_mode(&self) -> SslMode {
        if self.mode == SslMode::Require && self.root_certs.is_some() { SslMode::VerifyCa } else { self.mode }
    }
}

/// What can go wrong connecting; see the module docs for which is permanent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection string itself is wrong.
    #[error("connection string {target}: {message}")]
    Config { target: String, message: String },
    /// A certificate, key or CA file could not be used.
    #[error("connecting to {target} with sslmode={mode}: {message}")]
    TlsFiles { target: String, mode: SslMode, message: String },
    /// The TLS handshake or the server's certificate failed.
    #[error("connecting to {target} with sslmode={mode}: {message}")]
    Tls { target: String, mode: SslMode, message: String, permanent: bool, error: tokio_postgres::Error },
    /// Everything else: the server refused (authentication, a missing
    /// database) or the network failed. (tokio-postgres's own `Display`
    /// leaves out the server's message, so `message` spells it out.)
    #[error("connecting to {target}: {message}")]
    Postgres { target: String, message: String, error: tokio_postgres::Error },
}

impl ConnectError {
    /// Whether trying again later may succeed: network failures and a
    /// server starting or shutting down, not a configuration problem.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Config { .. } | ConnectError::TlsFiles { .. } => false,
            ConnectError::Tls { permanent, .. } => !permanent,
            ConnectError::Postgres { error, .. } => error.code().is_none_or(|code| is_transient_sqlstate(code.code())),
        }
    }
}

/// Whether an error with this SQLSTATE may go away by itself, for every
/// PostgreSQL connection strata has: 08 connection exceptions, 40
/// serialization failures and deadlocks, 53 insufficient resources, 57
/// operator intervention (shutdown, starting up), 58 system errors, and
/// 55006 object in use (a slot still held by a walsender that has not
/// exited yet). Anything else — bad data, a missing privilege or object,
/// a constraint — fails the same way again.
pub fn is_transient_sqlstate(code: &str) -> bool {
    ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class)) || code == "55006"
}

/// A parsed connection string: the part tokio-postgres reads and the TLS
/// settings strata applies itself.
#[derive(Clone)]
pub struct PgConnect {
    /// The connection string without the TLS keys (still holds any password).
    rest: String,
    config: tokio_postgres::Config,
    tls: TlsSettings,
    target: String,
}

impl fmt::Debug for PgConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnect").field("target", &self.target).field("tls", &self.tls).finish_non_exhaustive()
    }
}

/// What a URI query value keeps unescaped: letters, digits and `-._/`.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'/');

/// The TLS keys strata handles (tokio-postgres would reject most of them).
const TLS_KEYS: [&str; 5] = ["sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword"];

impl FromStr for PgConnect {
    type Err = ConnectError;

    fn from_str(conn: &str) -> Result<PgConnect, ConnectError> {
        let (rest, pairs) = split_tls_keys(conn).map_err(|message| ConnectError::Config { target: "(unparsed)".to_owned(), message })?;
        let mut config =
            tokio_postgres::Config::from_str(&rest).map_err(|e| ConnectError::Config { target: "(unparsed)".to_owned(), message: e.to_string() })?;
        let target = describe_target(&config);
        let fail = |message: String| ConnectError::Config { target: target.clone(), message };
        let mut tls = TlsSettings { mode: SslMode::Prefer, root_certs: None, client_cert: None, client_key: None };
        for (key, value) in pairs {
            match key.as_str() {
                "sslmode" => tls.mode = value.parse().map_err(fail)?,
                "sslrootcert" if value == "system" => tls.root_certs = Some(RootCerts::System),
                "sslrootcert" => tls.root_certs = Some(RootCerts::File(PathBuf::from(value))),
                "sslcert" => tls.client_cert = Some(PathBuf::from(value)),
                "sslkey" => tls.client_key = Some(PathBuf::from(value)),
                _ => return Err(fail("sslpassword is not supported: give sslkey an unencrypted key file".to_owned())),
            }
        }
        if tls.root_certs.is_none()
            && let Some(default) = home_file("root.crt").filter(|p| p.exists())
        {
            tls.root_certs = Some(RootCerts::File(default));
        }
        if tls.root_certs == Some(RootCerts::System) && tls.mode < SslMode::VerifyFull {
            // libpq refuses this too: trusting every public CA without
            // checking the host name would accept anyone's certificate.
            return Err(fail(format!("sslrootcert=system needs sslmode=verify-full, not {}", tls.mode)));
        }
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(fail("sslcert and sslkey go together: give both or neither".to_owned()));
        }
        if only_unix_sockets(&config) {
            // PostgreSQL never offers TLS on a Unix socket; libpq ignores
            // sslmode there.
            tls.mode = SslMode::Disable;
        }
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        Ok(PgConnect { rest, config, tls, target })
    }
}

impl PgConnect {
    /// `host:port/database`, for messages; never a password.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// Sets `application_name` to `name` unless the connection string set
    /// one, so that `pg_stat_activity` on the server names the strata
    /// process behind each session while an operator's choice still wins.
    /// PostgreSQL keeps the first 63 bytes.
    pub fn with_default_application_name(mut self, name: &str) -> PgConnect {
        if self.config.get_application_name().is_none() {
            self.config.application_name(name);
        }
        self
    }

    /// The `application_name` the server will be sent, if any.
    pub fn application_name(&self) -> Option<&str> {
        self.config.get_application_name()
    }

    /// The connection string for a libpq-style client that reads `sslmode`
    /// and `sslrootcert` itself (the replication connection): the TLS keys
    /// resolved as [`connect`](Self::connect) applies them.
    pub fn libpq_string(&self) -> String {
        let mut keys = vec![("sslmode", self.tls.effective_mode().as_str().to_owned())];
        match &self.tls.root_certs {
            Some(RootCerts::File(path)) => keys.push(("sslrootcert", path.display().to_string())),
            Some(RootCerts::System) => keys.push(("sslrootcert", "system".to_owned())),
            None => {}
        }
        let mut out = self.rest.clone();
        if is_uri(&out) {
            for (key, value) in keys {
                let sep = if out.contains('?') { '&' } else { '?' };
                let value = percent_encoding::utf8_percent_encode(&value, QUERY_VALUE);
                out.push_str(&format!("{sep}{key}={value}"));
            }
        } else {
            for (key, value) in keys {
                out.push_str(&format!(" {key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'")));
            }
        }
        out
    }

    /// Connects, applying the TLS settings, and spawns the connection task
    /// (its end is logged at debug level as `what`).
    pub async fn connect(&self, what: &'static str) -> Result<(Client, tokio::task::JoinHandle<()>), ConnectError> {
        use tokio_postgres::config::SslMode as Wire;
        let mode = self.tls.effective_mode();
        let attempts: &[Wire] = match mode {
            SslMode::Disable => &[Wire::Disable],
            SslMode::Allow => &[Wire::Disable, Wire::Require],
            SslMode::Prefer => &[Wire::Prefer, Wire::Disable],
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => &[Wire::Require],
        };
        let tls = MakeRustlsConnect::new(self.client_config()?);
        let mut last = None;
        for (i, wire) in attempts.iter().enumerate() {
            let mut config = self.config.clone();
            config.ssl_mode(*wire);
            match config.connect(tls.clone()).await {
                Ok((client, conn)) => {
                    let task = tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "{what} connection ended");
                        }
                    });
                    return Ok((client, task));
                }
                Err(e) => {
                    let err = self.classify(e);
                    let retry = i + 1 < attempts.len()
                        && match (mode, &err) {
                            // libpq's prefer: a failed handshake tries plain text.
                            (SslMode::Prefer, ConnectError::Tls { .. }) => true,
                            // libpq's allow: plain text refused, try TLS.
                            (SslMode::Allow, ConnectError::Postgres { error, .. }) => error.code().is_some_and(|c| c.code().starts_with("28")),
                            _ => false,
                        };
                    if !retry {
                        return Err(err);
                    }
                    tracing::debug!(error = %err, "trying the next sslmode step");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| unreachable!("every sslmode has at least one attempt")))
    }

    fn classify(&self, e: tokio_postgres::Error) -> ConnectError {
        let target = self.target.clone();
        let mode = self.tls.effective_mode();
        if let Some(tls_error) = rustls_error(&e) {
            let (message, permanent) = describe_tls_error(tls_error, &self.tls, &target);
            return ConnectError::Tls { target, mode, message, permanent, error: e };
        }
        // tokio-postgres reports this one as a message only.
        if e.code().is_none() && e.to_string().contains("server does not support TLS") {
            let message = format!("the server does not offer TLS, and sslmode={mode} never connects without it");
            return ConnectError::Tls { target, mode, message, permanent: true, error: e };
        }
        ConnectError::Postgres { target, message: pg_message(&e), error: e }
    }

    fn client_config(&self) -> Result<ClientConfig, ConnectError> {
        let mode = self.tls.effective_mode();
        let fail = |message: String| ConnectError::TlsFiles { target: self.target.clone(), mode, message };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder =
            ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| fail(format!("TLS set-up: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => {
                Arc::new(AnyCertificate { algorithms: provider.signature_verification_algorithms })
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = self.root_store().map_err(fail)?;
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| fail(format!("building the certificate verifier: {e}")))?;
                Arc::new(ChainVerifier { webpki, check_name: mode == SslMode::VerifyFull })
            }
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        match (&self.tls.client_cert, &self.tls.client_key) {
            (Some(cert), Some(key)) => {
                let certs = read_certs(cert).map_err(fail)?;
                let key =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| fail(format!("sslkey {}: {e} (expected an unencrypted PEM private key)", key.display())))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| fail(format!("sslcert/sslkey: {e}")))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    fn root_store(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        match &self.tls.root_certs {
            Some(RootCerts::System) => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(RootCerts::File(path)) => {
                for cert in read_certs(path)? {
                    store.add(cert).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
            }
            None => {
                return Err(format!(
                    "sslmode={} checks the server's certificate against a CA, and no CA is given: set sslrootcert \
                     to the CA's PEM file (or to `system` with verify-full for a publicly signed server), or \
                     place it at ~/.postgresql/root.crt",
                    self.tls.mode
                ));
            }
        }
        Ok(store)
    }
}

/// Parses `conn` and connects (see [`PgConnect::connect`]).
pub async fn connect(conn: &str, what: &'static str) -> Result<(Client, tokio::task::JoinHandle<()>), ConnectError> {
    conn.parse::<PgConnect>()?.connect(what).await
}

/// A tokio-postgres error with what its `Display` leaves out: the server's
/// message and SQLSTATE, or the chain of causes.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    }
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path).and_then(|iter| iter.collect::<Result<Vec<_>, _>>()).map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn home_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql").join(name))
}

/// The rustls error under a tokio-postgres error, if the handshake failed.
fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // tokio-rustls wraps it in an io::Error, whose `source` skips it.
        if let Some(r) = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return Some(r);
        }
        cause = c.source();
    }
    None
}

/// A message that says what to change, and whether retrying can help.
fn describe_tls_error(e: &rustls::Error, tls: &TlsSettings, target: &str) -> (String, bool) {
    let ca = match &tls.root_certs {
        Some(RootCerts::File(p)) => format!("the CA file {}", p.display()),
        Some(RootCerts::System) => "the built-in public roots (sslrootcert=system)".to_owned(),
        None => "no CA".to_owned(),
    };
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            (format!("the server's certificate is not signed by a CA in {ca} ({e})"), true)
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => (
            format!(
                "the server's certificate does not name the host in {target} ({e}); connect by a name the certificate \
                 holds, or use sslmode=verify-ca to check the CA only"
            ),
            true,
        ),
        rustls::Error::InvalidCertificate(_) => (format!("the server's certificate was refused: {e}"), true),
        rustls::Error::AlertReceived(alert) => {
            use rustls::AlertDescription as A;
            let permanent = matches!(
                alert,
                A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::AccessDenied
                    | A::CertificateRequired
                    | A::HandshakeFailure
                    | A::ProtocolVersion
                    | A::InsufficientSecurity
            );
            let hint = if matches!(alert, A::CertificateRequired | A::BadCertificate | A::UnknownCA) {
                " (the server wants a client certificate it trusts: set sslcert and sslkey)"
            } else {
                ""
            };
            (format!("the server ended the TLS handshake: {e}{hint}"), permanent)
        }
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoCertificatesPresented => (format!("TLS handshake: {e}"), true),
        _ => (format!("TLS handshake: {e}"), false),
    }
}

fn is_uri(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

fn only_unix_sockets(config: &tokio_postgres::Config) -> bool {
    let hosts = config.get_hosts();
    !hosts.is_empty() && hosts.iter().all(|h| matches!(h, Host::Unix(_)))
}

fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(default database)"))
}

/// Splits the TLS keys out of a libpq URI or `key=value` string: the rest
/// (as written) and the TLS keys (decoded).
fn split_tls_keys(conn: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut tls = Vec::new();
    if is_uri(conn) {
        let Some((base, query)) = conn.split_once('?') else { return Ok((conn.to_owned(), tls)) };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("URI parameter {pair:?} has no `=`"))?;
            if TLS_KEYS.contains(&key) {
                let value = percent_encoding::percent_decode_str(value).decode_utf8().map_err(|_| format!("URI parameter {key} is not UTF-8"))?;
                tls.push((key.to_owned(), value.into_owned()));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, tls));
    }
    let mut kept = Vec::new();
    for (key, value, raw) in KeyValues::new(conn) {
        let (key, value) = (key?, value?);
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            kept.push(raw);
        }
    }
    Ok((kept.join(" "), tls))
}

/// libpq `key = value` pairs: values may be single-quoted, with `\` escaping
/// the next character. Yields the key, the value and the pair as written.
struct KeyValues<'a> {
    rest: &'a str,
}

impl<'a> KeyValues<'a> {
    fn new(s: &'a str) -> Self {
        KeyValues { rest: s }
    }
}

impl<'a> Iterator for KeyValues<'a> {
    type Item = (Result<String, String>, Result<String, String>, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.rest.trim_start();
        if start.is_empty() {
            return None;
        }
        let Some(eq) = start.find('=') else {
            self.rest = "";
            return Some((Err(format!("{start:?} is not a key=value pair")), Err(String::new()), start));
        };
        let key = start[..eq].trim().to_owned();
        let after = start[eq + 1..].trim_start();
        let mut value = String::new();
        let mut chars = after.char_indices().peekable();
        let quoted = after.starts_with('\'');
        if quoted {
            chars.next();
        }
        let mut end = after.len();
        let mut closed = !quoted;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(next);
                    }
                }
                '\'' if quoted => {
                    end = i + 1;
                    closed = true;
                    break;
                }
                c if !quoted && c.is_whitespace() => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        let consumed = start.len() - after.len() + end;
        let raw = &start[..consumed];
        self.rest = &start[consumed..];
        let value = if closed { Ok(value) } else { Err(format!("the value of {key} has no closing quote")) };
        Some((Ok(key), value, raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> PgConnect {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn tls_keys_are_taken_out_of_uris_and_key_values() {
        let c = parse("postgres://u:p@db.example:6432/app?sslmode=verify-full&sslrootcert=%2Fca%20dir%2Froot.pem&application_name=x");
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.tls.root_certs, Some(RootCerts::File("/ca dir/root.pem".into())));
        assert_eq!(c.rest, "postgres://u:p@db.example:6432/app?application_name=x");
        assert_eq!(c.target(), "db.example:6432/app");

        let c = parse("host=db port=5433 dbname=app password='it\\'s x' sslmode=require sslcert='/c d/client.crt' sslkey=/k");
        assert_eq!(c.tls.mode, SslMode::Require);
        assert_eq!(c.tls.client_cert, Some("/c d/client.crt".into()));
        assert_eq!(c.rest, "host=db port=5433 dbname=app password='it\\'s x'");
        assert_eq!(c.target(), "db:5433/app");
    }

    #[test]
    fn defaults_and_refusals_follow_libpq() {
        assert_eq!(parse("postgres://db/app").tls.mode, SslMode::Prefer);
        assert_eq!(parse("host=/run/postgresql dbname=app sslmode=require").tls.mode, SslMode::Disable);
        let require_with_ca = parse("postgres://db/app?sslmode=require&sslrootcert=/ca.pem");
        assert_eq!(require_with_ca.tls.effective_mode(), SslMode::VerifyCa);
        for bad in [
            "postgres://db/app?sslmode=verify",
            "postgres://db/app?sslmode=verify-ca&sslrootcert=system",
            "postgres://db/app?sslcert=/c.pem",
            "postgres://db/app?sslpassword=x",
            "host=db sslrootcert='/unterminated",
        ] {
            let err = bad.parse::<PgConnect>().expect_err(bad);
            assert!(!err.is_transient(), "{bad}: {err}");
        }
    }

    #[test]
    fn libpq_string_carries_the_resolved_tls_keys() {
        let c = parse("postgres://u@db/app?sslmode=require&sslrootcert=/ca%20x.pem");
        assert_eq!(c.libpq_string(), "postgres://u@db/app?sslmode=verify-ca&sslrootcert=/ca%20x.pem");
        let c = parse("host=db dbname=app sslmode=verify-full sslrootcert=system");
        assert_eq!(c.libpq_string(), "host=db dbname=app sslmode='verify-full' sslrootcert='system'");
    }

    #[test]
    fn a_default_application_name_never_replaces_the_one_given() {
        let given = parse("postgres://u@db/app?application_name=etl").with_default_application_name("strata-writer 7@h");
        assert_eq!(given.application_name(), Some("etl"));
        let given = parse("host=db dbname=app application_name='my app'").with_default_application_name("strata-writer 7@h");
        assert_eq!(given.application_name(), Some("my app"));
        let unset = parse("postgres://u@db/app").with_default_application_name("strata-writer 7@h");
        assert_eq!(unset.application_name(), Some("strata-writer 7@h"));
    }

    #[test]
    fn error_messages_never_hold_the_password() {
        let err = "postgres://u:hunter2@db/app?sslmode=bogus".parse::<PgConnect>().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
