//! Helpers for writer tests: sessions, table checksums, and waits on the
//! pipeline's progress.

use std::time::Duration;

use strata_common::Timestamp;
use strata_common::pgtext::setting_statements;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_writer::replay::{ReplayRequest, ReplayState, Then};
use strata_writer::spec::{DestinationKind, DestinationSpec, PostgresMode, PostgresSpec, StartPosition};
use tokio_postgres::Client;

use crate::pg::connect;

pub async fn session(url: &str) -> Client {
    let c = connect(url).await.expect("test helper");
    for (_, sql) in setting_statements() {
        c.batch_execute(&sql).await.expect("test helper");
    }
    c
}

/// md5 of the table's rows in their text form, sorted: equal iff the rows are.
pub async fn checksum(c: &Client, table: &str) -> (i64, String) {
    let row = c
        .query_one(&format!("SELECT count(*), coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '') FROM (SELECT t::text AS r FROM {table} t) s"), &[])
        .await
        .unwrap_or_else(|e| panic!("checksum of {table}: {e}"));
    (row.get(0), row.get(1))
}

/// A Postgres destination of stream `main`.
pub fn spec(name: &str, url: &str, start: StartPosition, mode: PostgresMode) -> DestinationSpec {
    spec_of(name, start, DestinationKind::Postgres(PostgresSpec { url: url.to_owned(), mode }))
}

/// A destination of stream `main` with default policies.
pub fn spec_of(name: &str, start: StartPosition, destination: DestinationKind) -> DestinationSpec {
    let now = Timestamp::now();
    DestinationSpec {
        format: 1,
        name: name.to_owned(),
        stream: "main".to_owned(),
        start,
        paused: false,
        on_error: Default::default(),
        transforms: Default::default(),
        schedule: Default::default(),
        destination,
        created_at: now,
        updated_at: now,
    }
}

/// Waits until `destination`'s cursor reaches the stream's head.
pub async fn wait_caught_up(stage: &Stage, destination: &str) {
    let log = StreamLog::new(stage, "main").expect("test helper");
    let cursors = strata_stager::cursor::Cursors::new(stage, destination).expect("test helper");
    for _ in 0..1200 {
        let head = log.head(None).await.expect("test helper").unwrap_or(0);
        let cursor = cursors.load().await.expect("test helper").map_or(0, |c| c.value.seq);
        if head > 0 && cursor >= head {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("destination {destination} did not catch up within 60 s");
}

/// Waits until `destination`'s worker shows `failed` in its lease status;
/// returns the error it shows.
pub async fn wait_failed(stage: &Stage, destination: &str) -> String {
    let keys = strata_stager::keys::DestinationKeys::new(destination).expect("test helper");
    let lease = strata_stager::lease::Leases::new(stage, keys.lease());
    for _ in 0..600 {
        if let Some(status) = lease.read().await.expect("test helper").map(|l| l.value.status)
            && status["state"] == "failed"
        {
            return status["last_error"].as_str().unwrap_or_default().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("destination {destination} was not shown as failed within 60 s");
}

/// Waits until the reader has staged everything committed so far: the
/// reader confirms a position to its slot only once everything before it
/// is durable in the stage (or was nothing to stage). The target is the WAL
/// flush position, which a returned commit has reached (test clusters keep
/// `synchronous_commit = on`; with it off a commit can return before its
/// WAL is written, and the target would fall short of it).
pub async fn wait_staged(source: &Client) {
    let target: String = source.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).await.expect("test helper").get(0);
    for _ in 0..1200 {
        // NULL while the slot is still being created (it shows as active
        // before it has a consistent point).
        let confirmed: Option<bool> = source
            .query_one("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'strata_main'", &[&target])
            .await
            .expect("test helper")
            .get(0);
        if confirmed == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Say what the slot shows, to tell a stopped reader from a slow one.
    let slot = source
        .query_one("SELECT confirmed_flush_lsn::text, active, pg_current_wal_flush_lsn()::text FROM pg_replication_slots WHERE slot_name = 'strata_main'", &[])
        .await
        .map(|r| format!("confirmed {:?}, active {:?}, flush now {:?}", r.get::<_, Option<String>>(0), r.get::<_, bool>(1), r.get::<_, Option<String>>(2)))
        .unwrap_or_else(|e| e.to_string());
    panic!("the reader did not stage up to {target} within 60 s (slot: {slot})");
}

/// Waits until everything committed on the source is staged, delivers the
/// local stage to a fresh mirror destination, and asserts that each of
/// `tables` there equals the source (and holds more than `min_rows` rows, so
/// the comparison means something).
pub async fn assert_mirror_equals_source(stage: &Stage, stage_dir: &std::path::Path, src_url: &str, tables: &[&str], min_rows: i64) {
    let src = session(src_url).await;
    wait_staged(&src).await;
    let dst_url = crate::pg::PgCluster::shared().fresh_database().await.expect("test helper");
    let text = crate::reader::config_text(src_url, stage_dir, "");
    let cfg = strata_common::config::Config::from_toml("test config", &text, &[]).expect("test helper");
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&cfg, t).await });
    strata_writer::control::add(stage, &spec("mirror", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.expect("test helper");
    wait_caught_up(stage, "mirror").await;
    let dst = session(&dst_url).await;
    for table in tables {
        let expected = checksum(&src, table).await;
        assert!(expected.0 > min_rows, "{table} has more than {min_rows} rows to compare ({})", expected.0);
        assert_eq!(checksum(&dst, table).await, expected, "{table} rebuilt from the stage equals the source");
    }
    token.cancel();
    writer.await.expect("writer task").expect("writer run");
}

/// A pending replay request of `destination`: `--from` or `--as-of` (then stop).
pub fn replay_request(id: &str, destination: &str, from: Option<Timestamp>, as_of: Option<Timestamp>) -> ReplayRequest {
    let now = Timestamp::now();
    ReplayRequest {
        format: 1,
        id: id.to_owned(),
        destination: destination.to_owned(),
        from,
        as_of,
        then: Then::Stop,
        state: ReplayState::Pending,
        created_at: now,
        updated_at: now,
        error: None,
    }
}

/// Waits until replay `id` is done; panics if it failed.
pub async fn wait_replay(stage: &Stage, id: &str) {
    for _ in 0..1200 {
        let all = strata_writer::replay::list(stage).await.expect("test helper");
        if let Some(r) = all.iter().find(|r| r.value.id == id) {
            match r.value.state {
                ReplayState::Done => return,
                ReplayState::Failed => panic!("replay {id} failed: {:?}", r.value.error),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replay {id} did not finish within 60 s");
}
