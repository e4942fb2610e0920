//! The reader's wake-up publisher: after each committed batch, one SQS
//! message `{"format":1,"stream":…,"seq":…}` to every queue in
//! `wakeup.publish`, so writers waiting on those queues deliver at once.
//!
//! It never holds the pipeline back: the committer only replaces the latest
//! committed seq in a watch channel, and this task sends whatever is latest
//! when it is free, so a burst of commits makes one message, and a queue
//! that is slow or down makes none (writers then poll). Wake-ups are hints;
//! a lost one costs a writer latency, never a change.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_sqs::Client;
use strata_common::config::WakeupConfig;
use strata_common::telemetry::{Registry, Value};
use strata_common::wakeup::{Wakeup, sqs_sdk_config};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Longest a wake-up send may take: a late wake-up is worth little.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Publisher {
    client: Client,
    queues: Vec<String>,
    stream: String,
    sent: Value,
    failed: Value,
}

impl Publisher {
    /// The publisher of `config.wakeup`, or `None` when it names no queue.
    /// Fails when no AWS region can be found.
    pub async fn new(config: &WakeupConfig, stream: &str, registry: &Registry) -> Result<Option<Publisher>> {
        let Some(first) = config.publish.first() else { return Ok(None) };
        let sdk = sqs_sdk_config(config.region.as_deref(), config.endpoint.as_deref(), first).await.map_err(anyhow::Error::msg).context("wakeup.publish")?;
        let conf = aws_sdk_sqs::config::Builder::from(&sdk)
            .timeout_config(aws_config::timeout::TimeoutConfig::builder().operation_timeout(SEND_TIMEOUT).build())
            .build();
        let l = [("stream", stream)];
        Ok(Some(Publisher {
            client: Client::from_conf(conf),
            queues: config.publish.clone(),
            stream: stream.to_owned(),
            sent: registry.counter("strata_reader_wakeups_sent_total", "Wake-up messages sent to SQS.", &l),
            failed: registry.counter("strata_reader_wakeups_failed_total", "Wake-up messages SQS did not take.", &l),
        }))
    }

    /// Sends a wake-up for the latest seq on `commits` each time it changes,
    /// until `token` is cancelled.
    pub async fn run(self, mut commits: watch::Receiver<u64>, token: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                changed = commits.changed() => if changed.is_err() { return },
            }
            let seq = *commits.borrow_and_update();
            let body = Wakeup::new(&self.stream, seq).to_json();
            for queue in &self.queues {
                match self.client.send_message().queue_url(queue).message_body(&body).send().await {
                    Ok(_) => {
                        self.sent.inc_by(1);
                        if failing {
                            tracing::info!(queue, seq, "wake-ups are sent again");
                            failing = false;
                        }
                    }
                    Err(e) => {
                        self.failed.inc_by(1);
                        if !failing {
                            let error = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                            tracing::warn!(queue, seq, error, "could not send a wake-up; writers fall back to polling the stage");
                            failing = true;
                        }
                    }
                }
            }
        }
    }
}

/// A commit-notice channel for [`strata_stager::log::StreamLog::with_commit_notices`].
pub fn commit_notices() -> (Arc<watch::Sender<u64>>, watch::Receiver<u64>) {
    let (tx, rx) = watch::channel(0);
    (Arc::new(tx), rx)
}
