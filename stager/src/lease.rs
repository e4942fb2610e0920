//! Leases: which process owns a destination (`destinations/{name}/lease.json`)
//! or a stream (`streams/{stream}/reader.json`).
//!
//! A lease is a conditional object with an expiry. Acquiring writes it only
//! if it is absent, expired, or already ours, conditional on the version
//! read, so of two processes racing for a free lease exactly one wins.
//! Renewal is conditional too: a holder whose renewal fails with
//! [`StageError::Conflict`] has lost the lease and must stop. `generation`
//! grows with each change of holder: a fencing token for anything the holder
//! writes elsewhere.
//!
//! Expiry compares wall clocks of different processes; holders renew at a
//! fraction of the TTL so that clock skew well under the TTL is harmless.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_common::Timestamp;

use crate::error::{Result, StageError};
use crate::store::{Stage, Versioned};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub format: u32,
    pub holder: String,
    pub generation: u64,
    pub acquired_at: Timestamp,
    pub renewed_at: Timestamp,
    pub expires_at: Timestamp,
    /// The status the holder publishes with each renewal (heartbeat): a
    /// [`ReaderStatus`](crate::control::ReaderStatus) or a
    /// [`WorkerStatus`](crate::control::WorkerStatus), read with
    /// [`lease_status`](crate::control::lease_status).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub status: serde_json::Value,
}

impl Lease {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// One lease object.
#[derive(Debug, Clone)]
pub struct Leases {
    stage: Stage,
    path: object_store::path::Path,
}

/// A holder name for this process: `{role}@{host}:{pid}:{tag}`, which
/// [`is_dead_local_holder`] can recognise after a crash.
pub fn local_holder(role: &str) -> String {
    format!("{role}@{}:{}:{}", hostname(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "unknown".to_owned())
}

/// Whether `lease` is held by a process on this host that no longer runs
/// (killed, crashed) — or whose pid now belongs to something that is not
/// strata. Such a lease need not be waited out. A holder on another host
/// is never judged dead: only its lease expiry can say that.
pub fn is_dead_local_holder(lease: &Lease) -> bool {
    is_dead_local(&lease.holder)
}

/// [`is_dead_local_holder`] for a holder name.
pub fn is_dead_local(holder: &str) -> bool {
    let Some((host, rest)) = holder.split_once('@').and_then(|(_, h)| h.split_once(':')) else {
        return false;
    };
    let Some(pid) = rest.split(':').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    if host != hostname() || pid == std::process::id() {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => !String::from_utf8_lossy(&cmdline).contains("strata"),
        Err(_) => true,
    }
}

impl Leases {
    pub fn new(stage: &Stage, path: object_store::path::Path) -> Self {
        Leases { stage: stage.clone(), path }
    }

    pub fn path(&self) -> &object_store::path::Path {
        &self.path
    }

    pub async fn read(&self) -> Result<Option<Versioned<Lease>>> {
        self.stage.get_json(&self.path).await
    }

    /// Takes the lease for `holder` if it is free, expired or already
    /// `holder`'s. [`StageError::LeaseHeld`] if someone else holds it;
    /// [`StageError::Conflict`] if another process won a race for it.
    pub async fn acquire(&self, holder: &str, ttl: Duration, now: Timestamp) -> Result<Versioned<Lease>> {
        self.acquire_unless_live(holder, ttl, now, |_| false).await
    }

    /// Like [`Leases::acquire`], but also takes over an unexpired lease for
    /// which `holder_is_gone` says its holder no longer exists (a process on
    /// this host that was killed: there is no point waiting out its TTL).
    pub async fn acquire_unless_live(&self, holder: &str, ttl: Duration, now: Timestamp, holder_is_gone: impl Fn(&Lease) -> bool) -> Result<Versioned<Lease>> {
        let current = self.read().await?;
        self.acquire_over(current.as_ref(), holder, ttl, now, holder_is_gone).await
    }

    /// [`Leases::acquire_unless_live`] over `current`, the lease as read
    /// earlier (`None`: there was none), without reading it again: one
    /// request instead of two. The write is conditional on `current`'s
    /// version, so a lease that changed since (renewed by its holder, or
    /// taken by another process) fails with [`StageError::Conflict`]; read
    /// it again to learn which.
    pub async fn acquire_over(
        &self,
        current: Option<&Versioned<Lease>>,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
        holder_is_gone: impl Fn(&Lease) -> bool,
    ) -> Result<Versioned<Lease>> {
        let lease = match current {
            Some(cur) if cur.value.holder == holder && !cur.value.is_expired(now) => {
                Lease { renewed_at: now, expires_at: now.saturating_add(ttl), ..cur.value.clone() }
            }
            Some(cur) if !cur.value.is_expired(now) && !holder_is_gone(&cur.value) => {
                return Err(StageError::LeaseHeld { path: self.path.clone(), owner: cur.value.holder.clone(), expires_at: cur.value.expires_at });
            }
            _ => Lease {
                format: crate::FORMAT_VERSION,
                holder: holder.to_owned(),
                generation: current.map_or(0, |c| c.value.generation) + 1,
                acquired_at: now,
                renewed_at: now,
                expires_at: now.saturating_add(ttl),
                status: serde_json::Value::Null,
            },
        };
        let version = self.stage.put_json_if(&self.path, &lease, current.map(|c| &c.version)).await?;
        Ok(Versioned { value: lease, version })
    }

    /// Extends a held lease and publishes `status`. [`StageError::Conflict`]
    /// means the lease was lost (taken over after expiry): stop working.
    pub async fn renew(&self, held: &Versioned<Lease>, ttl: Duration, now: Timestamp, status: serde_json::Value) -> Result<Versioned<Lease>> {
        let lease = Lease { renewed_at: now, expires_at: now.saturating_add(ttl), status, ..held.value.clone() };
        let version = self.stage.put_json_if(&self.path, &lease, Some(&held.version)).await?;
        Ok(Versioned { value: lease, version })
    }

    /// Gives the lease up so another process can take it at once.
    pub async fn release(&self, held: &Versioned<Lease>, now: Timestamp) -> Result<()> {
        self.release_with_status(held, now, held.value.status.clone()).await
    }

    /// [`Leases::release`], leaving `status` as the holder's last word (a
    /// failure stays visible after its holder exits).
    pub async fn release_with_status(&self, held: &Versioned<Lease>, now: Timestamp, status: serde_json::Value) -> Result<()> {
        let lease = Lease { expires_at: now, renewed_at: now, status, ..held.value.clone() };
        self.stage.put_json_if(&self.path, &lease, Some(&held.version)).await.map(|_| ())
    }
}
