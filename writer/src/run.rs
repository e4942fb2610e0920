//! The writer service: the reconcile loop.
//!
//! Desired state lives in the stage (`destinations/*/spec.json`, replay
//! requests); every [`RECONCILE`] the loop converges on it: it starts a
//! worker for each destination that is not paused and whose lease it can
//! take, restarts a worker whose spec changed, and stops workers of removed
//! or paused destinations. The control objects are read again only when
//! the stage's control signal moved (see [`strata_stager::signal`]), which
//! is read every pass on a local stage and every 5 s on a remote one, and
//! in full at least every few minutes ([`ControlWatch::for_stage`]).
//!
//! Leases (`destinations/{name}/lease.json`) are renewed, each by a task of
//! its own (`HeldLease` in `held.rs`), after a third of their time to live
//! (half, for the long lease of an idle destination on a remote stage) and
//! when what their status says changes, progress aside: a worker whose
//! lease was not renewed in time stops before it could expire, and another
//! writer takes the destination over once the lease expires (at once when its holder was a
//! process on this host that is gone). So several writers can share one
//! stage, each destination applied by one of them. A lease held elsewhere
//! is not read again before it expires (or a minute has passed, for a long
//! one) or the control signal moves (a release moves it); once it has
//! expired, the bid for it is one write conditional on the version last
//! read, with no read first.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use strata_common::Timestamp;
use strata_common::config::Config;
use strata_common::telemetry::{Readiness, Registry};
use strata_stager::Stage;
use strata_stager::keys::DestinationKeys;
use strata_stager::lease::{Lease, Leases};
use strata_stager::signal::{ControlWatch, Reading};
use strata_stager::{StageError, Versioned};

use tokio_util::sync::CancellationToken;

use crate::control;
use crate::held::HeldLease;
use crate::lease_deadline::guarded;
use crate::metrics::{Publisher, Reported};
use crate::replay::{ReplayRequest, ReplayState};
use crate::spec::DestinationSpec;
use crate::worker::{self, SharedWorkerStatus};

/// How often running writers converge: "a few seconds".
pub const RECONCILE: Duration = Duration::from_secs(2);
pub use crate::held::{IDLE_AFTER, IDLE_LEASE_RENEW, IDLE_LEASE_TTL, LEASE_TTL};
/// Default address of the writer's `/metrics`, `/healthz`, `/readyz`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

/// What the writer knows of the control objects between readings.
struct Known {
    watch: ControlWatch,
    specs: HashMap<String, DestinationSpec>,
    /// Pending replay requests not yet started here.
    replays: Vec<Versioned<ReplayRequest>>,
    /// Destinations whose lease another writer holds, as last read here.
    elsewhere: HashMap<String, HeldElsewhere>,
}

/// A lease another writer held when it was last read here.
struct HeldElsewhere {
    /// The lease as read, version included: once it has expired, the bid
    /// for it is a write conditional on that version, with no read first.
    lease: Versioned<Lease>,
    /// When to bid for it again: see [`read_again`].
    read_again: Timestamp,
}

/// How long a lease held elsewhere is trusted at most without being read
/// again. An idle destination's lease lives 180 s, and its holder
/// shortens it when work comes: a holder that dies after that is noticed
/// within this, not when the long lease said. (One GET a minute per
/// writer and destination held elsewhere.)
const READ_HELD_AGAIN: Duration = Duration::from_secs(60);

impl HeldElsewhere {
    fn new(lease: Versioned<Lease>, now: Timestamp) -> HeldElsewhere {
        HeldElsewhere { read_again: read_again(lease.value.expires_at, now), lease }
    }
}

/// When a lease held elsewhere that expires at `expires_at`, read at
/// `now`, is to be bid for again: at its expiry, or [`READ_HELD_AGAIN`]
/// after this read if that comes first.
fn read_again(expires_at: Timestamp, now: Timestamp) -> Timestamp {
    expires_at.min(now.saturating_add(READ_HELD_AGAIN))
}

impl Known {
    fn new(stage: &Stage) -> Known {
        Known { watch: ControlWatch::for_stage(stage), specs: HashMap::new(), replays: Vec::new(), elsewhere: HashMap::new() }
    }

    /// Reads the specs and replay requests again if the control signal says
    /// so. What is known of leases held elsewhere is forgotten only when the
    /// signal moved (a lease released moves it): the full reading due every
    /// few minutes keeps it, or each writer would read every such lease
    /// again then, its loop (and its bids for expired leases) waiting.
    async fn refresh(&mut self, stage: &Stage) -> Result<()> {
        let reading = self.watch.check(stage).await.context("reading the control signal")?;
        if reading == Reading::Unchanged {
            return Ok(());
        }
        let read = async { Ok::<_, anyhow::Error>((control::read_all(stage).await?, crate::replay::list(stage).await?)) };
        match read.await {
            Ok((specs, replays)) => {
                let specs = specs.into_iter().map(|(name, spec)| (name, spec.map(|s| s.value)));
                self.specs = kept_unless_read(&mut self.specs, specs);
                self.replays = replays.into_iter().filter(|r| r.value.state == ReplayState::Pending).collect();
                if reading == Reading::Moved {
                    self.elsewhere.clear();
                }
                Ok(())
            }
            Err(e) => {
                self.watch.invalidate();
                Err(e)
            }
        }
    }

    /// When the first lease known to be held elsewhere is to be read again
    /// (see [`HeldElsewhere`]), if that is still to come (a time already
    /// passed is left to the passes, which bid for it anyway).
    fn next_read_again(&self, now: Timestamp) -> Option<tokio::time::Instant> {
        until_first_read_again(self.elsewhere.values().map(|h| h.read_again), now).map(|wait| tokio::time::Instant::now() + wait)
    }
}

/// The specs just read, by name. One that could not be read (a stage
/// request that failed, or an edit that does not validate) is reported
/// and its last reading in `last` kept: it neither stops a destination
/// that runs nor starts one that does not.
fn kept_unless_read<T>(last: &mut HashMap<String, T>, read: impl IntoIterator<Item = (String, Result<T>)>) -> HashMap<String, T> {
    let mut specs = HashMap::new();
    for (name, spec) in read {
        match spec {
            Ok(s) => {
                specs.insert(name, s);
            }
            Err(e) => {
                tracing::warn!(destination = name, error = format!("{e:#}"), "cannot read the destination's spec; keeping the one last read");
                if let Some(kept) = last.remove(&name) {
                    specs.insert(name, kept);
                }
            }
        }
    }
    specs
}

/// How long until the first of the leases held elsewhere is to be read
/// again (their `read_again` times), if one is after `now`.
fn until_first_read_again(read_again: impl IntoIterator<Item = Timestamp>, now: Timestamp) -> Option<Duration> {
    let first = read_again.into_iter().map(|t| t.0).filter(|&t| t > now.0).min()?;
    Some(Duration::from_micros((first - now.0).unsigned_abs()))
}

struct Running {
    spec: DestinationSpec,
    lease: HeldLease,
    token: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
    status: SharedWorkerStatus,
    /// The replay request this worker was started for. A request still
    /// reads pending until the worker marks it running, and a listing in
    /// between must not start it again: the second start's update of the
    /// request, made from its pending version, would lose and stop the
    /// worker.
    replay: Option<String>,
    /// Set when the worker stopped on a permanent delivery error: the
    /// destination stays held (its lease renewed, the error in its status)
    /// and idle until its spec is edited (`resume` retries it).
    failed: bool,
}

/// Whether retrying cannot heal `e`: the destination rejected the data
/// ([`DestError::Permanent`](crate::destinations::DestError::Permanent)),
/// or the stage holds something that will not read differently next time
/// (a corrupt manifest or data file, a checksum mismatch, an invalid name),
/// as opposed to what a fresh worker may get past (stage hiccups, a lost race).
fn is_permanent(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<crate::destinations::DestError>(), Some(crate::destinations::DestError::Permanent(_)))
            || c.downcast_ref::<StageError>().is_some_and(|e| !e.is_retriable())
    })
}

pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<()> {
    let stage = Stage::open(&config.stage.url, &config.stage.options).with_context(|| format!("opening stage {}", config.stage.url))?;
    let holder = strata_stager::lease::local_holder("writer");
    let registry = Registry::default();
    stage.register_metrics(&registry);
    strata_common::telemetry::register_build_info(&registry, "writer");
    let mut figures = Publisher::new(&registry);
    let ready = Readiness::default();
    let listen = config.telemetry.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
    let (bound, server) = strata_common::telemetry::serve(listen, registry.clone(), ready.clone())
        .await
        .with_context(|| format!("serving /metrics on {listen} (set telemetry.listen to another address)"))?;
    tracing::info!(address = %bound, holder, "writer started");
    let (wakeups, listener) = crate::wakeup::Listener::new(&config.wakeup, &registry).await?;
    let wakeups = wakeups.for_stage(stage.is_local());
    let listening = shutdown.child_token();
    if let Some(listener) = listener {
        tokio::spawn(listener.run(listening.clone()));
    }
    if let Some(watcher) = crate::wakeup::local::Watcher::new(&stage, &wakeups) {
        tokio::spawn(watcher.run(listening.clone()));
    }
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut known = Known::new(&stage);
    // Passes start every RECONCILE (or back to back when one takes longer),
    // not RECONCILE after the last one ended. Between them, when a lease
    // known to be held elsewhere expires (or is due to be read again), it
    // is bid for at once: a dead writer's destinations are taken over as soon as their
    // leases allow, not up to a pass later.
    let mut pass = tokio::time::interval(RECONCILE);
    pass.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let expiry = known.next_read_again(Timestamp::now());
        let full = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = pass.tick() => true,
            () = tokio::time::sleep_until(expiry.unwrap_or_else(tokio::time::Instant::now)), if expiry.is_some() => false,
        };
        if !full {
            if let Err(e) = start_wanted(&stage, &holder, &mut running, &mut known, &figures, &wakeups).await {
                tracing::warn!(error = format!("{e:#}"), "bidding for expired leases failed; retrying");
            }
            continue;
        }
        if let Err(e) = reconcile(&stage, &holder, &mut running, &mut known, &mut figures, &wakeups).await {
            tracing::warn!(error = format!("{e:#}"), "reconcile pass failed; retrying");
        } else {
            ready.set(true);
        }
    }
    // Drain: workers finish the batch in hand (its cursor commit included).
    for (name, r) in running.drain() {
        r.token.cancel();
        if let Ok(Err(e)) = r.task.await {
            tracing::warn!(destination = name, error = format!("{e:#}"), "worker stopped with an error");
        }
        r.lease.release(&stage, &r.status).await;
    }
    listening.cancel();
    server.abort();
    Ok(())
}

async fn stop(stage: &Stage, name: &str, r: Running) {
    r.token.cancel();
    if let Ok(Err(e)) = r.task.await {
        tracing::warn!(destination = name, error = format!("{e:#}"), "worker stopped with an error");
    }
    r.lease.release(stage, &r.status).await;
}

/// One pass: converges the workers running here on the specs in the stage.
async fn reconcile(
    stage: &Stage,
    holder: &str,
    running: &mut HashMap<String, Running>,
    known: &mut Known,
    figures: &mut Publisher,
    wakeups: &crate::wakeup::Wakeups,
) -> Result<()> {
    known.refresh(stage).await?;
    keep_or_stop(stage, running, &known.specs).await;
    start_replays(stage, running, &mut known.replays, wakeups).await;
    start_wanted(stage, holder, running, known, figures, wakeups).await?;
    // What runs here, and what no writer runs because it is paused.
    let mut shown: Vec<Reported> = running.values().map(|r| Reported { spec: &r.spec, status: Some(r.status.get()), failed: r.failed }).collect();
    shown.extend(known.specs.values().filter(|s| s.paused).map(|spec| Reported { spec, status: None, failed: false }));
    figures.publish(stage, &shown)
}

/// Stops what is removed, paused or changed; collects workers that ended.
/// (Each lease renews itself: `HeldLease`.)
async fn keep_or_stop(stage: &Stage, running: &mut HashMap<String, Running>, wanted: &HashMap<String, DestinationSpec>) {
    let names: Vec<String> = running.keys().cloned().collect();
    for name in names {
        let same = match (wanted.get(&name), running.get(&name)) {
            (Some(spec), Some(r)) => !spec.paused && *spec == r.spec,
            _ => false,
        };
        if !same {
            let Some(r) = running.remove(&name) else { continue };
            tracing::info!(destination = name, "stopping worker");
            stop(stage, &name, r).await;
            continue;
        }
        if let Some(r) = running.get_mut(&name)
            && !r.failed
            && r.task.is_finished()
        {
            // Take the finished handle: a JoinHandle must not be awaited twice.
            let finished = std::mem::replace(&mut r.task, tokio::spawn(std::future::ready(Ok(()))));
            match finished.await {
                Ok(Err(e)) if is_permanent(&e) => {
                    tracing::error!(destination = name, error = format!("{e:#}"), "delivery failed permanently; the destination waits for its spec to change");
                    r.failed = true;
                }
                outcome => {
                    if let Ok(Err(e)) = outcome {
                        tracing::warn!(destination = name, error = format!("{e:#}"), "worker stopped; restarting it");
                    }
                    if let Some(r) = running.remove(&name) {
                        r.lease.release(stage, &r.status).await;
                    }
                    continue;
                }
            }
        }
    }
}

/// Replays of destinations running here: restarts the worker with the
/// request, which is taken out of `pending` (the worker records it running).
async fn start_replays(stage: &Stage, running: &mut HashMap<String, Running>, pending: &mut Vec<Versioned<ReplayRequest>>, wakeups: &crate::wakeup::Wakeups) {
    let mut replays: HashMap<String, Versioned<ReplayRequest>> = HashMap::new();
    for r in pending.iter() {
        if running.get(&r.value.destination).is_some_and(|w| !w.failed && w.replay.as_deref() != Some(r.value.id.as_str())) {
            replays.entry(r.value.destination.clone()).or_insert_with(|| r.clone());
        }
    }
    pending.retain(|r| replays.get(&r.value.destination).is_none_or(|started| started.value.id != r.value.id));
    for (name, request) in replays {
        let Some(r) = running.get_mut(&name) else { continue };
        tracing::info!(destination = name, replay = request.value.id, "starting a replay");
        r.token.cancel();
        let old = std::mem::replace(&mut r.task, tokio::spawn(async { Ok(()) }));
        if let Ok(Err(e)) = old.await {
            tracing::warn!(destination = name, error = format!("{e:#}"), "worker stopped with an error");
        }
        r.token = CancellationToken::new();
        r.replay = Some(request.value.id.clone());
        let waiter = wakeups.waiter(&r.spec.stream);
        let work = worker::run(stage.clone(), r.spec.clone(), r.token.clone(), r.status.clone(), waiter, Some(request));
        r.task = tokio::spawn(guarded(r.lease.deadline.clone(), work));
    }
}

/// Lease requests a pass has in flight at once: after a writer dies, each
/// survivor bids for its destinations together, so on a slow stage the
/// takeover costs about one request's time rather than one per destination.
const ACQUIRE_AT_ONCE: usize = 16;

/// Starts what should run here and is not running anywhere: takes the
/// destinations' leases (several requests at once), then spawns a worker
/// for each lease won. A lease known to be held elsewhere is not read
/// again before it expires, unless its holder is a process on this host
/// that is gone.
async fn start_wanted(
    stage: &Stage,
    holder: &str,
    running: &mut HashMap<String, Running>,
    known: &mut Known,
    figures: &Publisher,
    wakeups: &crate::wakeup::Wakeups,
) -> Result<()> {
    let now = Timestamp::now();
    let mut wanted = Vec::new();
    for (name, spec) in &known.specs {
        if spec.paused || running.contains_key(name) {
            continue;
        }
        let last = match known.elsewhere.get(name) {
            Some(held) if held.read_again > now && !strata_stager::lease::is_dead_local(&held.lease.value.holder) => continue,
            Some(held) => Some(held.lease.clone()),
            None => None,
        };
        wanted.push((spec.clone(), Leases::new(stage, DestinationKeys::new(name)?.lease()), last));
    }
    // Each lease won is kept and its worker started as its answer comes,
    // not after the slowest bid: its time to live runs from its request.
    let mut bids = futures::stream::iter(wanted)
        .map(|(spec, leases, last)| async move {
            let sent = tokio::time::Instant::now();
            let (outcome, read) = bid(&leases, holder, last, now).await;
            (spec, leases, sent, outcome, read)
        })
        .buffer_unordered(ACQUIRE_AT_ONCE);
    while let Some((spec, leases, sent, outcome, read)) = bids.next().await {
        let name = spec.name.clone();
        let (lease, before) = match outcome {
            Ok(l) => (l, known.elsewhere.remove(&name)),
            Err(StageError::LeaseHeld { .. }) => {
                if let Some(read) = read {
                    known.elsewhere.insert(name, HeldElsewhere::new(read, now));
                }
                continue;
            }
            Err(StageError::Conflict { .. }) => {
                // Another writer won it: the next pass reads who.
                known.elsewhere.remove(&name);
                continue;
            }
            Err(e) => {
                tracing::warn!(destination = name, error = %e, "could not take the destination's lease");
                continue;
            }
        };
        match before {
            // Taken over: from whom, how long after its lease expired (as
            // last read here, if that has passed: the lease may have been
            // renewed, or shortened, before it lapsed), and how long the
            // bid took.
            Some(held) => tracing::info!(
                destination = name,
                kind = spec.describe(),
                taken_from = held.lease.value.holder,
                expired_ms_ago = held.lease.value.is_expired(now).then(|| (Timestamp::now().0 - held.lease.value.expires_at.0) / 1000),
                bid_ms = sent.elapsed().as_millis(),
                "starting worker"
            ),
            None => tracing::info!(destination = name, kind = spec.describe(), "starting worker"),
        }
        let token = CancellationToken::new();
        let status = SharedWorkerStatus::new(figures.destination(&name, &spec.stream));
        let lease = HeldLease::keep(stage, &name, leases, lease, sent, status.clone());
        let work = worker::run(stage.clone(), spec.clone(), token.clone(), status.clone(), wakeups.waiter(&spec.stream), None);
        let task = tokio::spawn(guarded(lease.deadline.clone(), work));
        running.insert(name, Running { spec, lease, token, task, status, replay: None, failed: false });
    }
    Ok(())
}

/// One bid for a destination's lease. Over `last`, the lease as last read
/// here, when that has expired: a single conditional write, no read
/// first (a takeover starts one round trip sooner). Otherwise, or if the
/// lease changed since `last` (its holder renewed it, or another writer
/// took it), over the lease read now. Returns the outcome and the lease
/// as read now, if it was.
async fn bid(
    leases: &Leases,
    holder: &str,
    last: Option<Versioned<Lease>>,
    now: Timestamp,
) -> (strata_stager::Result<Versioned<Lease>>, Option<Versioned<Lease>>) {
    let gone = strata_stager::lease::is_dead_local_holder;
    if let Some(last) = last.filter(|l| l.value.is_expired(now)) {
        match leases.acquire_over(Some(&last), holder, LEASE_TTL, now, gone).await {
            Err(StageError::Conflict { .. }) => {}
            outcome => return (outcome, None),
        }
    }
    let current = match leases.read().await {
        Ok(current) => current,
        Err(e) => return (Err(e), None),
    };
    (leases.acquire_over(current.as_ref(), holder, LEASE_TTL, now, gone).await, current)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    /// When leases read at `read` (seconds), expiring at the seconds in
    /// `expiries`, are to be read again.
    fn held(read: i64, expiries: &[i64]) -> Vec<Timestamp> {
        expiries.iter().map(|at| read_again(Timestamp(at * SECOND), Timestamp(read * SECOND))).collect()
    }

    #[test]
    fn the_first_lease_still_to_expire_sets_the_wait() {
        assert_eq!(until_first_read_again(held(0, &[9, 2, 4]), Timestamp(SECOND)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn expiries_already_passed_are_left_to_the_passes() {
        let now = Timestamp(5 * SECOND);
        assert_eq!(until_first_read_again(held(0, &[4, 5]), now), None);
        assert_eq!(until_first_read_again(held(0, &[4, 7]), now), Some(Duration::from_secs(2)));
        assert_eq!(until_first_read_again(held(0, &[]), now), None);
    }

    #[test]
    fn a_spec_that_cannot_be_read_keeps_its_last_reading() {
        let mut last: HashMap<String, u32> = [("a".to_owned(), 1), ("b".to_owned(), 1)].into();
        let read =
            vec![("a".to_owned(), Ok(2)), ("b".to_owned(), Err(anyhow::anyhow!("GET timed out"))), ("new".to_owned(), Err(anyhow::anyhow!("invalid spec")))];
        let specs = kept_unless_read(&mut last, read);
        assert_eq!(specs, [("a".to_owned(), 2), ("b".to_owned(), 1)].into(), "b kept as last read; an unreadable new one not started");
        // A destination no longer listed is gone, whatever was read before.
        assert!(!kept_unless_read(&mut specs.clone(), vec![("a".to_owned(), Ok(3))]).contains_key("b"));
    }

    #[tokio::test]
    async fn an_expired_lease_last_read_here_is_bid_for_in_one_request() {
        use strata_stager::requests::Op;
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::local(dir.path()).unwrap();
        let leases = Leases::new(&stage, DestinationKeys::new("d").unwrap().lease());
        let t0 = Timestamp::now();
        let at = |secs: u64| t0.saturating_add(Duration::from_secs(secs));
        let requests = |op| stage.requests().get(op);
        leases.acquire("other", LEASE_TTL, t0).await.unwrap();
        let last = leases.read().await.unwrap().unwrap();

        // Expired as last read and unchanged since: one conditional PUT.
        let (gets, puts) = (requests(Op::Get), requests(Op::Put));
        let (won, read) = bid(&leases, "here", Some(last.clone()), at(16)).await;
        assert_eq!(won.unwrap().value.holder, "here");
        assert!(read.is_none());
        assert_eq!((requests(Op::Get) - gets, requests(Op::Put) - puts), (0, 1));

        // Changed since it was last read (taken over, then renewed): the
        // stale bid fails, the lease is read, and its holder stands.
        let renewed = leases.read().await.unwrap().unwrap();
        leases.renew(&renewed, LEASE_TTL, at(20), serde_json::Value::Null).await.unwrap();
        let (held, read) = bid(&leases, "third", Some(last), at(30)).await;
        assert!(matches!(held, Err(StageError::LeaseHeld { ref owner, .. }) if owner == "here"), "{held:?}");
        assert_eq!(read.expect("read after the conflict").value.expires_at, at(20).saturating_add(LEASE_TTL));

        // Not known, or not expired as last read: read first, then bid.
        let (gets, puts) = (requests(Op::Get), requests(Op::Put));
        let (won, _) = bid(&leases, "third", None, at(36)).await;
        assert_eq!(won.unwrap().value.holder, "third");
        assert_eq!((requests(Op::Get) - gets, requests(Op::Put) - puts), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_held_elsewhere_are_forgotten_when_the_signal_moves_not_at_a_full_reading() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::local(dir.path()).unwrap();
        let spec = DestinationSpec::stdout_for_tests("d");
        control::add(&stage, &spec).await.unwrap();
        let leases = Leases::new(&stage, DestinationKeys::new("d").unwrap().lease());
        let lease = leases.acquire("other", LEASE_TTL, Timestamp::now()).await.unwrap();
        let mut known = Known::new(&stage);
        known.refresh(&stage).await.unwrap();
        assert!(known.specs.contains_key("d"));
        known.elsewhere.insert("d".to_owned(), HeldElsewhere::new(lease, Timestamp::now()));

        // The full reading falls due with the signal unmoved (an edit
        // whose signal was lost shows it was made): kept.
        let path = DestinationKeys::new("d").unwrap().spec();
        let current = stage.get_json::<DestinationSpec>(&path).await.unwrap().unwrap();
        stage.put_json_if(&path, &DestinationSpec { paused: true, ..spec }, Some(&current.version)).await.unwrap();
        tokio::time::advance(strata_stager::signal::LOCAL_FULL).await;
        known.refresh(&stage).await.unwrap();
        assert!(known.specs["d"].paused, "the full reading was made");
        assert!(known.elsewhere.contains_key("d"), "a full reading keeps what is known of leases held elsewhere");
        // The signal moves (a lease released moves it): forgotten.
        strata_stager::signal::touch(&stage, "lease destinations/d/lease.json released").await.unwrap();
        known.refresh(&stage).await.unwrap();
        assert!(known.elsewhere.is_empty());
    }

    #[test]
    fn a_long_lease_held_elsewhere_is_read_again_within_a_minute() {
        // An idle destination's lease, read at 10 s, says 190 s: its holder
        // may shorten it and die meanwhile.
        assert_eq!(read_again(Timestamp(190 * SECOND), Timestamp(10 * SECOND)), Timestamp(70 * SECOND));
        assert_eq!(until_first_read_again(held(10, &[190]), Timestamp(10 * SECOND)), Some(READ_HELD_AGAIN));
        // A busy one's is read again when it expires.
        assert_eq!(read_again(Timestamp(25 * SECOND), Timestamp(10 * SECOND)), Timestamp(25 * SECOND));
    }
}
