//! The orchestrator's own error: what a step (of a run, or of `prepare`) was doing, in the
//! orchestrator's words, with the backend's error as the source.

/// A boxed cause.
type Source = Box<dyn std::error::Error + Send + Sync>;

/// What failed and, where known, how to fix it; the cause is the `source()`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    message: String,
    #[source]
    source: Option<Source>,
}

impl Failure {
    /// A failure with no deeper cause.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A failure caused by `source` (an error, or a message of the cause).
    pub fn with(message: impl Into<String>, source: impl Into<Source>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The message and every cause, outermost first.
    pub fn chain(&self) -> Vec<String> {
        let mut v = vec![self.message.clone()];
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            v.push(s.to_string());
            src = s.source();
        }
        v
    }
}

pub use backend_error::chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_prints_every_cause() {
        let io = std::io::Error::other("disk on fire");
        let e =
            crypt::CryptError::new(crypt::ErrorKind::Other, "unlocking /dev/sdb").with_source(io);
        assert_eq!(chain(&e), "unlocking /dev/sdb: disk on fire");
    }

    #[test]
    fn failure_lists_message_then_causes() {
        let f = Failure::with("mounting /dev/mapper/x", std::io::Error::other("EBUSY"));
        assert_eq!(f.chain(), vec!["mounting /dev/mapper/x", "EBUSY"]);
        assert_eq!(Failure::new("plain").chain(), vec!["plain"]);
    }
}
