//! Replay requests: `replays/{id}.json`.
//!
//! `strata-writer replay --destination D --from T` re-delivers exactly the
//! changes committed at or after T: the destination's position is set back
//! to the batch holding T (binary search over manifests) and that batch is
//! delivered from T on (a row filter), then delivery goes on as usual.
//! `--as-of T` rebuilds D as it was at T: its tables are truncated, every
//! change up to T is delivered (the batch holding T is cut at T), and then
//! the destination is paused (`--then stop`, the default) or goes on.
//!
//! A request is a control object like a spec: the writer that owns the
//! destination picks it up on its next reconcile pass and records its state
//! (pending → running → done, or failed with the error) in the object.

use anyhow::{Context, Result, bail};
use strata_common::Timestamp;
use strata_stager::{Stage, StageError, Versioned, signal};

pub use strata_stager::control::{ReplayRequest, ReplayState, Then};

/// Stores a new request.
pub async fn submit(stage: &Stage, req: &ReplayRequest) -> Result<()> {
    req.validate().map_err(anyhow::Error::msg)?;
    if crate::control::read(stage, &req.destination).await?.is_none() {
        bail!("no destination named {:?}", req.destination);
    }
    let path = strata_stager::keys::replay(&req.id)?;
    match stage.put_json_if(&path, req, None).await {
        Ok(_) => {
            signal::touch_or_warn(stage, &format!("replay {} of destination {:?} requested", req.id, req.destination)).await;
            Ok(())
        }
        Err(StageError::Conflict { .. }) => bail!("replay {} already exists", req.id),
        Err(e) => Err(e.into()),
    }
}

/// Every request, oldest first; unreadable ones are skipped with a warning.
pub async fn list(stage: &Stage) -> Result<Vec<Versioned<ReplayRequest>>> {
    let mut out = Vec::new();
    for obj in stage.list(&strata_stager::keys::replays_prefix()).await? {
        match stage.get_json::<ReplayRequest>(&obj.location).await {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => tracing::warn!(key = %obj.location, error = %e, "skipping an unreadable replay request"),
        }
    }
    out.sort_by_key(|r| (r.value.created_at, r.value.id.clone()));
    Ok(out)
}

/// Records a request's new state, conditionally on the version held.
pub async fn set_state(stage: &Stage, req: &Versioned<ReplayRequest>, state: ReplayState, error: Option<String>) -> Result<Versioned<ReplayRequest>> {
    let mut next = req.value.clone();
    next.state = state;
    next.error = error;
    next.updated_at = Timestamp::now();
    let path = strata_stager::keys::replay(&next.id)?;
    let version = stage.put_json_if(&path, &next, Some(&req.version)).await.with_context(|| format!("recording replay {}", next.id))?;
    signal::touch_or_warn(stage, &format!("replay {} {:?}", next.id, next.state)).await;
    Ok(Versioned { value: next, version })
}
