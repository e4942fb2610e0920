//! What a worker delivers next: the position, the replay window and the
//! delivery schedule. No delivery happens here.

use std::time::Duration;

use anyhow::{Context, Result};
use strata_common::{Lsn, Timestamp};
use strata_stager::cursor::{Cursor, Cursors};
use strata_stager::log::StreamLog;
use strata_stager::read::Window;
use strata_stager::{Stage, Versioned};
use tokio_util::sync::CancellationToken;

use super::status::{SharedWorkerStatus, set};
use crate::destinations::AnyDestination;
use crate::replay::{self, ReplayRequest, ReplayState, Then};
use crate::spec::{DestinationSpec, StartPosition};

/// A replay being carried out.
struct ActiveReplay {
    request: Versioned<ReplayRequest>,
    /// For `--as-of`: deliver up to this time, then stop or go on.
    until: Option<(Timestamp, Then)>,
}

/// The worker's plan: the next batch to deliver and what cuts it.
pub(super) struct Plan {
    /// The next seq to deliver.
    pub next: u64,
    /// A replay `--from` cuts its first batch at this time.
    from: Option<Timestamp>,
    replay: Option<ActiveReplay>,
    /// A scheduled destination's current run delivers up to this seq.
    run_until: Option<u64>,
}

/// Whether the worker goes on after a step of the plan.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Go {
    On,
    Stop,
}

impl Plan {
    /// Where a worker starts: after what the destination holds durably, else
    /// after its cursor, else at the spec's start position.
    pub async fn start(log: &StreamLog, start: StartPosition, durable: Option<u64>, cursor: Option<&Versioned<Cursor>>) -> Result<Plan> {
        let (next, from) = match (durable, cursor) {
            (Some(seq), _) => (seq + 1, None),
            (None, Some(c)) => (c.value.seq + 1, None),
            (None, None) => match start {
                StartPosition::Earliest => (log.low().await?, None),
                StartPosition::Latest => (log.head(None).await?.map_or(1, |h| h + 1), None),
                StartPosition::At(t) => match log.seek_time(t).await? {
                    Some(seq) => (seq, Some(t)),
                    None => (log.head(None).await?.map_or(1, |h| h + 1), None),
                },
            },
        };
        Ok(Plan { next, from, replay: None, run_until: None })
    }

    /// Starts replay `r`: resets the destination and rewinds the cursor to
    /// where the replay begins.
    pub async fn begin_replay(
        &mut self,
        stage: &Stage,
        log: &StreamLog,
        dest: &mut AnyDestination,
        cursors: &Cursors,
        cursor: &Versioned<Cursor>,
        r: &Versioned<ReplayRequest>,
    ) -> Result<Versioned<Cursor>> {
        let request = replay::set_state(stage, r, ReplayState::Running, None).await?;
        let (seq, truncate, until) = match (request.value.as_of, request.value.from) {
            (Some(t), _) => (log.low().await? - 1, log.tables().await?, Some((t, request.value.then))),
            (None, Some(t)) => match log.seek_time(t).await? {
                Some(s) => {
                    self.from = Some(t);
                    (s - 1, Vec::new(), None)
                }
                // Nothing committed at or after T yet: nothing to re-deliver.
                None => (self.next - 1, Vec::new(), None),
            },
            (None, None) => unreachable!("validated: a replay has --from or --as-of"),
        };
        dest.reset(seq, &truncate).await.map_err(|e| anyhow::Error::new(e).context("resetting the destination for a replay"))?;
        let rewound = cursors.rewind(cursor, seq, Lsn::ZERO, Timestamp::now()).await.context("rewinding the cursor")?;
        self.next = seq + 1;
        tracing::info!(destination = request.value.destination, replay = request.value.id, from = self.next, "replaying");
        self.replay = Some(ActiveReplay { request, until });
        Ok(rewound)
    }

    /// The commit times the next fetch keeps.
    pub fn window(&self) -> Window {
        Window { from: self.from, until: self.replay.as_ref().and_then(|a| a.until.map(|(t, _)| t)) }
    }

    /// Whether batches may be gathered into one delivery now: not during a
    /// replay, whose first and last batches are cut by time.
    pub fn may_roll_up(&self) -> bool {
        self.replay.is_none() && self.from.is_none()
    }

    /// A batch was delivered: the next one follows it, uncut. A `--from`
    /// replay is done once its first batch is re-delivered.
    pub async fn delivered(&mut self, stage: &Stage, spec: &DestinationSpec, seq: u64) -> Result<Go> {
        self.from = None;
        self.next = seq + 1;
        if self.replay.as_ref().is_some_and(|a| a.until.is_none()) {
            return self.finish_replay(stage, spec).await;
        }
        Ok(Go::On)
    }

    /// A fetched batch starting after an `--as-of` rebuild's time: the
    /// rebuild is complete.
    pub fn is_past_rebuild(&self, commit_ts_min: Timestamp) -> bool {
        self.window().until.is_some_and(|t| commit_ts_min > t)
    }

    /// The stream has no batch `next` yet: a rebuild as of a time past the
    /// head is complete.
    pub async fn caught_up(&mut self, stage: &Stage, spec: &DestinationSpec) -> Result<Go> {
        if self.replay.as_ref().is_some_and(|a| a.until.is_some()) {
            return self.finish_replay(stage, spec).await;
        }
        Ok(Go::On)
    }

    /// Marks the replay done; an `--as-of … --then stop` first pauses the
    /// destination (so a replay shown done has reached its final state, and
    /// a crash in between leaves the rebuild stopped at its time) and stops
    /// the worker.
    pub async fn finish_replay(&mut self, stage: &Stage, spec: &DestinationSpec) -> Result<Go> {
        let Some(a) = self.replay.take() else {
            return Ok(Go::On);
        };
        let stop = matches!(a.until, Some((_, Then::Stop)));
        if stop {
            crate::control::update(stage, &spec.name, |s| s.paused = true).await?;
        }
        replay::set_state(stage, &a.request, ReplayState::Done, None).await?;
        tracing::info!(destination = spec.name, replay = a.request.value.id, "replay done");
        Ok(if stop { Go::Stop } else { Go::On })
    }

    /// The worker stopped on `message`: a replay under way is marked failed.
    pub async fn fail_replay(&mut self, stage: &Stage, message: String) {
        if let Some(a) = self.replay.take() {
            let _ = replay::set_state(stage, &a.request, ReplayState::Failed, Some(message)).await;
        }
    }

    /// For a scheduled destination outside a replay: returns once a run is
    /// under way (sleeping until the schedule's next run when the last one
    /// is done). A run delivers what was staged when it started.
    pub async fn await_run(&mut self, log: &StreamLog, spec: &DestinationSpec, token: &CancellationToken, status: &SharedWorkerStatus) -> Result<Go> {
        if spec.schedule.is_continuous() || self.replay.is_some() {
            return Ok(Go::On);
        }
        loop {
            match self.run_until {
                Some(target) if self.next <= target => return Ok(Go::On),
                Some(_) => {
                    tracing::info!(destination = spec.name, delivered_to = self.next - 1, "scheduled run done");
                    self.run_until = None;
                }
                None => {}
            }
            let Some(at) = spec.schedule.next_run(Timestamp::now()) else {
                set(status, |s| s.state = "idle (the schedule never runs)".to_owned());
                token.cancelled().await;
                return Ok(Go::Stop);
            };
            set(status, |s| {
                s.state = "sleeping".to_owned();
                s.next_run = Some(at);
            });
            let wait = Duration::from_micros(u64::try_from(at.0 - Timestamp::now().0).unwrap_or(0));
            tokio::select! {
                _ = token.cancelled() => return Ok(Go::Stop),
                _ = tokio::time::sleep(wait) => {}
            }
            let target = log.head(None).await.context("reading the stream head for a scheduled run")?.unwrap_or(0);
            tracing::info!(destination = spec.name, schedule = %spec.schedule, target, "scheduled run");
            set(status, |s| {
                s.state = "running".to_owned();
                s.next_run = None;
            });
            self.run_until = Some(target);
        }
    }
}
