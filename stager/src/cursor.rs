//! Destination cursors: `destinations/{name}/cursor.json`.
//!
//! A cursor is the last batch a destination has made durable. It only moves
//! forward: [`Cursors::advance`] refuses a lower seq, and every write is
//! conditional on the version read, so a stale writer (one that lost its
//! lease but does not know yet) cannot overwrite a newer position. The one
//! way back is [`Cursors::rewind`], an explicit replay, which bumps `epoch`
//! so that later writes of the old epoch are refused too.

use serde::{Deserialize, Serialize};
use strata_common::{Lsn, Timestamp};

use crate::error::{Result, StageError};
use crate::keys::DestinationKeys;
use crate::store::{Stage, Versioned};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub format: u32,
    pub destination: String,
    pub stream: String,
    /// Last batch applied and durable at the destination (0: none yet).
    pub seq: u64,
    /// That batch's `lsn.end`.
    pub lsn: Lsn,
    /// Replay generation: a rewind starts a new epoch.
    pub epoch: u64,
    pub updated_at: Timestamp,
}

/// The cursor of one destination.
#[derive(Debug, Clone)]
pub struct Cursors {
    stage: Stage,
    keys: DestinationKeys,
}

impl Cursors {
    pub fn new(stage: &Stage, destination: &str) -> Result<Self> {
        Ok(Cursors { stage: stage.clone(), keys: DestinationKeys::new(destination)? })
    }

    pub async fn load(&self) -> Result<Option<Versioned<Cursor>>> {
        self.stage.get_json(&self.keys.cursor()).await
    }

    /// Moves the cursor to `next`, provided it is still at `current` (the
    /// version this caller read; `None`: no cursor yet) and `next` is not
    /// behind it.
    pub async fn advance(&self, current: Option<&Versioned<Cursor>>, next: Cursor) -> Result<Versioned<Cursor>> {
        if let Some(cur) = current {
            let c = &cur.value;
            if next.epoch < c.epoch || (next.epoch == c.epoch && next.seq < c.seq) {
                return Err(StageError::Backward { path: self.keys.cursor(), current: c.seq, attempted: next.seq });
            }
        }
        let version = self.stage.put_json_if(&self.keys.cursor(), &next, current.map(|c| &c.version)).await?;
        Ok(Versioned { value: next, version })
    }

    /// Sets the cursor back to `seq` for a replay, starting a new epoch.
    pub async fn rewind(&self, current: &Versioned<Cursor>, seq: u64, lsn: Lsn, now: Timestamp) -> Result<Versioned<Cursor>> {
        let next = Cursor { seq, lsn, epoch: current.value.epoch + 1, updated_at: now, ..current.value.clone() };
        let version = self.stage.put_json_if(&self.keys.cursor(), &next, Some(&current.version)).await?;
        Ok(Versioned { value: next, version })
    }
}
