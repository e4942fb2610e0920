//! The boundary between the replication client and everything else.
//!
//! [`ChangeSource`] yields the pgoutput protocol as [`SourceEvent`]s and
//! takes confirmations. Batching, schema versions and the stage know only
//! this trait, so the replication client crate can be swapped without
//! touching them.
//!
//! Invariants every implementation keeps:
//! - Events arrive in the server's order; a transaction's events are
//!   bracketed by `Begin` and `Commit`, never interleaved with another's
//!   (pgoutput without `streaming`).
//! - The source never confirms a position on its own: the only flush
//!   position it ever reports to the server is the last one passed to
//!   [`ChangeSource::confirm`] (or the start position, which the caller
//!   chose because it is durable).
//! - [`ChangeSource::next`] is cancel-safe: dropping its future before it
//!   completes loses no event, so callers may `select!` on it.

use std::future::Future;

use bytes::Bytes;
use strata_common::{Lsn, Timestamp};

/// One column of a tuple, as pgoutput sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value the change did not touch: not sent.
    Unchanged,
    /// The value's text output form.
    Text(Bytes),
}

/// What an old tuple holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity key columns (others NULL).
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    pub key: bool,
}

/// A pgoutput Relation message: the table's columns as of the changes that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    Begin {
        final_lsn: Lsn,
        commit_ts: Timestamp,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: Timestamp,
    },
    Relation(Relation),
    /// A type the following Relation uses that is not built in.
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        old: Option<(OldTuple, Vec<Datum>)>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: (OldTuple, Vec<Datum>),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// Replication origin of the transaction (set by another replication).
    Origin {
        name: String,
        lsn: Lsn,
    },
    /// `pg_logical_emit_message`; `transactional` ones sit inside a transaction.
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    /// The server has sent everything up to `wal_end`: no transaction
    /// committing at or below it is still to come.
    Keepalive {
        wal_end: Lsn,
    },
}

/// Errors of a source, split by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Connection lost, server restarting, timeouts: reconnect with backoff.
    #[error("replication connection: {0}")]
    Transient(String),
    /// Misconfiguration or a refused request (auth, missing slot, bad
    /// publication, slot in use by another process): retrying the same
    /// request will not help.
    #[error("replication: {0}")]
    Permanent(String),
    /// The stream carried something this reader does not understand.
    #[error("replication protocol: {0}")]
    Protocol(String),
}

impl SourceError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Transient(_))
    }
}

/// A logical replication stream of one slot.
pub trait ChangeSource: Send {
    /// The next event. Cancel-safe (see the module docs).
    fn next(&mut self) -> impl Future<Output = Result<SourceEvent, SourceError>> + Send;

    /// Reports `lsn` as durably staged: the server may discard WAL before it.
    /// Positions only move forward; a lower one is ignored.
    fn confirm(&mut self, lsn: Lsn) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// The latest server WAL position seen (for lag figures).
    fn server_position(&self) -> Lsn;
}
