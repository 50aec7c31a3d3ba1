//! The configuration's value types: each a newtype that serde reads through `TryFrom`, so a
//! bad value is refused while parsing, with toml's line and column. [`checked!`] writes the
//! repeated part (the `TryFrom` from the raw TOML value, and the accessors) once.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Declares the `TryFrom<raw>` of a value type from a check that returns the inner value or
/// the message, and its accessors: `text` types get `as_str`, `Display` and `Into<String>`,
/// `number` types `get`; `plain` types only the conversion. The serde attributes
/// (`try_from`, `into`) stay on the type, where they are read.
macro_rules! checked {
    (text $name:ident from $raw:ty, |$v:ident| $check:expr) => {
        checked!(plain $name from $raw, |$v| $check);
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
    };
    (number $name:ident($inner:ty) from $raw:ty, |$v:ident| $check:expr) => {
        checked!(plain $name from $raw, |$v| $check);
        impl $name {
            /// The value.
            pub fn get(self) -> $inner {
                self.0
            }
        }
        impl From<$name> for $inner {
            fn from(n: $name) -> $inner {
                n.0
            }
        }
    };
    (plain $name:ident from $raw:ty, |$v:ident| $check:expr) => {
        impl TryFrom<$raw> for $name {
            type Error = String;
            fn try_from($v: $raw) -> Result<Self, String> {
                $check.map(Self)
            }
        }
    };
}

/// A drive name: letters, digits, `-` and `_`, 1..=32 characters; used in the mapping
/// name (`extbackup-NAME`), the mount point and the state file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DriveName(String);

checked!(text DriveName from String, |s| {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "bad drive name {s:?}: use 1 to 32 letters, digits, `-` or `_`"
        ))
    }
});

/// A LUKS UUID, lower-case and hyphenated (8-4-4-4-12 hex digits), as in
/// `/dev/disk/by-uuid` and `cryptsetup luksUUID`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Uuid(String);

checked!(text Uuid from String, |s| {
    // The hyphenated form only (`uuid` also takes braces, `urn:` and bare hex).
    uuid::Uuid::try_parse(&s)
        .ok()
        .map(|u| u.hyphenated().to_string())
        .filter(|h| h.eq_ignore_ascii_case(&s))
        .ok_or_else(|| {
            format!(
                "bad UUID {s:?}: expected 8-4-4-4-12 hex digits, as `cryptsetup luksUUID DEVICE` prints"
            )
        })
});

/// A share 0.0..=1.0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Fraction(pub(super) f64);

checked!(number Fraction(f64) from f64, |v| {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a share between 0.0 and 1.0"))
    }
});

/// A source's name: like a drive's name (letters, digits, `-`, `_`; 1 to 32); the name of
/// its folder on the drive.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SourceName(String);

checked!(text SourceName from String, |s| {
    DriveName::try_from(s)
        .map(String::from)
        .map_err(|e| e.replacen("drive name", "source name", 1))
});

/// Checked exclude patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct ExcludeList(pub syncer::Excludes);

checked!(plain ExcludeList from Vec<String>, |v| {
    syncer::Excludes::new(&v)
        .map_err(|e| format!("{e} (see docs/configuration.md, Exclude patterns)"))
});

/// A nice value, -20..=19.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Nice(i32);

checked!(number Nice(i32) from i64, |v| {
    if (-20..=19).contains(&v) {
        Ok(v as i32)
    } else {
        Err(format!(
            "nice = {v}: give -20 (first) to 19 (last, the quietest)"
        ))
    }
});

/// An I/O priority level, 0..=7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct IoLevel(u8);

checked!(number IoLevel(u8) from u64, |v| {
    if v <= 7 {
        Ok(v as u8)
    } else {
        Err(format!("io_priority = {v}: give 0 (first) to 7 (last)"))
    }
});

/// A whole number, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct Positive(u64);

checked!(number Positive(u64) from u64, |v| {
    if v == 0 {
        Err("0: give at least 1 (or leave the key out)".to_string())
    } else {
        Ok(v)
    }
});

/// An `http://` or `https://` URL without a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PingUrl(String);

impl PingUrl {
    /// The URL for `drive` (`{drive}` replaced).
    pub fn for_drive(&self, drive: &str) -> String {
        self.0.replace("{drive}", drive)
    }
}

checked!(plain PingUrl from String, |s| {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r)
            if !r.is_empty()
                && !r.starts_with('/')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => Err(format!(
            "bad ping URL {s:?}: give an http:// or https:// URL such as https://hc-ping.com/YOUR-UUID"
        )),
    }
});

/// A hook's name: 1 to 64 printable characters.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HookName(String);

checked!(text HookName from String, |s| {
    if s.is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
        Err(format!(
            "bad hook name {s:?}: use 1 to 64 printable characters"
        ))
    } else {
        Ok(s)
    }
});

/// A hook's argv: not empty, the program an absolute path.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct HookCommand(Vec<String>);

impl HookCommand {
    /// Program and arguments.
    pub fn argv(&self) -> &[String] {
        &self.0
    }
}

checked!(plain HookCommand from Vec<String>, |v| {
    match v.first() {
        None => Err("hook command is empty: give the program and its arguments".to_string()),
        Some(p) if !p.starts_with('/') => Err(format!(
            "hook program {p:?} is not an absolute path (runs under systemd have a bare PATH)"
        )),
        Some(_) => Ok(v),
    }
});

/// The longest wait or timeout a setting may give: one day. More is a typo (or 2^63), and
/// would keep a drive plugged in and a run waiting forever.
pub const MAX_WAIT_SECS: u64 = 86_400;

/// A whole number of seconds, at least 1 and at most a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct Seconds(pub(super) u64);

impl Seconds {
    /// As a duration.
    pub fn get(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

checked!(plain Seconds from u64, |v| {
    if v == 0 {
        Err("0 seconds: give at least 1".to_string())
    } else if v > MAX_WAIT_SECS {
        Err(format!(
            "{v} seconds is more than a day: give at most {}",
            MAX_WAIT_SECS
        ))
    } else {
        Ok(v)
    }
});
