//! The files destination: Parquet files on a local path, rolled up across
//! batches, read back with pyarrow after a kill -9 of the writer mid-way:
//! every staged change exactly once (redelivery overwrites, never
//! duplicates), fewer files than batches.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, staged_changes, wait_for_slot};
use strata_tests::writer::{spec_of, wait_caught_up, wait_staged};
use strata_writer::destinations::files::config::{FileFormat, FilesSpec};
use strata_writer::spec::{DestinationKind, StartPosition};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parquet_files_hold_every_change_once_across_a_kill() {
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE events (id int PRIMARY KEY, kind text, amount numeric(10,2))").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let out_dir = dir.path().join("lake");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, "max_rows = 25\n"), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let mut files = FilesSpec::new(out_dir.display().to_string(), FileFormat::Parquet);
    files.roll_up_rows = 120;
    files.roll_up_secs = 1;
    let spec = spec_of("lake", StartPosition::Earliest, DestinationKind::Files(files));
    strata_writer::control::add(&stage, &spec).await.unwrap();
    let config_path = dir.path().join("writer.toml");
    std::fs::write(&config_path, config_text(&src_url, &stage_dir, "")).unwrap();
    let spawn = || ServiceProcess::spawn_with(Path::new(WRITER), &config_path, std::process::Stdio::null(), &[]).unwrap();
    let mut writer = spawn();
    for i in 0..40 {
        admin
            .batch_execute(&format!(
                "INSERT INTO events SELECT g, 'k' || g % 4, g / 8.0 FROM generate_series({}, {}) g; UPDATE events SET amount = amount + 1 WHERE id = {}",
                i * 20 + 1,
                i * 20 + 20,
                i * 20 + 1
            ))
            .await
            .unwrap();
        if i == 25 {
            // Kill once something was written, and start again.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !out_dir.exists() {
                assert!(Instant::now() < deadline, "the writer wrote a file within 30 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            writer.kill9().unwrap();
            writer = spawn();
        }
    }
    wait_staged(&admin).await;
    wait_caught_up(&stage, "lake").await;
    assert!(writer.terminate().unwrap().success());

    let script = r#"
import sys, json, glob, os
import pyarrow.parquet as pq
paths = sorted(glob.glob(os.path.join(sys.argv[1], "**", "*.parquet"), recursive=True))
keys = []
for p in paths:
    t = pq.read_table(p)
    keys += [[l, o] for l, o in zip(t.column("_strata_lsn").to_pylist(), t.column("_strata_ord").to_pylist())]
print(json.dumps({"files": [os.path.relpath(p, sys.argv[1]) for p in paths], "keys": keys}))
"#;
    let out = std::process::Command::new(strata_tests::venv_python()).arg("-c").arg(script).arg(&out_dir).output().unwrap();
    assert!(out.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<(u64, u64)> = r["keys"].as_array().unwrap().iter().map(|k| (k[0].as_u64().unwrap(), k[1].as_u64().unwrap())).collect();
    let unique: HashSet<&(u64, u64)> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no change twice in the files");
    let staged: HashSet<(u64, u64)> = staged_changes(&stage, "main").await.unwrap().iter().map(|(_, _, c)| (c.lsn.as_u64(), u64::from(c.ord))).collect();
    assert_eq!(keys.iter().copied().collect::<HashSet<_>>(), staged, "every staged change is in the files");
    let files = r["files"].as_array().unwrap();
    let batches = StreamLog::new(&stage, "main").unwrap().head(None).await.unwrap().unwrap();
    assert!((files.len() as u64) < batches, "{} files for {batches} batches: rolled up", files.len());
    let first = files[0].as_str().unwrap();
    assert!(first.starts_with("public.events/20") && first.split('/').count() == 4 && first.ends_with("-v0001.parquet"), "{first}");
    reader.stop().await.unwrap();
}
