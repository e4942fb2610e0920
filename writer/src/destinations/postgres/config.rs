//! A Postgres destination's spec, and connecting to it.

use serde::{Deserialize, Serialize};
use strata_common::config::{has_literal_password, redact_conn_str};
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

/// Connects with the spec's URL (`${VAR}` expanded from the environment) and
/// pins the session settings the text forms of staged values assume.
pub async fn connect(spec: &PostgresSpec) -> Result<(Client, tokio::task::JoinHandle<()>), DestError> {
    let url = expand_env(&spec.url).map_err(DestError::Permanent)?;
    let (client, task) = strata_common::pgconn::connect(&url, "destination").await.map_err(|e| {
        let message = e.to_string();
        if e.is_transient() { DestError::Transient(message) } else { DestError::Permanent(message) }
    })?;
    for (name, sql) in setting_statements() {
        client.batch_execute(&sql).await.map_err(|e| classify(&format!("setting {name}"), &e))?;
    }
    Ok((client, task))
}
