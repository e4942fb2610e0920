//! Settings of an SQS destination, as stored in its spec.
//!
//! Credentials never appear here: the writer uses the standard AWS chain
//! (environment, profile, web identity, container and instance roles).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_common::TableName;
use strata_common::config::is_queue_url;

use crate::envelope::EnvelopeFormat;

/// Entries per `SendMessageBatch` unless set: SQS's own maximum.
pub const DEFAULT_BATCH_SIZE: usize = 10;
/// `SendMessageBatch` calls in flight at once unless set. SQS scales with
/// concurrent producers; 8 keeps one writer's share of a 2-core host busy
/// without making a destination that is down hold many connections.
pub const DEFAULT_IN_FLIGHT: usize = 8;
/// The largest message body sent as is, unless set (256 KiB): the limit of
/// every SQS queue created before 2025 and the default of many still. A
/// queue whose `MaximumMessageSize` is lower lowers it further.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
/// Seconds one SQS call may take unless set.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// SQS's hard limits.
pub const SQS_MAX_BATCH_ENTRIES: usize = 10;
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// What happens to a change whose envelope is larger than the queue takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// The change is rejected like any change the destination refuses: the
    /// destination pauses with the change named in `status`, or with
    /// `on_error = "skip"` the change goes to the dead-letter folder.
    #[default]
    Reject,
    /// The envelope is written to the stage under
    /// `destinations/{name}/payloads/` and a small pointer message is sent
    /// in its place (the claim-check pattern).
    Stage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSpec {
    /// The queue URL (`https://sqs.{region}.amazonaws.com/{account}/{name}`);
    /// a name ending in `.fifo` is a FIFO queue.
    pub queue_url: String,
    /// Per-table queues: `"schema.table"` → queue URL; other tables go to
    /// `queue_url`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, String>,
    /// The AWS region; else the environment's, else the queue URL's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A custom endpoint (an emulator, a VPC endpoint); else
    /// `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL`, else AWS's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub oversize: Oversize,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// strata's envelope (the default), or Debezium's records (the key and
    /// the change id as message attributes).
    #[serde(default, skip_serializing_if = "EnvelopeFormat::is_strata")]
    pub envelope: EnvelopeFormat,
}

fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_in_flight() -> usize {
    DEFAULT_IN_FLIGHT
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// Whether a queue URL names a FIFO queue.
pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.trim_end_matches('/').ends_with(".fifo")
}

impl SqsSpec {
    pub fn new(queue_url: String) -> SqsSpec {
        SqsSpec {
            queue_url,
            routes: BTreeMap::new(),
            region: None,
            endpoint: None,
            batch_size: DEFAULT_BATCH_SIZE,
            in_flight: DEFAULT_IN_FLIGHT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            oversize: Oversize::Reject,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            envelope: EnvelopeFormat::Strata,
        }
    }

    /// One line for `destination list`: queue URLs name no secret.
    pub fn describe(&self) -> String {
        format!(
            "sqs {}{} ({} per call, {} in flight, oversize {}{})",
            self.queue_url,
            if self.routes.is_empty() { String::new() } else { format!(" + {} routed tables", self.routes.len()) },
            self.batch_size,
            self.in_flight,
            format!("{:?}", self.oversize).to_lowercase(),
            self.envelope.note()
        )
    }

    /// Checks the spec without I/O, naming the failing field.
    pub fn validate(&self) -> Result<(), String> {
        if !is_queue_url(&self.queue_url) {
            return Err(format!("sqs queue_url {:?} must be a queue URL like https://sqs.us-east-1.amazonaws.com/123456789012/orders", self.queue_url));
        }
        for (table, url) in &self.routes {
            TableName::parse(table).map_err(|e| format!("sqs routes: table {table:?}: {e}"))?;
            if !is_queue_url(url) {
                return Err(format!("sqs routes: queue URL {url:?} of {table} is not a queue URL"));
            }
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(format!("sqs endpoint {e:?} must start with http:// or https://"));
        }
        if let Some(r) = &self.region
            && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(format!("sqs region {r:?} is not a region name like us-east-1"));
        }
        if !(1..=SQS_MAX_BATCH_ENTRIES).contains(&self.batch_size) {
            return Err(format!("sqs batch_size {} must be between 1 and {SQS_MAX_BATCH_ENTRIES}", self.batch_size));
        }
        if !(1..=64).contains(&self.in_flight) {
            return Err(format!("sqs in_flight {} must be between 1 and 64", self.in_flight));
        }
        if !(1024..=SQS_MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(format!("sqs max_message_bytes {} must be between 1024 and {SQS_MAX_MESSAGE_BYTES}", self.max_message_bytes));
        }
        if !(1..=600).contains(&self.timeout_secs) {
            return Err(format!("sqs timeout_secs {} must be between 1 and 600", self.timeout_secs));
        }
        if self.oversize == Oversize::Stage && !self.envelope.is_strata() {
            return Err(format!(
                "sqs oversize stage sends a strata pointer message in place of a large change, which a {} consumer cannot read: use oversize reject with envelope {}",
                self.envelope.name(),
                self.envelope.name()
            ));
        }
        Ok(())
    }

    /// Every queue this destination sends to.
    pub fn queues(&self) -> Vec<&str> {
        let mut q: Vec<&str> = std::iter::once(self.queue_url.as_str()).chain(self.routes.values().map(String::as_str)).collect();
        q.sort_unstable();
        q.dedup();
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked_field_by_field() {
        let ok = SqsSpec::new("https://sqs.eu-west-1.amazonaws.com/1/orders.fifo".into());
        assert!(ok.validate().is_ok());
        assert!(is_fifo(&ok.queue_url));
        assert!(!is_fifo("http://127.0.0.1:4566/1/q"));

        let mut s = ok.clone();
        s.queue_url = "orders".into();
        assert!(s.validate().unwrap_err().contains("queue_url"));
        let mut s = ok.clone();
        s.batch_size = 11;
        assert!(s.validate().unwrap_err().contains("batch_size"));
        let mut s = ok.clone();
        s.max_message_bytes = 2_000_000;
        assert!(s.validate().unwrap_err().contains("max_message_bytes"));
        let mut s = ok.clone();
        s.routes.insert("not a.table.name".into(), ok.queue_url.clone());
        assert!(s.validate().unwrap_err().contains("routes"));
        let mut s = ok;
        s.routes.insert("public.users".into(), "https://sqs.eu-west-1.amazonaws.com/1/users".into());
        assert!(s.validate().is_ok());
        assert_eq!(s.queues().len(), 2);
    }
}
