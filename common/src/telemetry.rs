//! Telemetry shared by the services: `tracing` set-up, a small Prometheus
//! registry, and the HTTP endpoints `/metrics`, `/healthz` and `/readyz`.
//!
//! Logs go to stderr, human-readable by default or JSON (`--log-format
//! json`); the filter comes from `RUST_LOG`, else the configured level, else
//! `info`. INFO is for state changes and periodic summaries: the replication
//! client's routine protocol traffic (a line per standby status update,
//! hundreds a second on a busy stream) shows only at `debug` and below
//! ([`default_filter`]). Metric names follow
//! `strata_<component>_<what>_<unit>`.
//!
//! The HTTP responder answers GET requests only, one per connection, with a
//! bounded request size and a timeout: it serves scrapers and probes on a
//! trusted network, not browsers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice is harmless (the second
/// call is ignored), which keeps tests that start services in-process simple.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter(level.unwrap_or("info"))))
        .unwrap_or_else(|_| EnvFilter::new(default_filter("info")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour(std::env::var_os("NO_COLOR")));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Colour codes only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn colour(no_color: Option<std::ffi::OsString>) -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && no_color.is_none_or(|v| v.is_empty())
}

/// Crates that log routine protocol traffic at INFO: capped at WARN unless
/// the configured level is `debug` or `trace`.
const CHATTY_CRATES: &[&str] = &["pg_walstream"];

/// The filter for a configured `level`: that level for everything, with
/// `CHATTY_CRATES` held to WARN when the level is `info` or quieter.
pub fn default_filter(level: &str) -> String {
    let verbose = matches!(level.trim().to_ascii_lowercase().as_str(), "debug" | "trace");
    if verbose {
        return level.to_owned();
    }
    let mut filter = level.to_owned();
    // A level that names the crate itself says what the user wants.
    for c in CHATTY_CRATES.iter().filter(|c| !level.contains(*c)) {
        filter.push_str(&format!(",{c}=warn"));
    }
    filter
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One value of a metric: a counter (only grows) or a gauge (an `f64`).
#[derive(Clone, Default)]
pub struct Value(Arc<AtomicU64>);

impl Value {
    /// Adds to a counter.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// A gauge's value.
    pub fn gauge(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<String, Value>,
}

/// A set of metrics rendered in the Prometheus text format.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

fn label_string(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))).collect();
    format!("{{{}}}", parts.join(","))
}

impl Registry {
    fn series(&self, name: &'static str, help: &'static str, kind: Kind, labels: &[(&str, &str)]) -> Value {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family { help, kind, series: BTreeMap::new() });
        family.series.entry(label_string(labels)).or_default().clone()
    }

    pub fn counter(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Value {
        self.series(name, help, Kind::Counter, labels)
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Value {
        self.series(name, help, Kind::Gauge, labels)
    }

    /// Publishes `value`, counted elsewhere, as the counter series `name{labels}`
    /// (in place of any series of those labels).
    pub fn register_counter(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], value: &Value) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family { help, kind: Kind::Counter, series: BTreeMap::new() });
        family.series.insert(label_string(labels), value.clone());
    }

    /// Removes every series labelled `label="value"` (a destination that
    /// is gone), so that it stops being scraped rather than freezing at
    /// its last value.
    pub fn remove_labelled(&self, label: &str, value: &str) {
        let needle = label_string(&[(label, value)]);
        let needle = &needle[1..needle.len() - 1];
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for f in families.values_mut() {
            f.series.retain(|labels, _| {
                // Values are escaped, so a match is a whole pair: after `{`
                // or `,`, and before `,` or `}`.
                !labels.match_indices(needle).any(|(i, _)| {
                    let before = labels.as_bytes().get(i.wrapping_sub(1));
                    let after = labels.as_bytes().get(i + needle.len());
                    matches!(before, Some(b'{' | b',')) && matches!(after, Some(b',' | b'}'))
                })
            });
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, f) in families.iter() {
            let kind = if f.kind == Kind::Counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", f.help);
            for (labels, v) in &f.series {
                let raw = v.0.load(Ordering::Relaxed);
                match f.kind {
                    Kind::Counter => {
                        let _ = writeln!(out, "{name}{labels} {raw}");
                    }
                    Kind::Gauge => {
                        let _ = writeln!(out, "{name}{labels} {}", f64::from_bits(raw));
                    }
                }
            }
        }
        out
    }
}

/// Publishes `strata_build_info{service, version} 1`: which build runs
/// where, for dashboards and for alerts that join on it.
pub fn register_build_info(registry: &Registry, service: &str) {
    registry
        .gauge(
            "strata_build_info",
            "Always 1; the labels say which build of which service this is.",
            &[("service", service), ("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1.0);
}

/// Whether the service is ready (`/readyz`); `/healthz` only says it runs.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Largest request head read from a client.
const MAX_REQUEST: usize = 8 * 1024;

/// Binds `addr` and serves the endpoints until the task is dropped. Returns
/// the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, registry: Registry, ready: Readiness) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { continue };
            let (registry, ready) = (registry.clone(), ready.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), respond(&mut socket, &registry, &ready)).await;
            });
        }
    });
    Ok((bound, task))
}

async fn respond(socket: &mut tokio::net::TcpStream, registry: &Registry, ready: &Readiness) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (status, content_type, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", "text/plain; version=0.0.4", registry.render()),
        (Some("GET"), Some("/healthz")) => ("200 OK", "text/plain", "ok\n".to_owned()),
        (Some("GET"), Some("/readyz")) if ready.get() => ("200 OK", "text/plain", "ready\n".to_owned()),
        (Some("GET"), Some("/readyz")) => ("503 Service Unavailable", "text/plain", "not ready\n".to_owned()),
        (Some("GET"), _) => ("404 Not Found", "text/plain", "try /metrics, /healthz or /readyz\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
    };
    let response = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        r.counter("strata_test_rows_total", "Rows.", &[("stream", "a\"b")]).inc_by(3);
        r.gauge("strata_test_lag_seconds", "Lag.", &[]).set(1.5);
        let text = r.render();
        assert!(text.contains("# TYPE strata_test_rows_total counter\nstrata_test_rows_total{stream=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("strata_test_lag_seconds 1.5\n"), "{text}");
    }

    #[test]
    fn series_of_a_label_value_are_removed_whole() {
        let r = Registry::default();
        r.counter("strata_test_total", "T.", &[("destination", "a"), ("stream", "s")]).inc_by(1);
        r.counter("strata_test_total", "T.", &[("destination", "ab"), ("stream", "s")]).inc_by(2);
        r.gauge("strata_test_state", "S.", &[("stream", "s"), ("destination", "a")]).set(1.0);
        r.gauge("strata_test_state", "S.", &[("destination", "x\",destination=\"a")]).set(1.0);
        r.remove_labelled("destination", "a");
        let text = r.render();
        assert!(!text.contains("destination=\"a\"}") && !text.contains("destination=\"a\","), "{text}");
        assert!(text.contains("strata_test_total{destination=\"ab\",stream=\"s\"} 2"), "{text}");
        assert!(text.contains("strata_test_state{destination=\"x\\\",destination=\\\"a\"} 1"), "a value that only contains the pair is kept: {text}");
    }

    #[test]
    fn protocol_chatter_shows_only_when_asked_for() {
        assert_eq!(default_filter("info"), "info,pg_walstream=warn");
        assert_eq!(default_filter("warn"), "warn,pg_walstream=warn");
        assert_eq!(default_filter("DEBUG"), "DEBUG");
        assert_eq!(default_filter("info,pg_walstream=info"), "info,pg_walstream=info");
        for level in ["info", "debug", "info,strata_reader=trace"] {
            assert!(EnvFilter::try_new(default_filter(level)).is_ok(), "{level}");
        }
    }

    #[tokio::test]
    async fn serves_the_endpoints() {
        let r = Registry::default();
        r.counter("strata_test_total", "Test.", &[]).inc_by(7);
        let ready = Readiness::default();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), r, ready.clone()).await.unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/metrics").await.contains("strata_test_total 7"));
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        ready.set(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
