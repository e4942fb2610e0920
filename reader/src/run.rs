//! The reader's run loop.
//!
//! ```text
//!  PgWalSource ──events──▶ decode ──▶ Pending (per table+version) ──Work (bounded 1)──▶ committer task
//!      ▲                                                                                  │ upload parts,
//!      └──────────── confirm(durable) ◀──────────── watch: lsn.end of last manifest ◀─────┘ create manifest
//! ```
//!
//! - A batch is cut only between transactions: after a Commit when it holds
//!   `max_rows` rows or `max_bytes` bytes, or on a tick once its oldest change
//!   is `max_age` old.
//! - A transaction may outgrow memory: when the buffered changes exceed
//!   `max_bytes` they are written out as part files of the batch in progress,
//!   and the batch commits (one manifest) after the transaction's Commit.
//! - The work queue holds one item, so a slow store stops the loop from
//!   reading the replication stream: back-pressure, not memory growth.
//! - The flush position confirmed to PostgreSQL is the `lsn.end` of the last
//!   manifest the committer created, never more — except when idle: a
//!   keepalive says the server has sent everything up to its position, and
//!   when nothing is buffered or in flight that position is confirmed too, so
//!   an idle stream does not hold WAL back.
//! - On (re)start the loop resumes after the last manifest and drops every
//!   transaction whose commit LSN is at or below its end: the stage never
//!   holds a transaction twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use strata_common::backoff::Backoff;
use strata_common::config::{Config, SourceConfig};
use strata_common::{Change, Lsn, Op, Timestamp};
use strata_stager::lease::Leases;
use strata_stager::log::{BatchWriter, StreamLog};
use strata_stager::manifest::BatchKind;
use strata_stager::{Stage, StageError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use strata_common::telemetry::{Readiness, Registry};

use crate::backfill::{self, Windows};
use crate::batch::{Batcher, Work};
use crate::decode::Decoder;
pub use crate::lease::LEASE_TTL;
use crate::lease::{SharedStatus, acquire_lease, renew_lease, update};
use crate::metrics::{DEFAULT_LISTEN, ReaderMetrics};
use crate::schemas::SchemaVersions;
use crate::setup::SourceDb;
use crate::snapshot::{self, Seam, SnapshotCtx};
use crate::source::{ChangeSource, SourceError, SourceEvent};
use crate::walstream::PgWalSource;
pub use strata_stager::control::ReaderStatus;

/// How often the loop checks batch age (well under the default max_age).
const TICK: Duration = Duration::from_millis(50);
/// Reconnects to the source: from 0.5–1 s up to 30 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// A stream that ran this long before failing starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Metrics and readiness, shared by every attempt of a run.
#[derive(Clone)]
struct Telemetry {
    metrics: ReaderMetrics,
    ready: Readiness,
}

/// What every attempt of a run works with.
struct Ctx<'a> {
    config: &'a Config,
    source: &'a SourceConfig,
    log: &'a StreamLog,
    status: &'a SharedStatus,
    telemetry: &'a Telemetry,
}

/// How often the reader logs a one-line summary at INFO: often enough to see
/// that it is alive and how far behind it is, rare enough that an idle
/// stream's log stays small (1,440 lines a day).
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// How often the slot's retained WAL is sampled from the source.
const SLOT_FIGURES_EVERY: Duration = Duration::from_secs(15);

/// Runs the stream of `config` until `shutdown` is cancelled.
pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<()> {
    let stage = Stage::open(&config.stage.url, &config.stage.options).with_context(|| format!("opening stage {}", config.stage.url))?;
    let Some(source) = config.source.clone() else {
        return run_pulls_only(config, &stage, shutdown).await;
    };
    let log = StreamLog::new(&stage, &source.stream)?;
    // Telemetry first: a reader waiting for another's lease is alive
    // (`/healthz`) but not ready (`/readyz` 503), which is what an
    // orchestrator's probes need to tell it from a hung one.
    let registry = Registry::default();
    stage.register_metrics(&registry);
    strata_common::telemetry::register_build_info(&registry, "reader");
    let telemetry = Telemetry { metrics: ReaderMetrics::new(&registry, &source.stream), ready: Readiness::default() };
    let listen = match config.telemetry.listen {
        Some(a) => a,
        None => DEFAULT_LISTEN.parse().expect("valid default address"),
    };
    let (bound, server) = strata_common::telemetry::serve(listen, registry.clone(), telemetry.ready.clone())
        .await
        .with_context(|| format!("serving /metrics on {listen} (set telemetry.listen to another address)"))?;
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    let leases = Leases::new(&stage, log.keys().reader());
    let holder = strata_stager::lease::local_holder("reader");
    let Some(lease) = acquire_lease(&leases, &holder, &shutdown).await? else {
        server.abort();
        return Ok(());
    };
    tracing::info!(stream = source.stream, holder, generation = lease.value.generation, "holding the stream's reader lease");
    let status: SharedStatus = Arc::new(Mutex::new(ReaderStatus { state: "starting".to_owned(), ..Default::default() }));
    let work = shutdown.child_token();
    let lost = CancellationToken::new();
    let log = match crate::wakeup::Publisher::new(&config.wakeup, &source.stream, &registry).await? {
        Some(publisher) => {
            let (notices, commits) = crate::wakeup::commit_notices();
            tokio::spawn(publisher.run(commits, work.clone()));
            tracing::info!(queues = config.wakeup.publish.len(), "sending a wake-up to SQS for each committed batch");
            log.with_commit_notices(notices)
        }
        None => log,
    };
    let renewer = tokio::spawn(renew_lease(leases.clone(), lease, work.clone(), lost.clone(), status.clone()));
    tokio::spawn(telemetry.metrics.clone().log_summaries(SUMMARY_EVERY, work.clone()));
    tokio::spawn(telemetry.metrics.clone().watch_slot(source.url.expose().to_owned(), source.slot_name(), SLOT_FIGURES_EVERY, work.clone()));
    let pulls = crate::pull::spawn_all(config, &stage, &registry, &work)?;
    let ctx = Ctx { config, source: &source, log: &log, status: &status, telemetry: &telemetry };
    let result = stream_with_retries(&ctx, work.clone()).await;
    work.cancel();
    for p in pulls {
        let _ = p.await;
    }
    server.abort();
    // The last status stays in reader.json, so a reader that stopped on an
    // error retrying cannot heal still says which, after it has exited.
    let last = status.lock().map(|s| serde_json::to_value(&*s).unwrap_or_default()).unwrap_or_default();
    if let Ok(Some(held)) = renewer.await
        && let Err(e) = leases.release_with_status(&held, Timestamp::now(), last).await
    {
        tracing::warn!(error = %e, "could not release the reader lease; it expires by itself");
    }
    if lost.is_cancelled() {
        bail!("lost the reader lease of stream {:?} to another process; stopped", source.stream);
    }
    result
}

/// A reader with `[[pull]]`s and no `[source]`: no slot, no publication,
/// no CDC stream; the pulls run until `shutdown`.
async fn run_pulls_only(config: &Config, stage: &Stage, shutdown: CancellationToken) -> Result<()> {
    if config.pulls.is_empty() {
        bail!("the reader needs a [source] section, or at least one [[pull]]");
    }
    let registry = Registry::default();
    stage.register_metrics(&registry);
    strata_common::telemetry::register_build_info(&registry, "reader");
    let ready = Readiness::default();
    let listen = match config.telemetry.listen {
        Some(a) => a,
        None => DEFAULT_LISTEN.parse().expect("valid default address"),
    };
    let (bound, server) = strata_common::telemetry::serve(listen, registry.clone(), ready.clone())
        .await
        .with_context(|| format!("serving /metrics on {listen} (set telemetry.listen to another address)"))?;
    tracing::info!(address = %bound, pulls = config.pulls.len(), "serving /metrics, /healthz and /readyz; query pulls only");
    let pulls = crate::pull::spawn_all(config, stage, &registry, &shutdown)?;
    ready.set(true);
    for p in pulls {
        let _ = p.await;
    }
    server.abort();
    Ok(())
}

/// Whether an error is worth reconnecting for.
fn is_transient(e: &anyhow::Error) -> bool {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<SourceError>() {
            return s.is_transient();
        }
        if let Some(s) = cause.downcast_ref::<StageError>() {
            return s.is_retriable();
        }
        if let Some(c) = cause.downcast_ref::<strata_common::pgconn::ConnectError>() {
            return c.is_transient();
        }
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            // No SQLSTATE: the connection itself failed.
            return pg.code().is_none_or(|code| strata_common::pgconn::is_transient_sqlstate(code.code()));
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
    }
    false
}

async fn stream_with_retries(ctx: &Ctx<'_>, token: CancellationToken) -> Result<()> {
    let (status, telemetry) = (ctx.status, ctx.telemetry);
    let mut backoff = RECONNECT;
    loop {
        let started = Instant::now();
        let result = run_once(ctx, token.clone()).await;
        telemetry.ready.set(false);
        match result {
            Ok(()) => return Ok(()),
            Err(e) if token.is_cancelled() => {
                tracing::warn!(error = format!("{e:#}"), "stopped with an error during shutdown");
                return Ok(());
            }
            Err(e) if is_transient(&e) => {
                if started.elapsed() > HEALTHY_RUN {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                let message = format!("{e:#}");
                update(status, |s| {
                    s.state = "reconnecting".to_owned();
                    s.last_error = Some(message.clone());
                });
                tracing::warn!(error = message, delay_ms = delay.as_millis() as u64, "reconnecting to the source");
                telemetry.metrics.reconnects.inc_by(1);
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => {
                update(status, |s| {
                    s.state = "failed".to_owned();
                    s.last_error = Some(format!("{e:#}"));
                });
                return Err(e);
            }
        }
    }
}

/// The position and commit time of the last committed batch.
type Durable = (Lsn, Option<Timestamp>);

async fn committer(log: StreamLog, mut rx: mpsc::Receiver<Work>, durable: watch::Sender<Durable>, first_seq: u64, metrics: ReaderMetrics) -> Result<()> {
    let mut writer = BatchWriter::new(&log, first_seq, BatchKind::Changes);
    while let Some(work) = rx.recv().await {
        match work {
            Work::Parts(tables) => {
                for t in tables {
                    writer.add(t).await?;
                }
            }
            Work::Commit { tables, lsn_start } => {
                for t in tables {
                    writer.add(t).await?;
                }
                let seq = writer.seq();
                let done = std::mem::replace(&mut writer, BatchWriter::new(&log, seq + 1, BatchKind::Changes));
                let m = done.commit(lsn_start).await.with_context(|| format!("committing batch {seq}"))?;
                tracing::debug!(seq, rows = m.counts.rows, end = %m.lsn.end, "batch committed");
                metrics.batches.inc_by(1);
                metrics.changes.inc_by(m.counts.rows);
                metrics.transactions.inc_by(m.counts.transactions);
                metrics.bytes.inc_by(m.counts.bytes);
                durable.send_replace((m.lsn.end, Some(m.commit_ts.max)));
            }
        }
    }
    Ok(())
}

async fn run_once(ctx: &Ctx<'_>, token: CancellationToken) -> Result<()> {
    let Ctx { source, log, status, telemetry, .. } = *ctx;
    let mut db = SourceDb::connect(source).await?;
    db.check().await?;
    let publication = source.publication_name();
    let slot_name = source.slot_name();
    db.ensure_publication(&publication, &source.tables).await?;
    db.check_read_privileges(&publication).await?;
    update(status, |s| s.state = "snapshot".to_owned());
    let shared = status.clone();
    let on_progress: snapshot::OnProgress = Arc::new(move |p| update(&shared, |s| s.snapshot = Some(p)));
    let snapshot_ctx = SnapshotCtx { config: ctx.config, source, log, metrics: &telemetry.metrics, on_progress };
    let Some(seam) = snapshot::ensure(&snapshot_ctx, &mut db, &token).await? else {
        return Ok(());
    };
    update(status, |s| s.snapshot = None);
    let (slot, created_now) = db.ensure_slot(&slot_name).await?;
    let hint = status.lock().ok().and_then(|s| s.head_seq);
    let head = log.head(hint).await.context("finding the stream's last batch")?;
    let (resume, next_seq) = match head {
        Some(h) => {
            let last = log.read(h).await.with_context(|| format!("reading batch {h}"))?;
            // Only snapshot batches so far: changes start at the snapshot's point.
            let resume = match last.kind {
                BatchKind::Changes => last.lsn.end,
                BatchKind::Snapshot => seam.point.with_context(|| format!("batch {h} is a snapshot batch but {} is missing", log.keys().snapshot()))?,
            };
            (resume, h + 1)
        }
        None => (seam.point.or(slot.confirmed_flush).unwrap_or(Lsn::ZERO), 1),
    };
    if created_now && (head.is_some() || seam.point.is_some()) {
        refuse_new_slot(&mut db, &slot_name, &source.stream, resume, slot.confirmed_flush).await?;
    }
    tracing::info!(%resume, next_seq, "resuming after the last staged batch");
    let mut src = PgWalSource::start(&source.url, &slot_name, &publication, resume)?;
    update(status, |s| {
        s.state = "streaming".to_owned();
        s.head_seq = head;
        s.durable_lsn = Some(resume);
        s.last_error = None;
    });

    let (work_tx, work_rx) = mpsc::channel::<Work>(1);
    let (durable_tx, durable_rx) = watch::channel((resume, None));
    let committer = tokio::spawn(committer(log.clone(), work_rx, durable_tx, next_seq, telemetry.metrics.clone()));
    let (chunk_tx, chunk_rx) = mpsc::channel(1);
    let backfills = tokio::spawn(
        backfill::Task {
            source: source.clone(),
            log: log.clone(),
            chunks: chunk_tx,
            durable: durable_rx.clone(),
            watch_publication: seam.point.map(|_| ctx.config.snapshot.new_tables_check),
            chunk_rows: ctx.config.batch.max_rows.clamp(1, backfill::MAX_CHUNK_ROWS),
            fallbacks: telemetry.metrics.fallbacks.clone(),
            token: token.child_token(),
        }
        .run(),
    );
    telemetry.ready.set(true);
    let from = Resume { lsn: resume, seam: &seam, windows: Windows::new(chunk_rx) };
    let result = pump(ctx, &mut src, &mut db, &token, from, &work_tx, durable_rx.clone()).await;
    backfills.abort();
    // Let the committer finish what it was handed, whatever happened here.
    drop(work_tx);
    let committed = committer.await.map_err(|e| anyhow!("committer task failed: {e}"))?;
    let (durable, _) = *durable_rx.borrow();
    if result.is_ok() && committed.is_ok() {
        src.confirm(durable).await?;
    }
    update(status, |s| s.durable_lsn = Some(durable));
    committed.and(result)
}

/// A stream with staged history whose slot was gone: the slot just created
/// starts at the server's current position, so whatever committed between
/// the last staged batch and now is in neither, and streaming from it would
/// lose those changes without a word. The new slot is dropped again (a
/// restart must not find it and stream past the gap) and the reader stops.
async fn refuse_new_slot(db: &mut SourceDb, slot: &str, stream: &str, resume: Lsn, created_at: Option<Lsn>) -> Result<()> {
    let at = created_at.map_or_else(|| "now".to_owned(), |l| format!("at {l}"));
    if let Err(e) = db.drop_slot(slot).await {
        tracing::warn!(slot, error = format!("{e:#}"), "could not drop the replication slot just created");
    }
    bail!(
        "replication slot {slot:?} was missing (dropped, or never created on this server) although stream {stream:?} has staged history up to {resume}; \
         a slot created {at} cannot return the changes committed in between, so the stream cannot continue without losing them. \
         Capture the tables again under a new stream name (source.stream), or drop the stream's stage folder to start it over"
    )
}

/// Where the stream resumes: after `lsn`, skipping what the snapshot
/// holds, with the backfill chunks to stage at their watermarks.
struct Resume<'a> {
    lsn: Lsn,
    seam: &'a Seam,
    windows: Windows,
}

/// Feeds the source's events through the [`Batcher`] and hands what it
/// cuts to the committer; confirms what the committer made durable.
async fn pump<S: ChangeSource>(
    ctx: &Ctx<'_>,
    src: &mut S,
    db: &mut SourceDb,
    token: &CancellationToken,
    from: Resume<'_>,
    work_tx: &mpsc::Sender<Work>,
    mut durable_rx: watch::Receiver<Durable>,
) -> Result<()> {
    let Resume { lsn: resume, seam, windows } = from;
    let Ctx { config, log, status, telemetry, .. } = *ctx;
    let metrics = &telemetry.metrics;
    let mut stream = Stream {
        batcher: Batcher::new(resume, config.batch.clone()),
        decoder: Decoder::new(metrics.fallbacks.clone()),
        schemas: SchemaVersions::new(log),
        windows,
        seam,
        status,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let send = |w: Work| async { work_tx.send(w).await.map_err(|_| anyhow!("the committer stopped (see its error)")) };
    loop {
        if let Some(work) = stream.batcher.cut(Instant::now()) {
            send(work).await?;
        }
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                if let Some(work) = stream.batcher.finish() {
                    send(work).await?;
                }
                return Ok(());
            }
            changed = durable_rx.changed() => {
                changed.map_err(|_| anyhow!("the committer stopped (see its error)"))?;
                let (durable, last_commit) = *durable_rx.borrow_and_update();
                src.confirm(durable).await?;
                metrics.lag(src.server_position(), durable, last_commit);
                update(status, |s| {
                    s.durable_lsn = Some(durable);
                    s.head_seq = Some(s.head_seq.map_or(1, |h| h + 1));
                });
            }
            _ = tick.tick() => {}
            event = src.next() => {
                let event = event?;
                if let SourceEvent::Keepalive { wal_end } = event {
                    update(status, |s| s.server_lsn = Some(wal_end));
                    // With nothing in flight, the server may drop WAL up to here.
                    let (durable, last_commit) = *durable_rx.borrow();
                    if stream.batcher.is_idle() && durable >= stream.batcher.handed_over() {
                        src.confirm(wal_end).await?;
                        metrics.lag(wal_end, wal_end, last_commit);
                    } else {
                        metrics.lag(wal_end, durable, last_commit);
                    }
                } else if let Some(work) = stream.event(db, event).await? {
                    send(work).await?;
                }
            }
        }
    }
}

/// The change stream's state between events.
struct Stream<'a> {
    batcher: Batcher,
    decoder: Decoder,
    schemas: SchemaVersions,
    windows: Windows,
    seam: &'a Seam,
    status: &'a SharedStatus,
}

impl Stream<'_> {
    /// Handles one event (keepalives aside); returns part files to spill.
    async fn event(&mut self, db: &mut SourceDb, event: SourceEvent) -> Result<Option<Work>> {
        let b = &mut self.batcher;
        match event {
            SourceEvent::Begin { final_lsn, commit_ts, xid } => b.begin(final_lsn, xid, commit_ts)?,
            SourceEvent::Commit { commit_lsn, .. } => {
                if let Some(commit_ts) = b.commit(commit_lsn)? {
                    update(self.status, |s| s.last_commit_ts = Some(commit_ts));
                }
            }
            SourceEvent::Relation(rel) => {
                let schema = self.schemas.version(db, &rel, b.catalog_lsn()).await?;
                self.decoder.register(rel.oid, schema);
            }
            SourceEvent::Type { oid, name, .. } => tracing::debug!(oid, name, "type message"),
            SourceEvent::Origin { name, .. } => tracing::debug!(origin = name, "transaction from a replication origin"),
            SourceEvent::Message { prefix, transactional, content, .. } => {
                let ready = if transactional && !b.skipping() { self.windows.message(&prefix, &content)? } else { None };
                let Some(ready) = ready else {
                    tracing::debug!(prefix, transactional, "logical decoding message (not staged)");
                    return Ok(None);
                };
                // A backfill chunk, staged at its high watermark.
                let final_lsn = b.final_lsn().context("backfill watermark outside a transaction")?;
                let schema = self.schemas.version(db, &ready.relation, final_lsn).await?;
                let table = Arc::new(schema.table.clone());
                let kept = ready.rows.len();
                for row in ready.rows {
                    let at = b.next_position("backfill row")?;
                    let change = Change {
                        op: Op::Read,
                        table: table.clone(),
                        lsn: at.lsn,
                        ord: at.ord,
                        xid: None,
                        commit_ts: at.commit_ts,
                        after: Some(row),
                        before: None,
                    };
                    b.stage(&schema, change);
                }
                let _ = ready.staged.send(if kept > 0 { final_lsn } else { Lsn::ZERO });
                return Ok(b.spill());
            }
            SourceEvent::Keepalive { .. } => {}
            change_event => {
                if b.skipping() {
                    return Ok(None);
                }
                let mut at = || b.next_position("row change");
                let staged = match change_event {
                    SourceEvent::Insert { relation, new } => vec![self.decoder.change(Op::Insert, relation, Some(new), None, at()?)?],
                    SourceEvent::Update { relation, old, new } => vec![self.decoder.change(Op::Update, relation, Some(new), old, at()?)?],
                    SourceEvent::Delete { relation, old } => vec![self.decoder.change(Op::Delete, relation, None, Some(old), at()?)?],
                    SourceEvent::Truncate { relations, .. } => {
                        let mut out = Vec::with_capacity(relations.len());
                        for r in relations {
                            out.push(self.decoder.truncate(r, at()?)?);
                        }
                        out
                    }
                    _ => unreachable!("handled above"),
                };
                let final_lsn = b.final_lsn().unwrap_or(Lsn::ZERO);
                for (schema, change) in staged {
                    // A table copied at a later point already holds this.
                    if self.seam.in_snapshot(&schema.table, final_lsn) {
                        continue;
                    }
                    self.windows.observe(&schema, &change);
                    b.stage(&schema, change);
                }
                return Ok(b.spill());
            }
        }
        Ok(None)
    }
}
