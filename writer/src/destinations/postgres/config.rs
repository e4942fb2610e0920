//! Connecting to a Postgres destination.

use strata_common::pgtext::setting_statements;
use tokio_postgres::Client;

use super::retry::classify;
use crate::destinations::DestError;
use crate::spec::{PostgresSpec, expand_env};

/// Connects with the spec's URL (`${VAR}` expanded from the environment) and
/// pins the session settings the text forms of staged values assume.
pub async fn connect(spec: &PostgresSpec) -> Result<(Client, tokio::task::JoinHandle<()>), DestError> {
    let url = expand_env(&spec.url).map_err(DestError::Permanent)?;
    let redacted = strata_common::config::redact_conn_str(&spec.url);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| classify(&format!("connecting to {redacted}"), &e))?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "destination connection ended");
        }
    });
    for (name, sql) in setting_statements() {
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| classify(&format!("setting {name}"), &e))?;
    }
    Ok((client, task))
}
