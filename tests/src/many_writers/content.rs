//! The end state: every Postgres mirror equals the source, and every files
//! destination holds each staged change exactly once, with the staged
//! content, and replays to the source's rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use strata_common::change::{Op, Value};
use strata_common::{Change, Lsn};
use strata_stager::Stage;
use strata_stager::codec::decode_file;
use tokio_postgres::Client;

use super::{Dest, ManyWritersReport, TABLES};
use crate::pg::connect;

/// A table's rows by key: `(v, t)`.
type Rows = BTreeMap<i64, (Option<i64>, Option<String>)>;

/// Count and md5 of `table`'s rows, sorted by key.
async fn checksum(c: &Client, table: &str) -> Result<(i64, String)> {
    let row = c
        .query_one(&format!("SELECT count(*), coalesce(md5(string_agg(format('%s|%s|%s', id, v, t), E'\\n' ORDER BY id)), '') FROM public.{table}"), &[])
        .await
        .with_context(|| format!("checksum of {table}"))?;
    Ok((row.get(0), row.get(1)))
}

async fn rows(c: &Client, table: &str) -> Result<Rows> {
    let rows = c.query(&format!("SELECT id, v, t FROM public.{table}"), &[]).await.with_context(|| format!("reading {table}"))?;
    Ok(rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect())
}

/// All the end checks; returns what differs.
pub async fn check(src_url: &str, dests: &[Dest], stage: &Stage, report: &mut ManyWritersReport) -> Result<Vec<String>> {
    let src = connect(src_url).await?;
    let mut expected = Vec::new();
    let mut source = HashMap::new();
    for table in TABLES {
        expected.push((table, checksum(&src, table).await?));
        source.insert(table.to_owned(), rows(&src, table).await?);
    }
    let staged = crate::reader::staged_changes(stage, "main").await?;
    report.staged_changes = staged.len() as u64;
    let staged: HashMap<(Lsn, u32), &Change> = staged.iter().map(|(_, _, c)| ((c.lsn, c.ord), c)).collect();
    let mut problems = Vec::new();
    for d in dests {
        match d {
            Dest::Postgres { name, url, .. } => {
                let c = connect(url).await?;
                for (table, want) in &expected {
                    let got = checksum(&c, table).await?;
                    if got != *want {
                        problems.push(format!("{name}: {table} holds {} rows (md5 {}), the source {} (md5 {})", got.0, got.1, want.0, want.1));
                    }
                }
            }
            Dest::Files { name, dir } => {
                let dir = dir.clone();
                let changes = tokio::task::spawn_blocking(move || read_files(&dir)).await??;
                problems.extend(exactly_once(name, &changes, &staged));
                problems.extend(replays_to(name, &changes, &source)?);
            }
        }
    }
    Ok(problems)
}

/// A change read from a files destination, with the positions of the
/// table's `id`, `v` and `t` among its values.
struct FileChange {
    change: Change,
    columns: [usize; 3],
}

/// Every change in the Parquet files under `dir`.
fn read_files(dir: &Path) -> Result<Vec<FileChange>> {
    let mut out = Vec::new();
    for rel in crate::files_under(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")) {
        let name = rel.display().to_string();
        let bytes = std::fs::read(dir.join(&rel)).with_context(|| format!("reading {name}"))?;
        let file = decode_file(&object_store::path::Path::from(name.as_str()), bytes.into()).with_context(|| format!("decoding {name}"))?;
        let at = |col: &str| file.columns.iter().position(|c| c.name == col).with_context(|| format!("{name} has no column {col}"));
        let columns = [at("id")?, at("v")?, at("t")?];
        out.extend(file.changes.into_iter().map(|change| FileChange { change, columns }));
    }
    Ok(out)
}

/// Each staged change once in the files, as staged.
fn exactly_once(name: &str, changes: &[FileChange], staged: &HashMap<(Lsn, u32), &Change>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: HashMap<(Lsn, u32), usize> = HashMap::new();
    for f in changes {
        let key = (f.change.lsn, f.change.ord);
        *seen.entry(key).or_default() += 1;
        match staged.get(&key) {
            Some(s) if **s == f.change => {}
            Some(_) => problems.push(format!("{name}: change {}:{} differs from the staged one", key.0, key.1)),
            None => problems.push(format!("{name}: change {}:{} was never staged", key.0, key.1)),
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(k, n)| format!("{}:{} x{n}", k.0, k.1)).collect();
    if !twice.is_empty() {
        problems.push(format!("{name}: {} changes more than once, e.g. {:?}", twice.len(), &twice[..twice.len().min(5)]));
    }
    let missing: Vec<_> = staged.keys().filter(|k| !seen.contains_key(k)).map(|k| format!("{}:{}", k.0, k.1)).collect();
    if !missing.is_empty() {
        problems.push(format!("{name}: {} of {} staged changes missing, e.g. {:?}", missing.len(), staged.len(), &missing[..missing.len().min(5)]));
    }
    problems.truncate(10);
    problems
}

fn int(v: &Value) -> Result<Option<i64>> {
    match v {
        Value::Int64(i) => Ok(Some(*i)),
        Value::Null => Ok(None),
        other => bail!("a bigint column holds {other:?}"),
    }
}

fn text(v: &Value) -> Result<Option<String>> {
    match v {
        Value::Text(s) => Ok(Some(s.clone())),
        Value::Null => Ok(None),
        other => bail!("a text column holds {other:?}"),
    }
}

/// The files' changes applied in commit order equal the source's rows.
fn replays_to(name: &str, changes: &[FileChange], source: &HashMap<String, Rows>) -> Result<Vec<String>> {
    let mut order: Vec<&FileChange> = changes.iter().collect();
    order.sort_by_key(|f| (f.change.lsn, f.change.ord));
    let mut tables: HashMap<String, Rows> = HashMap::new();
    for f in order {
        let c = &f.change;
        let rows = tables.entry(c.table.name.clone()).or_default();
        let [id, v, t] = f.columns;
        match (c.op, &c.after, &c.before) {
            (Op::Read | Op::Insert | Op::Update, Some(after), _) => {
                let key = int(&after[id])?.with_context(|| format!("{name}: a NULL key"))?;
                rows.insert(key, (int(&after[v])?, text(&after[t])?));
            }
            (Op::Delete, _, Some(before)) => {
                rows.remove(&int(&before[id])?.with_context(|| format!("{name}: a delete without its key"))?);
            }
            (Op::Truncate, _, _) => rows.clear(),
            (op, ..) => bail!("{name}: a {op} change without the row it needs"),
        }
    }
    let mut problems = Vec::new();
    for (table, want) in source {
        let got = tables.remove(table).unwrap_or_default();
        if got != *want {
            let differ = want.iter().filter(|(k, r)| got.get(k) != Some(r)).count() + got.keys().filter(|k| !want.contains_key(k)).count();
            problems.push(format!("{name}: {table} replays to {} rows, the source has {}; {differ} keys differ", got.len(), want.len()));
        }
    }
    Ok(problems)
}
