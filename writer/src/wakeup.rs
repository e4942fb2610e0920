//! Wake-ups: idle workers wait on "batch N committed" messages from SQS
//! instead of polling the stage.
//!
//! With `wakeup.queue` set, one listener task long-polls that queue (20 s
//! receives), deletes what it receives, and wakes the workers of each
//! stream named. An idle worker then sleeps until woken or until
//! `wakeup.fallback_poll`, whichever comes first, and reads the stage as
//! after any poll: a wake-up is a hint, so a lost, late or duplicated one
//! costs latency, never a change. When the queue cannot be read, the
//! listener says so in the log and workers poll until it can, as they do
//! without a queue.
//!
//! On a remote stage every poll is a billed request, so an idle worker
//! without live wake-ups polls less and less often the longer it finds
//! nothing: [`POLL`] doubling up to [`IDLE_POLL_MAX`], back to [`POLL`]
//! once a batch is found. There wake-ups carry the latency. And the idle
//! workers of one stream share their looks: a worker whose poll comes
//! due does not look for a batch another worker of the stream looked for
//! (and missed) within its own poll period, and a worker that finds a
//! batch wakes the others. So a writer's idle polls of a stream cost about
//! one request per period, however many destinations read the stream. A
//! local stage's poll is a failed file open, so it polls every
//! [`LOCAL_POLL`], unshared; and there the writer watches the stage's
//! folders ([`local::Watcher`]) and wakes a stream's workers as soon as a
//! manifest appears, the poll being the fallback.

pub mod local;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use strata_common::backoff::Backoff;
use strata_common::config::WakeupConfig;
use strata_common::telemetry::{Registry, Value};
use strata_common::wakeup::{Wakeup, sqs_sdk_config};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often an idle worker polls the stage when it has no wake-ups.
pub const POLL: Duration = Duration::from_millis(200);
/// How often an idle worker polls a local stage: a batch whose file-system
/// notification was lost waits 25 ms for its writer on average.
pub const LOCAL_POLL: Duration = Duration::from_millis(50);
/// The slowest poll of an idle worker on a remote stage: 17,280 GETs an
/// idle destination-day ($0.0069 at S3's list price) instead of 432,000.
pub const IDLE_POLL_MAX: Duration = Duration::from_secs(5);
/// The long-poll wait of one receive: SQS's maximum.
const RECEIVE_WAIT_SECS: i32 = 20;
/// Receives from a wake-up queue that failed: from 1–2 s up to 30 s.
const RETRY: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(30));

/// The writer's wake-ups: a watch channel per stream, and whether they
/// are flowing (the listener reads its queue) or workers must poll.
#[derive(Clone)]
pub struct Wakeups {
    streams: Arc<Mutex<HashMap<String, Arc<Stream>>>>,
    /// Set while the listener reads its queue.
    live: Arc<AtomicBool>,
    fallback_poll: Duration,
    /// The poll period without live wake-ups.
    poll: Duration,
    /// Idle polls slow down (a remote stage).
    idle_backoff: bool,
}

/// What the workers of one stream share.
struct Stream {
    /// The latest seq known committed (from a wake-up or a worker that
    /// found it); a change wakes every waiter of the stream.
    tx: watch::Sender<u64>,
    /// The last look that found nothing: the seq looked for, and when.
    missed: Mutex<Option<(u64, Instant)>>,
}

/// One worker's end: waits for the next batch of its stream.
pub struct Waiter {
    stream: Arc<Stream>,
    rx: watch::Receiver<u64>,
    live: Arc<AtomicBool>,
    fallback_poll: Duration,
    poll: Duration,
    /// Polls since the last batch was found, when idle polls slow down.
    idle: Option<u32>,
}

impl Wakeups {
    /// No queue: workers poll the stage every [`POLL`] (see
    /// [`Wakeups::for_stage`]).
    pub fn polling() -> Wakeups {
        Wakeups { streams: Default::default(), live: Arc::new(AtomicBool::new(false)), fallback_poll: POLL, poll: POLL, idle_backoff: false }
    }

    /// Polls for a local stage ([`LOCAL_POLL`]) or for a remote one, whose
    /// requests are billed ([`POLL`], slowing down while nothing is found).
    pub fn for_stage(self, local: bool) -> Wakeups {
        if local { Wakeups { poll: LOCAL_POLL, idle_backoff: false, ..self } } else { Wakeups { poll: POLL, idle_backoff: true, ..self } }
    }

    fn stream(&self, stream: &str) -> Arc<Stream> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.entry(stream.to_owned()).or_insert_with(|| Arc::new(Stream { tx: watch::channel(0).0, missed: Mutex::new(None) })).clone()
    }

    pub fn waiter(&self, stream: &str) -> Waiter {
        let stream = self.stream(stream);
        Waiter {
            rx: stream.tx.subscribe(),
            stream,
            live: self.live.clone(),
            fallback_poll: self.fallback_poll,
            poll: self.poll,
            idle: self.idle_backoff.then_some(0),
        }
    }

    fn wake(&self, w: &Wakeup) {
        self.stream(&w.stream).tx.send_replace(w.seq);
    }
}

impl Waiter {
    /// Sleeps until a wake-up for this stream, or until it is time to look
    /// for batch `next` again; returns false when `token` is cancelled
    /// first. With idle backoff (a remote stage), a poll that comes due
    /// when another worker of the stream looked for the same batch and
    /// missed it within this poll's period sleeps another period instead.
    pub async fn wait(&mut self, token: &CancellationToken, next: u64) -> bool {
        loop {
            let period = self.period();
            tokio::select! {
                _ = token.cancelled() => return false,
                _ = self.rx.changed() => return true,
                _ = tokio::time::sleep(period) => {}
            }
            if self.idle.is_none() || !self.looked_lately(next, period) {
                return true;
            }
        }
    }

    fn period(&mut self) -> Duration {
        match self.idle.as_mut() {
            _ if self.live.load(Ordering::Relaxed) => self.fallback_poll,
            Some(idle) => {
                *idle = idle.saturating_add(1);
                self.poll.saturating_mul(1 << (*idle - 1).min(16)).min(IDLE_POLL_MAX)
            }
            None => self.poll,
        }
    }

    fn looked_lately(&self, next: u64, period: Duration) -> bool {
        let missed = *self.stream.missed.lock().unwrap_or_else(|p| p.into_inner());
        // Only a miss of the same seq says anything: seqs are dense, but a
        // miss of a later one does not mean `next` is missing.
        missed.is_some_and(|(seq, at)| seq == next && at.elapsed() < period)
    }

    /// This worker looked for batch `next` and it is not there yet.
    pub fn missed(&self, next: u64) {
        *self.stream.missed.lock().unwrap_or_else(|p| p.into_inner()) = Some((next, Instant::now()));
    }

    /// A batch `seq` was found: the next idle wait is a quick one again,
    /// and the other waiters of the stream look at once.
    pub fn found(&mut self, seq: u64) {
        if let Some(idle) = self.idle.as_mut() {
            *idle = 0;
        }
        self.stream.tx.send_if_modified(|known| {
            let newer = seq > *known;
            *known = (*known).max(seq);
            newer
        });
        // Not a reason for this worker to wake.
        self.rx.borrow_and_update();
    }
}

/// The listener of `config.queue`: wakes workers as messages arrive.
pub struct Listener {
    client: Client,
    queue: String,
    wakeups: Wakeups,
    received: Value,
    malformed: Value,
}

impl Listener {
    /// The wake-ups of `config` and, when it names a queue, the listener
    /// that feeds them. Fails when no AWS region can be found.
    pub async fn new(config: &WakeupConfig, registry: &Registry) -> Result<(Wakeups, Option<Listener>)> {
        let Some(queue) = &config.queue else {
            return Ok((Wakeups::polling(), None));
        };
        let sdk = sqs_sdk_config(config.region.as_deref(), config.endpoint.as_deref(), queue).await.map_err(anyhow::Error::msg).context("wakeup.queue")?;
        let wakeups = Wakeups { fallback_poll: config.fallback_poll, ..Wakeups::polling() };
        let listener = Listener {
            client: Client::new(&sdk),
            queue: queue.clone(),
            wakeups: wakeups.clone(),
            received: registry.counter("strata_writer_wakeups_total", "Wake-up messages received from SQS.", &[]),
            malformed: registry.counter("strata_writer_wakeups_malformed_total", "Messages on the wake-up queue that were not wake-ups.", &[]),
        };
        Ok((wakeups, Some(listener)))
    }

    /// Receives until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        let mut backoff = RETRY;
        loop {
            // Until a receive has worked, one that answers at once: workers
            // poll the stage until the queue is known to be readable.
            let wait = if self.wakeups.live.load(Ordering::Relaxed) { RECEIVE_WAIT_SECS } else { 0 };
            let receive = self.client.receive_message().queue_url(&self.queue).max_number_of_messages(10).wait_time_seconds(wait).send();
            let out = tokio::select! {
                _ = token.cancelled() => return,
                out = receive => out,
            };
            let messages = match out {
                Ok(out) => {
                    if !self.wakeups.live.swap(true, Ordering::Relaxed) {
                        tracing::info!(queue = self.queue, "waiting on wake-ups; idle workers poll the stage every fallback_poll");
                    }
                    backoff.reset();
                    out.messages.unwrap_or_default()
                }
                Err(e) => {
                    if self.wakeups.live.swap(false, Ordering::Relaxed) || backoff.attempts() == 0 {
                        let error = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                        tracing::warn!(queue = self.queue, error, "cannot read the wake-up queue; workers poll the stage meanwhile");
                    }
                    if !backoff.wait(&token, Duration::ZERO).await {
                        return;
                    }
                    continue;
                }
            };
            let mut deletes = Vec::new();
            for (i, m) in messages.iter().enumerate() {
                match Wakeup::parse(m.body().unwrap_or("")) {
                    Ok(w) => {
                        self.received.inc_by(1);
                        self.wakeups.wake(&w);
                    }
                    Err(why) => {
                        // Deleted all the same: it would come back forever.
                        self.malformed.inc_by(1);
                        tracing::warn!(queue = self.queue, message_id = m.message_id(), why, "dropping a message that is not a wake-up");
                    }
                }
                if let Some(handle) = m.receipt_handle()
                    && let Ok(entry) = DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build()
                {
                    deletes.push(entry);
                }
            }
            if !deletes.is_empty()
                && let Err(e) = self.client.delete_message_batch().queue_url(&self.queue).set_entries(Some(deletes)).send().await
            {
                // They come back after their visibility timeout: a spare wake-up, no harm.
                tracing::debug!(queue = self.queue, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "could not delete wake-ups");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_on_its_stream_only_and_polls_otherwise() {
        let wakeups = Wakeups { fallback_poll: Duration::from_secs(30), ..Wakeups::polling() };
        wakeups.live.store(true, Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut main = wakeups.waiter("main");
        let t0 = tokio::time::Instant::now();
        wakeups.wake(&Wakeup::new("other", 1));
        wakeups.wake(&Wakeup::new("main", 7));
        assert!(main.wait(&token, 1).await);
        assert!(t0.elapsed() < Duration::from_millis(1), "woken at once");
        // Nothing new: the fallback period.
        assert!(main.wait(&token, 1).await);
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        // Wake-ups not flowing: the ordinary poll.
        wakeups.live.store(false, Ordering::Relaxed);
        let t1 = tokio::time::Instant::now();
        assert!(main.wait(&token, 1).await);
        assert_eq!(t1.elapsed(), POLL);
        token.cancel();
        assert!(!main.wait(&token, 1).await);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_polls_slow_down_on_a_billed_stage_until_a_batch_is_found() {
        let wakeups = Wakeups::polling().for_stage(false);
        let token = CancellationToken::new();
        let mut w = wakeups.waiter("main");
        let mut periods = Vec::new();
        for _ in 0..8 {
            let t = tokio::time::Instant::now();
            assert!(w.wait(&token, 1).await);
            periods.push(t.elapsed().as_millis());
        }
        assert_eq!(periods, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        w.found(1);
        let t = tokio::time::Instant::now();
        assert!(w.wait(&token, 1).await);
        assert_eq!(t.elapsed(), POLL, "back to the quick poll after a batch");
        // A wake-up still ends a slow wait at once.
        for _ in 0..6 {
            w.wait(&token, 1).await;
        }
        wakeups.wake(&Wakeup::new("main", 3));
        let t = tokio::time::Instant::now();
        assert!(w.wait(&token, 1).await);
        assert!(t.elapsed() < Duration::from_millis(1));
        // A local stage's polls are quick and never slow down.
        let local_wakeups = Wakeups::polling().for_stage(true);
        let mut local = local_wakeups.waiter("main");
        for _ in 0..8 {
            local.wait(&token, 1).await;
        }
        let t = tokio::time::Instant::now();
        local.wait(&token, 1).await;
        assert_eq!(t.elapsed(), LOCAL_POLL);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_workers_of_a_stream_share_their_looks_on_a_billed_stage() {
        let wakeups = Wakeups::polling().for_stage(false);
        let token = CancellationToken::new();
        let (mut a, mut b) = (wakeups.waiter("main"), wakeups.waiter("main"));
        let mut other = wakeups.waiter("other");
        // Both idle for a while: their polls are 5 s apart.
        for _ in 0..6 {
            a.wait(&token, 9).await;
            b.wait(&token, 9).await;
        }
        // a looks for 9 and misses while b waits: b's poll, due 3 s later,
        // sleeps another period.
        let t = tokio::time::Instant::now();
        let (woke, ()) = tokio::join!(b.wait(&token, 9), async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            a.missed(9);
        });
        assert!(woke);
        assert_eq!(t.elapsed(), IDLE_POLL_MAX * 2, "b skipped the look a had just made");
        // A miss of another seq, or on another stream, is no reason to skip.
        a.missed(10);
        let t = tokio::time::Instant::now();
        assert!(b.wait(&token, 9).await);
        assert_eq!(t.elapsed(), IDLE_POLL_MAX, "a missed 10, which says nothing about 9");
        b.missed(3);
        let t = tokio::time::Instant::now();
        assert!(other.wait(&token, 3).await);
        assert!(t.elapsed() < IDLE_POLL_MAX, "another stream's miss: {:?}", t.elapsed());
        // a finds 9: b wakes at once, and a does not wake itself.
        a.found(9);
        let t = tokio::time::Instant::now();
        assert!(b.wait(&token, 9).await);
        assert!(t.elapsed() < Duration::from_millis(1), "woken by a's find");
        let t = tokio::time::Instant::now();
        assert!(a.wait(&token, 10).await);
        assert_eq!(t.elapsed(), POLL, "a's own find does not wake a, and its polls are quick again");
    }
}
