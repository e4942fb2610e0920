//! The control signal: `control.json` at the stage root, rewritten after
//! every change to a control object (a destination spec, a replay or
//! backfill request, a released lease), so that running services learn of
//! changes with one GET instead of listing every control object each pass.
//!
//! On S3 a LIST costs as much as 12.5 GETs, and a writer that listed
//! `destinations/` and `replays/` every 2 s paid $0.42 a day for it before
//! delivering anything. A [`ControlWatch`] reads the signal at most every
//! `poll` and says the control objects must be read again when its version
//! moved. The signal is a hint written after the change it announces: a
//! change whose signal was lost (its writer died in between, or an older
//! build made it) is still picked up by the full reading every `full`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_common::Timestamp;
use tokio::time::Instant;

use crate::error::Result;
use crate::store::{ObjectVersion, Stage};

/// What `control.json` holds: who changed what, last. Only its version
/// is compared; the rest is for people reading the stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signal {
    pub format: u32,
    pub changed_at: Timestamp,
    /// What changed: `destination orders added`, `replay 17… requested`.
    pub what: String,
    /// Unique per write, so that two writes never read as one version.
    pub nonce: String,
}

/// The signal's key.
pub fn key() -> object_store::path::Path {
    object_store::path::Path::from("control.json")
}

/// Announces that a control object changed. Called after the change.
pub async fn touch(stage: &Stage, what: &str) -> Result<()> {
    let signal = Signal { format: 1, changed_at: Timestamp::now(), what: what.to_owned(), nonce: uuid::Uuid::new_v4().simple().to_string() };
    let bytes = serde_json::to_vec_pretty(&signal).expect("a signal serializes");
    stage.put(&key(), bytes.into()).await
}

/// [`touch`], where failing to signal must not fail the change already
/// made: running services then pick it up at their next full reading.
pub async fn touch_or_warn(stage: &Stage, what: &str) {
    if let Err(e) = touch(stage, what).await {
        tracing::warn!(error = %e, change = what, "could not signal a control change; running services see it within their full re-read interval");
    }
}

/// How often a service on a remote stage reads the signal: each read is a
/// billed GET (17,280 a service-day, $0.0069 at S3's list price). On local
/// disk a read is a file open, so it is read whenever asked.
pub const REMOTE_POLL: Duration = Duration::from_secs(5);
/// How often the control objects are read in full on a remote stage even
/// if the signal did not move (a change whose signal was lost).
pub const REMOTE_FULL: Duration = Duration::from_secs(300);
/// The same on local disk, where listing costs nothing.
pub const LOCAL_FULL: Duration = Duration::from_secs(30);

/// What [`ControlWatch::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Nothing to read again.
    Unchanged,
    /// The signal moved (or this is the first reading, or the watch was
    /// invalidated): a control object changed.
    Moved,
    /// The signal did not move, but the full reading is due: a change
    /// whose signal was lost is picked up by it.
    Due,
}

/// Whether the control objects must be read again.
#[derive(Debug)]
pub struct ControlWatch {
    /// The signal's version when the control objects were last read;
    /// `None` for an absent signal.
    seen: Option<Option<ObjectVersion>>,
    poll: Duration,
    full: Duration,
    next_poll: Instant,
    next_full: Instant,
}

impl ControlWatch {
    /// Reads the signal at most every `poll`, and asks for a full reading
    /// at least every `full`.
    pub fn new(poll: Duration, full: Duration) -> ControlWatch {
        let now = Instant::now();
        ControlWatch { seen: None, poll, full, next_poll: now, next_full: now }
    }

    /// The watch every service keeps on `stage`: [`REMOTE_POLL`] and
    /// [`REMOTE_FULL`] on a remote stage, [`LOCAL_FULL`] on local disk.
    pub fn for_stage(stage: &Stage) -> ControlWatch {
        if stage.is_local() { ControlWatch::new(Duration::ZERO, LOCAL_FULL) } else { ControlWatch::new(REMOTE_POLL, REMOTE_FULL) }
    }

    /// True the first time, when the signal changed since the last true,
    /// when `full` has passed since then, or after [`ControlWatch::invalidate`].
    /// A signal that cannot be read is an error, and the next call reads it again.
    pub async fn changed(&mut self, stage: &Stage) -> Result<bool> {
        Ok(self.check(stage).await? != Reading::Unchanged)
    }

    /// [`ControlWatch::changed`], saying why: whether the signal moved or
    /// only the full reading is due.
    pub async fn check(&mut self, stage: &Stage) -> Result<Reading> {
        let now = Instant::now();
        if now < self.next_poll && now < self.next_full {
            return Ok(Reading::Unchanged);
        }
        let version = stage.get_json::<serde_json::Value>(&key()).await?.map(|v| v.version);
        self.next_poll = now + self.poll;
        let moved = self.seen.as_ref() != Some(&version);
        if !moved && now < self.next_full {
            return Ok(Reading::Unchanged);
        }
        self.seen = Some(version);
        self.next_full = now + self.full;
        Ok(if moved { Reading::Moved } else { Reading::Due })
    }

    /// The next [`ControlWatch::changed`] is true (after a failed reading
    /// of the control objects, say).
    pub fn invalidate(&mut self) {
        self.seen = None;
        self.next_poll = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_touch_is_seen_once_and_silence_until_the_full_reading() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::local(dir.path()).unwrap();
        let mut watch = ControlWatch::new(Duration::from_secs(5), Duration::from_secs(300));
        assert!(watch.changed(&stage).await.unwrap(), "the first call reads everything");
        assert!(!watch.changed(&stage).await.unwrap(), "nothing changed");
        touch(&stage, "destination a added").await.unwrap();
        assert!(!watch.changed(&stage).await.unwrap(), "not before the poll interval");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(watch.changed(&stage).await.unwrap(), "the touch is seen");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!watch.changed(&stage).await.unwrap(), "and seen once");
        touch(&stage, "destination a removed").await.unwrap();
        touch(&stage, "destination a added").await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(watch.check(&stage).await.unwrap(), Reading::Moved, "two touches in a row read as a change");
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(watch.check(&stage).await.unwrap(), Reading::Due, "the full reading comes without a touch");
        watch.invalidate();
        assert!(watch.changed(&stage).await.unwrap(), "invalidated");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_stay_within_the_poll_interval() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::local(dir.path()).unwrap();
        let mut watch = ControlWatch::new(Duration::from_secs(5), Duration::from_secs(300));
        for _ in 0..60 {
            watch.changed(&stage).await.unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(stage.requests().get(crate::requests::Op::Get), 12, "one GET per 5 s over a minute");
    }
}
