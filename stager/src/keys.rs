//! The stage's key layout (DESIGN.md, "Staging format v1").
//!
//! ```text
//! streams/{stream}/log/{seq:020}.json                 batch manifest: the commit point
//! streams/{stream}/tables/{schema}.{table}/{YYYY-MM-DD}/{HH}/{seq:020}-{part:04}.parquet
//! streams/{stream}/schemas/{schema}.{table}/{version:010}.json
//! streams/{stream}/reader.json                        reader lease + status
//! streams/{stream}/snapshot.json                      initial snapshot state
//! streams/{stream}/backfills/{id}.json                backfill requests and progress
//! streams/{stream}/pull-requests/{id}.json            on-demand rounds of a query pull
//! streams/{stream}/retention.json                     first seq kept after retention (absent: 1)
//! destinations/{name}/spec.json | cursor.json | lease.json | dead-letter/…
//! replays/{id}.json
//! ```
//!
//! Names are percent-encoded so that any identifier maps to exactly one key
//! segment and back: every byte but `A–Z a–z 0–9 - _ ~` is encoded. That is
//! RFC 3986's unreserved set *minus the dot*: the design's `{schema}.{table}`
//! segment joins two names with a dot, so a dot inside a name must be encoded
//! (`"a.b"."c"` → `a%2Eb.c`, `"a"."b.c"` → `a.b%2Ec`) or the two would share a
//! key. Encoding the dot also rules out `.` and `..` segments.

use object_store::path::Path;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use strata_common::{TableName, Timestamp};

use crate::error::{Result, StageError};

/// Bytes kept as they are: RFC 3986 unreserved characters except `.`.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// Width of zero-padded batch sequence numbers.
pub const SEQ_WIDTH: usize = 20;

/// Percent-encodes one name into one key segment.
pub fn encode_name(name: &str) -> String {
    utf8_percent_encode(name, ENCODE).to_string()
}

/// Inverse of [`encode_name`]; errors on invalid escapes or non-UTF-8.
pub fn decode_name(segment: &str) -> Result<String> {
    let bad = |reason: &str| StageError::InvalidName { what: "key segment", name: segment.to_owned(), reason: reason.to_owned() };
    // Reject what encode_name never produces, so decoding is a bijection.
    if segment.bytes().any(|b| !(b.is_ascii_alphanumeric() || b"-_~%".contains(&b))) {
        return Err(bad("contains a character that should have been percent-encoded"));
    }
    let decoded = percent_decode_str(segment).decode_utf8().map_err(|_| bad("does not decode to UTF-8"))?;
    if encode_name(&decoded) != segment {
        return Err(bad("is not in canonical percent-encoding"));
    }
    Ok(decoded.into_owned())
}

/// The `{schema}.{table}` segment.
pub fn table_segment(table: &TableName) -> String {
    format!("{}.{}", encode_name(&table.schema), encode_name(&table.name))
}

/// Inverse of [`table_segment`].
pub fn parse_table_segment(segment: &str) -> Result<TableName> {
    let (schema, name) = segment.split_once('.').ok_or_else(|| StageError::InvalidName {
        what: "table key segment",
        name: segment.to_owned(),
        reason: "expected {schema}.{table}".to_owned(),
    })?;
    TableName::new(decode_name(schema)?, decode_name(name)?).map_err(|e| StageError::InvalidName {
        what: "table key segment",
        name: segment.to_owned(),
        reason: e.to_string(),
    })
}

/// `{YYYY-MM-DD}/{HH}` of a commit time, in UTC: the folders of the stage's
/// data files and of the files destination (format 2).
///
/// Plain folders, not Hive `key=value` ones: format 1's `dt=`/`hr=` shadowed
/// user columns of those names in every engine that applies Hive
/// partitioning, and a reserved `_strata_date=` would be skipped whole by
/// pyarrow, which treats `_`-prefixed paths as hidden. No folder name can
/// collide with a column; engines prune on `_strata_commit_ts` statistics,
/// and a path glob (`…/2026-11-20/*/*.parquet`) selects a day or hour.
pub fn partition(at: Timestamp) -> String {
    match at.to_datetime() {
        Some(dt) => dt.format("%Y-%m-%d/%H").to_string(),
        // Out of chrono's range only for absurd clocks; still a valid key.
        None => "0000-00-00/00".to_owned(),
    }
}

fn path(s: String) -> Path {
    // Every segment built here is non-empty and percent-encoded (no '/', no
    // control characters, never "." or ".."), which is all Path::parse checks.
    Path::parse(&s).unwrap_or_else(|e| unreachable!("stage key {s:?} failed to parse: {e}"))
}

/// Checks a stream or destination name before it becomes a key.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    strata_common::config::validate_name(name).map_err(|reason| StageError::InvalidName { what, name: name.to_owned(), reason })
}

/// Keys of one stream.
#[derive(Debug, Clone)]
pub struct StreamKeys {
    stream: String,
    root: String,
}

impl StreamKeys {
    pub fn new(stream: &str) -> Result<Self> {
        check_name("stream name", stream)?;
        Ok(StreamKeys { stream: stream.to_owned(), root: format!("streams/{}", encode_name(stream)) })
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn log_prefix(&self) -> Path {
        path(format!("{}/log", self.root))
    }

    pub fn manifest(&self, seq: u64) -> Path {
        path(format!("{}/log/{seq:0width$}.json", self.root, width = SEQ_WIDTH))
    }

    /// The seq of a `log/` key, `None` for anything else in that folder.
    pub fn parse_manifest_key(&self, key: &Path) -> Option<u64> {
        let name = key.filename()?;
        let digits = name.strip_suffix(".json")?;
        if digits.len() != SEQ_WIDTH || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    pub fn tables_prefix(&self) -> Path {
        path(format!("{}/tables", self.root))
    }

    /// A data file, partitioned by the commit time of its first row.
    pub fn data_file(&self, table: &TableName, first_commit: Timestamp, seq: u64, part: u32) -> Path {
        path(format!("{}/tables/{}/{}/{seq:0width$}-{part:04}.parquet", self.root, table_segment(table), partition(first_commit), width = SEQ_WIDTH))
    }

    /// The batch seq a data file key was written for.
    pub fn parse_data_file_seq(key: &Path) -> Option<u64> {
        let name = key.filename()?.strip_suffix(".parquet")?;
        let (seq, part) = name.split_once('-')?;
        if seq.len() != SEQ_WIDTH || part.len() != 4 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        seq.parse().ok()
    }

    pub fn schemas_prefix(&self) -> Path {
        path(format!("{}/schemas", self.root))
    }

    pub fn schema_prefix(&self, table: &TableName) -> Path {
        path(format!("{}/schemas/{}", self.root, table_segment(table)))
    }

    pub fn schema(&self, table: &TableName, version: u32) -> Path {
        path(format!("{}/schemas/{}/{version:010}.json", self.root, table_segment(table)))
    }

    /// The log's low-water mark after retention (`{"low": seq}`); absent means 1.
    pub fn retention(&self) -> Path {
        path(format!("{}/retention.json", self.root))
    }

    /// Backfill requests of the stream (`backfills/{id}.json`).
    pub fn backfills_prefix(&self) -> Path {
        path(format!("{}/backfills", self.root))
    }

    pub fn backfill(&self, id: &str) -> Result<Path> {
        check_name("backfill id", id)?;
        Ok(path(format!("{}/backfills/{}.json", self.root, encode_name(id))))
    }

    /// On-demand round requests of a query pull's stream (`pull-requests/{id}.json`).
    pub fn pull_requests_prefix(&self) -> Path {
        path(format!("{}/pull-requests", self.root))
    }

    pub fn pull_request(&self, id: &str) -> Result<Path> {
        check_name("pull request id", id)?;
        Ok(path(format!("{}/pull-requests/{}.json", self.root, encode_name(id))))
    }

    /// The initial snapshot's state ([`SnapshotState`](crate::control::SnapshotState)).
    pub fn snapshot(&self) -> Path {
        path(format!("{}/snapshot.json", self.root))
    }

    pub fn reader(&self) -> Path {
        path(format!("{}/reader.json", self.root))
    }
}

/// Keys of one destination's control objects.
#[derive(Debug, Clone)]
pub struct DestinationKeys {
    root: String,
}

impl DestinationKeys {
    pub fn new(name: &str) -> Result<Self> {
        check_name("destination name", name)?;
        Ok(DestinationKeys { root: format!("destinations/{}", encode_name(name)) })
    }

    pub fn spec(&self) -> Path {
        path(format!("{}/spec.json", self.root))
    }

    pub fn cursor(&self) -> Path {
        path(format!("{}/cursor.json", self.root))
    }

    pub fn lease(&self) -> Path {
        path(format!("{}/lease.json", self.root))
    }

    pub fn dead_letter_prefix(&self) -> Path {
        path(format!("{}/dead-letter", self.root))
    }

    /// One rejected change: named by batch and change, so a retry overwrites it.
    pub fn dead_letter(&self, seq: u64, lsn: strata_common::Lsn, ord: u32) -> Path {
        path(format!("{}/dead-letter/{seq:020}-{:016X}-{ord:010}.json", self.root, lsn.as_u64()))
    }

    /// A message body too large for its queue, sent as a pointer to this
    /// key: named by the change, so sending it again overwrites it.
    pub fn payload(&self, lsn: strata_common::Lsn, ord: u32) -> Path {
        path(format!("{}/payloads/{:016X}-{ord:010}.json", self.root, lsn.as_u64()))
    }
}

pub fn destinations_prefix() -> Path {
    path("destinations".to_owned())
}

pub fn streams_prefix() -> Path {
    path("streams".to_owned())
}

pub fn replays_prefix() -> Path {
    path("replays".to_owned())
}

pub fn replay(id: &str) -> Result<Path> {
    check_name("replay id", id)?;
    Ok(path(format!("replays/{}.json", encode_name(id))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_matches_design() {
        let k = StreamKeys::new("prod").unwrap();
        assert_eq!(k.manifest(42).as_ref(), "streams/prod/log/00000000000000000042.json");
        let t = TableName::new("public", "users").unwrap();
        let ts: Timestamp = "2026-11-20T10:59:59Z".parse().unwrap();
        assert_eq!(k.data_file(&t, ts, 7, 3).as_ref(), "streams/prod/tables/public.users/2026-11-20/10/00000000000000000007-0003.parquet");
        assert_eq!(k.schema(&t, 2).as_ref(), "streams/prod/schemas/public.users/0000000002.json");
        assert_eq!(k.parse_manifest_key(&k.manifest(42)), Some(42));
        assert_eq!(StreamKeys::parse_data_file_seq(&k.data_file(&t, ts, 7, 3)), Some(7));
        assert_eq!(DestinationKeys::new("qa copy").unwrap().cursor().as_ref(), "destinations/qa%20copy/cursor.json");
    }

    #[test]
    fn dotted_names_do_not_collide() {
        let a = TableName::new("a.b", "c").unwrap();
        let b = TableName::new("a", "b.c").unwrap();
        assert_ne!(table_segment(&a), table_segment(&b));
        assert_eq!(parse_table_segment(&table_segment(&a)).unwrap(), a);
        assert_eq!(parse_table_segment(&table_segment(&b)).unwrap(), b);
    }

    #[test]
    fn non_canonical_segments_are_rejected() {
        assert!(decode_name("a%2eb").is_err()); // lower-case hex is not what we write
        assert!(decode_name("a.b").is_err());
        assert!(decode_name("%FF").is_err());
        assert!(decode_name("%4").is_err());
        assert!(check_name("stream name", "").is_err());
        assert!(StreamKeys::new("bad\nname").is_err());
    }

    proptest! {
        #[test]
        fn any_name_round_trips(name in "\\PC{1,40}") {
            let enc = encode_name(&name);
            prop_assert!(Path::parse(&enc).is_ok());
            prop_assert!(!enc.contains(['/', '.']));
            prop_assert_eq!(decode_name(&enc).unwrap(), name);
        }

        #[test]
        fn any_table_round_trips(schema in "[^\u{0}]{1,20}", name in "[^\u{0}]{1,20}") {
            let t = TableName::new(schema, name).unwrap();
            prop_assert_eq!(parse_table_segment(&table_segment(&t)).unwrap(), t);
        }
    }
}
