//! Which webhook responses are worth retrying, and when.

use std::time::Duration;

use crate::destinations::DestError;

/// The longest `Retry-After` honoured: a receiver asking for more is
/// retried after this, and again after that.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` as delay-seconds; an HTTP date is honoured as its distance
/// from now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A non-2xx response: 429 and 5xx are transient (throttled when the
/// receiver said for how long); 408 too; any other status is permanent.
pub fn classify_status(status: u16, retry_after: Option<&str>, body: &str) -> DestError {
    let excerpt: String = body.chars().take(200).collect();
    let message = format!("webhook answered {status}: {excerpt}");
    let transient = status == 408 || status == 429 || status >= 500;
    match (transient, retry_after.and_then(parse_retry_after)) {
        (true, Some(after)) => DestError::Throttled { after, message },
        (true, None) => DestError::Transient(message),
        (false, _) => DestError::Permanent(message),
    }
}

/// A request that got no response: timeouts and connection failures are
/// transient; a request that could not be built is not.
pub fn classify_error(e: &reqwest::Error) -> DestError {
    let message = format!("webhook request failed: {e}");
    if e.is_builder() { DestError::Permanent(message) } else { DestError::Transient(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_worker_does() {
        assert!(matches!(classify_status(503, Some("2"), ""), DestError::Throttled { after, .. } if after == Duration::from_secs(2)));
        assert!(matches!(classify_status(429, None, ""), DestError::Transient(_)));
        assert!(matches!(classify_status(500, Some("soon"), ""), DestError::Transient(_)));
        assert!(matches!(classify_status(400, Some("1"), "bad field"), DestError::Permanent(m) if m.contains("400") && m.contains("bad field")));
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
    }
}
