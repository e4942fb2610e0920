//! A worker's status as `status` and `/metrics` show it, shared between the
//! worker and the writer that publishes it with each lease renewal, and the
//! destination's counters.

use std::sync::{Arc, Mutex};

use strata_stager::control::WorkerStatus;

use crate::destinations::DestError;
use crate::metrics::DestinationMetrics;

/// A worker's status and counters, shared with the writer.
#[derive(Clone)]
pub struct SharedWorkerStatus {
    status: Arc<Mutex<WorkerStatus>>,
    pub metrics: DestinationMetrics,
}

impl SharedWorkerStatus {
    pub fn new(metrics: DestinationMetrics) -> SharedWorkerStatus {
        SharedWorkerStatus { status: Arc::new(Mutex::new(WorkerStatus::default())), metrics }
    }

    /// A copy of the status as it is now.
    pub fn get(&self) -> WorkerStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Changes the status under its lock.
pub(super) fn set(status: &SharedWorkerStatus, f: impl FnOnce(&mut WorkerStatus)) {
    if let Ok(mut s) = status.status.lock() {
        f(&mut s);
    }
}

/// Shows a transient failure in the status and counts it.
pub(super) fn failing(status: &SharedWorkerStatus, e: &DestError) {
    status.metrics.retries.inc_by(1);
    status.metrics.error_now();
    set(status, |s| {
        s.state = "failing".to_owned();
        s.last_error = Some(e.to_string());
        s.retries += 1;
    });
}
