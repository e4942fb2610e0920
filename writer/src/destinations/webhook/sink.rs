//! POSTs envelopes to the webhook, signed, in commit order.

use std::time::Duration;

use base64::Engine;

use super::config::WebhookSpec;
use super::retry::{classify_error, classify_status};
use crate::destinations::{Batch, DestError, Destination, Reject};
use crate::envelope::{EnvelopeFormat, bodies, change_id};

pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    secret: Option<SigningKey>,
    batch_size: usize,
    envelope: EnvelopeFormat,
}

/// The key a Standard Webhooks secret stands for: `whsec_<base64>` is the
/// decoded bytes (what the specification's libraries expect); any other
/// secret is used as its UTF-8 bytes.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    pub const PREFIX: &'static str = "whsec_";

    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        let key = match secret.strip_prefix(Self::PREFIX) {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim_end_matches('='))
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim_end_matches('=')))
                .map_err(|_| "the webhook secret starts with whsec_ but the rest is not base64".to_owned())?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("the webhook secret is empty".to_owned());
        }
        Ok(SigningKey(key))
    }

    /// `v1,{base64 HMAC-SHA256 of "{id}.{timestamp}.{body}"}`: the
    /// `webhook-signature` header of the Standard Webhooks specification.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let mac = crate::hmac_sha256(&self.0, &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac))
    }
}

impl WebhookSink {
    pub fn connect(spec: &WebhookSpec) -> Result<WebhookSink, DestError> {
        let (url, secret) = spec.resolve().map_err(DestError::Permanent)?;
        let secret = secret.as_deref().map(SigningKey::parse).transpose().map_err(DestError::Permanent)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(spec.timeout_secs))
            .user_agent(concat!("strata-writer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DestError::Permanent(format!("building the HTTP client: {e}")))?;
        Ok(WebhookSink { client, url, secret, batch_size: spec.batch_size, envelope: spec.envelope })
    }

    /// One request. `id` names its changes, so a retry or a replay of the
    /// same changes carries the same id (receivers deduplicate on it); the
    /// timestamp and signature are made per attempt, so a receiver can
    /// reject an old request replayed by someone else.
    async fn post(&self, id: &str, body: Vec<u8>) -> Result<(), DestError> {
        let mut request = self.client.post(&self.url).header("Content-Type", "application/json").header("webhook-id", id).header("Idempotency-Key", id);
        if let Some(key) = &self.secret {
            let timestamp = chrono::Utc::now().timestamp();
            request = request.header("webhook-timestamp", timestamp).header("webhook-signature", key.sign(id, timestamp, &body));
        }
        let response = request.body(body).send().await.map_err(|e| classify_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response.headers().get("Retry-After").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        Err(classify_status(status.as_u16(), retry_after.as_deref(), &body))
    }
}

impl Destination for WebhookSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), DestError> {
        let mut changes: Vec<_> = batch.tables.iter().flat_map(|t| t.changes.iter().map(move |c| (&t.schema, c))).collect();
        changes.sort_by_key(|(_, c)| (c.lsn, c.ord));
        let batched = batch.batched(self.envelope);
        for chunk in changes.chunks(self.batch_size) {
            let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
                continue;
            };
            let key = format!("{}..{}", change_id(&batch.stream, first.1), change_id(&batch.stream, last.1));
            // A JSON array of the bodies, each as made (Debezium's keep their field order).
            let texts: Vec<String> = chunk.iter().flat_map(|(schema, c)| bodies(&batched, schema, c)).map(|b| b.text).collect();
            if texts.is_empty() {
                // Only truncates, which Debezium's records leave out.
                continue;
            }
            self.post(&key, format!("[{}]", texts.join(",")).into_bytes()).await?;
        }
        Ok(())
    }

    async fn rejects(&mut self, _batch: &Batch) -> Result<Vec<Reject>, DestError> {
        // Trying changes one by one would deliver the accepted ones.
        Err(DestError::Permanent("a webhook cannot be asked which changes it would reject without delivering them; use --on-error pause".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification: its secret,
    /// message id, timestamp and body give its signature.
    #[test]
    fn signs_the_specification_example() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_without_the_prefix_are_their_bytes() {
        assert_eq!(SigningKey::parse("hunter2").unwrap().0, b"hunter2");
        assert!(SigningKey::parse("whsec_not base64!").is_err());
        assert!(SigningKey::parse("").is_err());
    }
}
