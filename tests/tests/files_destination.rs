//! The files destination: Parquet files on a local path, rolled up across
//! batches, read back with pyarrow after a kill -9 of the writer mid-way:
//! every staged change exactly once (redelivery overwrites, never
//! duplicates), fewer files than batches. Staged files joined undecoded
//! equal the files written from decoded changes.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::codec::decode_file;
use strata_stager::log::StreamLog;
use strata_tests::fixtures::{ALL_TYPES_DDL, ALL_TYPES_ROWS};
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, staged_changes, wait_for_slot};
use strata_tests::writer::{replay_request, spec_of, wait_caught_up, wait_replay, wait_staged};
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

/// Every `.parquet` file under `dir` by its relative path, decoded (as
/// text, so that NaN equals NaN).
fn decoded_files(dir: &Path) -> BTreeMap<String, String> {
    let parquet = strata_tests::files_under(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet"));
    parquet
        .map(|rel| {
            let name = rel.display().to_string();
            let f = decode_file(&object_store::path::Path::from(name.as_str()), std::fs::read(dir.join(&rel)).unwrap().into()).unwrap();
            let text = format!("{} v{}: {:?}", f.table, f.schema_version, f.changes);
            (name, text)
        })
        .collect()
}

/// A Parquet destination without transforms is given the staged files
/// undecoded and joins them; one whose transforms keep everything goes
/// through decoded changes. Both must write the same files holding the same
/// changes in the same order, over every type's extreme values, schema
/// versions, a snapshot, and a replay `--from` a time inside a batch (its
/// first batch cut, so one group mixes a decoded batch with undecoded ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staged_files_joined_undecoded_equal_the_files_written_from_changes() {
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute(ALL_TYPES_DDL).await.unwrap();
    admin.batch_execute(ALL_TYPES_ROWS).await.unwrap();
    admin
        .batch_execute("CREATE TABLE events (id int PRIMARY KEY, kind text); INSERT INTO events SELECT g, 'old' FROM generate_series(1, 300) g")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let text = config_text(&src_url, &stage_dir, "max_rows = 25\n");
    let reader = RunningReader::start(Config::from_toml("t", &text, &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    for i in 0..30 {
        let id = 1000 + i * 20;
        admin.batch_execute(&format!("INSERT INTO events SELECT g, 'k' || g % 4 FROM generate_series({id}, {}) g", id + 19)).await.unwrap();
        admin.batch_execute(&format!("UPDATE events SET kind = 'u{i}' WHERE id % 30 = {i}; DELETE FROM events WHERE id = {}", id + 3)).await.unwrap();
        if i == 15 {
            admin.batch_execute("ALTER TABLE events ADD COLUMN note text; UPDATE all_types SET t = t || '!'").await.unwrap();
        }
    }
    wait_staged(&admin).await;

    let stage = Stage::local(&stage_dir).unwrap();
    let lake = |name: &str| {
        let mut files = FilesSpec::new(dir.path().join(name).display().to_string(), FileFormat::Parquet);
        files.roll_up_rows = 120;
        files.roll_up_secs = 0;
        spec_of(name, StartPosition::Earliest, DestinationKind::Files(files))
    };
    let mut decoded = lake("decoded");
    decoded.transforms.include = vec!["public.*".to_owned()];
    strata_writer::control::add(&stage, &lake("joined")).await.unwrap();
    strata_writer::control::add(&stage, &decoded).await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let (cfg, t) = (Config::from_toml("t", &text, &[]).unwrap(), token.clone());
    let writer = tokio::spawn(async move { strata_writer::run::run(&cfg, t).await });
    let compare = || {
        let (joined, decoded) = (decoded_files(&dir.path().join("joined")), decoded_files(&dir.path().join("decoded")));
        assert!(joined.len() > 5, "several files were written ({})", joined.len());
        assert_eq!(joined.keys().collect::<Vec<_>>(), decoded.keys().collect::<Vec<_>>(), "the same files");
        for (path, file) in &joined {
            assert_eq!(file, &decoded[path], "{path} holds the same changes in the same order");
        }
    };
    wait_caught_up(&stage, "joined").await;
    wait_caught_up(&stage, "decoded").await;
    compare();

    // A time inside a staged batch: the second commit of a batch holding two.
    let staged = staged_changes(&stage, "main").await.unwrap();
    let at = staged
        .iter()
        .find_map(|(seq, _, c)| staged.iter().find(|(s, _, e)| s == seq && e.commit_ts < c.commit_ts).map(|_| c.commit_ts))
        .expect("a batch holds two commits");
    for name in ["joined", "decoded"] {
        strata_writer::replay::submit(&stage, &replay_request(&format!("r-{name}"), name, Some(at), None)).await.unwrap();
    }
    for name in ["joined", "decoded"] {
        wait_replay(&stage, &format!("r-{name}")).await;
        wait_caught_up(&stage, name).await;
    }
    compare();
    token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();
}
