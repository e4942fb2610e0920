//! The stager's error type: one enum for everything that touches the stage.
//!
//! Callers branch on variants, never on messages: [`StageError::SeqTaken`]
//! means another reader committed first (fencing), [`StageError::Conflict`]
//! means a conditional update lost to a concurrent one, and
//! [`StageError::Corrupt`] means bytes in the stage do not decode — which is
//! never retried, always reported with the key.

use object_store::path::Path;
use strata_common::Lsn;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// `log/{seq}.json` already exists: another reader owns the stream, or
    /// this one already committed `seq` before a crash.
    #[error("batch {seq} of stream {stream:?} is already committed (another reader owns this stream, or this batch was committed before a restart)")]
    SeqTaken { stream: String, seq: u64 },

    /// A conditional create or update lost: the object changed (or appeared)
    /// since it was read.
    #[error("{path} changed since it was read (concurrent update); re-read and retry")]
    Conflict { path: Path },

    #[error("{path} does not exist")]
    NotFound { path: Path },

    /// Bytes in the stage that do not decode as what their key says.
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: Path, reason: String },

    #[error("{path}: checksum mismatch (manifest says {expected}, file has {actual})")]
    ChecksumMismatch { path: Path, expected: String, actual: String },

    /// A change that cannot be written in its table's schema.
    #[error("encoding {table} at LSN {lsn} ord {ord}, column {column:?}: {reason}")]
    Encode { table: String, lsn: Lsn, ord: u32, column: String, reason: String },

    /// A cursor may only move forward outside an explicit replay.
    #[error("{path}: refusing to move cursor back from seq {current} to {attempted} (only a replay may)")]
    Backward { path: Path, current: u64, attempted: u64 },

    /// The lease is held by another owner and has not expired.
    #[error("{path} is held by {owner} until {expires_at}")]
    LeaseHeld { path: Path, owner: String, expires_at: strata_common::Timestamp },

    #[error("stage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName { what: &'static str, name: String, reason: String },

    /// Data the caller handed in that breaks the format's rules.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },

    /// The object store failed (network, permissions, disk).
    #[error("{op} {path}: {source}")]
    Store {
        op: &'static str,
        path: Path,
        #[source]
        source: object_store::Error,
    },
}

impl StageError {
    /// Whether retrying the same operation may succeed: store failures are
    /// transient unless they say the request itself is wrong.
    pub fn is_retriable(&self) -> bool {
        match self {
            StageError::Store { source, .. } => !matches!(
                source,
                object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            StageError::Conflict { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn store(op: &'static str, path: &Path, source: object_store::Error) -> StageError {
        match source {
            object_store::Error::NotFound { .. } => StageError::NotFound { path: path.clone() },
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => StageError::Conflict { path: path.clone() },
            source => StageError::Store { op, path: path.clone(), source },
        }
    }
}

pub type Result<T, E = StageError> = std::result::Result<T, E>;
