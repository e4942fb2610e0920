//! The many-writers run: N writer processes share D destinations on one
//! stage (half Postgres mirrors, each its own database on a destination
//! cluster, half Parquet files destinations on local disk) while a
//! workload of inserts, updates and deletes runs on the source, and k
//! writers that own destinations are killed with `kill -9` at seeded
//! moments and not restarted.
//!
//! Ownership is checked from the destinations' own records, never from
//! strata's leases (those only choose whom to kill):
//!
//! ```text
//!  destination DB            strata.cursors ──trigger──▶ mw_audit.cursor_writes
//!  (one per Postgres dest)   every committed cursor move: seq, application_name,
//!                            backend pid, clock_timestamp(), txid
//!  destination cluster       pg_stat_activity sampled every 100 ms: writers
//!                            'active' or 'idle in transaction' per database
//!  files destination         the Parquet files: every staged change exactly
//!                            once; their mtimes say when a new owner resumed
//! ```
//!
//! A Postgres destination's audit must show seqs strictly increasing, its
//! writers in runs with no writer in two runs (A, B, A is two owners), no
//! killed writer after its kill, and a new owner's first write within
//! [`HANDOVER_LIMIT`] of the kill; no sample may show two writers busy on
//! one database. A files destination carries no record of which process
//! wrote a file: its exactly-once content, and the first file written
//! after a kill, stand for it. At the end every destination equals the
//! source. Used by the `many_writers` test (small scale) and by
//! `strata-bench many-writers`.

mod audit;
mod content;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use strata_stager::Stage;
use strata_stager::keys::DestinationKeys;
use strata_stager::lease::Leases;
use strata_stager::log::StreamLog;
use strata_writer::destinations::files::config::{FileFormat, FilesSpec};
use strata_writer::spec::{DestinationKind, PostgresMode, StartPosition};

use crate::pg::{ClusterOptions, PgCluster, connect};
use crate::reader::{ServiceProcess, config_text_for, wait_for_slot};
use crate::workload::Rng;
use crate::writer::{spec, spec_of};

pub use audit::HANDOVER_LIMIT;

/// The source tables: a bigint key, a bigint and a text.
pub const TABLES: [&str; 2] = ["mw_accounts", "mw_orders"];

/// What a run does.
#[derive(Debug, Clone)]
pub struct ManyWritersOptions {
    pub writers: usize,
    pub destinations: usize,
    pub kills: usize,
    pub seed: u64,
    /// Pause before each kill, drawn uniformly from this range (ms).
    pub pause_ms: (u64, u64),
    pub reader_exe: PathBuf,
    pub writer_exe: PathBuf,
    /// Configs, service logs and the files destinations.
    pub work_dir: PathBuf,
    /// How long delivery may take, once the workload stops, before the run
    /// fails as stuck.
    pub converge: Duration,
    /// Each writer in its own UTS namespace with its own host name (needs
    /// root): a writer then cannot tell that another's process is gone, so
    /// orphaned destinations wait for their leases to expire, as across
    /// machines. Otherwise writers on this host take a dead one's
    /// destinations over at once.
    pub distinct_hosts: bool,
}

impl ManyWritersOptions {
    /// `WRITERSxDESTINATIONSxKILLS`, e.g. `10x100x3`.
    pub fn parse_scale(text: &str) -> Result<(usize, usize, usize)> {
        let parts: Vec<usize> = text.split('x').map(|p| p.trim().parse::<usize>()).collect::<Result<_, _>>().with_context(|| format!("scale {text}: WxDxK"))?;
        match parts[..] {
            [w, d, k] if w > k && d >= 2 => Ok((w, d, k)),
            _ => bail!("scale {text}: WxDxK with more writers than kills and at least 2 destinations"),
        }
    }
}

/// One destination of the run.
#[derive(Debug, Clone)]
pub enum Dest {
    /// A mirror in database `db` of the destination cluster.
    Postgres { name: String, db: String, url: String },
    /// Parquet files under `dir`.
    Files { name: String, dir: PathBuf },
}

impl Dest {
    pub fn name(&self) -> &str {
        match self {
            Dest::Postgres { name, .. } | Dest::Files { name, .. } => name,
        }
    }
}

/// One `kill -9`.
#[derive(Debug, Clone)]
pub struct Kill {
    pub writer: usize,
    pub pid: u32,
    /// Microseconds since the Unix epoch.
    pub at_us: i64,
    /// Destinations whose lease the writer held then.
    pub owned: Vec<String>,
}

/// What a run did and found.
#[derive(Debug, Default, Clone)]
pub struct ManyWritersReport {
    pub seed: u64,
    pub writers: usize,
    pub distinct_hosts: bool,
    pub postgres: usize,
    pub files: usize,
    pub kills: Vec<Kill>,
    pub transactions: u64,
    pub batches: u64,
    pub staged_changes: u64,
    /// Cursor moves the Postgres destinations' audits recorded.
    pub audited_writes: u64,
    /// Owner changes seen in the audits, per Postgres destination (sorted).
    pub handovers: BTreeMap<String, usize>,
    /// Kill to first write by the new owner, per orphaned destination (ms).
    pub handover_ms: BTreeMap<String, u64>,
    pub samples: u64,
    /// Most writers busy on one destination database in one sample.
    pub max_busy_writers: usize,
    pub run_secs: f64,
    pub converge_secs: f64,
}

impl std::fmt::Display for ManyWritersReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kills: Vec<String> = self.kills.iter().map(|k| format!("writer {} (pid {}, owned {})", k.writer, k.pid, k.owned.len())).collect();
        let moved = self.handovers.values().filter(|n| **n > 0).count();
        let most = self.handovers.values().max().copied().unwrap_or(0);
        let max_ms = self.handover_ms.values().max().copied().unwrap_or(0);
        write!(
            f,
            "seed {}: {} writers ({}), {} destinations ({} postgres, {} files); {} kills ({}); {} source tx, staged {} changes in {} batches; \
             audits: {} cursor moves, {} postgres destinations changed owner (at most {} handovers each), one owner each throughout; \
             {} orphaned destinations resumed, the slowest {} ms after its kill; pg_stat_activity: {} samples, at most {} writer per database; \
             every destination equals the source; run {:.0} s, convergence {:.0} s",
            self.seed,
            self.writers,
            if self.distinct_hosts { "each on its own host name" } else { "one host name" },
            self.postgres + self.files,
            self.postgres,
            self.files,
            self.kills.len(),
            kills.join(", "),
            self.transactions,
            self.staged_changes,
            self.batches,
            self.audited_writes,
            moved,
            most,
            self.handover_ms.len(),
            max_ms,
            self.samples,
            self.max_busy_writers,
            self.run_secs,
            self.converge_secs
        )
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The running pieces.
struct Rig {
    /// The destination cluster (the source cluster is reaped when the
    /// process exits, like every throwaway cluster).
    target: PgCluster,
    src_url: String,
    config: PathBuf,
    opts: ManyWritersOptions,
    reader: Option<ServiceProcess>,
    writers: Vec<Option<ServiceProcess>>,
    dests: Vec<Dest>,
}

impl Rig {
    fn log(&self, name: &str) -> PathBuf {
        self.opts.work_dir.join(format!("{name}.log"))
    }

    /// Fails if a service that was not killed ended by itself.
    fn check_alive(&mut self) -> Result<()> {
        let dir = self.opts.work_dir.display().to_string();
        if let Some(p) = self.reader.as_mut()
            && let Some(status) = p.try_wait()?
        {
            bail!("the reader exited by itself ({status}); logs in {dir}");
        }
        for (i, w) in self.writers.iter_mut().enumerate() {
            if let Some(p) = w.as_mut()
                && let Some(status) = p.try_wait()?
            {
                bail!("writer {i} exited by itself ({status}); logs in {dir}");
            }
        }
        Ok(())
    }

    /// Stops the services left (SIGTERM); fails if one does not exit cleanly.
    fn terminate(&mut self) -> Result<()> {
        for (i, w) in self.writers.iter_mut().enumerate() {
            if let Some(p) = w.take() {
                let status = p.terminate()?;
                if !status.success() {
                    bail!("writer {i} ended with {status} on SIGTERM");
                }
            }
        }
        if let Some(p) = self.reader.take() {
            let status = p.terminate()?;
            if !status.success() {
                bail!("the reader ended with {status} on SIGTERM");
            }
        }
        Ok(())
    }
}

/// Starts both clusters, loads the source, makes the destinations (each
/// Postgres one audited), starts the reader and the writers, and declares
/// the destinations one at a time so that the writers share them.
async fn set_up(opts: &ManyWritersOptions, stage_toml: &str) -> Result<Rig> {
    let source = PgCluster::start()?;
    // Each Postgres destination holds one session of its writer, and a
    // killed writer's sessions linger until the server notices.
    let target = PgCluster::start_with(ClusterOptions { conf: "max_connections = 400\n".to_owned(), ..Default::default() })?;
    let src_url = source.fresh_database().await?;
    let admin = connect(&src_url).await?;
    for table in TABLES {
        admin
            .batch_execute(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, v bigint, t text); \
                 INSERT INTO {table} SELECT g, g % 100, md5(g::text) FROM generate_series(1, 500) g"
            ))
            .await?;
    }
    std::fs::create_dir_all(&opts.work_dir)?;
    let mut dests = Vec::new();
    for i in 0..opts.destinations {
        dests.push(if i % 2 == 0 {
            let db = target.create_database().await?;
            audit::install(&target.connect(&db).await?).await.with_context(|| format!("auditing database {db}"))?;
            Dest::Postgres { name: format!("d{i:03}-pg"), url: target.url(&db), db }
        } else {
            Dest::Files { name: format!("d{i:03}-files"), dir: opts.work_dir.join("files").join(format!("d{i:03}")) }
        });
    }
    let config = opts.work_dir.join("strata.toml");
    std::fs::write(&config, config_text_for(&src_url, stage_toml, "max_rows = 500\n"))?;
    let mut rig = Rig { target, src_url, config, opts: opts.clone(), reader: None, writers: Vec::new(), dests };
    rig.reader = Some(ServiceProcess::spawn_logged(&opts.reader_exe, &rig.config, &rig.log("reader"), &[("RUST_LOG", "warn")])?);
    wait_for_slot(&admin, "strata_main").await?;
    for i in 0..opts.writers {
        let exe = if opts.distinct_hosts { on_own_host(&opts.work_dir, &opts.writer_exe, i)? } else { opts.writer_exe.clone() };
        let p = ServiceProcess::spawn_logged(&exe, &rig.config, &rig.log(&format!("writer-{i}")), &[("RUST_LOG", WRITER_LOG)])?;
        rig.writers.push(Some(p));
    }
    Ok(rig)
}

/// A script that runs `exe` with its arguments in a new UTS namespace
/// whose host name is `mw-host-{i}`; every step `exec`s, so the process
/// keeps the pid it was started with and `kill -9` reaches the writer.
fn on_own_host(dir: &Path, exe: &Path, i: usize) -> Result<PathBuf> {
    if !crate::process::is_root() {
        bail!("writers on distinct hosts need root (unshare --uts)");
    }
    let script = dir.join(format!("writer-{i}.sh"));
    let exe = crate::process::sh_quote(&exe.display().to_string());
    std::fs::write(&script, format!("#!/bin/sh\nexec unshare --uts sh -c 'hostname \"$0\" && exec \"$@\"' mw-host-{i} {exe} \"$@\"\n"))?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(script)
}

/// Declares every destination, spaced so that each writer's reconcile pass
/// (every 2 s) finds a few new ones: declared at once, the first writer to
/// look would take them all.
async fn declare(rig: &Rig, stage: &Stage) -> Result<()> {
    let gap = Duration::from_millis((2000 / rig.opts.writers.max(1) as u64).clamp(50, 200));
    for d in &rig.dests {
        let s = match d {
            Dest::Postgres { name, url, .. } => spec(name, url, StartPosition::Earliest, PostgresMode::Mirror),
            Dest::Files { name, dir } => {
                let mut files = FilesSpec::new(dir.display().to_string(), FileFormat::Parquet);
                files.roll_up_rows = 300;
                files.roll_up_secs = 1;
                spec_of(name, StartPosition::Earliest, DestinationKind::Files(files))
            }
        };
        strata_writer::control::add(stage, &s).await.with_context(|| format!("declaring {}", d.name()))?;
        tokio::time::sleep(gap).await;
    }
    Ok(())
}

/// The last holder of each destination's lease (strata's record; it only
/// chooses whom to kill), by destination name. An expired lease counts:
/// its holder may not have noticed yet, and deliver still.
async fn lease_holders(stage: &Stage, dests: &[Dest]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for d in dests {
        let leases = Leases::new(stage, DestinationKeys::new(d.name())?.lease());
        if let Some(l) = leases.read().await? {
            out.insert(d.name().to_owned(), l.value.holder);
        }
    }
    Ok(out)
}

/// Whether lease holder `holder` (`writer@{host}:{pid}:{tag}`) is process `pid`.
fn held_by(holder: &str, pid: u32) -> bool {
    holder.split(':').nth(1).is_some_and(|p| p == pid.to_string())
}

/// Waits until every destination has been taken by a writer (its lease
/// exists; held now or not: a lease that lapsed shows in the audits).
async fn wait_all_owned(rig: &mut Rig, stage: &Stage) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let taken = lease_holders(stage, &rig.dests).await?.len();
        if taken == rig.dests.len() {
            return Ok(());
        }
        rig.check_alive()?;
        if Instant::now() > deadline {
            bail!("only {taken} of {} destinations were taken by a writer within 120 s", rig.dests.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills `opts.kills` writers, each after a seeded pause, each one named
/// by at least one destination's lease at that moment (seeded choice).
async fn kill_writers(rig: &mut Rig, stage: &Stage, watches: &audit::FileWatches) -> Result<Vec<Kill>> {
    let mut rng = Rng(rig.opts.seed.wrapping_mul(2_654_435_761) | 1);
    let mut kills = Vec::new();
    for n in 0..rig.opts.kills {
        let (lo, hi) = rig.opts.pause_ms;
        tokio::time::sleep(Duration::from_millis(lo + rng.below(hi.saturating_sub(lo) + 1))).await;
        rig.check_alive()?;
        let held = lease_holders(stage, &rig.dests).await?;
        let owning: Vec<(usize, u32)> = rig
            .writers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_ref().map(|p| (i, p.pid())))
            .filter(|(_, pid)| held.values().any(|h| held_by(h, *pid)))
            .collect();
        let Some(&(writer, pid)) = owning.get(rng.below(owning.len().max(1) as u64) as usize) else {
            bail!("kill {}: no live writer holds a destination", n + 1);
        };
        let owned: Vec<String> = held.iter().filter(|(_, h)| held_by(h, pid)).map(|(d, _)| d.clone()).collect();
        let process = rig.writers[writer].take().context("the chosen writer runs")?;
        process.kill9()?;
        let at_us = now_us();
        eprintln!(
            "many-writers: kill {}/{} at {}: writer {writer} (pid {pid}), holding {} destinations",
            n + 1,
            rig.opts.kills,
            strata_common::Timestamp(at_us),
            owned.len()
        );
        for d in rig.dests.iter().filter(|d| owned.iter().any(|o| o == d.name())) {
            if let Dest::Files { name, dir } = d {
                watches.watch(name, dir, at_us);
            }
        }
        kills.push(Kill { writer, pid, at_us, owned });
    }
    Ok(kills)
}

/// Commits transactions of inserts, updates and deletes on both tables
/// until `stop`, about 40 a second; counts those committed.
async fn workload(url: String, seed: u64, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>) -> Result<()> {
    let c = connect(&url).await?;
    let mut rng = Rng(seed | 1);
    let mut next_id = 1_000i64;
    while !stop.load(Ordering::Relaxed) {
        let table = TABLES[rng.below(TABLES.len() as u64) as usize];
        let n = 1 + rng.below(8) as i64;
        let (m, x) = (5 + rng.below(20), rng.below(5));
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO {table} SELECT g, g % 100, md5(g::text) FROM generate_series({next_id}, {}) g; \
             UPDATE {table} SET v = v + 1, t = t || 'u' WHERE id % 97 = {} AND id % {m} = {x}; \
             DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE id % 13 = {x} ORDER BY id LIMIT 1); COMMIT",
            next_id + n - 1,
            rng.below(97)
        ))
        .await
        .context("the source workload")?;
        next_id += n;
        committed.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(15 + rng.below(20))).await;
    }
    Ok(())
}

/// Waits until the reader has staged everything committed, then until every
/// destination's cursor reaches the head.
async fn converge(rig: &mut Rig, stage: &Stage) -> Result<u64> {
    let src = connect(&rig.src_url).await?;
    let deadline = Instant::now() + rig.opts.converge;
    crate::reader::wait_slot_confirmed(&src, rig.opts.converge, || rig.check_alive()).await?;
    let head = StreamLog::new(stage, "main")?.head(None).await?.unwrap_or(0);
    let names: Vec<String> = rig.dests.iter().map(|d| d.name().to_owned()).collect();
    for name in names {
        let cursors = strata_stager::cursor::Cursors::new(stage, &name)?;
        loop {
            let at = cursors.load().await?.map_or(0, |c| c.value.seq);
            if at >= head {
                break;
            }
            rig.check_alive()?;
            if Instant::now() > deadline {
                let holders = lease_holders(stage, &rig.dests).await.unwrap_or_default();
                bail!("stuck: destination {name} at seq {at} of {head} (lease: {:?})", holders.get(&name));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(head)
}

/// The writers' log filter: each delivered batch is logged with its fetch
/// and apply times, from which a slow handover can be taken apart.
const WRITER_LOG: &str = "info,strata_writer::worker=debug";

/// Runs the whole many-writers run on the stage `stage_toml` (the `[stage]`
/// section's body) names, `stage` being the same stage opened here.
pub async fn run(opts: &ManyWritersOptions, stage_toml: &str, stage: &Stage) -> Result<ManyWritersReport> {
    let started = Instant::now();
    let mut rig = set_up(opts, stage_toml).await?;
    let outcome = drive(&mut rig, stage).await;
    if outcome.as_ref().map_or(true, |(_, problems)| !problems.is_empty()) {
        // The destination cluster goes with this process: keep what the
        // audits recorded beside the logs.
        let audits = audit::dump(&rig.target, &rig.dests).await.unwrap_or_default();
        let kills = outcome.as_ref().map(|(r, _)| format!("{:?}", r.kills)).unwrap_or_default();
        std::fs::write(opts.work_dir.join("audit.txt"), format!("kills: {kills}\n{audits:#?}\n"))?;
    }
    let (mut report, problems) = outcome?;
    rig.check_alive()?;
    rig.terminate()?;
    report.run_secs = started.elapsed().as_secs_f64();
    if !problems.is_empty() {
        let evidence = opts.work_dir.join("audit.txt");
        bail!("seed {}: {} problems (audits in {}): {}", opts.seed, problems.len(), evidence.display(), problems.join("; "));
    }
    Ok(report)
}

/// The run from the first destination declared to the end checks: the
/// report, and every problem found.
async fn drive(rig: &mut Rig, stage: &Stage) -> Result<(ManyWritersReport, Vec<String>)> {
    let opts = rig.opts.clone();
    let (stop, committed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let load = tokio::spawn(workload(rig.src_url.clone(), opts.seed ^ 0x9e37_79b9_7f4a_7c15, stop.clone(), committed.clone()));
    let observer = audit::Observer::start(rig.target.connect("postgres").await?);
    let watches = audit::FileWatches::default();
    declare(rig, stage).await?;
    wait_all_owned(rig, stage).await?;
    let kills = kill_writers(rig, stage, &watches).await?;
    // Handovers happen under load: the workload runs past the lease time.
    tokio::time::sleep(HANDOVER_LIMIT + Duration::from_secs(5)).await;
    rig.check_alive()?;
    stop.store(true, Ordering::Relaxed);
    load.await.context("the workload task")??;
    let converging = Instant::now();
    // A run that does not converge is still audited: its handovers and
    // owners are part of what it shows.
    let converged = converge(rig, stage).await;
    let converge_secs = converging.elapsed().as_secs_f64();
    let samples = observer.stop().await?;
    let batches = *converged.as_ref().unwrap_or(&0);
    let mut report = ManyWritersReport {
        seed: opts.seed,
        writers: opts.writers,
        distinct_hosts: opts.distinct_hosts,
        postgres: rig.dests.iter().filter(|d| matches!(d, Dest::Postgres { .. })).count(),
        files: rig.dests.iter().filter(|d| matches!(d, Dest::Files { .. })).count(),
        transactions: committed.load(Ordering::SeqCst),
        batches,
        converge_secs,
        ..Default::default()
    };
    let mut problems = Vec::new();
    if let Err(e) = &converged {
        problems.push(format!("{e:#}"));
    }
    problems.extend(audit::check_samples(&samples, &kills, &mut report));
    problems.extend(audit::check_audits(&rig.target, &rig.dests, &kills, &mut report).await?);
    problems.extend(watches.check(&kills, &mut report).await?);
    if converged.is_ok() {
        problems.extend(content::check(&rig.src_url, &rig.dests, stage, &mut report).await?);
    }
    report.kills = kills;
    Ok((report, problems))
}

/// The last `n` lines of the reader's and each writer's log in `dir`.
pub fn log_tails(dir: &Path, writers: usize, n: usize) -> String {
    let mut out = String::new();
    let names = std::iter::once("reader".to_owned()).chain((0..writers).map(|i| format!("writer-{i}")));
    for name in names {
        let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" INFO ")).collect();
        out.push_str(&format!("--- {name}.log (last {n} lines but INFO)\n{}\n", lines[lines.len().saturating_sub(n)..].join("\n")));
    }
    out
}

/// Copies the services' logs out of `dir` (which goes) into a temp dir
/// that stays, and names it.
fn keep_logs(dir: &Path) -> Result<PathBuf> {
    let kept = tempfile::Builder::new().prefix("strata-many-writers-logs-").tempdir()?.keep();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            let to = kept.join(path.file_name().expect("a listed file has a name"));
            std::fs::copy(&path, &to).with_context(|| format!("copying {} to {}", path.display(), to.display()))?;
        }
    }
    Ok(kept)
}

pub const USAGE: &str = "usage: strata-bench many-writers [--writers N] [--destinations N] [--kills N] [--seed S] [--stage local|s3] \
                         [--hosts same|distinct] [--pause-ms MIN-MAX] [--converge-secs N] [--record FILE]";

/// `strata-bench many-writers`: prints a result row (and adds it to
/// `--record`'s file after the last many-writers row). Keeps the whole
/// temp dir when the run fails, and the services' logs when it passes (a
/// pass's handovers are taken apart from them too), naming where.
pub async fn bench_main(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (mut writers, mut destinations, mut kills, mut seed) = (10usize, 100usize, 3usize, 1u64);
    let (mut s3, mut pause_ms, mut converge_secs, mut record) = (false, (3000u64, 8000u64), 600u64, None::<PathBuf>);
    let mut distinct_hosts = false;
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--writers" => writers = value.parse().context("--writers N")?,
            "--destinations" => destinations = value.parse().context("--destinations N")?,
            "--kills" => kills = value.parse().context("--kills N")?,
            "--seed" => seed = value.parse().context("--seed S")?,
            "--stage" if value == "local" || value == "s3" => s3 = value == "s3",
            "--pause-ms" => {
                let (lo, hi) = value.split_once('-').context("--pause-ms MIN-MAX")?;
                pause_ms = (lo.parse().context("--pause-ms MIN")?, hi.parse().context("--pause-ms MAX")?);
            }
            "--hosts" if value == "same" || value == "distinct" => distinct_hosts = value == "distinct",
            "--converge-secs" => converge_secs = value.parse().context("--converge-secs N")?,
            "--record" => record = Some(value.into()),
            other => bail!("unknown argument {other} {value}; {USAGE}"),
        }
    }
    ManyWritersOptions::parse_scale(&format!("{writers}x{destinations}x{kills}"))?;
    let dir = tempfile::Builder::new().prefix("strata-many-writers-").tempdir()?;
    let opts = ManyWritersOptions {
        writers,
        destinations,
        kills,
        seed,
        pause_ms,
        reader_exe: crate::bench::service_exe("strata-reader-under-test")?,
        writer_exe: crate::bench::service_exe("strata-writer-under-test")?,
        work_dir: dir.path().join("run"),
        converge: Duration::from_secs(converge_secs),
        distinct_hosts,
    };
    let emulator = if s3 { Some(crate::emulator::Emulator::start().await?) } else { None };
    let (toml, stage) = crate::bench::run_stage(emulator.as_ref(), dir.path(), "many-writers").await?;
    let (summary, result) = match run(&opts, &toml, &stage).await {
        Ok(report) => (format!("pass: {report}; logs in {}", keep_logs(&opts.work_dir)?.display()), Ok(())),
        Err(e) => {
            let kept = dir.keep();
            eprintln!("{}", log_tails(&opts.work_dir, writers, 30));
            (format!("FAIL (seed {seed}): {e:#}; logs in {}", kept.display()), Err(anyhow::anyhow!("the many-writers run failed")))
        }
    };
    let line = format!(
        "| {} | many-writers | {} | seed {seed}, {writers} writers ({} host names), {destinations} destinations, {kills} kills, pauses {}-{} ms | {summary} |",
        crate::bench::today(),
        if s3 { "S3 emulator" } else { "local" },
        if distinct_hosts { "distinct" } else { "one" },
        pause_ms.0,
        pause_ms.1
    );
    crate::bench::record(record.as_ref(), "many-writers", &line)?;
    result
}
