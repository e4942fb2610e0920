//! Garbage collection of a stream's stage.
//!
//! Two kinds of garbage:
//!
//! 1. **Unreferenced data files**: uploaded but never committed (a reader
//!    died between upload and manifest), or left over from a retried batch.
//!    A file is collected only if (a) no manifest references it, (b) its seq
//!    is at or below the head — a file named for a seq above the head may
//!    belong to a batch being written right now, however long that takes (a
//!    large transaction spills parts for minutes) — and (c) it is older than
//!    the grace period.
//! 2. **Batches past retention** (opt-in): batches whose newest commit is
//!    older than the retention, oldest first, never past the lowest cursor of
//!    a destination on this stream (a destination that has not delivered a
//!    batch keeps it). The low-water mark (`retention.json`) is raised
//!    *before* manifests are deleted, so lookups never probe a seq that is
//!    about to vanish; a manifest is deleted before its files, so no manifest
//!    ever points at a deleted file.

use std::collections::HashSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use strata_common::Timestamp;

use crate::cursor::Cursor;
use crate::error::Result;
use crate::keys::{DestinationKeys, StreamKeys, decode_name, destinations_prefix};
use crate::log::{Retention, StreamLog};
use crate::store::Stage;

/// Manifests fetched at once while collecting references.
const GC_FETCH_CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub grace: Duration,
    pub retention: Option<Duration>,
    pub dry_run: bool,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub stream: String,
    pub head: Option<u64>,
    pub low_before: u64,
    pub low_after: u64,
    pub batches_deleted: u64,
    pub files_deleted: u64,
    pub bytes_deleted: u64,
    /// Unreferenced files kept because they are younger than the grace period.
    pub files_in_grace: u64,
    /// Files kept because their seq is above the head (a batch in progress).
    pub files_in_flight: u64,
    /// Why retention stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_limited_by: Option<String>,
}

/// Lowest cursor seq among destinations reading `stream`, with its name.
async fn slowest_destination(stage: &Stage, stream: &str) -> Result<Option<(String, u64)>> {
    let mut slowest: Option<(String, u64)> = None;
    for dir in stage.list_dirs(&destinations_prefix()).await? {
        let Some(seg) = dir.filename() else { continue };
        let Ok(name) = decode_name(seg) else { continue };
        let Some(c) = stage.get_json::<Cursor>(&DestinationKeys::new(&name)?.cursor()).await? else { continue };
        if c.value.stream == stream && slowest.as_ref().is_none_or(|(_, s)| c.value.seq < *s) {
            slowest = Some((name, c.value.seq));
        }
    }
    Ok(slowest)
}

pub async fn gc_stream(stage: &Stage, stream: &str, opts: &GcOptions) -> Result<GcReport> {
    let log = StreamLog::new(stage, stream)?;
    let keys = log.keys().clone();
    let low = log.low().await?;
    let head = log.head(None).await?;
    let mut report = GcReport { stream: stream.to_owned(), head, low_before: low, low_after: low, ..Default::default() };

    if let (Some(retention), Some(head)) = (opts.retention, head) {
        let cutoff = opts.now.saturating_sub(retention);
        let slowest = slowest_destination(stage, stream).await?;
        let mut new_low = low;
        // Never delete the head: it tells readers where to resume.
        while new_low < head {
            if let Some((name, seq)) = &slowest
                && new_low > *seq
            {
                report.retention_limited_by = Some(format!("destination {name:?} has delivered up to seq {seq}"));
                break;
            }
            if log.read(new_low).await?.commit_ts.max >= cutoff {
                break;
            }
            new_low += 1;
        }
        if new_low > low && !opts.dry_run {
            let r = Retention { format: crate::FORMAT_VERSION, low: new_low, updated_at: opts.now };
            let current = stage.get_json::<Retention>(&keys.retention()).await?;
            stage.put_json_if(&keys.retention(), &r, current.as_ref().map(|c| &c.version)).await?;
            for seq in low..new_low {
                let m = log.read_opt(seq).await?;
                stage.delete(&keys.manifest(seq)).await?;
                for f in m.iter().flat_map(|m| &m.files) {
                    stage.delete(&f.key()?).await?;
                    report.files_deleted += 1;
                    report.bytes_deleted += f.bytes;
                }
            }
        }
        report.batches_deleted = new_low - low;
        report.low_after = new_low;
    }

    let Some(head) = head else {
        return Ok(report);
    };
    let referenced: HashSet<String> = futures::stream::iter(report.low_after..=head)
        .map(|seq| {
            let log = log.clone();
            async move { log.read_opt(seq).await }
        })
        .buffer_unordered(GC_FETCH_CONCURRENCY)
        .try_fold(HashSet::new(), |mut acc, m| async move {
            acc.extend(m.into_iter().flat_map(|m| m.files.into_iter().map(|f| f.path)));
            Ok(acc)
        })
        .await?;
    let grace_cutoff = opts.now.saturating_sub(opts.grace);
    for obj in stage.list(&keys.tables_prefix()).await? {
        if referenced.contains(obj.location.as_ref()) {
            continue;
        }
        match StreamKeys::parse_data_file_seq(&obj.location) {
            Some(seq) if seq > head => {
                report.files_in_flight += 1;
                continue;
            }
            _ => {}
        }
        if obj.last_modified.timestamp_micros() > grace_cutoff.micros() {
            report.files_in_grace += 1;
            continue;
        }
        if !opts.dry_run {
            stage.delete(&obj.location).await?;
        }
        report.files_deleted += 1;
        report.bytes_deleted += obj.size;
    }
    Ok(report)
}
