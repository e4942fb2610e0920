//! One destination's worker.
//!
//! Reads batch after batch through a [`BatchReader`] (a GET of
//! `log/{next}.json`, no listing; the next batch is fetched and decoded
//! while the current one is applied), delivers each, and advances the
//! cursor only after the destination reports it durable. Where the
//! destination keeps its own position (Postgres), that one is
//! authoritative and `cursor.json` mirrors it for status. Transient errors are retried forever with exponential
//! backoff and jitter, and shown in the status while they last; a permanent
//! error stops the worker with the error shown, until the spec changes.
//! A caught-up worker waits for the next batch through a
//! [`Waiter`]: a poll of the stage (every 50 ms on local disk; on S3
//! every 200 ms, slowing down to 5 s while nothing comes, one look per
//! period shared by the stream's idle workers), or an SQS wake-up when
//! the writer has a wake-up queue.
//!
//! `plan` decides what comes next (start position, replay window,
//! schedule); `deliver` delivers one batch (roll-up, parts, the `skip`
//! policy); this module runs the loop and moves the cursor.

mod deliver;
mod plan;
mod status;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use strata_common::backoff::Backoff;
use strata_common::{Lsn, Timestamp};
use strata_stager::cursor::{Cursor, Cursors};
use strata_stager::log::StreamLog;
use strata_stager::read::{BatchReader, Fetched, Window};
use strata_stager::{Stage, Versioned};
use tokio_util::sync::CancellationToken;

use self::deliver::{Deliverer, Outcome};
use self::plan::{Go, Plan};
use crate::destinations::{AnyDestination, Batch, DestError};
use crate::replay::ReplayRequest;
use crate::spec::DestinationSpec;
use crate::wakeup::Waiter;
pub use status::SharedWorkerStatus;
use status::{failing, set};
pub use strata_stager::control::WorkerStatus;

/// Retries of a destination or of the stage: from 0.2–0.4 s up to 30 s.
const RETRY: Backoff = Backoff::new(Duration::from_millis(400), Duration::from_secs(30));

/// Runs one destination until `token` is cancelled or a permanent error,
/// first carrying out `replay` if given.
pub async fn run(
    stage: Stage,
    spec: DestinationSpec,
    token: CancellationToken,
    status: SharedWorkerStatus,
    waiter: Waiter,
    replay: Option<Versioned<ReplayRequest>>,
) -> Result<()> {
    let mut worker =
        Worker { log: StreamLog::new(&stage, &spec.stream)?, cursors: Cursors::new(&stage, &spec.name)?, stage, spec, token, status, waiter, backoff: RETRY };
    let mut plan = None;
    let result = worker.run(replay, &mut plan).await;
    if let Err(e) = &result {
        let message = format!("{e:#}");
        worker.status.metrics.error_now();
        set(&worker.status, |s| {
            s.state = "failed".to_owned();
            s.last_error = Some(message.clone());
            s.failed_at = Some(Timestamp::now());
        });
        if let Some(p) = plan.as_mut() {
            p.fail_replay(&worker.stage, message).await;
        }
    }
    result
}

/// What the loop does after looking for the next batch.
enum Next {
    Batch(Fetched),
    /// Look again (after a wait, a retry, or a finished rebuild).
    Again,
    Stop,
}

/// One destination's worker.
struct Worker {
    stage: Stage,
    spec: DestinationSpec,
    token: CancellationToken,
    status: SharedWorkerStatus,
    waiter: Waiter,
    log: StreamLog,
    cursors: Cursors,
    backoff: Backoff,
}

impl Worker {
    /// Connects, plans the start (and the replay), then delivers batch
    /// after batch. `plan` is left for [`run`] to mark a replay failed.
    async fn run(&mut self, replay: Option<Versioned<ReplayRequest>>, plan: &mut Option<Plan>) -> Result<()> {
        let mut transforms = self.spec.transforms.prepare().map_err(|e| anyhow::anyhow!("destination {:?}: {e}", self.spec.name))?;
        set(&self.status, |s| s.state = "connecting".to_owned());
        // The cursor is read while the destination connects: a writer that
        // takes over a dead one's destinations starts a round trip sooner.
        let cursors = self.cursors.clone();
        let (connected, stored) = tokio::join!(self.connect(), cursors.load());
        let Some((mut dest, durable)) = connected? else {
            return Ok(());
        };
        let stored = stored?;
        let p = plan.insert(Plan::start(&self.log, self.spec.start, durable, stored.as_ref()).await?);
        let mut cursor = match stored {
            Some(c) => c,
            // Record the starting point at once, so a restart before the
            // first batch does not move a `latest` start forward.
            None => self.cursors.advance(None, self.cursor_at(p.next - 1, Lsn::ZERO, 0)).await.context("recording the start position")?,
        };
        if let Some(r) = replay {
            set(&self.status, |s| s.state = "replaying".to_owned());
            cursor = p.begin_replay(&self.stage, &self.log, &mut dest, &self.cursors, &cursor, &r).await?;
        }
        tracing::info!(destination = self.spec.name, next = p.next, "delivering");
        set(&self.status, |s| s.schedule = self.spec.schedule.to_string());
        // A destination writing the stage's own files, unchanged, is given
        // them undecoded.
        let mut reader = BatchReader::new(&self.log).with_files(self.spec.destination.reads_staged_files() && self.spec.transforms.is_empty());
        loop {
            if self.token.is_cancelled() || p.await_run(&self.log, &self.spec, &self.token, &self.status).await? == Go::Stop {
                return Ok(());
            }
            set(&self.status, |s| s.cursor = Some(p.next - 1));
            let window = p.window();
            let asked = Instant::now();
            let fetched = match self.next_batch(&mut reader, p, window).await? {
                Next::Batch(b) => b,
                Next::Again => continue,
                Next::Stop => return Ok(()),
            };
            let (fetch_time, applying) = (asked.elapsed(), Instant::now());
            let mut deliverer = Deliverer {
                stage: &self.stage,
                spec: &self.spec,
                token: &self.token,
                reader: &mut reader,
                dest: &mut dest,
                transforms: &mut transforms,
                metrics: &self.status.metrics,
            };
            match deliverer.deliver(fetched, window, p.may_roll_up()).await {
                Outcome::Delivered(batch, changes) => {
                    tracing::debug!(
                        destination = self.spec.name,
                        seq = batch.seq,
                        changes,
                        fetch_ms = fetch_time.as_millis(),
                        apply_ms = applying.elapsed().as_millis(),
                        "batch delivered"
                    );
                    self.backoff.reset();
                    self.status.metrics.delivered_changes.inc_by(changes);
                    self.status.metrics.delivered_batches.inc_by(batch.seq - batch.first_seq + 1);
                    cursor = self.advance(cursor, &batch).await?;
                    if p.delivered(&self.stage, &self.spec, batch.seq).await? == Go::Stop {
                        return Ok(());
                    }
                }
                Outcome::Failed(e) if e.is_retriable() => {
                    failing(&self.status, &e);
                    tracing::warn!(destination = self.spec.name, seq = p.next, error = %e, "delivery failed; retrying");
                    if !self.backoff.wait(&self.token, e.retry_after().unwrap_or_default()).await {
                        return Ok(());
                    }
                    // The connection may be gone: start over from what the destination holds.
                    let Some((d, durable)) = self.connect().await? else {
                        return Ok(());
                    };
                    dest = d;
                    if let Some(seq) = durable {
                        p.next = seq + 1;
                    }
                }
                Outcome::Failed(e) => {
                    return Err(anyhow::Error::new(e).context(format!("delivering batch {} to {:?}", p.next, self.spec.name)));
                }
                Outcome::Unreadable(e) if e.is_retriable() => {
                    tracing::warn!(destination = self.spec.name, seq = p.next, error = %e, "reading the stage failed; retrying");
                    if !self.backoff.wait(&self.token, Duration::ZERO).await {
                        return Ok(());
                    }
                }
                Outcome::Unreadable(e) => {
                    return Err(anyhow::Error::new(e).context(format!("reading batches after {} of stream {:?}", p.next, self.spec.stream)));
                }
            }
        }
    }

    /// Fetches the next batch inside `window`; waits while there is none,
    /// and finishes a rebuild that reached its time.
    async fn next_batch(&mut self, reader: &mut BatchReader, p: &mut Plan, window: Window) -> Result<Next> {
        match reader.fetch(p.next, window).await {
            Ok(Some(b)) if p.is_past_rebuild(b.header().commit_ts_min) => {
                Ok(if p.finish_replay(&self.stage, &self.spec).await? == Go::Stop { Next::Stop } else { Next::Again })
            }
            Ok(Some(b)) => {
                self.waiter.found(p.next);
                set(&self.status, |s| s.caught_up = false);
                Ok(Next::Batch(b))
            }
            Ok(None) => Ok(if self.idle(p).await? == Go::Stop { Next::Stop } else { Next::Again }),
            Err(e) if e.is_retriable() => {
                tracing::warn!(destination = self.spec.name, seq = p.next, error = %e, "reading the stage failed; retrying");
                Ok(if self.backoff.wait(&self.token, Duration::ZERO).await { Next::Again } else { Next::Stop })
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading batch {} of stream {:?}", p.next, self.spec.stream))),
        }
    }

    /// The stream has no next batch yet: waits for one (a rebuild past the
    /// head is complete instead).
    async fn idle(&mut self, p: &mut Plan) -> Result<Go> {
        if p.caught_up(&self.stage, &self.spec).await? == Go::Stop {
            return Ok(Go::Stop);
        }
        set(&self.status, |s| {
            s.state = "running".to_owned();
            s.caught_up = true;
        });
        self.waiter.missed(p.next);
        Ok(if self.waiter.wait(&self.token, p.next).await { Go::On } else { Go::Stop })
    }

    /// Connects and reads the durable position, retrying transient failures.
    /// `None` when cancelled.
    async fn connect(&mut self) -> Result<Option<(AnyDestination, Option<u64>)>> {
        let mut backoff = RETRY;
        loop {
            let attempt = async {
                let mut d = self.spec.destination.connect(&self.spec.name, &self.stage).await?;
                let seq = d.durable_seq().await?;
                Ok::<_, DestError>((d, seq))
            };
            match attempt.await {
                Ok(ok) => return Ok(Some(ok)),
                Err(e) if e.is_retriable() => {
                    failing(&self.status, &e);
                    tracing::warn!(destination = self.spec.name, error = %e, "destination unavailable; retrying");
                    if !backoff.wait(&self.token, Duration::ZERO).await {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("destination {:?}", self.spec.name)));
                }
            }
        }
    }

    fn cursor_at(&self, seq: u64, lsn: Lsn, epoch: u64) -> Cursor {
        Cursor { format: 1, destination: self.spec.name.clone(), stream: self.spec.stream.clone(), seq, lsn, epoch, updated_at: Timestamp::now() }
    }

    /// Moves the cursor to the delivered `batch` and shows it.
    async fn advance(&self, current: Versioned<Cursor>, batch: &Batch) -> Result<Versioned<Cursor>> {
        let next = self.cursor_at(batch.seq, batch.lsn_end, current.value.epoch);
        let cursor = self.cursors.advance(Some(&current), next).await.context("advancing the cursor")?;
        set(&self.status, |s| {
            s.state = "running".to_owned();
            s.cursor = Some(batch.seq);
            s.cursor_commit_ts = Some(batch.commit_ts_max);
            s.last_error = None;
        });
        Ok(cursor)
    }
}
