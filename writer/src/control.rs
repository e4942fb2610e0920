//! Destination specs in the stage: read, list, and edited conditionally;
//! each edit is announced through the stage's control signal.

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use strata_common::Timestamp;
use strata_stager::keys::{DestinationKeys, decode_name, destinations_prefix};
use strata_stager::{Stage, StageError, Versioned, signal};

use crate::spec::DestinationSpec;

pub async fn read(stage: &Stage, name: &str) -> Result<Option<Versioned<DestinationSpec>>> {
    let path = DestinationKeys::new(name)?.spec();
    let spec = stage.get_json::<DestinationSpec>(&path).await.with_context(|| format!("reading {path}"))?;
    if let Some(s) = &spec {
        s.value.validate().map_err(anyhow::Error::msg).with_context(|| format!("{path} is invalid"))?;
        if s.value.name != name {
            bail!("{path} names destination {:?}", s.value.name);
        }
    }
    Ok(spec)
}

/// Every destination's spec; an unreadable one is reported, not fatal.
pub async fn list(stage: &Stage) -> Result<Vec<Versioned<DestinationSpec>>> {
    let mut out = Vec::new();
    for (name, spec) in read_all(stage).await? {
        match spec {
            Ok(s) => out.push(s),
            Err(e) => tracing::warn!(destination = name, error = format!("{e:#}"), "skipping an unreadable destination spec"),
        }
    }
    Ok(out)
}

/// Every destination folder of the stage, by name, with its spec or why it
/// cannot be read; sorted by name. Folders without a spec are left out.
/// The specs are read [`READ_AT_ONCE`] at a time: a hundred read one
/// after another take 30-80 s at the 0.3-0.8 s a request took on the
/// loaded S3 emulator (a lease bid, a GET and a PUT, took 0.5-1.6 s), and
/// a writer's pass bids for nothing meanwhile.
pub async fn read_all(stage: &Stage) -> Result<Vec<(String, Result<Versioned<DestinationSpec>>)>> {
    let dirs = stage.list_dirs(&destinations_prefix()).await?;
    let reads = dirs.into_iter().filter_map(|dir| {
        let seg = dir.filename()?.to_owned();
        Some(async move {
            match decode_name(&seg) {
                Ok(name) => match read(stage, &name).await {
                    Ok(Some(s)) => Some((name, Ok(s))),
                    Ok(None) => None,
                    Err(e) => Some((name, Err(e))),
                },
                Err(e) => Some((seg, Err(anyhow::Error::new(e).context(format!("folder {dir} has an invalid name"))))),
            }
        })
    });
    let mut out: Vec<_> = futures::stream::iter(reads).buffer_unordered(READ_AT_ONCE).filter_map(std::future::ready).collect().await;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Spec reads [`read_all`] has in flight at once.
const READ_AT_ONCE: usize = 16;

/// A note when `stream` has nothing staged: a destination of it waits
/// (a misspelled stream name, or a reader not started yet).
pub async fn empty_stream_note(stage: &Stage, stream: &str) -> Result<Option<String>> {
    let empty = strata_stager::log::StreamLog::new(stage, stream)?.head(None).await?.is_none();
    Ok(empty.then(|| format!("stream {stream:?} has no staged batch yet; its destinations wait for one (is the name right, and its reader running?)")))
}

/// Creates a destination; an existing one of that name is an error.
pub async fn add(stage: &Stage, spec: &DestinationSpec) -> Result<()> {
    spec.validate().map_err(anyhow::Error::msg)?;
    let path = DestinationKeys::new(&spec.name)?.spec();
    match stage.put_json_if(&path, spec, None).await {
        Ok(_) => {
            signal::touch_or_warn(stage, &format!("destination {:?} added", spec.name)).await;
            Ok(())
        }
        Err(StageError::Conflict { .. }) => bail!("destination {:?} already exists", spec.name),
        Err(e) => Err(e.into()),
    }
}

/// Applies `edit` to a destination's spec, retrying on concurrent edits.
pub async fn update(stage: &Stage, name: &str, edit: impl Fn(&mut DestinationSpec)) -> Result<DestinationSpec> {
    let path = DestinationKeys::new(name)?.spec();
    loop {
        let Some(current) = read(stage, name).await? else { bail!("no destination named {name:?}") };
        let mut next = current.value.clone();
        edit(&mut next);
        next.updated_at = Timestamp::now();
        next.validate().map_err(anyhow::Error::msg)?;
        match stage.put_json_if(&path, &next, Some(&current.version)).await {
            Ok(_) => {
                signal::touch_or_warn(stage, &format!("destination {name:?} changed")).await;
                return Ok(next);
            }
            Err(StageError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes a destination's spec; running writers stop its worker. Its
/// cursor stays, so adding it again under the same name resumes.
pub async fn remove(stage: &Stage, name: &str) -> Result<()> {
    let path = DestinationKeys::new(name)?.spec();
    if read(stage, name).await?.is_none() {
        bail!("no destination named {name:?}");
    }
    stage.delete(&path).await?;
    signal::touch_or_warn(stage, &format!("destination {name:?} removed")).await;
    Ok(())
}
