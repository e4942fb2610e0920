//! The SQS destination: change envelopes as SQS messages, standard or FIFO.
//!
//! - `SendMessageBatch` of up to 10 entries and the queue's byte limit,
//!   `in_flight` calls at once (see [`sink`] for the lanes that keep a FIFO
//!   queue's per-key order while calls overlap).
//! - FIFO: `MessageGroupId` is the table and primary key, so each key's
//!   changes are consumed in commit order; `MessageDeduplicationId` is the
//!   change id, so SQS itself drops a redelivery within five minutes.
//! - Standard queues are at-least-once with no order, like SQS itself:
//!   consumers deduplicate on the envelope's `id`.
//! - A message larger than the queue takes is a rejected change (the
//!   destination pauses, or with `on_error = "skip"` the change is
//!   dead-lettered), or with `oversize = "stage"` it is written to the
//!   stage and a pointer message is sent instead.
//! - Optional `routes` send chosen tables to queues of their own.
//! - With a Debezium envelope, each Debezium record is a message (a key
//!   change: two, the second's id suffixed `#1`), with attributes
//!   `strata-id` (the change id) and `debezium-key` (the record's key).
//!
//! A batch is durable once SQS has accepted every message of it; only then
//! does the cursor move.

pub mod config;
pub mod message;
pub mod retry;
pub mod sink;

pub use sink::SqsSink;
