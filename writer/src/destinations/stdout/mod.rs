//! The stdout destination: every change as one line of JSON (the
//! [envelope](crate::envelope)) on the writer's standard output, for piping
//! into other tools and for debugging. Logs go to standard error, so the
//! output holds envelopes only. With a Debezium envelope, each line is a
//! Debezium record's value.
//!
//! Delivery is at-least-once: a batch is durable once its lines are flushed,
//! and a writer killed after the flush but before its cursor moved prints
//! the batch again on restart. Consumers deduplicate on the envelope's `id`.
//! Within a batch, lines follow commit order across tables.

pub mod config;
pub mod retry;
pub mod sink;

pub use sink::StdoutSink;
