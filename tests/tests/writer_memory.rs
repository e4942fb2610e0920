//! A transaction far larger than the writer's memory: the reader stages it
//! in parts under one manifest, and the writer delivers it part by part —
//! inside one transaction to a Postgres mirror, a file per part to the files
//! destination — with its peak RSS bounded whatever the transaction's size.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use strata_stager::Stage;
use strata_stager::cursor::Cursors;
use strata_stager::log::StreamLog;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config, config_text, wait_for_slot};
use strata_tests::writer::{checksum, session, spec, spec_of, wait_staged};
use strata_writer::destinations::files::config::{FileFormat, FilesSpec};
use strata_writer::spec::{DestinationKind, PostgresMode, StartPosition};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_million_row_transaction_is_delivered_within_bounded_writer_memory() {
    const ROWS: i64 = 2_000_000;
    const LIMIT_KIB: u64 = 256 * 1024;
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let dst_url = cluster.fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE big (id bigint PRIMARY KEY, payload text, n int)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(config(&src_url, &stage_dir, ""));
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin.batch_execute("INSERT INTO big VALUES (0, 'before', 0)").await.unwrap();
    admin.batch_execute(&format!("INSERT INTO big SELECT g, md5(g::text), g % 1000 FROM generate_series(1, {ROWS}) g")).await.unwrap();
    admin.batch_execute("UPDATE big SET payload = 'after' WHERE id = 0").await.unwrap();
    let src = session(&src_url).await;
    wait_staged(&src).await;
    reader.stop().await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let log = StreamLog::new(&stage, "main").unwrap();
    let head = log.head(None).await.unwrap().unwrap();
    let mut big = None;
    for seq in 1..=head {
        let m = log.read(seq).await.unwrap();
        if m.counts.rows >= ROWS as u64 {
            big = Some(m.files.len());
        }
    }
    let parts = big.expect("the transaction is one batch");
    assert!(parts > 4, "staged in {parts} parts");

    let out_dir = dir.path().join("lake");
    strata_writer::control::add(&stage, &spec("mirror", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let files = FilesSpec::new(out_dir.display().to_string(), FileFormat::Parquet);
    strata_writer::control::add(&stage, &spec_of("lake", StartPosition::Earliest, DestinationKind::Files(files))).await.unwrap();
    let config_path = dir.path().join("writer.toml");
    std::fs::write(&config_path, config_text(&src_url, &stage_dir, "")).unwrap();
    let mut writer = ServiceProcess::spawn(Path::new(WRITER), &config_path).unwrap();
    let started = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(writer.peak_rss_kib().unwrap());
        if let Some(status) = writer.try_wait().unwrap() {
            panic!("the writer exited with {status}");
        }
        let mut done = true;
        for d in ["mirror", "lake"] {
            done &= Cursors::new(&stage, d).unwrap().load().await.unwrap().is_some_and(|c| c.value.seq >= head);
        }
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "delivering 2M rows took over 10 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peak = peak.max(writer.peak_rss_kib().unwrap());
    eprintln!("2,000,000-row transaction in {parts} parts delivered in {:.1}s; writer peak RSS {} MiB", started.elapsed().as_secs_f64(), peak / 1024);
    assert!(writer.terminate().unwrap().success());
    assert!(peak < LIMIT_KIB, "writer peak RSS {} MiB exceeds 256 MiB", peak / 1024);

    let dst = session(&dst_url).await;
    let expected = checksum(&src, "public.big").await;
    assert_eq!(expected.0, ROWS + 1);
    assert_eq!(checksum(&dst, "public.big").await, expected, "the mirror equals the source");
    // The files hold every staged change: one per part for the big batch.
    let mut rows = 0;
    let mut count = 0;
    for entry in walk(&out_dir) {
        let bytes = bytes::Bytes::from(std::fs::read(&entry).unwrap());
        rows += strata_stager::codec::parquet_row_count(&object_store::path::Path::from("f"), bytes).unwrap();
        count += 1;
    }
    assert_eq!(rows, ROWS as u64 + 2, "every staged change is in the files");
    assert!(count >= parts, "{count} files for {parts} parts");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
