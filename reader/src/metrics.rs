//! The reader's metrics (`/metrics`), all labelled with the stream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_common::pgtext::{TextError, parse_lossless};
use strata_common::telemetry::{Registry, Value};
use strata_common::{Lsn, TableName, Timestamp};
use strata_stager::schema::ColumnSchema;
use tokio_util::sync::CancellationToken;

/// Default address of the reader's `/metrics`, `/healthz` and `/readyz`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

#[derive(Clone)]
pub struct ReaderMetrics {
    pub changes: Value,
    pub transactions: Value,
    pub batches: Value,
    pub bytes: Value,
    pub reconnects: Value,
    lag_bytes: Value,
    lag_seconds: Value,
    pub fallbacks: TextFallbacks,
    registry: Registry,
    stream: String,
}

impl ReaderMetrics {
    pub fn new(registry: &Registry, stream: &str) -> Self {
        let l = [("stream", stream)];
        ReaderMetrics {
            changes: registry.counter("strata_reader_changes_total", "Row changes staged.", &l),
            transactions: registry.counter("strata_reader_transactions_total", "Transactions staged.", &l),
            batches: registry.counter("strata_reader_batches_total", "Batches committed to the stage.", &l),
            bytes: registry.counter("strata_reader_staged_bytes_total", "Bytes of Parquet data files committed.", &l),
            reconnects: registry.counter("strata_reader_reconnects_total", "Reconnections to the source after a transient error.", &l),
            lag_bytes: registry.gauge("strata_reader_source_lag_bytes", "WAL the server has sent beyond the last staged batch.", &l),
            lag_seconds: registry.gauge(
                "strata_reader_source_lag_seconds",
                "Age of the last staged commit while the server has sent more; 0 when caught up.",
                &l,
            ),
            fallbacks: TextFallbacks::new(registry, stream),
            registry: registry.clone(),
            stream: stream.to_owned(),
        }
    }

    /// Rows and COPY bytes of one table's snapshot.
    pub fn snapshot_table(&self, table: &TableName) -> (Value, Value) {
        let name = table.to_string();
        let l = [("stream", self.stream.as_str()), ("table", name.as_str())];
        (
            self.registry.counter("strata_reader_snapshot_rows_total", "Rows copied by the snapshot, per table.", &l),
            self.registry.counter("strata_reader_snapshot_bytes_total", "Bytes of COPY text read by the snapshot, per table.", &l),
        )
    }

    /// Logs, every `every` until `token` is cancelled, one line with what
    /// was staged since the last one and the current lag.
    pub async fn log_summaries(self, every: Duration, token: CancellationToken) {
        let mut last = (self.changes.count(), self.transactions.count(), self.batches.count());
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = (self.changes.count(), self.transactions.count(), self.batches.count());
            tracing::info!(
                changes = now.0.saturating_sub(last.0),
                transactions = now.1.saturating_sub(last.1),
                batches = now.2.saturating_sub(last.2),
                lag_bytes = self.lag_bytes.gauge(),
                lag_seconds = self.lag_seconds.gauge(),
                period_seconds = every.as_secs(),
                "stream summary"
            );
            last = now;
        }
    }

    /// Updates the lag gauges from the server's position, the durable
    /// position and the commit time of the last staged transaction.
    pub fn lag(&self, server: Lsn, durable: Lsn, last_commit: Option<Timestamp>) {
        let behind = server.as_u64().saturating_sub(durable.as_u64());
        self.lag_bytes.set(behind as f64);
        let seconds = match last_commit {
            Some(t) if behind > 0 => (Timestamp::now().0.saturating_sub(t.0)).max(0) as f64 / 1e6,
            _ => 0.0,
        };
        self.lag_seconds.set(seconds);
    }
}

/// Values staged as their exact text (`_strata_raw`) because their typed
/// column cannot hold them. Each is counted in
/// `strata_reader_values_staged_as_text_total{table,column}`, and the first
/// of each table and column is logged with the reason: a legal value never
/// stops the stream, but nobody should be surprised by a NULL typed cell.
#[derive(Clone)]
pub struct TextFallbacks {
    registry: Registry,
    stream: String,
    logged: Arc<Mutex<HashSet<(TableName, String)>>>,
}

impl TextFallbacks {
    pub fn new(registry: &Registry, stream: &str) -> Self {
        TextFallbacks { registry: registry.clone(), stream: stream.to_owned(), logged: Arc::default() }
    }

    /// Parses a value of `column` of `table`, keeping what does not parse as
    /// [`strata_common::Value::Raw`], counted and reported.
    pub fn parse(&self, table: &TableName, column: &ColumnSchema, text: &str) -> strata_common::Value {
        let (value, error) = parse_lossless(&column.column_type, text);
        if let Some(e) = error {
            self.record(table, column, &e);
        }
        value
    }

    fn record(&self, table: &TableName, column: &ColumnSchema, error: &TextError) {
        let name = table.to_string();
        let l = [("stream", self.stream.as_str()), ("table", name.as_str()), ("column", column.name.as_str())];
        self.registry
            .counter(
                "strata_reader_values_staged_as_text_total",
                "Values staged as exact text in _strata_raw because their typed column cannot hold them.",
                &l,
            )
            .inc_by(1);
        let first = self.logged.lock().unwrap_or_else(|p| p.into_inner()).insert((table.clone(), column.name.clone()));
        if first {
            tracing::warn!(
                table = %table,
                column = %column.name,
                pg_type = %column.pg_type,
                reason = %error.reason,
                "a value its typed column cannot hold is staged as exact text in _strata_raw; later ones of this column are only counted"
            );
        }
    }
}
