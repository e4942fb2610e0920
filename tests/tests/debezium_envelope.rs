//! `envelope = "debezium"` against real Debezium output.
//!
//! `tests/fixtures/debezium/` holds what Debezium 3.6.3.Final's PostgreSQL
//! connector emitted at its default settings for `setup.sql` (snapshot) and
//! `stream.sql` (streamed changes), recorded by `tests/debezium-recorder/`.
//! This test runs the same script through strata — reader, stage, writer —
//! and compares every record with the recorded one, field by field and in
//! field order: the keys, the values, and (in `with-schema.jsonl`) the
//! Connect schemas.
//!
//! Records are paired per table in order (snapshot rows, then changes in
//! commit order, a delete's tombstone after it), so the sequence of
//! operations is checked too. The fields allowed to differ are listed in
//! [`allowed`], each with its reason; every other difference fails, named
//! by its path.
//!
//! The records are made from the staged changes by the writer's encoder,
//! and the writer's stdout (`debezium`), files (`debezium-schemaless`) and
//! SQS (`debezium`, on the emulator) destinations must send exactly their
//! values — SQS with each record's key and change id as attributes.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use strata_common::config::Config;
use strata_stager::Stage;
use strata_stager::log::StreamLog;
use strata_tests::emulator::Emulator;
use strata_tests::pg::{PgCluster, connect};
use strata_tests::reader::{RunningReader, ServiceProcess, config_text, wait_for_slot};
use strata_tests::sqs::{Sqs, writer_env};
use strata_tests::writer::{spec_of, wait_caught_up, wait_staged};
use strata_writer::destinations::files::config::{FileFormat, FilesSpec};
use strata_writer::destinations::sqs::config::SqsSpec;
use strata_writer::destinations::stdout::config::StdoutSpec;
use strata_writer::envelope::EnvelopeFormat;
use strata_writer::envelope::debezium::{Json, Origin, records};
use strata_writer::spec::{DestinationKind, StartPosition};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

fn fixture_path(name: &str) -> std::path::PathBuf {
    strata_tests::repo_root().join("tests/fixtures/debezium").join(name)
}

/// One record: its topic, key and value (`None`: a null key, a tombstone).
#[derive(Debug, Clone)]
struct Rec {
    topic: String,
    key: Option<Json>,
    value: Option<Json>,
}

impl Rec {
    fn payload(&self) -> Option<&Json> {
        self.value.as_ref().map(|v| v.get("payload").unwrap_or(v))
    }

    fn op(&self) -> String {
        match self.payload().and_then(|p| p.get("op")) {
            Some(Json::Str(op)) => op.clone(),
            _ => "tombstone".to_owned(),
        }
    }

    fn source(&self, field: &str) -> Option<&Json> {
        self.payload().and_then(|p| p.get("source")).and_then(|s| s.get(field))
    }
}

fn load_fixture(name: &str) -> Vec<Rec> {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap();
    text.lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            let parse = |field: &str| line[field].as_str().map(|s| Json::parse(s).unwrap_or_else(|e| panic!("{name}: {field} {s:?}: {e}")));
            Rec { topic: line["topic"].as_str().unwrap().to_owned(), key: parse("key"), value: parse("value") }
        })
        .collect()
}

/// psql's statements of a script: split at semicolons outside quotes,
/// `--` comments dropped, so each runs as its own transaction as psql ran it.
fn statements(script: &str) -> Vec<String> {
    let (mut out, mut current, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '\\' if quoted => {
                // E'…' escapes: the next character is literal.
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                continue;
            }
            '-' if !quoted && chars.peek() == Some(&'-') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        break;
                    }
                }
                current.push('\n');
                continue;
            }
            ';' if !quoted => {
                if !current.trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    assert!(current.trim().is_empty() && !quoted, "the script ends with a complete statement");
    out
}

async fn run_script(client: &tokio_postgres::Client, name: &str) {
    let script = std::fs::read_to_string(fixture_path(name)).unwrap();
    for statement in statements(&script) {
        client.batch_execute(&statement).await.unwrap_or_else(|e| panic!("{name}: {statement}: {e}"));
    }
}

/// The records the writer's encoder makes of everything staged, in the
/// order the writer delivers them (batch by batch, each in commit order),
/// each batch with its own staging time and snapshot point.
async fn strata_records(stage: &Stage, schemas: bool) -> Vec<Rec> {
    let log = StreamLog::new(stage, "main").unwrap();
    let head = log.head(None).await.unwrap().unwrap();
    let mut out: Vec<(u64, u64, u32, Vec<Rec>)> = Vec::new();
    for seq in 1..=head {
        let m = log.read(seq).await.unwrap();
        let points: Vec<strata_common::Lsn> = m.snapshot.iter().map(|s| s.point).collect();
        let origin = Origin { stream: "main", staged_at: m.created_at, snapshot_points: &points, schemas };
        for f in &m.files {
            let schema = log.read_schema(&f.table, f.schema_version).await.unwrap();
            let topic = format!("main.{}.{}", f.table.schema, f.table.name);
            for c in log.read_file(f).await.unwrap().changes {
                let recs = records(&origin, &schema, &c).into_iter().map(|r| Rec { topic: topic.clone(), key: r.key, value: r.value }).collect();
                out.push((seq, c.lsn.as_u64(), c.ord, recs));
            }
        }
    }
    out.sort_by_key(|(seq, lsn, ord, _)| (*seq, *lsn, *ord));
    out.into_iter().flat_map(|(_, _, _, recs)| recs).collect()
}

/// One difference between a recorded and a strata record.
#[derive(Debug)]
struct Difference {
    path: String,
    fixture: String,
    strata: String,
}

fn show(j: Option<&Json>) -> String {
    j.map_or("(absent)".to_owned(), |j| {
        let t = j.to_text();
        if t.len() > 160 { format!("{}…", &t[..t.char_indices().nth(160).map_or(t.len(), |(i, _)| i)]) } else { t }
    })
}

/// Every difference between `a` (recorded) and `b` (strata), with paths;
/// an array element that is a schema field is named by its `field`.
fn diff(path: &str, a: Option<&Json>, b: Option<&Json>, out: &mut Vec<Difference>) {
    let differ = |out: &mut Vec<Difference>| out.push(Difference { path: path.to_owned(), fixture: show(a), strata: show(b) });
    match (a, b) {
        (Some(Json::Obj(fa)), Some(Json::Obj(fb))) => {
            for (k, va) in fa {
                diff(&format!("{path}.{k}"), Some(va), b.and_then(|b| b.get(k)), out);
            }
            for (k, vb) in fb.iter().filter(|(k, _)| a.and_then(|a| a.get(k)).is_none()) {
                diff(&format!("{path}.{k}"), None, Some(vb), out);
            }
            let order = |f: &Vec<(String, Json)>, other: &Vec<(String, Json)>| -> Vec<String> {
                f.iter().filter(|(k, _)| other.iter().any(|(o, _)| o == k)).map(|(k, _)| k.clone()).collect()
            };
            if order(fa, fb) != order(fb, fa) {
                out.push(Difference { path: format!("{path} (field order)"), fixture: format!("{:?}", order(fa, fb)), strata: format!("{:?}", order(fb, fa)) });
            }
        }
        (Some(Json::Arr(ia)), Some(Json::Arr(ib))) if ia.len() == ib.len() => {
            for (i, (x, y)) in ia.iter().zip(ib).enumerate() {
                let name = match x.get("field") {
                    Some(Json::Str(f)) => f.clone(),
                    _ => i.to_string(),
                };
                diff(&format!("{path}[{name}]"), Some(x), Some(y), out);
            }
        }
        (Some(Json::Float64(x)), Some(Json::Float32(y))) if *x == f64::from(*y) => {}
        (Some(Json::Float64(x)), Some(Json::Float64(y))) if x == y => {}
        (Some(x), Some(y)) if x == y => {}
        (None, None) => {}
        _ => differ(out),
    }
}

/// Why a difference at `path` (in `topic`, a record of `op`) is expected,
/// or `None` if it is a bug. Paths are relative to the payload (`schema.…`
/// for the Connect schema, `key…` for the key).
fn allowed(topic: &str, op: &str, d: &Difference) -> Option<&'static str> {
    let table = topic.rsplit('.').next().unwrap_or_default();
    let row_schema = |column: &str, attrs: &[&str]| {
        ["before", "after"].iter().any(|image| attrs.iter().any(|a| d.path == format!("schema.fields[{image}].fields[{column}].{a}")))
    };
    match d.path.as_str() {
        "ts_ms" | "ts_us" | "ts_ns" => Some("processing time: Debezium's when it emitted the record, strata's when the reader staged the change"),
        "source.ts_ms" | "source.ts_us" | "source.ts_ns" => Some("commit time (snapshot: its start) of this run, not of the recording's"),
        "source.txId" => Some("transaction id of this run; strata keeps none for snapshot rows (checked: same grouping as Debezium's)"),
        "source.lsn" | "source.sequence" => Some("WAL positions of this run; strata's stage holds commit LSNs, not each change's (checked: consistent)"),
        "source.snapshot"
            if d.strata == "\"true\""
                && ["\"first\"", "\"first_in_data_collection\"", "\"last_in_data_collection\"", "\"last\""].contains(&d.fixture.as_str()) =>
        {
            Some("Debezium marks the snapshot's edges; a writer delivering batch by batch does not know them")
        }
        _ if table == "all_types" && row_schema("e", &["name", "version", "parameters"]) => {
            Some("an enum's labels are not in the stage: the enum is a plain string")
        }
        _ if table == "full_ident" && (row_schema("id", &["optional"]) || d.path.starts_with("key")) => {
            Some("REPLICA IDENTITY FULL: pgoutput flags every column as the identity, so the stage does not know the primary key")
        }
        "after.d" if table == "all_types" && op == "r" && d.fixture == "1001860" => {
            Some("Debezium's snapshot loses the era of '4713-01-01 BC' (its stream writes -2440550, as strata does)")
        }
        _ => None,
    }
}

/// The recorded and strata's records paired per table, in order, after
/// checking that each table has the same sequence of records.
fn paired(name: &str, fixture: &[Rec], ours: &[Rec]) -> Vec<(Rec, Rec)> {
    let by_topic = |recs: &[Rec]| {
        let mut m: BTreeMap<String, Vec<Rec>> = BTreeMap::new();
        for r in recs {
            m.entry(r.topic.clone()).or_default().push(r.clone());
        }
        m
    };
    let (expected, actual) = (by_topic(fixture), by_topic(ours));
    assert_eq!(expected.keys().collect::<Vec<_>>(), actual.keys().collect::<Vec<_>>(), "{name}: the same tables");
    let mut out = Vec::new();
    for (topic, want) in expected {
        let got = &actual[&topic];
        let ops = |recs: &[Rec]| recs.iter().map(Rec::op).collect::<Vec<_>>();
        assert_eq!(ops(got), ops(&want), "{name}: {topic}: the sequence of records (ops, tombstones)");
        out.extend(want.into_iter().zip(got.iter().cloned()));
    }
    out
}

/// Compares paired records; panics on the first unexplained difference.
/// Returns the explained ones, counted by reason.
fn compare(name: &str, pairs: &[(Rec, Rec)]) -> BTreeMap<&'static str, usize> {
    let mut explained: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (w, g) in pairs {
        let mut differences = Vec::new();
        diff("key", w.key.as_ref(), g.key.as_ref(), &mut differences);
        match (w.value.as_ref().and_then(|v| v.get("schema")), g.value.as_ref().and_then(|v| v.get("schema"))) {
            (None, None) => {}
            (ws, gs) => diff("schema", ws, gs, &mut differences),
        }
        diff("", w.payload(), g.payload(), &mut differences);
        let op = w.op();
        for mut d in differences {
            d.path = d.path.trim_start_matches('.').to_owned();
            match allowed(&w.topic, &op, &d) {
                Some(reason) => *explained.entry(reason).or_default() += 1,
                None => panic!(
                    "{name}: {} record (op {op}, key {}): `{}` differs\n  debezium: {}\n  strata:   {}",
                    w.topic,
                    show(w.key.as_ref()),
                    d.path,
                    d.fixture,
                    d.strata
                ),
            }
        }
    }
    explained
}

/// What the fields allowed to differ must still be: consistent in strata's
/// records, and grouped by transaction as Debezium's are.
fn check_run_dependent_fields(name: &str, pairs: &[(Rec, Rec)]) {
    let int = |r: &Rec, f: &str| match r.source(f) {
        Some(Json::Int(v)) => *v,
        other => panic!("{name}: source.{f} is {other:?}"),
    };
    let mut tx_pairs: HashMap<i64, i64> = HashMap::new();
    let mut streamed = 0;
    for (w, g) in pairs.iter().filter(|(w, _)| w.value.is_some()) {
        let (ms, us, ns) = (int(g, "ts_ms"), int(g, "ts_us"), int(g, "ts_ns"));
        assert!(us.div_euclid(1000) == ms && ns == us * 1000 && ms > 1_700_000_000_000, "{name}: source.ts_* agree: {ms} {us} {ns}");
        let p = g.payload().unwrap();
        let top = |f: &str| match p.get(f) {
            Some(Json::Int(v)) => *v,
            other => panic!("{name}: {f} is {other:?}"),
        };
        assert!(top("ts_us").div_euclid(1000) == top("ts_ms") && top("ts_ns") == top("ts_us") * 1000, "{name}: top-level ts_* agree");
        let lsn = int(g, "lsn");
        let snapshot = g.source("snapshot") == Some(&Json::str("true"));
        let sequence = if snapshot { format!("[null,\"{lsn}\"]") } else { format!("[\"{lsn}\",\"{lsn}\"]") };
        assert_eq!(g.source("sequence"), Some(&Json::Str(sequence)), "{name}: sequence names the lsn");
        if !snapshot {
            streamed += 1;
            let (wt, gt) = (int(w, "txId"), int(g, "txId"));
            assert_eq!(*tx_pairs.entry(wt).or_insert(gt), gt, "{name}: Debezium's transaction {wt} is one strata transaction");
        }
    }
    let distinct: std::collections::HashSet<i64> = tx_pairs.values().copied().collect();
    assert_eq!(distinct.len(), tx_pairs.len(), "{name}: strata's transactions are Debezium's, one for one");
    assert!(streamed > 20 && tx_pairs.len() > 10, "{name}: {streamed} streamed records in {} transactions were compared", tx_pairs.len());
}

/// Every message on the queue: its body must be a record's value, its
/// `debezium-key` attribute that record's key, its `strata-id` the change's.
async fn check_sqs_messages(sqs: &Sqs, url: &str, ours: &[Rec]) {
    let mut expected: HashMap<String, Option<String>> =
        ours.iter().filter_map(|r| r.value.as_ref().map(|v| (v.to_text(), r.key.as_ref().map(Json::to_text)))).collect();
    let want = expected.len();
    let mut received = 0;
    while received < want {
        let r =
            sqs.client.receive_message().queue_url(url).max_number_of_messages(10).message_attribute_names("All").wait_time_seconds(1).send().await.unwrap();
        assert!(!r.messages().is_empty(), "the queue holds {want} messages; {received} received");
        for m in r.messages() {
            let attribute = |name: &str| m.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).map(str::to_owned);
            let body = m.body().unwrap().to_owned();
            let key = expected.remove(&body).unwrap_or_else(|| panic!("an sqs message that is no record's value (or twice): {}", &body[..body.len().min(300)]));
            assert_eq!(attribute("debezium-key"), key, "the message's debezium-key attribute is its record's key");
            assert!(attribute("strata-id").is_some_and(|id| id.starts_with("main:")), "the strata-id attribute names the change");
            sqs.client.delete_message().queue_url(url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
            received += 1;
        }
    }
}

/// Asserts `got` is `want`, naming the first line that differs.
fn same_lines(what: &str, got: &[String], want: &[String]) {
    let short = |l: Option<&String>| show(l.map(|l| Json::parse(l).unwrap()).as_ref().and_then(|v| v.get("payload").or(Some(v))));
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: {} lines for {} records; line {i} differs:\n  written:  {}\n  expected: {}",
            got.len(),
            want.len(),
            short(got.get(i)),
            short(want.get(i))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_envelopes_equal_recorded_debezium_output() {
    let cluster = PgCluster::shared();
    // The recording's database name, which source.db carries.
    cluster.connect("postgres").await.unwrap().batch_execute("CREATE DATABASE shop").await.unwrap();
    let src_url = cluster.url("shop");
    let admin = connect(&src_url).await.unwrap();
    run_script(&admin, "setup.sql").await;
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("stage");
    let reader = RunningReader::start(Config::from_toml("t", &config_text(&src_url, &stage_dir, ""), &[]).unwrap());
    wait_for_slot(&admin, "strata_main").await.unwrap();
    run_script(&admin, "stream.sql").await;
    wait_staged(&admin).await;

    // The writer, as a user runs it: Debezium records on stdout, and
    // schemaless ones in JSON Lines files (a file per batch).
    let stage = Stage::local(&stage_dir).unwrap();
    let stdout = DestinationKind::Stdout(StdoutSpec { envelope: EnvelopeFormat::Debezium });
    strata_writer::control::add(&stage, &spec_of("out", StartPosition::Earliest, stdout)).await.unwrap();
    let files_dir = dir.path().join("lake");
    let mut files = FilesSpec::new(files_dir.display().to_string(), FileFormat::Jsonl);
    (files.roll_up_rows, files.roll_up_secs, files.envelope) = (1, 0, EnvelopeFormat::DebeziumSchemaless);
    strata_writer::control::add(&stage, &spec_of("lake", StartPosition::Earliest, DestinationKind::Files(files))).await.unwrap();
    let emulator = Emulator::start().await.unwrap();
    let sqs = Sqs::new(&emulator).await;
    let queue_url = sqs.create_queue("dbz", None).await.unwrap();
    let mut queue = SqsSpec::new(queue_url.clone());
    (queue.region, queue.endpoint, queue.envelope) = (Some("us-east-1".to_owned()), Some(emulator.endpoint()), EnvelopeFormat::Debezium);
    strata_writer::control::add(&stage, &spec_of("queue", StartPosition::Earliest, DestinationKind::Sqs(queue))).await.unwrap();
    let config_path = dir.path().join("writer.toml");
    std::fs::write(&config_path, config_text(&src_url, &stage_dir, "")).unwrap();
    let out_path = dir.path().join("out.jsonl");
    let env = writer_env(&emulator);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let writer = ServiceProcess::spawn_with(Path::new(WRITER), &config_path, std::fs::File::create(&out_path).unwrap(), &env).unwrap();
    for destination in ["out", "lake", "queue"] {
        wait_caught_up(&stage, destination).await;
    }
    assert!(writer.terminate().unwrap().success());
    reader.stop().await.unwrap();

    let mut explained = BTreeMap::new();
    for (fixture, schemas) in [("with-schema.jsonl", true), ("schemaless.jsonl", false)] {
        let want = load_fixture(fixture);
        let ours = strata_records(&stage, schemas).await;
        let pairs = paired(fixture, &want, &ours);
        for (reason, n) in compare(fixture, &pairs) {
            *explained.entry(reason).or_insert(0) += n;
        }
        check_run_dependent_fields(fixture, &pairs);
        let values: Vec<String> = ours.iter().filter_map(|r| r.value.as_ref().map(Json::to_text)).collect();
        if schemas {
            check_sqs_messages(&sqs, &queue_url, &ours).await;
            let printed = std::fs::read_to_string(&out_path).unwrap();
            let printed: Vec<String> = printed.lines().map(str::to_owned).collect();
            same_lines("the stdout destination prints the records' values, in commit order, byte for byte", &printed, &values);
        } else {
            let mut written: Vec<String> = Vec::new();
            for rel in strata_tests::files_under(&files_dir) {
                written.extend(std::fs::read_to_string(files_dir.join(rel)).unwrap().lines().map(str::to_owned));
            }
            let mut values = values;
            values.sort();
            written.sort();
            same_lines("the files destination writes the records' values, byte for byte", &written, &values);
        }
    }
    eprintln!("differences explained:");
    for (reason, n) in &explained {
        eprintln!("  {n:4}  {reason}");
    }
}

#[test]
fn scripts_split_like_psql() {
    let s = statements("-- it's a comment\nINSERT INTO t VALUES ('a;b', E'x\\'y;'); -- trailing 'quote\nBEGIN;\nSELECT 1;\n");
    assert_eq!(s, ["INSERT INTO t VALUES ('a;b', E'x\\'y;')", "BEGIN", "SELECT 1"]);
    assert!(statements(&std::fs::read_to_string(fixture_path("stream.sql")).unwrap()).len() > 20);
}

#[test]
fn differences_are_found_by_path_and_only_the_listed_ones_are_allowed() {
    let recorded = Json::parse(r#"{"before":null,"after":{"id":1,"t":"a"},"source":{"lsn":5,"table":"t"},"ts_ms":1}"#).unwrap();
    let ours = Json::parse(r#"{"before":null,"after":{"t":"b","id":1},"source":{"lsn":6,"table":"t"},"ts_ms":2}"#).unwrap();
    let mut found = Vec::new();
    diff("", Some(&recorded), Some(&ours), &mut found);
    let paths: Vec<&str> = found.iter().map(|d| d.path.trim_start_matches('.')).collect();
    assert_eq!(paths, ["after.t", "after (field order)", "source.lsn", "ts_ms"]);
    let why = |d: &Difference| {
        allowed("main.public.t", "u", &Difference { path: d.path.trim_start_matches('.').to_owned(), fixture: d.fixture.clone(), strata: d.strata.clone() })
    };
    assert_eq!(found.iter().map(|d| why(d).is_some()).collect::<Vec<_>>(), [false, false, true, true], "values and field order must be equal");
}
