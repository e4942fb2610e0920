//! Query pulls: the second read strategy. A `[[pull]]` reads a table, view
//! or query by querying it, without a replication slot, and stages the rows
//! into a stream of its own as ordinary `changes` batches (upserts), so
//! every writer, replay and destination works unchanged.
//!
//! - [`query`]: the SQL of a page, ordered by `(watermark, key…)` with the
//!   key as a strict tie-breaker.
//! - [`round`]: one round, page by page, each page one batch whose manifest
//!   records the position after it (the resume point).
//! - [`window`]: which rows a look-back round has already staged;
//!   [`rebuild`]: the window read back from the stage after a restart.
//!
//! A round also runs on demand: `strata-reader pull NAME` creates
//! `streams/{name}/pull-requests/{id}.json`; the reader running the pull
//! sees it within [`REQUEST_POLL`], runs a round at once and records the
//! outcome (rows and batches staged, or the error) in the request.
//!
//! Each pull runs as its own task beside the change stream: a pull that
//! fails never stops the CDC stream or another pull. A pull holds its
//! stream's reader lease (`streams/{name}/reader.json`) as the CDC reader
//! holds its own, and publishes its status there (`waiting`, `pulling`,
//! `retrying` or `failed`, with the last error); every manifest is still
//! created with create-if-absent, so even two holders could not stage a
//! seq twice. Errors a retry can
//! heal (a lost connection, a standby cancelling a query on conflict, the
//! stage unreachable) are retried with backoff, counted in
//! `strata_reader_pull_errors_total` and logged; an error no retry can heal
//! (SQLSTATE class 42: a syntax error, an undefined table or column, or
//! 42501 insufficient privilege) stops that pull with the error naming its
//! stream, and `strata_reader_pull_failed` says so.
//!
//! What a pull sees and does not: rows whose `(watermark, key)` is past the
//! last staged one. A delete is not seen unless `soft_delete` marks such
//! rows; a row committed with a watermark older than one already staged
//! (a transaction that set `updated_at` before a later one committed) is
//! seen only within `look_back`. Rows with a NULL watermark or key are not
//! pulled.

pub mod query;
pub mod rebuild;
pub mod round;
pub mod window;

use std::time::Duration;

use std::sync::{Arc, Mutex};

use anyhow::Result;
use strata_common::Timestamp;
use strata_common::backoff::Backoff;
use strata_common::config::schedule::Schedule;
use strata_common::config::{Config, PullConfig};
use strata_common::telemetry::{Registry, Value};
use strata_stager::Versioned;
use strata_stager::control::{PullRequest, ReaderStatus};
use strata_stager::lease::Leases;
use strata_stager::log::StreamLog;
use strata_stager::{Stage, StageError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::decode::TextFallbacks;
use crate::lease::{SharedStatus, update};
use round::Puller;

/// Retries of a failing round: from about 1 s up to a minute.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
/// Pause of a continuous pull after a round that found nothing new: new
/// rows are staged within about a second, and an idle pull costs one query
/// a second.
const IDLE: Duration = Duration::from_secs(1);

/// The metrics of one pull.
#[derive(Clone)]
struct PullMetrics {
    rows: Value,
    batches: Value,
    rounds: Value,
    errors: Value,
    failed: Value,
}

impl PullMetrics {
    fn new(registry: &Registry, name: &str) -> PullMetrics {
        let l = [("stream", name)];
        PullMetrics {
            rows: registry.counter("strata_reader_pull_rows_total", "Rows staged by a query pull.", &l),
            batches: registry.counter("strata_reader_pull_batches_total", "Batches committed by a query pull.", &l),
            rounds: registry.counter("strata_reader_pull_rounds_total", "Rounds a query pull completed.", &l),
            errors: registry.counter("strata_reader_pull_errors_total", "Failed rounds of a query pull that are retried.", &l),
            failed: registry.gauge("strata_reader_pull_failed", "1 when a query pull stopped on an error no retry can heal.", &l),
        }
    }
}

/// Starts a task for each `[[pull]]` of `config`, running until `token` is
/// cancelled (or the pull fails for good).
pub fn spawn_all(config: &Config, stage: &Stage, registry: &Registry, token: &CancellationToken) -> Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for pull in &config.pulls {
        let url = pull.url(config.source.as_ref()).cloned().ok_or_else(|| anyhow::anyhow!("pull {:?} has no url and there is no [source]", pull.name))?;
        let log = StreamLog::new(stage, &pull.name)?;
        let puller = Puller::new(pull.clone(), url, log, TextFallbacks::new(registry, &pull.name))?;
        let metrics = PullMetrics::new(registry, &pull.name);
        tracing::info!(stream = pull.name, schedule = %pull.schedule, "starting query pull");
        tasks.push(tokio::spawn(run(puller, pull.clone(), metrics, stage.clone(), token.clone())));
    }
    Ok(tasks)
}

/// Holds the pull stream's reader lease (one reader per stream, as for the
/// CDC stream; `streams/{name}/reader.json` also carries the pull's status)
/// and runs rounds until `token` is cancelled or the pull fails for good.
async fn run(mut puller: Puller, config: PullConfig, metrics: PullMetrics, stage: Stage, token: CancellationToken) {
    let leases = Leases::new(&stage, puller.log().keys().reader());
    let holder = strata_stager::lease::local_holder("reader");
    let lease = match crate::lease::acquire_lease(&leases, &holder, &token).await {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            metrics.failed.set(1.0);
            tracing::error!(stream = puller.name, error = format!("{e:#}"), "query pull stopped: could not take the stream's reader lease");
            return;
        }
    };
    let status: SharedStatus = Arc::new(Mutex::new(ReaderStatus { state: "starting".to_owned(), ..Default::default() }));
    let work = token.child_token();
    let lost = CancellationToken::new();
    let renewer = tokio::spawn(crate::lease::renew_lease(leases.clone(), lease, work.clone(), lost.clone(), status.clone()));
    rounds(&mut puller, &config, &metrics, &status, &work).await;
    work.cancel();
    let last = status.lock().map(|s| serde_json::to_value(&*s).unwrap_or_default()).unwrap_or_default();
    if let Ok(Some(held)) = renewer.await
        && let Err(e) = leases.release_with_status(&held, Timestamp::now(), last).await
    {
        tracing::warn!(stream = puller.name, error = %e, "could not release the pull stream's reader lease; it expires by itself");
    }
    if lost.is_cancelled() {
        tracing::error!(stream = puller.name, "lost the pull stream's reader lease to another process; the pull stopped");
    }
}

/// Runs rounds on the pull's schedule until `token` is cancelled or an
/// error no retry can heal.
async fn rounds(puller: &mut Puller, config: &PullConfig, metrics: &PullMetrics, status: &SharedStatus, token: &CancellationToken) {
    let mut retry = RETRY;
    let mut pause = Duration::ZERO;
    loop {
        let wait = match &config.schedule {
            Schedule::Continuous => pause,
            schedule => until_next(schedule),
        };
        update(status, |s| s.state = if wait.is_zero() { "pulling" } else { "waiting" }.to_owned());
        let Some(requests) = wait_or_request(puller, wait, token).await else { return };
        update(status, |s| s.state = "pulling".to_owned());
        let result = tokio::select! {
            _ = token.cancelled() => return,
            r = puller.round() => r,
        };
        match result {
            Ok(outcome) => {
                retry.reset();
                metrics.rounds.inc_by(1);
                metrics.rows.inc_by(outcome.rows_staged);
                metrics.batches.inc_by(outcome.batches);
                update(status, |s| {
                    s.head_seq = outcome.head;
                    s.last_error = None;
                });
                tracing::debug!(stream = puller.name, read = outcome.rows_read, staged = outcome.rows_staged, "pull round done");
                answer(puller, &requests, Ok((outcome.rows_staged, outcome.batches))).await;
                pause = if outcome.rows_read == 0 { IDLE } else { Duration::ZERO };
            }
            Err(e) if is_permanent(&e) => {
                metrics.failed.set(1.0);
                let error = format!("query pull of stream {:?} stopped: {e:#}", puller.name);
                tracing::error!(stream = puller.name, error, "query pull stopped: this error needs a fix of the query, the config or the role's privileges");
                answer(puller, &requests, Err(error.clone())).await;
                update(status, |s| {
                    s.state = "failed".to_owned();
                    s.last_error = Some(error);
                });
                return;
            }
            Err(e) => {
                metrics.errors.inc_by(1);
                // The round may have committed batches this process did not
                // record; read the position from the stage again.
                puller.forget();
                let error = format!("{e:#}");
                tracing::warn!(stream = puller.name, attempt = retry.attempts(), error, "query pull round failed; retrying");
                update(status, |s| {
                    s.state = "retrying".to_owned();
                    s.last_error = Some(error);
                });
                if !retry.wait(token, Duration::ZERO).await {
                    return;
                }
                pause = Duration::ZERO;
            }
        }
    }
}

/// How often a waiting pull looks for on-demand requests
/// (`strata-reader pull NAME`): one listing of a small prefix per pull
/// every 2 s, and a request runs within about that.
const REQUEST_POLL: Duration = Duration::from_secs(2);

/// Waits `wait`, or less when an on-demand request arrives. Returns the
/// pending requests the next round answers (none when the schedule woke
/// it), or `None` when `token` was cancelled.
async fn wait_or_request(puller: &Puller, wait: Duration, token: &CancellationToken) -> Option<Vec<Versioned<PullRequest>>> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match PullRequest::pending(puller.log()).await {
            Ok(requests) if !requests.is_empty() => {
                tracing::info!(stream = puller.name, requests = requests.len(), "running a round on demand");
                return Some(requests);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(stream = puller.name, error = %e, "could not look for on-demand pull requests"),
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Some(Vec::new());
        }
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = tokio::time::sleep(left.min(REQUEST_POLL)) => {}
        }
    }
}

/// Records a round's outcome in the requests it answered. A round that
/// fails and is retried answers nothing: its requests stay pending.
async fn answer(puller: &Puller, requests: &[Versioned<PullRequest>], outcome: Result<(u64, u64), String>) {
    for req in requests {
        if let Err(e) = PullRequest::finish(puller.log(), req, outcome.clone()).await {
            tracing::warn!(stream = puller.name, request = req.value.id, error = %e, "could not record the outcome of a pull request");
        }
    }
}

/// Time until the schedule's next run.
fn until_next(schedule: &Schedule) -> Duration {
    let now = Timestamp::now();
    match schedule.next_run(now) {
        Some(t) => Duration::from_micros(u64::try_from(t.0 - now.0).unwrap_or(0)),
        None => Duration::from_secs(3600),
    }
}

/// Whether no retry can heal `e`: SQLSTATE class 42 (syntax error or
/// access rule violation: undefined table or column, 42501 insufficient
/// privilege), a query whose result lacks the watermark or key, or a stage
/// error that is not retriable. Another process committing the seq this
/// one wanted is retried: the position is read again from the stage.
fn is_permanent(e: &anyhow::Error) -> bool {
    for cause in e.chain() {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg.code().is_some_and(|c| c.code().starts_with("42"));
        }
        if let Some(s) = cause.downcast_ref::<StageError>() {
            return !s.is_retriable() && !matches!(s, StageError::SeqTaken { .. });
        }
        if cause.downcast_ref::<round::Misconfigured>().is_some() {
            return true;
        }
    }
    false
}
