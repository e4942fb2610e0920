//! Running `strata-reader` in-process against a throwaway database, and
//! reading back what it staged.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_common::config::Config;
use strata_common::{Change, TableName};
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use tokio_util::sync::CancellationToken;

/// A reader running on the test's runtime.
pub struct RunningReader {
    token: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningReader {
    pub fn start(config: Config) -> RunningReader {
        let token = CancellationToken::new();
        let t = token.clone();
        let task = tokio::spawn(async move { strata_reader::run::run(&config, t).await });
        RunningReader { token, task }
    }

    /// Stops it as SIGTERM would, and returns how it ended.
    pub async fn stop(self) -> Result<()> {
        self.token.cancel();
        self.task.await.context("reader task panicked")?
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the reader to end by itself, and returns how it ended.
    pub async fn stop_when_finished(self) -> Result<()> {
        self.task.await.context("reader task panicked")?
    }
}

/// A service (`strata-reader-under-test` or `strata-writer-under-test`)
/// running as its own process, so it can be killed with SIGKILL like a
/// crashed or OOM-killed one.
pub struct ServiceProcess {
    child: std::process::Child,
}

impl ServiceProcess {
    /// Starts `exe --config config` with its logs on our stderr.
    /// (Any strata service binary: the reader's and the writer's take the same flag.)
    pub fn spawn(exe: &std::path::Path, config: &std::path::Path) -> Result<ServiceProcess> {
        Self::spawn_with(exe, config, std::process::Stdio::inherit(), &[])
    }

    /// [`ServiceProcess::spawn`] with the process's standard output sent to
    /// `stdout` (a file, for a stdout destination's lines) and extra
    /// environment variables (secrets a spec names as `${VAR}`).
    pub fn spawn_with(
        exe: &std::path::Path,
        config: &std::path::Path,
        stdout: impl Into<std::process::Stdio>,
        envs: &[(&str, &str)],
    ) -> Result<ServiceProcess> {
        let child = std::process::Command::new(exe)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        Ok(ServiceProcess { child })
    }

    /// [`ServiceProcess::spawn_with`] with standard output and error both
    /// appended to `log`.
    pub fn spawn_logged(exe: &std::path::Path, config: &std::path::Path, log: &std::path::Path, envs: &[(&str, &str)]) -> Result<ServiceProcess> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
        let child = std::process::Command::new(exe)
            .arg("--config")
            .arg(config)
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        Ok(ServiceProcess { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let status = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        Ok(self.child.wait()?)
    }

    /// Exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a reader config file into `dir` (see [`config_text`]).
pub fn write_config(dir: &std::path::Path, db_url: &str, stage_dir: &std::path::Path, extra: &str) -> Result<std::path::PathBuf> {
    let path = dir.join("strata.toml");
    std::fs::write(&path, config_text(db_url, stage_dir, extra))?;
    Ok(path)
}

/// The TOML of [`config`].
pub fn config_text(db_url: &str, stage_dir: &std::path::Path, extra: &str) -> String {
    config_text_for(db_url, &format!("url = {:?}\n", stage_dir.display().to_string()), extra)
}

/// A config whose `[stage]` section body is `stage`; `extra` goes in `[batch]`.
pub fn config_text_for(db_url: &str, stage: &str, extra: &str) -> String {
    format!(
        "[telemetry]\nlisten = \"127.0.0.1:0\"\n[stage]\n{stage}[source]\nurl = {db_url:?}\nstream = \"main\"\ntables = [\"public.*\"]\n[batch]\nmax_age = \"50ms\"\n{extra}"
    )
}

/// A reader config for `db_url` staging into `stage_dir`, batches cut fast.
pub fn config(db_url: &str, stage_dir: &std::path::Path, extra: &str) -> Config {
    Config::from_toml("test config", &config_text(db_url, stage_dir, extra), &[]).expect("valid test config")
}

/// Waits until strata's slot (`strata_main`) has confirmed the source's
/// WAL flush position as of the call: everything committed so far is
/// staged. Calls `alive` between looks (to fail at once on a service that
/// exited); fails as stuck once `within` has passed.
pub async fn wait_slot_confirmed(src: &tokio_postgres::Client, within: Duration, mut alive: impl FnMut() -> Result<()>) -> Result<()> {
    let target: String = src.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).await?.get(0);
    let deadline = std::time::Instant::now() + within;
    loop {
        let confirmed: Option<bool> = src
            .query_opt("SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'strata_main'", &[&target])
            .await?
            .and_then(|r| r.get(0));
        if confirmed == Some(true) {
            return Ok(());
        }
        alive()?;
        if std::time::Instant::now() > deadline {
            bail!("stuck: the reader did not stage up to {target} within {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the reader's slot is streaming, so changes made after this
/// are captured.
pub async fn wait_for_slot(client: &tokio_postgres::Client, slot: &str) -> Result<()> {
    for _ in 0..600 {
        let active: Option<bool> = client.query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).await?.map(|r| r.get(0));
        if active == Some(true) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("slot {slot} did not become active within 30 s")
}

/// Drops `slot` once no walsender holds it: a reader that has just
/// stopped leaves its walsender exiting for a moment, and dropping an
/// active slot fails.
pub async fn drop_slot_once_released(client: &tokio_postgres::Client, slot: &str) -> Result<()> {
    let drop = "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active";
    for _ in 0..1200 {
        if client.query_one(drop, &[&slot]).await?.get::<_, i64>(0) == 1 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("slot {slot} was not released (or is gone) within 60 s")
}

/// Waits until `stream`'s initial snapshot is recorded done, so that DDL
/// made after this happens mid-stream, not while tables are copied.
pub async fn wait_for_snapshot(stage: &Stage, stream: &str) -> Result<()> {
    let log = StreamLog::new(stage, stream)?;
    for _ in 0..600 {
        let state = stage.get_json::<strata_stager::control::SnapshotState>(&log.keys().snapshot()).await?;
        if state.is_some_and(|s| s.value.phase == strata_stager::control::Phase::Done) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the snapshot of stream {stream} was not done within 60 s")
}

/// Every staged change of `stream`, in commit order, with the seq and
/// schema version it was staged in; fails if the log has a gap or a
/// change appears twice.
pub async fn staged_changes(stage: &Stage, stream: &str) -> Result<Vec<(u64, u32, Change)>> {
    let log = StreamLog::new(stage, stream)?;
    let Some(head) = log.head(None).await? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for seq in 1..=head {
        let m = log.read(seq).await?;
        for f in &m.files {
            let file = log.read_file(f).await?;
            out.extend(file.changes.into_iter().map(|c| (seq, f.schema_version, c)));
        }
    }
    out.sort_by_key(|(_, _, c)| (c.lsn, c.ord));
    let mut seen = HashMap::new();
    for (seq, _, c) in &out {
        if let Some(other) = seen.insert((c.lsn, c.ord), *seq) {
            bail!("change {}/{} staged twice (batches {other} and {seq})", c.lsn, c.ord);
        }
    }
    Ok(out)
}

/// Waits until at least `n` changes are staged; returns them.
pub async fn wait_for_changes(stage: &Stage, stream: &str, n: usize) -> Result<Vec<(u64, u32, Change)>> {
    let mut last = 0;
    for _ in 0..1200 {
        let changes = staged_changes(stage, stream).await?;
        if changes.len() >= n {
            return Ok(changes);
        }
        last = changes.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("only {last} of {n} changes staged after 60 s")
}

/// The columns of `table` in attnum order, as expressions giving each value
/// in its type's output form — what pgoutput sends. (`col::text` is not
/// that: a cast to text strips `char(n)` padding.)
pub async fn text_columns(client: &tokio_postgres::Client, table: &TableName) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table.quoted()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let c = strata_common::ident::quote_ident(&r.get::<_, String>(0));
            format!("CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END")
        })
        .collect())
}

/// Waits (up to 120 s) until the backfill of `table` on stream `main` is
/// done, and returns it; panics if it failed.
pub async fn wait_backfill_done(stage: &Stage, table: &TableName) -> strata_reader::backfill::BackfillRequest {
    use strata_reader::backfill::{BackfillState, list};
    let log = StreamLog::new(stage, "main").expect("test helper");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let found = list(&log).await.expect("test helper").into_iter().map(|r| r.value).find(|r| &r.table == table);
        if let Some(r) = found {
            assert_ne!(r.state, BackfillState::Failed, "the backfill of {table} failed: {:?}", r.error);
            if r.state == BackfillState::Done {
                return r;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the backfill of {table} finished within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
