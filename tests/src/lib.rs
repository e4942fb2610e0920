//! The end-to-end, fault and benchmark harness.
//!
//! Fixtures start real servers on loopback and clean them up:
//! - [`pg::PgCluster`]: a throwaway PostgreSQL cluster (`initdb` as the
//!   `postgres` OS user when run as root, `wal_level = logical`, a free port,
//!   its socket in a temp dir), with a fresh database per test.
//! - [`emulator::Emulator`]: the S3/SQS emulator (`infra/emulator.py`, moto
//!   behind a lock that serialises conditional writes) on a free port, with a
//!   bucket and a [`strata_stager::Stage`] on it.
//!
//! Neither outlives the test process, however it ends: the cluster registers
//! a reaper (a small shell process that waits for the test process to exit,
//! then stops the server and removes its files), and the emulator exits when
//! its stdin — a pipe from the test process — closes.
//!
//! The fixtures find their tools through the variables `infra/test` exports
//! (`STRATA_PG_BIN`, `STRATA_VENV`, `STRATA_EMULATOR`), with the same defaults
//! the scripts use; when a tool is missing they fail with a message saying
//! to run `infra/test`, never skip.

pub mod bench;
pub mod chaos;
pub mod emulator;
pub mod fixtures;
pub mod http;
pub mod many_writers;
pub mod pg;
pub mod process;
pub mod reader;
pub mod sqs;
pub mod tls;
pub mod workload;
pub mod writer;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Every file under `dir`, at any depth, as paths relative to it, sorted.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("test helper: reading a directory") {
            let path = entry.expect("test helper: reading a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The Python of the project's virtualenv (made by `infra/lib.sh`).
pub fn venv_python() -> std::path::PathBuf {
    let venv = std::env::var_os("STRATA_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/root".into());
        home.join(".cache/strata/venv")
    });
    let python = venv.join("bin/python");
    assert!(python.exists(), "{} is missing: run infra/test (it installs the test tools)", python.display());
    python
}

/// Runs `script` with the venv's Python and `args`, `input` as JSON on its
/// standard input; returns what it prints on standard output, as JSON.
pub fn python_json<T: serde::de::DeserializeOwned>(script: &str, args: &[&str], input: &serde_json::Value) -> T {
    use std::io::Write;
    let mut child = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("test helper: starting python");
    let mut stdin = child.stdin.take().expect("test helper: piped stdin");
    stdin.write_all(&serde_json::to_vec(input).expect("test helper: JSON input")).expect("test helper: writing to python");
    drop(stdin);
    let out = child.wait_with_output().expect("test helper: python output");
    assert!(out.status.success(), "the python script failed");
    serde_json::from_slice(&out.stdout).expect("test helper: python printed JSON")
}
