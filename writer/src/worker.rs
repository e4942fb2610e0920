//! One destination's worker.
//!
//! Reads `log/{next}.json` (a GET, no listing), fetches and decodes its
//! files — the next batch is fetched and decoded while the current one is
//! applied, one ahead — delivers the batch, and advances the cursor only after the
//! destination reports it durable. Where the destination keeps its own
//! position (Postgres), that one is authoritative and `cursor.json` mirrors
//! it for status. Transient errors are retried forever with exponential
//! backoff and jitter, and shown in the status while they last; a permanent
//! error stops the worker with the error shown, until the spec changes.
//! A caught-up worker waits for the next batch through a
//! [`Waiter`](crate::wakeup::Waiter): a poll of the stage every 200 ms, or
//! an SQS wake-up when the writer has a wake-up queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use strata_common::{Change, Lsn, TableName, Timestamp};
use strata_stager::cursor::{Cursor, Cursors};
use strata_stager::keys::DestinationKeys;
use strata_stager::log::{StreamLog, first_at_or_after};
use strata_stager::manifest::FileEntry;
use strata_stager::schema::TableSchema;
use strata_stager::{Stage, StageError, Versioned};
use tokio_util::sync::CancellationToken;

use crate::destinations::{AnyDestination, Batch, DestError, PartId, RollUp, TableChanges};
use crate::replay::{self, ReplayRequest, ReplayState, Then};
use crate::spec::{DestinationSpec, OnError, StartPosition};
use crate::transform::Prepared;
use crate::wakeup::{POLL, Waiter};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What `status` and `/metrics` show of a worker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerStatus {
    pub state: String,
    pub cursor: Option<u64>,
    pub cursor_commit_ts: Option<Timestamp>,
    pub last_error: Option<String>,
    /// When the worker stopped on an error retrying cannot heal.
    pub failed_at: Option<Timestamp>,
    pub retries: u64,
    /// The delivery schedule in force.
    pub schedule: String,
    /// When a scheduled destination runs next (while it sleeps).
    pub next_run: Option<Timestamp>,
}

pub type SharedWorkerStatus = Arc<Mutex<WorkerStatus>>;

fn set(status: &SharedWorkerStatus, f: impl FnOnce(&mut WorkerStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// Full jitter: a random delay up to `cap`.
pub(crate) fn jitter(cap: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    Duration::from_millis(r % (cap.as_millis().max(1) as u64))
}

/// Sleeps `d` unless cancelled first; returns false when cancelled.
async fn sleep(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// How many times the `skip` policy sets aside rejected changes of one
/// batch before it gives up and pauses the destination (a rejection that
/// only shows up with the other changes applied in bulk).
const SKIP_ROUNDS: usize = 3;

/// `destinations/{name}/dead-letter/{seq}-{lsn}-{ord}.json`: one rejected
/// change, with why. Named by the change, so writing it again is harmless.
#[derive(Serialize)]
struct DeadLetter<'a> {
    destination: &'a str,
    stream: &'a str,
    seq: u64,
    table: &'a TableName,
    schema_version: u32,
    lsn: Lsn,
    ord: u32,
    op: String,
    error: &'a str,
    /// The change's row images, values as JSON.
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    written_at: Timestamp,
}

fn row_json(schema: &TableSchema, row: &[strata_common::Value]) -> serde_json::Value {
    schema.columns.iter().zip(row).map(|(c, v)| (c.name.clone(), v.to_json(&c.column_type))).collect::<serde_json::Map<_, _>>().into()
}

/// The `skip` policy: finds the changes the destination rejects, writes
/// them to the dead-letter folder, and delivers the rest of the batch.
async fn skip_rejected(stage: &Stage, spec: &DestinationSpec, dest: &mut AnyDestination, batch: &Batch) -> Result<(), DestError> {
    let keys = DestinationKeys::new(&spec.name).map_err(|e| DestError::Permanent(e.to_string()))?;
    let mut remaining = batch.clone();
    for _ in 0..SKIP_ROUNDS {
        let rejects = dest.rejects(&remaining).await?;
        if rejects.is_empty() {
            break;
        }
        for r in &rejects {
            let t = &remaining.tables[r.table];
            let c = &t.changes[r.change];
            let letter = DeadLetter {
                destination: &spec.name,
                stream: &spec.stream,
                seq: batch.seq,
                table: &t.schema.table,
                schema_version: t.schema.version,
                lsn: c.lsn,
                ord: c.ord,
                op: c.op.to_string(),
                error: &r.error,
                before: c.before.as_deref().map(|row| row_json(&t.schema, row)),
                after: c.after.as_deref().map(|row| row_json(&t.schema, row)),
                written_at: Timestamp::now(),
            };
            let path = keys.dead_letter(batch.seq, c.lsn, c.ord);
            let body = serde_json::to_vec_pretty(&letter).map_err(|e| DestError::Permanent(e.to_string()))?;
            stage.put(&path, body.into()).await.map_err(|e| DestError::Transient(format!("writing dead letter {path}: {e}")))?;
            tracing::warn!(destination = spec.name, seq = batch.seq, table = %t.schema.table, lsn = %c.lsn, ord = c.ord, error = r.error, "change rejected; written to the dead-letter folder");
        }
        remaining = remaining.without(&rejects);
        match dest.apply(&remaining).await {
            Err(e) if !e.is_retriable() => continue,
            other => return other,
        }
    }
    dest.apply(&remaining).await
}

/// Connects and reads the durable position, retrying transient failures.
/// `None` when cancelled.
async fn connect(
    stage: &Stage,
    spec: &DestinationSpec,
    token: &CancellationToken,
    status: &SharedWorkerStatus,
) -> Result<Option<(AnyDestination, Option<u64>)>> {
    let mut delay = BACKOFF_MIN;
    loop {
        let attempt = async {
            let mut d = spec.destination.connect(&spec.name, stage).await?;
            let seq = d.durable_seq().await?;
            Ok::<_, DestError>((d, seq))
        };
        match attempt.await {
            Ok(ok) => return Ok(Some(ok)),
            Err(e) if e.is_retriable() => {
                set(status, |s| {
                    s.state = "failing".to_owned();
                    s.last_error = Some(e.to_string());
                    s.retries += 1;
                });
                tracing::warn!(destination = spec.name, error = %e, "destination unavailable; retrying");
                if !sleep(token, delay + jitter(delay)).await {
                    return Ok(None);
                }
                delay = (delay * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("destination {:?}", spec.name)));
            }
        }
    }
}

/// Where a destination without a recorded position starts, and the time
/// filter for the first batch when it starts at a time.
async fn initial(log: &StreamLog, start: StartPosition) -> Result<(u64, Option<Timestamp>)> {
    Ok(match start {
        StartPosition::Earliest => (log.low().await?, None),
        StartPosition::Latest => (log.head(None).await?.map_or(1, |h| h + 1), None),
        StartPosition::At(t) => match log.seek_time(t).await? {
            Some(seq) => (seq, Some(t)),
            None => (log.head(None).await?.map_or(1, |h| h + 1), None),
        },
    })
}

/// Batches holding more rows than this are delivered part by part (see
/// [`deliver_parts`]) instead of decoded whole: a decoded change takes some
/// 600 bytes, so this bounds a whole batch near 30 MiB, and a transaction
/// of any size costs one part of decoded memory.
const WHOLE_BATCH_MAX_ROWS: u64 = 50_000;

/// A committed batch, ready to deliver.
enum Staged {
    /// Decoded whole.
    Whole(Batch),
    /// Too large to hold at once: delivered part by part.
    Large(LargeBatch),
}

/// A batch's manifest, resolved: `header.tables` has one entry per data
/// file (its schema, no changes), in the manifest's order.
struct LargeBatch {
    header: Batch,
    files: Vec<FileEntry>,
}

impl Staged {
    fn header(&self) -> &Batch {
        match self {
            Staged::Whole(b) => b,
            Staged::Large(l) => &l.header,
        }
    }
}

/// The changes committed at or after `from` and at or before `until`, of
/// one file's changes in commit order.
fn window(mut changes: Vec<Change>, from: Option<Timestamp>, until: Option<Timestamp>) -> Vec<Change> {
    if let Some(t) = from {
        changes.drain(..first_at_or_after(&changes, t));
    }
    if let Some(t) = until {
        changes.retain(|c| c.commit_ts <= t);
    }
    changes
}

/// Fetches batch `seq` (`None` if not committed yet), decoding it unless it
/// is large, keeping only changes committed at or after `from` and at or
/// before `until`.
async fn fetch(
    log: &StreamLog,
    seq: u64,
    schemas: &mut HashMap<(TableName, u32), Arc<TableSchema>>,
    from: Option<Timestamp>,
    until: Option<Timestamp>,
) -> Result<Option<Staged>, StageError> {
    let Some(m) = log.read_opt(seq).await? else {
        return Ok(None);
    };
    let mut tables = Vec::with_capacity(m.files.len());
    for f in &m.files {
        let key = (f.table.clone(), f.schema_version);
        let schema = match schemas.get(&key) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(log.read_schema(&f.table, f.schema_version).await?);
                schemas.insert(key, s.clone());
                s
            }
        };
        tables.push(TableChanges { schema, changes: Vec::new() });
    }
    let mut batch = Batch {
        seq,
        first_seq: seq,
        stream: m.stream,
        lsn_end: m.lsn.end,
        commit_ts_min: m.commit_ts.min,
        commit_ts_max: m.commit_ts.max,
        staged_at: m.created_at,
        tables,
        part: None,
    };
    if m.counts.rows > WHOLE_BATCH_MAX_ROWS {
        return Ok(Some(Staged::Large(LargeBatch { header: batch, files: m.files })));
    }
    for (t, f) in batch.tables.iter_mut().zip(&m.files) {
        t.changes = window(log.read_file(f).await?.changes, from, until);
    }
    Ok(Some(Staged::Whole(batch)))
}

/// Changes per part of a batch delivered part by part: about 12 MiB
/// decoded, so a worker holds a few dozen MiB whatever the batch's size,
/// and the files destination writes files of a useful size.
const PART_ROWS: usize = 20_000;

/// Delivers a large batch a part (a chunk of [`PART_ROWS`] changes of one
/// data file) at a time, so at most one part is decoded at once. A
/// transactional destination applies every part in one transaction,
/// committed with its position at the end.
async fn deliver_parts(
    log: &StreamLog,
    dest: &mut AnyDestination,
    transforms: &mut Prepared,
    large: &LargeBatch,
    window_of: (Option<Timestamp>, Option<Timestamp>),
) -> Result<(), DestError> {
    let header = &large.header;
    let stage_error = |e: StageError| {
        let message = format!("reading batch {}: {e}", header.seq);
        if e.is_retriable() { DestError::Transient(message) } else { DestError::Permanent(message) }
    };
    let index = |n: usize| u32::try_from(n).map_err(|_| DestError::Permanent(format!("batch {} is cut into over 2^32 parts", header.seq)));
    if !dest.begin_parts(&transforms.apply(header)).await? {
        return Ok(());
    }
    for (file, (table, entry)) in header.tables.iter().zip(&large.files).enumerate() {
        let mut reader = log.open_file(entry, PART_ROWS).await.map_err(stage_error)?;
        let mut chunk = 0;
        while let Some(changes) = reader.next_chunk().map_err(stage_error)? {
            let part = Batch {
                tables: vec![TableChanges { schema: table.schema.clone(), changes: window(changes, window_of.0, window_of.1) }],
                part: Some(PartId { file: index(file)?, chunk: index(chunk)? }),
                ..header.clone()
            };
            dest.apply_part(&transforms.apply(&part)).await?;
            chunk += 1;
        }
    }
    dest.finish_parts(header).await
}

/// Gathers the batches after `first` into one delivery until it holds
/// `rows` rows, or — when no further batch is staged yet — until the first
/// has waited `max_wait` since it was staged. The boundaries depend on the
/// staged batches alone, or end later when more was staged, which is what
/// keeps the files destination's names stable across redeliveries.
async fn gather(
    log: &StreamLog,
    first: Batch,
    roll: RollUp,
    schemas: &mut HashMap<(TableName, u32), Arc<TableSchema>>,
    token: &CancellationToken,
) -> Result<Batch, StageError> {
    let deadline = first.staged_at.0.saturating_add(i64::try_from(roll.max_wait.as_micros()).unwrap_or(i64::MAX));
    let mut rows = first.rows();
    let mut parts = vec![first];
    while rows < roll.rows {
        let next = parts.last().map_or(0, |b| b.seq) + 1;
        match fetch(log, next, schemas, None, None).await? {
            Some(Staged::Whole(b)) => {
                rows += b.rows();
                parts.push(b);
            }
            // Delivered alone, part by part.
            Some(Staged::Large(_)) => break,
            None => {
                let left = deadline.saturating_sub(Timestamp::now().0);
                if left <= 0 || !sleep(token, POLL.min(Duration::from_micros(left.unsigned_abs()))).await {
                    break;
                }
            }
        }
    }
    Ok(Batch::merge(parts))
}

/// A replay being carried out by a worker.
struct ActiveReplay {
    request: Versioned<ReplayRequest>,
    /// For `--as-of`: deliver up to this time.
    until: Option<(Timestamp, Then)>,
}

/// Runs one destination until `token` is cancelled or a permanent error,
/// first carrying out `replay` if given.
pub async fn run(
    stage: Stage,
    spec: DestinationSpec,
    token: CancellationToken,
    status: SharedWorkerStatus,
    mut waiter: Waiter,
    replay: Option<Versioned<ReplayRequest>>,
) -> Result<()> {
    let mut active = None;
    let result = run_inner(&stage, &spec, &token, &status, &mut waiter, replay, &mut active).await;
    if let Err(e) = &result {
        let message = format!("{e:#}");
        set(&status, |s| {
            s.state = "failed".to_owned();
            s.last_error = Some(message.clone());
            s.failed_at = Some(Timestamp::now());
        });
        if let Some(a) = active {
            let _ = replay::set_state(&stage, &a.request, ReplayState::Failed, Some(message)).await;
        }
    }
    result
}

/// Marks the replay done; an `--as-of … --then stop` also pauses the destination.
async fn finish_replay(stage: &Stage, spec: &DestinationSpec, a: ActiveReplay) -> Result<bool> {
    replay::set_state(stage, &a.request, ReplayState::Done, None).await?;
    tracing::info!(destination = spec.name, replay = a.request.value.id, "replay done");
    if matches!(a.until, Some((_, Then::Stop))) {
        crate::control::update(stage, &spec.name, |s| s.paused = true).await?;
        return Ok(true);
    }
    Ok(false)
}

async fn run_inner(
    stage: &Stage,
    spec: &DestinationSpec,
    token: &CancellationToken,
    status: &SharedWorkerStatus,
    waiter: &mut Waiter,
    replay: Option<Versioned<ReplayRequest>>,
    active: &mut Option<ActiveReplay>,
) -> Result<()> {
    let (stage, spec, token, status) = (stage.clone(), spec.clone(), token.clone(), status.clone());
    let log = StreamLog::new(&stage, &spec.stream)?;
    let cursors = Cursors::new(&stage, &spec.name)?;
    let mut transforms = spec.transforms.prepare().map_err(|e| anyhow::anyhow!("destination {:?}: {e}", spec.name))?;
    set(&status, |s| s.state = "connecting".to_owned());
    let Some((mut dest, durable)) = connect(&stage, &spec, &token, &status).await? else {
        return Ok(());
    };
    let mut cursor: Option<Versioned<Cursor>> = cursors.load().await?;
    let (mut next, mut from) = match (durable, &cursor) {
        (Some(seq), _) => (seq + 1, None),
        (None, Some(c)) => (c.value.seq + 1, None),
        (None, None) => initial(&log, spec.start).await?,
    };
    if cursor.is_none() {
        // Record the starting point at once, so a restart before the first
        // batch does not move a `latest` start forward.
        let c = Cursor {
            format: 1,
            destination: spec.name.clone(),
            stream: spec.stream.clone(),
            seq: next - 1,
            lsn: Lsn::ZERO,
            epoch: 0,
            updated_at: Timestamp::now(),
        };
        cursor = Some(cursors.advance(None, c).await.context("recording the start position")?);
    }
    if let Some(r) = replay {
        let request = replay::set_state(&stage, &r, ReplayState::Running, None).await?;
        set(&status, |s| s.state = "replaying".to_owned());
        let (seq, truncate, until) = match (request.value.as_of, request.value.from) {
            (Some(t), _) => (log.low().await? - 1, log.tables().await?, Some((t, request.value.then))),
            (None, Some(t)) => match log.seek_time(t).await? {
                Some(s) => {
                    from = Some(t);
                    (s - 1, Vec::new(), None)
                }
                // Nothing committed at or after T yet: nothing to re-deliver.
                None => (next - 1, Vec::new(), None),
            },
            (None, None) => unreachable!("validated: a replay has --from or --as-of"),
        };
        dest.reset(seq, &truncate).await.map_err(|e| anyhow::Error::new(e).context("resetting the destination for a replay"))?;
        let current = cursor.take().context("cursor recorded above")?;
        cursor = Some(cursors.rewind(&current, seq, Lsn::ZERO, Timestamp::now()).await.context("rewinding the cursor")?);
        next = seq + 1;
        tracing::info!(destination = spec.name, replay = request.value.id, from = next, "replaying");
        *active = Some(ActiveReplay { request, until });
    }
    tracing::info!(destination = spec.name, next, "delivering");
    let mut schemas = HashMap::new();
    let mut delay = BACKOFF_MIN;
    // The next batch, fetched and decoded while the current one is applied.
    let mut prefetched: Option<Staged> = None;
    // A scheduled destination's current run delivers up to this seq.
    let mut run_until: Option<u64> = None;
    set(&status, |s| s.schedule = spec.schedule.to_string());
    loop {
        if token.is_cancelled() {
            return Ok(());
        }
        if !spec.schedule.is_continuous() && active.is_none() {
            if run_until.is_some_and(|target| next > target) {
                tracing::info!(destination = spec.name, delivered_to = next - 1, "scheduled run done");
                run_until = None;
            }
            if run_until.is_none() {
                let Some(at) = spec.schedule.next_run(Timestamp::now()) else {
                    set(&status, |s| s.state = "idle (the schedule never runs)".to_owned());
                    token.cancelled().await;
                    return Ok(());
                };
                set(&status, |s| {
                    s.state = "sleeping".to_owned();
                    s.next_run = Some(at);
                });
                let wait = Duration::from_micros(u64::try_from(at.0 - Timestamp::now().0).unwrap_or(0));
                if !sleep(&token, wait).await {
                    return Ok(());
                }
                // A run delivers what is staged when it starts.
                let target = log.head(None).await.context("reading the stream head for a scheduled run")?.unwrap_or(0);
                tracing::info!(destination = spec.name, schedule = %spec.schedule, target, "scheduled run");
                set(&status, |s| {
                    s.state = "running".to_owned();
                    s.next_run = None;
                });
                run_until = Some(target);
                continue;
            }
        }
        set(&status, |s| s.cursor = Some(next - 1));
        let until = active.as_ref().and_then(|a| a.until.map(|(t, _)| t));
        let fetched = match prefetched.take() {
            Some(b) if b.header().seq == next && from.is_none() => Ok(Some(b)),
            _ => fetch(&log, next, &mut schemas, from, until).await,
        };
        let staged = match fetched {
            Ok(Some(b)) if until.is_some_and(|t| b.header().commit_ts_min > t) => {
                // The rebuild has reached its time.
                if let Some(a) = active.take()
                    && finish_replay(&stage, &spec, a).await?
                {
                    return Ok(());
                }
                continue;
            }
            Ok(Some(b)) => b,
            Ok(None) => {
                // Caught up: a rebuild as of a time past the head is complete.
                if active.as_ref().is_some_and(|a| a.until.is_some())
                    && let Some(a) = active.take()
                    && finish_replay(&stage, &spec, a).await?
                {
                    return Ok(());
                }
                set(&status, |s| s.state = "running".to_owned());
                if !waiter.wait(&token).await {
                    return Ok(());
                }
                continue;
            }
            Err(e) if e.is_retriable() => {
                tracing::warn!(destination = spec.name, seq = next, error = %e, "reading the stage failed; retrying");
                if !sleep(&token, delay + jitter(delay)).await {
                    return Ok(());
                }
                delay = (delay * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading batch {next} of stream {:?}", spec.stream)));
            }
        };
        let (batch, applied) = match staged {
            Staged::Large(large) => {
                let applied = deliver_parts(&log, &mut dest, &mut transforms, &large, (from, until)).await;
                (large.header, applied)
            }
            Staged::Whole(batch) => {
                // Roll-up gathers the following batches into this delivery (not
                // during a replay, whose first and last batches are cut by time).
                let batch = match spec.destination.roll_up() {
                    Some(roll) if active.is_none() && from.is_none() => match gather(&log, batch, roll, &mut schemas, &token).await {
                        Ok(b) => b,
                        Err(e) if e.is_retriable() => {
                            tracing::warn!(destination = spec.name, seq = next, error = %e, "reading the stage failed; retrying");
                            if !sleep(&token, delay + jitter(delay)).await {
                                return Ok(());
                            }
                            continue;
                        }
                        Err(e) => {
                            return Err(anyhow::Error::new(e).context(format!("reading batches after {next} of stream {:?}", spec.stream)));
                        }
                    },
                    _ => batch,
                };
                let batch = transforms.apply(&batch);
                let (applied, ahead) = tokio::join!(dest.apply(&batch), fetch(&log, next + 1, &mut schemas, None, until));
                // A failed read-ahead is retried in turn, as an ordinary fetch.
                prefetched = ahead.ok().flatten();
                let applied = match applied {
                    Err(e) if !e.is_retriable() && spec.on_error == OnError::Skip => {
                        tracing::warn!(destination = spec.name, seq = batch.seq, error = %e, "batch rejected; looking for the changes to skip");
                        skip_rejected(&stage, &spec, &mut dest, &batch).await
                    }
                    other => other,
                };
                (batch, applied)
            }
        };
        match applied {
            Ok(()) => {
                delay = BACKOFF_MIN;
                let current = cursor.take();
                let c = Cursor {
                    format: 1,
                    destination: spec.name.clone(),
                    stream: spec.stream.clone(),
                    seq: batch.seq,
                    lsn: batch.lsn_end,
                    epoch: current.as_ref().map_or(0, |c| c.value.epoch),
                    updated_at: Timestamp::now(),
                };
                cursor = Some(cursors.advance(current.as_ref(), c).await.context("advancing the cursor")?);
                set(&status, |s| {
                    s.state = "running".to_owned();
                    s.cursor = Some(batch.seq);
                    s.cursor_commit_ts = Some(batch.commit_ts_max);
                    s.last_error = None;
                });
                from = None;
                next = batch.seq + 1;
                // A --from replay is done once its first batch is re-delivered.
                if active.as_ref().is_some_and(|a| a.until.is_none())
                    && let Some(a) = active.take()
                {
                    finish_replay(&stage, &spec, a).await?;
                }
            }
            Err(e) if e.is_retriable() => {
                set(&status, |s| {
                    s.state = "failing".to_owned();
                    s.last_error = Some(e.to_string());
                    s.retries += 1;
                });
                tracing::warn!(destination = spec.name, seq = next, error = %e, "delivery failed; retrying");
                let wait = (delay + jitter(delay)).max(e.retry_after().unwrap_or_default());
                if !sleep(&token, wait).await {
                    return Ok(());
                }
                delay = (delay * 2).min(BACKOFF_MAX);
                // The connection may be gone: start over from what the destination holds.
                let Some((d, durable)) = connect(&stage, &spec, &token, &status).await? else {
                    return Ok(());
                };
                dest = d;
                if let Some(seq) = durable {
                    next = seq + 1;
                }
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("delivering batch {next} to {:?}", spec.name)));
            }
        }
    }
}
