//! Several writer processes share destinations on one stage, half Postgres
//! mirrors and half Parquet files, while a workload runs on the source and
//! writers that own destinations are killed with `kill -9` (not
//! restarted): each Postgres destination's own audit of its cursor row and
//! the destination cluster's `pg_stat_activity` show one writer at a time,
//! orphaned destinations resume within the lease time, and every
//! destination ends equal to the source. The full run is `strata-bench
//! many-writers` (see `strata_tests::many_writers`).
//!
//! Each writer runs under its own host name, as writers on different
//! machines (or pods) do: none can see that another's process is gone, so
//! an orphaned destination waits for its lease to expire.
//! `STRATA_MANY_WRITERS_HOSTS=same` runs them under this host's name, where
//! a dead writer's destinations are taken over at once.
//!
//! `STRATA_MANY_WRITERS=WRITERSxDESTINATIONSxKILLS` (default `4x12x1`)
//! scales it; `STRATA_MANY_WRITERS_SEED` replays another seed.

use std::path::PathBuf;
use std::time::Duration;

use strata_stager::Stage;
use strata_tests::many_writers::{ManyWritersOptions, log_tails, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_killed_mid_delivery_hand_their_destinations_over_to_one_owner_each() {
    let scale = std::env::var("STRATA_MANY_WRITERS").unwrap_or_else(|_| "4x12x1".to_owned());
    let (writers, destinations, kills) = ManyWritersOptions::parse_scale(&scale).expect("STRATA_MANY_WRITERS");
    let seed = std::env::var("STRATA_MANY_WRITERS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let stage_dir = dir.path().join("stage");
    let opts = ManyWritersOptions {
        writers,
        destinations,
        kills,
        seed,
        pause_ms: (1000, 3000),
        reader_exe: PathBuf::from(env!("CARGO_BIN_EXE_strata-reader-under-test")),
        writer_exe: PathBuf::from(env!("CARGO_BIN_EXE_strata-writer-under-test")),
        work_dir: dir.path().join("run"),
        converge: Duration::from_secs(180),
        distinct_hosts: std::env::var("STRATA_MANY_WRITERS_HOSTS").map_or(true, |h| h != "same"),
    };
    let stage = Stage::local(&stage_dir).expect("local stage");
    match run(&opts, &format!("url = {:?}\n", stage_dir.display().to_string()), &stage).await {
        Ok(report) => {
            eprintln!("many writers: {report}");
            assert_eq!(report.kills.len(), kills, "every kill happened");
            assert!(report.handover_ms.len() >= kills, "each kill orphaned a destination that resumed: {:?}", report.handover_ms);
        }
        Err(e) => panic!("the many-writers run failed: {e:#}\n{}", log_tails(&opts.work_dir, writers, 30)),
    }
}
