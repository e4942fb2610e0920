//! `COPY … FROM STDIN` in text format: how the Postgres destination sends rows.

use bytes::{BufMut, BytesMut};
use futures::SinkExt;
use strata_common::ident::quote_ident;
use strata_stager::schema::TableSchema;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::retry::classify;
use crate::destinations::DestError;

/// One row of COPY text values (`None` is NULL).
pub(super) type TextRow = Vec<Option<String>>;

/// COPY data is sent in chunks of about this size.
const COPY_CHUNK: usize = 1 << 20;

pub(super) fn quoted(schema: &TableSchema, cols: &[usize]) -> Vec<String> {
    cols.iter().map(|&i| quote_ident(&schema.columns[i].name)).collect()
}

/// `COPY … FROM STDIN` in text format.
pub(super) async fn copy_in(tx: &Client, table: &str, columns: &[String], rows: &[TextRow]) -> Result<(), DestError> {
    copy_rows(tx, table, columns, rows).await.map_err(|(context, e)| classify(context, &e))
}

/// [`copy_in`] with PostgreSQL's own error, and what was being done, so a
/// caller can branch on the SQLSTATE.
pub(super) async fn copy_rows(tx: &Client, table: &str, columns: &[String], rows: &[TextRow]) -> Result<(), (&'static str, tokio_postgres::Error)> {
    let sink = tx.copy_in::<_, bytes::Bytes>(&format!("COPY {table} ({}) FROM STDIN", columns.join(", "))).await.map_err(|e| ("starting COPY", e))?;
    futures::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(COPY_CHUNK);
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b'\t');
            }
            match v {
                None => buf.put_slice(b"\\N"),
                Some(s) => escape_copy(s, &mut buf),
            }
        }
        buf.put_u8(b'\n');
        if buf.len() >= COPY_CHUNK {
            sink.send(buf.split().freeze()).await.map_err(|e| ("sending COPY data", e))?;
        }
    }
    if !buf.is_empty() {
        sink.send(buf.freeze()).await.map_err(|e| ("sending COPY data", e))?;
    }
    sink.finish().await.map_err(|e| ("finishing COPY", e))?;
    Ok(())
}

/// [`copy_in`] behind a savepoint: `Ok(false)` when a row's key is
/// already in the table (a unique violation), after rolling the COPY back,
/// so the caller can apply the rows another way in the same transaction.
pub(super) async fn copy_unless_held(tx: &Client, table: &str, columns: &[String], rows: &[TextRow]) -> Result<bool, DestError> {
    execute(tx, "SAVEPOINT strata_copy").await?;
    match copy_rows(tx, table, columns, rows).await {
        Ok(()) => execute(tx, "RELEASE SAVEPOINT strata_copy").await.map(|()| true),
        Err((_, e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tracing::debug!(table, error = %e, "the destination holds some of the copied keys");
            execute(tx, "ROLLBACK TO SAVEPOINT strata_copy").await.map(|()| false)
        }
        Err((context, e)) => Err(classify(context, &e)),
    }
}

/// Runs `sql` in the session, naming it in the error.
pub(super) async fn execute(tx: &Client, sql: &str) -> Result<(), DestError> {
    tx.batch_execute(sql).await.map_err(|e| classify(sql, &e))
}

/// Escapes a value for COPY's text format.
fn escape_copy(s: &str, buf: &mut BytesMut) {
    for b in s.bytes() {
        match b {
            b'\\' => buf.put_slice(b"\\\\"),
            b'\n' => buf.put_slice(b"\\n"),
            b'\r' => buf.put_slice(b"\\r"),
            b'\t' => buf.put_slice(b"\\t"),
            b => buf.put_u8(b),
        }
    }
}
