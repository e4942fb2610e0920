//! Writes envelopes as JSON Lines to standard output.

use std::io::Write;

use super::retry::classify;
use crate::destinations::{Batch, DestError, Destination};
use crate::envelope::envelope;

pub struct StdoutSink;

impl StdoutSink {
    pub fn new() -> StdoutSink {
        StdoutSink
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink::new()
    }
}

/// The batch's envelopes, one per line, in commit order across tables.
pub fn lines(batch: &Batch) -> Vec<u8> {
    let mut changes: Vec<_> = batch.tables.iter().flat_map(|t| t.changes.iter().map(move |c| (&t.schema, c))).collect();
    changes.sort_by_key(|(_, c)| (c.lsn, c.ord));
    let mut out = Vec::new();
    for (schema, change) in changes {
        out.extend_from_slice(envelope(&batch.stream, schema, change, batch.staged_at).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

impl Destination for StdoutSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), DestError> {
        let bytes = lines(batch);
        // Blocking writes under the process-wide stdout lock, so the lines
        // of two stdout destinations' batches never interleave.
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()
        })
        .await
        .map_err(|e| DestError::Transient(format!("stdout writer task: {e}")))?
        .map_err(|e| classify(&e))
    }
}
