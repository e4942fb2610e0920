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
use std::sync::{Arc, Mutex};

use anyhow::Result;
use strata_common::Timestamp;
use strata_common::telemetry::{Registry, Value};
use strata_stager::Stage;
use strata_stager::control::WorkerStatus;
use strata_stager::log::StreamLog;
use tokio::task::JoinHandle;

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
    heads: Heads,
}

/// The streams' heads for the lag figures, looked up off the reconcile
/// loop. A lookup is several requests one after another (seconds, on a
/// slow remote stage), and a loop that waited for it bid that much later
/// for a dead writer's leases.
#[derive(Default)]
struct Heads {
    /// The head each stream's last lookup found (`None`: an empty log).
    found: Arc<Mutex<HashMap<String, Option<u64>>>>,
    /// The lookup of each stream in flight or last made.
    lookups: HashMap<String, JoinHandle<()>>,
}

impl Heads {
    /// The head the last lookup of `stream` found, if one finished; starts
    /// the next lookup from `hint` (a seq believed to exist) unless one is
    /// still in flight.
    fn get(&mut self, stage: &Stage, stream: &str, hint: Option<u64>) -> Result<Option<u64>> {
        if self.lookups.get(stream).is_none_or(JoinHandle::is_finished) {
            let log = StreamLog::new(stage, stream)?;
            let found = self.found.clone();
            let name = stream.to_owned();
            let lookup = tokio::spawn(async move {
                match log.head(hint).await {
                    Ok(head) => {
                        found.lock().expect("heads lock").insert(name, head);
                    }
                    Err(e) => tracing::debug!(stream = name, error = %e, "looking up the stream's head for the lag figures failed"),
                }
            });
            self.lookups.insert(stream.to_owned(), lookup);
        }
        Ok(self.found.lock().expect("heads lock").get(stream).copied().flatten())
    }
}

impl Publisher {
    pub fn new(registry: &Registry) -> Publisher {
        Publisher { registry: registry.clone(), shown: HashSet::new(), heads: Heads::default() }
    }

    /// The counters of a destination whose worker starts here.
    pub fn destination(&self, destination: &str, stream: &str) -> DestinationMetrics {
        DestinationMetrics::new(&self.registry, destination, stream)
    }

    /// Publishes `destinations`' state and lag, and removes the series of
    /// destinations no longer reported. A worker that found no next batch
    /// is at the head; for the others, the stream's head is the one its
    /// last lookup found (a pass old, at most), and the next lookup starts,
    /// one per stream at a time (each is a few requests, which a remote
    /// stage bills).
    pub fn publish(&mut self, stage: &Stage, destinations: &[Reported<'_>]) -> Result<()> {
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
                    let head = self.heads.get(stage, stream, s.cursor)?;
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

    #[tokio::test]
    async fn lag_comes_from_a_head_looked_up_off_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::local(dir.path()).unwrap();
        let log = StreamLog::new(&stage, "main").unwrap();
        // The head is the last manifest present; what it holds is not read.
        for seq in 1..=5 {
            stage.put(&log.keys().manifest(seq), "{}".into()).await.unwrap();
        }
        let spec = DestinationSpec::stdout_for_tests("d");
        let status = WorkerStatus { state: "running".to_owned(), cursor: Some(2), ..Default::default() };
        let registry = Registry::default();
        let mut publisher = Publisher::new(&registry);
        let lag = r#"strata_writer_lag_batches{destination="d",stream="main"}"#;
        let publish = |p: &mut Publisher| p.publish(&stage, &[Reported { spec: &spec, status: Some(status.clone()), failed: false }]).unwrap();

        // The first pass only starts the lookup: no lag figure yet.
        publish(&mut publisher);
        assert!(!registry.render().contains(lag), "{}", registry.render());
        // A pass after it finished shows the head it found.
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            publish(&mut publisher);
            if registry.render().contains(lag) {
                break;
            }
        }
        assert!(registry.render().contains(&format!("{lag} 3\n")), "{}", registry.render());
    }
}
