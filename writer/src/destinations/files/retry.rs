//! Which object store errors are worth retrying: the stage's own rules
//! (throttling, timeouts, server errors retry; permissions and bad
//! requests do not).

use strata_stager::StageError;

use crate::destinations::DestError;

pub fn classify(context: &str, e: &StageError) -> DestError {
    let message = format!("{context}: {e}");
    if e.is_retriable() { DestError::Transient(message) } else { DestError::Permanent(message) }
}
