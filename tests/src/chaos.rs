//! The chaos run: a seeded, reproducible controller that runs pgbench and a
//! mixed DML/DDL workload on a source PostgreSQL while it kills, with
//! `kill -9` or an immediate shutdown, at seeded random moments: the
//! reader, each of two writers, the source cluster and the destination
//! cluster, restarting each. At the end it stops the workload, waits until
//! everything is staged and delivered, and checks that the mirror equals
//! the source (full rows, every table), that the history destination holds
//! every staged change exactly once, that the log has no gap and that
//! `verify_stream` is clean.
//!
//! Used by the `chaos` test (about 10 kills, local stage) and by
//! `strata-bench chaos --kills N --seed S --stage local|s3`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_postgres::Client;

use crate::pg::{PgCluster, SUPERUSER, connect};
use crate::reader::{ServiceProcess, config_text_for, wait_for_slot};
use crate::workload::Rng;
use crate::writer::spec;

/// The pgbench tables, then the table the DDL workload changes.
pub const TABLES: [&str; 5] = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "chaos_ddl"];

/// What a chaos run does.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub seed: u64,
    pub kills: u32,
    /// Pause before each kill, drawn uniformly from this range (ms).
    pub pause_ms: (u64, u64),
    pub reader_exe: PathBuf,
    pub writer_exe: PathBuf,
    /// Where the services' configs and logs go.
    pub work_dir: PathBuf,
    /// How long convergence may take, once the chaos ends, before the run
    /// fails as stuck.
    pub converge: Duration,
    /// Issue a DDL statement only once the reader has staged the previous
    /// one and no backfill is pending (DML goes on meanwhile). Off, DDL
    /// also lands while the reader lags and backfills run, which hits the
    /// stale-backfill-schema bug described in `bench/RESULTS.md` (Chaos).
    pub ddl_waits_for_reader: bool,
}

/// The things the controller kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Reader,
    WriterA,
    WriterB,
    SourcePostgres,
    DestinationPostgres,
}

const TARGETS: [Target; 5] = [Target::Reader, Target::WriterA, Target::WriterB, Target::SourcePostgres, Target::DestinationPostgres];

/// What a run did and found.
#[derive(Debug, Default, Clone)]
pub struct ChaosReport {
    pub seed: u64,
    pub kills: BTreeMap<Target, u32>,
    pub pgbench_transactions: u64,
    pub dml_transactions: u64,
    pub ddl_statements: BTreeMap<&'static str, u64>,
    pub staged_changes: u64,
    pub batches: u64,
    /// Rows per table at the source at the end.
    pub rows: Vec<(String, i64)>,
    pub chaos_secs: f64,
    pub converge_secs: f64,
    pub total_secs: f64,
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kills: Vec<String> = self.kills.iter().map(|(t, n)| format!("{t:?} {n}")).collect();
        let total: u32 = self.kills.values().sum();
        let ddl: Vec<String> = self.ddl_statements.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let rows: Vec<String> = self.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
        write!(
            f,
            "seed {}: {total} kills ({}); pgbench {} tx, mixed {} DML tx, DDL ({}); staged {} changes in {} batches; \
             source rows ({}); chaos {:.0} s, convergence {:.0} s, total {:.0} s",
            self.seed,
            kills.join(", "),
            self.pgbench_transactions,
            self.dml_transactions,
            ddl.join(", "),
            self.staged_changes,
            self.batches,
            rows.join(", "),
            self.chaos_secs,
            self.converge_secs,
            self.total_secs
        )
    }
}

/// Counters the workloads share with the controller.
#[derive(Default)]
struct Counters {
    pgbench: AtomicU64,
    dml: AtomicU64,
    ddl: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

/// The running pieces: clusters, services, and how to restart them.
struct Rig {
    source: PgCluster,
    destination: PgCluster,
    src_url: String,
    config: PathBuf,
    opts: ChaosOptions,
    reader: Option<ServiceProcess>,
    writers: [Option<ServiceProcess>; 2],
}

impl Rig {
    fn log(&self, name: &str) -> PathBuf {
        self.opts.work_dir.join(format!("{name}.log"))
    }

    fn spawn(&self, target: Target) -> Result<ServiceProcess> {
        let (exe, name) = match target {
            Target::Reader => (&self.opts.reader_exe, "reader"),
            Target::WriterA => (&self.opts.writer_exe, "writer-a"),
            _ => (&self.opts.writer_exe, "writer-b"),
        };
        ServiceProcess::spawn_logged(exe, &self.config, &self.log(name), &[("RUST_LOG", "warn")])
    }

    fn slot(&mut self, target: Target) -> &mut Option<ServiceProcess> {
        match target {
            Target::Reader => &mut self.reader,
            Target::WriterA => &mut self.writers[0],
            _ => &mut self.writers[1],
        }
    }

    /// Fails if a service ended by itself: under chaos each one should
    /// retry, not exit.
    fn check_alive(&mut self) -> Result<()> {
        for target in [Target::Reader, Target::WriterA, Target::WriterB] {
            if let Some(p) = self.slot(target).as_mut()
                && let Some(status) = p.try_wait()?
            {
                bail!("{target:?} exited by itself ({status}); logs in {}", self.opts.work_dir.display());
            }
        }
        Ok(())
    }

    /// Kills `target` and brings it back after `down`.
    async fn kill_and_restart(&mut self, target: Target, down: Duration) -> Result<()> {
        match target {
            Target::SourcePostgres | Target::DestinationPostgres => {
                let cluster = if target == Target::SourcePostgres { &self.source } else { &self.destination };
                cluster.stop_immediate()?;
                tokio::time::sleep(down).await;
                cluster.start_again()?;
            }
            service => {
                if let Some(p) = self.slot(service).take() {
                    p.kill9()?;
                }
                tokio::time::sleep(down).await;
                let p = self.spawn(service)?;
                *self.slot(service) = Some(p);
            }
        }
        Ok(())
    }

    /// Stops the services (SIGTERM); fails if one does not exit cleanly.
    fn terminate(&mut self) -> Result<()> {
        for target in [Target::WriterA, Target::WriterB, Target::Reader] {
            if let Some(p) = self.slot(target).take() {
                let status = p.terminate()?;
                if !status.success() {
                    bail!("{target:?} ended with {status} on SIGTERM");
                }
            }
        }
        Ok(())
    }
}

/// Runs pgbench, `pgbench -i` first, in bounded rounds until `stop`; each
/// round may be cut short by a source restart. Counts the transactions
/// pgbench reports as processed.
fn pgbench_loop(cluster_bin: PathBuf, port: u16, db: String, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    while !stop.load(Ordering::Relaxed) {
        let out = std::process::Command::new(&cluster_bin)
            .args(["-n", "-c", "2", "-j", "1", "-T", "2", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", SUPERUSER, &db])
            .output();
        let processed = out.as_ref().ok().and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            let line = text.lines().find(|l| l.starts_with("number of transactions actually processed:"))?;
            line.split(':').nth(1)?.trim().split('/').next()?.trim().parse::<u64>().ok()
        });
        counters.pgbench.fetch_add(processed.unwrap_or(0), Ordering::SeqCst);
        if processed.is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `pgbench -i` (scale 1) into database `db`.
fn pgbench_init(pgbench: &Path, port: u16, db: &str) -> Result<()> {
    let out = std::process::Command::new(pgbench)
        .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", SUPERUSER, db])
        .output()
        .context("running pgbench -i")?;
    if !out.status.success() {
        bail!("pgbench -i failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The columns of `chaos_ddl` the DDL workload added: name and type.
async fn extra_columns(c: &Client) -> Result<Vec<(String, String)>> {
    let rows = c
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'chaos_ddl'::regclass AND attnum > 0 AND NOT attisdropped AND attname NOT IN ('id', 'v', 't') ORDER BY attnum",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The next statement of the mixed workload: mostly a DML transaction, at
/// times ADD/DROP COLUMN, int -> bigint, RENAME COLUMN or TRUNCATE. Returns
/// its kind and SQL.
async fn next_step(c: &Client, rng: &mut Rng, next_id: &mut i64, k: &mut u64, ddl_ok: bool) -> Result<(&'static str, String)> {
    let extras = extra_columns(c).await?;
    let pick = |rng: &mut Rng, of: &[&(String, String)]| of[rng.below(of.len() as u64) as usize].0.clone();
    let ints: Vec<&(String, String)> = extras.iter().filter(|(_, t)| t == "integer").collect();
    let all: Vec<&(String, String)> = extras.iter().collect();
    *k += 1;
    // About one statement in twenty is DDL: each ADD COLUMN with a default
    // and each type change makes the reader backfill the table, and each
    // type change rewrites the history destination's whole table.
    let mut r = rng.below(200);
    if r <= 8 && !ddl_ok {
        r = 9;
    }
    if r < 2 && extras.len() >= 6 {
        r = 2;
    }
    if ((2..8).contains(&r) && extras.is_empty()) || (r == 4 && ints.is_empty()) {
        r = 0;
    }
    Ok(match r {
        0 => ("add column", format!("ALTER TABLE chaos_ddl ADD COLUMN c{k} int DEFAULT {k}")),
        1 => ("add column", format!("ALTER TABLE chaos_ddl ADD COLUMN c{k} int")),
        2 | 3 | 5 => ("drop column", format!("ALTER TABLE chaos_ddl DROP COLUMN {}", pick(rng, &all))),
        4 => ("int to bigint", format!("ALTER TABLE chaos_ddl ALTER COLUMN {} TYPE bigint", pick(rng, &ints))),
        6 | 7 => ("rename column", format!("ALTER TABLE chaos_ddl RENAME COLUMN {} TO r{k}", pick(rng, &all))),
        8 => ("truncate", "TRUNCATE chaos_ddl".to_owned()),
        _ => {
            let n = 1 + rng.below(20) as i64;
            let first = *next_id;
            *next_id += n;
            let (m, x) = (7 + rng.below(5), rng.below(7));
            let mut sql = format!(
                "BEGIN; INSERT INTO chaos_ddl (id, v, t) SELECT g, g % 1000, md5(g::text) FROM generate_series({first}, {}) g; \
                 UPDATE chaos_ddl SET v = v + 1, t = t || 'u' WHERE id % {m} = {x}; DELETE FROM chaos_ddl WHERE id % 29 = {x} AND id < {};",
                *next_id - 1,
                first - 50
            );
            if !all.is_empty() {
                let col = pick(rng, &all);
                sql.push_str(&format!(" UPDATE chaos_ddl SET {col} = id WHERE id % 11 = {x};"));
            }
            sql.push_str(" COMMIT");
            ("dml", sql)
        }
    })
}

/// The mixed workload on `chaos_ddl` until `stop`, reconnecting when the
/// source goes away. A statement cut off by a crash may or may not have
/// committed; the end state is compared, not the count.
async fn ddl_loop(url: String, seed: u64, gate: Option<Stage>, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let mut rng = Rng(seed | 1);
    let (mut next_id, mut k) = (1_000_000i64, 0u64);
    let mut client: Option<Client> = None;
    let (mut after_ddl, mut round) = (None::<String>, 0u64);
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect(&url).await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some(c) = client.as_ref() else { continue };
        if let (Some(stage), Some(lsn)) = (&gate, &after_ddl)
            && round % 10 == 0
            && reader_caught_up(c, stage, lsn).await.unwrap_or(false)
        {
            after_ddl = None;
        }
        let step = next_step(c, &mut rng, &mut next_id, &mut k, after_ddl.is_none()).await;
        let done = match step {
            Ok((kind, sql)) => c.batch_execute(&sql).await.map(|()| kind),
            Err(_) => {
                client = None;
                continue;
            }
        };
        match done {
            Ok("dml") => {
                counters.dml.fetch_add(1, Ordering::SeqCst);
            }
            Ok(kind) => {
                *counters.ddl.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
                if gate.is_some() {
                    after_ddl = c.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).await.map(|r| r.get(0)).ok();
                }
            }
            Err(_) => client = None,
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
    }
}

/// Whether the reader has staged everything up to `lsn` and no backfill
/// is pending.
async fn reader_caught_up(c: &Client, stage: &Stage, lsn: &str) -> Result<bool> {
    let confirmed: Option<bool> = c
        .query_opt("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'strata_main'", &[&lsn])
        .await?
        .and_then(|r| r.get(0));
    if confirmed != Some(true) {
        return Ok(false);
    }
    let backfills = strata_reader::backfill::list(&StreamLog::new(stage, "main")?).await?;
    Ok(backfills.iter().all(|r| r.value.state == strata_reader::backfill::BackfillState::Done))
}

/// Starts clusters, loads the source, starts the reader and two writers
/// with a mirror and a history destination.
async fn set_up(opts: &ChaosOptions, stage_toml: &str, stage: &Stage) -> Result<(Rig, String, String)> {
    let source = PgCluster::start()?;
    let destination = PgCluster::start()?;
    let src_db = source.create_database().await?;
    let src_url = source.url(&src_db);
    pgbench_init(&source.program("pgbench"), source.port, &src_db)?;
    let admin = connect(&src_url).await?;
    admin
        .batch_execute(
            "CREATE TABLE chaos_ddl (id bigint PRIMARY KEY, v int, t text); \
             INSERT INTO chaos_ddl SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 2000) g",
        )
        .await?;
    let (mirror_url, history_url) = (destination.fresh_database().await?, destination.fresh_database().await?);
    std::fs::create_dir_all(&opts.work_dir)?;
    let config = opts.work_dir.join("strata.toml");
    std::fs::write(&config, config_text_for(&src_url, stage_toml, "max_rows = 2000\n"))?;
    let mut rig = Rig { source, destination, src_url, config, opts: opts.clone(), reader: None, writers: [None, None] };
    rig.reader = Some(rig.spawn(Target::Reader)?);
    wait_for_slot(&admin, "strata_main").await?;
    strata_writer::control::add(stage, &spec("mirror", &mirror_url, StartPosition::Earliest, PostgresMode::Mirror)).await?;
    strata_writer::control::add(stage, &spec("history", &history_url, StartPosition::Earliest, PostgresMode::History)).await?;
    rig.writers = [Some(rig.spawn(Target::WriterA)?), Some(rig.spawn(Target::WriterB)?)];
    Ok((rig, mirror_url, history_url))
}

/// Runs the whole chaos run on the stage `stage_toml` (the `[stage]`
/// section's body) names, `stage` being the same stage opened here.
pub async fn run(opts: &ChaosOptions, stage_toml: &str, stage: &Stage) -> Result<ChaosReport> {
    let started = Instant::now();
    let (mut rig, mirror_url, history_url) = set_up(opts, stage_toml, stage).await?;
    let mut report = ChaosReport { seed: opts.seed, ..Default::default() };
    let (stop, counters) = (Arc::new(AtomicBool::new(false)), Arc::new(Counters::default()));
    let db = crate::bench::database_of(&rig.src_url)?.to_owned();
    let (bin, port, s, c) = (rig.source.program("pgbench"), rig.source.port, stop.clone(), counters.clone());
    let pgbench = tokio::task::spawn_blocking(move || pgbench_loop(bin, port, db, s, c));
    let gate = opts.ddl_waits_for_reader.then(|| stage.clone());
    let mixed = tokio::spawn(ddl_loop(rig.src_url.clone(), opts.seed ^ 0x9e37_79b9_7f4a_7c15, gate, stop.clone(), counters.clone()));

    let chaos_started = Instant::now();
    let mut rng = Rng(opts.seed.wrapping_mul(2_654_435_761) | 1);
    for i in 0..opts.kills {
        let (lo, hi) = opts.pause_ms;
        tokio::time::sleep(Duration::from_millis(lo + rng.below(hi.saturating_sub(lo) + 1))).await;
        rig.check_alive()?;
        let target = TARGETS[rng.below(TARGETS.len() as u64) as usize];
        let down = Duration::from_millis(rng.below(500));
        eprintln!("chaos: kill {}/{} of {target:?}, down {} ms", i + 1, opts.kills, down.as_millis());
        rig.kill_and_restart(target, down).await.with_context(|| format!("killing and restarting {target:?}"))?;
        *report.kills.entry(target).or_default() += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    pgbench.await?;
    mixed.await?;
    report.chaos_secs = chaos_started.elapsed().as_secs_f64();
    report.pgbench_transactions = counters.pgbench.load(Ordering::SeqCst);
    report.dml_transactions = counters.dml.load(Ordering::SeqCst);
    report.ddl_statements = counters.ddl.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let converging = Instant::now();
    converge(&mut rig, stage).await?;
    report.converge_secs = converging.elapsed().as_secs_f64();
    rig.check_alive()?;
    verify(&rig.src_url, &mirror_url, &history_url, stage, &mut report).await?;
    rig.terminate()?;
    report.total_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Waits until everything committed is staged (backfills included) and
/// both destinations have delivered the whole log.
async fn converge(rig: &mut Rig, stage: &Stage) -> Result<()> {
    let src = connect(&rig.src_url).await?;
    let deadline = Instant::now() + rig.opts.converge;
    crate::reader::wait_slot_confirmed(&src, rig.opts.converge, || rig.check_alive()).await?;
    let log = StreamLog::new(stage, "main")?;
    loop {
        let pending: Vec<_> = strata_reader::backfill::list(&log)
            .await?
            .into_iter()
            .map(|r| r.value)
            .filter(|r| r.state != strata_reader::backfill::BackfillState::Done)
            .collect();
        if let Some(failed) = pending.iter().find(|r| r.state == strata_reader::backfill::BackfillState::Failed) {
            bail!("the backfill of {} failed: {:?}", failed.table, failed.error);
        }
        if pending.is_empty() {
            break;
        }
        rig.check_alive()?;
        if Instant::now() > deadline {
            bail!("stuck: backfills not done within {} s: {:?}", rig.opts.converge.as_secs(), pending.iter().map(|r| r.table.to_string()).collect::<Vec<_>>());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for destination in ["mirror", "history"] {
        wait_delivered(rig, stage, destination, deadline).await?;
    }
    Ok(())
}

/// Waits until `destination`'s cursor reaches the log's head.
async fn wait_delivered(rig: &mut Rig, stage: &Stage, destination: &str, deadline: Instant) -> Result<()> {
    let log = StreamLog::new(stage, "main")?;
    let cursors = strata_stager::cursor::Cursors::new(stage, destination)?;
    loop {
        let head = log.head(None).await?.unwrap_or(0);
        let cursor = cursors.load().await?.map_or(0, |c| c.value.seq);
        if head > 0 && cursor >= head {
            return Ok(());
        }
        rig.check_alive()?;
        if Instant::now() > deadline {
            bail!("stuck: destination {destination} at seq {cursor} of {head} after {} s", rig.opts.converge.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Column names of `table`, sorted.
async fn columns(c: &Client, table: &str) -> Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped \
             AND attname NOT LIKE '\\_strata\\_%' ORDER BY attname",
            &[&format!("public.{table}")],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Row count and md5 of the rows as JSON objects of `cols` (by name, so
/// column order does not matter), sorted: equal iff the rows are.
async fn row_checksum(c: &Client, table: &str, cols: &[String]) -> Result<(i64, String)> {
    let pairs: Vec<String> = cols.iter().map(|col| format!("'{col}', {}", strata_common::ident::quote_ident(col))).collect();
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '') FROM (SELECT jsonb_build_object({})::text AS r FROM public.{table}) s",
        pairs.join(", ")
    );
    let row = c.query_one(&sql, &[]).await.with_context(|| format!("checksum of {table}"))?;
    Ok((row.get(0), row.get(1)))
}

/// The end checks: mirror equals source, history exactly once, no gap,
/// verify clean.
async fn verify(src_url: &str, mirror_url: &str, history_url: &str, stage: &Stage, report: &mut ChaosReport) -> Result<()> {
    let (src, mirror, history) = (connect(src_url).await?, connect(mirror_url).await?, connect(history_url).await?);
    let mut problems = Vec::new();
    for table in TABLES {
        let cols = columns(&src, table).await?;
        let mirror_cols = columns(&mirror, table).await?;
        if cols != mirror_cols {
            problems.push(format!("{table}: mirror columns {mirror_cols:?}, source {cols:?}"));
            continue;
        }
        let (expected, got) = (row_checksum(&src, table, &cols).await?, row_checksum(&mirror, table, &cols).await?);
        if expected != got {
            problems.push(format!("{table}: mirror {got:?}, source {expected:?}"));
        }
        report.rows.push((table.to_owned(), expected.0));
    }
    let log = StreamLog::new(stage, "main")?;
    let head = log.head(None).await?.unwrap_or(0);
    let seqs = log.list_seqs().await?;
    if seqs != (1..=head).collect::<Vec<_>>() {
        problems.push(format!("the log has a gap: {} seqs listed, head {head}", seqs.len()));
    }
    let verified = strata_stager::verify::verify_stream(&log).await?;
    if !verified.is_ok() {
        problems.push(format!("verify: {:?}", verified.problems));
    }
    let mut staged = 0;
    for seq in 1..=head {
        staged += log.read(seq).await?.counts.rows;
    }
    let (mut rows, mut distinct) = (0i64, 0i64);
    for table in TABLES {
        let r = history
            .query_one(&format!("SELECT count(*), count(DISTINCT (_strata_lsn, _strata_ord)) FROM public.{table}"), &[])
            .await
            .with_context(|| format!("counting history of {table}"))?;
        rows += r.get::<_, i64>(0);
        distinct += r.get::<_, i64>(1);
    }
    if (rows as u64, distinct as u64) != (staged, staged) {
        problems.push(format!("history holds {rows} rows, {distinct} distinct changes; {staged} staged"));
    }
    report.staged_changes = staged;
    report.batches = head;
    if !problems.is_empty() {
        bail!("seed {}: {}", report.seed, problems.join("; "));
    }
    Ok(())
}

/// The last `n` lines of each service log in `dir`, to show with a failure.
pub fn log_tails(dir: &Path, n: usize) -> String {
    let mut out = String::new();
    for name in ["reader", "writer-a", "writer-b"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {name}.log (last {n} lines)\n{}\n", lines[lines.len().saturating_sub(n)..].join("\n")));
    }
    out
}

pub const USAGE: &str =
    "usage: strata-bench chaos [--kills N] [--seed S] [--stage local|s3] [--pause-ms MIN-MAX] [--ddl-gate on|off] [--converge-secs N] [--record FILE]";

/// `strata-bench chaos`: the long run. Prints a result row (and adds it
/// to `--record`'s file after the last chaos row); keeps the services'
/// logs in a temp dir it names when the run fails.
pub async fn bench_main(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (mut kills, mut seed, mut s3, mut pause_ms, mut record) = (100u32, 1u64, false, (1000u64, 3000u64), None::<PathBuf>);
    let (mut ddl_gate, mut converge_secs) = (false, 1800u64);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--kills" => kills = value.parse().context("--kills N")?,
            "--seed" => seed = value.parse().context("--seed S")?,
            "--stage" if value == "local" || value == "s3" => s3 = value == "s3",
            "--pause-ms" => {
                let (lo, hi) = value.split_once('-').context("--pause-ms MIN-MAX")?;
                pause_ms = (lo.parse().context("--pause-ms MIN")?, hi.parse().context("--pause-ms MAX")?);
            }
            "--record" => record = Some(value.into()),
            "--converge-secs" => converge_secs = value.parse().context("--converge-secs N")?,
            "--ddl-gate" if value == "on" || value == "off" => ddl_gate = value == "on",
            other => bail!("unknown argument {other} {value}; {USAGE}"),
        }
    }
    let dir = tempfile::Builder::new().prefix("strata-chaos-").tempdir()?;
    let opts = ChaosOptions {
        seed,
        kills,
        pause_ms,
        reader_exe: crate::bench::service_exe("strata-reader-under-test")?,
        writer_exe: crate::bench::service_exe("strata-writer-under-test")?,
        work_dir: dir.path().join("run"),
        converge: Duration::from_secs(converge_secs),
        ddl_waits_for_reader: ddl_gate,
    };
    let emulator = if s3 { Some(crate::emulator::Emulator::start().await?) } else { None };
    let (toml, stage) = crate::bench::run_stage(emulator.as_ref(), dir.path(), "chaos").await?;
    let stage_kind = if s3 { "S3 emulator" } else { "local" };
    let outcome = run(&opts, &toml, &stage).await;
    let (summary, result) = match outcome {
        Ok(report) => (format!("pass: {report}"), Ok(())),
        Err(e) => {
            let kept = dir.keep();
            eprintln!("{}", log_tails(&opts.work_dir, 40));
            (format!("FAIL (seed {seed}): {e:#}; logs in {}", kept.display()), Err(anyhow::anyhow!("the chaos run failed")))
        }
    };
    let line = format!(
        "| {} | chaos | {stage_kind} | seed {seed}, {kills} kills, pauses {}-{} ms, DDL gate {} | {summary} |",
        crate::bench::today(),
        pause_ms.0,
        pause_ms.1,
        if ddl_gate { "on" } else { "off" }
    );
    crate::bench::record(record.as_ref(), "chaos", &line)?;
    result
}
