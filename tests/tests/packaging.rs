//! Packaging: the image (`Dockerfile`), the compose file
//! (`infra/compose.yaml` with `infra/strata.compose.toml`) and the
//! Kubernetes manifests (`deploy/kubernetes/`) agree with the code they ship.
//!
//! No container engine runs on the development machine, so nothing here
//! builds the image or starts a container: what is checked is consistency.
//! Each check is a function that returns the problems it finds:
//!
//! - every YAML file parses (PyYAML, from the test venv); every Kubernetes
//!   object names no namespace and is listed in `kustomization.yaml`;
//! - every strata command line is accepted by its binary (the same line
//!   with `--help` appended exits 0) and each flag it uses is in the help;
//! - every shipped config loads with [`Config::from_toml`] and exactly the
//!   environment the manifest gives that container (secrets are the
//!   Secret's placeholders), so an unknown key or a bad
//!   `STRATA_<SECTION>__<KEY>` override fails here, not at deploy time;
//! - that config's `telemetry.listen` is on all interfaces, and its port is
//!   the container port, the probes' port, the scrape annotation and an
//!   `EXPOSE`d port; probes ask `/healthz` and `/readyz`; `--config` names
//!   a file of a ConfigMap mount (or of a compose bind mount);
//! - the Dockerfile builds and ships exactly the workspace's product
//!   binaries and runs them as a numeric non-root user, the one the
//!   manifests run as.
//!
//! The `mistakes_*` tests break the artefacts in memory, one mistake at a
//! time, and expect the matching check to report it: no check here passes
//! whatever the files say.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use strata_common::config::Config;
use strata_tests::{python_json, repo_root};

const READER: &str = env!("CARGO_BIN_EXE_strata-reader-under-test");
const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");
/// The package of test harnesses: its binaries are not shipped.
const HARNESS: &str = "strata-tests";
const K8S_DIR: &str = "deploy/kubernetes";
const COMPOSE: &str = "infra/compose.yaml";

// ---------------------------------------------------------------------------
// Loading

const LOAD_YAML: &str = r#"
import json, sys
try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing from the venv: run infra/test")
out = {"docs": {}, "errors": {}}
for label, path in json.load(sys.stdin):
    try:
        with open(path) as f:
            out["docs"][label] = [d for d in yaml.safe_load_all(f) if d is not None]
    except Exception as e:
        out["errors"][label] = f"{type(e).__name__}: {e}"
print(json.dumps(out, default=str))
"#;

#[derive(serde::Deserialize)]
struct Loaded {
    docs: BTreeMap<String, Vec<Value>>,
    errors: BTreeMap<String, String>,
}

/// Parses each `(label, path)` as a YAML stream; a file that does not parse
/// is in `errors`, with PyYAML's message.
fn load_yaml(files: &[(String, PathBuf)]) -> Loaded {
    python_json(LOAD_YAML, &[], &json!(files))
}

/// The Kubernetes manifests (`deploy/kubernetes/*.yaml`), then the compose file.
fn yaml_files() -> Vec<(String, PathBuf)> {
    let root = repo_root();
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(root.join(K8S_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| (format!("{K8S_DIR}/{n}"), root.join(K8S_DIR).join(&n)))
        .collect();
    files.sort();
    files.push((COMPOSE.to_owned(), root.join(COMPOSE)));
    files
}

/// Everything the checks read, parsed.
struct Artefacts {
    /// `deploy/kubernetes/{file}` → its documents.
    k8s: BTreeMap<String, Vec<Value>>,
    compose: Value,
    dockerfile: String,
}

impl Artefacts {
    fn load() -> Artefacts {
        let loaded = load_yaml(&yaml_files());
        assert!(loaded.errors.is_empty(), "YAML that does not parse: {:#?}", loaded.errors);
        let mut docs = loaded.docs;
        let compose = docs.remove(COMPOSE).and_then(|mut d| d.pop()).expect("infra/compose.yaml is empty");
        let k8s = docs.into_iter().map(|(label, d)| (label.trim_start_matches(&format!("{K8S_DIR}/")).to_owned(), d)).collect();
        Artefacts { k8s, compose, dockerfile: std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap() }
    }

    /// The Kubernetes objects, the kustomization left out.
    fn objects(&self) -> Vec<Value> {
        self.k8s.iter().filter(|(file, _)| *file != "kustomization.yaml").flat_map(|(_, d)| d.iter().cloned()).collect()
    }

    /// The object of `kind` named `name`, to break it.
    fn object_mut(&mut self, kind: &str, name: &str) -> &mut Value {
        self.k8s.values_mut().flatten().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap()
    }
}

fn assert_none(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  - {}", problems.join("\n  - "));
}

/// What a mistake must produce: at least one problem that mentions `needle`.
fn assert_caught(mistake: &str, problems: Vec<String>, needle: &str) {
    assert!(problems.iter().any(|p| p.contains(needle)), "{mistake}: expected a problem mentioning {needle:?}, got {problems:#?}");
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().map(str::to_owned).unwrap_or_else(|| s.to_string())).collect()
}

// ---------------------------------------------------------------------------
// The workspace and the Dockerfile

/// Package name → its binary targets, and the workspace's rust-version.
struct Workspace {
    bins: BTreeMap<String, Vec<String>>,
    rust_version: Option<(u32, u32)>,
}

fn workspace() -> Workspace {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| option_env!("CARGO").unwrap_or("cargo").to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1", "--manifest-path"])
        .arg(repo_root().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut bins = BTreeMap::new();
    let mut rust_version = None;
    for package in meta["packages"].as_array().unwrap() {
        let names = package["targets"].as_array().unwrap().iter().filter(|t| strings(&t["kind"]).contains(&"bin".to_owned()));
        bins.insert(str_of(&package["name"]).to_owned(), names.map(|t| str_of(&t["name"]).to_owned()).collect());
        rust_version = rust_version.max(version(str_of(&package["rust_version"])));
    }
    Workspace { bins, rust_version }
}

/// `1.89` or `1.89.0` → (1, 89).
fn version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

struct Stage {
    image: String,
    name: Option<String>,
    steps: Vec<(String, String)>,
}

/// Stages of a Dockerfile, each with its instructions as (KEYWORD, arguments);
/// comments dropped, continuation lines joined.
fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut logical = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let full = std::mem::take(&mut logical);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_owned());
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage { image: words.first().copied().unwrap_or("").to_owned(), name, steps: Vec::new() });
        } else if let Some(stage) = stages.last_mut() {
            stage.steps.push((keyword, args));
        }
    }
    stages
}

/// What the runtime image offers the compose file and the manifests.
#[derive(Debug, Default)]
struct Image {
    shipped: BTreeSet<String>,
    uid: Option<u32>,
    exposed: BTreeSet<u16>,
    cmd: Vec<String>,
    entrypoint: bool,
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|_| args.split_whitespace().map(str::to_owned).collect())
}

/// The runtime (last) stage, summed up.
fn image(stages: &[Stage]) -> Image {
    let mut image = Image::default();
    let Some(runtime) = stages.last() else {
        return image;
    };
    for (keyword, args) in &runtime.steps {
        match keyword.as_str() {
            "COPY" if args.starts_with("--from=") => {
                let paths: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
                let sources = paths.split_last().map(|(_, s)| s).unwrap_or_default();
                image.shipped.extend(sources.iter().map(|s| s.rsplit('/').next().unwrap_or(s).to_owned()));
            }
            "USER" => image.uid = args.split(':').next().and_then(|u| u.parse().ok()),
            "EXPOSE" => image.exposed.extend(args.split_whitespace().filter_map(|p| p.split('/').next()?.parse::<u16>().ok())),
            "CMD" => image.cmd = exec_form(args),
            "ENTRYPOINT" => image.entrypoint = true,
            _ => {}
        }
    }
    image
}

/// The `--bin`s of the builder's `cargo build`, the packages it names, and
/// the `target/release/…` files it copies out.
fn cargo_build(stage: &Stage) -> Option<(BTreeSet<String>, BTreeSet<String>, BTreeSet<String>)> {
    let run = stage.steps.iter().find(|(k, a)| k == "RUN" && a.contains("cargo build"))?;
    let words: Vec<&str> = run.1.split_whitespace().collect();
    let start = words.windows(2).position(|w| w == ["cargo", "build"])?;
    let (mut bins, mut packages, mut copied) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let build = words[start..].iter().take_while(|w| **w != "&&").copied().collect::<Vec<_>>();
    for (i, w) in build.iter().enumerate() {
        let next = build.get(i + 1).map(|n| (*n).to_owned());
        match *w {
            "--bin" => bins.extend(next),
            "-p" | "--package" => packages.extend(next),
            _ => {
                bins.extend(w.strip_prefix("--bin=").map(str::to_owned));
                packages.extend(w.strip_prefix("--package=").map(str::to_owned));
            }
        }
    }
    copied.extend(words.iter().filter_map(|w| w.strip_prefix("target/release/")).map(str::to_owned));
    Some((bins, packages, copied))
}

fn dockerfile_problems(text: &str, ws: &Workspace) -> Vec<String> {
    let stages = parse_dockerfile(text);
    if stages.len() < 2 {
        return vec![format!("Dockerfile: {} stage(s); expected a builder and a runtime stage", stages.len())];
    }
    let mut problems = Vec::new();
    let Some((builder, (bins, packages, copied))) = stages.iter().find_map(|s| Some((s, cargo_build(s)?))) else {
        return vec!["Dockerfile: no stage runs `cargo build`".to_owned()];
    };
    let toolchain = builder.image.strip_prefix("rust:").and_then(|tag| version(tag.split('-').next().unwrap_or("")));
    match (toolchain, ws.rust_version) {
        (Some(have), Some(need)) if have < need => problems.push(format!("Dockerfile: {} is older than rust-version {need:?}", builder.image)),
        (None, _) => problems.push(format!("Dockerfile: the builder image {} is not rust:X.Y…", builder.image)),
        _ => {}
    }
    let product: BTreeSet<String> = ws.bins.iter().filter(|(p, _)| *p != HARNESS).flat_map(|(_, b)| b.iter().cloned()).collect();
    for p in packages.iter().filter(|p| !ws.bins.contains_key(*p)) {
        problems.push(format!("Dockerfile: cargo build -p {p}: no such package in the workspace ({:?})", ws.bins.keys()));
    }
    if bins != product {
        problems.push(format!("Dockerfile: cargo build --bin {bins:?}, but the workspace's product binaries are {product:?}"));
    }
    if copied != bins {
        problems.push(format!("Dockerfile: the builder copies out {copied:?} but builds {bins:?}"));
    }
    let runtime = stages.last().unwrap();
    let from_builder = builder.name.as_deref().is_some_and(|n| runtime.steps.iter().any(|(k, a)| k == "COPY" && a.starts_with(&format!("--from={n} "))));
    let image = image(&stages);
    if !from_builder || image.shipped != bins {
        problems.push(format!("Dockerfile: the runtime stage copies {:?} from the builder, not the binaries built ({bins:?})", image.shipped));
    }
    problems.extend(runtime_problems(runtime, &image));
    problems
}

fn runtime_problems(runtime: &Stage, image: &Image) -> Vec<String> {
    let mut problems = Vec::new();
    match runtime.steps.iter().rev().find(|(k, _)| k == "USER") {
        None => problems.push("Dockerfile: the runtime stage has no USER, so it runs as root".to_owned()),
        Some((_, user)) if image.uid == Some(0) || user.starts_with("root") => problems.push(format!("Dockerfile: USER {user} is root")),
        // Kubernetes' runAsNonRoot can only verify a numeric user.
        Some((_, user)) if image.uid.is_none() => problems.push(format!("Dockerfile: USER {user} is not a numeric UID")),
        Some(_) => {}
    }
    if image.entrypoint {
        problems.push("Dockerfile: the runtime stage has an ENTRYPOINT; compose and Kubernetes choose the binary with command".to_owned());
    }
    if image.exposed.is_empty() {
        problems.push("Dockerfile: the runtime stage EXPOSEs no port".to_owned());
    }
    problems
}

// ---------------------------------------------------------------------------
// Command lines and services

/// Whether `help` lists `flag` as an option (`--config <CONFIG>`, `-h, --help`).
fn offers(help: &str, flag: &str) -> bool {
    help.lines().any(|line| line.trim_start().split([',', ' ']).filter(|w| !w.is_empty()).take_while(|w| w.starts_with('-')).any(|w| w == flag))
}

fn help_output(exe: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new(exe).args(args).arg("--help").output().unwrap();
    if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).into_owned()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}

/// A `--config` that exists nowhere: the command line is parsed in full and
/// the command stops at loading its configuration, before any I/O.
const ABSENT_CONFIG: &str = "/nonexistent/strata-packaging-check.toml";

/// Whether the binary accepts `args` (clap exits 2 on a usage error, before
/// anything else). `--config` is replaced by [`ABSENT_CONFIG`], so an
/// accepted line fails next, with exit 1, reading it.
fn parses(exe: &str, args: &[String]) -> Result<(), String> {
    let i = args.iter().position(|a| a == "--config" || a.starts_with("--config=")).ok_or("no --config")?;
    let mut args = args.to_vec();
    if args[i] == "--config" {
        *args.get_mut(i + 1).ok_or("--config without a value")? = ABSENT_CONFIG.to_owned();
    } else {
        args[i] = format!("--config={ABSENT_CONFIG}");
    }
    let mut child = Command::new(exe).args(&args).env_clear().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return Err("still running 20 s after it should have stopped at its config".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match out.status.code() {
        Some(1) if stderr.contains(ABSENT_CONFIG) => Ok(()),
        code => Err(format!("exit {code:?}: {stderr}")),
    }
}

/// `argv` runs a binary the image ships, the binary accepts it, and each
/// flag it uses is in the help.
fn command_problems(origin: &str, argv: &[String], shipped: &BTreeSet<String>) -> Vec<String> {
    let Some((program, args)) = argv.split_first() else {
        return vec![format!("{origin}: empty command")];
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    let mut problems = Vec::new();
    if !shipped.contains(name) {
        problems.push(format!("{origin}: runs {name}, which the image does not ship ({shipped:?})"));
    }
    let exe = match name {
        "strata-reader" => READER,
        "strata-writer" => WRITER,
        _ => {
            problems.push(format!("{origin}: no test build of {name} to check `{}` against", argv.join(" ")));
            return problems;
        }
    };
    if config_arg(argv).is_none() {
        // Not run: without --config the service would start on its defaults.
        problems.push(format!("{origin}: `{}` has no --config", argv.join(" ")));
    } else if let Err(e) = parses(exe, args) {
        problems.push(format!("{origin}: {name} refuses `{}`: {e}", args.join(" ")));
        return problems;
    }
    // With --help appended, clap prints the help of the deepest subcommand.
    let full = help_output(exe, args).unwrap_or_default();
    let top = help_output(exe, &[]).unwrap();
    for flag in args.iter().filter(|a| a.starts_with('-')).map(|a| a.split('=').next().unwrap_or(a)) {
        if !offers(&full, flag) && !offers(&top, flag) {
            problems.push(format!("{origin}: {flag} is not in `{name} --help`"));
        }
    }
    problems
}

/// One strata container, as the checks need it.
struct Service {
    origin: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// (origin, text) of the file `--config` names, or why there is none.
    config: Result<(String, String), String>,
    ports: Vec<u16>,
}

impl Service {
    fn binary(&self) -> &str {
        self.argv.first().map(|p| p.rsplit('/').next().unwrap_or(p)).unwrap_or("")
    }
}

fn config_arg(argv: &[String]) -> Option<String> {
    argv.iter()
        .position(|a| a == "--config")
        .and_then(|i| argv.get(i + 1).cloned())
        .or_else(|| argv.iter().find_map(|a| a.strip_prefix("--config=").map(str::to_owned)))
}

/// The command line, the config (loaded with the service's environment
/// only) and its telemetry address; returns the config when it loads.
fn service_problems(svc: &Service, image: &Image) -> (Option<Config>, Vec<String>) {
    let origin = &svc.origin;
    let mut problems = command_problems(origin, &svc.argv, &image.shipped);
    let config = match &svc.config {
        Ok((file, text)) => Config::from_toml(file, text, &svc.env).map_err(|e| format!("{origin}: {e}")),
        // A missing --config is the command line's problem, reported above.
        Err(_) if config_arg(&svc.argv).is_none() => return (None, problems),
        Err(e) => Err(format!("{origin}: {e}")),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            problems.push(e);
            return (None, problems);
        }
    };
    if svc.binary() == "strata-reader" && config.source.is_none() {
        problems.push(format!("{origin}: the reader's config has no [source] (neither in the file nor from STRATA_SOURCE__*)"));
    }
    match config.telemetry.listen {
        None => problems.push(format!("{origin}: telemetry.listen is unset; the default 127.0.0.1 is unreachable from outside the container")),
        Some(a) if !a.ip().is_unspecified() => problems.push(format!("{origin}: telemetry.listen {a} is not on all interfaces (0.0.0.0)")),
        Some(a) => {
            if !svc.ports.contains(&a.port()) {
                problems.push(format!("{origin}: telemetry port {} is not a container port ({:?})", a.port(), svc.ports));
            }
            if !image.exposed.contains(&a.port()) {
                problems.push(format!("{origin}: telemetry port {} is not EXPOSEd by the Dockerfile ({:?})", a.port(), image.exposed));
            }
        }
    }
    (Some(config), problems)
}

// ---------------------------------------------------------------------------
// Kubernetes

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn env_value(objects: &[Value], var: &Value) -> Result<String, String> {
    let name = str_of(&var["name"]);
    if let Some(v) = var["value"].as_str() {
        return Ok(v.to_owned());
    }
    let from = &var["valueFrom"];
    let (kind, r) = if from["secretKeyRef"].is_object() { ("Secret", &from["secretKeyRef"]) } else { ("ConfigMap", &from["configMapKeyRef"]) };
    let (obj, key) = (str_of(&r["name"]), str_of(&r["key"]));
    let o = object(objects, kind, obj).ok_or_else(|| format!("env {name}: no {kind} {obj:?} among the manifests"))?;
    let value = o["stringData"][key].as_str().map(str::to_owned).or_else(|| {
        let data = o["data"][key].as_str()?;
        if kind == "Secret" { String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).ok()?).ok() } else { Some(data.to_owned()) }
    });
    value.ok_or_else(|| format!("env {name}: {kind} {obj} has no key {key:?}"))
}

/// The ConfigMap file a container's `--config` path names.
fn mounted_config(objects: &[Value], pod: &Value, container: &Value, path: &str) -> Result<(String, String), String> {
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let dir = str_of(&mount["mountPath"]).trim_end_matches('/');
        let file = match mount["subPath"].as_str() {
            Some(sub) if path == dir => sub,
            None => match path.strip_prefix(dir).and_then(|f| f.strip_prefix('/')) {
                Some(f) if !f.contains('/') => f,
                _ => continue,
            },
            Some(_) => continue,
        };
        let volume = pod["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == mount["name"]).ok_or("a mount without a volume")?;
        let map = str_of(&volume["configMap"]["name"]);
        let items = volume["configMap"]["items"].as_array();
        let key = match items {
            Some(items) => {
                items.iter().find(|i| i["path"] == file).map(|i| str_of(&i["key"])).ok_or(format!("volume {} has no item {file}", volume["name"]))?
            }
            None => file,
        };
        let text = object(objects, "ConfigMap", map).and_then(|m| m["data"][key].as_str());
        return text.map(|t| (format!("ConfigMap {map} {key}"), t.to_owned())).ok_or(format!("--config {path}: ConfigMap {map:?} has no key {key:?}"));
    }
    Err(format!("--config {path} is not a file of a ConfigMap mounted in the container"))
}

fn container_service(objects: &[Value], pod: &Value, container: &Value, origin: String) -> Result<Service, String> {
    let argv: Vec<String> = strings(&container["command"]).into_iter().chain(strings(&container["args"])).collect();
    if strings(&container["command"]).is_empty() {
        return Err(format!("{origin}: no command; the image has no ENTRYPOINT, so command names the binary"));
    }
    if !container["envFrom"].is_null() {
        return Err(format!("{origin}: envFrom is not checked here; list the variables under env"));
    }
    let env = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Ok((str_of(&v["name"]).to_owned(), env_value(objects, v)?)))
        .collect::<Result<Vec<(String, String)>, String>>();
    let env = env.map_err(|e| format!("{origin}: {e}"))?;
    let config = config_arg(&argv).ok_or_else(|| "no --config".to_owned()).and_then(|p| mounted_config(objects, pod, container, &p));
    let ports = container["ports"].as_array().into_iter().flatten().filter_map(|p| p["containerPort"].as_u64()?.try_into().ok()).collect();
    Ok(Service { origin, argv, env, config, ports })
}

fn probe_problems(origin: &str, template: &Value, container: &Value, port: u16) -> Vec<String> {
    let mut problems = Vec::new();
    let by_name = |name: &str| container["ports"].as_array().into_iter().flatten().find(|p| p["name"] == name).and_then(|p| p["containerPort"].as_u64());
    for (probe, path, required) in [("livenessProbe", "/healthz", true), ("readinessProbe", "/readyz", true), ("startupProbe", "/healthz", false)] {
        let get = &container[probe]["httpGet"];
        if get.is_null() {
            if required {
                problems.push(format!("{origin}: no {probe} with httpGet"));
            }
            continue;
        }
        if get["path"] != path {
            problems.push(format!("{origin}: {probe} asks {}, not {path}", get["path"]));
        }
        let probed = get["port"].as_u64().or_else(|| by_name(str_of(&get["port"])));
        if probed != Some(u64::from(port)) {
            problems.push(format!("{origin}: {probe} port {} is not the telemetry port {port}", get["port"]));
        }
    }
    let annotations = &template["metadata"]["annotations"];
    for (key, want) in [("prometheus.io/scrape", "true".to_owned()), ("prometheus.io/port", port.to_string()), ("prometheus.io/path", "/metrics".to_owned())] {
        if annotations[key].as_str() != Some(want.as_str()) {
            problems.push(format!("{origin}: annotation {key} is {}, not {want:?}", annotations[key]));
        }
    }
    problems
}

fn deployment_problems(origin: &str, deploy: &Value, container: &Value, binary: &str, image: &Image) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &deploy["spec"];
    if binary == "strata-reader" && (spec["replicas"] != 1 || spec["strategy"]["type"] != "Recreate") {
        problems.push(format!("{origin}: one reader per stream: replicas 1 and strategy Recreate, not {} and {}", spec["replicas"], spec["strategy"]));
    }
    let pod = &spec["template"]["spec"]["securityContext"];
    let own = &container["securityContext"];
    let setting = |key: &str| if own[key].is_null() { pod[key].clone() } else { own[key].clone() };
    if setting("runAsNonRoot") != true {
        problems.push(format!("{origin}: runAsNonRoot is not true"));
    }
    if setting("runAsUser").as_u64() != image.uid.map(u64::from) {
        problems.push(format!("{origin}: runAsUser {} is not the image's USER {:?}", setting("runAsUser"), image.uid));
    }
    if container["resources"]["limits"]["memory"].is_null() || container["resources"]["requests"]["memory"].is_null() {
        problems.push(format!("{origin}: no memory request and limit"));
    }
    problems
}

fn kubernetes_problems(objects: &[Value], image: &Image) -> Vec<String> {
    let mut problems = Vec::new();
    let mut binaries = BTreeSet::new();
    for deploy in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let template = &deploy["spec"]["template"];
        for container in template["spec"]["containers"].as_array().into_iter().flatten() {
            let origin = format!("Deployment {} container {}", str_of(&deploy["metadata"]["name"]), str_of(&container["name"]));
            let svc = match container_service(objects, &template["spec"], container, origin.clone()) {
                Ok(svc) => svc,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            binaries.insert(svc.binary().to_owned());
            let (config, found) = service_problems(&svc, image);
            problems.extend(found);
            if let Some(port) = config.and_then(|c| c.telemetry.listen).map(|a| a.port()) {
                problems.extend(probe_problems(&origin, template, container, port));
            }
            problems.extend(deployment_problems(&origin, deploy, container, svc.binary(), image));
        }
    }
    for needed in ["strata-reader", "strata-writer"].into_iter().filter(|b| !binaries.contains(*b)) {
        problems.push(format!("{K8S_DIR}: no Deployment runs {needed}"));
    }
    problems
}

/// Every object is namespace-free and listed in the kustomization, which
/// lists nothing else.
fn kustomization_problems(k8s: &BTreeMap<String, Vec<Value>>) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(kustomization) = k8s.get("kustomization.yaml").and_then(|d| d.first()) else {
        return vec![format!("{K8S_DIR}: no kustomization.yaml")];
    };
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let files: BTreeSet<String> = k8s.keys().filter(|f| *f != "kustomization.yaml").cloned().collect();
    if listed != files {
        problems.push(format!("{K8S_DIR}/kustomization.yaml lists {listed:?}, the directory holds {files:?}"));
    }
    for (file, docs) in k8s.iter().filter(|(f, _)| *f != "kustomization.yaml") {
        for doc in docs {
            let meta = &doc["metadata"];
            if doc["apiVersion"].is_null() || doc["kind"].is_null() || meta["name"].is_null() {
                problems.push(format!("{K8S_DIR}/{file}: an object without apiVersion, kind or metadata.name"));
            }
            if !meta["namespace"].is_null() || doc["kind"] == "Namespace" {
                problems.push(format!("{K8S_DIR}/{file}: {} names a namespace; the manifests are namespace-agnostic", meta["name"]));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Compose

/// Compose's own `${VAR}` interpolation, as on a machine that sets nothing:
/// `${VAR:-default}` is the default, `${VAR}` a placeholder, `$$` a `$`.
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((expr, tail)) = after.strip_prefix('{').and_then(|t| t.split_once('}')) {
            match expr.split_once(":-").or_else(|| expr.split_once('-')) {
                Some((_, default)) => out.push_str(default),
                None => out.push_str(&format!("placeholder-{}", expr.split([':', '?']).next().unwrap_or(expr))),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn compose_service(name: &str, svc: &Value, infra: &Path) -> Service {
    let argv: Vec<String> = match &svc["command"] {
        Value::String(s) => s.split_whitespace().map(interpolate).collect(),
        v => strings(v).iter().map(|s| interpolate(s)).collect(),
    };
    let env: Vec<(String, String)> = match &svc["environment"] {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), interpolate(v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()).as_str()))).collect(),
        v => strings(v).iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), interpolate(v))).collect(),
    };
    let mount = |path: &str| -> Result<(String, String), String> {
        let source = svc["volumes"].as_array().into_iter().flatten().find_map(|v| match v {
            Value::String(s) => s.split(':').nth(1).filter(|t| *t == path).and(s.split(':').next()),
            v => (v["target"] == path).then(|| str_of(&v["source"])),
        });
        let source = source.ok_or(format!("--config {path} is not a file bind-mounted into the container"))?;
        let file = format!("infra/{}", source.trim_start_matches("./"));
        std::fs::read_to_string(infra.join(source)).map(|t| (file.clone(), t)).map_err(|e| format!("{file}: {e}"))
    };
    let config = config_arg(&argv).ok_or_else(|| "no --config".to_owned()).and_then(|p| mount(&p));
    let ports = svc["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            Value::String(s) => s.split('/').next()?.rsplit(':').next()?.parse().ok(),
            p => p["target"].as_u64()?.try_into().ok(),
        })
        .collect();
    Service { origin: format!("{COMPOSE} service {name}"), argv, env, config, ports }
}

/// `postgres://user:pw@host:5432/db` → `host`.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    authority.rsplit('@').next()?.split(':').next()
}

fn compose_problems(compose: &Value, image: &Image) -> Vec<String> {
    let infra = repo_root().join("infra");
    let services = compose["services"].as_object().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let mut binaries = BTreeSet::new();
    for (name, svc) in &services {
        let service = compose_service(name, svc, &infra);
        if !service.binary().starts_with("strata-") {
            continue;
        }
        binaries.insert(service.binary().to_owned());
        let context = infra.join(str_of(&svc["build"]["context"]));
        let dockerfile = context.join(svc["build"]["dockerfile"].as_str().unwrap_or("Dockerfile"));
        if context.canonicalize().ok() != repo_root().canonicalize().ok() || dockerfile != context.join("Dockerfile") {
            problems.push(format!("{}: build is {}, not the repository's Dockerfile (and without it compose pulls the image)", service.origin, svc["build"]));
        }
        let (config, found) = service_problems(&service, image);
        problems.extend(found);
        let Some(config) = config else { continue };
        let endpoint = config.stage.options.get("aws_endpoint").map(|e| e.expose().to_owned());
        let source = config.source.as_ref().map(|s| s.url.expose().to_owned());
        for url in endpoint.iter().chain(source.iter()) {
            if url_host(url).is_none_or(|h| !services.contains_key(h)) {
                problems.push(format!("{}: {:?} is not the host of a compose service", service.origin, url_host(url)));
            }
        }
    }
    for needed in ["strata-reader", "strata-writer"].into_iter().filter(|b| !binaries.contains(*b)) {
        problems.push(format!("{COMPOSE}: no service runs {needed}"));
    }
    if !services.values().any(|s| strings(&s["command"]).iter().any(|a| a == "wal_level=logical")) {
        problems.push(format!("{COMPOSE}: no service starts PostgreSQL with wal_level=logical"));
    }
    problems
}

// ---------------------------------------------------------------------------
// The checks

#[test]
fn every_manifest_parses_and_the_kustomization_lists_them() {
    let loaded = load_yaml(&yaml_files());
    assert!(loaded.errors.is_empty(), "YAML that does not parse: {:#?}", loaded.errors);
    assert!(loaded.docs.len() >= 5, "expected the kustomization, 4 manifests and the compose file: {:?}", loaded.docs.keys());
    assert_none("deploy/kubernetes", kustomization_problems(&Artefacts::load().k8s));
}

#[test]
fn the_dockerfile_ships_the_workspace_binaries_as_a_non_root_user() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert_none("Dockerfile", dockerfile_problems(&text, &workspace()));
    let image = image(&parse_dockerfile(&text));
    assert_none("Dockerfile CMD", command_problems("Dockerfile CMD", &image.cmd, &image.shipped));
}

#[test]
fn kubernetes_manifests_agree_with_the_binaries_and_the_config() {
    let a = Artefacts::load();
    let image = image(&parse_dockerfile(&a.dockerfile));
    assert_none("deploy/kubernetes", kubernetes_problems(&a.objects(), &image));
}

#[test]
fn compose_agrees_with_the_binaries_and_the_config() {
    let a = Artefacts::load();
    let image = image(&parse_dockerfile(&a.dockerfile));
    assert_none(COMPOSE, compose_problems(&a.compose, &image));
}

// ---------------------------------------------------------------------------
// Each check fails on a mistake

#[test]
fn mistakes_in_yaml_and_the_kustomization_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: Deployment\nspec: [unclosed\n").unwrap();
    let loaded = load_yaml(&[("broken.yaml".to_owned(), broken)]);
    assert!(loaded.errors.contains_key("broken.yaml"), "a YAML syntax error went unnoticed: {:?}", loaded.docs);

    let mut a = Artefacts::load();
    let kustomization = &mut a.k8s.get_mut("kustomization.yaml").unwrap()[0];
    kustomization["resources"].as_array_mut().unwrap().retain(|r| *r != "writer.yaml");
    assert_caught("a manifest left out of the kustomization", kustomization_problems(&a.k8s), "kustomization.yaml lists");
    let mut a = Artefacts::load();
    a.object_mut("ConfigMap", "strata-config")["metadata"]["namespace"] = json!("prod");
    assert_caught("a namespace", kustomization_problems(&a.k8s), "namespace");
}

/// Breaks one thing in the Kubernetes manifests, and expects `needle`.
fn k8s_mistake(mistake: &str, needle: &str, break_it: impl FnOnce(&mut Artefacts)) {
    let mut a = Artefacts::load();
    break_it(&mut a);
    let image = image(&parse_dockerfile(&a.dockerfile));
    assert_caught(mistake, kubernetes_problems(&a.objects(), &image), needle);
}

#[test]
fn mistakes_in_the_kubernetes_manifests_are_caught() {
    fn container<'a>(a: &'a mut Artefacts, deployment: &str) -> &'a mut Value {
        &mut a.object_mut("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
    }
    k8s_mistake("a misspelled flag", "--confg", |a| container(a, "strata-reader")["args"][0] = json!("--confg"));
    k8s_mistake("an unknown subcommand", "refuses", |a| container(a, "strata-writer")["args"][4] = json!("rnu"));
    k8s_mistake("a bad --log-format value", "refuses", |a| container(a, "strata-writer")["args"][3] = json!("yaml"));
    k8s_mistake("a binary the image lacks", "does not ship", |a| container(a, "strata-writer")["command"][0] = json!("strata-mover"));
    k8s_mistake("an unknown config key", "max_rowz", |a| {
        let text = a.object_mut("ConfigMap", "strata-config")["data"]["strata.toml"].as_str().unwrap().to_owned();
        a.object_mut("ConfigMap", "strata-config")["data"]["strata.toml"] = json!(format!("{text}\n[batch]\nmax_rowz = 1\n"));
    });
    k8s_mistake("a bad override", "STRATA_BATCH__NOPE", |a| {
        container(a, "strata-writer")["env"].as_array_mut().unwrap().push(json!({"name": "STRATA_BATCH__NOPE", "value": "1"}))
    });
    k8s_mistake("a source without its url", "missing field `url`", |a| {
        container(a, "strata-reader")["env"].as_array_mut().unwrap().retain(|v| v["name"] != "STRATA_SOURCE__URL")
    });
    k8s_mistake("a reader without a source", "no [source]", |a| {
        container(a, "strata-reader")["env"].as_array_mut().unwrap().retain(|v| !str_of(&v["name"]).starts_with("STRATA_SOURCE__"));
    });
    k8s_mistake("a missing Secret key", "no key", |a| container(a, "strata-reader")["env"][0]["valueFrom"]["secretKeyRef"]["key"] = json!("source-uri"));
    k8s_mistake("--config outside the mount", "not a file of a ConfigMap", |a| {
        container(a, "strata-reader")["volumeMounts"][0]["mountPath"] = json!("/etc/strata-config")
    });
    k8s_mistake("a probe on another port", "not the telemetry port", |a| container(a, "strata-writer")["livenessProbe"]["httpGet"]["port"] = json!(9465));
    k8s_mistake("a probe on another path", "/readyz", |a| container(a, "strata-reader")["readinessProbe"]["httpGet"]["path"] = json!("/ready"));
    k8s_mistake("a container port that is not telemetry's", "not a container port", |a| {
        container(a, "strata-reader")["ports"][0]["containerPort"] = json!(9000)
    });
    k8s_mistake("a scrape annotation on another port", "prometheus.io/port", |a| {
        a.object_mut("Deployment", "strata-writer")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = json!("9465");
    });
    k8s_mistake("telemetry on loopback", "all interfaces", |a| {
        let text = a.object_mut("ConfigMap", "strata-config")["data"]["strata.toml"].as_str().unwrap().replace("0.0.0.0:9464", "127.0.0.1:9464");
        a.object_mut("ConfigMap", "strata-config")["data"]["strata.toml"] = json!(text);
    });
    k8s_mistake("two readers", "one reader per stream", |a| a.object_mut("Deployment", "strata-reader")["spec"]["replicas"] = json!(2));
    k8s_mistake("a rolling reader", "one reader per stream", |a| {
        a.object_mut("Deployment", "strata-reader")["spec"]["strategy"]["type"] = json!("RollingUpdate")
    });
    k8s_mistake("another UID", "runAsUser", |a| {
        a.object_mut("Deployment", "strata-writer")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = json!(0)
    });
}

#[test]
fn mistakes_in_compose_and_the_dockerfile_are_caught() {
    let compose = |mistake: &str, needle: &str, break_it: &dyn Fn(&mut Value)| {
        let mut a = Artefacts::load();
        break_it(&mut a.compose["services"]);
        assert_caught(mistake, compose_problems(&a.compose, &image(&parse_dockerfile(&a.dockerfile))), needle);
    };
    compose("a misspelled flag", "--confg", &|s| s["writer"]["command"][1] = json!("--confg"));
    compose("a published port that is not telemetry's", "not a container port", &|s| s["reader"]["ports"][0] = json!("9464:9000"));
    compose("a config variable compose does not set", "MINIO_ROOT_PASSWORD", &|s| {
        s["writer"]["environment"].as_object_mut().unwrap().remove("MINIO_ROOT_PASSWORD");
    });
    compose("a config not mounted", "bind-mounted", &|s| s["reader"]["volumes"][0] = json!("./strata.compose.toml:/etc/strata.toml:ro"));
    compose("a source host that is no service", "not the host", &|s| {
        let db = s["postgres"].clone();
        s.as_object_mut().unwrap().remove("postgres");
        s["database"] = db;
    });
    compose("no logical WAL", "wal_level=logical", &|s| s["postgres"]["command"] = json!(["postgres"]));
    compose("an image pulled, not built", "build", &|s| {
        s["writer"].as_object_mut().unwrap().remove("build");
    });

    let ws = workspace();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let docker = |mistake: &str, needle: &str, from: &str, to: &str| {
        assert!(dockerfile.contains(from), "the Dockerfile no longer holds {from:?}: update this test");
        assert_caught(mistake, dockerfile_problems(&dockerfile.replace(from, to), &ws), needle);
    };
    docker("a root user", "root", "USER 10001:10001", "USER root");
    docker("a named user", "numeric", "USER 10001:10001", "USER strata");
    docker("no user", "no USER", "USER 10001:10001", "");
    docker("a binary the workspace lacks", "product binaries", "--bin strata-stage", "--bin strata-stager");
    docker("a binary built but not shipped", "runtime stage copies", "/out/strata-stage /usr/local/bin/", "/usr/local/bin/");
    docker("an old toolchain", "older than rust-version", "rust:1.95-bookworm", "rust:1.80-bookworm");
    docker("an entrypoint", "ENTRYPOINT", "CMD [", "ENTRYPOINT [\"/bin/sh\"]\nCMD [");
    let cmd = image(&parse_dockerfile(&dockerfile.replace("\"--config\"", "\"--confg\"")));
    assert_caught("a misspelled CMD flag", command_problems("Dockerfile CMD", &cmd.cmd, &cmd.shipped), "--confg");
}
