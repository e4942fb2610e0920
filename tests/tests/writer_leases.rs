//! Writers on an S3 stage while nothing flows: an idle destination's long
//! lease, the control signal instead of listings, and a graceful stop that
//! hands destinations over at once rather than when the lease would expire.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::keys::DestinationKeys;
use strata_stager::lease::{Lease, Leases};
use strata_tests::emulator::Emulator;
use strata_tests::http::stage_requests;
use strata_tests::pg::PgCluster;
use strata_tests::process::free_port;
use strata_tests::reader::{RunningReader, ServiceProcess, config_text_for, wait_for_slot};
use strata_tests::writer::{checksum, session, spec, wait_caught_up, wait_staged};
use strata_writer::run::{IDLE_AFTER, IDLE_LEASE_TTL};
use strata_writer::spec::{PostgresMode, StartPosition};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

fn writer_config(dir: &Path, name: &str, src_url: &str, stage_toml: &str, port: u16) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config_text_for(src_url, stage_toml, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))).unwrap();
    path
}

async fn lease(stage: &Stage, destination: &str) -> Lease {
    Leases::new(stage, DestinationKeys::new(destination).unwrap().lease()).read().await.unwrap().unwrap().value
}

/// Waits until `destination`'s lease is held by process `pid` and `until`
/// holds of it; panics after `limit`.
async fn wait_lease(stage: &Stage, destination: &str, pid: u32, limit: Duration, until: impl Fn(&Lease) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let l = lease(stage, destination).await;
        if l.holder.contains(&format!(":{pid}:")) && l.expires_at > strata_common::Timestamp::now() && until(&l) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{destination}'s lease is not held by {pid} as expected after {limit:?}: {l:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a service requested of the stage between two scrapes.
fn since(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, op: &str) -> u64 {
    after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_writers_on_s3_stay_quiet_and_hand_over_at_once_on_a_graceful_stop() {
    let emulator = Emulator::start().await.unwrap();
    let (stage_toml, stage) = emulator.stage_config("strata").await.unwrap();
    let cluster = PgCluster::shared();
    let src_url = cluster.fresh_database().await.unwrap();
    let dst_url = cluster.fresh_database().await.unwrap();
    let src = session(&src_url).await;
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)").await.unwrap();
    let reader = RunningReader::start(Config::from_toml("t", &config_text_for(&src_url, &stage_toml, ""), &[]).unwrap());
    wait_for_slot(&src, "strata_main").await.unwrap();
    strata_writer::control::add(&stage, &spec("d0", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let a = ServiceProcess::spawn(Path::new(WRITER), &writer_config(dir.path(), "a", &src_url, &stage_toml, port_a)).unwrap();
    src.batch_execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g").await.unwrap();
    wait_staged(&src).await;
    wait_caught_up(&stage, "d0").await;

    // Caught up on a remote stage for IDLE_AFTER, the destination's lease is
    // the long one; not before.
    let idle_ttl = i64::try_from(IDLE_LEASE_TTL.as_micros()).unwrap();
    let caught_up = std::time::Instant::now();
    wait_lease(&stage, "d0", a.pid(), IDLE_AFTER + Duration::from_secs(30), |l| l.expires_at.0 - l.renewed_at.0 == idle_ttl).await;
    // (Seen caught up here up to a renewal, 5 s, after the writer was.)
    assert!(caught_up.elapsed() >= IDLE_AFTER / 2, "the long lease came {:?} after catching up", caught_up.elapsed());

    // A second writer finds the lease held and does not read it again
    // before it expires; neither writer lists the control objects while
    // nothing changes.
    let b = ServiceProcess::spawn(Path::new(WRITER), &writer_config(dir.path(), "b", &src_url, &stage_toml, port_b)).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (a0, b0) = (stage_requests(port_a).await.unwrap(), stage_requests(port_b).await.unwrap());
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (a1, b1) = (stage_requests(port_a).await.unwrap(), stage_requests(port_b).await.unwrap());
    assert_eq!((since(&a1, &a0, "list"), since(&b1, &b0, "list")), (0, 0), "no listing while nothing changes: a {a1:?}, b {b1:?}");
    assert_eq!(since(&b1, &b0, "put"), 0, "b writes nothing: {b1:?}");
    assert!(since(&b1, &b0, "get") <= 4, "b reads only the control signal, every 5 s: {b0:?} → {b1:?}");
    assert!(since(&a1, &a0, "get") <= 10, "a polls its idle destination slower and slower: {a0:?} → {a1:?}");

    // A graceful stop releases the lease and signals it: b takes over long
    // before the idle lease would have expired.
    a.terminate().unwrap();
    let handover = wait_lease(&stage, "d0", b.pid(), Duration::from_secs(60), |_| true).await;
    assert!(handover < Duration::from_secs(15), "b took over after {handover:?}");
    src.batch_execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(11, 20) g; UPDATE t SET v = 'changed' WHERE id <= 5").await.unwrap();
    wait_staged(&src).await;
    wait_caught_up(&stage, "d0").await;
    assert_eq!(checksum(&session(&dst_url).await, "public.t").await, checksum(&src, "public.t").await);
    b.terminate().unwrap();
    reader.stop().await.unwrap();
}
