//! The initial snapshot: every existing row of the published tables, staged
//! once, consistent with the change stream that follows.
//!
//! ```text
//!  CREATE_REPLICATION_SLOT … (SNAPSHOT 'export')  ──▶ point C, snapshot S (alive while that connection idles)
//!  workers × N: BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT S;
//!               COPY (SELECT … WHERE ctid in page range) TO STDOUT ──parse, encode──▶ committer ──▶ snapshot batches
//!  then: stream the slot from C
//! ```
//!
//! - **Seam.** The slot streams exactly the transactions committing at or
//!   after its consistent point, and the exported snapshot holds exactly
//!   those before it, so nothing is missed or doubled. Snapshot rows are
//!   staged with `_strata_op = r` and `_strata_lsn` = the point.
//! - **Order.** Tables are copied level by level of their foreign-key graph
//!   (parents first; the tables of one level, and the page ranges of a large
//!   table, in parallel), so the seq order of snapshot batches is a valid
//!   load order. Each manifest records the levels, dependencies and cycles.
//! - **Resume.** The exported snapshot dies with its connection, so a reader
//!   killed mid-snapshot cannot continue in it. On restart, tables whose
//!   completion is recorded (in a manifest's `snapshot.completed`, or in
//!   `snapshot.json`) are never copied again. The others are copied whole
//!   inside a new exported snapshot taken from a *temporary* slot at a later
//!   point C2: the stream (still from C, where the stream's slot stands) then
//!   drops those tables' transactions committing before C2, which the new
//!   copy already holds. A table of which some rows were staged before the
//!   kill gets a staged `truncate` before its new copy, so any reader of the
//!   stage (mirror, replay) discards the partial rows: re-staging is harmless
//!   by construction.
//! - **DDL.** A table's copy reads the current files with the current
//!   column names, not the snapshot's (see [`plan::Shape`]). When DDL since
//!   the point dropped or renamed a copied column, retyped it, or rewrote or
//!   truncated the table before its copy ended, the copy fails or would be
//!   wrong; the table is then copied again in a newer snapshot, as after a
//!   restart.
//! - **State.** `streams/{stream}/snapshot.json` holds the point C, the
//!   phase, and the per-table points once done; the stream resumes from C
//!   and filters by those points on every start.

pub(crate) mod copy;
pub mod copytext;
pub mod plan;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use strata_common::backoff::Backoff;
use strata_common::config::{Config, SnapshotMode, SourceConfig};
use strata_common::{Change, Lsn, Op, TableName, Timestamp};
use strata_stager::Versioned;
use strata_stager::log::{BatchWriter, StreamLog, TableBatch};
use strata_stager::manifest::{BatchKind, SnapshotInfo, SnapshotTable};
use strata_stager::store::ObjectVersion;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::ReaderMetrics;
use crate::schemas::SchemaVersions;
use crate::setup::SourceDb;
use crate::walstream::ExportedSlot;
use copy::{Job, Msg, Shared, TableCopy};
pub use strata_stager::control::{Phase, SnapshotProgress, SnapshotState, TablePoint};

/// What the change stream needs from the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Seam {
    /// Where the stream starts when no change batch is staged yet.
    pub point: Option<Lsn>,
    /// Tables copied at a later point than the stream's: their transactions
    /// committing before it are in the copy already.
    cutoffs: HashMap<TableName, Lsn>,
}

impl Seam {
    /// Whether a change of `table` in the transaction committing at
    /// `final_lsn` is already in the table's snapshot.
    pub fn in_snapshot(&self, table: &TableName, final_lsn: Lsn) -> bool {
        self.cutoffs.get(table).is_some_and(|cut| final_lsn < *cut)
    }

    fn from_state(s: &SnapshotState) -> Seam {
        let cutoffs = s.tables.iter().filter(|t| t.point > s.point).map(|t| (t.table.clone(), t.point)).collect();
        Seam { point: Some(s.point), cutoffs }
    }
}

/// Receives progress every few seconds.
pub type OnProgress = Arc<dyn Fn(SnapshotProgress) + Send + Sync>;

/// What a snapshot works with.
pub struct SnapshotCtx<'a> {
    pub config: &'a Config,
    pub source: &'a SourceConfig,
    pub log: &'a StreamLog,
    pub metrics: &'a ReaderMetrics,
    pub on_progress: OnProgress,
}

/// Takes or finishes the initial snapshot when the stream needs one, and
/// returns the seam the stream starts from, or `None` if `token` was
/// cancelled before the snapshot completed. A stream staged before (or
/// without) a snapshot has an empty seam: it resumes from its last batch.
pub async fn ensure(ctx: &SnapshotCtx<'_>, db: &mut SourceDb, token: &CancellationToken) -> Result<Option<Seam>> {
    let SnapshotCtx { config, source, log, .. } = *ctx;
    let key = log.keys().snapshot();
    let state: Option<Versioned<SnapshotState>> = log.stage().get_json(&key).await.context("reading the snapshot state")?;
    let head = log.head(None).await.context("finding the stream's last batch")?;
    match &state {
        Some(s) if s.value.phase == Phase::Done => return Ok(Some(Seam::from_state(&s.value))),
        None if head.is_some() || config.snapshot.mode == SnapshotMode::Never => return Ok(Some(Seam::default())),
        _ => {}
    }
    let slot = source.slot_name();
    let mut exported = None;
    let (mut state, mut version) = match state {
        Some(s) => (s.value, Some(s.version)),
        None => {
            let point = match db.slot(&slot).await? {
                // An earlier start created the slot and died before recording it.
                Some(existing) => {
                    db.check_slot_owner(&slot, &existing).await?;
                    existing.confirmed_flush.with_context(|| format!("replication slot {slot:?} has no confirmed position yet; retry once it is consistent"))?
                }
                None => {
                    let e = ExportedSlot::create(&source.url, &slot, false)?;
                    let point = e.point;
                    exported = Some(e);
                    point
                }
            };
            let state = SnapshotState {
                format: strata_stager::FORMAT_VERSION,
                point,
                phase: Phase::Copying,
                started_at: Timestamp::now(),
                finished_at: None,
                tables: Vec::new(),
                publication: None,
            };
            (state, None)
        }
    };
    version = Some(log.stage().put_json_if(&key, &state, version.as_ref()).await.context("recording the snapshot state")?);

    let mut head = head;
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let progress = Progress::scan(log, head, &state).await?;
        // Resuming, or copying again after DDL: the stream's exported
        // snapshot is gone or too old; take a fresh one from a temporary
        // slot for the tables still to copy.
        let export = match exported.take() {
            Some(e) => e,
            None => {
                let temporary = format!("strata_snapshot_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
                tracing::info!(completed = progress.completed.len(), "continuing the snapshot in a new exported snapshot");
                ExportedSlot::create(&source.url, &temporary, true)?
            }
        };
        let mut copier = Copier::start(ctx, &mut *db, &export, head.map_or(1, |h| h + 1), state.point).await?;
        let result = copier.run(progress, &mut state, &mut version, token).await;
        drop(copier);
        drop(export);
        match result {
            Ok(true) => break,
            Ok(false) => return Ok(None),
            Err(e) if e.downcast_ref::<TablesChanged>().is_some() => {
                let delay = retry.next_delay();
                tracing::warn!(error = format!("{e:#}"), delay_ms = delay.as_millis() as u64, "copying the changed tables again in a newer snapshot");
                tokio::select! {
                    _ = token.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
                head = log.head(None).await.context("finding the stream's last batch")?;
            }
            Err(e) => return Err(e),
        }
    }
    state.phase = Phase::Done;
    state.finished_at = Some(Timestamp::now());
    log.stage().put_json_if(&key, &state, version.as_ref()).await.context("recording the snapshot as done")?;
    tracing::info!(point = %state.point, tables = state.tables.len(), "snapshot complete; streaming changes from its point");
    Ok(Some(Seam::from_state(&state)))
}

/// DDL committed after the snapshot point reached tables before their copy
/// finished (see [`plan::Shape`]): they are copied again, whole, in a newer
/// snapshot, as after a restart.
#[derive(Debug, thiserror::Error)]
#[error("DDL after the snapshot point changed {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
struct TablesChanged(Vec<TableName>);

/// What the stage already holds of an interrupted snapshot.
#[derive(Default)]
struct Progress {
    /// Completed tables and their points.
    completed: HashMap<TableName, Lsn>,
    /// Tables with rows staged.
    started: HashSet<TableName>,
}

impl Progress {
    async fn scan(log: &StreamLog, head: Option<u64>, state: &SnapshotState) -> Result<Progress> {
        let mut p = Progress::default();
        for t in &state.tables {
            p.completed.insert(t.table.clone(), t.point);
        }
        let Some(head) = head else { return Ok(p) };
        let low = log.low().await?;
        let mut manifests = futures::stream::iter(low..=head).map(|seq| log.read(seq)).buffered(16);
        while let Some(m) = manifests.next().await {
            let m = m.context("reading the staged snapshot batches")?;
            if m.kind != BatchKind::Snapshot {
                bail!("batch {} of an unfinished snapshot is a change batch; the stage was written by something else", m.seq);
            }
            for f in &m.files {
                p.started.insert(f.table.clone());
            }
            if let Some(info) = &m.snapshot {
                for t in &info.completed {
                    p.completed.insert(t.clone(), info.point);
                }
            }
        }
        Ok(p)
    }
}

struct Copier<'a> {
    ctx: &'a SnapshotCtx<'a>,
    clients: Vec<tokio_postgres::Client>,
    coordinator: tokio_postgres::Client,
    snapshot_name: String,
    point: Lsn,
    stream_point: Lsn,
    next_seq: u64,
    schemas: SchemaVersions,
    db: &'a mut SourceDb,
}

impl<'a> Copier<'a> {
    async fn start(ctx: &'a SnapshotCtx<'a>, db: &'a mut SourceDb, export: &ExportedSlot, next_seq: u64, stream_point: Lsn) -> Result<Copier<'a>> {
        let coordinator = copy::connect(&ctx.source.url, Some(&export.snapshot_name)).await?;
        Ok(Copier {
            ctx,
            clients: Vec::new(),
            coordinator,
            snapshot_name: export.snapshot_name.clone(),
            point: export.point,
            stream_point,
            next_seq,
            schemas: SchemaVersions::new(ctx.log),
            db,
        })
    }

    /// Copies every table not yet complete; false if cancelled first.
    async fn run(&mut self, progress: Progress, state: &mut SnapshotState, version: &mut Option<ObjectVersion>, token: &CancellationToken) -> Result<bool> {
        let ctx = self.ctx;
        let tables = plan::plan(&self.coordinator, &ctx.source.publication_name()).await?;
        state.publication = Some(plan::membership(&self.coordinator, &ctx.source.publication_name()).await?);
        let commit_ts = Timestamp::now();
        let mut copies = Vec::new();
        for t in &tables {
            // Stage the schema version the stream will reuse (same columns,
            // same version), also for tables already complete.
            let schema = self.schemas.version(self.db, &t.relation, self.point).await?;
            if let Some(&point) = progress.completed.get(&t.table) {
                if !state.tables.iter().any(|p| p.table == t.table) {
                    state.tables.push(TablePoint { table: t.table.clone(), point });
                }
                continue;
            }
            copies.push((
                t,
                Arc::new(TableCopy {
                    table: Arc::new(t.table.clone()),
                    oid: t.relation.oid,
                    shape: t.shape.clone(),
                    schema,
                    level: t.level,
                    partitioned: t.partitioned,
                    estimated_rows: t.estimated_rows,
                    rows: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    done: AtomicBool::new(false),
                }),
            ));
        }
        let graph: HashMap<TableName, SnapshotTable> = tables.iter().map(|t| (t.table.clone(), t.graph.clone())).collect();
        for t in tables.iter().filter(|t| !t.graph.cycle.is_empty()) {
            tracing::warn!(table = %t.table, cycle = ?t.graph.cycle, "foreign keys form a cycle; its tables share a load level");
        }
        let shared = Arc::new(Shared {
            point: self.point,
            commit_ts,
            max_rows: ctx.config.batch.max_rows,
            max_bytes: ctx.config.batch.max_bytes,
            ords: AtomicU64::new(0),
            jobs: Mutex::new(VecDeque::new()),
            fallbacks: ctx.metrics.fallbacks.clone(),
        });
        // Partial rows of an interrupted copy: a truncate first, so any
        // reader of the stage discards them before the new copy's rows.
        let restarted: Vec<&Arc<TableCopy>> = copies.iter().map(|(_, c)| c).filter(|c| progress.started.contains(&c.table)).collect();
        if !restarted.is_empty() {
            let mut w = BatchWriter::new(ctx.log, self.next_seq, BatchKind::Snapshot);
            let mut infos = Vec::new();
            for c in &restarted {
                let ord = u32::try_from(shared.ords.fetch_add(1, Ordering::Relaxed)).map_err(|_| anyhow!("ordinal overflow"))?;
                let truncate = Change { op: Op::Truncate, table: c.table.clone(), lsn: self.point, ord, xid: None, commit_ts, after: None, before: None };
                w.add(TableBatch { schema: c.schema.clone(), changes: vec![truncate] }).await?;
                infos.push(graph[&*c.table].clone());
                tracing::info!(table = %c.table, "discarding the partial copy of an interrupted snapshot (staged truncate)");
            }
            let level = restarted.iter().map(|c| c.level).min().unwrap_or(0);
            w.set_snapshot(SnapshotInfo { point: self.point, level, tables: infos, completed: Vec::new() });
            w.commit(self.stream_point).await.context("staging the truncate of partially copied tables")?;
            self.next_seq += 1;
        }
        let workers = ctx.config.snapshot.workers;
        for _ in self.clients.len()..workers.min(copies.len().max(1)) {
            self.clients.push(copy::connect(&ctx.source.url, Some(&self.snapshot_name)).await?);
        }
        let total = copies.len();
        let reporter = Reporter::start(ctx, copies.iter().map(|(_, c)| c.clone()).collect(), token.clone());
        let range_pages = (ctx.config.snapshot.range_bytes / 8192).max(1);
        let mut levels: Vec<u32> = copies.iter().map(|(_, c)| c.level).collect();
        levels.sort_unstable();
        levels.dedup();
        let mut result = Ok(true);
        for level in levels {
            let mut remaining = HashMap::new();
            {
                let mut jobs = shared.jobs.lock().map_err(|_| anyhow!("snapshot job queue poisoned"))?;
                for (planned, c) in copies.iter().filter(|(_, c)| c.level == level) {
                    let ranges = planned.ranges(range_pages);
                    remaining.insert((*c.table).clone(), (ranges.len(), c.clone()));
                    // Largest tables first: the level ends when its longest copy does.
                    jobs.extend(ranges.into_iter().map(|range| Job { table: c.clone(), range }));
                }
                jobs.make_contiguous().sort_by_key(|j| std::cmp::Reverse(j.table.estimated_rows));
            }
            result = self.copy_level(level, &shared, remaining, &graph, state, version, token).await;
            if !matches!(result, Ok(true)) {
                break;
            }
        }
        reporter.stop().await;
        if matches!(result, Ok(true)) {
            tracing::info!(tables = total, point = %self.point, "snapshot tables copied");
        }
        result
    }

    /// Runs the workers over the queued jobs of one level and commits their
    /// parts as they come, one manifest each.
    #[allow(clippy::too_many_arguments)]
    async fn copy_level(
        &mut self,
        level: u32,
        shared: &Arc<Shared>,
        mut remaining: HashMap<TableName, (usize, Arc<TableCopy>)>,
        graph: &HashMap<TableName, SnapshotTable>,
        state: &mut SnapshotState,
        version: &mut Option<ObjectVersion>,
        token: &CancellationToken,
    ) -> Result<bool> {
        let log = self.ctx.log;
        let (tx, mut rx) = mpsc::channel::<Msg>(self.clients.len().max(1));
        // Cancelled on the first failure, so the other workers stop too.
        let workers = token.child_token();
        let mut handles = Vec::new();
        for client in self.clients.drain(..) {
            handles.push(tokio::spawn(copy::worker(client, shared.clone(), tx.clone(), workers.clone())));
        }
        drop(tx);
        let mut failure: Option<anyhow::Error> = None;
        while let Some(msg) = rx.recv().await {
            if failure.is_some() {
                continue;
            }
            let (table, part, range_done) = match msg {
                Msg::Part { table, part, range_done } => (table, Some(part), range_done),
                Msg::RangeDone { table } => (table, None, true),
            };
            let mut completed = Vec::new();
            if range_done && let Some((n, _)) = remaining.get_mut(&*table.table) {
                *n -= 1;
                if *n == 0 {
                    completed.push((*table.table).clone());
                }
            }
            let committed: Result<()> = async {
                // Every row of the table is read: its copy holds only if no
                // DDL reached it first.
                let changed = if completed.is_empty() { Vec::new() } else { self.changed(std::iter::once(&table)).await? };
                if !changed.is_empty() {
                    return Err(TablesChanged(changed).into());
                }
                match part {
                    Some(part) => {
                        let mut w = BatchWriter::new(log, self.next_seq, BatchKind::Snapshot);
                        w.add_encoded(part).await?;
                        w.set_snapshot(SnapshotInfo { point: self.point, level, tables: vec![graph[&*table.table].clone()], completed: completed.clone() });
                        let m = w.commit(self.stream_point).await?;
                        self.next_seq += 1;
                        self.ctx.metrics.batches.inc_by(1);
                        self.ctx.metrics.bytes.inc_by(m.counts.bytes);
                    }
                    None if !completed.is_empty() => {
                        // No manifest to carry the completion: record it in the state.
                        state.tables.push(TablePoint { table: (*table.table).clone(), point: self.point });
                        *version = Some(log.stage().put_json_if(&log.keys().snapshot(), &*state, version.as_ref()).await?);
                    }
                    None => {}
                }
                Ok(())
            }
            .await;
            match committed {
                Ok(()) => {
                    for t in completed {
                        if !state.tables.iter().any(|p| p.table == t) {
                            state.tables.push(TablePoint { table: t.clone(), point: self.point });
                        }
                        table.done.store(true, Ordering::Relaxed);
                        tracing::info!(table = %t, rows = table.rows.load(Ordering::Relaxed), "table copied");
                    }
                }
                Err(e) => {
                    workers.cancel();
                    failure = Some(e.context(format!("staging snapshot rows of {}", table.table)));
                }
            }
        }
        for h in handles {
            match h.await {
                Ok(Ok(client)) => self.clients.push(client),
                Ok(Err(e)) => {
                    workers.cancel();
                    failure.get_or_insert(e);
                }
                Err(e) => {
                    failure.get_or_insert(anyhow!("snapshot worker failed: {e}"));
                }
            }
        }
        if let Some(e) = failure {
            return Err(self.explain(e, &remaining).await);
        }
        Ok(!token.is_cancelled() && remaining.values().all(|(n, _)| *n == 0))
    }

    /// A copy that failed on a column or table that DDL since the snapshot
    /// point removed is [`TablesChanged`], to be copied again; any other
    /// failure stands.
    async fn explain(&self, e: anyhow::Error, remaining: &HashMap<TableName, (usize, Arc<TableCopy>)>) -> anyhow::Error {
        if e.downcast_ref::<TablesChanged>().is_some() {
            return e;
        }
        let unfinished = remaining.values().filter(|(n, _)| *n > 0).map(|(_, c)| c);
        match self.changed(unfinished).await {
            Ok(changed) if !changed.is_empty() => anyhow::Error::new(TablesChanged(changed)).context(format!("{e:#}")),
            _ => e,
        }
    }

    /// The tables among `tables` that DDL changed since the snapshot in a
    /// way their copy cannot hold (see [`plan::Shape`]).
    async fn changed(&self, tables: impl Iterator<Item = &Arc<TableCopy>>) -> Result<Vec<TableName>> {
        let mut out = Vec::new();
        for t in tables {
            let now = plan::shape(self.db.client(), t.oid).await?;
            if !t.shape.still_holds(now.as_ref(), t.schema.columns.iter().map(|c| c.name.as_str())) {
                out.push((*t.table).clone());
            }
        }
        Ok(out)
    }
}

/// Progress: a live line on a terminal, a log line every 10 s otherwise,
/// and `/metrics` figures either way.
struct Reporter {
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    fn start(ctx: &SnapshotCtx<'_>, tables: Vec<Arc<TableCopy>>, parent: CancellationToken) -> Reporter {
        let token = parent.child_token();
        let metrics = ctx.metrics.clone();
        let on_progress = ctx.on_progress.clone();
        let stop = token.clone();
        let task = tokio::spawn(async move {
            let terminal = std::io::stderr().is_terminal();
            let every = if terminal { Duration::from_millis(500) } else { Duration::from_secs(10) };
            let started = Instant::now();
            let series: Vec<_> = tables.iter().map(|t| metrics.snapshot_table(&t.table)).collect();
            let mut last_rows = vec![0u64; tables.len()];
            let mut last_bytes = vec![0u64; tables.len()];
            loop {
                let stopping = tokio::select! {
                    _ = stop.cancelled() => true,
                    _ = tokio::time::sleep(every) => false,
                };
                let mut lines = Vec::new();
                let (mut rows_all, mut bytes_all, mut estimate_all) = (0u64, 0u64, 0u64);
                for (i, t) in tables.iter().enumerate() {
                    let (rows, bytes) = (t.rows.load(Ordering::Relaxed), t.bytes.load(Ordering::Relaxed));
                    series[i].0.inc_by(rows - last_rows[i]);
                    series[i].1.inc_by(bytes - last_bytes[i]);
                    (last_rows[i], last_bytes[i]) = (rows, bytes);
                    rows_all += rows;
                    bytes_all += bytes;
                    estimate_all += t.estimated_rows.max(rows);
                    if rows > 0 && rows < t.estimated_rows && !terminal {
                        lines.push(progress_line(&t.table.to_string(), rows, t.estimated_rows, bytes, started.elapsed()));
                    }
                }
                let overall = progress_line("snapshot", rows_all, estimate_all, bytes_all, started.elapsed());
                on_progress(SnapshotProgress {
                    tables: tables.len(),
                    tables_done: tables.iter().filter(|t| t.done.load(Ordering::Relaxed)).count(),
                    rows: rows_all,
                    estimated_rows: estimate_all,
                    bytes: bytes_all,
                });
                if terminal {
                    eprint!("\r\x1b[K{overall}");
                    if stopping {
                        eprintln!();
                    }
                } else if !stopping {
                    for l in lines {
                        tracing::info!("{l}");
                    }
                    tracing::info!("{overall}");
                }
                if stopping {
                    return;
                }
            }
        });
        Reporter { token, task }
    }

    async fn stop(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}

/// `name [####......] 41% 1.2M/2.9M rows, 310 MiB, 95k rows/s, 18 MiB/s, ETA 17s`
fn progress_line(name: &str, rows: u64, estimate: u64, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = rows as f64 / secs;
    let fraction = if estimate == 0 { 1.0 } else { (rows as f64 / estimate as f64).min(1.0) };
    let filled = (fraction * 20.0).round() as usize;
    let eta = if rate > 0.0 && estimate > rows { format!("ETA {:.0}s", (estimate - rows) as f64 / rate) } else { "ETA -".to_owned() };
    format!(
        "{name} [{}{}] {:>3.0}% {}/{} rows, {:.0} MiB, {:.0} rows/s, {:.1} MiB/s, {eta}",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        fraction * 100.0,
        rows,
        estimate.max(rows),
        bytes as f64 / 1048576.0,
        rate,
        bytes as f64 / 1048576.0 / secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seam_drops_only_what_a_later_copy_holds() {
        let t = |n: &str| TableName::new("public", n).unwrap();
        let state = SnapshotState {
            format: 1,
            point: Lsn(100),
            phase: Phase::Done,
            started_at: Timestamp(0),
            finished_at: None,
            publication: None,
            tables: vec![TablePoint { table: t("a"), point: Lsn(100) }, TablePoint { table: t("b"), point: Lsn(250) }],
        };
        let seam = Seam::from_state(&state);
        assert_eq!(seam.point, Some(Lsn(100)));
        assert!(!seam.in_snapshot(&t("a"), Lsn(120)));
        assert!(seam.in_snapshot(&t("b"), Lsn(120)));
        assert!(seam.in_snapshot(&t("b"), Lsn(249)));
        assert!(!seam.in_snapshot(&t("b"), Lsn(250)));
        assert!(!seam.in_snapshot(&t("c"), Lsn(1)));
    }

    #[test]
    fn progress_line_reads() {
        let l = progress_line("public.t", 50, 200, 10 * 1048576, Duration::from_secs(5));
        assert_eq!(l, "public.t [#####...............]  25% 50/200 rows, 10 MiB, 10 rows/s, 2.0 MiB/s, ETA 15s");
        assert!(progress_line("x", 5, 0, 0, Duration::from_secs(1)).contains("100%"));
    }
}
