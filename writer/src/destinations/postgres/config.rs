//! A Postgres destination's spec, and connecting to it.

use serde::{Deserialize, Serialize};
use strata_common::config::{has_literal_password, redact_conn_str};
use strata_common::pgconn::{ConnectError, PgConnect};
use strata_common::pgtext::setting_statements;
use tokio_postgres::Client;

use super::retry::classify;
use crate::destinations::{DestError, expand_env};

/// How the Postgres destination writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    /// Same tables, same rows as the source.
    #[default]
    Mirror,
    /// Every change appended, with its metadata columns.
    History,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSpec {
    /// Connection string; the password as `${VAR}`.
    pub url: String,
    #[serde(default)]
    pub mode: PostgresMode,
}

impl PostgresSpec {
    /// Checks the spec without I/O: a connection string without a literal
    /// password, since specs are stored in the stage.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("postgres url must not be empty".to_owned());
        }
        if has_literal_password(&self.url) {
            return Err(format!(
                "postgres url {} holds a password, and specs are stored in the stage: write it as ${{VAR}} \
                 (e.g. postgres://app:${{DEST_PGPASSWORD}}@db/app) and set VAR in the writer's environment",
                redact_conn_str(&self.url)
            ));
        }
        Ok(())
    }

    /// One line for `destination list`: never the connection string.
    pub fn describe(&self) -> String {
        format!("postgres ({})", format!("{:?}", self.mode).to_lowercase())
    }
}

/// The `application_name` of a destination session whose URL sets none:
/// `strata-writer {pid}@{host}`, so that `pg_stat_activity` on the
/// destination shows which writer process delivers into it. The pid comes
/// first: PostgreSQL keeps only the first 63 bytes.
pub fn application_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "unknown".to_owned());
    format!("strata-writer {}@{host}", std::process::id())
}

/// Connects with the spec's URL (`${VAR}` expanded from the environment),
/// named by [`application_name`] unless the URL names the session itself,
/// and pins the session settings the text forms of staged values assume.
pub async fn connect(spec: &PostgresSpec) -> Result<(Client, tokio::task::JoinHandle<()>), DestError> {
    let url = expand_env(&spec.url).map_err(DestError::Permanent)?;
    let fail = |e: ConnectError| {
        let message = e.to_string();
        if e.is_transient() { DestError::Transient(message) } else { DestError::Permanent(message) }
    };
    let conn: PgConnect = url.parse().map_err(fail)?;
    let (client, task) = conn.with_default_application_name(&application_name()).connect("destination").await.map_err(fail)?;
    for (name, sql) in setting_statements() {
        client.batch_execute(&sql).await.map_err(|e| classify(&format!("setting {name}"), &e))?;
    }
    Ok((client, task))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_application_name_names_the_writer_process_pid_first() {
        let name = super::application_name();
        let prefix = format!("strata-writer {}@", std::process::id());
        assert!(name.starts_with(&prefix) && name.len() > prefix.len(), "{name}");
    }
}
