//! No secret leaks. A reader and a writer run at trace level with a source
//! password (read from a file), an AWS secret key, a destination password,
//! a webhook secret and a masking key, plus a destination whose (wrong)
//! password fails authentication; then every log line, `status --json`,
//! `destination list --json`, both `/metrics` and every object in the
//! stage are searched for each secret.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use strata_common::config::SecretString;
use strata_stager::Stage;
use strata_tests::emulator::Emulator;
use strata_tests::http::{TestServer, get};
use strata_tests::process::free_port;
use strata_tests::reader::{ServiceProcess, wait_for_slot};
use strata_tests::tls::{PASSWORD, TlsCluster};
use strata_tests::writer::{spec, spec_of, wait_caught_up, wait_failed, wait_staged};
use strata_writer::destinations::webhook::config::WebhookSpec;
use strata_writer::spec::{DestinationKind, PostgresMode, StartPosition};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");
const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

const AWS_SECRET: &str = "awsSECRETkey0f9e8d7c6b5a4";
const HOOK_SECRET: &str = "whsec_aG9vay1zZWNyZXQtNWU2ZjdhOGI=";
const MASK_KEY: &str = "maskKEY1a2b3c4d5e6f";
const WRONG_PASSWORD: &str = "wrongPW9z8y7x6w";

fn config_text(listen: u16, stage_url: &str, options: &BTreeMap<String, SecretString>, source_url: &str) -> String {
    let mut text = format!("[telemetry]\nlisten = \"127.0.0.1:{listen}\"\nlog_level = \"trace\"\n[stage]\nurl = {stage_url:?}\n[stage.options]\n");
    for (k, v) in options {
        text.push_str(&format!("{k} = {:?}\n", v.expose()));
    }
    text.push_str(&format!("[source]\nurl = {source_url:?}\nstream = \"main\"\ntables = [\"public.*\"]\n[batch]\nmax_age = \"50ms\"\n"));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_appears_in_logs_status_metrics_or_the_stage() {
    let cluster = TlsCluster::start().await.unwrap();
    let (src_db, dst_db) = (cluster.pg.create_database().await.unwrap(), cluster.pg.create_database().await.unwrap());
    let admin = cluster.pg.connect(&src_db).await.unwrap();
    admin
        .batch_execute("CREATE TABLE users (id int PRIMARY KEY, email text, note text); INSERT INTO users SELECT g, 'u' || g || '@example.com', 'n' FROM generate_series(1, 100) g")
        .await
        .unwrap();
    let emulator = Emulator::start().await.unwrap();
    let bucket = format!("secrets-{}", uuid::Uuid::new_v4().simple());
    emulator.create_bucket(&bucket).await.unwrap();
    let mut options = emulator.s3_options();
    options.insert("aws_access_key_id".to_owned(), SecretString::new("AKIDSTRATATEST"));
    options.insert("aws_secret_access_key".to_owned(), SecretString::new(AWS_SECRET));
    let stage_url = format!("s3://{bucket}/s");
    let stage = Stage::open(&stage_url, &options).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pg-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let source_url =
        format!("postgres://strata:${{file:{}}}@localhost:{}/{src_db}?{}", password_file.display(), cluster.pg.port, cluster.verified("verify-full"));
    let (reader_port, writer_port) = (free_port(), free_port());
    let reader_config = dir.path().join("reader.toml");
    std::fs::write(&reader_config, config_text(reader_port, &stage_url, &options, &source_url)).unwrap();
    let writer_config = dir.path().join("writer.toml");
    std::fs::write(&writer_config, config_text(writer_port, &stage_url, &options, &source_url)).unwrap();
    let (reader_log, writer_log) = (dir.path().join("reader.log"), dir.path().join("writer.log"));
    let trace = ("RUST_LOG", "trace");
    let reader = ServiceProcess::spawn_logged(Path::new(READER), &reader_config, &reader_log, &[trace]).unwrap();
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin.batch_execute("UPDATE users SET note = 'changed' WHERE id % 3 = 0; DELETE FROM users WHERE id > 90").await.unwrap();
    wait_staged(&admin).await;

    let hook = TestServer::start(|_, _| (200, vec![])).await.unwrap();
    let dest_url = |password_ref: &str| format!("postgres://strata:{password_ref}@localhost:{}/{dst_db}?{}", cluster.pg.port, cluster.verified("verify-full"));
    let mut mirror = spec("mirror", &dest_url("${DEST_PW}"), StartPosition::Earliest, PostgresMode::Mirror);
    mirror.transforms = serde_json::from_value(serde_json::json!({
        "columns": [{"table": "public.users", "column": "email", "action": "hash"}],
        "hash_key": "${MASK_KEY}"
    }))
    .unwrap();
    for s in [
        mirror,
        spec("refused", &dest_url("${WRONG_PW}"), StartPosition::Earliest, PostgresMode::Mirror),
        spec_of("hook", StartPosition::Earliest, DestinationKind::Webhook(WebhookSpec::new(hook.url("/in"), Some("${HOOK_SECRET}".to_owned())))),
    ] {
        strata_writer::control::add(&stage, &s).await.unwrap();
    }
    let envs = [trace, ("DEST_PW", PASSWORD), ("WRONG_PW", WRONG_PASSWORD), ("HOOK_SECRET", HOOK_SECRET), ("MASK_KEY", MASK_KEY)];
    let writer = ServiceProcess::spawn_logged(Path::new(WRITER), &writer_config, &writer_log, &envs).unwrap();
    wait_caught_up(&stage, "mirror").await;
    wait_caught_up(&stage, "hook").await;
    let refused = wait_failed(&stage, "refused").await;
    assert!(refused.contains("password authentication failed"), "the refusal is shown: {refused}");
    let dst = cluster.pg.connect(&dst_db).await.unwrap();
    let hashed: String = dst.query_one("SELECT email FROM users WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(hashed.len(), 64, "the masking key was used: {hashed}");

    // Everything a person or a scraper can see.
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    seen.push(("reader /metrics".to_owned(), get(reader_port, "/metrics").await.into_bytes()));
    seen.push(("writer /metrics".to_owned(), get(writer_port, "/metrics").await.into_bytes()));
    for args in [&["status", "--json"][..], &["destination", "list", "--json"]] {
        let out = std::process::Command::new(WRITER).arg("--config").arg(&writer_config).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        seen.push((format!("strata-writer {}", args.join(" ")), [out.stdout, out.stderr].concat()));
    }
    assert!(writer.terminate().unwrap().success());
    assert!(reader.terminate().unwrap().success());
    for (name, log) in [("reader log", &reader_log), ("writer log", &writer_log)] {
        let text = std::fs::read(log).unwrap();
        let lines = text.iter().filter(|b| **b == b'\n').count();
        let traced = String::from_utf8_lossy(&text).matches("TRACE").count();
        assert!(lines > 200 && traced > 50, "{name} is a trace-level log ({lines} lines, {traced} at TRACE)");
        seen.push((name.to_owned(), text));
    }
    let objects = stage.list(&object_store::path::Path::default()).await.unwrap();
    assert!(objects.len() > 10, "the stage holds the run's objects ({})", objects.len());
    for o in objects {
        let bytes = stage.get(&o.location).await.unwrap();
        seen.push((format!("stage object {}", o.location), bytes.to_vec()));
    }
    let secrets = [
        ("source password", PASSWORD),
        ("AWS secret key", AWS_SECRET),
        ("webhook secret", HOOK_SECRET),
        ("webhook key", "hook-secret-5e6f7a8b"),
        ("masking key", MASK_KEY),
        ("wrong password", WRONG_PASSWORD),
    ];
    let mut leaks = Vec::new();
    for (what, secret) in secrets {
        for (place, bytes) in &seen {
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                leaks.push(format!("the {what} in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets found: {leaks:#?}");
}
