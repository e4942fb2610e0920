//! The pending batch: changes grouped per table and schema version, in
//! commit order, with the size figures that decide when to cut or spill.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use strata_common::{Change, TableName, Value};
use strata_stager::log::TableBatch;
use strata_stager::schema::TableSchema;

#[derive(Default)]
pub struct Pending {
    groups: Vec<TableBatch>,
    index: HashMap<(TableName, u32), usize>,
    pub rows: u64,
    /// Approximate in-memory size of the buffered changes.
    pub bytes: u64,
    /// When the oldest buffered change arrived.
    pub since: Option<Instant>,
}

/// Heap bytes a value holds beyond its own slot.
fn value_heap(v: &Value) -> u64 {
    match v {
        Value::Text(s) | Value::Json(s) => s.capacity() as u64,
        Value::Bytes(b) => b.capacity() as u64,
        Value::Array(items) => (items.capacity() * std::mem::size_of::<Value>()) as u64 + items.iter().map(value_heap).sum::<u64>(),
        _ => 0,
    }
}

/// Memory a buffered change occupies: what `max_bytes` counts, so that the
/// spill threshold bounds real memory, not an estimate of the encoded size.
pub fn change_size(c: &Change) -> u64 {
    let row = |r: &Option<Vec<Value>>| r.as_ref().map_or(0, |r| (r.capacity() * std::mem::size_of::<Value>()) as u64 + r.iter().map(value_heap).sum::<u64>());
    std::mem::size_of::<Change>() as u64 + row(&c.after) + row(&c.before)
}

impl Pending {
    pub fn push(&mut self, schema: &Arc<TableSchema>, change: Change) {
        self.rows += 1;
        self.bytes += change_size(&change);
        self.since.get_or_insert_with(Instant::now);
        let key = (schema.table.clone(), schema.version);
        let i = *self.index.entry(key).or_insert_with(|| {
            self.groups.push(TableBatch { schema: schema.clone(), changes: Vec::new() });
            self.groups.len() - 1
        });
        self.groups[i].changes.push(change);
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes everything buffered, leaving this empty.
    pub fn take(&mut self) -> Vec<TableBatch> {
        self.index.clear();
        self.rows = 0;
        self.bytes = 0;
        self.since = None;
        std::mem::take(&mut self.groups)
    }
}
