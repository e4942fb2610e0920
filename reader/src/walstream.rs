//! [`ChangeSource`] over `pg_walstream`'s replication connection.
//!
//! We use the crate's low-level connection (`PgReplicationConnection`) and
//! its pgoutput parser rather than its high-level stream, because the
//! high-level stream drops unchanged-TOAST markers from rows, hides whether
//! an old tuple is a key or a full row, can reconnect by itself and replay
//! part of a transaction, and has helpers that acknowledge positions on
//! their own. Here every status update is ours: the flush position sent is
//! exactly the last [`ChangeSource::confirm`]ed one.
//!
//! The walsender is in `replication=database` mode, which also accepts SQL:
//! before `START_REPLICATION` we pin the settings [`parse_text`] expects
//! (the crate's native driver ignores the connection string's `options`).
//!
//! Cancel safety of [`ChangeSource::next`]: on a multi-thread tokio runtime
//! the connection reads on the caller's task into a buffer it owns
//! (`read_buf` and a queue of complete frames, both kept across calls), and
//! `AsyncReadExt::read_buf` is cancel-safe, so dropping the future between
//! frames loses nothing. Frame parsing happens after the last await. The
//! constructor refuses a current-thread runtime, where the crate would use a
//! worker thread whose cancellation drops queued frames.
//!
//! [`parse_text`]: strata_common::pgtext::parse_text

use bytes::{Buf, Bytes};
use pg_walstream::{CancellationToken, LogicalReplicationMessage, LogicalReplicationParser, PgReplicationConnection, ReplicationError, TupleData};
use strata_common::config::SecretUrl;
use strata_common::ident::quote_ident;
use strata_common::pgconn::PgConnect;
use strata_common::pgtext::setting_statements;
use strata_common::{Lsn, Timestamp};

use crate::source::{ChangeSource, Datum, OldTuple, Relation, RelationColumn, SourceError, SourceEvent};

/// pgoutput protocol version 1: all PostgreSQL ≥ 10 speak it, and without
/// `streaming` a transaction arrives whole, after its commit.
const PROTO_VERSION: &str = "1";

fn map_err(context: &str, e: ReplicationError) -> SourceError {
    let msg = format!("{context}: {e}");
    if e.is_transient() || e.is_cancelled() {
        SourceError::Transient(msg)
    } else if e.is_permanent() {
        SourceError::Permanent(msg)
    } else if matches!(e, ReplicationError::Protocol(_) | ReplicationError::Buffer(_)) {
        SourceError::Protocol(msg)
    } else {
        SourceError::Transient(msg)
    }
}

/// `conninfo` with `replication=database` added, URL or key=value form.
pub fn replication_conninfo(conninfo: &str) -> Result<String, SourceError> {
    if conninfo.contains("://") {
        let mut url = url::Url::parse(conninfo).map_err(|e| SourceError::Permanent(format!("source.url is not a valid URL: {e}")))?;
        let pairs: Vec<(String, String)> = url.query_pairs().filter(|(k, _)| k != "replication").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.query_pairs_mut().clear().extend_pairs(pairs).append_pair("replication", "database");
        Ok(url.to_string())
    } else {
        Ok(format!("{conninfo} replication=database"))
    }
}

/// Opens a replication connection with the TLS settings every other
/// connection applies ([`strata_common::pgconn`]), resolved into the libpq
/// keys the replication crate reads. Its connection set-up is blocking; it
/// runs under `block_in_place`.
fn connect(conninfo: &SecretUrl) -> Result<PgReplicationConnection, SourceError> {
    let parsed: PgConnect = conninfo.expose().parse().map_err(|e| SourceError::Permanent(format!("source.url: {e}")))?;
    if parsed.tls().client_cert.is_some() {
        return Err(SourceError::Permanent(format!(
            "source.url sets sslcert, and the replication connection to {} cannot present a client certificate: \
             authenticate the replication role by password over TLS (hostssl … scram-sha-256 in pg_hba.conf)",
            parsed.target()
        )));
    }
    let info = replication_conninfo(&parsed.libpq_string())?;
    let mode = parsed.tls().effective_mode();
    tokio::task::block_in_place(|| PgReplicationConnection::connect(&info)).map_err(|e| {
        let context = format!("connecting to {} with sslmode={mode}", parsed.target());
        // The crate reports every failed handshake as transient; one that
        // failed on the certificate fails the same way every time.
        let message = e.to_string();
        if message.contains("invalid peer certificate") || message.contains("received fatal alert") {
            SourceError::Permanent(format!("{context}: {message}"))
        } else {
            map_err(&context, e)
        }
    })
}

pub struct PgWalSource {
    conn: PgReplicationConnection,
    parser: LogicalReplicationParser,
    token: CancellationToken,
    received: Lsn,
    confirmed: Lsn,
}

impl PgWalSource {
    /// Connects, pins session settings and starts streaming `slot` of
    /// `publication` from `start` — a position the caller has made durable,
    /// since the server treats it as confirmed. The crate's connection set-up
    /// is blocking; it runs under `block_in_place`.
    pub fn start(conninfo: &SecretUrl, slot: &str, publication: &str, start: Lsn) -> Result<Self, SourceError> {
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        if flavor.ok() != Some(tokio::runtime::RuntimeFlavor::MultiThread) {
            return Err(SourceError::Permanent("the replication source needs a multi-thread tokio runtime".to_owned()));
        }
        let mut conn = connect(conninfo)?;
        for (name, sql) in setting_statements() {
            let r = tokio::task::block_in_place(|| conn.exec(&sql)).map_err(|e| map_err(&format!("setting {name}"), e))?;
            if let Some(msg) = r.error_message().filter(|m| !m.is_empty()) {
                return Err(SourceError::Permanent(format!("setting {name} on the replication connection: {msg}")));
            }
        }
        let publications = quote_ident(publication);
        let options = [("proto_version", PROTO_VERSION), ("publication_names", publications.as_str()), ("messages", "true")];
        tokio::task::block_in_place(|| conn.start_replication(slot, start.as_u64(), &options))
            .map_err(|e| map_err(&format!("starting replication of slot {slot:?} at {start}"), e))?;
        tracing::info!(slot, publication, %start, "replication started");
        Ok(PgWalSource { conn, parser: LogicalReplicationParser::with_protocol_version(1), token: CancellationToken::new(), received: start, confirmed: start })
    }

    /// Reports the confirmed position as written, flushed and applied alike.
    /// Reporting less than the server has sent (rather than what was
    /// received) also lets an idle walsender send a keepalive at once, whose
    /// position the idle stream then confirms: WAL is released promptly.
    async fn send_status(&mut self) -> Result<(), SourceError> {
        let at = self.confirmed.as_u64();
        self.conn.send_standby_status_update(at, at, at, false).await.map_err(|e| map_err("sending status update", e))
    }
}

/// A logical slot created with an exported snapshot, and the replication
/// connection that keeps the snapshot alive: other sessions can adopt it
/// (`SET TRANSACTION SNAPSHOT`) only while this stays open and idle. A
/// temporary slot is dropped by the server when the connection closes.
pub struct ExportedSlot {
    _conn: PgReplicationConnection,
    /// The slot's consistent point: the snapshot holds every transaction
    /// committing before it, the slot streams every one from it on.
    pub point: Lsn,
    pub snapshot_name: String,
}

impl ExportedSlot {
    pub fn create(conninfo: &SecretUrl, slot: &str, temporary: bool) -> Result<Self, SourceError> {
        let mut conn = connect(conninfo)?;
        let options = pg_walstream::ReplicationSlotOptions { temporary, snapshot: Some("export".to_owned()), ..Default::default() };
        let r = tokio::task::block_in_place(|| conn.create_replication_slot_with_options(slot, pg_walstream::SlotType::Logical, Some("pgoutput"), &options))
            .map_err(|e| map_err(&format!("creating replication slot {slot:?} with an exported snapshot"), e))?;
        let field = |col: i32, what: &str| {
            r.get_value(0, col).filter(|v| !v.is_empty()).ok_or_else(|| SourceError::Protocol(format!("CREATE_REPLICATION_SLOT {slot:?} returned no {what}")))
        };
        let point: Lsn =
            field(1, "consistent point")?.parse().map_err(|e| SourceError::Protocol(format!("CREATE_REPLICATION_SLOT {slot:?}: consistent point: {e}")))?;
        let snapshot_name = field(2, "snapshot name")?;
        tracing::info!(slot, temporary, %point, snapshot = snapshot_name, "created replication slot with an exported snapshot");
        Ok(ExportedSlot { _conn: conn, point, snapshot_name })
    }
}

fn datums(t: TupleData) -> Result<Vec<Datum>, SourceError> {
    t.columns
        .into_iter()
        .map(|c| match c.data_type {
            b'n' => Ok(Datum::Null),
            b'u' => Ok(Datum::Unchanged),
            b't' => Ok(Datum::Text(c.raw_bytes())),
            other => Err(SourceError::Protocol(format!("unexpected column kind {:?} (binary mode is not requested)", other as char))),
        })
        .collect()
}

fn old_kind(key_type: Option<char>) -> OldTuple {
    if key_type == Some('O') { OldTuple::Full } else { OldTuple::Key }
}

/// One pgoutput message (the payload of an XLogData frame) as an event.
/// No I/O: what [`ChangeSource::next`] does with each frame's payload, and
/// what the `pgoutput` fuzz target drives with arbitrary bytes.
pub fn decode_message(parser: &mut LogicalReplicationParser, data: Bytes) -> Result<SourceEvent, SourceError> {
    let msg = parser.parse_wal_message_bytes(data).map_err(|e| map_err("decoding pgoutput", e))?;
    if msg.is_streaming {
        return Err(SourceError::Protocol("streamed transaction chunk received; streaming is not requested".to_owned()));
    }
    convert(msg.message)
}

fn convert(msg: LogicalReplicationMessage) -> Result<SourceEvent, SourceError> {
    use LogicalReplicationMessage as M;
    Ok(match msg {
        M::Begin { final_lsn, timestamp, xid } => SourceEvent::Begin { final_lsn: Lsn(final_lsn), commit_ts: Timestamp::from_pg_micros(timestamp), xid },
        M::Commit { commit_lsn, end_lsn, timestamp, .. } => {
            SourceEvent::Commit { commit_lsn: Lsn(commit_lsn), end_lsn: Lsn(end_lsn), commit_ts: Timestamp::from_pg_micros(timestamp) }
        }
        M::Relation { relation_id, namespace, relation_name, replica_identity, columns } => SourceEvent::Relation(Relation {
            oid: relation_id,
            namespace: namespace.to_string(),
            name: relation_name.to_string(),
            replica_identity,
            columns: columns
                .into_iter()
                .map(|c| RelationColumn { name: c.name.to_string(), type_oid: c.type_id, type_modifier: c.type_modifier, key: c.flags & 1 == 1 })
                .collect(),
        }),
        M::Type { type_id, namespace, type_name } => SourceEvent::Type { oid: type_id, namespace, name: type_name },
        M::Insert { relation_id, tuple } => SourceEvent::Insert { relation: relation_id, new: datums(tuple)? },
        M::Update { relation_id, old_tuple, new_tuple, key_type } => SourceEvent::Update {
            relation: relation_id,
            old: old_tuple.map(|t| datums(t).map(|d| (old_kind(key_type), d))).transpose()?,
            new: datums(new_tuple)?,
        },
        M::Delete { relation_id, old_tuple, key_type } => SourceEvent::Delete { relation: relation_id, old: (old_kind(Some(key_type)), datums(old_tuple)?) },
        M::Truncate { relation_ids, flags } => SourceEvent::Truncate { relations: relation_ids, cascade: flags & 1 != 0, restart_identity: flags & 2 != 0 },
        M::Origin { origin_lsn, origin_name } => SourceEvent::Origin { name: origin_name, lsn: Lsn(origin_lsn) },
        M::Message { flags, lsn, prefix, content } => SourceEvent::Message { transactional: flags & 1 != 0, lsn: Lsn(lsn), prefix, content },
        other => {
            return Err(SourceError::Protocol(format!("unexpected message {other:?}: streaming and two-phase decoding are not requested")));
        }
    })
}

impl ChangeSource for PgWalSource {
    async fn next(&mut self) -> Result<SourceEvent, SourceError> {
        let mut frame: Bytes = self.conn.get_copy_data_async(&self.token).await.map_err(|e| map_err("reading the replication stream", e))?;
        match frame.first() {
            Some(b'w') if frame.len() >= 25 => {
                let mut header = &frame[1..25];
                let _wal_start = header.get_u64();
                let wal_end = Lsn(header.get_u64());
                self.received = self.received.max(wal_end);
                decode_message(&mut self.parser, frame.split_off(25))
            }
            Some(b'k') if frame.len() >= 18 => {
                let mut body = &frame[1..18];
                let wal_end = Lsn(body.get_u64());
                let _server_time = body.get_i64();
                let reply = body.get_u8() == 1;
                self.received = self.received.max(wal_end);
                if reply {
                    self.send_status().await?;
                }
                Ok(SourceEvent::Keepalive { wal_end })
            }
            _ => Err(SourceError::Protocol(format!("unexpected replication frame of {} bytes starting {:?}", frame.len(), frame.first()))),
        }
    }

    async fn confirm(&mut self, lsn: Lsn) -> Result<(), SourceError> {
        if lsn <= self.confirmed {
            return Ok(());
        }
        self.confirmed = lsn;
        self.send_status().await
    }

    fn server_position(&self) -> Lsn {
        self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_replication_mode() {
        assert_eq!(replication_conninfo("postgres://u:p@h:5/db?sslmode=disable").unwrap(), "postgres://u:p@h:5/db?sslmode=disable&replication=database");
        assert_eq!(replication_conninfo("postgres://h/db?replication=true").unwrap(), "postgres://h/db?replication=database");
        assert_eq!(replication_conninfo("host=h dbname=db").unwrap(), "host=h dbname=db replication=database");
    }
}
