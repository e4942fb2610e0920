//! The writer's metrics (`/metrics`), each labelled with the destination
//! and its stream: what a person alerts on.
//!
//! - `strata_writer_destination_state{state}`: 1 for the state the
//!   destination is in, 0 for the others ([`STATES`]). A destination is
//!   reported by the writer that holds it; a paused one, which no writer
//!   holds, by every writer (aggregate with `max by (destination)`).
//! - Counters (`_total`): changes and batches delivered, changes
//!   dead-lettered by the `skip` policy, transient failures retried.
//! - `strata_writer_last_error_timestamp_seconds`: when the destination
//!   last failed, 0 if it has not since this writer took it.
//! - `strata_writer_lag_batches` and `strata_writer_lag_seconds`.
//!
//! A destination's series go when this writer stops reporting it (removed,
//! or taken by another writer), so a dashboard does not show it frozen.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use strata_common::Timestamp;
use strata_common::telemetry::{Registry, Value};
use strata_stager::Stage;
use strata_stager::control::WorkerStatus;
use strata_stager::log::StreamLog;

use crate::spec::DestinationSpec;

/// Every value of the `state` label.
pub const STATES: [&str; 7] = ["starting", "running", "replaying", "sleeping", "failing", "failed", "paused"];

/// The counters a worker moves as it delivers.
#[derive(Clone)]
pub struct DestinationMetrics {
    pub delivered_changes: Value,
    pub delivered_batches: Value,
    pub dead_lettered: Value,
    pub retries: Value,
    last_error: Value,
}

impl DestinationMetrics {
    /// The destination's series, created at 0 (or found again, when its
    /// worker restarts in this writer: counters carry on).
    pub fn new(registry: &Registry, destination: &str, stream: &str) -> DestinationMetrics {
        let l = [("destination", destination), ("stream", stream)];
        DestinationMetrics {
            delivered_changes: registry.counter("strata_writer_delivered_changes_total", "Changes the destination reported durable.", &l),
            delivered_batches: registry.counter("strata_writer_delivered_batches_total", "Staged batches the destination reported durable.", &l),
            dead_lettered: registry.counter(
                "strata_writer_dead_lettered_changes_total",
                "Changes the destination rejected, set aside in its dead-letter folder (on_error = skip).",
                &l,
            ),
            retries: registry.counter("strata_writer_retries_total", "Transient failures of the destination or the stage, retried.", &l),
            last_error: registry.gauge(
                "strata_writer_last_error_timestamp_seconds",
                "Unix time of the destination's last failure; 0 if none since this writer took it.",
                &l,
            ),
        }
    }

    /// Records a failure, transient or not, now.
    pub fn error_now(&self) {
        self.last_error.set(Timestamp::now().0 as f64 / 1e6);
    }
}

/// The `state` label of a worker's status (`failed` when the writer saw it
/// stop on an error retrying cannot heal).
pub fn state_label(status: &WorkerStatus, failed: bool) -> &'static str {
    if failed {
        return "failed";
    }
    match status.state.as_str() {
        "running" => "running",
        "replaying" => "replaying",
        "failing" => "failing",
        "failed" => "failed",
        "sleeping" => "sleeping",
        s if s.starts_with("idle") => "sleeping",
        _ => "starting",
    }
}

/// A destination as this writer reports it in one pass.
pub struct Reported<'a> {
    pub spec: &'a DestinationSpec,
    /// `None` for a paused destination no worker runs here.
    pub status: Option<WorkerStatus>,
    pub failed: bool,
}

/// The per-destination series, the gauges published every reconcile pass.
pub struct Publisher {
    registry: Registry,
    /// Destinations reported in the last pass.
    shown: HashSet<String>,
}

impl Publisher {
    pub fn new(registry: &Registry) -> Publisher {
        Publisher { registry: registry.clone(), shown: HashSet::new() }
    }

    /// The counters of a destination whose worker starts here.
    pub fn destination(&self, destination: &str, stream: &str) -> DestinationMetrics {
        DestinationMetrics::new(&self.registry, destination, stream)
    }

    /// Publishes `destinations`' state and lag, and removes the series of
    /// destinations no longer reported. The stream's head is looked up once
    /// per stream, and not at all for a worker that found no next batch
    /// (each lookup is a few requests, which a remote stage bills).
    pub async fn publish(&mut self, stage: &Stage, destinations: &[Reported<'_>]) -> Result<()> {
        let registry = &self.registry;
        let mut heads: HashMap<&str, Option<u64>> = HashMap::new();
        for d in destinations {
            let (name, stream) = (d.spec.name.as_str(), d.spec.stream.as_str());
            let labels = [("destination", name), ("stream", stream)];
            let current = d.status.as_ref().map_or("paused", |s| state_label(s, d.failed));
            for state in STATES {
                let l = [("destination", name), ("stream", stream), ("state", state)];
                registry
                    .gauge("strata_writer_destination_state", "1 for the state the destination is in, 0 for the others.", &l)
                    .set(f64::from(u8::from(state == current)));
            }
            let Some(s) = &d.status else { continue };
            let head = match heads.get(stream) {
                _ if s.caught_up => s.cursor,
                Some(head) => *head,
                None => {
                    let head = StreamLog::new(stage, stream)?.head(s.cursor).await.ok().flatten();
                    heads.insert(stream, head);
                    head
                }
            };
            if let (Some(cursor), Some(head)) = (s.cursor, head) {
                registry.gauge("strata_writer_lag_batches", "Committed batches not yet delivered.", &labels).set(head.saturating_sub(cursor) as f64);
                let lag = match (head > cursor, s.cursor_commit_ts) {
                    (true, Some(t)) => (Timestamp::now().0 - t.0).max(0) as f64 / 1e6,
                    _ => 0.0,
                };
                registry.gauge("strata_writer_lag_seconds", "Age of the last delivered commit while batches wait; 0 when caught up.", &labels).set(lag);
            }
        }
        let now: HashSet<String> = destinations.iter().map(|d| d.spec.name.clone()).collect();
        for gone in self.shown.difference(&now) {
            registry.remove_labelled("destination", gone);
        }
        self.shown = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_state_has_a_label() {
        let label = |state: &str| state_label(&WorkerStatus { state: state.to_owned(), ..Default::default() }, false);
        for (state, want) in [
            ("connecting", "starting"),
            ("", "starting"),
            ("running", "running"),
            ("replaying", "replaying"),
            ("failing", "failing"),
            ("failed", "failed"),
            ("sleeping", "sleeping"),
            ("idle (the schedule never runs)", "sleeping"),
        ] {
            assert_eq!(label(state), want, "{state}");
            assert!(STATES.contains(&want));
        }
        assert_eq!(state_label(&WorkerStatus { state: "running".to_owned(), ..Default::default() }, true), "failed");
    }
}
