//! The webhook destination: change envelopes POSTed as JSON arrays.
//!
//! Each staged batch is sent in commit order, in requests of at most
//! `batch_size` envelopes. Every request carries
//! - `Idempotency-Key: {first id}..{last id}`: the same for every delivery
//!   of the same changes, so a receiver drops a redelivery;
//! - `X-Strata-Signature: sha256={hex}`, an HMAC-SHA256 of the exact body
//!   bytes with the configured secret, when one is set.
//!
//! A 2xx response makes the request durable. 5xx, 429, timeouts and
//! connection errors are retried with backoff, no sooner than a
//! `Retry-After` the receiver sent; any other 4xx pauses the destination
//! with the status and the start of the response body. Delivery is
//! at-least-once: a batch interrupted part-way is sent again whole. With a
//! Debezium envelope, the array holds Debezium records' values.

pub mod config;
pub mod retry;
pub mod sink;

pub use sink::WebhookSink;
