//! Query pulls (`[[pull]]`) against a real PostgreSQL: a table updated and
//! inserted into while scheduled pulls run ends equal at a Postgres mirror
//! fed from the pull's stream; a reader killed with SIGKILL during pulls
//! loses and stages twice nothing.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_common::{Op, Value};
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::pg::PgCluster;
use strata_tests::reader::{RunningReader, ServiceProcess, staged_changes};
use strata_tests::workload::Rng;
use strata_tests::writer::{checksum, session, spec};
use strata_writer::spec::{PostgresMode, StartPosition};
use tokio_util::sync::CancellationToken;

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");
const STREAM: &str = "orders_pull";

/// A reader config with only a pull of `public.orders` (no `[source]`: no
/// slot, no publication).
fn pull_config(src_url: &str, stage_dir: &Path, page_rows: u64, schedule: &str) -> String {
    format!(
        "[telemetry]\nlisten = \"127.0.0.1:0\"\n[stage]\nurl = {:?}\n\
         [[pull]]\nname = {STREAM:?}\nurl = {src_url:?}\ntable = \"public.orders\"\nkey = [\"id\"]\nwatermark = \"updated_at\"\n\
         page_rows = {page_rows}\nschedule = {schedule:?}\n",
        stage_dir.display().to_string()
    )
}

/// `orders` with 1 500 rows sharing one `updated_at` (a single statement's
/// `now()`), so pages of a few hundred rows end inside a run of ties.
const ORDERS: &str = "CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(), v text, amount numeric(10,2));
    INSERT INTO orders SELECT g, now(), 'v' || g, g / 7.0 FROM generate_series(1, 1500) g;";

/// Updates and inserts from one session, each statement stamping
/// `clock_timestamp()`, until `stop`.
async fn workload(url: String, stop: Arc<AtomicBool>, seed: u64) -> i32 {
    let c = session(&url).await;
    let mut rng = Rng(seed);
    let mut next = 1501;
    while !stop.load(Ordering::Relaxed) {
        let id = 1 + rng.below(u64::try_from(next - 1).unwrap()) as i32;
        let sql = match rng.below(3) {
            0 => {
                next += 1;
                format!("INSERT INTO orders (id, v, amount) VALUES ({}, 'new', 1.5)", next - 1)
            }
            1 => format!("UPDATE orders SET v = 'u' || md5(random()::text), updated_at = clock_timestamp() WHERE id = {id}"),
            _ => format!("UPDATE orders SET amount = amount + 1, updated_at = clock_timestamp() WHERE id BETWEEN {id} AND {}", id + 20),
        };
        c.batch_execute(&sql).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    next - 1
}

/// Waits until the pull's stream has staged the source's last row in
/// `(updated_at, id)` order: with one writing session and no look-back,
/// everything before it is staged too.
async fn wait_pulled(stage: &Stage, src_url: &str) {
    let src = session(src_url).await;
    let row = src.query_one("SELECT updated_at::text, id::text FROM orders ORDER BY updated_at DESC, id DESC LIMIT 1", &[]).await.unwrap();
    let (wm, id): (String, String) = (row.get(0), row.get(1));
    let log = StreamLog::new(stage, STREAM).unwrap();
    for _ in 0..600 {
        if let Some(head) = log.head(None).await.unwrap() {
            let w = log.read(head).await.unwrap().watermark.unwrap();
            if w.to == wm && w.last_key == [id.clone()] {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the pull did not stage ({wm}, {id}) within 60 s");
}

/// Delivers the pull's stream to a fresh mirror and asserts `orders` there
/// equals the source.
async fn assert_mirror_equals_source(stage: &Stage, stage_dir: &Path, src_url: &str) {
    let dst_url = PgCluster::shared().fresh_database().await.unwrap();
    let text = format!("[telemetry]\nlisten = \"127.0.0.1:0\"\n[stage]\nurl = {:?}\n", stage_dir.display().to_string());
    let cfg = Config::from_toml("writer config", &text, &[]).unwrap();
    let token = CancellationToken::new();
    let t = token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&cfg, t).await });
    let mut mirror = spec("mirror", &dst_url, StartPosition::Earliest, PostgresMode::Mirror);
    mirror.stream = STREAM.to_owned();
    strata_writer::control::add(stage, &mirror).await.unwrap();
    let log = StreamLog::new(stage, STREAM).unwrap();
    let cursors = strata_stager::cursor::Cursors::new(stage, "mirror").unwrap();
    let head = log.head(None).await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while cursors.load().await.unwrap().map_or(0, |c| c.value.seq) < head {
        assert!(Instant::now() < deadline, "the mirror did not reach batch {head} within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (src, dst) = (session(src_url).await, session(&dst_url).await);
    let expected = checksum(&src, "public.orders").await;
    assert!(expected.0 >= 1500, "rows to compare: {}", expected.0);
    assert_eq!(checksum(&dst, "public.orders").await, expected, "the mirror fed by the pull equals the source");
    token.cancel();
    writer.await.unwrap().unwrap();
}

/// Every staged `(id, updated_at)` version of a row, counted: a version
/// staged twice is a duplicate (there is no look-back here).
async fn assert_each_version_staged_once(stage: &Stage) -> usize {
    let changes = staged_changes(stage, STREAM).await.unwrap();
    let mut versions: HashMap<(i32, i64), u32> = HashMap::new();
    for (seq, _, c) in &changes {
        assert_eq!(c.lsn.0, *seq, "a pulled row's _strata_lsn is its batch's seq");
        assert!(matches!(c.op, Op::Insert | Op::Update), "{:?}", c.op);
        let row = c.after.as_ref().unwrap();
        let (Value::Int32(id), Value::TimestampTz(wm)) = (&row[0], &row[1]) else { panic!("unexpected row {row:?}") };
        *versions.entry((*id, *wm)).or_default() += 1;
    }
    let twice: Vec<_> = versions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "row versions staged twice: {twice:?}");
    let report = strata_stager::verify::verify_stream(&StreamLog::new(stage, STREAM).unwrap()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    changes.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_pulls_keep_a_mirror_equal_to_a_changing_table() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    session(&src_url).await.batch_execute(ORDERS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = pull_config(&src_url, dir.path(), 250, "every 1s");
    let reader = RunningReader::start(Config::from_toml("reader config", &text, &[]).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload(src_url.clone(), stop.clone(), 7));
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let last_id = load.await.unwrap();
    assert!(last_id > 1500, "the workload inserted rows");
    let stage = Stage::local(dir.path()).unwrap();
    wait_pulled(&stage, &src_url).await;
    let staged = assert_each_version_staged_once(&stage).await;
    let first: Vec<_> = staged_changes(&stage, STREAM).await.unwrap().into_iter().take_while(|(seq, _, _)| *seq <= 6).collect();
    assert!(first.iter().all(|(_, _, c)| c.op == Op::Insert), "the first round stages inserts");
    assert!(staged > 1500, "{staged} rows staged");
    reader.stop().await.unwrap();
    assert_mirror_equals_source(&stage, dir.path(), &src_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_pulls_ten_times_loses_and_stages_twice_nothing() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    session(&src_url).await.batch_execute(ORDERS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("strata.toml");
    let stage_dir = dir.path().join("stage");
    std::fs::write(&cfg, pull_config(&src_url, &stage_dir, 100, "continuous")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload(src_url.clone(), stop.clone(), 11));
    let mut rng = Rng(0x9011);
    for _ in 0..10 {
        let reader = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        reader.kill9().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let mut reader = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    wait_pulled(&stage, &src_url).await;
    assert!(reader.try_wait().unwrap().is_none(), "the reader still runs");
    reader.terminate().unwrap();
    assert_each_version_staged_once(&stage).await;
    assert_mirror_equals_source(&stage, &stage_dir, &src_url).await;
}
