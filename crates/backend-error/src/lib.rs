//! The error shape shared by the backend traits (`Indicator`, `Crypt`, `Mounter`,
//! `Notifier`, `Syncer`): a kind the caller can match on, a message in the trait's own
//! words (what failed and, where known, how to fix it), and the backend's error as the
//! source, so that `{:#}` prints the whole chain on one line.
//!
//! ```
//! #[derive(Clone, Copy, Debug, PartialEq, Eq)]
//! enum Kind { NotFound }
//! type MyError = backend_error::Error<Kind>;
//! let io = std::io::Error::from(std::io::ErrorKind::NotFound);
//! let e = MyError::new(Kind::NotFound, "opening /dev/sdx").with_source(io);
//! assert_eq!(e.kind(), Kind::NotFound);
//! assert!(format!("{}", e).starts_with("opening /dev/sdx"));
//! ```
#![warn(missing_docs)]

use std::fmt;

/// `error: cause: cause...` on one line: the message and every `source()`, as anyhow's
/// `{:#}` prints it (the errors' own `Display` shows only their message).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A boxed cause.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of kind `K` with a message and an optional source.
#[derive(thiserror::Error)]
#[error("{message}")]
pub struct Error<K: fmt::Debug + Copy + Send + Sync + 'static> {
    kind: K,
    message: String,
    #[source]
    source: Option<Source>,
}

impl<K: fmt::Debug + Copy + Send + Sync + 'static> Error<K> {
    /// A new error of `kind`; `message` says what failed (not the cause: that is the source).
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the backend's error as the cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The broad kind of failure.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// The message without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<K: fmt::Debug + Copy + Send + Sync + 'static> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)?;
        let mut src = self.source.as_deref().map(|s| s as &dyn std::error::Error);
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum K {
        A,
    }

    #[test]
    fn chain_is_printed_by_debug_and_kept_as_source() {
        let inner = std::io::Error::other("disk on fire");
        let e = Error::new(K::A, "writing header").with_source(inner);
        assert_eq!(e.to_string(), "writing header");
        assert_eq!(format!("{e:?}"), "A: writing header: disk on fire");
        let src = std::error::Error::source(&e).expect("source kept");
        assert_eq!(src.to_string(), "disk on fire");
        assert_eq!(chain(&e), "writing header: disk on fire");
    }
}
