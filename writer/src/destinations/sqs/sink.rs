//! Sends change envelopes to SQS with `SendMessageBatch`, several calls in
//! flight, in lanes.
//!
//! A batch's messages are split over `in_flight` lanes; each lane sends its
//! messages in order, one call at a time, and the lanes run at once.
//!
//! - FIFO queue: a message's lane is chosen by its group (table + key), so
//!   all of a key's changes are in one lane, in commit order. A call carries
//!   at most one message of a group: if SQS failed an entry while accepting
//!   a later one of the same key, the key's order would be lost for good.
//! - Standard queue: consecutive runs of `batch_size` messages go to the
//!   lanes in turn (SQS does not order a standard queue anyway).
//! - An entry SQS fails with `SenderFault = false` goes back into its
//!   lane, before everything of its group that follows it, and is sent
//!   again alone with backoff; its siblings, already enqueued, are not.
//!   A whole call that fails transiently (throttling, a timeout) is sent
//!   again the same way. A lane that keeps failing gives up with a
//!   transient error, and the worker retries the batch later.
//! - What SQS accepted is remembered for the batch, so a retry of the
//!   same batch by this instance sends only the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use sha2::{Digest, Sha256};
use strata_common::TableName;
use strata_stager::Stage;
use strata_stager::keys::DestinationKeys;

use super::config::{Oversize, SQS_MAX_MESSAGE_BYTES, SqsSpec};
use super::message::{Offloaded, dedup_id, group_id, pointer};
use super::retry::{classify, is_transient_code};
use crate::destinations::{Batch, DestError, Destination, Reject};
use crate::envelope::{EnvelopeFormat, bodies, change_id, envelope};
use strata_common::backoff::Backoff;

/// Sends of one entry, or of one whole call, before a lane gives up and
/// the worker retries the batch (with its own, longer backoff).
const MAX_ATTEMPTS: u32 = 8;
/// Retries of a failed call or entry: from 25–50 ms up to 5 s.
const RETRY: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
/// How far into a FIFO lane a call looks for messages of other groups
/// when the next ones share a group: bounds the scan on a hot key.
const FIFO_WINDOW: usize = 256;

struct Queue {
    url: String,
    fifo: bool,
    /// The smaller of the configured limit and the queue's own.
    max_bytes: usize,
}

/// One message to send.
struct Message {
    /// Position in the batch, in commit order.
    pos: usize,
    /// Unique per message: the change id, `#1` appended for the second
    /// Debezium record of a key change (its create).
    id: String,
    /// The change's id, which a refusal is reported under.
    change: String,
    queue: usize,
    body: String,
    /// With a Debezium envelope: `strata-id` (the change id) and
    /// `debezium-key` (the record's key, when it has one).
    attributes: Vec<(&'static str, String)>,
    /// FIFO only.
    group: Option<String>,
    attempts: u32,
}

/// What SQS holds and refused of the batch (seq range) delivered last.
#[derive(Default)]
struct Progress {
    seqs: (u64, u64),
    sent: HashSet<String>,
    refused: HashMap<String, String>,
}

/// What one lane did.
#[derive(Default)]
struct LaneOutcome {
    sent: Vec<String>,
    refused: Vec<(String, String)>,
    error: Option<DestError>,
}

pub struct SqsSink {
    client: Client,
    stage: Stage,
    keys: DestinationKeys,
    queues: Vec<Queue>,
    default_queue: usize,
    routes: HashMap<TableName, usize>,
    batch_size: usize,
    in_flight: usize,
    oversize: Oversize,
    envelope: EnvelopeFormat,
    last: Progress,
}

impl SqsSink {
    /// Loads the AWS configuration (the standard credential chain; the
    /// region from the spec, the environment or the queue URL), then
    /// connects.
    pub async fn connect(name: &str, spec: &SqsSpec, stage: &Stage) -> Result<SqsSink, DestError> {
        // The spec's endpoint, if any, is set by `with_sdk_config`.
        let sdk = strata_common::wakeup::sqs_sdk_config(spec.region.as_deref(), None, &spec.queue_url)
            .await
            .map_err(|e| DestError::Permanent(format!("sqs: {e}")))?;
        SqsSink::with_sdk_config(name, spec, stage, &sdk).await
    }

    /// Connects with a given AWS configuration (credentials, region,
    /// endpoint), reading each queue's attributes: whether it is FIFO and
    /// the largest message it takes. A queue that does not exist is a
    /// permanent error.
    pub async fn with_sdk_config(name: &str, spec: &SqsSpec, stage: &Stage, sdk: &aws_config::SdkConfig) -> Result<SqsSink, DestError> {
        // Retries are ours (per entry, per call), with the calls' timeout.
        let mut conf = aws_sdk_sqs::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(spec.timeout_secs)).build());
        if let Some(endpoint) = &spec.endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        let client = Client::from_conf(conf.build());
        let keys = DestinationKeys::new(name).map_err(|e| DestError::Permanent(e.to_string()))?;
        let mut queues = Vec::new();
        for url in spec.queues() {
            let attrs = client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::FifoQueue)
                .attribute_names(QueueAttributeName::MaximumMessageSize)
                .send()
                .await
                .map_err(|e| classify(&format!("sqs: reading the attributes of queue {url}"), &e))?;
            let attr = |n: QueueAttributeName| attrs.attributes().and_then(|a| a.get(&n)).map(String::as_str);
            let fifo = attr(QueueAttributeName::FifoQueue) == Some("true");
            let queue_max = attr(QueueAttributeName::MaximumMessageSize).and_then(|v| v.parse().ok()).unwrap_or(SQS_MAX_MESSAGE_BYTES);
            queues.push(Queue { url: url.to_owned(), fifo, max_bytes: spec.max_message_bytes.min(queue_max) });
        }
        let index = |url: &str| queues.iter().position(|q| q.url == url).unwrap_or_else(|| unreachable!("every route's queue was read"));
        let default_queue = index(&spec.queue_url);
        let mut routes = HashMap::new();
        for (table, url) in &spec.routes {
            let t = TableName::parse(table).map_err(|e| DestError::Permanent(format!("sqs routes: table {table:?}: {e}")))?;
            routes.insert(t, index(url));
        }
        Ok(SqsSink {
            client,
            stage: stage.clone(),
            keys,
            queues,
            default_queue,
            routes,
            batch_size: spec.batch_size,
            in_flight: spec.in_flight,
            oversize: spec.oversize,
            envelope: spec.envelope,
            last: Progress::default(),
        })
    }

    fn queue_of(&self, table: &TableName) -> usize {
        self.routes.get(table).copied().unwrap_or(self.default_queue)
    }

    /// The batch's messages in commit order, without those SQS already
    /// holds; an oversized envelope is offloaded to the stage, or reported
    /// in `oversized` to be rejected.
    async fn messages(&self, batch: &Batch, oversized: &mut Vec<Reject>) -> Result<Vec<Message>, DestError> {
        let mut changes: Vec<(usize, usize)> = batch.tables.iter().enumerate().flat_map(|(ti, t)| (0..t.changes.len()).map(move |ci| (ti, ci))).collect();
        changes.sort_by_key(|&(ti, ci)| {
            let c = &batch.tables[ti].changes[ci];
            (c.lsn, c.ord)
        });
        let mut out = Vec::with_capacity(changes.len());
        let batched = batch.batched(self.envelope);
        for (ti, ci) in changes {
            let schema = &batch.tables[ti].schema;
            let change = &batch.tables[ti].changes[ci];
            let id = change_id(&batch.stream, change);
            let queue = self.queue_of(&schema.table);
            let group = self.queues[queue].fifo.then(|| group_id(schema, change));
            if !self.envelope.is_strata() {
                let max = self.queues[queue].max_bytes;
                for (i, body) in bodies(&batched, schema, change).into_iter().enumerate() {
                    let message_id = if i == 0 { id.clone() } else { format!("{id}#{i}") };
                    if self.last.sent.contains(&message_id) {
                        continue;
                    }
                    let mut attributes = vec![("strata-id", id.clone())];
                    attributes.extend(body.key.map(|k| ("debezium-key", k)));
                    // SQS counts attribute names, types and values in a message's size.
                    let size = body.text.len() + attributes.iter().map(|(n, v)| n.len() + "String".len() + v.len()).sum::<usize>();
                    if size > max {
                        let error = format!("change {id} of {}: its Debezium record is {size} bytes with its attributes, over the queue's {max}", schema.table);
                        oversized.push(Reject { table: ti, change: ci, error });
                        break;
                    }
                    let pos = out.len();
                    out.push(Message { pos, id: message_id, change: id.clone(), queue, body: body.text, attributes, group: group.clone(), attempts: 0 });
                }
                continue;
            }
            if self.last.sent.contains(&id) {
                continue;
            }
            let env = envelope(&batch.stream, schema, change, batch.staged_at);
            let mut body = env.to_string();
            let max = self.queues[queue].max_bytes;
            if body.len() > max {
                match self.oversize {
                    Oversize::Reject => {
                        oversized.push(Reject {
                            table: ti,
                            change: ci,
                            error: format!("change {id} of {}: its envelope is {} bytes, over the queue's {max}", schema.table, body.len()),
                        });
                        continue;
                    }
                    Oversize::Stage => {
                        let offloaded = self.offload(change.lsn, change.ord, body).await?;
                        body = pointer(&env, &offloaded).to_string();
                        if body.len() > max {
                            return Err(DestError::Permanent(format!("change {id}: even its pointer message is {} bytes, over {max}", body.len())));
                        }
                    }
                }
            }
            let pos = out.len();
            out.push(Message { pos, change: id.clone(), id, queue, body, attributes: Vec::new(), group, attempts: 0 });
        }
        Ok(out)
    }

    /// Writes an envelope to `destinations/{name}/payloads/…` in the stage.
    async fn offload(&self, lsn: strata_common::Lsn, ord: u32, body: String) -> Result<Offloaded, DestError> {
        let path = self.keys.payload(lsn, ord);
        let offloaded = Offloaded { url: format!("{}/{path}", self.stage.url()), bytes: body.len(), sha256: hex::encode(Sha256::digest(body.as_bytes())) };
        self.stage.put(&path, body.into()).await.map_err(|e| {
            let message = format!("sqs: writing the payload {path} to the stage: {e}");
            if e.is_retriable() { DestError::Transient(message) } else { DestError::Permanent(message) }
        })?;
        Ok(offloaded)
    }

    /// Splits messages over the lanes (see the module docs).
    fn lanes(&self, messages: Vec<Message>) -> Vec<VecDeque<Message>> {
        let mut lanes: Vec<VecDeque<Message>> = (0..self.in_flight).map(|_| VecDeque::new()).collect();
        for (i, m) in messages.into_iter().enumerate() {
            let lane = match &m.group {
                Some(g) => {
                    let mut h = std::hash::DefaultHasher::new();
                    (m.queue, g).hash(&mut h);
                    (h.finish() % self.in_flight as u64) as usize
                }
                None => (i / self.batch_size) % self.in_flight,
            };
            lanes[lane].push_back(m);
        }
        lanes.retain(|l| !l.is_empty());
        lanes
    }
}

/// The next call of a lane: messages of one queue, at most `batch_size`
/// and the queue's byte limit in all, in lane order; on a FIFO queue only
/// the first pending message of each group.
fn next_call(pending: &mut VecDeque<Message>, queues: &[Queue], batch_size: usize) -> Vec<Message> {
    let Some(first) = pending.front() else {
        return Vec::new();
    };
    let queue = &queues[first.queue];
    let (qi, fifo, max_bytes) = (first.queue, queue.fifo, queue.max_bytes);
    let window = if fifo { FIFO_WINDOW.min(pending.len()) } else { batch_size.min(pending.len()) };
    let mut seen: HashSet<&str> = HashSet::new();
    let mut take = Vec::new();
    let mut bytes = 0;
    for (i, m) in pending.iter().take(window).enumerate() {
        if take.len() == batch_size {
            break;
        }
        let first_of_group = m.group.as_deref().is_none_or(|g| seen.insert(g));
        if m.queue != qi || !first_of_group {
            if !fifo {
                break;
            }
            continue;
        }
        if bytes + m.body.len() > max_bytes {
            break;
        }
        bytes += m.body.len();
        take.push(i);
    }
    // Remove the taken ones, the rest of the window keeps its order.
    let mut call = Vec::with_capacity(take.len());
    for (removed, i) in take.into_iter().enumerate() {
        if let Some(m) = pending.remove(i - removed) {
            call.push(m);
        }
    }
    call
}

/// A message's attributes as SQS takes them; `None` without any.
fn message_attributes(attributes: &[(&'static str, String)]) -> Result<Option<HashMap<String, MessageAttributeValue>>, aws_sdk_sqs::error::BuildError> {
    if attributes.is_empty() {
        return Ok(None);
    }
    let mut out = HashMap::new();
    for (name, value) in attributes {
        out.insert((*name).to_owned(), MessageAttributeValue::builder().data_type("String").string_value(value).build()?);
    }
    Ok(Some(out))
}

/// Puts messages back into a lane, each at its place in commit order.
fn put_back(pending: &mut VecDeque<Message>, messages: Vec<Message>) {
    for m in messages.into_iter().rev() {
        let at = pending.partition_point(|p| p.pos < m.pos);
        pending.insert(at, m);
    }
}

/// Sends one lane's messages, in order, one call at a time.
async fn run_lane(client: &Client, queues: &[Queue], batch_size: usize, mut pending: VecDeque<Message>) -> LaneOutcome {
    let mut out = LaneOutcome::default();
    let mut call_attempts = 0u32;
    while !pending.is_empty() {
        let call = next_call(&mut pending, queues, batch_size);
        if call.is_empty() {
            // A message larger than the queue takes cannot be here (checked
            // when the messages were made), so this is a bug, not data.
            out.error = Some(DestError::Permanent("sqs: a message fits no call".to_owned()));
            return out;
        }
        let queue = &queues[call[0].queue];
        let entries: Vec<SendMessageBatchRequestEntry> = match call
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let fifo = |v: Option<String>| v.filter(|_| queue.fifo);
                let attributes = message_attributes(&m.attributes)?;
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_attributes(attributes)
                    .set_message_group_id(fifo(m.group.clone()))
                    .set_message_deduplication_id(fifo(Some(dedup_id(&m.id))))
                    .build()
            })
            .collect::<Result<_, _>>()
        {
            Ok(e) => e,
            Err(e) => {
                out.error = Some(DestError::Permanent(format!("sqs: building a batch entry: {e}")));
                return out;
            }
        };
        match client.send_message_batch().queue_url(&queue.url).set_entries(Some(entries)).send().await {
            Ok(result) => {
                call_attempts = 0;
                let failed: HashMap<&str, _> = result.failed().iter().map(|f| (f.id(), f)).collect();
                let mut again = Vec::new();
                for (i, mut m) in call.into_iter().enumerate() {
                    match failed.get(i.to_string().as_str()) {
                        None => out.sent.push(m.id),
                        Some(f) if f.sender_fault() && !is_transient_code(f.code()) => {
                            let why = format!("sqs refused change {} ({}): {}", m.id, f.code(), f.message().unwrap_or(""));
                            out.refused.push((m.change, why));
                        }
                        Some(f) => {
                            m.attempts += 1;
                            if m.attempts >= MAX_ATTEMPTS {
                                out.error = Some(DestError::Transient(format!(
                                    "sqs failed change {} {} times ({}: {}) on {}",
                                    m.id,
                                    m.attempts,
                                    f.code(),
                                    f.message().unwrap_or(""),
                                    queue.url
                                )));
                                return out;
                            }
                            tracing::debug!(change = m.id, code = f.code(), attempt = m.attempts, "sqs failed an entry; sending it again");
                            again.push(m);
                        }
                    }
                }
                if let Some(attempt) = again.iter().map(|m| m.attempts).max() {
                    put_back(&mut pending, again);
                    tokio::time::sleep(RETRY.delay(attempt)).await;
                }
            }
            Err(e) => {
                let error = classify(&format!("sqs: SendMessageBatch to {}", queue.url), &e);
                call_attempts += 1;
                if !error.is_retriable() || call_attempts >= MAX_ATTEMPTS {
                    out.error = Some(error);
                    return out;
                }
                tracing::debug!(queue = queue.url, attempt = call_attempts, error = %error, "sqs call failed; sending it again");
                put_back(&mut pending, call);
                tokio::time::sleep(RETRY.delay(call_attempts)).await;
            }
        }
    }
    out
}

impl Destination for SqsSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), DestError> {
        if self.last.seqs != (batch.first_seq, batch.seq) {
            self.last = Progress { seqs: (batch.first_seq, batch.seq), ..Default::default() };
        }
        let mut oversized = Vec::new();
        let messages = self.messages(batch, &mut oversized).await?;
        if let Some(r) = oversized.first() {
            return Err(DestError::Permanent(r.error.clone()));
        }
        let lanes = self.lanes(messages);
        let (client, queues, batch_size) = (&self.client, &self.queues, self.batch_size);
        let outcomes = futures::future::join_all(lanes.into_iter().map(|lane| run_lane(client, queues, batch_size, lane))).await;
        let mut error = None;
        for o in outcomes {
            self.last.sent.extend(o.sent);
            self.last.refused.extend(o.refused);
            // A permanent error says more than a transient one.
            if let Some(e) = o.error
                && error.as_ref().is_none_or(DestError::is_retriable)
            {
                error = Some(e);
            }
        }
        if let Some(why) = self.last.refused.values().min() {
            return Err(DestError::Permanent(why.clone()));
        }
        error.map_or(Ok(()), Err)
    }

    /// The changes too large for their queue (unless they are offloaded),
    /// and those SQS refused when this batch was last sent: found without
    /// sending anything.
    async fn rejects(&mut self, batch: &Batch) -> Result<Vec<Reject>, DestError> {
        let mut out = Vec::new();
        if self.oversize == Oversize::Reject {
            // Made only for the oversized ones it reports; nothing is sent.
            self.messages(batch, &mut out).await?;
        }
        if self.last.seqs == (batch.first_seq, batch.seq) && !self.last.refused.is_empty() {
            for (ti, t) in batch.tables.iter().enumerate() {
                for (ci, c) in t.changes.iter().enumerate() {
                    if let Some(why) = self.last.refused.get(&change_id(&batch.stream, c))
                        && !out.iter().any(|r| r.table == ti && r.change == ci)
                    {
                        out.push(Reject { table: ti, change: ci, error: why.clone() });
                    }
                }
            }
            // Set aside now; what is left is sent again.
            self.last.refused.clear();
        }
        Ok(out)
    }

    async fn reset(&mut self, _seq: u64, _truncate: &[TableName]) -> Result<(), DestError> {
        self.last = Progress::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(pos: usize, group: Option<&str>, bytes: usize) -> Message {
        let id = format!("s:{pos}:0");
        Message { pos, change: id.clone(), id, queue: 0, body: "x".repeat(bytes), attributes: Vec::new(), group: group.map(str::to_owned), attempts: 0 }
    }

    fn queue(fifo: bool, max_bytes: usize) -> Vec<Queue> {
        vec![Queue { url: "q".into(), fifo, max_bytes }]
    }

    fn positions(call: &[Message]) -> Vec<usize> {
        call.iter().map(|m| m.pos).collect()
    }

    #[test]
    fn fifo_calls_carry_one_message_per_group_in_order() {
        let mut lane: VecDeque<Message> = [(0, "a"), (1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "b")].iter().map(|&(p, g)| msg(p, Some(g), 10)).collect();
        let q = queue(true, 1000);
        assert_eq!(positions(&next_call(&mut lane, &q, 10)), [0, 2, 4]);
        assert_eq!(positions(&next_call(&mut lane, &q, 10)), [1, 5]);
        assert_eq!(positions(&next_call(&mut lane, &q, 10)), [3]);
        assert!(lane.is_empty());
    }

    #[test]
    fn a_failed_entry_goes_back_before_the_rest_of_its_group() {
        let mut lane: VecDeque<Message> = [(0, "a"), (1, "b"), (2, "a"), (3, "b")].iter().map(|&(p, g)| msg(p, Some(g), 10)).collect();
        let q = queue(true, 1000);
        let mut call = next_call(&mut lane, &q, 10);
        assert_eq!(positions(&call), [0, 1]);
        // SQS failed entry 0 (group a) and took entry 1.
        call.truncate(1);
        put_back(&mut lane, call);
        assert_eq!(positions(&next_call(&mut lane, &q, 10)), [0, 3], "a's first change again, and b's next");
        assert_eq!(positions(&next_call(&mut lane, &q, 10)), [2]);
    }

    #[test]
    fn standard_calls_are_cut_by_count_and_bytes() {
        let mut lane: VecDeque<Message> = (0..25).map(|p| msg(p, None, 100)).collect();
        assert_eq!(next_call(&mut lane, &queue(false, 1_000_000), 10).len(), 10);
        assert_eq!(next_call(&mut lane, &queue(false, 450), 10).len(), 4, "four 100-byte bodies fit in 450");
        assert_eq!(lane.len(), 11);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(RETRY.delay(0) <= Duration::from_millis(50));
        assert!(RETRY.delay(30) <= Duration::from_secs(5));
        assert!(RETRY.delay(30) >= Duration::from_millis(2500));
    }
}
