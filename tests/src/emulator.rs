//! The S3/SQS emulator on a free loopback port (it binds port 0 and reports
//! the port it got, so two test processes never race for one).
//!
//! `infra/emulator.py` serves moto's S3 and SQS from one process and takes a
//! lock around S3 writes, so concurrent conditional PUTs resolve one at a
//! time as on S3 (plain moto lets two `If-Match` writers both win now and
//! then, which would make fencing tests test the emulator instead of us).
//! Like every emulator it is no guide to S3's speed: use it for correctness
//! and ratios.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_common::config::SecretString;
use strata_stager::Stage;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub struct Emulator {
    pub port: u16,
    /// Killed on drop (`kill_on_drop`); its stdin pipe closing stops it too.
    _child: Child,
}

impl Emulator {
    /// Starts the emulator and waits until it serves.
    pub async fn start() -> Result<Emulator> {
        let python = crate::venv_python();
        let script = std::env::var_os("STRATA_EMULATOR").map(std::path::PathBuf::from).unwrap_or_else(|| crate::repo_root().join("infra/emulator.py"));
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-with-stdin"])
            // The emulator exits when this pipe closes, i.e. when the test
            // process ends, however it ends.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let stdout = child.stdout.take().context("emulator stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                // "emulator listening on http://127.0.0.1:PORT"
                if let Some(url) = line.strip_prefix("emulator listening on ") {
                    return Ok::<Option<u16>, std::io::Error>(url.rsplit(':').next().and_then(|p| p.trim().parse().ok()));
                }
            }
            Ok(None)
        })
        .await;
        let port = match ready {
            Ok(Ok(Some(port))) => port,
            Ok(Ok(None)) => bail!("the emulator exited before it was ready (see its stderr above)"),
            Ok(Err(e)) => bail!("reading the emulator's output: {e}"),
            Err(_) => bail!("the emulator was not ready within 60 s"),
        };
        // Keep draining stdout so the emulator never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Emulator { port, _child: child })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (a PUT on the bucket URL, as S3's API has it).
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let (status, body) = request(self.port, "PUT", &format!("/{bucket}"), "").await?;
        if status != 200 {
            bail!("creating bucket {bucket}: {status} {body}");
        }
        Ok(())
    }

    /// Object store options that point an S3 client at this emulator.
    pub fn s3_options(&self) -> BTreeMap<String, SecretString> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".to_owned()),
            ("aws_access_key_id", "test".to_owned()),
            ("aws_secret_access_key", "test".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), SecretString::new(v)))
        .collect()
    }

    /// A fresh bucket as a `[stage]` section body for `strata.toml`, and a
    /// [`Stage`] on it.
    pub async fn stage_config(&self, prefix: &str) -> Result<(String, Stage)> {
        let bucket = format!("stage-{}", uuid::Uuid::new_v4().simple());
        self.create_bucket(&bucket).await?;
        let url = format!("s3://{bucket}/{prefix}");
        let mut toml = format!("url = {url:?}\n[stage.options]\n");
        for (k, v) in self.s3_options() {
            toml.push_str(&format!("{k} = {:?}\n", v.expose()));
        }
        Ok((toml, Stage::open(&url, &self.s3_options())?))
    }

    /// A stage on a fresh bucket of this emulator, under `prefix`.
    pub async fn stage(&self, prefix: &str) -> Result<Stage> {
        let bucket = format!("stage-{}", uuid::Uuid::new_v4().simple());
        self.create_bucket(&bucket).await?;
        Ok(Stage::open(&format!("s3://{bucket}/{prefix}"), &self.s3_options())?)
    }
}

/// One unsigned HTTP/1.1 request to the emulator on `port`; its status and body.
/// A non-empty body is sent as JSON.
pub async fn request(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let content_type = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", port, body.len());
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await?;
    let status = resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status in the emulator's answer")?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
