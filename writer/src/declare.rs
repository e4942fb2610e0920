//! Destinations as code: `destination apply -f destinations.toml` makes the
//! stage's destination specs what the file declares (create, update, and
//! with `--prune` remove), and `destination export` writes the file that
//! declares the specs as they are, so destinations can live in git.
//!
//! ```toml
//! [destination.mirror]
//! stream = "main"                 # default main
//! start = "earliest"              # default earliest: where a new destination starts
//! on_error = "pause"              # default pause
//! schedule = "continuous"         # default continuous
//! # paused = true                 # absent: apply leaves the pause state alone
//! [destination.mirror.to]
//! type = "postgres"
//! url = "postgres://app:${MIRROR_PASSWORD}@replica/app"
//! mode = "mirror"
//! ```
//!
//! `destination edit NAME` opens one destination's declaration in
//! `$VISUAL` or `$EDITOR` and applies what is saved, as `kubectl edit` does.
//!
//! Applying is idempotent: a spec whose declared fields already hold is left
//! untouched (no write, no signal), so applying an exported file changes
//! nothing. Every declared spec is checked before anything is written, and
//! every problem is named at once.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use strata_common::Timestamp;
use strata_common::config::DEFAULT_STREAM;
use strata_stager::keys::DestinationKeys;
use strata_stager::{Stage, StageError, signal};

use crate::control;
use crate::schedule::Schedule;
use crate::spec::{DestinationKind, DestinationSpec, OnError, StartPosition};
use crate::transform::Transforms;

/// The file: destinations by name.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationsFile {
    #[serde(default)]
    pub destination: BTreeMap<String, Declared>,
}

/// One destination as the file declares it: a spec without its name,
/// format version and timestamps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    #[serde(default = "default_stream")]
    pub stream: String,
    #[serde(default = "default_start")]
    pub start: StartPosition,
    /// `None`: the pause state is left as it is (an operator's pause stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default, skip_serializing_if = "Transforms::is_empty")]
    pub transforms: Transforms,
    pub to: DestinationKind,
}

fn default_stream() -> String {
    DEFAULT_STREAM.to_owned()
}

fn default_start() -> StartPosition {
    StartPosition::Earliest
}

impl Declared {
    fn of(spec: &DestinationSpec) -> Declared {
        Declared {
            stream: spec.stream.clone(),
            start: spec.start,
            paused: spec.paused.then_some(true),
            on_error: spec.on_error,
            schedule: spec.schedule.clone(),
            transforms: spec.transforms.clone(),
            to: spec.destination.clone(),
        }
    }

    /// The spec this declares for `name`, from `current` if there is one.
    fn spec(&self, name: &str, current: Option<&DestinationSpec>) -> DestinationSpec {
        let now = Timestamp::now();
        DestinationSpec {
            format: 1,
            name: name.to_owned(),
            stream: self.stream.clone(),
            start: self.start,
            paused: self.paused.unwrap_or_else(|| current.is_some_and(|c| c.paused)),
            on_error: self.on_error,
            schedule: self.schedule.clone(),
            transforms: self.transforms.clone(),
            destination: self.to.clone(),
            created_at: current.map_or(now, |c| c.created_at),
            updated_at: current.map_or(now, |c| c.updated_at),
        }
    }
}

/// What applying a file does to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create(String),
    Update(String),
    Unchanged(String),
    Remove(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create(n) => write!(f, "create    {n}"),
            Change::Update(n) => write!(f, "update    {n}"),
            Change::Unchanged(n) => write!(f, "unchanged {n}"),
            Change::Remove(n) => write!(f, "remove    {n}"),
        }
    }
}

/// Parses a destinations file; `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<DestinationsFile> {
    let value: toml::Table = text.parse().with_context(|| format!("{origin} is not valid TOML"))?;
    serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| anyhow::anyhow!("{origin}: `{}`: {}", e.path(), e.inner()))
}

/// The file declaring every destination of `stage` as it is.
pub async fn export(stage: &Stage) -> Result<String> {
    let mut file = DestinationsFile::default();
    for spec in control::list(stage).await? {
        file.destination.insert(spec.value.name.clone(), Declared::of(&spec.value));
    }
    toml::to_string_pretty(&file).context("writing the destinations as TOML")
}

/// Makes the stage's specs what `file` declares; with `prune`, removes the
/// destinations it does not name. With `dry_run`, only says what it would
/// do. Nothing is written unless every declared spec is valid.
pub async fn apply(stage: &Stage, file: &DestinationsFile, prune: bool, dry_run: bool) -> Result<Vec<Change>> {
    let mut current: BTreeMap<String, DestinationSpec> = BTreeMap::new();
    for (name, spec) in control::read_all(stage).await? {
        match spec {
            Ok(s) => {
                current.insert(name, s.value);
            }
            Err(e) => bail!("destination {name:?} has an unreadable spec ({e:#}); remove it with `destination remove {name}` first"),
        }
    }
    let problems: Vec<String> = file
        .destination
        .iter()
        .filter_map(|(name, d)| d.spec(name, current.get(name)).validate().err().map(|e| format!("destination {name:?}: {e}")))
        .collect();
    if !problems.is_empty() {
        bail!("{} problem{} in the file, nothing applied:\n  - {}", problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.join("\n  - "));
    }
    let mut changes = Vec::new();
    for (name, declared) in &file.destination {
        let wanted = declared.spec(name, current.get(name));
        let change = match current.get(name) {
            None => Change::Create(name.clone()),
            Some(c) if *c == wanted => Change::Unchanged(name.clone()),
            Some(_) => Change::Update(name.clone()),
        };
        if !dry_run {
            match &change {
                Change::Create(_) => control::add(stage, &wanted).await?,
                Change::Update(_) => {
                    control::update(stage, name, |s| *s = DestinationSpec { created_at: s.created_at, updated_at: Timestamp::now(), ..wanted.clone() }).await?;
                }
                _ => {}
            }
        }
        changes.push(change);
    }
    if prune {
        for name in current.keys().filter(|n| !file.destination.contains_key(*n)) {
            if !dry_run {
                control::remove(stage, name).await?;
            }
            changes.push(Change::Remove(name.clone()));
        }
    }
    Ok(changes)
}

/// What `destination edit` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Edited {
    Updated,
    Unchanged,
}

/// Opens destination `name`'s declaration in `editor` (a shell command, run
/// with the file's path as its last argument), then makes the spec what
/// was saved. Whatever goes wrong after the editor ran, the edit is kept
/// in its file and the error names it; a spec changed by someone else
/// meanwhile is not overwritten.
pub async fn edit(stage: &Stage, name: &str, editor: &str) -> Result<Edited> {
    let Some(current) = control::read(stage, name).await? else { bail!("no destination named {name:?}") };
    let mut file = DestinationsFile::default();
    file.destination.insert(name.to_owned(), Declared::of(&current.value));
    let written = format!(
        "# Destination {name:?}: edit, save and quit to apply; quit without saving to change nothing.\n\
         # An absent `paused` keeps the pause state as it is.\n{}",
        toml::to_string_pretty(&file).context("writing the destination as TOML")?
    );
    let path = std::env::temp_dir().join(format!("strata-destination-{}-{}.toml", strata_stager::keys::encode_name(name), std::process::id()));
    std::fs::write(&path, &written).with_context(|| format!("writing {}", path.display()))?;
    let shown = path.display().to_string();
    let status = {
        let (editor, path) = (editor.to_owned(), path.clone());
        tokio::task::spawn_blocking(move || std::process::Command::new("sh").arg("-c").arg(format!("{editor} \"$1\"")).arg("sh").arg(&path).status()).await?
    };
    let status = status.with_context(|| format!("running the editor {editor:?}"))?;
    if !status.success() {
        let _ = std::fs::remove_file(&path);
        bail!("the editor {editor:?} exited with {status}; nothing changed");
    }
    let edited = std::fs::read_to_string(&path).with_context(|| format!("reading {shown}"))?;
    let kept = |e: anyhow::Error| e.context(format!("nothing changed; the edit is kept in {shown} (fix it, then `destination apply -f {shown}`)"));
    if edited == written {
        let _ = std::fs::remove_file(&path);
        return Ok(Edited::Unchanged);
    }
    let declared = parse(&shown, &edited).map_err(kept)?;
    let wanted = match declared.destination.get(name) {
        Some(d) if declared.destination.len() == 1 => d.spec(name, Some(&current.value)),
        _ => return Err(kept(anyhow::anyhow!("the file must declare exactly destination {name:?} (to rename, add the new one and remove the old)"))),
    };
    wanted.validate().map_err(|e| kept(anyhow::anyhow!("destination {name:?}: {e}")))?;
    if wanted == current.value {
        let _ = std::fs::remove_file(&path);
        return Ok(Edited::Unchanged);
    }
    let next = DestinationSpec { updated_at: Timestamp::now(), ..wanted };
    match stage.put_json_if(&DestinationKeys::new(name)?.spec(), &next, Some(&current.version)).await {
        Ok(_) => {}
        Err(StageError::Conflict { .. }) => return Err(kept(anyhow::anyhow!("destination {name:?} was changed by someone else while it was edited"))),
        Err(e) => return Err(kept(e.into())),
    }
    signal::touch_or_warn(stage, &format!("destination {name:?} edited")).await;
    let _ = std::fs::remove_file(&path);
    Ok(Edited::Updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_declared_with_the_destination_and_refused_where_it_does_not_apply() {
        let file = parse("t.toml", "[destination.dbz.to]\ntype = \"sqs\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\nenvelope = \"debezium\"\n")
            .unwrap();
        let DestinationKind::Sqs(q) = &file.destination["dbz"].to else { panic!("an sqs destination") };
        assert_eq!(q.envelope, crate::envelope::EnvelopeFormat::Debezium);
        // Exported as declared, so applying the export changes nothing.
        let exported = toml::to_string_pretty(&file).unwrap();
        assert!(exported.contains("envelope = \"debezium\""), "{exported}");
        let err = parse("t.toml", "[destination.m.to]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\nenvelope = \"debezium\"\n").unwrap_err().to_string();
        assert!(err.contains("t.toml") && err.contains("destination.m.to") && err.contains("unknown field `envelope`"), "{err}");
        let err = parse("t.toml", "[destination.s.to]\ntype = \"stdout\"\nenvelope = \"avro\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown variant `avro`") && err.contains("debezium-schemaless"), "{err}");
    }
}
