//! The one error type of the crate: a [`ErrorKind`] plus a message and the cause.

use std::fmt;

/// What kind of failure an [`Error`] is; match on this, not on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No BlinkStick matched (none plugged in, or not the requested serial/path).
    NotFound,
    /// The device node exists but this user may not open it: install the udev rules
    /// (`blinkstick --add-udev-rule`) and re-plug the stick.
    PermissionDenied,
    /// The stick went away (unplugged, or re-enumerated after a replug).
    Disconnected,
    /// The device refused a request for now (a Pro while it drives its WS2812 output);
    /// retrying after a few milliseconds usually works.
    Busy,
    /// The operation exists but this variant does not support it (e.g. frames on a v1 stick).
    Unsupported,
    /// A caller-supplied value is out of range or malformed (colour word, index, text).
    InvalidArgument,
    /// Any other input/output failure of the transport.
    Io,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Busy => "busy",
            ErrorKind::Unsupported => "unsupported by this variant",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Io => "input/output error",
        })
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the BlinkStick driver: a [`kind`](Error::kind), a message that says the
/// cause and the fix, and the underlying error (if any) as [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind` with `message` and no underlying cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A new error of `kind` with `message`, caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same request shortly may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Busy
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    fn permission(what: &str, source: impl Into<Source>) -> Self {
        Error::with_source(
            ErrorKind::PermissionDenied,
            format!(
                "permission denied opening {what}: install the udev rules with \
                 `sudo blinkstick --add-udev-rule`, then re-plug the stick"
            ),
            source,
        )
    }

    /// Classifies an OS error number from a transport (`EACCES` → permission denied,
    /// `ENODEV` → disconnected, `EPIPE`/`EIO`/`ETIMEDOUT`/`EAGAIN` → busy, else I/O);
    /// for writers of other [`Transport`](crate::Transport)s. `doing` says what failed
    /// ("opening /dev/hidraw3").
    pub fn from_errno(errno: i32, doing: &str, source: impl Into<Source>) -> Self {
        let (kind, hint) = match errno {
            libc_errno::EACCES | libc_errno::EPERM => return Error::permission(doing, source),
            libc_errno::ENODEV | libc_errno::ENOENT | libc_errno::ENXIO => (
                ErrorKind::Disconnected,
                "the stick was unplugged; plug it in again",
            ),
            libc_errno::EPIPE
            | libc_errno::EAGAIN
            | libc_errno::ETIMEDOUT
            | libc_errno::EIO
            | libc_errno::EBUSY
            | libc_errno::EPROTO => (
                ErrorKind::Busy,
                "the device refused the request for now; retry shortly",
            ),
            _ => (ErrorKind::Io, "check the device and the kernel log"),
        };
        Error::with_source(kind, format!("{doing} failed: {hint}"), source)
    }
}

/// Linux errno values (identical on every Linux architecture we build for).
pub(crate) mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const EAGAIN: i32 = 11;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const ENODEV: i32 = 19;
    pub const EPIPE: i32 = 32;
    pub const EPROTO: i32 = 71;
    pub const ETIMEDOUT: i32 = 110;
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        let io = || std::io::Error::from_raw_os_error(13);
        assert_eq!(
            Error::from_errno(13, "opening /dev/hidraw3", io()).kind(),
            ErrorKind::PermissionDenied
        );
        let e = Error::from_errno(13, "opening /dev/hidraw3", io());
        assert!(e.to_string().contains("--add-udev-rule"), "{e}");
        assert_eq!(
            Error::from_errno(19, "x", io()).kind(),
            ErrorKind::Disconnected
        );
        assert_eq!(Error::from_errno(32, "x", io()).kind(), ErrorKind::Busy);
        assert!(Error::from_errno(32, "x", io()).is_transient());
        assert_eq!(Error::from_errno(22, "x", io()).kind(), ErrorKind::Io);
    }
}
