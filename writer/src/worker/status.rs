//! A worker's status as `status` and `/metrics` show it, shared between the
//! worker and the writer that publishes it with each lease renewal.

use std::sync::{Arc, Mutex};

use strata_stager::control::WorkerStatus;

use crate::destinations::DestError;

pub type SharedWorkerStatus = Arc<Mutex<WorkerStatus>>;

/// Changes the status under its lock.
pub(super) fn set(status: &SharedWorkerStatus, f: impl FnOnce(&mut WorkerStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// Shows a transient failure in the status.
pub(super) fn failing(status: &SharedWorkerStatus, e: &DestError) {
    set(status, |s| {
        s.state = "failing".to_owned();
        s.last_error = Some(e.to_string());
        s.retries += 1;
    });
}
