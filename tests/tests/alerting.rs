//! The alerting kit (`infra/prometheus/alerts.yaml`, `infra/grafana/strata.json`)
//! agrees with what the services export: a reader and a writer run on a
//! throwaway database, and every metric, label and label value the rules
//! and the dashboard select is in their `/metrics`. promtool checks the
//! rules and runs their unit tests. The per-destination metrics and
//! `status` are checked for what they say, not only that they exist.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use strata_stager::Stage;
use strata_tests::http::{get, metric};
use strata_tests::pg::{PgCluster, connect};
use strata_tests::process::free_port;
use strata_tests::reader::{ServiceProcess, wait_for_slot, write_config};
use strata_tests::writer::{spec, wait_caught_up};
use strata_writer::spec::{PostgresMode, StartPosition};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");
const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");
const RULES: &str = "infra/prometheus/alerts.yaml";
const RULE_TESTS: &str = "infra/prometheus/alerts.test.yaml";
const DASHBOARD: &str = "infra/grafana/strata.json";

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];
/// Labels whose values name a user's own objects: only their presence is checked.
const NAMING_LABELS: [&str; 2] = ["destination", "stream"];

/// Series by metric name, from a `/metrics` text.
type Scraped = BTreeMap<String, Vec<BTreeMap<String, String>>>;

fn parse_scrape(text: &str, into: &mut Scraped) {
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, _value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, matchers(rest.strip_suffix('}').unwrap()).into_iter().map(|(l, _, v)| (l, v)).collect()),
            None => (series, BTreeMap::new()),
        };
        into.entry(name.to_owned()).or_default().push(labels);
    }
}

/// A label matcher: label, operator (`=`, `!=`, `=~`, `!~`), value.
type Matcher = (String, String, String);

/// `label op "value"` pairs of a selector's or a series' braces.
fn matchers(inside: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = inside.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!']).unwrap_or_else(|| panic!("no operator in {inside:?}"));
        let label = rest[..op_at].trim().to_owned();
        let after = &rest[op_at..];
        let op_len = after.find('"').unwrap_or_else(|| panic!("no value in {inside:?}"));
        let op = after[..op_len].trim().to_owned();
        // The value runs to the next unescaped quote.
        let body = &after[op_len + 1..];
        let mut end = 0;
        let bytes = body.as_bytes();
        while bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        out.push((label, op, body[..end].replace("\\\"", "\"").replace("\\\\", "\\")));
        rest = body[end + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// What an expression selects: `strata_*` metrics with their matchers, and
/// the labels its aggregations group `by`.
fn selections(expr: &str) -> (Vec<(String, Vec<Matcher>)>, Vec<String>) {
    let mut selected = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("strata_") {
        let name_len = rest[at..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len() - at);
        let name = rest[at..at + name_len].to_owned();
        rest = &rest[at + name_len..];
        let mut m = Vec::new();
        if let Some(inside) = rest.strip_prefix('{') {
            let close = inside.find('}').unwrap_or_else(|| panic!("unclosed selector in {expr:?}"));
            m = matchers(&inside[..close]);
            rest = &inside[close + 1..];
        }
        selected.push((name, m));
    }
    let mut by = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let inside = &rest[at + 4..];
        let close = inside.find(')').unwrap();
        by.extend(inside[..close].split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
        rest = &inside[close..];
    }
    (selected, by)
}

/// Everything in `expr` (from `place`) that `scraped` does not export.
fn problems(place: &str, expr: &str, scraped: &Scraped) -> Vec<String> {
    let mut out = Vec::new();
    let (selected, by) = selections(expr);
    let has_label = |series: &[BTreeMap<String, String>], label: &str| series.iter().any(|s| s.contains_key(label));
    for (name, matchers) in &selected {
        let Some(series) = scraped.get(name) else {
            out.push(format!("{place}: {name} is not exported"));
            continue;
        };
        for (label, op, value) in matchers.iter().filter(|(l, ..)| !TARGET_LABELS.contains(&l.as_str())) {
            if !has_label(series, label) {
                out.push(format!("{place}: {name} has no label {label:?}"));
            } else if op == "=" && !NAMING_LABELS.contains(&label.as_str()) && !series.iter().any(|s| s.get(label) == Some(value)) {
                out.push(format!("{place}: {name} never has {label}={value:?}"));
            }
        }
    }
    for label in by.iter().filter(|l| !TARGET_LABELS.contains(&l.as_str())) {
        if !selected.iter().any(|(name, _)| scraped.get(name).is_some_and(|s| has_label(s, label))) {
            out.push(format!("{place}: groups by {label:?}, which no metric it selects has"));
        }
    }
    out
}

/// Every PromQL expression in the rules file and the dashboard, with where it is.
fn kit_expressions() -> Vec<(String, String)> {
    let root = strata_tests::repo_root();
    let rules: serde_json::Value = strata_tests::python_json(
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        &[root.join(RULES).to_str().unwrap()],
        &serde_json::Value::Null,
    );
    let mut out = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            out.push((format!("{RULES} {}", rule["alert"].as_str().unwrap()), rule["expr"].as_str().unwrap().to_owned()));
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join(DASHBOARD)).unwrap()).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((format!("{DASHBOARD} panel {:?}", panel["title"]), target["expr"].as_str().unwrap().to_owned()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        // label_values(metric{…}, label): the label must be on the metric.
        let q = var["definition"].as_str().unwrap();
        let inner = q.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push((format!("{DASHBOARD} variable {:?}", var["name"]), format!("max by ({}) ({selector})", label.trim())));
    }
    out
}

#[test]
fn a_misspelled_metric_label_or_value_is_caught() {
    let mut scraped = Scraped::new();
    parse_scrape("# TYPE strata_x_total counter\nstrata_x_total{destination=\"a\",state=\"failed\"} 1\nstrata_y 2\n", &mut scraped);
    assert!(problems("ok", r#"max by (destination) (strata_x_total{state="failed", destination="zz", job="w"}) + strata_y"#, &scraped).is_empty());
    for (expr, want) in [
        ("strata_x_totl", "strata_x_totl is not exported"),
        (r#"strata_x_total{stat="failed"}"#, "no label \"stat\""),
        (r#"strata_x_total{state="faild"}"#, "never has state=\"faild\""),
        ("max by (stream) (strata_x_total)", "groups by \"stream\""),
    ] {
        let found = problems("t", expr, &scraped);
        assert!(found.iter().any(|p| p.contains(want)), "{expr}: {found:?}");
    }
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let root = strata_tests::repo_root();
    for args in [vec!["check", "rules", RULES], vec!["test", "rules", RULE_TESTS]] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(&root)
            .output()
            .unwrap_or_else(|e| panic!("running promtool (infra/test installs it: apt-get install prometheus): {e}"));
        assert!(out.status.success(), "promtool {args:?}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}

/// Polls `port`'s `/metrics` until `ready` holds of it, for up to `secs`.
async fn scrape_until(port: u16, secs: u64, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = get(port, "/metrics").await;
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn writer_cli(config: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(WRITER).args(args).arg("--config").arg(config).output().unwrap();
    assert!(out.status.success(), "strata-writer {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_alerts_select_what_the_services_export() {
    let pg = PgCluster::shared();
    let (src_url, dst_url) = (pg.fresh_database().await.unwrap(), pg.fresh_database().await.unwrap());
    let admin = connect(&src_url).await.unwrap();
    admin.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let config = write_config(dir.path(), &src_url, &stage_dir, "").unwrap();
    let (reader_port, writer_port) = (free_port(), free_port());
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let null = std::process::Stdio::null;
    let reader = ServiceProcess::spawn_with(Path::new(READER), &config, null(), &[("STRATA_TELEMETRY__LISTEN", &listen(reader_port))]).unwrap();
    wait_for_slot(&admin, "strata_main").await.unwrap();
    admin.batch_execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 6) g; INSERT INTO t VALUES (7, 'y'), (8, 'z')").await.unwrap();

    let stage = Stage::local(&stage_dir).unwrap();
    strata_writer::control::add(&stage, &spec("m", &dst_url, StartPosition::Earliest, PostgresMode::Mirror)).await.unwrap();
    let mut paused = spec("p", &dst_url, StartPosition::Earliest, PostgresMode::Mirror);
    paused.paused = true;
    strata_writer::control::add(&stage, &paused).await.unwrap();
    let mut quiet = spec("q", &dst_url, StartPosition::Earliest, PostgresMode::Mirror);
    (quiet.paused, quiet.stream) = (true, "quiet".to_owned());
    strata_writer::control::add(&stage, &quiet).await.unwrap();
    let writer = ServiceProcess::spawn_with(Path::new(WRITER), &config, null(), &[("STRATA_TELEMETRY__LISTEN", &listen(writer_port))]).unwrap();
    wait_caught_up(&stage, "m").await;

    let m = r#"{destination="m",stream="main"}"#;
    let writer_text = scrape_until(writer_port, 30, "the writer counts the 8 changes delivered to m", |t| {
        t.contains(&format!("strata_writer_delivered_changes_total{m} 8"))
            && t.contains(r#"strata_writer_destination_state{destination="m",stream="main",state="running"} 1"#)
    })
    .await;
    assert!(metric(&writer_text, &format!("strata_writer_delivered_batches_total{m}")) >= 1.0);
    for series in [
        r#"strata_writer_destination_state{destination="p",stream="main",state="paused"} 1"#,
        r#"strata_writer_destination_state{destination="p",stream="main",state="running"} 0"#,
        r#"strata_writer_destination_state{destination="q",stream="quiet",state="paused"} 1"#,
        r#"strata_writer_dead_lettered_changes_total{destination="m",stream="main"} 0"#,
        r#"strata_writer_retries_total{destination="m",stream="main"} 0"#,
        r#"strata_writer_last_error_timestamp_seconds{destination="m",stream="main"} 0"#,
        r#"strata_writer_lag_batches{destination="m",stream="main"} 0"#,
        r#"strata_build_info{service="writer",version=""#,
    ] {
        assert!(writer_text.contains(series), "{series} in:\n{writer_text}");
    }
    // The slot's figures come from the source every 15 s.
    let reader_text = scrape_until(reader_port, 40, "the reader samples the slot's retained WAL", |t| {
        t.lines().any(|l| l.starts_with("strata_reader_slot_retained_wal_bytes{") && !l.ends_with(" 0"))
    })
    .await;
    assert!(reader_text.contains(r#"strata_reader_slot_safe_wal_bytes{stream="main"} NaN"#), "unlimited max_slot_wal_keep_size: {reader_text}");
    assert!(reader_text.contains(r#"strata_build_info{service="reader",version=""#), "{reader_text}");

    let mut scraped = Scraped::new();
    parse_scrape(&reader_text, &mut scraped);
    parse_scrape(&writer_text, &mut scraped);
    let expressions = kit_expressions();
    assert!(expressions.len() >= 20, "the kit's expressions were found: {expressions:?}");
    let found: Vec<String> = expressions.iter().flat_map(|(place, expr)| problems(place, expr, &scraped)).collect();
    assert!(found.is_empty(), "the alerting kit selects what is not exported:\n{}", found.join("\n"));
    let used: BTreeSet<String> = expressions.iter().flat_map(|(_, e)| selections(e).0.into_iter().map(|(n, _)| n)).collect();
    for name in ["strata_writer_destination_state", "strata_reader_slot_retained_wal_bytes", "strata_reader_slot_safe_wal_bytes", "strata_build_info"] {
        assert!(used.contains(name), "the kit uses {name}");
    }

    check_status(&config);
    // A removed destination's series go.
    strata_writer::control::remove(&stage, "m").await.unwrap();
    scrape_until(writer_port, 30, "m's series are removed", |t| !t.contains(r#"destination="m""#)).await;
    assert!(writer.terminate().unwrap().success());
    assert!(reader.terminate().unwrap().success());
}

/// `status` says lag in batches and seconds, and never `null`.
fn check_status(config: &Path) {
    let text = writer_cli(config, &["status"]);
    assert!(!text.contains("null"), "{text}");
    let line = |name: &str| text.lines().find(|l| l.starts_with(&format!("{name}\t"))).unwrap_or_else(|| panic!("{name} in {text}")).to_owned();
    assert!(line("m").contains("lag 0 batches, 0 s"), "{text}");
    assert!(line("q").contains("nothing staged yet"), "{text}");
    let json = writer_cli(config, &["status", "--json"]);
    assert!(!json.contains("null"), "{json}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let row = |name: &str| rows.iter().find(|r| r["destination"] == name).unwrap().clone();
    // p has delivered nothing: its lag is the age of the first batch.
    let p = row("p");
    assert!(p["lag_batches"].as_u64().unwrap() >= 1 && p["lag_seconds"].as_f64().unwrap() > 0.0, "{p}");
    assert!(line("p").contains(&format!("lag {} batches, ", p["lag_batches"])), "{text}");
    assert_eq!(row("m")["lag_seconds"].as_f64(), Some(0.0));
    assert!(row("q").get("head").is_none(), "{json}");
}
