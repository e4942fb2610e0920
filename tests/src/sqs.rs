//! SQS on the emulator: queues, receiving everything, and the emulator's
//! fault injection (`infra/emulator.py`: failed batch entries, throttled
//! calls, and counts of what reached a queue).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::BehaviorVersion;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};

use crate::emulator::Emulator;

/// The environment that points a writer process's AWS clients at the emulator.
pub fn writer_env(emulator: &Emulator) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", emulator.endpoint()),
        // No instance metadata lookups on a machine that is no EC2 host.
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}

/// Starts a service binary (`strata-reader-under-test`,
/// `strata-writer-under-test`) with `config_text` as its config, its AWS
/// clients pointed at the emulator.
pub fn spawn_service(exe: &str, dir: &std::path::Path, name: &str, config_text: &str, emulator: &Emulator) -> crate::reader::ServiceProcess {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config_text).expect("test helper");
    let env = writer_env(emulator);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::reader::ServiceProcess::spawn_with(std::path::Path::new(exe), &path, std::process::Stdio::null(), &env).expect("test helper")
}

/// A received message: its body, and its FIFO group.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: serde_json::Value,
    pub group: Option<String>,
}

pub struct Sqs {
    pub client: Client,
    port: u16,
}

impl Sqs {
    /// AWS configuration for the emulator: dummy keys, us-east-1.
    pub async fn sdk_config(emulator: &Emulator) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(emulator.endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "strata-tests"))
            .load()
            .await
    }

    pub async fn new(emulator: &Emulator) -> Sqs {
        Sqs { client: Client::new(&Sqs::sdk_config(emulator).await), port: emulator.port }
    }

    /// Creates a queue (a name ending in `.fifo` makes a FIFO queue) and
    /// returns its URL; `max_message_bytes` sets its MaximumMessageSize.
    pub async fn create_queue(&self, name: &str, max_message_bytes: Option<usize>) -> Result<String> {
        let mut req = self.client.create_queue().queue_name(name);
        if name.ends_with(".fifo") {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some(max) = max_message_bytes {
            req = req.attributes(QueueAttributeName::MaximumMessageSize, max.to_string());
        }
        let out = req.send().await.with_context(|| format!("creating queue {name}"))?;
        out.queue_url().map(str::to_owned).context("CreateQueue returned no URL")
    }

    /// Receives and deletes messages until the queue has been empty for
    /// `quiet`, or `limit` is reached; in the order received.
    pub async fn drain(&self, url: &str, quiet: Duration, limit: usize) -> Result<Vec<Received>> {
        let mut out = Vec::new();
        let mut empty_since = tokio::time::Instant::now();
        while out.len() < limit {
            let r = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .visibility_timeout(60)
                .send()
                .await
                .context("receiving messages")?;
            let messages = r.messages();
            if messages.is_empty() {
                if empty_since.elapsed() >= quiet {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            empty_since = tokio::time::Instant::now();
            let mut deletes = Vec::new();
            for (i, m) in messages.iter().enumerate() {
                let body: serde_json::Value = serde_json::from_str(m.body().unwrap_or("")).context("a message body that is not JSON")?;
                let group = m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId)).cloned();
                out.push(Received { body, group });
                if let Some(handle) = m.receipt_handle() {
                    deletes.push(DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build()?);
                }
            }
            self.client.delete_message_batch().queue_url(url).set_entries(Some(deletes)).send().await.context("deleting messages")?;
        }
        Ok(out)
    }

    /// Sets the emulator's injected faults for queue `name` (see `infra/emulator.py`).
    pub async fn inject(&self, faults: serde_json::Value) -> Result<()> {
        let (status, body) = crate::emulator::request(self.port, "POST", "/_strata/sqs/faults", &faults.to_string()).await?;
        if status != 200 {
            bail!("setting faults: {status} {body}");
        }
        Ok(())
    }

    /// What reached queue `name`: calls, entries, failed, throttled, single_sends.
    pub async fn stats(&self, name: &str) -> Result<HashMap<String, u64>> {
        let (status, body) = crate::emulator::request(self.port, "GET", &format!("/_strata/sqs/stats?queue={name}"), "").await?;
        if status != 200 {
            bail!("reading stats: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }
}

/// The ids of received envelopes, first appearances only, in order received.
pub fn first_ids(received: &[Received]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    received.iter().filter_map(|r| r.body["id"].as_str()).filter(|id| seen.insert(id.to_string())).map(str::to_owned).collect()
}
