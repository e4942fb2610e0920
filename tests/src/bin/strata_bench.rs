//! `strata-bench`: benchmarks measured as ratios against a reference in the
//! same run, on this machine.
//!
//! ```text
//! strata-bench catchup [--changes 1000000] [--record bench/RESULTS.md]
//! strata-bench snapshot [--gib 5] [--workers 4] [--record bench/RESULTS.md]
//! strata-bench sqs [--changes 20000] [--record bench/RESULTS.md]
//! strata-bench capture [--changes 1000000] [--record bench/RESULTS.md]
//! strata-bench load [--changes 2000000] [--record bench/RESULTS.md]
//! ```
//!
//! `catchup`: a backlog of changes (half inserts, half updates, in 10,000-row
//! transactions) is staged by strata-reader; then the time for strata-writer
//! to deliver it into an empty Postgres destination is compared with the time
//! PostgreSQL's native logical replication (CREATE SUBSCRIPTION, its slot
//! created before the workload so the same changes are pending) takes to
//! catch up the same changes. Both destinations are checked equal to the
//! source afterwards.
//!
//! `snapshot`: four tables holding `--gib` GiB of heap in total are staged by
//! strata-reader's initial snapshot; the reference is the read limit of the
//! same tables, `COPY … TO STDOUT` into nothing, with as many COPY streams
//! in parallel as the snapshot has workers, run before and after it (the
//! faster counts). Both rates are rows/s and MB/s of COPY text.
//!
//! `capture`: a backlog of changes is left in two logical replication
//! slots of the same publication; strata-reader (its own process) stages it
//! from one, and `pg_recvlogical` drains the other into /dev/null. Both
//! pay the server's decoding and the transfer; strata also parses every
//! value, encodes Parquet and commits batches to a local-disk stage, while
//! pg_recvlogical writes the raw stream nowhere.
//!
//! `load`: one table of `--changes` rows is loaded into an empty Postgres
//! destination by strata (reader snapshot into the stage and writer into
//! the destination, each its own process, running together) and by
//! native logical replication's initial table copy (`CREATE SUBSCRIPTION`
//! with `copy_data`); both destinations are checked equal to the source.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_common::Timestamp;
use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, config_text, wait_for_slot};
use strata_tests::writer::{checksum, spec, wait_caught_up};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: strata-bench catchup [--changes N] [--record FILE] | snapshot [--gib N] [--workers N] [--record FILE] | sqs [--changes N] [--record FILE] \
     | capture [--changes N] [--record FILE] | load [--changes N] [--record FILE]";

#[derive(PartialEq)]
enum Bench {
    Catchup,
    Snapshot,
    Sqs,
    Capture,
    Load,
}

struct Args {
    bench: Bench,
    changes: u64,
    gib: f64,
    workers: usize,
    record: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let bench = match it.next().as_deref() {
        Some("catchup") => Bench::Catchup,
        Some("snapshot") => Bench::Snapshot,
        Some("sqs") => Bench::Sqs,
        Some("capture") => Bench::Capture,
        Some("load") => Bench::Load,
        _ => bail!(USAGE),
    };
    let changes = match bench {
        Bench::Sqs => 20_000,
        Bench::Load => 2_000_000,
        _ => 1_000_000,
    };
    let mut a = Args { bench, changes, gib: 5.0, workers: 4, record: None };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value; {USAGE}"));
        match flag.as_str() {
            "--changes" => a.changes = value()?.parse().context("--changes N")?,
            "--gib" => a.gib = value()?.parse().context("--gib N")?,
            "--workers" => a.workers = value()?.parse().context("--workers N")?,
            "--record" => a.record = Some(value()?.into()),
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if a.changes < 2 {
        bail!("--changes must be at least 2");
    }
    if a.gib.is_nan() || a.gib <= 0.0 || a.workers == 0 {
        bail!("--gib and --workers must be positive");
    }
    Ok(a)
}

/// Prints `line` and, with `--record`, adds it to the file after the last
/// row of the same benchmark (`| … | {what} | …`), or at the end.
fn record(path: Option<&PathBuf>, what: &str, line: &str) -> Result<()> {
    println!("{line}");
    let Some(path) = path else { return Ok(()) };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().collect();
    let marker = format!("| {what} |");
    let at = lines.iter().rposition(|l| l.contains(&marker)).map_or(lines.len(), |i| i + 1);
    lines.insert(at, line);
    std::fs::write(path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))
}

fn today() -> String {
    Timestamp::now().to_string().get(..10).unwrap_or("").to_owned()
}

/// Reads every table with parallel `COPY … TO STDOUT`, discarding the data;
/// returns (seconds, bytes).
async fn copy_to_nothing(url: &str, tables: &[String], streams: usize) -> Result<(f64, u64)> {
    use futures::StreamExt;
    let queue = std::sync::Arc::new(std::sync::Mutex::new(tables.to_vec()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (queue, url) = (queue.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await?;
            let mut bytes = 0u64;
            loop {
                let Some(table) = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop() else { return Ok::<u64, anyhow::Error>(bytes) };
                let out = c.copy_out(&format!("COPY {table} TO STDOUT")).await?;
                futures::pin_mut!(out);
                while let Some(chunk) = out.next().await {
                    bytes += chunk?.len() as u64;
                }
            }
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    Ok((t0.elapsed().as_secs_f64(), bytes))
}

/// `snapshot`: strata's initial snapshot against the COPY read limit.
async fn snapshot_bench(args: &Args) -> Result<()> {
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    let tables: Vec<String> = (0..4).map(|i| format!("snap_{i}")).collect();
    let target = (args.gib * 1024.0 * 1024.0 * 1024.0) as i64;
    for t in &tables {
        src.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, k int, a text, b text, amount numeric(12,2), ts timestamptz, flag bool)")).await?;
    }
    let (rows, heap) = fill_tables(&src, &src_url, &tables, target).await?;
    eprintln!("{rows} rows, {:.2} GiB heap", heap as f64 / 1073741824.0);

    let (before_secs, copy_bytes) = copy_to_nothing(&src_url, &tables, args.workers).await?;
    eprintln!("reference COPY TO STDOUT: {before_secs:.1} s");

    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let extra = format!("[snapshot]\nworkers = {}\n", args.workers);
    let cfg = Config::from_toml("bench", &config_text(&src_url, &stage_dir, &extra), &[])?;
    let stage = Stage::local(&stage_dir)?;
    let log = StreamLog::new(&stage, "main")?;
    let t0 = Instant::now();
    let reader = RunningReader::start(cfg);
    loop {
        let state = stage.get_json::<strata_reader::snapshot::SnapshotState>(&log.keys().snapshot()).await?;
        if state.is_some_and(|s| s.value.phase == strata_reader::snapshot::Phase::Done) {
            break;
        }
        if reader.is_finished() {
            bail!("the reader stopped during the snapshot");
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("the snapshot did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let strata_secs = t0.elapsed().as_secs_f64();
    reader.stop().await?;
    let staged = staged_rows(&stage).await?;
    if staged != rows as u64 {
        bail!("the snapshot staged {staged} rows, the tables hold {rows}");
    }
    let stage_bytes: u64 = {
        let mut total = 0;
        for seq in 1..=log.head(None).await?.unwrap_or(0) {
            total += log.read(seq).await?.counts.bytes;
        }
        total
    };
    let (after_secs, _) = copy_to_nothing(&src_url, &tables, args.workers).await?;
    eprintln!("strata snapshot: {strata_secs:.1} s; reference again: {after_secs:.1} s");
    let reference_secs = before_secs.min(after_secs);
    let mb = copy_bytes as f64 / 1e6;
    let line = format!(
        "| {} | snapshot into the stage | {rows} rows, {:.2} GiB heap, {mb:.0} MB COPY text, {} workers | strata {strata_secs:.1} s ({:.0} rows/s, {:.0} MB/s; staged {:.0} MB Parquet) | COPY TO STDOUT ×{} {reference_secs:.1} s ({:.0} rows/s, {:.0} MB/s) | **{:.2}×** |",
        today(),
        heap as f64 / 1073741824.0,
        args.workers,
        rows as f64 / strata_secs,
        mb / strata_secs,
        stage_bytes as f64 / 1e6,
        args.workers,
        rows as f64 / reference_secs,
        mb / reference_secs,
        reference_secs / strata_secs
    );
    record(args.record.as_ref(), "snapshot into the stage", &line)
}

async fn staged_rows(stage: &Stage) -> Result<u64> {
    let log = StreamLog::new(stage, "main")?;
    let mut rows = 0;
    for seq in 1..=log.head(None).await?.unwrap_or(0) {
        rows += log.read(seq).await?.counts.rows;
    }
    Ok(rows)
}

/// The hidden `sqs-writer CONFIG` mode: strata-writer's service, run by
/// `sqs` as a child process so that its AWS settings come from its own
/// environment, as in production.
async fn sqs_writer(config: &std::path::Path) -> Result<()> {
    let cfg = Config::load(Some(config))?;
    strata_writer::run::run(&cfg, strata_common::service::shutdown_on_signals()).await
}

/// `sqs`: strata-writer into SQS against one `SendMessage` per change.
async fn sqs_bench(args: &Args) -> Result<()> {
    use strata_tests::emulator::Emulator;
    use strata_tests::sqs::{Sqs, writer_env};
    use strata_writer::destinations::sqs::config::SqsSpec;
    use strata_writer::spec::DestinationKind;

    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    src.batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status text, amount numeric(10,2), at timestamptz)").await?;
    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let cfg = Config::from_toml("bench", &config_text(&src_url, &stage_dir, ""), &[])?;
    let reader = RunningReader::start(cfg);
    wait_for_slot(&src, "strata_main").await?;
    let inserts = args.changes - args.changes / 4;
    eprintln!("workload: {inserts} inserts, then {} updates, in 1,000-row transactions", args.changes - inserts);
    let mut lo = 1;
    while lo <= inserts {
        let hi = (lo + 999).min(inserts);
        src.batch_execute(&format!("INSERT INTO orders SELECT g, g % 5000, 'new', (g % 100000) / 100.0, now() FROM generate_series({lo}, {hi}) g")).await?;
        lo = hi + 1;
    }
    let mut lo = 1;
    while lo <= args.changes - inserts {
        let hi = (lo + 999).min(args.changes - inserts);
        src.batch_execute(&format!("UPDATE orders SET status = 'paid' WHERE id BETWEEN {lo} AND {hi}")).await?;
        lo = hi + 1;
    }
    let stage = Stage::local(&stage_dir)?;
    wait_staged_rows(&stage, args.changes, Duration::from_secs(600)).await?;
    reader.stop().await?;
    let staged = strata_tests::reader::staged_changes(&stage, "main").await?;
    let batches = StreamLog::new(&stage, "main")?.head(None).await?.unwrap_or(0);
    eprintln!("staged {} changes in {batches} batches", staged.len());

    let emulator = Emulator::start().await?;
    let sqs = Sqs::new(&emulator).await;
    let strata_queue = sqs.create_queue("bench-strata", None).await?;
    let baseline_queue = sqs.create_queue("bench-baseline", None).await?;

    // strata: the writer service delivering the backlog.
    let mut q = SqsSpec::new(strata_queue.clone());
    q.region = Some("us-east-1".to_owned());
    q.endpoint = Some(emulator.endpoint());
    strata_writer::control::add(&stage, &strata_tests::writer::spec_of("bench", StartPosition::Earliest, DestinationKind::Sqs(q.clone()))).await?;
    let config_path = dir.path().join("writer.toml");
    std::fs::write(&config_path, config_text(&src_url, &stage_dir, ""))?;
    let t0 = Instant::now();
    let mut writer = std::process::Command::new(std::env::current_exe()?)
        .arg("sqs-writer")
        .arg(&config_path)
        .envs(writer_env(&emulator))
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting the writer")?;
    wait_caught_up(&stage, "bench").await;
    let strata_secs = t0.elapsed().as_secs_f64();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(writer.id().to_string()).status();
    writer.wait()?;

    // Baseline: the same envelopes, one SendMessage each, one at a time.
    let bodies = envelopes(&stage, &staged, batches).await?;
    let t0 = Instant::now();
    for body in bodies {
        sqs.client.send_message().queue_url(&baseline_queue).message_body(body).send().await.context("baseline SendMessage")?;
    }
    let baseline_secs = t0.elapsed().as_secs_f64();

    let strata_stats = sqs.stats("bench-strata").await?;
    let baseline_stats = sqs.stats("bench-baseline").await?;
    let n = staged.len() as u64;
    if strata_stats["entries"] < n || baseline_stats["single_sends"] != n {
        bail!("not every change reached its queue: strata {strata_stats:?}, baseline {baseline_stats:?} of {n}");
    }
    for url in [&strata_queue, &baseline_queue] {
        let held = queue_length(&sqs, url).await?;
        if held < n {
            bail!("queue {url} holds {held} messages of {n}");
        }
    }
    let strata_rate = n as f64 / strata_secs;
    let baseline_rate = n as f64 / baseline_secs;
    let line = format!(
        "| {} | SQS delivery | {n} changes, {batches} batches, standard queue, emulator | strata {strata_secs:.1} s ({strata_rate:.0}/s; {} SendMessageBatch calls, batch {} × {} in flight) | one SendMessage per change {baseline_secs:.1} s ({baseline_rate:.0}/s) | **{:.2}×** |",
        today(),
        strata_stats["calls"],
        q.batch_size,
        q.in_flight,
        strata_rate / baseline_rate
    );
    record(args.record.as_ref(), "SQS delivery", &line)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("sqs-writer") {
        let config = raw.next().context("sqs-writer CONFIG")?;
        return sqs_writer(std::path::Path::new(&config)).await;
    }
    let args = args()?;
    match args.bench {
        Bench::Snapshot => snapshot_bench(&args).await,
        Bench::Sqs => sqs_bench(&args).await,
        Bench::Catchup => catchup_bench(&args).await,
        Bench::Capture => capture_bench(&args).await,
        Bench::Load => load_bench(&args).await,
    }
}

/// `catchup`: strata-writer delivering a staged backlog into Postgres
/// against native logical replication catching up the same changes.
async fn catchup_bench(args: &Args) -> Result<()> {
    let rows = args.changes / 2;
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let strata_url = cluster.fresh_database().await?;
    let native_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    let ddl = "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz)";
    src.batch_execute(ddl).await?;
    src.batch_execute("CREATE PUBLICATION native_pub FOR TABLE bench").await?;
    // Its own statement: a slot cannot be created in a transaction that wrote.
    src.batch_execute("SELECT pg_create_logical_replication_slot('native_sub', 'pgoutput')").await?;
    let native = connect(&native_url).await?;
    native.batch_execute(ddl).await?;
    let src_db = src_url.rsplit('/').next().context("database name")?;
    native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port={} dbname={src_db} user={}' PUBLICATION native_pub \
             WITH (create_slot = false, slot_name = 'native_sub', copy_data = false, enabled = false)",
            cluster.port,
            strata_tests::pg::SUPERUSER
        ))
        .await?;

    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let cfg = Config::from_toml("bench", &config_text(&src_url, &stage_dir, ""), &[])?;
    let reader = RunningReader::start(cfg.clone());
    wait_for_slot(&src, "strata_main").await?;
    catchup_workload(&src, rows).await?;
    let stage = Stage::local(&stage_dir)?;
    wait_staged_rows(&stage, 2 * rows, Duration::from_secs(1800)).await?;
    reader.stop().await?;
    let batches = StreamLog::new(&stage, "main")?.head(None).await?.unwrap_or(0);
    eprintln!("staged {} changes in {batches} batches", 2 * rows);

    // strata: stage → Postgres destination.
    let token = CancellationToken::new();
    let t = token.clone();
    let writer_cfg = cfg.clone();
    strata_writer::control::add(&stage, &spec("bench", &strata_url, StartPosition::Earliest, PostgresMode::Mirror)).await?;
    let t0 = Instant::now();
    let writer = tokio::spawn(async move { strata_writer::run::run(&writer_cfg, t).await });
    wait_caught_up(&stage, "bench").await;
    let strata_secs = t0.elapsed().as_secs_f64();
    token.cancel();
    writer.await??;

    // Native logical replication catching up the same changes from its slot.
    let native_secs = native_catch_up(&src, &native).await?;

    check_equal(&src, &strata_url, &native).await?;
    let changes = 2 * rows;
    let strata_rate = changes as f64 / strata_secs;
    let native_rate = changes as f64 / native_secs;
    let line = format!(
        "| {} | catch-up into Postgres | {changes} changes, {batches} batches | strata {strata_secs:.1} s ({strata_rate:.0}/s) | native CREATE SUBSCRIPTION {native_secs:.1} s ({native_rate:.0}/s) | **{:.2}×** |",
        today(),
        strata_rate / native_rate
    );
    drop(native);
    record(args.record.as_ref(), "catch-up into Postgres", &line)
}

/// `rows` inserts, then an update of each, in 10,000-row transactions.
async fn catchup_workload(src: &tokio_postgres::Client, rows: u64) -> Result<()> {
    eprintln!("workload: {rows} inserts then {rows} updates, in 10,000-row transactions");
    let chunk = 10_000u64;
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + chunk - 1).min(rows);
        src.batch_execute(&format!("INSERT INTO bench SELECT g, g % 1000, md5(g::text), now() FROM generate_series({lo}, {hi}) g")).await?;
        lo = hi + 1;
    }
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + chunk - 1).min(rows);
        src.batch_execute(&format!("UPDATE bench SET a = a + 1, b = b || 'x' WHERE id BETWEEN {lo} AND {hi}")).await?;
        lo = hi + 1;
    }
    Ok(())
}

/// Enables the native subscription and times it catching up to the
/// source's current WAL position; seconds.
async fn native_catch_up(src: &tokio_postgres::Client, native: &tokio_postgres::Client) -> Result<f64> {
    let target: String = src.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    let t0 = Instant::now();
    native.batch_execute("ALTER SUBSCRIPTION native ENABLE").await?;
    loop {
        let done: bool =
            src.query_one("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'native_sub'", &[&target]).await?.get(0);
        if done {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("native replication did not catch up within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    native.batch_execute("ALTER SUBSCRIPTION native DISABLE").await?;
    Ok(secs)
}

/// Fills `tables` side by side until their heap reaches `target` bytes;
/// returns their rows and heap bytes.
async fn fill_tables(src: &tokio_postgres::Client, src_url: &str, tables: &[String], target: i64) -> Result<(i64, i64)> {
    eprintln!("generating {:.1} GiB of rows in {} tables", target as f64 / 1073741824.0, tables.len());
    let chunk = 500_000i64;
    let mut next = 1i64;
    loop {
        let size: i64 =
            src.query_one(&format!("SELECT {} ", tables.iter().map(|t| format!("pg_relation_size('{t}')")).collect::<Vec<_>>().join(" + ")), &[]).await?.get(0);
        if size >= target {
            break;
        }
        // Fill the tables side by side, one statement per table in parallel.
        let mut fills = Vec::new();
        for t in tables {
            let (url, t) = (src_url.to_owned(), t.clone());
            let (lo, hi) = (next, next + chunk - 1);
            fills.push(tokio::spawn(async move {
                let c = connect(&url).await?;
                c.batch_execute(&format!(
                    "INSERT INTO {t} SELECT g, g % 100000, md5(g::text), md5(g::text) || md5((g * 7)::text), (g % 1000000) / 100.0, \
                     timestamptz '2026-01-01' + g * interval '1 second', g % 3 = 0 FROM generate_series({lo}, {hi}) g"
                ))
                .await?;
                Ok::<(), anyhow::Error>(())
            }));
        }
        for f in fills {
            f.await??;
        }
        next += chunk;
        eprint!("\r{:.2} GiB", size as f64 / 1073741824.0);
    }
    eprintln!();
    src.batch_execute(&format!("VACUUM ANALYZE {}", tables.join(", "))).await?;
    let (rows, heap): (i64, i64) = {
        let r = src
            .query_one(
                &format!(
                    "SELECT ({}), ({})",
                    tables.iter().map(|t| format!("(SELECT count(*) FROM {t})")).collect::<Vec<_>>().join(" + "),
                    tables.iter().map(|t| format!("pg_relation_size('{t}')")).collect::<Vec<_>>().join(" + ")
                ),
                &[],
            )
            .await?;
        (r.get(0), r.get(1))
    };
    Ok((rows, heap))
}

/// Waits until the stage holds `rows` staged rows.
async fn wait_staged_rows(stage: &Stage, rows: u64, within: Duration) -> Result<()> {
    let started = Instant::now();
    while staged_rows(stage).await? < rows {
        if started.elapsed() > within {
            bail!("the reader did not stage the workload within {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The change envelope of every staged change, as the SQS destination sends it.
async fn envelopes(stage: &Stage, staged: &[(u64, u32, strata_common::Change)], batches: u64) -> Result<Vec<String>> {
    let mut schemas = std::collections::HashMap::new();
    let log = StreamLog::new(stage, "main")?;
    let mut staged_at = std::collections::HashMap::new();
    for seq in 1..=batches {
        staged_at.insert(seq, log.read(seq).await?.created_at);
    }
    let mut bodies = Vec::with_capacity(staged.len());
    for (seq, version, change) in staged {
        let schema = match schemas.get(&(change.table.clone(), *version)) {
            Some(s) => std::sync::Arc::clone(s),
            None => {
                let s = std::sync::Arc::new(log.read_schema(&change.table, *version).await?);
                schemas.insert((change.table.clone(), *version), s.clone());
                s
            }
        };
        let at = *staged_at.get(seq).context("a staged change of a batch past the head")?;
        bodies.push(strata_writer::envelope::envelope("main", &schema, change, at).to_string());
    }
    Ok(bodies)
}

/// Messages a queue holds (approximately, as SQS counts).
async fn queue_length(sqs: &strata_tests::sqs::Sqs, url: &str) -> Result<u64> {
    let attrs =
        sqs.client.get_queue_attributes().queue_url(url).attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages).send().await?;
    Ok(attrs.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// `capture`: strata-reader staging a WAL backlog against `pg_recvlogical`
/// draining the same backlog from a slot of its own.
async fn capture_bench(args: &Args) -> Result<()> {
    let rows = args.changes / 2;
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let src = connect(&src_url).await?;
    src.batch_execute("CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz)").await?;
    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let config = strata_tests::reader::write_config(dir.path(), &src_url, &stage_dir, "")?;
    let exe = std::env::current_exe()?.with_file_name("strata-reader-under-test");
    // The reader creates its publication and slot, then stops: the backlog
    // waits in its slot, and in pg_recvlogical's, created at the same point.
    let reader = strata_tests::reader::ServiceProcess::spawn(&exe, &config)?;
    wait_for_slot(&src, "strata_main").await?;
    reader.terminate()?;
    src.batch_execute("SELECT pg_create_logical_replication_slot('recv', 'pgoutput')").await?;
    catchup_workload(&src, rows).await?;
    let target: String = src.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    let changes = 2 * rows;

    let stage = Stage::local(&stage_dir)?;
    let t0 = Instant::now();
    let reader = strata_tests::reader::ServiceProcess::spawn(&exe, &config)?;
    wait_staged_rows(&stage, changes, Duration::from_secs(1800)).await?;
    let strata_secs = t0.elapsed().as_secs_f64();
    let reader_rss_mib = reader.peak_rss_kib()? / 1024;
    reader.terminate()?;
    let staged = strata_tests::reader::staged_changes(&stage, "main").await?.len() as u64;
    if staged != changes {
        bail!("the reader staged {staged} changes of {changes}");
    }

    let recv_secs = recvlogical(&cluster, &src_url, &target).await?;
    let confirmed: bool =
        src.query_one("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'recv'", &[&target]).await?.get(0);
    if !confirmed {
        bail!("pg_recvlogical stopped before {target}");
    }
    let (strata_rate, recv_rate) = (changes as f64 / strata_secs, changes as f64 / recv_secs);
    let line = format!(
        "| {} | capture | {changes} changes (inserts then updates, 10,000-row transactions) | strata-reader {strata_secs:.1} s ({strata_rate:.0}/s; peak RSS {reader_rss_mib} MiB) | pg_recvlogical to /dev/null {recv_secs:.1} s ({recv_rate:.0}/s) | **{:.2}×** |",
        today(),
        strata_rate / recv_rate
    );
    record(args.record.as_ref(), "capture", &line)
}

/// Runs `pg_recvlogical` on slot `recv` until `target`, output to
/// /dev/null; seconds.
async fn recvlogical(cluster: &PgCluster, src_url: &str, target: &str) -> Result<f64> {
    let db = src_url.rsplit('/').next().context("database name")?;
    let conninfo = format!("host=127.0.0.1 port={} dbname={db} user={}", cluster.port, strata_tests::pg::SUPERUSER);
    let t0 = Instant::now();
    let status = tokio::process::Command::new(cluster.program("pg_recvlogical"))
        .args(["--dbname", &conninfo, "--slot", "recv", "--start", "--no-loop", "--file", "/dev/null", "--endpos", target])
        .args(["--option", "proto_version=1", "--option", "publication_names=strata_main"])
        .status()
        .await
        .context("running pg_recvlogical")?;
    if !status.success() {
        bail!("pg_recvlogical exited with {status}");
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// `load`: strata's snapshot and writer against native logical
/// replication's initial copy, into empty Postgres tables.
async fn load_bench(args: &Args) -> Result<()> {
    let rows = args.changes;
    let cluster = PgCluster::start()?;
    let src_url = cluster.fresh_database().await?;
    let (strata_url, native_url) = (cluster.fresh_database().await?, cluster.fresh_database().await?);
    let src = connect(&src_url).await?;
    let ddl = "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz)";
    src.batch_execute(ddl).await?;
    eprintln!("loading {rows} rows");
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + 999_999).min(rows);
        src.batch_execute(&format!("INSERT INTO bench SELECT g, g % 1000, md5(g::text), now() FROM generate_series({lo}, {hi}) g")).await?;
        lo = hi + 1;
    }
    src.batch_execute("VACUUM ANALYZE bench").await?;

    // strata: reader and writer processes started together.
    let dir = tempfile::tempdir()?;
    let stage_dir = dir.path().join("stage");
    let config = strata_tests::reader::write_config(dir.path(), &src_url, &stage_dir, "")?;
    let stage = Stage::local(&stage_dir)?;
    strata_writer::control::add(&stage, &spec("load", &strata_url, StartPosition::Earliest, PostgresMode::Mirror)).await?;
    let bin = std::env::current_exe()?;
    let t0 = Instant::now();
    let reader = strata_tests::reader::ServiceProcess::spawn(&bin.with_file_name("strata-reader-under-test"), &config)?;
    let writer = strata_tests::reader::ServiceProcess::spawn(&bin.with_file_name("strata-writer-under-test"), &config)?;
    wait_loaded(&stage, "load", Duration::from_secs(3600)).await?;
    let strata_secs = t0.elapsed().as_secs_f64();
    let (reader_mib, writer_mib) = (reader.peak_rss_kib()? / 1024, writer.peak_rss_kib()? / 1024);
    writer.terminate()?;
    reader.terminate()?;

    // Native: the initial table copy of a new subscription.
    let native = connect(&native_url).await?;
    native.batch_execute(ddl).await?;
    src.batch_execute("CREATE PUBLICATION native_pub FOR TABLE bench").await?;
    let src_db = src_url.rsplit('/').next().context("database name")?;
    let t0 = Instant::now();
    // Source and subscriber share a cluster: the subscription's slot is
    // made beforehand, or CREATE SUBSCRIPTION waits for itself.
    src.batch_execute("SELECT pg_create_logical_replication_slot('native_load', 'pgoutput')").await?;
    native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port={} dbname={src_db} user={}' PUBLICATION native_pub \
             WITH (copy_data = true, create_slot = false, slot_name = 'native_load')",
            cluster.port,
            strata_tests::pg::SUPERUSER
        ))
        .await?;
    loop {
        let ready: Option<bool> = native.query_one("SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel", &[]).await?.get(0);
        if ready == Some(true) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("the native initial copy did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let native_secs = t0.elapsed().as_secs_f64();

    check_equal(&src, &strata_url, &native).await?;
    native.batch_execute("ALTER SUBSCRIPTION native DISABLE").await?;
    let (strata_rate, native_rate) = (rows as f64 / strata_secs, rows as f64 / native_secs);
    let line = format!(
        "| {} | initial load into Postgres | {rows} rows, one table | strata snapshot + writer {strata_secs:.1} s ({strata_rate:.0} rows/s; peak RSS reader {reader_mib} MiB, writer {writer_mib} MiB) | native initial copy {native_secs:.1} s ({native_rate:.0} rows/s) | **{:.2}×** |",
        today(),
        strata_rate / native_rate
    );
    record(args.record.as_ref(), "initial load into Postgres", &line)
}

/// Waits until the snapshot is done and `destination` has every staged batch.
async fn wait_loaded(stage: &Stage, destination: &str, within: Duration) -> Result<()> {
    let log = StreamLog::new(stage, "main")?;
    let cursors = strata_stager::cursor::Cursors::new(stage, destination)?;
    let started = Instant::now();
    loop {
        let done = stage
            .get_json::<strata_stager::control::SnapshotState>(&log.keys().snapshot())
            .await?
            .is_some_and(|s| s.value.phase == strata_stager::control::Phase::Done);
        let head = log.head(None).await?.unwrap_or(0);
        let cursor = cursors.load().await?.map_or(0, |c| c.value.seq);
        if done && head > 0 && cursor >= head {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("the destination was not loaded within {} s (snapshot done: {done}, cursor {cursor} of {head})", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails unless `public.bench` of strata's destination and of native's
/// equals the source's, by full-row checksum.
async fn check_equal(src: &tokio_postgres::Client, strata_url: &str, native: &tokio_postgres::Client) -> Result<()> {
    let want = checksum(src, "public.bench").await;
    let got_strata = checksum(&connect(strata_url).await?, "public.bench").await;
    let got_native = checksum(native, "public.bench").await;
    if got_strata != want || got_native != want {
        bail!("destinations differ from the source: strata {got_strata:?}, native {got_native:?}, source {want:?}");
    }
    Ok(())
}
