//! Writes envelopes (or Debezium records) as JSON Lines to standard output.

use std::io::Write;

use super::retry::classify;
use crate::destinations::{Batch, DestError, Destination};
use crate::envelope::{EnvelopeFormat, bodies};

pub struct StdoutSink {
    format: EnvelopeFormat,
}

impl StdoutSink {
    pub fn new(format: EnvelopeFormat) -> StdoutSink {
        StdoutSink { format }
    }
}

/// The batch's envelopes in `format`, one per line, in commit order across
/// tables. A Debezium record's line is its value; its key is not printed.
pub fn lines(batch: &Batch, format: EnvelopeFormat) -> Vec<u8> {
    let mut changes: Vec<_> = batch.tables.iter().flat_map(|t| t.changes.iter().map(move |c| (&t.schema, c))).collect();
    changes.sort_by_key(|(_, c)| (c.lsn, c.ord));
    let batched = batch.batched(format);
    let mut out = Vec::new();
    for (schema, change) in changes {
        for body in bodies(&batched, schema, change) {
            out.extend_from_slice(body.text.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

impl Destination for StdoutSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), DestError> {
        let bytes = lines(batch, self.format);
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
