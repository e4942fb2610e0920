//! `bigtx`: one source transaction of `--changes` inserts delivered into
//! Postgres by strata-reader and strata-writer (each its own process, peak
//! RSS reported: the goal is at most 256 MiB each, whatever the
//! transaction's size) against native logical replication catching up the
//! same transaction.

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::e2e::end_to_end;
use super::{Args, record, today};

pub async fn run(args: &Args) -> Result<()> {
    let rows = args.changes;
    let workload = async |src: &Client| {
        eprintln!("workload: {rows} inserts in one transaction");
        src.batch_execute(&format!("INSERT INTO bench SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, {rows}) g"))
            .await
            .context("the workload's transaction")
    };
    let m = end_to_end("bigtx", rows, workload).await?;
    let line = format!(
        "| {} | one big transaction into Postgres | {rows} inserts in one transaction, {} batches | {} | {} | **{:.2}×** |",
        today(),
        m.batches,
        m.strata(rows, " rows/s"),
        m.native(rows, " rows/s"),
        m.native_secs / m.strata_secs
    );
    record(args.record.as_ref(), "one big transaction into Postgres", &line)
}
