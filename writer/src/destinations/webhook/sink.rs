//! POSTs envelopes to the webhook, signed, in commit order.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use strata_common::TableName;

use super::config::WebhookSpec;
use super::retry::{classify_error, classify_status};
use crate::destinations::{Batch, DestError, Destination, Reject};
use crate::envelope::{change_id, envelope};

pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    secret: Option<Vec<u8>>,
    batch_size: usize,
}

/// `sha256={hex}` of HMAC-SHA256(secret, body).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSink {
    pub fn connect(spec: &WebhookSpec) -> Result<WebhookSink, DestError> {
        let (url, secret) = spec.resolve().map_err(DestError::Permanent)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(spec.timeout_secs))
            .user_agent(concat!("strata-writer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DestError::Permanent(format!("building the HTTP client: {e}")))?;
        Ok(WebhookSink { client, url, secret, batch_size: spec.batch_size })
    }

    async fn post(&self, key: &str, body: Vec<u8>) -> Result<(), DestError> {
        let mut request = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key);
        if let Some(secret) = &self.secret {
            request = request.header("X-Strata-Signature", signature(secret, &body));
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
    async fn durable_seq(&mut self) -> Result<Option<u64>, DestError> {
        Ok(None)
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), DestError> {
        let mut changes: Vec<_> = batch.tables.iter().flat_map(|t| t.changes.iter().map(move |c| (&t.schema, c))).collect();
        changes.sort_by_key(|(_, c)| (c.lsn, c.ord));
        for chunk in changes.chunks(self.batch_size) {
            let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else { continue };
            let key = format!("{}..{}", change_id(&batch.stream, first.1), change_id(&batch.stream, last.1));
            let body: Vec<serde_json::Value> = chunk.iter().map(|(schema, c)| envelope(&batch.stream, schema, c, batch.staged_at)).collect();
            self.post(&key, serde_json::Value::Array(body).to_string().into_bytes()).await?;
        }
        Ok(())
    }

    async fn rejects(&mut self, _batch: &Batch) -> Result<Vec<Reject>, DestError> {
        // Trying changes one by one would deliver the accepted ones.
        Err(DestError::Permanent(
            "a webhook cannot be asked which changes it would reject without delivering them; use --on-error pause".to_owned(),
        ))
    }

    async fn reset(&mut self, _seq: u64, _truncate: &[TableName]) -> Result<(), DestError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
