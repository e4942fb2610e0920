//! Which PostgreSQL errors are worth retrying.

use crate::destinations::DestError;

/// Connection failures, serialization failures and deadlocks (class 40),
/// insufficient resources (53), operator intervention such as a shutdown
/// (57) and system errors (58) are transient; anything else — bad data,
/// missing privileges, constraint violations — fails the same way again.
pub fn classify(context: &str, e: &tokio_postgres::Error) -> DestError {
    let message = match e.as_db_error() {
        Some(db) => format!("{context}: {} ({})", db.message(), db.code().code()),
        None => format!("{context}: {e}"),
    };
    match e.code().map(|c| c.code()) {
        None => DestError::Transient(message),
        Some(c) if ["08", "40", "53", "57", "58"].iter().any(|p| c.starts_with(p)) => DestError::Transient(message),
        Some(_) => DestError::Permanent(message),
    }
}
