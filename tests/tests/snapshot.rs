//! The initial snapshot: existing rows staged once, consistent with the
//! change stream that follows, under concurrent writes and under kill -9.
//! The stage is checked by delivering it to a mirror destination and
//! comparing per-table checksums with the source.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_common::{Lsn, Op, TableName};
use strata_reader::snapshot::{Phase, SnapshotState};
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_stager::manifest::{BatchKind, Manifest};
use strata_tests::fixtures::{ALL_TYPES_DDL, ALL_TYPES_ROWS};
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, drop_slot_once_released, staged_changes};
use strata_tests::workload::Rng;
use strata_tests::writer::{assert_mirror_equals_source, session};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");

const TABLES: [&str; 8] =
    ["public.all_types", "public.customers", "public.orders", "public.order_items", "public.a", "public.b", "public.big", "public.\"Odd.Name\""];

/// Tables with foreign keys (a chain and a cycle), every mapped type, a
/// table without a key, and `big` large enough to split into many ranges.
async fn create_source(url: &str, big_rows: u32) {
    let c = session(url).await;
    c.batch_execute(ALL_TYPES_DDL).await.unwrap();
    c.batch_execute(ALL_TYPES_ROWS).await.unwrap();
    c.batch_execute(&format!(
        r#"
        CREATE TABLE customers (id int PRIMARY KEY, name text);
        CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2));
        CREATE TABLE order_items (order_id int REFERENCES orders, line int, sku text, PRIMARY KEY (order_id, line));
        CREATE TABLE a (id int PRIMARY KEY, b_id int);
        CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a DEFERRABLE INITIALLY DEFERRED);
        ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b DEFERRABLE INITIALLY DEFERRED;
        CREATE TABLE big (id bigint PRIMARY KEY, payload text, n int);
        CREATE TABLE "Odd.Name" (x int, "Y z" text);
        INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 200) g;
        INSERT INTO orders SELECT g, 1 + g % 200, g * 1.25 FROM generate_series(1, 1000) g;
        INSERT INTO order_items SELECT 1 + g % 1000, g, 'sku' || g FROM generate_series(1, 3000) g;
        BEGIN; INSERT INTO a SELECT g, g FROM generate_series(1, 50) g; INSERT INTO b SELECT g, g FROM generate_series(1, 50) g; COMMIT;
        INSERT INTO big SELECT g, repeat(md5(g::text), 3), 0 FROM generate_series(1, {big_rows}) g;
        INSERT INTO "Odd.Name" SELECT g % 7, 'v' || g FROM generate_series(1, 500) g;
        "#
    ))
    .await
    .unwrap();
}

/// Writes while the snapshot runs: updates, deletes and inserts on `big`
/// and the order tables, each its own transaction, until `stop`.
async fn writes(url: String, stop: Arc<AtomicBool>, seed: u64, big_rows: u32) -> u64 {
    let c = connect(&url).await.unwrap();
    let mut rng = Rng(seed);
    let mut next = i64::from(big_rows) + 1;
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = 1 + rng.below(u64::from(big_rows));
        let sql = match rng.below(6) {
            0 => format!("DELETE FROM big WHERE id = {id}"),
            1 => {
                next += 1;
                format!("INSERT INTO big VALUES ({next}, 'new', 1)")
            }
            2 => format!("UPDATE orders SET total = total + 1 WHERE id = {}", 1 + id % 1000),
            3 => format!("BEGIN; DELETE FROM order_items WHERE order_id = {0}; UPDATE orders SET total = 0 WHERE id = {0}; COMMIT", 1 + id % 1000),
            _ => format!("UPDATE big SET n = n + 1, payload = 'u' || n WHERE id BETWEEN {id} AND {}", id + 20),
        };
        c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        done += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done
}

async fn snapshot_state(stage: &Stage) -> Option<SnapshotState> {
    let log = StreamLog::new(stage, "main").unwrap();
    stage.get_json::<SnapshotState>(&log.keys().snapshot()).await.unwrap().map(|v| v.value)
}

async fn manifests(stage: &Stage) -> Vec<Manifest> {
    let log = StreamLog::new(stage, "main").unwrap();
    let mut out = Vec::new();
    for seq in 1..=log.head(None).await.unwrap().unwrap_or(0) {
        out.push(log.read(seq).await.unwrap());
    }
    out
}

/// Snapshot batches come first, parents before children, every table's
/// completion is recorded exactly once, and a table's rows are re-staged
/// only after a truncate that discards an interrupted copy.
fn assert_snapshot_batches(manifests: &[Manifest], state: &SnapshotState) {
    let t = |n: &str| TableName::parse(n).unwrap();
    let first_changes = manifests.iter().position(|m| m.kind == BatchKind::Changes).unwrap_or(manifests.len());
    assert!(manifests[first_changes..].iter().all(|m| m.kind == BatchKind::Changes), "no snapshot batch after the first change batch");
    let mut level_of = BTreeMap::new();
    let mut completed: Vec<TableName> = Vec::new();
    let mut last_level = 0;
    for m in &manifests[..first_changes] {
        let info = m.snapshot.as_ref().unwrap_or_else(|| panic!("snapshot batch {} has its snapshot info", m.seq));
        assert!(info.point >= state.point, "batch {} is as of {} ≥ the stream's point {}", m.seq, info.point, state.point);
        assert_eq!(m.lsn.start, state.point, "batch {} starts at the stream's point", m.seq);
        if info.point == state.point {
            // The first attempt's batches go level by level.
            assert!(info.level >= last_level, "batch {} of level {} after level {last_level}", m.seq, info.level);
            last_level = info.level;
        }
        for table in &info.tables {
            level_of.insert(table.table.clone(), (info.level, table.depends_on.clone(), table.cycle.clone()));
        }
        completed.extend(info.completed.iter().cloned());
    }
    let (customers, _, _) = &level_of[&t("public.customers")];
    let (orders, orders_deps, _) = &level_of[&t("public.orders")];
    let (items, items_deps, _) = &level_of[&t("public.order_items")];
    assert!(customers < orders && orders < items, "levels follow the foreign keys");
    assert_eq!(orders_deps, &[t("public.customers")]);
    assert_eq!(items_deps, &[t("public.orders")]);
    assert_eq!(level_of[&t("public.a")].2, [t("public.b")], "the a ⇄ b cycle is reported");
    assert_eq!(level_of[&t("public.b")].2, [t("public.a")]);
    let unique: HashSet<&TableName> = completed.iter().collect();
    assert_eq!(unique.len(), completed.len(), "no table is completed twice: {completed:?}");
    for table in TABLES {
        let table = t(table);
        assert!(state.tables.iter().any(|p| p.table == table), "{table} has its point in snapshot.json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_under_concurrent_writes_then_stream_reconstructs_the_source() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    create_source(&src_url, 40_000).await;
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(writes(src_url.clone(), stop.clone(), 7, 40_000));
    let extra = "max_rows = 3000\n[snapshot]\nworkers = 3\nrange_bytes = \"512KiB\"\n";
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, extra), &[]).unwrap());
    let stage = Stage::local(&stage_dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while snapshot_state(&stage).await.is_none_or(|s| s.phase != Phase::Done) {
        assert!(Instant::now() < deadline, "the snapshot finished within 120 s");
        assert!(!reader.is_finished(), "the reader is running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep writing into the stream for a while, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let writes_done = writes.await.unwrap();
    assert!(writes_done > 50, "writes ran concurrently ({writes_done})");

    let state = snapshot_state(&stage).await.unwrap();
    let all = manifests(&stage).await;
    assert_snapshot_batches(&all, &state);
    assert!(all.iter().any(|m| m.kind == BatchKind::Changes), "changes were streamed after the snapshot");
    let big_batches = all.iter().filter(|m| m.files.iter().any(|f| f.table.name == "big") && m.kind == BatchKind::Snapshot).count();
    assert!(big_batches >= 5, "big was copied in several ranges and batches ({big_batches})");
    // Snapshot rows are reads at the point; nothing else is in snapshot batches.
    let staged = staged_changes(&stage, "main").await.unwrap();
    let reads = staged.iter().filter(|(_, _, c)| c.op == Op::Read).count();
    assert!(reads >= 40_000, "every existing row was read ({reads})");
    assert!(staged.iter().filter(|(_, _, c)| c.op == Op::Read).all(|(_, _, c)| c.lsn == state.point && c.xid.is_none()));
    assert_mirror_equals_source(&stage, &stage_dir, &src_url, &TABLES, 0).await;
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_the_snapshot_five_times_loses_and_doubles_nothing() {
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    create_source(&src_url, 400_000).await;
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let config =
        strata_tests::reader::write_config(dir.path(), &src_url, &stage_dir, "max_rows = 1000\n[snapshot]\nworkers = 2\nrange_bytes = \"1MiB\"\n").unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let log = StreamLog::new(&stage, "main").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(writes(src_url.clone(), stop.clone(), 11, 400_000));
    let mut rng = Rng(0x5eed);
    let mut kills = 0;
    let mut reader = ServiceProcess::spawn(READER.as_ref(), &config).unwrap();
    while kills < 5 {
        // Let this attempt stage a few batches of its own, then kill it.
        let before = log.head(None).await.unwrap().unwrap_or(0);
        let want = before + 1 + rng.below(4);
        let deadline = Instant::now() + Duration::from_secs(60);
        while log.head(None).await.unwrap().unwrap_or(0) < want {
            assert!(Instant::now() < deadline, "attempt {kills} made progress within 60 s");
            assert!(reader.try_wait().unwrap().is_none(), "the reader is running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if snapshot_state(&stage).await.is_some_and(|s| s.phase == Phase::Done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        reader.kill9().unwrap();
        kills += 1;
        reader = ServiceProcess::spawn(READER.as_ref(), &config).unwrap();
    }
    assert_eq!(kills, 5, "all five kills landed during the snapshot");
    let deadline = Instant::now() + Duration::from_secs(180);
    while snapshot_state(&stage).await.is_none_or(|s| s.phase != Phase::Done) {
        assert!(Instant::now() < deadline, "the snapshot finished within 180 s of the last kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    writes.await.unwrap();

    let state = snapshot_state(&stage).await.unwrap();
    let all = manifests(&stage).await;
    assert_snapshot_batches(&all, &state);
    let points: HashSet<Lsn> = all.iter().filter_map(|m| m.snapshot.as_ref().map(|s| s.point)).collect();
    assert!(points.len() >= 2, "resumed attempts copied in snapshots of their own ({points:?})");
    // Every table copied again after an interruption was truncated first.
    let staged = staged_changes(&stage, "main").await.unwrap();
    for p in points.iter().filter(|p| **p != state.point) {
        let mut truncated = HashSet::new();
        for (_, _, c) in staged.iter().filter(|(_, _, c)| c.lsn == *p) {
            match c.op {
                Op::Truncate => {
                    truncated.insert(c.table.clone());
                }
                Op::Read => {
                    let earlier = staged.iter().any(|(_, _, e)| e.op == Op::Read && e.table == c.table && e.lsn < *p);
                    assert!(!earlier || truncated.contains(&c.table), "{} re-staged at {p} without a truncate first", c.table);
                }
                other => panic!("a {other} change in a snapshot at {p}"),
            }
        }
    }
    // Nothing doubled at the seam: a table copied at a later point has no
    // staged change from before it (its copy holds those already).
    let first_changes = all.iter().find(|m| m.kind == BatchKind::Changes).map_or(u64::MAX, |m| m.seq);
    let mut later = 0;
    for p in state.tables.iter().filter(|p| p.point > state.point) {
        later += 1;
        let doubled = staged.iter().filter(|(seq, _, c)| *seq >= first_changes && *c.table == p.table && c.lsn < p.point).count();
        assert_eq!(doubled, 0, "{} copied at {} also has {doubled} earlier changes staged", p.table, p.point);
    }
    assert!(later > 0, "some table was copied again after a kill");
    assert_mirror_equals_source(&stage, &stage_dir, &src_url, &TABLES, 0).await;
    reader.terminate().unwrap();
}

/// DDL committed after the snapshot point but before a table's copy: a
/// dropped column (the copy fails), a `USING` that rewrites the table
/// (an older snapshot reads the new files empty) and swapped column names
/// (the copy would read each column into the other). The DDL runs while
/// the one copy worker is still reading the large parent table, so it lands
/// before `child` is read. Each time the table is copied again in a newer
/// snapshot, and the mirror ends equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_after_the_snapshot_point_gets_the_table_copied_again() {
    let cases = [
        "ALTER TABLE child DROP COLUMN x",
        "ALTER TABLE child ALTER COLUMN v TYPE int USING v * 3",
        "ALTER TABLE child RENAME COLUMN x TO tmp; ALTER TABLE child RENAME COLUMN y TO x; ALTER TABLE child RENAME COLUMN tmp TO y",
    ];
    for ddl in cases {
        let cluster = PgCluster::shared();
        let src_url = cluster.fresh_database().await.unwrap();
        let src = session(&src_url).await;
        src.batch_execute(
            "CREATE TABLE parent (id int PRIMARY KEY, payload text);
             INSERT INTO parent SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 400000) g;
             CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent, x text, y text, v int);
             INSERT INTO child SELECT g, 1 + g % 100, 'x' || g, 'y' || g, g FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stage_dir = dir.path().join("stage");
        let extra = "[snapshot]\nworkers = 1\n";
        let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, extra), &[]).unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let copying = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %\"parent\"%'";
        while src.query_one(copying, &[]).await.unwrap().get::<_, i64>(0) == 0 {
            assert!(Instant::now() < deadline, "{ddl}: the snapshot started copying parent within 60 s");
            assert!(!reader.is_finished(), "{ddl}: the reader is running");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        src.batch_execute(ddl).await.unwrap();
        src.batch_execute("UPDATE child SET v = v + 1 WHERE id % 10 = 0; INSERT INTO child (id, parent_id) VALUES (5000, 1)").await.unwrap();
        let still_copying = src.query_one(copying, &[]).await.unwrap().get::<_, i64>(0);
        assert_eq!(still_copying, 1, "{ddl}: the DDL landed while parent was still being copied (make parent larger)");

        let stage = Stage::local(&stage_dir).unwrap();
        while snapshot_state(&stage).await.is_none_or(|s| s.phase != Phase::Done) {
            assert!(Instant::now() < deadline, "{ddl}: the snapshot finished within 60 s");
            assert!(!reader.is_finished(), "{ddl}: the reader is running");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let state = snapshot_state(&stage).await.unwrap();
        let point_of = |name: &str| state.tables.iter().find(|p| p.table.name == name).map(|p| p.point);
        assert_eq!(point_of("parent"), Some(state.point), "{ddl}: parent was copied at the stream's point");
        assert!(point_of("child").is_some_and(|p| p > state.point), "{ddl}: child was copied again after the DDL");
        assert_mirror_equals_source(&stage, &stage_dir, &src_url, &["public.parent", "public.child"], 99).await;
        reader.stop().await.unwrap();
        // The next case's database gets a slot of its own.
        drop_slot_once_released(&src, "strata_main").await.unwrap();
    }
}
