//! Settings of a webhook destination, as stored in its spec.
//!
//! The stage never holds a secret: the signing secret is a `${VAR}`
//! reference, expanded from the writer's environment when it starts.

use serde::{Deserialize, Serialize};
use strata_common::config::{has_literal_password, redact_conn_str};

use crate::destinations::expand_env;
use crate::envelope::EnvelopeFormat;

/// Envelopes per request unless set (100).
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Seconds a request may take, response included, unless set (10).
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://` or `https://` endpoint; credentials in it as `${VAR}`.
    pub url: String,
    /// `${VAR}` naming the signing secret (Standard Webhooks: `whsec_` and
    /// base64, or any string); unsigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// strata's envelope (the default), or Debezium's records.
    #[serde(default, skip_serializing_if = "EnvelopeFormat::is_strata")]
    pub envelope: EnvelopeFormat,
}

fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl WebhookSpec {
    pub fn new(url: String, secret: Option<String>) -> WebhookSpec {
        WebhookSpec { url, secret, batch_size: DEFAULT_BATCH_SIZE, timeout_secs: DEFAULT_TIMEOUT_SECS, envelope: EnvelopeFormat::Strata }
    }

    /// Checks the spec without I/O: an http(s) URL without a literal
    /// password, a secret given as `${VAR}`, sizes in range.
    pub fn validate(&self) -> Result<(), String> {
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok {
            return Err(format!("webhook url {} must start with http:// or https://", redact_conn_str(&self.url)));
        }
        if has_literal_password(&self.url) {
            return Err(format!("webhook url {} holds a password; write it as ${{VAR}}", redact_conn_str(&self.url)));
        }
        if let Some(secret) = &self.secret
            && !strata_common::config::is_reference(secret)
        {
            return Err("webhook secret must be a ${VAR} or ${file:PATH} reference: specs are stored in the stage".to_owned());
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(format!("webhook batch_size {} must be between 1 and 10000", self.batch_size));
        }
        if !(1..=600).contains(&self.timeout_secs) {
            return Err(format!("webhook timeout_secs {} must be between 1 and 600", self.timeout_secs));
        }
        Ok(())
    }

    /// One line for `destination list`: the URL as stored (no literal password).
    pub fn describe(&self) -> String {
        let signed = if self.secret.is_some() { ", signed" } else { "" };
        format!("webhook {} ({} per request{signed}{})", self.url, self.batch_size, self.envelope.note())
    }

    /// The URL and secret with `${VAR}` expanded.
    pub fn resolve(&self) -> Result<(String, Option<String>), String> {
        let url = expand_env(&self.url)?;
        let secret = self.secret.as_deref().map(expand_env).transpose()?;
        Ok((url, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_passwords_stay_out_of_the_stage() {
        assert!(WebhookSpec::new("https://h/hook".into(), Some("${HOOK_SECRET}".into())).validate().is_ok());
        assert!(WebhookSpec::new("https://h/hook".into(), Some("hunter2".into())).validate().is_err());
        assert!(WebhookSpec::new("https://u:pw@h/hook".into(), None).validate().is_err());
        assert!(WebhookSpec::new("ftp://h/hook".into(), None).validate().is_err());
        let mut s = WebhookSpec::new("http://h".into(), None);
        s.batch_size = 0;
        assert!(s.validate().is_err());
    }
}
