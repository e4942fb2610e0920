//! Server-side encryption of an S3 stage: with `aws_server_side_encryption`
//! and `aws_sse_kms_key_id` in `[stage.options]`, every object the reader
//! and the writer write (data files, manifests, schemas, leases, cursors,
//! specs, status) is stored encrypted with that key, as the emulator reports it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use strata_common::config::{Config, SecretString};
use strata_stager::Stage;
use strata_tests::emulator::Emulator;
use strata_tests::pg::PgCluster;
use strata_tests::reader::{RunningReader, config_text_for, wait_for_slot};
use strata_tests::writer::{checksum, session, spec, wait_caught_up, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};

const KEY_ID: &str = "arn:aws:kms:us-east-1:123456789012:key/0b7e6f2e-strata-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_stage_object_is_encrypted_with_the_configured_key() {
    let emulator = Emulator::start().await.unwrap();
    let bucket = format!("sse-{}", uuid::Uuid::new_v4().simple());
    emulator.create_bucket(&bucket).await.unwrap();
    let mut options: BTreeMap<String, SecretString> = emulator.s3_options();
    options.insert("aws_server_side_encryption".to_owned(), SecretString::new("aws:kms"));
    options.insert("aws_sse_kms_key_id".to_owned(), SecretString::new(KEY_ID));
    let url = format!("s3://{bucket}/enc");
    let mut stage_toml = format!("url = {url:?}\n[stage.options]\n");
    for (k, v) in &options {
        stage_toml.push_str(&format!("{k} = {:?}\n", v.expose()));
    }

    let cluster = PgCluster::shared();
    let (src_url, dst_url) = (cluster.fresh_database().await.unwrap(), cluster.fresh_database().await.unwrap());
    let src = session(&src_url).await;
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) g").await.unwrap();
    let config = Config::from_toml("t", &config_text_for(&src_url, &stage_toml, ""), &[]).unwrap();
    let reader = RunningReader::start(config.clone());
    wait_for_slot(&src, "strata_main").await.unwrap();
    src.batch_execute("UPDATE t SET v = 'y' WHERE id < 10").await.unwrap();
    wait_staged(&src).await;
    let stage = Stage::open(&url, &options).unwrap();
    strata_writer::control::add(&stage, &spec("m", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&config, t).await });
    wait_caught_up(&stage, "m").await;
    assert_eq!(checksum(&session(&dst_url).await, "t").await, checksum(&src, "t").await);
    token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();

    // Every object, read back through the S3 API.
    let plain = Stage::open(&format!("s3://{bucket}"), &emulator.s3_options()).unwrap();
    let objects = plain.list(&object_store::path::Path::default()).await.unwrap();
    let kinds = [".parquet", "/log/", "/schemas/", "snapshot.json", "reader.json", "cursor.json", "lease.json", "spec.json"];
    for kind in kinds {
        assert!(
            objects.iter().any(|o| o.location.as_ref().contains(kind)),
            "the stage holds a {kind} object: {:?}",
            objects.iter().map(|o| o.location.to_string()).collect::<Vec<_>>()
        );
    }
    // HEAD each with boto3 (the emulator's own dependency): what S3 reports.
    const SCRIPT: &str = r#"
import json, sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
out = {}
for key in json.load(sys.stdin):
    h = s3.head_object(Bucket=sys.argv[2], Key=key)
    out[key] = [h.get("ServerSideEncryption"), h.get("SSEKMSKeyId")]
print(json.dumps(out))
"#;
    let keys: Vec<String> = objects.iter().map(|o| o.location.to_string()).collect();
    let reported: BTreeMap<String, (Option<String>, Option<String>)> =
        strata_tests::python_json(SCRIPT, &[&emulator.endpoint(), &bucket], &serde_json::json!(keys));
    assert_eq!(reported.len(), keys.len());
    for (key, (algorithm, key_id)) in reported {
        assert_eq!(algorithm.as_deref(), Some("aws:kms"), "{key}");
        assert_eq!(key_id.as_deref(), Some(KEY_ID), "{key}");
    }
}
