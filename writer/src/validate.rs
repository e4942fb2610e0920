//! `strata-writer validate`: the configuration, and every destination spec
//! in the stage, checked without connecting to any destination. Every
//! problem is named at once; the exit status is 1 if there is any.

use std::process::ExitCode;

use anyhow::Result;
use strata_common::config::Config;
use strata_stager::Stage;

use crate::spec::DestinationSpec;

/// Checks `config` (already loaded, so its own problems were reported) and
/// the destination specs of its stage; prints problems, notes and a summary.
pub async fn validate(config: &Config, origin: &str) -> Result<ExitCode> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut checked = 0;
    if let Err(e) = Stage::check_url(&config.stage.url, &config.stage.options) {
        problems.push(format!("`stage.url`: {e}"));
    } else {
        match Stage::open_existing(&config.stage.url, &config.stage.options) {
            Err(_) => notes.push(format!("stage {} does not exist yet: no destination to check", config.stage.url)),
            Ok(stage) => {
                for (name, spec) in crate::control::read_all(&stage).await? {
                    checked += 1;
                    match spec {
                        Err(e) => problems.push(format!("destination {name:?}: {e:#}")),
                        Ok(spec) => {
                            problems.extend(unresolved_references(&spec.value).into_iter().map(|p| format!("destination {name:?}: {p}")));
                            if let Some(note) = crate::control::empty_stream_note(&stage, &spec.value.stream).await? {
                                notes.push(format!("destination {name:?}: {note}"));
                            }
                        }
                    }
                }
            }
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    if problems.is_empty() {
        println!("config {origin}: ok; {checked} destination spec{} checked in stage {}", if checked == 1 { "" } else { "s" }, config.stage.url);
        return Ok(ExitCode::SUCCESS);
    }
    println!("config {origin}: {} problem{}:", problems.len(), if problems.len() == 1 { "" } else { "s" });
    for p in &problems {
        println!("  - {p}");
    }
    Ok(ExitCode::from(1))
}

/// The spec's `${VAR}` and `${file:PATH}` references that this writer's
/// environment cannot resolve: each would fail only when the destination
/// connects.
fn unresolved_references(spec: &DestinationSpec) -> Vec<String> {
    fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if s.contains("${") => {
                if let Err(e) = crate::destinations::expand_env(s) {
                    out.push(format!("`{key}`: {e}"));
                }
            }
            serde_json::Value::Array(items) => items.iter().enumerate().for_each(|(i, item)| walk(item, &format!("{key}[{i}]"), out)),
            serde_json::Value::Object(map) => map.iter().for_each(|(k, item)| walk(item, &if key.is_empty() { k.clone() } else { format!("{key}.{k}") }, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(spec) {
        walk(&v, "", &mut out);
    }
    out
}
