//! systemd unit-name escaping, equal to `systemd-escape` and `systemd-escape --path`
//! (systemd 252, `src/basic/unit-name.c`), and the reverse (`--unescape`).
//!
//! The rules:
//! - [`escape`]: every `/` becomes `-`; every byte other than ASCII letters, digits, `:`,
//!   `_` and `.` becomes `\xNN` (lower-case hex; so `-` is `\x2d` and `\` is `\x5c`); a
//!   leading `.` is escaped too.
//! - [`escape_path`]: the path is simplified first (duplicate `/` and `.` components
//!   dropped, leading and trailing `/` dropped); `/` and the empty path become `-`; a path
//!   with a `..` component, a component longer than 255 bytes, or 4096 bytes or more is
//!   rejected.
//! - [`unescape`] turns `-` back into `/` and `\xNN` into the byte; [`unescape_path`] adds
//!   the leading `/` back and rejects what [`escape_path`] could not have produced.
//!
//! ```
//! use extbackup::system::escape;
//! assert_eq!(
//!     escape::escape_path("/dev/disk/by-uuid/0b1c-aaaa").unwrap(),
//!     r"dev-disk-by\x2duuid-0b1c\x2daaaa"
//! );
//! // udev's by-label names are already escaped: escaping again is not the same name.
//! assert_eq!(escape::escape(r"My\x20Backup"), r"My\x5cx20Backup");
//! assert_eq!(escape::unescape(r"a\x2db-c").unwrap(), "a-b/c");
//! ```

use std::fmt;

/// The longest path the kernel (and systemd) accepts, NUL included.
const PATH_MAX: usize = 4096;
/// The longest path component.
const NAME_MAX: usize = 255;

/// Why a string could not be escaped or unescaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    /// `--path` input that is not a normalized path (a `..` component, only `.`).
    #[error("{0:?} is not a normalized file system path (no `..` or bare `.` allowed): give an absolute path without `..`")]
    NotNormalized(String),
    /// `--path` input too long, or with a component longer than 255 bytes.
    #[error("{0:?} is not a valid file system path (too long, or a component over 255 bytes)")]
    TooLong(String),
    /// Unescape input with a `\` not followed by `x` and two hex digits, or decoding to NUL.
    #[error(
        "{0:?} is not a valid escaped unit name: `\\` must be followed by `x` and two hex digits"
    )]
    BadEscape(String),
    /// Unescape input that decodes to bytes that are not UTF-8 (use [`unescape_bytes`]).
    #[error("{0:?} unescapes to bytes that are not UTF-8")]
    NotUtf8(String),
    /// `--path` unescape input that is empty or does not decode to a normalized path.
    #[error("{0:?} does not unescape to a normalized absolute path")]
    NotAPath(String),
}

fn push_escaped_byte(out: &mut String, b: u8) {
    use std::fmt::Write;
    let _ = write!(out, "\\x{b:02x}");
}

/// Escapes `s` as `systemd-escape` (no options) does.
pub fn escape(s: &str) -> String {
    escape_bytes(s.as_bytes())
}

/// Escapes raw bytes (e.g. a label that is not UTF-8) as `systemd-escape` does.
pub fn escape_bytes(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for (i, &b) in s.iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => push_escaped_byte(&mut out, b),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => push_escaped_byte(&mut out, b),
        }
    }
    out
}

/// Escapes a path as `systemd-escape --path` does.
pub fn escape_path(path: &str) -> Result<String, EscapeError> {
    escape_path_bytes(path.as_bytes())
}

/// [`escape_path`] on raw bytes.
pub fn escape_path_bytes(path: &[u8]) -> Result<String, EscapeError> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    if path.len() >= PATH_MAX {
        return Err(EscapeError::TooLong(shown()));
    }
    let components: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if components.iter().any(|c| c.len() > NAME_MAX) {
        return Err(EscapeError::TooLong(shown()));
    }
    if components.is_empty() {
        // "", "/", "//", "/." simplify to the root; a relative "." or "./" does not.
        let relative_dot = !path.is_empty() && path[0] != b'/';
        return if relative_dot {
            Err(EscapeError::NotNormalized(shown()))
        } else {
            Ok("-".to_string())
        };
    }
    if components.iter().any(|c| *c == b"..") {
        return Err(EscapeError::NotNormalized(shown()));
    }
    Ok(escape_bytes(&components.join(&b'/')))
}

/// Unescapes a unit-name part as `systemd-escape --unescape` does, to bytes.
pub fn unescape_bytes(s: &str) -> Result<Vec<u8>, EscapeError> {
    let bad = || EscapeError::BadEscape(s.to_string());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            b'\\' => {
                if b.get(i + 1) != Some(&b'x') {
                    return Err(bad());
                }
                let hex = |j: usize| {
                    b.get(j)
                        .and_then(|c| (*c as char).to_digit(16))
                        .ok_or_else(bad)
                };
                let v = (hex(i + 2)? << 4 | hex(i + 3)?) as u8;
                if v == 0 {
                    return Err(bad());
                }
                out.push(v);
                i += 4;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Unescapes as `systemd-escape --unescape` does; the result must be UTF-8.
pub fn unescape(s: &str) -> Result<String, EscapeError> {
    String::from_utf8(unescape_bytes(s)?).map_err(|_| EscapeError::NotUtf8(s.to_string()))
}

/// Unescapes as `systemd-escape --unescape --path` does: the result is an absolute,
/// normalized path.
pub fn unescape_path(s: &str) -> Result<String, EscapeError> {
    if s.is_empty() {
        return Err(EscapeError::NotAPath(s.to_string()));
    }
    if s == "-" {
        return Ok("/".to_string());
    }
    let inner = unescape(s)?;
    let not_path = || EscapeError::NotAPath(s.to_string());
    if inner.starts_with('/') || inner.ends_with('/') {
        return Err(not_path());
    }
    let path = format!("/{inner}");
    let normalized = path.len() < PATH_MAX
        && inner
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= NAME_MAX);
    if !normalized {
        return Err(not_path());
    }
    Ok(path)
}

/// The device unit systemd creates for `/dev/disk/by-uuid/<uuid>`
/// (`dev-disk-by\x2duuid-….device`).
pub fn device_unit_for_uuid(uuid: &str) -> Result<String, EscapeError> {
    Ok(format!(
        "{}.device",
        escape_path(&format!("/dev/disk/by-uuid/{uuid}"))?
    ))
}

/// The name of an instance of a template unit: `instance_unit("extbackup", "service", x)`
/// is `extbackup@<escape(x)>.service`, as `systemd-escape --template=extbackup@.service x`.
pub fn instance_unit(prefix: &str, suffix: &str, instance: &str) -> String {
    format!("{prefix}@{}.{suffix}", escape(instance))
}

/// A unit name shown in logs with its instance decoded.
pub struct Unescaped<'a>(pub &'a str);

impl fmt::Display for Unescaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match unescape(self.0) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_escape_rules() {
        assert_eq!(escape("abc:_.Z09"), "abc:_.Z09");
        assert_eq!(escape("a-b"), r"a\x2db");
        assert_eq!(escape("a/b"), "a-b");
        assert_eq!(escape(".x"), r"\x2ex");
        assert_eq!(escape("x.y"), "x.y");
        assert_eq!(escape("ä"), r"\xc3\xa4");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn path_escape_rules() {
        assert_eq!(escape_path("/").unwrap(), "-");
        assert_eq!(escape_path("").unwrap(), "-");
        assert_eq!(escape_path("//a//b/").unwrap(), "a-b");
        assert_eq!(escape_path("/a/./b").unwrap(), "a-b");
        assert_eq!(escape_path("/.hidden/x").unwrap(), r"\x2ehidden-x");
        assert!(matches!(
            escape_path("/a/../b"),
            Err(EscapeError::NotNormalized(_))
        ));
        assert!(matches!(
            escape_path("."),
            Err(EscapeError::NotNormalized(_))
        ));
        let long = format!("/{}", "a".repeat(256));
        assert!(matches!(escape_path(&long), Err(EscapeError::TooLong(_))));
    }

    #[test]
    fn unescape_rules() {
        assert_eq!(unescape(r"a\x2Db-c").unwrap(), "a-b/c");
        assert!(unescape(r"a\xZZ").is_err());
        assert!(unescape(r"a\X2d").is_err());
        assert!(unescape(r"x\").is_err());
        assert_eq!(unescape_path("-").unwrap(), "/");
        assert_eq!(unescape_path("a-b").unwrap(), "/a/b");
        assert!(unescape_path("a--b").is_err());
        assert!(unescape_path(r"\x2e\x2e").is_err());
        assert!(unescape_path("").is_err());
    }

    #[test]
    fn device_unit_matches_seed() {
        assert_eq!(
            device_unit_for_uuid("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa").unwrap(),
            r"dev-disk-by\x2duuid-aaaaaaaa\x2daaaa\x2daaaa\x2daaaa\x2daaaaaaaaaaaa.device"
        );
        assert_eq!(
            instance_unit("extbackup", "service", "0b1c-aa"),
            r"extbackup@0b1c\x2daa.service"
        );
    }
}
