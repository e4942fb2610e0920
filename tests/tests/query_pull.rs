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
    wait_pulled_from(stage, src_url, "orders").await;
}

/// [`wait_pulled`] of a pull of `relation`.
async fn wait_pulled_from(stage: &Stage, src_url: &str, relation: &str) {
    let src = session(src_url).await;
    let sql = format!("SELECT t.updated_at::text AS w, t.id::text AS k FROM {relation} t ORDER BY t.updated_at DESC, t.id DESC LIMIT 1");
    let row = src.query_one(&sql, &[]).await.unwrap();
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
    let (_, dst) = deliver_to_mirror(stage, stage_dir).await;
    let src = session(src_url).await;
    let expected = checksum(&src, "public.orders").await;
    assert!(expected.0 >= 1500, "rows to compare: {}", expected.0);
    assert_eq!(checksum(&dst, "public.orders").await, expected, "the mirror fed by the pull equals the source");
}

/// The status a pull publishes in its stream's `reader.json`, once it
/// shows `failed` (or after 30 s).
async fn pull_status(stage: &Stage, stream: &str) -> serde_json::Value {
    let leases = strata_stager::lease::Leases::new(stage, StreamLog::new(stage, stream).unwrap().keys().reader());
    let mut status = serde_json::Value::Null;
    for _ in 0..300 {
        status = leases.read().await.unwrap().map(|l| l.value.status).unwrap_or_default();
        if status["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

/// Delivers the pull's stream, up to its head, to a fresh mirror database;
/// returns its URL and a session on it.
async fn deliver_to_mirror(stage: &Stage, stage_dir: &Path) -> (String, tokio_postgres::Client) {
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
    token.cancel();
    writer.await.unwrap().unwrap();
    let dst = session(&dst_url).await;
    (dst_url, dst)
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

/// A login role with no REPLICATION, allowed only to SELECT from
/// `orders_eu` (a view over `orders`), pulls the view into a mirror; a
/// second pull of the same role on `orders` itself, which it may not read,
/// stops with a permission error without stopping the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_select_only_role_pulls_a_view() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let db = src_url.rsplit('/').next().unwrap().to_owned();
    let role = format!("strata_ro_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let admin = session(&src_url).await;
    admin.batch_execute(ORDERS).await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE VIEW orders_eu AS SELECT id, updated_at, upper(v) AS v, amount FROM orders WHERE id % 3 <> 0;
             CREATE ROLE {role} LOGIN; GRANT SELECT ON orders_eu TO {role};"
        ))
        .await
        .unwrap();
    let role_url = format!("postgres://{role}@127.0.0.1:{}/{db}", cluster.port);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[telemetry]\nlisten = \"127.0.0.1:0\"\n[stage]\nurl = {:?}\n\
         [[pull]]\nname = {STREAM:?}\nurl = {role_url:?}\ntable = \"public.orders_eu\"\nkey = [\"id\"]\nwatermark = \"updated_at\"\npage_rows = 400\n\
         [[pull]]\nname = \"denied\"\nurl = {role_url:?}\ntable = \"public.orders\"\nkey = [\"id\"]\nwatermark = \"updated_at\"\n",
        dir.path().display().to_string()
    );
    let reader = RunningReader::start(Config::from_toml("reader config", &text, &[]).unwrap());
    let stage = Stage::local(dir.path()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload(src_url.clone(), stop.clone(), 3));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    wait_pulled_from(&stage, &src_url, "orders_eu").await;
    assert!(!reader.is_finished(), "a pull that failed for good does not stop the reader");
    assert_eq!(StreamLog::new(&stage, "denied").unwrap().head(None).await.unwrap(), None, "the denied pull staged nothing");
    let status = pull_status(&stage, "denied").await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert_eq!(status["state"], "failed", "{status}");
    assert!(error.contains("\"denied\"") && error.contains("permission denied"), "the error names the stream and the reason: {error}");
    reader.stop().await.unwrap();
    let (dst_url, dst) = deliver_to_mirror(&stage, dir.path()).await;
    let expected = checksum(&session(&src_url).await, "public.orders_eu").await;
    assert!(expected.0 > 900, "rows to compare: {}", expected.0);
    assert_eq!(checksum(&dst, "public.orders_eu").await, expected, "the mirror of the view ({dst_url}) equals the view");
}

/// A physical hot standby (pg_basebackup of the primary, streaming
/// replication) cannot give a logical replication slot before PostgreSQL
/// 16; a pull reads it while the primary changes, and the mirror equals the
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_reads_a_hot_standby() {
    let primary = PgCluster::shared();
    let src_url = primary.fresh_database().await.unwrap();
    session(&src_url).await.batch_execute(ORDERS).await.unwrap();
    let standby = primary.start_standby().unwrap();
    let db = src_url.rsplit('/').next().unwrap();
    let standby_url = standby.url(db);
    let replica = session(&standby_url).await;
    let in_recovery: bool = replica.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().get(0);
    assert!(in_recovery, "the standby is a standby");
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(Config::from_toml("reader config", &pull_config(&standby_url, dir.path(), 300, "every 1s"), &[]).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload(src_url.clone(), stop.clone(), 5));
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let stage = Stage::local(dir.path()).unwrap();
    wait_pulled(&stage, &src_url).await;
    reader.stop().await.unwrap();
    assert_each_version_staged_once(&stage).await;
    assert_mirror_equals_source(&stage, dir.path(), &src_url).await;
}

/// A transaction that stamped `updated_at` early and commits after later
/// rows were staged is caught by `look_back`; rows read again unchanged
/// are not staged again, also by a restarted reader (its window is rebuilt
/// from the stage).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn look_back_catches_a_late_commit_and_a_restart_stages_nothing_twice() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute(ORDERS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = pull_config(&src_url, dir.path(), 300, "continuous") + "look_back = \"1h\"\n";
    let config = Config::from_toml("reader config", &text, &[]).unwrap();
    let reader = RunningReader::start(config.clone());
    let stage = Stage::local(dir.path()).unwrap();
    wait_pulled(&stage, &src_url).await;
    let late = session(&src_url).await;
    late.batch_execute("BEGIN; UPDATE orders SET v = 'late', updated_at = clock_timestamp() WHERE id = 7").await.unwrap();
    src.batch_execute("UPDATE orders SET v = 'after', updated_at = clock_timestamp() WHERE id = 8").await.unwrap();
    wait_pulled(&stage, &src_url).await;
    late.batch_execute("COMMIT").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let changes = staged_changes(&stage, STREAM).await.unwrap();
        if changes.iter().any(|(_, _, c)| c.after.as_ref().is_some_and(|r| r[0] == Value::Int32(7) && r[2] == Value::Text("late".to_owned()))) {
            break;
        }
        assert!(Instant::now() < deadline, "the late commit was not staged within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reader.stop().await.unwrap();
    let before = StreamLog::new(&stage, STREAM).unwrap().head(None).await.unwrap();
    let reader = RunningReader::start(config);
    tokio::time::sleep(Duration::from_secs(3)).await;
    reader.stop().await.unwrap();
    assert_eq!(StreamLog::new(&stage, STREAM).unwrap().head(None).await.unwrap(), before, "a restarted reader re-reads the window and stages none of it");
    assert_each_version_staged_once(&stage).await;
    assert_mirror_equals_source(&stage, dir.path(), &src_url).await;
}

/// A column added to the pulled table is a new schema version of the
/// pull's stream, as in CDC, and the mirror follows it. The same reader
/// runs the CDC stream of the database, which a pull failing for good
/// (a query with an unknown column) does not stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schema_change_is_a_new_version_and_a_failing_pull_leaves_cdc_running() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute(ORDERS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = strata_tests::reader::config_text(&src_url, dir.path(), "")
        + &format!(
            "[[pull]]\nname = {STREAM:?}\ntable = \"public.orders\"\nkey = [\"id\"]\nwatermark = \"updated_at\"\nschedule = \"every 1s\"\n\
             [[pull]]\nname = \"broken\"\nquery = \"SELECT id, updated_at, no_such_column FROM orders\"\nkey = [\"id\"]\nwatermark = \"updated_at\"\n"
        );
    let reader = RunningReader::start(Config::from_toml("reader config", &text, &[]).unwrap());
    let stage = Stage::local(dir.path()).unwrap();
    wait_pulled(&stage, &src_url).await;
    src.batch_execute("ALTER TABLE orders ADD COLUMN note text; UPDATE orders SET note = 'n' || id, updated_at = clock_timestamp() WHERE id <= 40")
        .await
        .unwrap();
    wait_pulled(&stage, &src_url).await;
    let log = StreamLog::new(&stage, STREAM).unwrap();
    let table = strata_common::TableName::parse("public.orders").unwrap();
    let latest = log.latest_schema(&table).await.unwrap().unwrap();
    assert_eq!(latest.version, 2, "the added column is a new version");
    assert_eq!(latest.columns.last().unwrap().name, "note");
    let status = pull_status(&stage, "broken").await;
    assert_eq!(status["state"], "failed", "{status}");
    assert!(status["last_error"].as_str().unwrap_or_default().contains("no_such_column"), "{status}");
    src.batch_execute("INSERT INTO orders (id, v) VALUES (5000, 'cdc')").await.unwrap();
    strata_tests::writer::wait_staged(&src).await;
    assert!(!reader.is_finished(), "the CDC stream runs on");
    wait_pulled(&stage, &src_url).await;
    reader.stop().await.unwrap();
    assert_mirror_equals_source(&stage, dir.path(), &src_url).await;
}

/// Runs `strata-reader ARGS --config cfg`; returns its exit success and
/// what it printed.
async fn reader_command(cfg: &Path, args: &[&str]) -> (bool, String) {
    let cfg = cfg.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(READER).args(&args).arg("--config").arg(&cfg).output().unwrap()).await.unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `strata-reader pull NAME`, waiting at most a minute.
async fn pull_command(cfg: &Path, name: &str) -> (bool, String) {
    reader_command(cfg, &["pull", name, "--timeout", "60s"]).await
}

/// A pull scheduled once a year runs only when asked: `strata-reader pull`
/// waits for the running reader to run a round and prints what it staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_runs_on_demand() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute(ORDERS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("strata.toml");
    std::fs::write(&cfg, pull_config(&src_url, &dir.path().join("stage"), 1000, "0 0 1 1 *")).unwrap();
    let reader = RunningReader::start(Config::load(Some(&cfg)).unwrap());
    let stage = Stage::local(&dir.path().join("stage")).unwrap();
    let log = StreamLog::new(&stage, STREAM).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(log.head(None).await.unwrap(), None, "no round before one is asked for");
    let (ok, out) = pull_command(&cfg, STREAM).await;
    assert!(ok && out.contains("done: 1500 rows in 2 batches"), "{out}");
    src.batch_execute("INSERT INTO orders (id, v) SELECT g, 'late' FROM generate_series(1501, 1510) g").await.unwrap();
    let (ok, out) = pull_command(&cfg, STREAM).await;
    assert!(ok && out.contains("done: 10 rows in 1 batches"), "{out}");
    assert_eq!(log.head(None).await.unwrap(), Some(3));
    let (ok, out) = reader_command(&cfg, &["status"]).await;
    // The state is published with the lease's renewals (every 10 s).
    let shown = ["waiting", "running"].iter().any(|state| out.contains(&format!("{STREAM} (pull): {state}, head 3")));
    assert!(ok && shown, "{out}");
    let (ok, out) = pull_command(&cfg, "nope").await;
    assert!(!ok && out.contains("no [[pull]] named \"nope\""), "{out}");
    reader.stop().await.unwrap();
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
    let stage = Stage::local(&stage_dir).unwrap();
    let log = StreamLog::new(&stage, STREAM).unwrap();
    let mut staging_when_killed = 0;
    for _ in 0..10 {
        let before = log.head(None).await.unwrap().unwrap_or(0);
        let reader = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        reader.kill9().unwrap();
        if log.head(None).await.unwrap().unwrap_or(0) > before {
            staging_when_killed += 1;
        }
    }
    assert!(staging_when_killed >= 5, "most kills hit a reader that was staging pages ({staging_when_killed} of 10)");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let mut reader = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
    wait_pulled(&stage, &src_url).await;
    assert!(reader.try_wait().unwrap().is_none(), "the reader still runs");
    reader.terminate().unwrap();
    assert_each_version_staged_once(&stage).await;
    assert_mirror_equals_source(&stage, &stage_dir, &src_url).await;
}

/// `orders` with a `deleted_at` column: 1 500 rows, every tenth one
/// already soft-deleted before the first pull.
const SOFT_ORDERS: &str =
    "CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(), v text, amount numeric(10,2), deleted_at timestamptz);
    INSERT INTO orders SELECT g, now(), 'v' || g, g / 7.0, CASE WHEN g % 10 = 0 THEN now() END FROM generate_series(1, 1500) g;";

/// With `soft_delete`, rows for which the expression is true are staged as
/// deletes (`_strata_op = 'd'`): those deleted before the first round, which
/// the mirror never had, those deleted later, which it had, and deleted rows
/// changed again (deleted once more). A row deleted and then restored is
/// staged again as an upsert. The mirror ends equal to the source's rows
/// where the expression is false.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soft_deleted_rows_are_staged_as_deletes_and_leave_the_mirror() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute(SOFT_ORDERS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = pull_config(&src_url, dir.path(), 400, "every 1s") + "soft_delete = \"deleted_at IS NOT NULL\"\n";
    let reader = RunningReader::start(Config::from_toml("reader config", &text, &[]).unwrap());
    let stage = Stage::local(dir.path()).unwrap();
    wait_pulled(&stage, &src_url).await;
    src.batch_execute(
        "UPDATE orders SET deleted_at = clock_timestamp(), updated_at = clock_timestamp() WHERE id % 7 = 0 AND deleted_at IS NULL;
         UPDATE orders SET v = 'after', updated_at = clock_timestamp() WHERE id BETWEEN 1 AND 30;
         UPDATE orders SET deleted_at = NULL, v = 'restored', updated_at = clock_timestamp() WHERE id = 10;",
    )
    .await
    .unwrap();
    wait_pulled(&stage, &src_url).await;
    reader.stop().await.unwrap();
    let mut deletes: std::collections::BTreeMap<i32, u32> = std::collections::BTreeMap::new();
    let mut restored = false;
    for (_, _, c) in staged_changes(&stage, STREAM).await.unwrap() {
        let row = c.before.as_ref().or(c.after.as_ref()).unwrap();
        let Value::Int32(id) = row[0] else { panic!("unexpected row {row:?}") };
        let marked = row[4] != Value::Null;
        assert_eq!(c.op == Op::Delete, marked, "a row is staged as a delete exactly when deleted_at is set: {c:?}");
        if c.op == Op::Delete {
            assert!(c.after.is_none(), "a delete carries no after image: {c:?}");
            *deletes.entry(id).or_default() += 1;
        } else if deletes.contains_key(&id) {
            restored |= id == 10 && c.op == Op::Update;
        }
    }
    // 150 rows deleted before the first round, 193 more after it (id % 7 = 0,
    // not already deleted): 343, of which row 10 is restored.
    let expected: Vec<i32> = (1..=1500).filter(|id| id % 10 == 0 || id % 7 == 0).collect();
    assert_eq!(deletes.keys().copied().collect::<Vec<_>>(), expected, "every soft-deleted row, before or after the first round, is staged as a delete");
    assert_eq!((deletes[&20], deletes[&40]), (2, 1), "a deleted row changed again is staged as a delete again");
    assert!(restored, "the restored row is staged as an upsert after its delete");
    let (_, dst) = deliver_to_mirror(&stage, dir.path()).await;
    let live = checksum(&src, "(SELECT * FROM public.orders WHERE (deleted_at IS NOT NULL) IS NOT TRUE)").await;
    assert_eq!(live.0, 1500 - 343 + 1, "rows to compare");
    assert_eq!(checksum(&dst, "public.orders").await, live, "the mirror holds the source's rows that are not soft-deleted");
}
