//! TLS on every PostgreSQL connection, against a server that accepts TCP
//! clients over TLS only (`hostssl` rules, a test CA): the reader's snapshot,
//! stream and backfill and a Postgres destination in each verifying
//! `sslmode`; refusals that are final and say why; libpq's `prefer`,
//! `disable` and client certificates.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use strata_common::config::{Config, SecretUrl};
use strata_common::pgconn::{self, ConnectError};
use strata_common::{Lsn, TableName};
use strata_reader::source::SourceError;
use strata_reader::walstream::PgWalSource;
use strata_stager::Stage;
use strata_tests::reader::{RunningReader, ServiceProcess, config, config_text, drop_slot_once_released, wait_backfill_done, wait_for_slot};
use strata_tests::tls::{CERT_USER, PASSWORD, TlsCluster};
use strata_tests::writer::{checksum, spec, wait_caught_up, wait_failed, wait_staged};
use strata_writer::spec::{PostgresMode, StartPosition};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");
const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

/// Snapshot, stream and backfill into a stage, then a mirror destination,
/// every connection with `params`; the mirror must equal the source.
async fn pipeline(cluster: &TlsCluster, params: &str) {
    let (src_db, dst_db) = (cluster.pg.create_database().await.unwrap(), cluster.pg.create_database().await.unwrap());
    let admin = cluster.pg.connect(&src_db).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'snap ' || g FROM generate_series(1, 300) g").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let text = config_text(&cluster.url("localhost", &src_db, params), &stage_dir, "max_rows = 100\n");
    let config_path = dir.path().join("strata.toml");
    std::fs::write(&config_path, &text).unwrap();
    let reader = RunningReader::start(Config::from_toml("t", &text, &[]).unwrap());
    if let Err(e) = wait_for_slot(&admin, "strata_main").await {
        panic!("{params}: {e:#}; the reader: {:?}", reader.stop().await);
    }
    admin
        .batch_execute(
            "INSERT INTO t SELECT g, 'stream ' || g FROM generate_series(301, 500) g; \
             UPDATE t SET v = v || ' updated' WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0",
        )
        .await
        .unwrap();

    // The backfill command connects too (to check the publication).
    let out = std::process::Command::new(READER).args(["--config", config_path.to_str().unwrap(), "backfill", "--table", "public.t"]).output().unwrap();
    assert!(out.status.success(), "{params}: backfill request: {}", String::from_utf8_lossy(&out.stderr));
    let stage = Stage::local(&stage_dir).unwrap();
    wait_backfill_done(&stage, &TableName::parse("public.t").unwrap()).await;
    let walsender_tls: bool = admin
        .query_one(
            "SELECT coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.backend_type = 'walsender' AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(walsender_tls, "{params}: the replication connection uses TLS");

    // The spec names the password as ${VAR}; the writer's environment has it.
    let spec_url = format!("postgres://strata:${{DEST_PW}}@localhost:{}/{dst_db}?{params}", cluster.pg.port);
    strata_writer::control::add(&stage, &spec("m", &spec_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let writer = ServiceProcess::spawn_with(Path::new(WRITER), &config_path, std::process::Stdio::null(), &[("DEST_PW", PASSWORD)]).unwrap();
    wait_staged(&admin).await;
    wait_caught_up(&stage, "m").await;
    let dst = cluster.pg.connect(&dst_db).await.unwrap();
    let expected = checksum(&admin, "t").await;
    assert!(expected.0 > 400, "{params}: rows to compare ({})", expected.0);
    assert_eq!(checksum(&dst, "t").await, expected, "{params}: the mirror equals the source");
    assert!(writer.terminate().unwrap().success());
    reader.stop().await.unwrap();
    // Slots are per cluster: the next run's reader creates its own.
    drop_slot_once_released(&admin, "strata_main").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_runs_over_tls_in_every_verifying_mode() {
    let cluster = TlsCluster::start().await.unwrap();
    let require = "sslmode=require".to_owned();
    let (verify_ca, verify_full) = (cluster.verified("verify-ca"), cluster.verified("verify-full"));
    for params in [&require, &verify_ca, &verify_full] {
        pipeline(&cluster, params).await;
    }
}

/// Runs a reader until it stops by itself; fails the test if it is still
/// running after 30 s (retrying what cannot heal).
async fn reader_error(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let reader = RunningReader::start(config(url, &dir.path().join("stage"), ""));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "the reader for {url} stopped by itself instead of retrying");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    format!("{:#}", reader.stop().await.expect_err("the reader failed"))
}

fn connect_error(result: Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), ConnectError>) -> ConnectError {
    match result {
        Ok(_) => panic!("the connection was refused"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_refusals_are_final_and_say_why() {
    let cluster = TlsCluster::start().await.unwrap();
    let db = cluster.pg.create_database().await.unwrap();
    let wrong_ca = format!("sslmode=verify-ca&sslrootcert={}", cluster.pki.other_ca.display());

    // verify-full by an address the certificate does not name.
    let error = reader_error(&cluster.url("127.0.0.1", &db, &cluster.verified("verify-full"))).await;
    for part in ["127.0.0.1", "verify-full", "does not name the host"] {
        assert!(error.contains(part), "the error names {part}: {error}");
    }
    assert!(!error.contains(PASSWORD), "{error}");
    // verify-ca with a CA that did not sign the server's certificate.
    let error = reader_error(&cluster.url("localhost", &db, &wrong_ca)).await;
    for part in ["localhost", "verify-ca", "not signed by a CA", "other-ca.crt"] {
        assert!(error.contains(part), "the error names {part}: {error}");
    }
    // The replication connection is refused the same way, and for good.
    let url = SecretUrl::new(cluster.url("localhost", &db, &wrong_ca));
    match PgWalSource::start(&url, "strata_main", "strata_main", Lsn::ZERO) {
        Err(SourceError::Permanent(message)) => assert!(message.contains("invalid peer certificate"), "{message}"),
        Err(other) => panic!("a permanent error, not {other}"),
        Ok(_) => panic!("the replication connection was refused"),
    }

    // A destination with the wrong CA is shown failed, not retried.
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let stage = Stage::local(&stage_dir).unwrap();
    let dest_url = format!(
        "postgres://{CERT_USER}@localhost:{}/{db}?{wrong_ca}&sslcert={}&sslkey={}",
        cluster.pg.port,
        cluster.pki.client_cert.display(),
        cluster.pki.client_key.display()
    );
    let src_url = cluster.url("localhost", &db, &cluster.verified("verify-full"));
    let cfg = config(&src_url, &stage_dir, "");
    let admin = cluster.pg.connect(&db).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let reader = RunningReader::start(cfg.clone());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    wait_staged(&admin).await;
    strata_writer::control::add(&stage, &spec("bad_ca", &dest_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    let writer = tokio::spawn(async move { strata_writer::run::run(&cfg, t).await });
    let error = wait_failed(&stage, "bad_ca").await;
    assert!(error.contains("not signed by a CA") && error.contains("verify-ca"), "{error}");
    token.cancel();
    writer.await.unwrap().unwrap();
    reader.stop().await.unwrap();

    // prefer against a TLS-only server uses TLS.
    let (client, _task) = pgconn::connect(&cluster.url("localhost", &db, "sslmode=prefer"), "test").await.unwrap();
    let ssl: bool = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(ssl, "prefer negotiated TLS");
    // disable gets the server's refusal, and it is not retried.
    let error = connect_error(pgconn::connect(&cluster.url("localhost", &db, "sslmode=disable"), "test").await);
    assert!(error.to_string().contains("no encryption"), "the server's message: {error}");
    assert!(!error.is_transient(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate_ordinary_connections() {
    let cluster = TlsCluster::start().await.unwrap();
    let db = cluster.pg.create_database().await.unwrap();
    let base = format!("postgres://{CERT_USER}@localhost:{}/{db}?{}", cluster.pg.port, cluster.verified("verify-full"));
    let with_cert = format!("{base}&sslcert={}&sslkey={}", cluster.pki.client_cert.display(), cluster.pki.client_key.display());
    let (client, _task) = pgconn::connect(&with_cert, "test").await.unwrap();
    let user: String = client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(user, CERT_USER);

    let error = connect_error(pgconn::connect(&base, "test").await);
    assert!(error.to_string().contains("certificate"), "{error}");
    assert!(!error.is_transient(), "{error}");

    // The replication connection cannot present one: said at once.
    let error = reader_error(&with_cert).await;
    assert!(error.contains("cannot present a client certificate"), "{error}");
}

/// libpq's `prefer`: when the handshake itself fails (here: the server
/// offers only a TLS 1.2 cipher suite rustls refuses), every connection
/// of the reader — queries and snapshot through `pgconn`, replication
/// through pg_walstream, which retries the same way — goes on in plain
/// text; `require` fails for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefer_goes_on_in_plain_text_when_the_handshake_fails() {
    let conf = "ssl_max_protocol_version = 'TLSv1.2'\nssl_ciphers = 'ECDHE-ECDSA-AES128-SHA'\n";
    let hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n".to_owned();
    let cluster = TlsCluster::start_with(conf, hba).await.unwrap();
    let db = cluster.pg.create_database().await.unwrap();
    let admin = cluster.pg.connect(&db).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)").await.unwrap();
    let url = format!("postgres://strata@localhost:{}/{db}?sslmode=prefer", cluster.pg.port);

    let error = connect_error(pgconn::connect(&url.replace("prefer", "require"), "test").await);
    assert!(!error.is_transient() && error.to_string().contains("require"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(config(&url, &stage_dir, ""));
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin.batch_execute("INSERT INTO t SELECT generate_series(11, 20)").await.unwrap();
    wait_staged(&admin).await;
    let plain: bool = admin
        .query_one(
            "SELECT bool_and(NOT s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.backend_type = 'walsender' AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(plain, "the replication connection went on in plain text");
    let staged = strata_tests::reader::staged_changes(&Stage::local(&stage_dir).unwrap(), "main").await.unwrap();
    assert_eq!(staged.len(), 20, "snapshot and stream staged every row");
    reader.stop().await.unwrap();
}
