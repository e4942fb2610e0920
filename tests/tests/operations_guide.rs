//! docs/operations.md, run as written.
//!
//! The guide promises that every command in it is exercised. This test
//! reads it and keeps that promise checkable:
//!
//! - ` ```sh ` blocks are run, top to bottom, each command line through
//!   `sh -c` in a directory holding the guide's `strata.toml`, with
//!   `strata-reader`, `strata-writer` and `strata-stage` on the `PATH` (the
//!   test builds of the same command lines), the guide's placeholders set
//!   and the stage and source overridden by `STRATA_*` variables. Each must
//!   exit as its comment says: 0, unless the comment says `exits N`. Only
//!   strata commands may stand there.
//! - ` ```sql ` blocks run on the source, ` ```python ` blocks with the
//!   project's Python, in the same directory.
//! - ` ```sh not-run ` blocks and ` ```ini ` units are what this machine
//!   cannot run (systemd, Kubernetes, S3): every strata command line in them
//!   must be accepted by the binary's argument parser (`--help` appended
//!   after the whole line: clap refuses an unknown subcommand, flag or value
//!   before it prints help).
//! - `<!-- test: … -->` comments, invisible in the rendered guide, stand for
//!   what the world around the commands does: services started and stopped
//!   as systemd would, the application writing to its database, and waits
//!   for the pipeline, each checking what the guide says happened (a
//!   destination equal to the source, a rebuild equal to the source as of
//!   `$T`).
//!
//! A strata command anywhere else, a placeholder the guide does not define,
//! or a directive this test does not know fails the test.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use strata_common::Timestamp;
use strata_stager::Stage;
use strata_tests::pg::PgCluster;
use strata_tests::reader::{ServiceProcess, wait_for_slot};
use strata_tests::writer::{checksum, session, wait_caught_up, wait_staged};
use strata_writer::replay::ReplayState;
use tokio_postgres::Client;

const GUIDE: &str = "docs/operations.md";

/// The strata binaries, by the name the guide calls them.
const BINARIES: [(&str, &str); 3] = [
    ("strata-reader", env!("CARGO_BIN_EXE_strata-reader-under-test")),
    ("strata-writer", env!("CARGO_BIN_EXE_strata-writer-under-test")),
    ("strata-stage", env!("CARGO_BIN_EXE_strata-stage-under-test")),
];

/// The placeholders this test gives a value; the guide's table must define
/// exactly these.
const PLACEHOLDERS: [&str; 3] = ["STAGE", "QA_URL", "T"];

/// A fenced block or a test directive, in the guide's order.
#[derive(Debug)]
enum Piece {
    Block { lang: String, info: String, line: usize, body: Vec<String> },
    Directive { line: usize, text: String },
}

fn guide() -> String {
    std::fs::read_to_string(strata_tests::repo_root().join(GUIDE)).unwrap()
}

fn parse(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut open: Option<(String, String, usize, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let (lang, rest) = info.split_once(' ').unwrap_or((info, ""));
                open = Some((lang.to_owned(), rest.trim().to_owned(), n, Vec::new()));
            }
            (Some(_), Some("")) => {
                let (lang, info, line, body) = open.take().unwrap();
                pieces.push(Piece::Block { lang, info, line, body });
            }
            (Some((_, _, _, body)), _) => body.push(line.to_owned()),
            (None, None) => {
                if let Some(d) = line.trim().strip_prefix("<!-- test:").and_then(|d| d.strip_suffix("-->")) {
                    pieces.push(Piece::Directive { line: n, text: d.trim().to_owned() });
                }
            }
        }
    }
    assert!(open.is_none(), "{GUIDE}: a fenced block is not closed");
    pieces
}

/// The command lines of a shell block, each with its line in the block
/// (0-based): continuation lines joined, blank and comment lines left out.
fn command_lines(body: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in body.iter().enumerate() {
        if pending.is_none() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        let (_, text) = pending.get_or_insert_with(|| (i, String::new()));
        match line.strip_suffix('\\') {
            Some(part) => text.push_str(part),
            None => {
                text.push_str(line);
                out.extend(pending.take());
            }
        }
    }
    out
}

/// The exit status the line's comment promises: `# exits N`, else 0.
fn expected_exit(line: &str) -> i32 {
    line.split_once("# exits ").and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).unwrap_or(0)
}

/// A strata command inside `line`: the binary and its arguments, up to a
/// shell operator or a comment. The binary stands where a command does:
/// first, or after `--` (`kubectl exec … -- strata-writer …`) or a shell
/// operator, so a unit named like it (`systemctl stop strata-reader`) is
/// not one. It is the bare name, or with `path_ok` a path to it
/// (`/usr/local/bin/strata-reader`, as in a unit file).
fn strata_command(line: &str, path_ok: bool) -> Option<(&'static str, Vec<String>)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (at, exe) = words.iter().enumerate().find_map(|(i, w)| {
        let name = if path_ok && w.starts_with('/') { w.rsplit('/').next().unwrap_or(w) } else { w };
        let in_command_position = i == 0 || ["--", "|", "&&", ";"].contains(&words[i - 1]);
        BINARIES.iter().find(|(n, _)| *n == name && in_command_position).map(|(_, exe)| (i, *exe))
    })?;
    let args = words[at + 1..].iter().take_while(|w| !["|", ";", "&&", ">", "#"].contains(w) && !w.starts_with('#')).map(|w| w.to_string()).collect();
    Some((exe, args))
}

/// Whether the binary's parser accepts `args` (with `--help` appended, it
/// prints the help of the deepest subcommand only if every word before it
/// parsed).
fn parser_accepts(exe: &str, args: &[String]) -> Result<(), String> {
    let out = Command::new(exe).args(args).arg("--help").env("STRATA_CONFIG", "/nonexistent/strata.toml").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains("Usage:") { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}

/// `$NAME` references in `text` (upper case, as the guide writes them).
fn references(text: &str) -> BTreeSet<String> {
    text.split('$')
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest.trim_start_matches('{').chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// Checks the guide without running it: where its strata commands stand,
/// that the ones it does not run parse, and that its placeholders are
/// defined once and given a value here.
#[test]
fn every_strata_command_in_the_operations_guide_is_run_or_parsed() {
    let text = guide();
    let pieces = parse(&text);
    let mut problems = Vec::new();
    let (mut runnable, mut parsed) = (0, 0);
    let mut used = BTreeSet::new();
    for piece in &pieces {
        let Piece::Block { lang, info, line, body } = piece else { continue };
        let at = format!("{GUIDE}:{line} ({lang} {info})");
        match (lang.as_str(), info.as_str()) {
            ("sh", "") => {
                for (_, cmd) in command_lines(body) {
                    used.extend(references(&cmd));
                    if BINARIES.iter().any(|(n, _)| cmd.starts_with(&format!("{n} "))) {
                        runnable += 1;
                    } else {
                        problems.push(format!("{at}: `{cmd}` is not a strata command; put it in a `sh not-run` block"));
                    }
                }
            }
            ("sh", "not-run") | ("ini", "") => {
                for (_, cmd) in command_lines(body) {
                    let cmd = cmd.strip_prefix("ExecStart=").unwrap_or(&cmd);
                    if let Some((exe, args)) = strata_command(cmd, lang == "ini") {
                        parsed += 1;
                        if let Err(e) = parser_accepts(exe, &args) {
                            problems.push(format!("{at}: `{cmd}` is refused: {e}"));
                        }
                    }
                }
            }
            ("python", "") => used.extend(body.iter().filter_map(|l| l.split_once("os.environ[\"")).map(|(_, r)| r.split('"').next().unwrap_or("").to_owned())),
            ("sql", "") => {}
            ("toml" | "json" | "text", "") => {
                if body.iter().any(|l| strata_command(l, true).is_some()) {
                    problems.push(format!("{at}: a strata command in a block this test neither runs nor checks"));
                }
            }
            _ => problems.push(format!("{at}: a block this test neither runs nor checks")),
        }
    }
    let defined: BTreeSet<String> = text.lines().filter_map(|l| l.strip_prefix("| `$")?.split('`').next().map(str::to_owned)).collect();
    let given: BTreeSet<String> = PLACEHOLDERS.iter().map(|p| p.to_string()).collect();
    assert_eq!(defined, given, "the guide's placeholder table defines exactly what this test sets");
    let undefined: Vec<_> = used.difference(&defined).collect();
    assert!(undefined.is_empty(), "placeholders used but not defined in the guide's table: {undefined:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(runnable >= 25 && parsed >= 4, "{runnable} commands run, {parsed} parsed: the guide lost its commands?");
    let configs = pieces.iter().filter(|p| matches!(p, Piece::Block { lang, .. } if lang == "toml")).count();
    assert_eq!(configs, 1, "one strata.toml in the guide");
}

/// The world the guide's commands run in: a directory with its
/// `strata.toml`, a source and a destination database, the services it
/// starts, and what the directives remember.
struct Sandbox {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    src: Client,
    qa_url: String,
    stage: Stage,
    reader: Option<ServiceProcess>,
    writers: Vec<ServiceProcess>,
    /// The source table's checksum when `$T` was marked.
    at_t: Option<(i64, String)>,
    next_id: i32,
}

impl Sandbox {
    async fn new(config: &str) -> Sandbox {
        let cluster = PgCluster::shared();
        let src_url = cluster.fresh_database().await.unwrap();
        let qa_url = cluster.fresh_database().await.unwrap();
        let src = session(&src_url).await;
        src.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(10,2)); INSERT INTO orders VALUES (1, 'new', 9.50)")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("strata.toml"), config).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, exe) in BINARIES {
            std::os::unix::fs::symlink(exe, bin.join(name)).unwrap();
        }
        let stage_dir = dir.path().join("stage").display().to_string();
        let env = [
            ("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())),
            ("STRATA_STAGE__URL", stage_dir.clone()),
            ("STRATA_SOURCE__URL", src_url.clone()),
            ("STRATA_TELEMETRY__LISTEN", "127.0.0.1:0".to_owned()),
            // The guide's source.url names it; the override above replaces the URL.
            ("PGPASSWORD", "unused".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            // `destination edit`: an editor that saves the declaration as it is.
            ("EDITOR", "true".to_owned()),
            ("STAGE", stage_dir.clone()),
            ("QA_URL", qa_url.clone()),
        ];
        let env = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let stage = Stage::local(Path::new(&stage_dir)).unwrap();
        Sandbox { dir, env, src, qa_url, stage, reader: None, writers: Vec::new(), at_t: None, next_id: 2 }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STRATA_") || k == "VISUAL") {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs one command line of the guide; panics unless it exits as its
    /// comment says.
    fn sh(&self, at: &str, line: &str) {
        let out = self.command("sh").arg("-c").arg(line).output().unwrap();
        let expected = expected_exit(line);
        assert_eq!(out.status.code(), Some(expected), "{at}: `{line}` exits {expected}, as the guide says; it said:\n{}", said(&out));
        eprintln!("ran {at}: {line}\n{}", said(&out));
    }

    fn python(&self, at: &str, script: &str) {
        let out = self.command(strata_tests::venv_python().to_str().unwrap()).arg("-c").arg(script).output().unwrap();
        assert!(out.status.success(), "{at}: the Python block fails:\n{}", said(&out));
        eprintln!("ran the Python block at {at}\n{}", said(&out));
    }

    /// Runs each statement of a SQL block on the source (one at a time:
    /// `ALTER SYSTEM` may not run in a transaction).
    async fn sql(&self, at: &str, body: &[String]) {
        let text = body.join("\n");
        for stmt in text.split_inclusive(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            self.src.batch_execute(stmt).await.unwrap_or_else(|e| panic!("{at}: `{stmt}` fails on the source: {e}"));
            eprintln!("ran {at}: {stmt}");
        }
    }

    fn spawn(&self, exe: &str) -> ServiceProcess {
        let log = self.dir.path().join("services.log");
        let envs: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ServiceProcess::spawn_logged(Path::new(exe), &self.dir.path().join("strata.toml"), &log, &envs).unwrap()
    }

    fn services_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("services.log")).unwrap_or_default()
    }

    async fn directive(&mut self, at: &str, text: &str) {
        eprintln!("directive {at}: {text}");
        match text {
            "start reader" => {
                assert!(self.reader.is_none(), "{at}: a reader runs already");
                self.reader = Some(self.spawn(BINARIES[0].1));
                wait_for_slot(&self.src, "strata_main").await.unwrap_or_else(|e| panic!("{at}: {e}\n{}", self.services_log()));
            }
            "stop reader" => {
                let status = self.reader.take().unwrap_or_else(|| panic!("{at}: no reader runs")).terminate().unwrap();
                assert!(status.success(), "{at}: the reader stops cleanly on SIGTERM: {status:?}\n{}", self.services_log());
            }
            "start writer" => {
                let writer = self.spawn(BINARIES[1].1);
                self.writers.push(writer);
            }
            "stop writer" => {
                let status = self.writers.pop().unwrap_or_else(|| panic!("{at}: no writer runs")).terminate().unwrap();
                assert!(status.success(), "{at}: the writer stops cleanly on SIGTERM: {status:?}\n{}", self.services_log());
            }
            "source-writes" => self.source_writes().await,
            "mark T" => {
                wait_staged(&self.src).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.env.push(("T".to_owned(), Timestamp::now().to_string()));
                self.at_t = Some(checksum(&self.src, "public.orders").await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            "wait delivered qa" => {
                wait_staged(&self.src).await;
                let expected = checksum(&self.src, "public.orders").await;
                wait_caught_up(&self.stage, "qa").await;
                self.wait_qa_holds(at, &expected).await;
            }
            "wait replays" => self.wait_replays(at).await,
            "wait rebuilt qa" => {
                self.wait_replays(at).await;
                let expected = self.at_t.clone().unwrap_or_else(|| panic!("{at}: no `mark T` before"));
                self.wait_qa_holds(at, &expected).await;
                let spec = strata_writer::control::read(&self.stage, "qa").await.unwrap().unwrap();
                assert!(spec.value.paused, "{at}: the rebuild paused qa at T");
            }
            other => panic!("{at}: unknown directive `{other}`"),
        }
    }

    /// What an application does between two commands: inserts, an update
    /// and a delete, staged before the next command.
    async fn source_writes(&mut self) {
        let first = self.next_id;
        self.next_id += 5;
        for id in first..self.next_id {
            self.src.batch_execute(&format!("INSERT INTO orders VALUES ({id}, 'new', {id}.25)")).await.unwrap();
        }
        self.src.batch_execute(&format!("UPDATE orders SET status = 'paid' WHERE id = {first}; DELETE FROM orders WHERE id = {}", first + 1)).await.unwrap();
        wait_staged(&self.src).await;
    }

    async fn wait_qa_holds(&self, at: &str, expected: &(i64, String)) {
        let qa = session(&self.qa_url).await;
        for _ in 0..300 {
            let exists: bool = qa.query_one("SELECT to_regclass('public.orders') IS NOT NULL", &[]).await.unwrap().get(0);
            if exists && checksum(&qa, "public.orders").await == *expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{at}: qa's public.orders did not come to hold {expected:?} within 30 s\n{}", self.services_log());
    }

    async fn wait_replays(&self, at: &str) {
        for _ in 0..600 {
            let all = strata_writer::replay::list(&self.stage).await.unwrap();
            if let Some(failed) = all.iter().find(|r| r.value.state == ReplayState::Failed) {
                panic!("{at}: replay {} failed: {:?}", failed.value.id, failed.value.error);
            }
            if !all.is_empty() && all.iter().all(|r| r.value.state == ReplayState::Done) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{at}: the replays were not done within 60 s\n{}", self.services_log());
    }
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs the guide from top to bottom, as an operator would, and checks
/// where it leaves the source: strata removed, the data untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operations_guide_runs_as_written() {
    let pieces = parse(&guide());
    let config = pieces.iter().find_map(|p| match p {
        Piece::Block { lang, body, .. } if lang == "toml" => Some(body.join("\n") + "\n"),
        _ => None,
    });
    let mut sandbox = Sandbox::new(&config.expect("the guide's strata.toml")).await;
    let mut ran = 0;
    for piece in &pieces {
        match piece {
            Piece::Directive { line, text } => sandbox.directive(&format!("{GUIDE}:{line}"), text).await,
            Piece::Block { lang, info, line, body } if info.is_empty() => {
                let at = format!("{GUIDE}:{line}");
                match lang.as_str() {
                    "sh" => {
                        for (i, cmd) in command_lines(body) {
                            sandbox.sh(&format!("{GUIDE}:{}", line + 1 + i), &cmd);
                            ran += 1;
                        }
                    }
                    "sql" => sandbox.sql(&at, body).await,
                    "python" => sandbox.python(&at, &body.join("\n")),
                    _ => {}
                }
            }
            Piece::Block { .. } => {}
        }
    }
    assert!(ran >= 25, "{ran} commands ran");
    assert!(sandbox.reader.is_none() && sandbox.writers.is_empty(), "the guide stops every service it starts");
    let left: i64 =
        sandbox.src.query_one("SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "teardown left no slot and no publication in the source");
    let rows: i64 = sandbox.src.query_one("SELECT count(*) FROM orders", &[]).await.unwrap().get(0);
    assert!(rows > 5, "the source keeps its data ({rows} rows)");
    assert!(strata_writer::control::read(&sandbox.stage, "qa").await.unwrap().is_none(), "qa was removed");
    assert!(strata_tests::files_under(&sandbox.dir.path().join("stage")).iter().any(|f| f.starts_with("streams/main/log")), "the stage keeps its history");
}
