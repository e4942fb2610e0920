//! The SQS destination end to end: a real source, reader and writer
//! process, and the S3/SQS emulator injecting failures.
//!
//! - A FIFO queue gets every staged change exactly once, each key's changes
//!   in commit order, through throttled calls and failed batch entries;
//!   the emulator's counts show that a failed entry was sent again alone,
//!   never its siblings.
//! - A change too large for its queue takes the configured path: stored in
//!   the stage behind a pointer message, dead-lettered (`on_error = skip`),
//!   or stopping the destination with the change named (the default).

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::keys::DestinationKeys;
use strata_tests::emulator::Emulator;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, staged_changes, wait_for_slot};
use strata_tests::sqs::{Sqs, first_ids, spawn_service};
use strata_tests::writer::{spec_of, wait_caught_up, wait_failed, wait_staged};
use strata_writer::destinations::sqs::config::{Oversize, SqsSpec};
use strata_writer::spec::{DestinationKind, OnError, StartPosition};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

fn sqs_spec(emulator: &Emulator, url: &str) -> SqsSpec {
    let mut q = SqsSpec::new(url.to_owned());
    q.region = Some("us-east-1".to_owned());
    q.endpoint = Some(emulator.endpoint());
    q
}

fn spawn_writer(dir: &Path, stage_dir: &Path, src_url: &str, emulator: &Emulator) -> ServiceProcess {
    spawn_service(WRITER, dir, "writer", &config_text(src_url, stage_dir, ""), emulator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifo_queue_gets_every_change_once_in_key_order_through_failures() {
    let emulator = Emulator::start().await.unwrap();
    let sqs = Sqs::new(&emulator).await;
    let queue_url = sqs.create_queue("accounts.fifo", None).await.unwrap();
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, note text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, "max_rows = 150\n"), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    // New keys, and the same few keys updated again and again across
    // transactions: per-key order is what a FIFO queue must keep.
    for i in 0..30 {
        admin
            .batch_execute(&format!(
                "INSERT INTO accounts SELECT g, 0, 'n' || g FROM generate_series({lo}, {hi}) g;
                 UPDATE accounts SET balance = balance + 1 WHERE id % 10 = {m};
                 UPDATE accounts SET balance = balance + 1 WHERE id <= 5;
                 DELETE FROM accounts WHERE id = {hi} AND {i} % 3 = 0;",
                lo = i * 20 + 1,
                hi = i * 20 + 20,
                m = i % 10,
            ))
            .await
            .unwrap();
    }
    wait_staged(&admin).await;
    let stage = Stage::local(&stage_dir).unwrap();
    let staged = staged_changes(&stage, "main").await.unwrap();
    assert!(staged.len() > 1000, "a workload worth checking ({} changes)", staged.len());

    // Three whole calls throttled, then every 7th entry failed by SQS (40 in all).
    sqs.inject(serde_json::json!({"queue": "accounts.fifo", "throttle_calls": 3, "fail_every": 7, "fail_budget": 40, "code": "InternalError"})).await.unwrap();
    let mut q = sqs_spec(&emulator, &queue_url);
    q.in_flight = 4;
    strata_writer::control::add(&stage, &spec_of("queue", StartPosition::Earliest, DestinationKind::Sqs(q))).await.unwrap();
    let writer = spawn_writer(dir.path(), &stage_dir, &src_url, &emulator);
    wait_caught_up(&stage, "queue").await;
    assert!(writer.terminate().unwrap().success());

    let received = sqs.drain(&queue_url, Duration::from_secs(1), staged.len() * 2).await.unwrap();
    let position: HashMap<String, usize> = staged.iter().enumerate().map(|(i, (_, _, c))| (format!("main:{}:{}", c.lsn.as_u64(), c.ord), i)).collect();
    let ids = first_ids(&received);
    assert_eq!(ids.len(), received.len(), "no change arrived twice");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), position.keys().cloned().collect::<HashSet<_>>(), "every staged change arrived");
    let mut by_group: HashMap<String, Vec<usize>> = HashMap::new();
    for r in &received {
        by_group.entry(r.group.clone().unwrap()).or_default().push(position[r.body["id"].as_str().unwrap()]);
    }
    assert!(by_group.len() > 500, "one group per key ({} groups)", by_group.len());
    for (group, positions) in &by_group {
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "group {group} out of commit order: {positions:?}");
    }
    let hot = by_group.values().map(Vec::len).max().unwrap();
    assert!(hot >= 30, "a hot key's {hot} changes stayed in order");

    let stats = sqs.stats("accounts.fifo").await.unwrap();
    assert_eq!((stats["throttled"], stats["failed"]), (3, 40), "{stats:?}");
    // Each failed entry was sent once more, alone: nothing else twice.
    assert_eq!(stats["entries"], staged.len() as u64 + 40, "siblings of a failed entry are not resent: {stats:?}");
    assert!(stats["calls"] * 2 < stats["entries"], "entries go in batches: {stats:?}");
    reader.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_change_is_staged_skipped_or_stops_the_destination() {
    let emulator = Emulator::start().await.unwrap();
    let sqs = Sqs::new(&emulator).await;
    let mut queues = HashMap::new();
    for name in ["staged", "skipped", "paused"] {
        queues.insert(name, sqs.create_queue(name, Some(1024)).await.unwrap());
    }
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE docs (id int PRIMARY KEY, body text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, ""), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    // One batch each: small rows, the large row, small rows.
    for sql in [
        "INSERT INTO docs SELECT g, 'small ' || g FROM generate_series(1, 5) g",
        "INSERT INTO docs VALUES (6, repeat(md5('big'), 100))",
        "INSERT INTO docs SELECT g, 'small ' || g FROM generate_series(7, 9) g",
    ] {
        admin.batch_execute(sql).await.unwrap();
        wait_staged(&admin).await;
    }
    let stage = Stage::local(&stage_dir).unwrap();
    let mut staged = sqs_spec(&emulator, &queues["staged"]);
    staged.oversize = Oversize::Stage;
    let mut skipped = spec_of("skipped", StartPosition::Earliest, DestinationKind::Sqs(sqs_spec(&emulator, &queues["skipped"])));
    skipped.on_error = OnError::Skip;
    for s in [
        spec_of("staged", StartPosition::Earliest, DestinationKind::Sqs(staged)),
        skipped,
        spec_of("paused", StartPosition::Earliest, DestinationKind::Sqs(sqs_spec(&emulator, &queues["paused"]))),
    ] {
        strata_writer::control::add(&stage, &s).await.unwrap();
    }
    let writer = spawn_writer(dir.path(), &stage_dir, &src_url, &emulator);
    wait_caught_up(&stage, "staged").await;
    wait_caught_up(&stage, "skipped").await;
    let error = wait_failed(&stage, "paused").await;
    assert!(error.contains("over the queue's 1024") && error.contains("public.docs"), "the error names the change: {error}");
    assert!(writer.terminate().unwrap().success());
    let big_id = {
        let all = staged_changes(&stage, "main").await.unwrap();
        let (_, _, c) = all.iter().find(|(_, _, c)| matches!(c.after.as_deref(), Some([strata_common::Value::Int32(6), ..]))).unwrap();
        format!("main:{}:{}", c.lsn.as_u64(), c.ord)
    };
    let quiet = Duration::from_secs(1);

    // stage: all nine arrive; the large one as a pointer to its envelope.
    let got = sqs.drain(&queues["staged"], quiet, 100).await.unwrap();
    assert_eq!(first_ids(&got).len(), 9);
    let pointer = got.iter().find(|r| r.body["id"] == big_id.as_str()).unwrap();
    assert_eq!(pointer.body["after"], serde_json::Value::Null);
    let url = pointer.body["offloaded"]["url"].as_str().unwrap();
    let key = url.strip_prefix(&format!("{}/", stage.url())).expect("the pointer names a key of the stage");
    let payload = stage.get(&object_store::path::Path::parse(key).unwrap()).await.unwrap();
    assert_eq!(pointer.body["offloaded"]["sha256"], hex::encode(Sha256::digest(&payload)));
    assert_eq!(pointer.body["offloaded"]["bytes"], payload.len());
    let envelope: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((envelope["id"].as_str(), envelope["after"]["body"].as_str().map(str::len)), (Some(big_id.as_str()), Some(3200)));

    // skip: eight arrive, the large one is in the dead-letter folder.
    let got = sqs.drain(&queues["skipped"], quiet, 100).await.unwrap();
    let ids = first_ids(&got);
    assert_eq!(ids.len(), 8);
    assert!(!ids.contains(&big_id));
    let letters = stage.list(&DestinationKeys::new("skipped").unwrap().dead_letter_prefix()).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter: serde_json::Value = serde_json::from_slice(&stage.get(&letters[0].location).await.unwrap()).unwrap();
    assert_eq!(letter["after"]["id"], 6);
    assert!(letter["error"].as_str().unwrap().contains(&big_id), "{letter}");

    // pause: the first batch only.
    let got = sqs.drain(&queues["paused"], quiet, 100).await.unwrap();
    assert_eq!(first_ids(&got).len(), 5);
    reader.stop().await.unwrap();
}

/// `destination add --sqs` stores what it was told, and refuses bad
/// settings naming the field.
#[test]
fn destination_add_sqs_stores_the_spec_and_names_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let config = dir.path().join("w.toml");
    std::fs::write(&config, config_text("postgres://localhost/unused", &stage_dir, "")).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(WRITER).arg("--config").arg(&config).args(["destination", "add"]).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo";
    let users = "https://sqs.eu-west-1.amazonaws.com/123456789012/users";
    let (code, out) =
        run(&["q", "--sqs", queue, "--sqs-route", &format!("public.users={users}"), "--in-flight", "4", "--oversize", "stage", "--batch-size", "5"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("sqs ") && out.contains("1 routed tables"), "{out}");
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(stage_dir.join("destinations/q/spec.json")).unwrap()).unwrap();
    assert_eq!(
        spec["destination"],
        serde_json::json!({"type": "sqs", "queue_url": queue, "routes": {"public.users": users}, "batch_size": 5, "in_flight": 4,
                           "max_message_bytes": 262144, "oversize": "stage", "timeout_secs": 30})
    );
    for (args, field) in [
        (vec!["bad1", "--sqs", "orders"], "queue_url"),
        (vec!["bad2", "--sqs", queue, "--batch-size", "11"], "batch_size"),
        (vec!["bad3", "--sqs", queue, "--sqs-route", "public.users"], "--sqs-route"),
        (vec!["bad4", "--sqs", queue, "--in-flight", "0"], "in_flight"),
        (vec!["bad5", "--files", "/tmp/x", "--batch-size", "3"], "--batch-size"),
    ] {
        let (code, out) = run(&args);
        assert_eq!(code, Some(1), "{args:?}: {out}");
        assert!(out.contains(field), "{args:?} names {field}: {out}");
        assert!(!stage_dir.join(format!("destinations/{}/spec.json", args[0])).exists(), "nothing stored for {args:?}");
    }
}
