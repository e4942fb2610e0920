//! The look-back window after a restart, rebuilt from the stage.
//!
//! A pull with `look_back` records in each manifest the *high-water*
//! position `(to, last_key)`: the greatest `(watermark, key)` staged so
//! far, which a look-back page below it does not lower. So `to` never
//! decreases along the log, and every row of a batch has a watermark at or
//! below its `to`. A restarted pull's first round starts at
//! `L = to(head) - look_back`; the rows it may read again are those staged
//! with a watermark at or after `L`, all of them in the batches from the
//! head back to the last one whose `to` is at or after `L`. Those batches
//! are read back (newest first, so a key's newest staged version wins) and
//! their rows remembered in the window, so the round stages none of them
//! again unless it changed. Memory is the window's, as in a running pull.
//!
//! Watermarks are compared by PostgreSQL, in their own types: the stage
//! keeps them as text.

use anyhow::{Context, Result};
use strata_common::Value;
use strata_stager::log::StreamLog;
use strata_stager::schema::TableSchema;
use tokio_postgres::Client;

use super::query::Typed;
use super::window::{Window, content_hash};

/// The window's key of a row, and the hash of its content.
pub fn identity(schema: &TableSchema, values: &[Value], deleted: bool) -> (Vec<u8>, u64) {
    let key: Vec<&Value> = schema.columns.iter().zip(values).filter(|(c, _)| c.key).map(|(_, v)| v).collect();
    (format!("{key:?}").into_bytes(), content_hash(format!("{deleted}{values:?}").as_bytes()))
}

/// Whether position `a` is after position `b` (both `(watermark, key…)`).
pub async fn after(client: &Client, a: &[Typed], b: &[Typed]) -> Result<bool> {
    let row = |p: &[Typed]| p.iter().map(Typed::sql).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT ({}) > ({})", row(a), row(b));
    Ok(client.query_one(&sql, &[]).await.context("comparing two pull positions")?.get(0))
}

/// Remembers in `window` the rows of the batches a look-back round from
/// `high` may read again (see the module docs); returns how many.
pub async fn rebuild(client: &Client, log: &StreamLog, schema: &TableSchema, high: &Typed, look_back: std::time::Duration, window: &mut Window) -> Result<u64> {
    let Some(head) = log.head(None).await? else { return Ok(0) };
    let low = log.low().await?;
    let mut remembered = 0;
    for seq in (low..=head).rev() {
        let m = log.read(seq).await?;
        let Some(w) = &m.watermark else { break };
        let to = Typed { text: w.to.clone(), pg_type: high.pg_type.clone() };
        let sql = format!("SELECT {} >= {} - CAST('{} microseconds' AS interval)", to.sql(), high.sql(), look_back.as_micros());
        let inside: bool = client.query_one(&sql, &[]).await.context("placing a batch against the look-back window")?.get(0);
        if !inside {
            break;
        }
        // Rows staged under another schema version differ from what the
        // query returns now: they are staged again anyway.
        for f in m.files.iter().filter(|f| f.schema_version == schema.version) {
            let file = log.read_file(f).await.with_context(|| format!("reading back batch {seq} of stream {:?}", log.keys().stream()))?;
            for c in file.changes {
                let deleted = c.after.is_none();
                let Some(values) = c.after.or(c.before) else { continue };
                let (key, content) = identity(schema, &values, deleted);
                window.remember(key, content);
                remembered += 1;
            }
        }
    }
    Ok(remembered)
}
