//! Wake-up notifications: the message a reader sends to SQS for each
//! committed batch, and the AWS set-up shared by everything that talks to
//! SQS (the reader's publisher, the writer's listener, the SQS destination).
//!
//! A wake-up is a hint, never a source of truth: a writer that gets one
//! reads the stage as it would after a poll, and a lost, late, duplicated
//! or reordered wake-up costs latency at most, never a change.

#[cfg(feature = "aws")]
use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde::{Deserialize, Serialize};

/// `{"format": 1, "stream": "main", "seq": 42}`: batch `seq` of `stream`
/// is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wakeup {
    pub format: u32,
    pub stream: String,
    pub seq: u64,
}

impl Wakeup {
    pub fn new(stream: &str, seq: u64) -> Wakeup {
        Wakeup { format: 1, stream: stream.to_owned(), seq }
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({"format": self.format, "stream": self.stream, "seq": self.seq}).to_string()
    }

    /// Parses a message body; `Err` says what is wrong with it.
    pub fn parse(body: &str) -> Result<Wakeup, String> {
        let w: Wakeup = serde_json::from_str(body).map_err(|e| format!("not a wake-up message: {e}"))?;
        if w.format != 1 {
            return Err(format!("wake-up format {} is not 1", w.format));
        }
        Ok(w)
    }
}

/// The region in an AWS queue URL's host (`sqs.eu-west-1.amazonaws.com`).
pub fn region_of_url(queue_url: &str) -> Option<String> {
    let host = queue_url.split_once("://")?.1.split('/').next()?;
    let mut parts = host.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("sqs"), Some(region), Some("amazonaws")) if !region.is_empty() => Some(region.to_owned()),
        _ => None,
    }
}

/// AWS settings for SQS: the standard credential chain; the region from
/// `region`, else the environment or profile, else `queue_url`'s host; the
/// endpoint from `endpoint`, else `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL`.
/// (Feature `aws`, so the stage format does not pull in the AWS SDK.)
#[cfg(feature = "aws")]
pub async fn sqs_sdk_config(region: Option<&str>, endpoint: Option<&str>, queue_url: &str) -> Result<SdkConfig, String> {
    use aws_config::meta::region::RegionProviderChain;
    let chain =
        RegionProviderChain::first_try(region.map(|r| Region::new(r.to_owned()))).or_default_provider().or_else(region_of_url(queue_url).map(Region::new));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(chain);
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(format!("no AWS region for {queue_url}: set the region in the config, or AWS_REGION in the environment"));
    }
    Ok(sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakeups_round_trip_and_bad_bodies_say_why() {
        let w = Wakeup::new("main", 42);
        assert_eq!(w.to_json(), r#"{"format":1,"seq":42,"stream":"main"}"#);
        assert_eq!(Wakeup::parse(&w.to_json()), Ok(w));
        assert!(Wakeup::parse("hello").unwrap_err().contains("not a wake-up"));
        assert!(Wakeup::parse(r#"{"format":2,"stream":"s","seq":1}"#).unwrap_err().contains("format 2"));
    }

    #[test]
    fn regions_come_from_aws_queue_urls() {
        assert_eq!(region_of_url("https://sqs.eu-west-1.amazonaws.com/1/q").as_deref(), Some("eu-west-1"));
        assert_eq!(region_of_url("http://127.0.0.1:4566/1/q"), None);
    }
}
