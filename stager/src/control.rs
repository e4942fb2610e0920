//! Control objects: what readers, writers and the CLIs tell each other
//! through the stage, typed, so every program reads them by the same rules.
//!
//! | object | key | written by |
//! |---|---|---|
//! | [`SnapshotState`] | `streams/{s}/snapshot.json` | the reader's initial snapshot |
//! | [`BackfillRequest`] | `streams/{s}/backfills/{id}.json` | `strata-reader backfill`, then the reader |
//! | [`ReaderStatus`] | the `status` of `streams/{s}/reader.json` (a lease) | the reader, with each renewal |
//! | [`ReplayRequest`] | `replays/{id}.json` | `strata-writer replay`, then the writer |
//! | [`WorkerStatus`] | the `status` of `destinations/{d}/lease.json` | the writer, with each renewal |
//!
//! Destination specs and cursors have modules of their own (the writer's
//! `spec`, [`cursor`](crate::cursor)).

use serde::{Deserialize, Serialize};
use strata_common::{Lsn, TableName, Timestamp};

use crate::lease::Lease;
use crate::log::StreamLog;

/// A lease's `status`, read as `T`; `None` when absent or not a `T` (a
/// status written by a newer or older program is shown as unknown, never
/// an error that hides the rest).
pub fn lease_status<T: serde::de::DeserializeOwned>(lease: &Lease) -> Option<T> {
    if lease.status.is_null() {
        return None;
    }
    T::deserialize(&lease.status).ok()
}

// The reader's objects.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Copying,
    Done,
}

/// `streams/{stream}/snapshot.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotState {
    pub format: u32,
    /// The stream slot's consistent point: changes are staged from here.
    pub point: Lsn,
    pub phase: Phase,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Completed tables and the point their rows are as of. While copying:
    /// completions no manifest records (a table whose last range was
    /// empty); once done: every table.
    #[serde(default)]
    pub tables: Vec<TablePoint>,
    /// How the publication named its tables as of the snapshot, updated as
    /// tables that join it later are backfilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<Membership>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePoint {
    pub table: TableName,
    pub point: Lsn,
}

/// How a publication names its tables: every table, listed tables, or
/// whole schemas. Recorded with the snapshot, so that a table that joins the
/// publication later (and whose existing rows are in no snapshot and no
/// change) can be told from one created later inside a published schema
/// (whose rows are all in the stream).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub all_tables: bool,
    pub tables: Vec<TableName>,
    pub schemas: Vec<String>,
}

/// Snapshot progress, as the reader's status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    pub tables: usize,
    pub tables_done: usize,
    pub rows: u64,
    pub estimated_rows: u64,
    /// Bytes of COPY text read.
    pub bytes: u64,
}

/// What the reader publishes in `reader.json` with each lease renewal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReaderStatus {
    pub state: String,
    pub head_seq: Option<u64>,
    pub durable_lsn: Option<Lsn>,
    pub server_lsn: Option<Lsn>,
    pub last_commit_ts: Option<Timestamp>,
    pub last_error: Option<String>,
    /// While the initial snapshot runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackfillState {
    Pending,
    Running,
    Done,
    Failed,
}

/// `streams/{stream}/backfills/{id}.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackfillRequest {
    pub format: u32,
    pub id: String,
    pub table: TableName,
    /// Why: `requested` (the CLI) or `added to the publication`.
    pub reason: String,
    pub requested_at: Timestamp,
    pub state: BackfillState,
    /// Text forms of the last staged row's key columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<Vec<String>>,
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub chunks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl BackfillRequest {
    /// Records a request to copy `table` again; the running reader picks it
    /// up. `reason` says why (`requested`, or the schema change that
    /// rewrote the table).
    pub async fn submit(log: &StreamLog, table: &TableName, reason: &str) -> crate::Result<BackfillRequest> {
        let now = Timestamp::now();
        let id = format!("{}-{}", now.0, &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let req = BackfillRequest {
            format: 1,
            id: id.clone(),
            table: table.clone(),
            reason: reason.to_owned(),
            requested_at: now,
            state: BackfillState::Pending,
            last_key: None,
            rows: 0,
            chunks: 0,
            error: None,
            finished_at: None,
        };
        log.stage().put_json_if(&log.keys().backfill(&id)?, &req, None).await?;
        crate::signal::touch_or_warn(log.stage(), &format!("backfill {id} of {table} requested")).await;
        Ok(req)
    }
}

/// Where an on-demand pull round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullRequestState {
    Pending,
    Done,
    Failed,
}

/// `streams/{stream}/pull-requests/{id}.json`: "run a round of this query
/// pull now" (`strata-reader pull NAME`). The reader running the pull picks
/// it up within seconds, runs a round, and records the outcome here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    pub format: u32,
    pub id: String,
    pub requested_at: Timestamp,
    pub state: PullRequestState,
    /// Rows and batches the round staged.
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub batches: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl PullRequest {
    /// Records a request for a round of the pull feeding `log`'s stream.
    pub async fn submit(log: &StreamLog) -> crate::Result<PullRequest> {
        let now = Timestamp::now();
        let id = format!("{}-{}", now.0, &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let req =
            PullRequest { format: 1, id: id.clone(), requested_at: now, state: PullRequestState::Pending, rows: 0, batches: 0, error: None, finished_at: None };
        log.stage().put_json_if(&log.keys().pull_request(&id)?, &req, None).await?;
        Ok(req)
    }

    /// The requests of `log`'s stream still pending, oldest first.
    pub async fn pending(log: &StreamLog) -> crate::Result<Vec<crate::Versioned<PullRequest>>> {
        let mut out = Vec::new();
        for meta in log.stage().list(&log.keys().pull_requests_prefix()).await? {
            if let Some(req) = log.stage().get_json::<PullRequest>(&meta.location).await?
                && req.value.state == PullRequestState::Pending
            {
                out.push(req);
            }
        }
        out.sort_by_key(|r| r.value.requested_at);
        Ok(out)
    }

    /// Records the outcome of a request, conditionally on the version read.
    pub async fn finish(log: &StreamLog, req: &crate::Versioned<PullRequest>, outcome: Result<(u64, u64), String>) -> crate::Result<()> {
        let mut next = req.value.clone();
        match outcome {
            Ok((rows, batches)) => (next.state, next.rows, next.batches) = (PullRequestState::Done, rows, batches),
            Err(error) => (next.state, next.error) = (PullRequestState::Failed, Some(error)),
        }
        next.finished_at = Some(Timestamp::now());
        log.stage().put_json_if(&log.keys().pull_request(&next.id)?, &next, Some(&req.version)).await?;
        Ok(())
    }
}

// The writer's objects.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    Pending,
    Running,
    Done,
    Failed,
}

/// What an `--as-of` rebuild does once it reaches its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    /// Pause the destination: it stays as it was at the time.
    #[default]
    Stop,
    /// Go on delivering what came after.
    Continue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub format: u32,
    pub id: String,
    pub destination: String,
    /// Re-deliver changes committed at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// Rebuild the destination as of this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<Timestamp>,
    #[serde(default)]
    pub then: Then,
    pub state: ReplayState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReplayRequest {
    pub fn validate(&self) -> Result<(), String> {
        match (self.from, self.as_of) {
            (None, None) => Err("a replay needs --from or --as-of".to_owned()),
            (Some(_), Some(_)) => Err("--from and --as-of are exclusive: --as-of rebuilds from the beginning".to_owned()),
            _ => Ok(()),
        }
    }
}

/// What `status` and `/metrics` show of a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerStatus {
    pub state: String,
    pub cursor: Option<u64>,
    pub cursor_commit_ts: Option<Timestamp>,
    pub last_error: Option<String>,
    /// When the worker stopped on an error retrying cannot heal.
    pub failed_at: Option<Timestamp>,
    pub retries: u64,
    /// The delivery schedule in force.
    pub schedule: String,
    /// When a scheduled destination runs next (while it sleeps).
    pub next_run: Option<Timestamp>,
    /// The worker's last look for the next batch found none: it has
    /// delivered every batch committed then.
    pub caught_up: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(status: serde_json::Value) -> Lease {
        Lease { format: 1, holder: "h".to_owned(), generation: 1, acquired_at: Timestamp(0), renewed_at: Timestamp(0), expires_at: Timestamp(0), status }
    }

    #[test]
    fn a_lease_status_reads_as_its_type_leniently() {
        let status: Option<WorkerStatus> = lease_status(&lease(serde_json::json!({"state": "failed", "last_error": "boom"})));
        let status = status.unwrap();
        assert_eq!((status.state.as_str(), status.last_error.as_deref(), status.retries), ("failed", Some("boom"), 0));
        assert_eq!(lease_status::<ReaderStatus>(&lease(serde_json::Value::Null)), None);
        assert_eq!(lease_status::<ReaderStatus>(&lease(serde_json::json!({"state": 7}))), None, "not a status: unknown, not an error");
        let full = ReaderStatus { state: "streaming".to_owned(), head_seq: Some(3), ..Default::default() };
        assert_eq!(lease_status::<ReaderStatus>(&lease(serde_json::to_value(&full).unwrap())), Some(full));
    }

    #[test]
    fn a_replay_needs_exactly_one_of_from_and_as_of() {
        let r = |from: Option<i64>, as_of: Option<i64>| ReplayRequest {
            format: 1,
            id: "r".to_owned(),
            destination: "d".to_owned(),
            from: from.map(Timestamp),
            as_of: as_of.map(Timestamp),
            then: Then::Stop,
            state: ReplayState::Pending,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            error: None,
        };
        assert!(r(Some(1), None).validate().is_ok() && r(None, Some(1)).validate().is_ok());
        assert!(r(None, None).validate().unwrap_err().contains("--from or --as-of"));
        assert!(r(Some(1), Some(1)).validate().unwrap_err().contains("exclusive"));
    }
}
