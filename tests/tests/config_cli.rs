//! Configuration a person can trust, through the real command lines:
//! `validate` names every problem at once and writes nothing, a command
//! with no config and no stage refuses rather than create `./strata-stage`,
//! `STRATA_CONFIG` names the file and `--config` goes anywhere, and logs
//! carry no colour codes when stderr is not a terminal.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use strata_stager::Stage;
use strata_tests::writer::spec;
use strata_writer::spec::{PostgresMode, StartPosition};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");
const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

/// Runs `exe` in `cwd` with `args`, `envs` and none of the caller's
/// `STRATA_*` variables.
fn run(exe: &str, cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STRATA_")) {
        cmd.env_remove(k);
    }
    cmd.envs(envs.iter().copied()).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    strata_tests::files_under(dir).iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn validate_names_every_config_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        "[stage]\nurl = \"./stage\"\n[batch]\nmax_rows = 0\nmax_age = \"1h30\"\n[snapshot]\nworkers = 100\n[telemetry]\nlog_level = \"verbose\"\n\
         [source]\nurl = \"postgres://app@db/app\"\ntabels = [\"public.*\"]\n",
    )
    .unwrap();
    let out = run(READER, dir.path(), &["validate", "--config", "strata.toml"], &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    // One problem per section where a value does not parse (serde stops at
    // the first), every value problem otherwise.
    for named in ["`batch.max_age`", "1h30", "`source.tabels`", "unknown field"] {
        assert!(said.contains(named), "{named} is named in: {said}");
    }
    assert!(!dir.path().join("stage").exists(), "nothing was written");

    std::fs::write(&config, "[stage]\nurl = \"./stage\"\n[batch]\nmax_rows = 0\n[snapshot]\nworkers = 100\n[telemetry]\nlog_level = \"verbose\"\n").unwrap();
    let out = run(READER, dir.path(), &["validate", "--config", "strata.toml"], &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for named in ["`batch.max_rows`", "`snapshot.workers`", "`telemetry.log_level`", "\"verbose\"", "3 problems"] {
        assert!(said.contains(named), "{named} is named in: {said}");
    }
    assert!(!dir.path().join("stage").exists(), "nothing was written");
}

#[test]
fn reader_validate_needs_a_source_it_can_parse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("strata.toml"),
        "[stage]\nurl = \"gs://bucket/x\"\n[telemetry]\nlisten = \":9464\"\nlog_level = \"strata_reader=debug,info\"\n",
    )
    .unwrap();
    let out = run(READER, dir.path(), &["validate"], &[("STRATA_CONFIG", "strata.toml")]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for named in ["`stage.url`", "unsupported scheme", "`source`: missing", "2 problems"] {
        assert!(said.contains(named), "{named} is named in: {said}");
    }
    // ${VAR} in an override expands as in the file.
    let envs = [
        ("STRATA_CONFIG", "strata.toml"),
        ("STRATA_STAGE__URL", "${STAGE_DIR}"),
        ("STAGE_DIR", "./stage"),
        ("STRATA_SOURCE__URL", "postgres://app@db:5432/app"),
    ];
    let out = run(READER, dir.path(), &["validate"], &envs);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("ok") && said.contains("stream \"main\"") && said.contains("stage ./stage"), "{said}");
    assert!(!dir.path().join("stage").exists(), "validate created nothing");
}

#[tokio::test]
async fn writer_validate_checks_every_destination_spec_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let stage = Stage::local(&stage_dir).unwrap();
    strata_writer::control::add(&stage, &spec("good", "postgres://app@db/app", StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    strata_writer::control::add(&stage, &spec("needs-secret", "postgres://app:${UNSET_PASSWORD}@db/app", StartPosition::Earliest, PostgresMode::Mirror))
        .await
        .unwrap();
    // A spec edited by hand into something no writer can read.
    let broken = stage_dir.join("destinations/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("spec.json"), "{\"format\": 1, \"name\": \"broken\"").unwrap();
    let before = files(&stage_dir);
    std::fs::write(dir.path().join("strata.toml"), format!("[stage]\nurl = {:?}\n", stage_dir.display().to_string())).unwrap();

    // --config after the subcommand.
    let out = run(WRITER, dir.path(), &["validate", "--config", "strata.toml"], &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for named in ["destination \"broken\"", "destination \"needs-secret\"", "UNSET_PASSWORD", "2 problems"] {
        assert!(said.contains(named), "{named} is named in: {said}");
    }
    assert!(!said.contains("- destination \"good\""), "the good spec has no problem: {said}");
    assert!(said.contains("stream \"main\" has no staged batch yet"), "{said}");
    assert_eq!(files(&stage_dir), before, "validate wrote nothing");

    let out = run(WRITER, dir.path(), &["--config", "strata.toml", "validate"], &[("UNSET_PASSWORD", "x")]);
    assert_eq!(out.status.code(), Some(1), "the broken spec is still a problem: {}", text(&out));
    std::fs::remove_dir_all(&broken).unwrap();
    let out = run(WRITER, dir.path(), &["--config", "strata.toml", "validate"], &[("UNSET_PASSWORD", "x")]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("ok; 2 destination specs checked"), "{said}");
}

#[test]
fn without_config_or_stage_commands_refuse_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (exe, args) in [(WRITER, &["destination", "list"][..]), (WRITER, &["status"][..]), (WRITER, &[][..]), (READER, &[][..])] {
        let out = run(exe, dir.path(), args, &[("STRATA_SOURCE__URL", "postgres://app@127.0.0.1:1/app")]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(said.contains("no stage named") && said.contains("STRATA_CONFIG"), "{args:?}: {said}");
        assert_eq!(files(dir.path()), Vec::<String>::new(), "{args:?} created nothing");
        assert!(!dir.path().join("strata-stage").exists(), "{args:?} created no stage");
    }
    // Naming the stage by the environment is enough.
    let out = run(WRITER, dir.path(), &["destination", "list"], &[("STRATA_STAGE__URL", "./named")]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn logs_carry_no_colour_codes_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // A reader that cannot reach its source logs a warning, then retries;
    // `validate` does not log, so run the service for a moment.
    std::fs::write(
        dir.path().join("strata.toml"),
        "[stage]\nurl = \"./stage\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n[source]\nurl = \"postgres://app@127.0.0.1:1/app?connect_timeout=1\"\n",
    )
    .unwrap();
    let mut child = Command::new(READER)
        .current_dir(dir.path())
        .args(["--config", "strata.toml"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("INFO") || logs.contains("WARN"), "the reader logged: {logs}");
    assert!(!logs.contains('\u{1b}'), "no escape codes: {logs:?}");
}
