//! The stage conformance suite: the same cases on every backend (local disk
//! and the S3 emulator), as object_store's own integration suite does. Each
//! case states one guarantee of the staging format that readers and writers
//! build on.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_common::{Change, ColumnType, Lsn, Op, TableName, Timestamp, Value};
use strata_stager::cursor::{Cursor, Cursors};
use strata_stager::gc::{GcOptions, gc_stream};
use strata_stager::keys::{DestinationKeys, StreamKeys};
use strata_stager::lease::Leases;
use strata_stager::log::{StreamLog, TableBatch, first_at_or_after};
use strata_stager::manifest::{BatchKind, Manifest};
use strata_stager::read::{BatchReader, Fetched, Window};
use strata_stager::schema::{ColumnSchema, ReplicaIdentity, TableSchema};
use strata_stager::verify::verify_stream;
use strata_stager::{Stage, StageError};

/// Minutes, in microseconds: test batches are spaced in whole minutes.
const MIN: i64 = 60_000_000;
const T0: i64 = 1_790_000_000_000_000;

fn schema(stream: &str, table: &TableName) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        format: strata_stager::FORMAT_VERSION,
        stream: stream.to_owned(),
        table: table.clone(),
        version: 1,
        relation_oid: None,
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            ColumnSchema {
                name: "id".to_owned(),
                pg_type: "bigint".to_owned(),
                type_oid: 20,
                type_modifier: -1,
                column_type: ColumnType::Int64,
                key: true,
                attnum: None,
                former_names: Vec::new(),
                missing_value: None,
            },
            ColumnSchema {
                name: "note".to_owned(),
                pg_type: "text".to_owned(),
                type_oid: 25,
                type_modifier: -1,
                column_type: ColumnType::Text,
                key: false,
                attnum: None,
                former_names: Vec::new(),
                missing_value: None,
            },
        ],
        since_lsn: None,
        database: None,
        relfilenode: None,
        generated: Vec::new(),
    })
}

/// Batch `seq` holds transactions at minutes `seq*10 + k` for k in 0..3,
/// one insert each, with LSNs `seq*100 + k`.
fn batch(schema: &Arc<TableSchema>, seq: u64) -> Vec<TableBatch> {
    let table = Arc::new(schema.table.clone());
    let changes = (0..3)
        .map(|k| Change {
            op: Op::Insert,
            table: table.clone(),
            lsn: Lsn(seq * 100 + k),
            ord: 0,
            xid: Some(1000 + seq as u32),
            commit_ts: Timestamp(T0 + (seq as i64 * 10 + k as i64) * MIN),
            after: Some(vec![Value::Int64((seq * 10 + k) as i64), Value::Text(format!("row {seq}/{k} ✓"))]),
            before: None,
        })
        .collect();
    vec![TableBatch { schema: schema.clone(), changes }]
}

async fn write_batches(log: &StreamLog, schema: &Arc<TableSchema>, n: u64) -> Vec<Manifest> {
    log.write_schema(schema).await.unwrap();
    let mut out = Vec::new();
    let mut start = Lsn(0);
    for seq in 1..=n {
        let m = log.write_batch(seq, BatchKind::Changes, start, batch(schema, seq)).await.unwrap();
        start = m.lsn.end;
        out.push(m);
    }
    out
}

fn users() -> TableName {
    TableName::new("public", "users").unwrap()
}

fn cursor(dest: &str, seq: u64, epoch: u64) -> Cursor {
    Cursor { format: 1, destination: dest.to_owned(), stream: "s".to_owned(), seq, lsn: Lsn(seq * 100), epoch, updated_at: Timestamp::now() }
}

pub async fn commit_and_read_back(stage: Stage) {
    let log = StreamLog::new(&stage, "s").unwrap();
    let s = schema("s", &users());
    let ms = write_batches(&log, &s, 2).await;
    assert_eq!(log.read(2).await.unwrap(), ms[1]);
    assert_eq!(ms[1].lsn.start, ms[0].lsn.end, "batches chain their LSN ranges");
    let decoded = log.read_file(&ms[1].files[0]).await.unwrap();
    assert_eq!(decoded.changes, batch(&s, 2)[0].changes);
    assert_eq!(log.read_schema(&users(), 1).await.unwrap(), *s);
    assert_eq!(log.latest_schema(&users()).await.unwrap().as_ref(), Some(&*s));
    // Schema versions are immutable: the same one again is fine, a different one is not.
    log.write_schema(&s).await.unwrap();
    let mut changed = (*s).clone();
    changed.columns.pop();
    assert!(matches!(log.write_schema(&changed).await, Err(StageError::Conflict { .. })));
    assert!(matches!(log.read(3).await, Err(StageError::NotFound { .. })));
}

pub async fn concurrent_commit_one_wins(stage: Stage) {
    let log = StreamLog::new(&stage, "race").unwrap();
    let s = schema("race", &users());
    log.write_schema(&s).await.unwrap();
    for seq in 1..=20u64 {
        // Two "readers" stage different batches for the same seq at once.
        let (a, b) = (log.clone(), log.clone());
        let (ba, mut bb) = (batch(&s, seq), batch(&s, seq));
        bb[0].changes[0].after = Some(vec![Value::Int64(-1), Value::Text("the other reader".to_owned())]);
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { a.write_batch(seq, BatchKind::Changes, Lsn(0), ba).await }),
            tokio::spawn(async move { b.write_batch(seq, BatchKind::Changes, Lsn(0), bb).await }),
        );
        let results = [ra.unwrap(), rb.unwrap()];
        let wins: Vec<&Manifest> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(wins.len(), 1, "round {seq}: exactly one commit wins: {results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(matches!(loser, StageError::SeqTaken { seq: s, .. } if *s == seq), "round {seq}: {loser}");
        assert_eq!(&log.read(seq).await.unwrap(), wins[0], "the stored manifest is the winner's");
    }
}

pub async fn retried_commit_is_idempotent(stage: Stage) {
    let log = StreamLog::new(&stage, "retry").unwrap();
    let s = schema("retry", &users());
    let m = write_batches(&log, &s, 1).await.remove(0);
    // A commit whose response was lost is retried with the same manifest.
    log.commit(&m).await.unwrap();
    let mut other = m.clone();
    other.counts.transactions += 1;
    assert!(matches!(log.commit(&other).await, Err(StageError::SeqTaken { seq: 1, .. })));
}

pub async fn stale_cursor_update_is_refused(stage: Stage) {
    let cursors = Cursors::new(&stage, "pg main").unwrap();
    assert!(cursors.load().await.unwrap().is_none());
    let v1 = cursors.advance(None, cursor("pg main", 1, 0)).await.unwrap();
    // Creating again from "no cursor" is stale.
    assert!(matches!(cursors.advance(None, cursor("pg main", 2, 0)).await, Err(StageError::Conflict { .. })));
    // Two writers hold v1; the first to advance wins, the other is refused.
    let v2 = cursors.advance(Some(&v1), cursor("pg main", 2, 0)).await.unwrap();
    assert!(matches!(cursors.advance(Some(&v1), cursor("pg main", 3, 0)).await, Err(StageError::Conflict { .. })));
    // Going back is refused even with the current version.
    assert!(matches!(cursors.advance(Some(&v2), cursor("pg main", 1, 0)).await, Err(StageError::Backward { current: 2, attempted: 1, .. })));
    // Only an explicit rewind goes back, and it starts a new epoch...
    let v3 = cursors.rewind(&v2, 0, Lsn(0), Timestamp::now()).await.unwrap();
    assert_eq!((v3.value.seq, v3.value.epoch), (0, 1));
    // ...after which a write of the old epoch is refused.
    assert!(matches!(cursors.advance(Some(&v3), cursor("pg main", 5, 0)).await, Err(StageError::Backward { .. })));
    let loaded = cursors.load().await.unwrap().unwrap();
    assert_eq!(loaded.value, v3.value);
    assert_eq!(loaded.version, v3.version);
}

pub async fn concurrent_cursor_updates_one_wins(stage: Stage) {
    let cursors = Cursors::new(&stage, "contended").unwrap();
    let mut current = cursors.advance(None, cursor("contended", 0, 0)).await.unwrap();
    for round in 1..=15u64 {
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let (c, cur) = (cursors.clone(), current.clone());
                tokio::spawn(async move { c.advance(Some(&cur), cursor("contended", round * 10 + i, 0)).await })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(v) => winners.push(v),
                Err(StageError::Conflict { .. }) => {}
                Err(e) => panic!("round {round}: unexpected {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one conditional update wins");
        current = winners.pop().unwrap();
        assert_eq!(cursors.load().await.unwrap().unwrap().value.seq, current.value.seq);
    }
}

pub async fn leases_are_exclusive(stage: Stage) {
    let leases = Leases::new(&stage, DestinationKeys::new("d").unwrap().lease());
    let ttl = Duration::from_secs(10);
    let t = Timestamp(T0);
    let a = leases.acquire("writer-a", ttl, t).await.unwrap();
    assert_eq!(a.value.generation, 1);
    match leases.acquire("writer-b", ttl, Timestamp(T0 + 1_000_000)).await {
        Err(StageError::LeaseHeld { owner, .. }) => assert_eq!(owner, "writer-a"),
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    let a = leases.renew(&a, ttl, Timestamp(T0 + 5_000_000), serde_json::json!({"lag": 1})).await.unwrap();
    // Past expiry, b takes over with a new generation; a's renewal then fails.
    let b = leases.acquire("writer-b", ttl, Timestamp(T0 + 16_000_000)).await.unwrap();
    assert_eq!((b.value.holder.as_str(), b.value.generation), ("writer-b", 2));
    assert!(matches!(leases.renew(&a, ttl, Timestamp(T0 + 17_000_000), serde_json::Value::Null).await, Err(StageError::Conflict { .. })));
    leases.release(&b, Timestamp(T0 + 18_000_000)).await.unwrap();
    let a2 = leases.acquire("writer-a", ttl, Timestamp(T0 + 18_000_001)).await.unwrap();
    assert_eq!(a2.value.generation, 3);

    // Racing for a free lease: exactly one of several wins.
    for round in 0..10 {
        let free = Leases::new(&stage, DestinationKeys::new(&format!("race-{round}")).unwrap().lease());
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let l = free.clone();
                tokio::spawn(async move { l.acquire(&format!("w{i}"), ttl, t).await })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(StageError::Conflict { .. } | StageError::LeaseHeld { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(won, 1, "round {round}: one lease holder");
    }
}

pub async fn head_and_commit_time_lookup(stage: Stage) {
    let log = StreamLog::new(&stage, "t").unwrap();
    assert_eq!(log.head(None).await.unwrap(), None);
    assert_eq!(log.seek_time(Timestamp(T0)).await.unwrap(), None);
    let s = schema("t", &users());
    let ms = write_batches(&log, &s, 9).await;
    for hint in [None, Some(1), Some(4), Some(9), Some(10), Some(1000)] {
        assert_eq!(log.head(hint).await.unwrap(), Some(9), "hint {hint:?}");
    }
    // Batch n spans minutes 10n..=10n+2.
    let at = |minute: i64| Timestamp(T0 + minute * MIN);
    let cases = [
        (at(-100), Some(1)), // before everything
        (at(10), Some(1)),   // a batch's first commit
        (at(12), Some(1)),   // a batch's last commit: still that batch
        (at(13), Some(2)),   // between batches: the next one
        (at(50), Some(5)),
        (at(51), Some(5)), // inside a batch
        (at(92), Some(9)),
        (at(93), None), // after everything
    ];
    for (t, expected) in cases {
        assert_eq!(log.seek_time(t).await.unwrap(), expected, "seek {t}");
    }
    // Inside the batch, replay starts at the first change at or after T.
    let changes = log.read_file(&ms[4].files[0]).await.unwrap().changes;
    assert_eq!(first_at_or_after(&changes, at(50)), 0);
    assert_eq!(first_at_or_after(&changes, Timestamp(at(51).0 - 1)), 1);
    assert_eq!(first_at_or_after(&changes, at(51)), 1);
    assert_eq!(first_at_or_after(&changes, at(52)), 2);
    assert_eq!(first_at_or_after(&changes, at(53)), 3);
}

pub async fn batches_read_back_in_windows_and_one_ahead(stage: Stage) {
    let log = StreamLog::new(&stage, "r").unwrap();
    let s = schema("r", &users());
    write_batches(&log, &s, 3).await;
    let at = |minute: i64| Timestamp(T0 + minute * MIN);
    let whole = |f: Option<Fetched>| match f {
        Some(Fetched::Whole(b)) => b,
        other => panic!("expected a whole batch, got {other:?}"),
    };
    let mut reader = BatchReader::new(&log);
    // Batch 1 spans minutes 10..=12, batch 2 20..=22: a window cuts the first
    // batch by `from` and every batch by `until`.
    let first = whole(reader.fetch(1, Window { from: Some(at(11)), until: Some(at(21)) }).await.unwrap());
    assert_eq!((first.seq, first.stream.as_str()), (1, "r"));
    assert_eq!(first.tables[0].changes, batch(&s, 1)[0].changes[1..]);
    // The read-ahead of batch 2 kept `until` and dropped `from`.
    let second = whole(reader.fetch(2, Window { from: None, until: Some(at(21)) }).await.unwrap());
    assert_eq!(second.tables[0].changes, batch(&s, 2)[0].changes[..2]);
    // A different window than the read-ahead's is fetched afresh.
    let third = whole(reader.fetch(3, Window { from: Some(at(32)), until: None }).await.unwrap());
    assert_eq!(third.tables[0].changes, batch(&s, 3)[0].changes[2..]);
    assert_eq!(third.lsn_end, Lsn(302));
    // Batch 4 is not committed: the read-ahead found nothing, and a fetch
    // after the commit sees it (a miss is never remembered).
    assert!(reader.fetch(4, Window::default()).await.unwrap().is_none());
    log.write_batch(4, BatchKind::Changes, Lsn(302), batch(&s, 4)).await.unwrap();
    let fourth = whole(reader.fetch(4, Window::default()).await.unwrap());
    assert_eq!(fourth.tables[0].changes, batch(&s, 4)[0].changes);
    // A file read a chunk at a time gives the same changes.
    let m = log.read(4).await.unwrap();
    let mut chunks = reader.chunks(&m.files[0], 2).await.unwrap();
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    while let Some(chunk) = chunks.next().await.unwrap() {
        sizes.push(chunk.len());
        all.extend(chunk);
    }
    assert_eq!(sizes, [2, 1]);
    assert_eq!(all, batch(&s, 4)[0].changes);
}

pub async fn odd_identifiers_round_trip(stage: Stage) {
    let stream = "prod/eu wëst.1 %41";
    let table = TableName::new("Sch.ema \"q\"", "ta/ble ☃ 100%").unwrap();
    let log = StreamLog::new(&stage, stream).unwrap();
    let s = schema(stream, &table);
    let ms = write_batches(&log, &s, 2).await;
    assert_eq!(log.list_seqs().await.unwrap(), vec![1, 2]);
    assert_eq!(log.head(None).await.unwrap(), Some(2));
    let decoded = log.read_file(&ms[0].files[0]).await.unwrap();
    assert_eq!(*decoded.table, table);
    assert_eq!(log.latest_schema(&table).await.unwrap().unwrap().table, table);
    let dirs = stage.list_dirs(&strata_stager::keys::streams_prefix()).await.unwrap();
    let names: Vec<String> = dirs.iter().map(|d| strata_stager::keys::decode_name(d.filename().unwrap()).unwrap()).collect();
    assert_eq!(names, vec![stream.to_owned()]);
    let listed = stage.list(&log.keys().tables_prefix()).await.unwrap();
    assert_eq!(listed.len(), 2);
    for obj in listed {
        assert!(ms.iter().any(|m| m.files[0].path == obj.location.as_ref()), "listing returns the key written: {}", obj.location);
    }
    assert!(verify_stream(&log).await.unwrap().is_ok());
}

pub async fn verify_finds_missing_and_corrupt_files(stage: Stage) {
    let log = StreamLog::new(&stage, "v").unwrap();
    let ms = write_batches(&log, &schema("v", &users()), 3).await;
    assert!(verify_stream(&log).await.unwrap().is_ok());
    let missing = ms[0].files[0].key().unwrap();
    stage.delete(&missing).await.unwrap();
    let corrupt = ms[2].files[0].key().unwrap();
    let mut bytes = stage.get(&corrupt).await.unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    stage.put(&corrupt, Bytes::from(bytes)).await.unwrap();
    let report = verify_stream(&log).await.unwrap();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(report.problems[0].key == ms[0].files[0].path && report.problems[0].message.contains("missing"));
    assert!(report.problems[1].key == ms[2].files[0].path && report.problems[1].message.contains("checksum"));
    // Reading the corrupt file through the log fails the same way.
    assert!(matches!(log.read_file(&ms[2].files[0]).await, Err(StageError::ChecksumMismatch { .. })));
}

pub async fn gc_collects_only_garbage(stage: Stage) {
    let log = StreamLog::new(&stage, "g").unwrap();
    let s = schema("g", &users());
    let ms = write_batches(&log, &s, 4).await;
    let keys = StreamKeys::new("g").unwrap();
    // An upload whose commit never happened (seq 2 was then committed by
    // another attempt with other files), and a file of a batch in progress.
    let orphan = keys.data_file(&users(), Timestamp(T0), 2, 7);
    let in_flight = keys.data_file(&users(), Timestamp(T0), 5, 0);
    stage.put(&orphan, Bytes::from_static(b"orphan")).await.unwrap();
    stage.put(&in_flight, Bytes::from_static(b"in flight")).await.unwrap();
    let now = Timestamp::now();
    let opts = |grace: u64, retention: Option<Duration>, dry_run: bool| GcOptions {
        grace: Duration::from_secs(grace),
        retention,
        dry_run,
        now: Timestamp(now.0 + 10_000_000),
    };
    // Within the grace period nothing goes.
    let r = gc_stream(&stage, "g", &opts(3600, None, false)).await.unwrap();
    assert_eq!((r.files_deleted, r.files_in_grace, r.files_in_flight), (0, 1, 1));
    let r = gc_stream(&stage, "g", &opts(1, None, true)).await.unwrap();
    assert_eq!(r.files_deleted, 1);
    assert!(stage.exists(&orphan).await.unwrap(), "dry run deletes nothing");
    let r = gc_stream(&stage, "g", &opts(1, None, false)).await.unwrap();
    assert_eq!((r.files_deleted, r.files_in_flight), (1, 1));
    assert!(!stage.exists(&orphan).await.unwrap());
    assert!(stage.exists(&in_flight).await.unwrap(), "a batch in progress is never collected");
    assert!(verify_stream(&log).await.unwrap().is_ok(), "committed batches are untouched");

    // Retention stops at the slowest destination's cursor.
    Cursors::new(&stage, "slow").unwrap().advance(None, Cursor { stream: "g".to_owned(), ..cursor("slow", 2, 0) }).await.unwrap();
    let r = gc_stream(&stage, "g", &opts(1, Some(Duration::from_secs(1)), false)).await.unwrap();
    assert_eq!((r.low_before, r.low_after, r.batches_deleted), (1, 3, 2));
    assert!(r.retention_limited_by.unwrap().contains("slow"));
    assert_eq!(log.low().await.unwrap(), 3);
    assert_eq!(log.list_seqs().await.unwrap(), vec![3, 4]);
    for f in ms[..2].iter().flat_map(|m| &m.files) {
        assert!(!stage.exists(&f.key().unwrap()).await.unwrap());
    }
    // Lookups work over what is left.
    assert_eq!(log.head(None).await.unwrap(), Some(4));
    assert_eq!(log.seek_time(Timestamp(T0)).await.unwrap(), Some(3));
    assert!(verify_stream(&log).await.unwrap().is_ok());
}

/// A reader of staged files reads further ahead while the batches it reads
/// ahead are there, on a remote stage only, and still returns each batch
/// in turn, a batch committed after a miss included.
pub async fn a_files_reader_reads_further_ahead_while_behind(stage: Stage) {
    let log = StreamLog::new(&stage, "r").unwrap();
    let s = schema("r", &users());
    write_batches(&log, &s, 20).await;
    let mut reader = BatchReader::new(&log).with_files(true);
    let fetch = async |reader: &mut BatchReader, seq: u64| match reader.fetch(seq, Window::default()).await.unwrap() {
        Some(Fetched::Whole(b)) => b,
        other => panic!("expected batch {seq} whole, got {other:?}"),
    };
    let gets_at_start = stage.requests().get(strata_stager::requests::Op::Get);
    for seq in 1..=4 {
        let b = fetch(&mut reader, seq).await;
        assert_eq!((b.seq, b.files.len()), (seq, 1));
    }
    // Let the read-aheads started so far finish, then count their GETs: a
    // batch costs two (manifest, data file), the schema one.
    let mut gets = stage.requests().get(strata_stager::requests::Op::Get);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stage.requests().get(strata_stager::requests::Op::Get);
        if now == gets {
            break;
        }
        gets = now;
    }
    let batches_read = (gets - gets_at_start - 1) / 2;
    if stage.is_local() {
        // Batches 1-4 and one ahead.
        assert_eq!(batches_read, 5);
    } else {
        // The depth doubles after each batch found ahead (1, 2, 4, 8):
        // batches 1-4 and eight ahead.
        assert_eq!(batches_read, 12);
    }
    for seq in 5..=20 {
        assert_eq!(fetch(&mut reader, seq).await.seq, seq);
    }
    assert!(reader.fetch(21, Window::default()).await.unwrap().is_none());
    let start = log.read(20).await.unwrap().lsn.end;
    log.write_batch(21, BatchKind::Changes, start, batch(&s, 21)).await.unwrap();
    assert_eq!(fetch(&mut reader, 21).await.seq, 21);
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            conformance!(@cases $make;
                commit_and_read_back,
                concurrent_commit_one_wins,
                retried_commit_is_idempotent,
                stale_cursor_update_is_refused,
                concurrent_cursor_updates_one_wins,
                leases_are_exclusive,
                head_and_commit_time_lookup,
                batches_read_back_in_windows_and_one_ahead,
                a_files_reader_reads_further_ahead_while_behind,
                odd_identifiers_round_trip,
                verify_finds_missing_and_corrupt_files,
                gc_collects_only_garbage,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (stage, _guard) = $make.await;
                super::$case(stage).await;
            }
        )*
    };
}

fn local_stage() -> std::future::Ready<(Stage, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    std::future::ready((Stage::local(dir.path()).unwrap(), dir))
}

async fn s3_stage() -> (Stage, strata_tests::emulator::Emulator) {
    let emulator = strata_tests::emulator::Emulator::start().await.unwrap();
    let stage = emulator.stage("some/prefix").await.unwrap();
    (stage, emulator)
}

conformance!(local, local_stage());
conformance!(s3, s3_stage());
