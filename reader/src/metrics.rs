//! The reader's metrics (`/metrics`), all labelled with the stream.

use std::time::Duration;

use strata_common::telemetry::{Registry, Value};
use strata_common::{Lsn, TableName, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::decode::TextFallbacks;

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
    slot_retained: Value,
    slot_confirmed_lag: Value,
    slot_safe: Value,
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
            slot_retained: registry.gauge(
                "strata_reader_slot_retained_wal_bytes",
                "WAL the source keeps for the stream's replication slot (from its restart_lsn): disk the source cannot free.",
                &l,
            ),
            slot_confirmed_lag: registry.gauge(
                "strata_reader_slot_confirmed_lag_bytes",
                "WAL written on the source beyond the position the slot has confirmed (durable in the stage).",
                &l,
            ),
            slot_safe: registry.gauge(
                "strata_reader_slot_safe_wal_bytes",
                "WAL that can still be written before the slot loses WAL it needs (max_slot_wal_keep_size); NaN when unlimited.",
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

    /// Samples the slot's figures from `pg_replication_slots` every `every`
    /// over a connection of its own, until `token` is cancelled: what a
    /// person alerts on before the source's disk fills, whether or not the
    /// stream is up. A failed sample is retried at the next period.
    pub async fn watch_slot(self, url: String, slot: String, every: Duration, token: CancellationToken) {
        let mut client: Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> = None;
        loop {
            if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                client = strata_common::pgconn::connect(&url, "source (slot figures)")
                    .await
                    .inspect_err(|e| tracing::debug!(error = %e, "slot figures: could not connect"))
                    .ok();
            }
            if let Some((c, _)) = &client {
                match self.sample_slot(c, &slot).await {
                    Ok(()) => {}
                    Err(e) => tracing::debug!(error = %e, slot, "slot figures: query failed"),
                }
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        if let Some((_, task)) = client {
            task.abort();
        }
    }

    async fn sample_slot(&self, client: &tokio_postgres::Client, slot: &str) -> Result<(), tokio_postgres::Error> {
        let row = client
            .query_opt(
                "SELECT (pg_current_wal_lsn() - restart_lsn)::float8, (pg_current_wal_lsn() - confirmed_flush_lsn)::float8, safe_wal_size::float8 \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        // No slot yet (the snapshot runs first): nothing retained.
        let (retained, confirmed, safe) = row.map_or((Some(0.0), Some(0.0), None), |r| (r.get(0), r.get(1), r.get(2)));
        self.slot_retained.set(retained.unwrap_or(0.0));
        self.slot_confirmed_lag.set(confirmed.unwrap_or(0.0));
        self.slot_safe.set(safe.unwrap_or(f64::NAN));
        Ok(())
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
