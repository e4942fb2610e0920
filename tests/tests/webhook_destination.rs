//! The webhook destination against a local HTTP server that fails for a
//! while (500s, then 429s with Retry-After), then accepts: every change
//! arrives, and every request's Standard Webhooks signature passes the
//! specification's own Python verifier, which rejects a stale or altered one.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use strata_common::config::Config;
use strata_stager::Stage;
use strata_tests::http::TestServer;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, staged_changes, wait_for_slot};
use strata_tests::writer::{replay_request, spec_of, wait_caught_up, wait_replay, wait_staged};
use strata_writer::destinations::webhook::config::WebhookSpec;
use strata_writer::destinations::webhook::sink::SigningKey;
use strata_writer::spec::{DestinationKind, StartPosition};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");
/// `whsec_` and base64 of "strata webhook test secret".
const SECRET: &str = "whsec_c3RyYXRhIHdlYmhvb2sgdGVzdCBzZWNyZXQ=";

/// Runs the `standardwebhooks` package's `Webhook.verify` on each request;
/// returns "ok" or why it rejected it, per request.
fn python_verify(cases: &[(std::collections::HashMap<String, String>, Vec<u8>)]) -> Vec<String> {
    use base64::Engine;
    const SCRIPT: &str = r#"
import base64, json, sys
from standardwebhooks.webhooks import Webhook
hook = Webhook(sys.argv[1])
verdicts = []
for case in json.load(sys.stdin):
    try:
        hook.verify(base64.b64decode(case["body"]), case["headers"], json_parse=False)
        verdicts.append("ok")
    except Exception as e:
        verdicts.append("rejected: %s" % e)
print(json.dumps(verdicts))
"#;
    let input: Vec<serde_json::Value> =
        cases.iter().map(|(headers, body)| serde_json::json!({"headers": headers, "body": base64::engine::general_purpose::STANDARD.encode(body)})).collect();
    strata_tests::python_json(SCRIPT, &[SECRET], &serde_json::Value::Array(input))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_receives_every_change_signed_through_500s_and_429s() {
    // 3 × 500, then 2 × 429 asking for a 1 s pause, then 200s.
    let server = TestServer::start(|n, _| match n {
        0..=2 => (500, vec![]),
        3..=4 => (429, vec![("Retry-After".to_owned(), "1".to_owned())]),
        _ => (200, vec![]),
    })
    .await
    .unwrap();
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE events (id int PRIMARY KEY, kind text, amount numeric(8,2))").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, "max_rows = 100\n"), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    for i in 0..10 {
        admin
            .batch_execute(&format!(
                "INSERT INTO events SELECT g, 'k' || g % 3, g / 4.0 FROM generate_series({}, {}) g; UPDATE events SET kind = 'u' WHERE id = {};",
                i * 30 + 1,
                i * 30 + 30,
                i * 30 + 1
            ))
            .await
            .unwrap();
    }
    wait_staged(&admin).await;
    let stage = Stage::local(&stage_dir).unwrap();
    let mut hook = WebhookSpec::new(server.url("/hook"), Some("${HOOK_SECRET}".to_owned()));
    hook.batch_size = 40;
    let spec = spec_of("hook", StartPosition::Earliest, DestinationKind::Webhook(hook));
    strata_writer::control::add(&stage, &spec).await.unwrap();
    let config_path = dir.path().join("writer.toml");
    std::fs::write(&config_path, config_text(&src_url, &stage_dir, "")).unwrap();
    let writer = ServiceProcess::spawn_with(Path::new(WRITER), &config_path, std::process::Stdio::null(), &[("HOOK_SECRET", SECRET)]).unwrap();
    wait_caught_up(&stage, "hook").await;
    assert!(writer.terminate().unwrap().success());

    let requests = server.requests();
    assert!(requests.len() > 5, "the failures were retried ({} requests)", requests.len());
    // Retry-After was honoured: the request after each 429 came at least 1 s later.
    for i in 3..=4 {
        let gap = requests[i + 1].at - requests[i].at;
        assert!(gap >= Duration::from_millis(950), "retried {gap:?} after a 429 asking for 1 s");
    }
    let mut received = HashSet::new();
    let mut keys_by_body = std::collections::HashMap::new();
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
        let sent_at: i64 = r.headers.get("webhook-timestamp").expect("timestamped").parse().unwrap();
        assert!((sent_at - chrono::Utc::now().timestamp()).abs() < 120, "the timestamp is the time of sending");
        let body: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap();
        assert!(!body.is_empty() && body.len() <= 40, "batch_size respected ({})", body.len());
        let ids: Vec<&str> = body.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let key = r.headers.get("idempotency-key").expect("idempotency key");
        assert_eq!(key, &format!("{}..{}", ids[0], ids[ids.len() - 1]));
        assert_eq!(r.headers.get("webhook-id"), Some(key), "the message id names the changes, as the idempotency key");
        // A redelivered request carries the same key for the same changes.
        if let Some(previous) = keys_by_body.insert(key.clone(), r.body.clone()) {
            assert!(previous == r.body, "a redelivery of {key} carries the same bytes");
        }
        received.extend(ids.iter().map(|s| s.to_string()));
    }
    let staged = staged_changes(&stage, "main").await.unwrap();
    let expected: HashSet<String> = staged.iter().map(|(_, _, c)| format!("main:{}:{}", c.lsn.as_u64(), c.ord)).collect();
    assert_eq!(received, expected, "every staged change reached the webhook");

    // Every request passes the reference verifier; the first one altered,
    // or signed correctly but 10 minutes ago, does not.
    let mut cases: Vec<_> = requests.iter().map(|r| (r.headers.clone(), r.body.clone())).collect();
    let (headers, body) = cases[0].clone();
    let mut altered = body.clone();
    altered[1] = b' ';
    let key = SigningKey::parse(SECRET).unwrap();
    let id = headers["webhook-id"].clone();
    let signed_at = |t: i64| {
        let mut h = headers.clone();
        h.insert("webhook-timestamp".to_owned(), t.to_string());
        h.insert("webhook-signature".to_owned(), key.sign(&id, t, &body));
        h
    };
    let now = chrono::Utc::now().timestamp();
    cases.push((headers.clone(), altered));
    cases.push((signed_at(now - 600), body.clone()));
    cases.push((signed_at(now), body.clone()));
    let verdicts = python_verify(&cases);
    let n = requests.len();
    assert!(verdicts[..n].iter().all(|v| v == "ok"), "every request verifies: {verdicts:?}");
    assert!(verdicts[n].contains("No matching signature"), "an altered body is rejected: {}", verdicts[n]);
    assert!(verdicts[n + 1].contains("too old"), "a stale timestamp is rejected: {}", verdicts[n + 1]);
    assert_eq!(verdicts[n + 2], "ok", "the same request signed now verifies");
    reader.stop().await.unwrap();
}

/// `replay --from T` onto a webhook that received everything: exactly the
/// changes committed at or after T are sent again, each envelope with the
/// same id and the same bytes as the first time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_resends_the_same_envelopes_from_its_time_on() {
    let server = TestServer::start(|_, _| (200, vec![])).await.unwrap();
    let src_url = PgCluster::shared().fresh_database().await.unwrap();
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE events (id int PRIMARY KEY, kind text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let cfg = Config::from_toml("t", &config_text(&src_url, &stage_dir, "max_rows = 7\n"), &[]).unwrap();
    let reader = RunningReader::start(cfg.clone());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    let stage = Stage::local(&stage_dir).unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&cfg, t).await });
    let mut hook = WebhookSpec::new(server.url("/hook"), None);
    hook.batch_size = 5;
    strata_writer::control::add(&stage, &spec_of("hook", StartPosition::Earliest, DestinationKind::Webhook(hook))).await.unwrap();
    for i in 1..=20 {
        admin.batch_execute(&format!("INSERT INTO events VALUES ({i}, 'a')")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let at = strata_common::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 1..=20 {
        admin.batch_execute(&format!("UPDATE events SET kind = 'b' WHERE id = {i}")).await.unwrap();
    }
    wait_staged(&admin).await;
    wait_caught_up(&stage, "hook").await;
    let envelopes = |requests: &[strata_tests::http::Request]| -> Vec<(String, String)> {
        requests
            .iter()
            .flat_map(|r| serde_json::from_slice::<Vec<serde_json::Value>>(&r.body).unwrap())
            .map(|e| (e["id"].as_str().unwrap().to_owned(), e.to_string()))
            .collect()
    };
    let first = envelopes(&server.requests());
    let sent_before = server.requests().len();

    strata_writer::replay::submit(&stage, &replay_request("again", "hook", Some(at), None)).await.unwrap();
    wait_replay(&stage, "again").await;
    wait_caught_up(&stage, "hook").await;
    let again = envelopes(&server.requests()[sent_before..]);

    let staged = staged_changes(&stage, "main").await.unwrap();
    let from_t: HashSet<String> = staged.iter().filter(|(_, _, c)| c.commit_ts >= at).map(|(_, _, c)| format!("main:{}:{}", c.lsn.as_u64(), c.ord)).collect();
    assert_eq!(from_t.len(), 20, "the 20 updates are after T");
    let resent: HashSet<String> = again.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(resent, from_t, "exactly the changes committed at or after T are sent again");
    let original: std::collections::HashMap<String, String> = first.into_iter().collect();
    for (id, bytes) in &again {
        assert_eq!(original.get(id), Some(bytes), "{id} is sent again with the same bytes");
    }
    token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();
}
