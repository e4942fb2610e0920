//! The read-ahead protocol of [`BatchReader`] against a real stage on local
//! disk, read ahead as deep as a remote one through
//! [`BatchReader::with_read_ahead`].

use std::sync::Arc;
use std::time::Duration;

use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};

use super::*;
use crate::Stage;
use crate::manifest::BatchKind;
use crate::schema::{ColumnSchema, ReplicaIdentity, TableSchema};

const T0: i64 = 1_790_000_000_000_000;

fn column(name: &str, pg_type: &str, type_oid: u32, column_type: ColumnType, key: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.to_owned(),
        pg_type: pg_type.to_owned(),
        type_oid,
        type_modifier: -1,
        column_type,
        key,
        attnum: None,
        former_names: Vec::new(),
        missing_value: None,
    }
}

fn schema() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        format: crate::FORMAT_VERSION,
        stream: "s".to_owned(),
        table: TableName::new("public", "t").unwrap(),
        version: 1,
        relation_oid: None,
        replica_identity: ReplicaIdentity::Default,
        columns: vec![column("id", "bigint", 20, ColumnType::Int64, true), column("note", "text", 25, ColumnType::Text, false)],
        since_lsn: None,
        database: None,
        relfilenode: None,
        generated: Vec::new(),
    })
}

/// Batch `seq` of `rows` inserts, committed at microseconds `seq * 1e6 + k`.
fn batch(schema: &Arc<TableSchema>, seq: u64, rows: u64) -> Vec<TableBatch> {
    let table = Arc::new(schema.table.clone());
    let changes = (0..rows)
        .map(|k| Change {
            op: Op::Insert,
            table: table.clone(),
            lsn: Lsn(seq * 1_000_000 + k),
            ord: 0,
            xid: Some(seq as u32),
            commit_ts: Timestamp(T0 + (seq * 1_000_000 + k) as i64),
            after: Some(vec![Value::Int64((seq * 1_000_000 + k) as i64), Value::Text(format!("row {seq}/{k}"))]),
            before: None,
        })
        .collect();
    vec![TableBatch { schema: schema.clone(), changes }]
}

/// A stage with batches `seqs`, each of the rows `rows(seq)` gives.
async fn stage_with(seqs: std::ops::RangeInclusive<u64>, rows: impl Fn(u64) -> u64) -> (tempfile::TempDir, StreamLog, Arc<TableSchema>) {
    let dir = tempfile::tempdir().unwrap();
    let log = StreamLog::new(&Stage::local(dir.path()).unwrap(), "s").unwrap();
    let s = schema();
    log.write_schema(&s).await.unwrap();
    for seq in seqs {
        write(&log, &s, seq, rows(seq)).await;
    }
    (dir, log, s)
}

async fn write(log: &StreamLog, s: &Arc<TableSchema>, seq: u64, rows: u64) {
    log.write_batch(seq, BatchKind::Changes, Lsn((seq - 1) * 1_000_000), batch(s, seq, rows)).await.unwrap();
}

/// Waits until every running read-ahead has finished.
async fn settle(reader: &BatchReader) {
    for _ in 0..500 {
        if reader.ahead.iter().all(|a| a.task.is_finished()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("read-aheads did not finish");
}

fn ahead_seqs(reader: &BatchReader) -> Vec<u64> {
    reader.ahead.iter().map(|a| a.seq).collect()
}

fn whole(f: Option<Fetched>, seq: u64, rows: u64) -> StagedBatch {
    match f {
        Some(Fetched::Whole(b)) => {
            assert_eq!((b.seq, b.tables[0].changes.len() as u64), (seq, rows));
            b
        }
        other => panic!("expected whole batch {seq}, got {other:?}"),
    }
}

#[tokio::test]
async fn found_read_aheads_open_the_depth_and_serve_the_next_batches() {
    let (dir, log, _) = stage_with(1..=6, |_| 3).await;
    let mut reader = BatchReader::new(&log).with_read_ahead(4);
    // Read on demand: only the next batch is read ahead.
    whole(reader.fetch(1, Window::default()).await.unwrap(), 1, 3);
    assert_eq!(ahead_seqs(&reader), [2]);
    // Served by its read-ahead: the stream is ahead, read 4 ahead.
    whole(reader.fetch(2, Window::default()).await.unwrap(), 2, 3);
    assert_eq!(ahead_seqs(&reader), [3, 4, 5, 6]);
    settle(&reader).await;
    // With the stage gone, batches 3..=6 still come, from the read-aheads.
    std::fs::remove_dir_all(dir.path().join("streams")).unwrap();
    for seq in 3..=6 {
        whole(reader.fetch(seq, Window::default()).await.unwrap(), seq, 3);
    }
    assert!(reader.fetch(7, Window::default()).await.unwrap().is_none());
    assert!(reader.ahead.is_empty(), "nothing is read ahead of a batch not committed");
}

#[tokio::test]
async fn a_local_stage_reads_one_batch_ahead() {
    let (_dir, log, _) = stage_with(1..=4, |_| 3).await;
    let mut reader = BatchReader::new(&log);
    for seq in 1..=3 {
        whole(reader.fetch(seq, Window::default()).await.unwrap(), seq, 3);
        assert_eq!(ahead_seqs(&reader), [seq + 1]);
    }
}

#[tokio::test]
async fn a_batch_committed_after_its_read_ahead_found_nothing_is_read() {
    let (_dir, log, s) = stage_with(1..=2, |_| 3).await;
    let mut reader = BatchReader::new(&log).with_read_ahead(4);
    whole(reader.fetch(1, Window::default()).await.unwrap(), 1, 3);
    whole(reader.fetch(2, Window::default()).await.unwrap(), 2, 3);
    assert_eq!(ahead_seqs(&reader), [3, 4, 5, 6]);
    settle(&reader).await;
    // Every read-ahead found nothing; the batches committed since come
    // all the same, in order.
    for seq in 3..=5 {
        write(&log, &s, seq, 3).await;
    }
    for seq in 3..=5 {
        whole(reader.fetch(seq, Window::default()).await.unwrap(), seq, 3);
    }
    assert!(reader.fetch(6, Window::default()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_large_batch_stops_the_read_ahead() {
    let big = WHOLE_BATCH_MAX_ROWS + 1;
    let (_dir, log, _) = stage_with(1..=6, |seq| if seq == 3 { big } else { 3 }).await;
    let mut reader = BatchReader::new(&log).with_read_ahead(4);
    whole(reader.fetch(1, Window::default()).await.unwrap(), 1, 3);
    whole(reader.fetch(2, Window::default()).await.unwrap(), 2, 3);
    match reader.fetch(3, Window::default()).await.unwrap() {
        Some(Fetched::Large(l)) => assert_eq!((l.header.seq, l.files.len()), (3, 1)),
        other => panic!("expected large batch 3, got {other:?}"),
    }
    assert!(reader.ahead.is_empty(), "read ahead past a large batch: {:?}", ahead_seqs(&reader));
    // The batches after it are read on demand, then ahead again.
    whole(reader.fetch(4, Window::default()).await.unwrap(), 4, 3);
    assert_eq!(ahead_seqs(&reader), [5]);
}

#[tokio::test]
async fn a_far_read_ahead_of_a_large_batch_keeps_only_its_manifest() {
    let big = WHOLE_BATCH_MAX_ROWS + 1;
    let (_dir, log, _) = stage_with(1..=5, |seq| if seq == 4 { big } else { 3 }).await;
    let mut reader = BatchReader::new(&log).with_read_ahead(4);
    whole(reader.fetch(1, Window::default()).await.unwrap(), 1, 3);
    whole(reader.fetch(2, Window::default()).await.unwrap(), 2, 3);
    settle(&reader).await;
    // Batch 4 is two ahead of batch 2: its read-ahead stopped at the
    // manifest.
    let a = reader.ahead.remove(1).unwrap();
    assert_eq!(a.seq, 4);
    match a.task.await.unwrap().unwrap() {
        Some(Read::Deferred(m)) => assert_eq!(m.counts.rows, big),
        other => panic!("expected batch 4 deferred, got {other:?}"),
    }
}

#[tokio::test]
async fn a_deferred_read_ahead_is_completed_on_its_turn() {
    let rows = FAR_AHEAD_MAX_ROWS + 1;
    let (_dir, log, _) = stage_with(1..=5, |seq| if seq == 4 { rows } else { 3 }).await;
    let mut reader = BatchReader::new(&log).with_read_ahead(4);
    for seq in 1..=5 {
        whole(reader.fetch(seq, Window::default()).await.unwrap(), seq, if seq == 4 { rows } else { 3 });
    }
}

#[tokio::test]
async fn a_different_window_drops_the_read_aheads() {
    let (_dir, log, _) = stage_with(1..=5, |_| 3).await;
    let mut reader = BatchReader::new(&log).with_read_ahead(4);
    whole(reader.fetch(1, Window::default()).await.unwrap(), 1, 3);
    whole(reader.fetch(2, Window::default()).await.unwrap(), 2, 3);
    let until = Window { from: None, until: Some(Timestamp(T0 + 3_000_001)) };
    whole(reader.fetch(3, until).await.unwrap(), 3, 2);
    // Read on demand (not served): one ahead, in the new window.
    assert_eq!(ahead_seqs(&reader), [4]);
    assert!(reader.ahead.iter().all(|a| a.window == until));
}
