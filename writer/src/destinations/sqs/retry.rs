//! Which SQS failures are worth retrying.
//!
//! - A call that got no answer (timeout, connection, a response that did
//!   not parse) is transient; so are throttling and server errors.
//! - Any other error response is permanent: a queue that does not exist,
//!   access denied, a KMS key that is disabled. Retrying will not change it.
//! - A batch entry SQS refused says itself: `SenderFault = false` is
//!   SQS's own trouble and the entry is retried alone; `SenderFault = true`
//!   means the message is bad for the queue, a rejected change.

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::destinations::DestError;

/// Error codes SQS (or a proxy in front of it) uses for "slow down" and
/// "not now", across the query and JSON protocols.
const TRANSIENT_CODES: &[&str] = &[
    "RequestThrottled",
    "ThrottlingException",
    "Throttling",
    "KmsThrottled",
    "KMS.ThrottlingException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
];

pub fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// A failed SQS call, split into what the worker should do.
pub fn classify<E>(what: &str, e: &SdkError<E>) -> DestError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = format!("{what}: {}", DisplayErrorContext(e));
    match e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("");
            if status >= 500 || status == 429 || is_transient_code(code) { DestError::Transient(message) } else { DestError::Permanent(message) }
        }
        SdkError::ConstructionFailure(_) => DestError::Permanent(message),
        // Timeouts, connection failures, unparseable responses; a missing
        // credential source shows up here too, and may appear later.
        _ => DestError::Transient(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_codes_are_transient() {
        assert!(is_transient_code("RequestThrottled"));
        assert!(is_transient_code("InternalError"));
        assert!(!is_transient_code("InvalidMessageContents"));
        assert!(!is_transient_code("AWS.SimpleQueueService.NonExistentQueue"));
    }
}
