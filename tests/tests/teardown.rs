//! `strata-reader teardown` through the real command line, against a
//! throwaway PostgreSQL: it drops nothing unless confirmed, nothing while a
//! reader runs (streaming, or holding the stream's lease between two
//! connections), then the slot and the publication the reader created,
//! and says so; run again, it finds nothing to drop. A publication the
//! reader did not create is kept, and the stage is never touched.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use strata_common::Timestamp;
use strata_reader::setup::publication_marker;
use strata_stager::Stage;
use strata_stager::keys::StreamKeys;
use strata_stager::lease::Leases;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config, wait_for_slot, write_config};
use strata_tests::writer::wait_staged;
use tokio_postgres::Client;

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");

/// `strata-reader --config CONFIG teardown ARGS`, with none of the caller's
/// `STRATA_*` variables.
fn teardown(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(READER);
    cmd.arg("--config").arg(config).arg("teardown").args(args).env("RUST_LOG", "warn");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STRATA_")) {
        cmd.env_remove(k);
    }
    cmd.output().unwrap()
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Asserts the exit status and that the output names each of `named`.
fn expect(out: &Output, code: i32, named: &[&str]) -> String {
    let text = said(out);
    assert_eq!(out.status.code(), Some(code), "exit status of teardown; it said: {text}");
    for n in named {
        assert!(text.contains(n), "{n:?} is in the output: {text}");
    }
    text
}

/// (slot exists, publication exists) for `strata_main`.
async fn objects(db: &Client, publication: &str) -> (bool, bool) {
    let slot: i64 = db.query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'strata_main'", &[]).await.unwrap().get(0);
    let publ: i64 = db.query_one("SELECT count(*) FROM pg_publication WHERE pubname = $1", &[&publication]).await.unwrap().get(0);
    (slot == 1, publ == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn teardown_drops_the_slot_and_publication_only_when_confirmed_and_no_reader_runs() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let db = connect(&url).await.unwrap();
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let cfg = write_config(dir.path(), &url, &stage_dir, "").unwrap();
    let reader = ServiceProcess::spawn(Path::new(READER), &cfg).unwrap();
    wait_for_slot(&db, "strata_main").await.unwrap();
    db.batch_execute("INSERT INTO t VALUES (2, 'two')").await.unwrap();
    wait_staged(&db).await;
    let comment: Option<String> =
        db.query_one("SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = 'strata_main'", &[]).await.unwrap().get(0);
    assert_eq!(comment.as_deref(), Some(publication_marker("main").as_str()), "the reader marks the publication it creates");

    // A streaming reader holds the slot: refused, confirmed or not, naming
    // the slot and the process.
    let pid: i32 = db.query_one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'strata_main'", &[]).await.unwrap().get(0);
    for args in [&[][..], &["--yes"][..], &["--dry-run"][..]] {
        let text = expect(&teardown(&cfg, args), 1, &["\"strata_main\" is active", &format!("process {pid}"), "Nothing dropped"]);
        assert!(!text.contains("dropped replication slot"), "{args:?}: {text}");
        assert_eq!(objects(&db, "strata_main").await, (true, true), "{args:?} dropped nothing");
    }
    let status = reader.terminate().unwrap();
    assert!(status.success(), "the reader stops cleanly: {status:?}");
    let stage_before = strata_tests::files_under(&stage_dir);

    // Not confirmed: the plan, a refusal, nothing dropped.
    let plan = ["drop replication slot \"strata_main\"", "drop publication \"strata_main\"", "created by strata-reader", "keep the stage"];
    let text = expect(&teardown(&cfg, &[]), 1, &plan);
    assert!(text.contains("not confirmed, nothing dropped") && text.contains("--yes"), "{text}");
    assert_eq!(objects(&db, "strata_main").await, (true, true), "nothing dropped without --yes");
    expect(&teardown(&cfg, &["--dry-run"]), 0, &[&plan[..], &["dry run: nothing dropped"][..]].concat());
    assert_eq!(objects(&db, "strata_main").await, (true, true), "nothing dropped by a dry run");
    expect(&teardown(&cfg, &["--yes", "--dry-run"]), 2, &["cannot be used with"]);

    // Confirmed: both go, and it says so.
    expect(&teardown(&cfg, &["--yes"]), 0, &["dropped replication slot \"strata_main\"", "dropped publication \"strata_main\"", "new source.stream"]);
    assert_eq!(objects(&db, "strata_main").await, (false, false), "slot and publication dropped");
    assert_eq!(strata_tests::files_under(&stage_dir), stage_before, "the stage is left as it was");

    // Again, with or without --yes: nothing to drop, exit 0.
    for args in [&["--yes"][..], &[][..]] {
        let text = expect(&teardown(&cfg, args), 0, &["no replication slot \"strata_main\"", "no publication \"strata_main\"", "nothing to drop"]);
        assert!(!text.contains("dropped"), "{args:?}: {text}");
    }
    let rows: i64 = db.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(rows, 2, "the source's data is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publication_strata_did_not_create_is_kept_and_a_held_lease_refuses() {
    let cluster = PgCluster::shared();
    let url = cluster.fresh_database().await.unwrap();
    let db = connect(&url).await.unwrap();
    // The least-privilege set-up: an administrator creates the publication
    // under strata's default name, and the reader uses it as it is.
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION strata_main FOR TABLE t").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let cfg = write_config(dir.path(), &url, &stage_dir, "").unwrap();
    let reader = RunningReader::start(config(&url, &stage_dir, ""));
    wait_for_slot(&db, "strata_main").await.unwrap();
    reader.stop().await.unwrap();

    // A reader on another host, between two connections: its slot is idle,
    // its lease is live. Refused, naming the holder.
    let stage = Stage::local(&stage_dir).unwrap();
    let leases = Leases::new(&stage, StreamKeys::new("main").unwrap().reader());
    let held = leases.acquire("reader@another-host:4242:0a1b2c3d", Duration::from_secs(600), Timestamp::now()).await.unwrap();
    expect(&teardown(&cfg, &["--yes"]), 1, &["holds its lease", "reader@another-host:4242:0a1b2c3d", "Nothing dropped"]);
    assert_eq!(objects(&db, "strata_main").await, (true, true), "nothing dropped under a live lease");
    leases.release(&held, Timestamp::now()).await.unwrap();

    // The slot goes; the administrator's publication stays, with the
    // statement that would drop it.
    let plan = ["drop replication slot \"strata_main\"", "keep publication \"strata_main\"", "DROP PUBLICATION \"strata_main\""];
    expect(&teardown(&cfg, &[]), 1, &plan);
    let text = expect(&teardown(&cfg, &["--yes"]), 0, &[&plan[..], &["dropped replication slot \"strata_main\""][..]].concat());
    assert!(!text.contains("dropped publication"), "{text}");
    assert_eq!(objects(&db, "strata_main").await, (false, true), "slot dropped, publication kept");
    let text = expect(&teardown(&cfg, &["--yes"]), 0, &["no replication slot", "keep publication \"strata_main\"", "nothing to drop"]);
    assert!(!text.contains("dropped"), "{text}");

    // A publication another stream's reader created is not this stream's.
    db.batch_execute(&format!(
        "CREATE PUBLICATION shared FOR TABLE t; COMMENT ON PUBLICATION shared IS {}",
        strata_common::ident::quote_literal(&publication_marker("other"))
    ))
    .await
    .unwrap();
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("stream = \"main\"", "stream = \"main\"\npublication = \"shared\"")).unwrap();
    expect(&teardown(&cfg, &["--yes"]), 0, &["keep publication \"shared\"", "for stream \"main\"", "nothing to drop"]);
    assert_eq!(objects(&db, "shared").await, (false, true), "another stream's publication is kept");
}
