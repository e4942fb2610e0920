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
    let (client, task) = strata_common::pgconn::connect(&url, "destination").await.map_err(|e| {
        let message = e.to_string();
        if e.is_transient() { DestError::Transient(message) } else { DestError::Permanent(message) }
    })?;
    for (name, sql) in setting_statements() {
        client.batch_execute(&sql).await.map_err(|e| classify(&format!("setting {name}"), &e))?;
    }
    Ok((client, task))
}
