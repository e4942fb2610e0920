//! Who wrote each destination, from the destinations' own records: an
//! audit trigger on each Postgres destination's cursor row, samples of the
//! destination cluster's `pg_stat_activity`, and the mtimes of a files
//! destination's files after a kill.
//!
//! The audit row is written by a trigger in the transaction that moves
//! the cursor, so only committed deliveries leave one, and the row lock
//! every delivery takes on the cursor row first (`FOR UPDATE`) orders the
//! audit rows as the deliveries committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::{Dest, Kill, ManyWritersReport, now_us};
use crate::pg::PgCluster;

/// The longest a destination may wait for a new owner after its writer
/// dies: the lease's time to live, one reconcile pass of the writer that
/// takes it over, and 5 s for that writer to connect and deliver a batch
/// on a busy 2-core machine.
pub const HANDOVER_LIMIT: Duration = Duration::from_secs(strata_writer::run::LEASE_TTL.as_secs() + strata_writer::run::RECONCILE.as_secs() + 5);

/// `strata.cursors` as the writer creates it (`PostgresSink::durable_seq`),
/// created first here so that the trigger is in place before any writer
/// moves a cursor; then the audit table and its trigger.
const AUDIT_DDL: &str = "CREATE SCHEMA IF NOT EXISTS strata; \
    CREATE TABLE IF NOT EXISTS strata.cursors (destination text PRIMARY KEY, stream text NOT NULL, \
    seq bigint NOT NULL, lsn text NOT NULL, commit_ts timestamptz, updated_at timestamptz NOT NULL DEFAULT now()); \
    ALTER TABLE strata.cursors ADD COLUMN IF NOT EXISTS held_until bigint; \
    CREATE SCHEMA mw_audit; \
    CREATE TABLE mw_audit.cursor_writes (id bigserial PRIMARY KEY, op text NOT NULL, old_seq bigint, seq bigint NOT NULL, \
    application_name text NOT NULL, backend_pid int NOT NULL, at timestamptz NOT NULL, txid bigint NOT NULL); \
    CREATE FUNCTION mw_audit.record() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
    INSERT INTO mw_audit.cursor_writes (op, old_seq, seq, application_name, backend_pid, at, txid) \
    VALUES (TG_OP, CASE WHEN TG_OP = 'UPDATE' THEN OLD.seq END, NEW.seq, current_setting('application_name'), \
    pg_backend_pid(), clock_timestamp(), txid_current()); RETURN NULL; END $$; \
    CREATE TRIGGER mw_audit AFTER INSERT OR UPDATE ON strata.cursors FOR EACH ROW EXECUTE FUNCTION mw_audit.record()";

/// Puts the audit into a fresh destination database.
pub async fn install(c: &Client) -> Result<()> {
    Ok(c.batch_execute(AUDIT_DDL).await?)
}

/// The `application_name` prefix of writer process `pid`.
fn name_of(pid: u32) -> String {
    format!("strata-writer {pid}@")
}

/// The writers busy ('active' or 'idle in transaction') on one database
/// in one sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at_us: i64,
    pub database: String,
    pub writers: Vec<String>,
}

/// Samples `pg_stat_activity` of the destination cluster every 100 ms.
pub struct Observer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<(u64, Vec<Sample>)>>,
}

impl Observer {
    pub fn start(c: Client) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut ticks, mut out) = (0u64, Vec::new());
            while !s.load(Ordering::Relaxed) {
                let rows = c
                    .query(
                        "SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint, datname::text, \
                         array_agg(DISTINCT application_name ORDER BY application_name) FROM pg_stat_activity \
                         WHERE application_name LIKE 'strata-writer %' AND state IN ('active', 'idle in transaction') \
                         AND datname IS NOT NULL GROUP BY datname",
                        &[],
                    )
                    .await
                    .context("sampling pg_stat_activity")?;
                ticks += 1;
                out.extend(rows.iter().map(|r| Sample { at_us: r.get(0), database: r.get(1), writers: r.get(2) }));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok((ticks, out))
        });
        Observer { stop, task }
    }

    /// Ends sampling: the number of samples, and every busy database seen.
    pub async fn stop(self) -> Result<(u64, Vec<Sample>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("the pg_stat_activity sampler")?
    }
}

/// No sample shows two writers busy on one database, nor a killed writer
/// busy 2 s after its kill (its sessions end when the server reads the
/// closed socket).
pub fn check_samples((ticks, samples): &(u64, Vec<Sample>), kills: &[Kill], report: &mut ManyWritersReport) -> Vec<String> {
    let mut problems = Vec::new();
    report.samples = *ticks;
    report.max_busy_writers = samples.iter().map(|s| s.writers.len()).max().unwrap_or(0);
    for s in samples.iter().filter(|s| s.writers.len() > 1) {
        problems.push(format!("pg_stat_activity at {} µs: writers {:?} busy on database {} at once", s.at_us, s.writers, s.database));
    }
    for k in kills {
        let late = samples.iter().filter(|s| s.at_us > k.at_us + 2_000_000 && s.writers.iter().any(|w| w.starts_with(&name_of(k.pid))));
        for s in late.take(3) {
            problems.push(format!("pg_stat_activity: killed writer {} busy on {} {} ms after its kill", k.pid, s.database, (s.at_us - k.at_us) / 1000));
        }
    }
    problems
}

/// One audited write of a cursor row.
#[derive(Debug)]
struct Write {
    op: String,
    old_seq: Option<i64>,
    seq: i64,
    writer: String,
    at_us: i64,
}

async fn audit_rows(c: &Client) -> Result<Vec<Write>> {
    let rows = c
        .query("SELECT op, old_seq, seq, application_name, (extract(epoch FROM at) * 1e6)::bigint FROM mw_audit.cursor_writes ORDER BY id", &[])
        .await
        .context("reading the cursor audit")?;
    Ok(rows.iter().map(|r| Write { op: r.get(0), old_seq: r.get(1), seq: r.get(2), writer: r.get(3), at_us: r.get(4) }).collect())
}

/// Every Postgres destination's audit: seqs strictly increasing, one run
/// per writer, no killed writer after its kill, and each orphaned
/// destination written by a new owner within [`HANDOVER_LIMIT`].
pub async fn check_audits(target: &PgCluster, dests: &[Dest], kills: &[Kill], report: &mut ManyWritersReport) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for d in dests {
        let Dest::Postgres { name, db, .. } = d else { continue };
        let writes = audit_rows(&target.connect(db).await?).await?;
        report.audited_writes += writes.iter().filter(|w| w.op == "UPDATE").count() as u64;
        problems.extend(check_sequence(name, &writes));
        let runs = runs(&writes);
        report.handovers.insert(name.clone(), runs.len().saturating_sub(1));
        problems.extend(check_runs(name, &runs));
        for (n, k) in kills.iter().enumerate() {
            if let Some(late) = writes.iter().find(|w| w.at_us > k.at_us && w.writer.starts_with(&name_of(k.pid))) {
                problems.push(format!("{name}: killed writer {} moved the cursor to {} after its kill", k.pid, late.seq));
            }
            let last_before = writes.iter().rev().find(|w| w.at_us <= k.at_us);
            let orphaned = k.owned.contains(name) || last_before.is_some_and(|w| w.writer.starts_with(&name_of(k.pid)));
            if !orphaned {
                continue;
            }
            match writes.iter().find(|w| w.at_us > k.at_us && !w.writer.starts_with(&name_of(k.pid))) {
                Some(w) => {
                    let ms = u64::try_from((w.at_us - k.at_us) / 1000).unwrap_or(0);
                    report.handover_ms.insert(format!("{name} (kill {})", n + 1), ms);
                    if Duration::from_millis(ms) > HANDOVER_LIMIT {
                        problems.push(format!("{name}: resumed by {} {ms} ms after kill {}, over {} s", w.writer, n + 1, HANDOVER_LIMIT.as_secs()));
                    }
                }
                None => problems.push(format!("{name}: never written again after kill {} of writer {}", n + 1, k.pid)),
            }
        }
    }
    Ok(problems)
}

/// Cursor moves strictly forward, each from where the last one left it,
/// and every session named by a writer process.
fn check_sequence(name: &str, writes: &[Write]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last: Option<&Write> = None;
    for w in writes {
        if !w.writer.starts_with("strata-writer ") {
            problems.push(format!("{name}: cursor written by a session named {:?}", w.writer));
        }
        if w.op != "UPDATE" {
            continue;
        }
        if let Some(prev) = last
            && (w.seq <= prev.seq || w.old_seq != Some(prev.seq))
        {
            problems.push(format!(
                "{name}: cursor moved {:?} -> {} by {} after {} -> {} by {}: a seq twice or backward",
                w.old_seq,
                w.seq,
                w.writer,
                prev.old_seq.unwrap_or(0),
                prev.seq,
                prev.writer
            ));
        }
        last = Some(w);
    }
    problems
}

/// No writer in two runs: A, B, A means two owners at once, or one that
/// came back.
fn check_runs(name: &str, runs: &[String]) -> Vec<String> {
    let twice = runs.iter().enumerate().filter(|(i, w)| runs[..*i].contains(w));
    twice.map(|(_, w)| format!("{name}: writer {w} owned it twice, with others between (owners in order: {runs:?})")).collect()
}

/// The writers of `writes` in order, consecutive writes by one writer
/// counted once.
fn runs(writes: &[Write]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in writes {
        if out.last() != Some(&w.writer) {
            out.push(w.writer.clone());
        }
    }
    out
}

/// Watches the files destinations a killed writer held for the first file
/// written after the kill (by whoever took them over: the killed process
/// writes nothing more).
#[derive(Default)]
pub struct FileWatches {
    tasks: Mutex<Vec<tokio::task::JoinHandle<Resumed>>>,
}

/// A watched destination, the kill's time, and when the first file after
/// it was written (µs since the epoch), if one was.
type Resumed = (String, i64, Option<i64>);

/// The latest mtime of a file under `dir`, in µs since the epoch.
fn newest_mtime(dir: &Path) -> Option<i64> {
    if !dir.exists() {
        return None;
    }
    crate::files_under(dir)
        .iter()
        .filter_map(|rel| std::fs::metadata(dir.join(rel)).and_then(|m| m.modified()).ok())
        .filter_map(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .max()
}

impl FileWatches {
    /// Polls `dir` every 100 ms, up to twice [`HANDOVER_LIMIT`], for a file
    /// written after `at_us`.
    pub fn watch(&self, name: &str, dir: &Path, at_us: i64) {
        let (name, dir): (String, PathBuf) = (name.to_owned(), dir.to_path_buf());
        let task = tokio::spawn(async move {
            let give_up = at_us + i64::try_from(2 * HANDOVER_LIMIT.as_micros()).unwrap_or(i64::MAX);
            while now_us() < give_up {
                let d = dir.clone();
                let newest = tokio::task::spawn_blocking(move || newest_mtime(&d)).await.ok().flatten();
                if let Some(t) = newest.filter(|t| *t > at_us) {
                    return (name, at_us, Some(t));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (name, at_us, None)
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    /// Each watched destination resumed within [`HANDOVER_LIMIT`].
    pub async fn check(&self, kills: &[Kill], report: &mut ManyWritersReport) -> Result<Vec<String>> {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut problems = Vec::new();
        for task in tasks {
            let (name, at_us, written) = task.await.context("a files watch")?;
            let n = kills.iter().position(|k| k.at_us == at_us).map_or(0, |i| i + 1);
            match written {
                Some(t) => {
                    let ms = u64::try_from((t - at_us) / 1000).unwrap_or(0);
                    report.handover_ms.insert(format!("{name} (kill {n})"), ms);
                    if Duration::from_millis(ms) > HANDOVER_LIMIT {
                        problems.push(format!("{name}: first file after kill {n} written {ms} ms after it, over {} s", HANDOVER_LIMIT.as_secs()));
                    }
                }
                None => problems.push(format!("{name}: no file written within {} s of kill {n}", 2 * HANDOVER_LIMIT.as_secs())),
            }
        }
        Ok(problems)
    }
}

/// The audited writes of each Postgres destination, for a failure report.
pub async fn dump(target: &PgCluster, dests: &[Dest]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for d in dests {
        let Dest::Postgres { name, db, .. } = d else { continue };
        let writes = audit_rows(&target.connect(db).await?).await?;
        out.insert(name.clone(), writes.iter().map(|w| format!("{} {:?}->{} {} @{}", w.op, w.old_seq, w.seq, w.writer, w.at_us)).collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(op: &str, old_seq: Option<i64>, seq: i64, writer: &str) -> Write {
        Write { op: op.to_owned(), old_seq, seq, writer: format!("strata-writer {writer}@h"), at_us: 0 }
    }

    #[test]
    fn a_writer_back_after_another_is_two_owners() {
        let writes = [write("INSERT", None, 0, "1"), write("UPDATE", Some(0), 1, "1"), write("UPDATE", Some(1), 2, "2"), write("UPDATE", Some(2), 3, "2")];
        assert!(check_runs("d", &runs(&writes)).is_empty());
        assert_eq!(runs(&writes).len(), 2);
        let back = [write("UPDATE", Some(0), 1, "1"), write("UPDATE", Some(1), 2, "2"), write("UPDATE", Some(2), 3, "1")];
        assert_eq!(check_runs("d", &runs(&back)).len(), 1);
    }

    #[test]
    fn a_seq_moved_twice_or_backward_is_found() {
        let fine = [write("INSERT", None, 0, "1"), write("UPDATE", Some(0), 1, "1"), write("UPDATE", Some(1), 4, "2")];
        assert!(check_sequence("d", &fine).is_empty());
        let twice = [write("UPDATE", Some(0), 1, "1"), write("UPDATE", Some(1), 2, "1"), write("UPDATE", Some(1), 2, "2")];
        assert_eq!(check_sequence("d", &twice).len(), 1);
        let unnamed = [Write { writer: "psql".to_owned(), ..write("UPDATE", Some(0), 1, "1") }];
        assert_eq!(check_sequence("d", &unnamed).len(), 1);
    }
}
