//! Delivering one fetched batch: roll-up, transforms, apply (whole or part
//! by part), and the `skip` policy's dead letters. The cursor is moved by
//! the caller once this reports the batch delivered.

use std::time::Duration;

use serde::Serialize;
use strata_common::{Lsn, TableName, Timestamp};
use strata_stager::keys::DestinationKeys;
use strata_stager::read::{BatchReader, Fetched, LargeBatch, Window};
use strata_stager::schema::TableSchema;
use strata_stager::{Stage, StageError};
use tokio_util::sync::CancellationToken;

use crate::destinations::{AnyDestination, Batch, DestError, PartId, RollUp, TableBatch};
use crate::metrics::DestinationMetrics;
use crate::spec::{DestinationSpec, OnError};
use crate::transform::Prepared;
use crate::wakeup::POLL;

/// How a delivery ended.
pub(super) enum Outcome {
    /// Durable at the destination, up to this (possibly rolled-up) batch,
    /// with how many changes it took.
    Delivered(Batch, u64),
    /// The destination failed.
    Failed(DestError),
    /// Reading the batches to roll up failed.
    Unreadable(StageError),
}

/// What a delivery needs besides the batch.
pub(super) struct Deliverer<'a> {
    pub stage: &'a Stage,
    pub spec: &'a DestinationSpec,
    pub token: &'a CancellationToken,
    pub reader: &'a mut BatchReader,
    pub dest: &'a mut AnyDestination,
    pub transforms: &'a mut Prepared,
    pub metrics: &'a DestinationMetrics,
}

impl Deliverer<'_> {
    /// Delivers `fetched`, cut to `window`; `roll_up` lets a destination
    /// that gathers batches take the following ones into the same delivery.
    pub async fn deliver(&mut self, fetched: Fetched, window: Window, roll_up: bool) -> Outcome {
        match fetched {
            Fetched::Large(large) => match self.deliver_parts(&large, window).await {
                Ok(changes) => Outcome::Delivered(large.header.into(), changes),
                Err(e) => Outcome::Failed(e),
            },
            Fetched::Whole(batch) => {
                let batch = match self.spec.destination.roll_up() {
                    Some(roll) if roll_up => match self.gather(batch.into(), roll).await {
                        Ok(b) => b,
                        Err(e) => return Outcome::Unreadable(e),
                    },
                    _ => batch.into(),
                };
                let batch = self.transforms.apply(batch);
                let applied = match self.dest.apply(&batch).await {
                    Err(e) if !e.is_retriable() && self.spec.on_error == OnError::Skip => {
                        tracing::warn!(destination = self.spec.name, seq = batch.seq, error = %e, "batch rejected; looking for the changes to skip");
                        self.skip_rejected(&batch).await
                    }
                    other => other.map(|()| batch.rows()),
                };
                match applied {
                    Ok(changes) => Outcome::Delivered(batch, changes),
                    Err(e) => Outcome::Failed(e),
                }
            }
        }
    }

    /// Gathers the batches after `first` into one delivery until it holds
    /// `rows` rows or [`ROLL_UP_MAX_BYTES`] of staged files, or — when no
    /// further batch is staged yet — until the first has waited `max_wait`
    /// since it was staged. The boundaries depend on the
    /// staged batches alone, or end later when more was staged, which is what
    /// keeps the files destination's names stable across redeliveries.
    async fn gather(&mut self, first: Batch, roll: RollUp) -> Result<Batch, StageError> {
        let deadline = first.staged_at.saturating_add(roll.max_wait).0;
        let (mut rows, mut bytes) = (first.rows(), first.staged_bytes);
        let mut parts = vec![first];
        while rows < roll.rows && bytes < ROLL_UP_MAX_BYTES {
            let next = parts.last().map_or(0, |b| b.seq) + 1;
            match self.reader.fetch(next, Window::default()).await? {
                Some(Fetched::Whole(b)) => {
                    let b = Batch::from(b);
                    rows += b.rows();
                    bytes += b.staged_bytes;
                    parts.push(b);
                }
                // Delivered alone, part by part.
                Some(Fetched::Large(_)) => break,
                None => {
                    let left = deadline.saturating_sub(Timestamp::now().0);
                    if left <= 0 {
                        break;
                    }
                    tokio::select! {
                        _ = self.token.cancelled() => break,
                        _ = tokio::time::sleep(POLL.min(Duration::from_micros(left.unsigned_abs()))) => {}
                    }
                }
            }
        }
        Ok(Batch::merge(parts))
    }

    /// Delivers a large batch a part (a chunk of [`PART_ROWS`] changes of one
    /// data file, fewer of wide rows: see [`strata_stager::codec::CHUNK_BYTES`]) at a time, so at most one part is decoded at once. A
    /// transactional destination applies every part in one transaction,
    /// committed with its position at the end.
    async fn deliver_parts(&mut self, large: &LargeBatch, window: Window) -> Result<u64, DestError> {
        let header: Batch = large.header.clone().into();
        let stage_error = |e: StageError| {
            let message = format!("reading batch {}: {e}", header.seq);
            if e.is_retriable() { DestError::Transient(message) } else { DestError::Permanent(message) }
        };
        let index = |n: usize| u32::try_from(n).map_err(|_| DestError::Permanent(format!("batch {} is cut into over 2^32 parts", header.seq)));
        if !self.dest.begin_parts(&self.transforms.apply(header.clone())).await? {
            return Ok(0);
        }
        let mut delivered = 0;
        for (file, (table, entry)) in header.tables.iter().zip(&large.files).enumerate() {
            let mut chunks = self.reader.chunks(entry, PART_ROWS).await.map_err(stage_error)?;
            let mut chunk = 0;
            while let Some(changes) = chunks.next().await.map_err(stage_error)? {
                let part = Batch {
                    tables: vec![TableBatch { schema: table.schema.clone(), changes: window.apply(changes) }],
                    part: Some(PartId { file: index(file)?, chunk: index(chunk)? }),
                    ..header.clone()
                };
                let part = self.transforms.apply(part);
                self.dest.apply_part(&part).await?;
                delivered += part.rows();
                chunk += 1;
            }
        }
        self.dest.finish_parts(&header).await?;
        Ok(delivered)
    }

    /// The `skip` policy: finds the changes the destination rejects, writes
    /// them to the dead-letter folder, and delivers the rest of the batch;
    /// returns how many changes that is.
    async fn skip_rejected(&mut self, batch: &Batch) -> Result<u64, DestError> {
        let keys = DestinationKeys::new(&self.spec.name).map_err(|e| DestError::Permanent(e.to_string()))?;
        let mut remaining = batch.clone();
        for _ in 0..SKIP_ROUNDS {
            let rejects = self.dest.rejects(&remaining).await?;
            if rejects.is_empty() {
                break;
            }
            for r in &rejects {
                let t = &remaining.tables[r.table];
                let c = &t.changes[r.change];
                let letter = DeadLetter {
                    destination: &self.spec.name,
                    stream: &self.spec.stream,
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
                self.stage.put(&path, body.into()).await.map_err(|e| DestError::Transient(format!("writing dead letter {path}: {e}")))?;
                self.metrics.dead_lettered.inc_by(1);
                tracing::warn!(destination = self.spec.name, seq = batch.seq, table = %t.schema.table, lsn = %c.lsn, ord = c.ord, error = r.error, "change rejected; written to the dead-letter folder");
            }
            remaining = remaining.without(&rejects);
            match self.dest.apply(&remaining).await {
                Err(e) if !e.is_retriable() => continue,
                other => return other.map(|()| remaining.rows()),
            }
        }
        self.dest.apply(&remaining).await.map(|()| remaining.rows())
    }
}

/// Changes per part of a batch delivered part by part: about 12 MiB
/// decoded, so a worker holds a few dozen MiB whatever the batch's size,
/// and the files destination writes files of a useful size.
const PART_ROWS: usize = 20_000;

/// Staged bytes gathered into one delivery at most (a batch may pass it):
/// bounds the memory of a roll-up of wide rows, which a row count does not.
const ROLL_UP_MAX_BYTES: u64 = 32 * 1024 * 1024;

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
