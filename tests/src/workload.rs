//! Source workloads for fault tests: a deterministic generator and a
//! transaction loop that survives server restarts and counts only what
//! committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::pg::connect;

/// A small deterministic generator (xorshift), so failures replay.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Commits transactions of 1–20 inserts and occasional updates into
/// `events` until `stop`, reconnecting when the server goes away. Counts
/// only transactions whose COMMIT succeeded.
pub async fn workload(url: String, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>, seed: u64) -> Vec<i64> {
    let mut rng = Rng(seed);
    let mut ids = Vec::new();
    let mut next_id = 1i64;
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match &client {
            Some(c) => c,
            None => match connect(&url).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let n = 1 + rng.below(20) as i64;
        let update = !ids.is_empty() && rng.below(4) == 0;
        let sql = if update {
            let id = ids[rng.below(ids.len() as u64) as usize];
            format!(
                "BEGIN; INSERT INTO events SELECT g, 'p' || g FROM generate_series({next_id}, {}) g; UPDATE events SET payload = 'u' WHERE id = {id}; COMMIT",
                next_id + n - 1
            )
        } else {
            format!("BEGIN; INSERT INTO events SELECT g, 'p' || g FROM generate_series({next_id}, {}) g; COMMIT", next_id + n - 1)
        };
        match c.batch_execute(&sql).await {
            Ok(()) => {
                ids.extend(next_id..next_id + n);
                committed.fetch_add(n as u64 + u64::from(update), Ordering::SeqCst);
                next_id += n;
            }
            Err(_) => {
                // The server went away mid-transaction: that transaction
                // did not commit. Its ids are skipped, never reused.
                next_id += n;
                client = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    ids
}
