//! Which write errors on standard output are worth retrying.

use std::io::ErrorKind;

use crate::destinations::DestError;

/// A full disk behind a redirect, or an interrupted write, may clear; a
/// closed pipe (the consumer went away) or anything else will not.
pub fn classify(e: &std::io::Error) -> DestError {
    let message = format!("writing to standard output: {e}");
    match e.kind() {
        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::StorageFull | ErrorKind::TimedOut => DestError::Transient(message),
        ErrorKind::BrokenPipe => DestError::Permanent(format!("{message} (the reading end of the pipe is closed)")),
        _ => DestError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_permanent_a_full_disk_is_not() {
        assert!(!classify(&std::io::Error::from(ErrorKind::BrokenPipe)).is_retriable());
        assert!(classify(&std::io::Error::from(ErrorKind::StorageFull)).is_retriable());
    }
}
