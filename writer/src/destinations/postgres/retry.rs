//! Which PostgreSQL errors are worth retrying.

use strata_common::pgconn::is_transient_sqlstate;

use crate::destinations::DestError;

/// A failed connection (no SQLSTATE) and the SQLSTATEs of
/// [`is_transient_sqlstate`] are transient; anything else — bad data,
/// missing privileges, constraint violations — fails the same way again.
pub fn classify(context: &str, e: &tokio_postgres::Error) -> DestError {
    let message = match e.as_db_error() {
        Some(db) => format!("{context}: {} ({})", db.message(), db.code().code()),
        None => format!("{context}: {e}"),
    };
    if e.code().is_none_or(|c| is_transient_sqlstate(c.code())) { DestError::Transient(message) } else { DestError::Permanent(message) }
}

/// Maps a tokio-postgres error to a [`DestError`] with what was being done.
pub(super) fn err(context: &str) -> impl Fn(tokio_postgres::Error) -> DestError + '_ {
    move |e| classify(context, &e)
}
