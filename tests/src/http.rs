//! A small HTTP/1.1 server on loopback for webhook tests: it records every
//! request and answers with a status the test chooses per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// The answer to one request: status and extra headers.
pub type Answer = (u16, Vec<(String, String)>);

pub struct TestServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else { bail!("bad request line {line:?}") };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).await?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').with_context(|| format!("bad header {h:?}"))?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length").map_or(Ok(0), |v| v.parse()).context("content-length")?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    Ok(Some(Request { at: Instant::now(), method, path, headers, body }))
}

impl TestServer {
    /// Serves on 127.0.0.1 until dropped; `answer(n, request)` decides the
    /// response to the `n`th request (from 0).
    pub async fn start(answer: impl Fn(usize, &Request) -> Answer + Send + Sync + 'static) -> Result<TestServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let answer = Arc::new(answer);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (seen, answer) = (seen.clone(), answer.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut reader = BufReader::new(read);
                    while let Ok(Some(request)) = read_request(&mut reader).await {
                        let (status, extra) = {
                            let Ok(mut all) = seen.lock() else { return };
                            let a = answer(all.len(), &request);
                            all.push(request);
                            a
                        };
                        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n");
                        for (k, v) in extra {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        if write.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(TestServer { port, requests, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// The whole response (status line, headers, body) to a GET of `path` on
/// loopback `port`: for a service's `/metrics`, `/healthz` and `/readyz`.
pub async fn get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("test helper: connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.expect("test helper: request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("test helper: response");
    out
}

/// The value of one series (`name{labels}` exactly as exposed) in a
/// `/metrics` text; panics, naming it, when the series is absent.
pub fn metric(text: &str, series: &str) -> f64 {
    let line = text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')));
    let line = line.unwrap_or_else(|| panic!("no series {series} in:\n{text}"));
    line.trim().parse().unwrap_or_else(|e| panic!("series {series}: value {line:?}: {e}"))
}

/// A service's stage requests by kind, from `strata_stage_requests_total{op="…"}`
/// on the `/metrics` of loopback `port`.
pub async fn stage_requests(port: u16) -> Result<std::collections::BTreeMap<String, u64>> {
    let text = get(port, "/metrics").await;
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("strata_stage_requests_total{op=\"") else { continue };
        let (op, value) = rest.split_once("\"} ").with_context(|| format!("unexpected metrics line {line:?}"))?;
        out.insert(op.to_owned(), value.trim().parse().with_context(|| format!("count in {line:?}"))?);
    }
    if out.is_empty() {
        bail!("no strata_stage_requests_total on port {port}");
    }
    Ok(out)
}
