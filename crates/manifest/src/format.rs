//! The two files of a manifest: the GNU `sha256sum` listing and the sidecar, both written
//! and read here. See docs/manifests.md.

use crate::{Digest, Entry, Manifest};

/// The first line of a sidecar.
pub const SIDECAR_HEADER: &str = "extbackup-manifest 1";

/// What a sidecar or a `sha256sum` listing that cannot be read is.
#[derive(Debug)]
pub struct ParseError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub what: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for ParseError {}

/// Whether GNU coreutils (9.x) escapes `name` in a checksum line: a name holding a
/// backslash, a newline or a carriage return is written with `\\`, `\n`, `\r` and the line
/// starts with a backslash.
fn needs_escape(name: &[u8]) -> bool {
    name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'))
}

/// `name` with `\` `\n` `\r` escaped as GNU `sha256sum` does.
pub fn escape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for &b in name {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for an escape GNU never writes.
pub fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next()? {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            _ => return None,
        }
    }
    Some(out)
}

/// The digest in lower-case hex.
pub fn hex(d: &Digest) -> String {
    let mut v = Vec::with_capacity(64);
    push_hex(&mut v, d);
    String::from_utf8(v).expect("hex digits")
}

/// Appends the digest in lower-case hex to `out`.
fn push_hex(out: &mut Vec<u8>, d: &Digest) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in d {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// A digest from 64 hex digits.
pub fn parse_hex(s: &[u8]) -> Option<Digest> {
    if s.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        d[i] = (hi * 16 + lo) as u8;
    }
    Some(d)
}

impl Manifest {
    /// The GNU `sha256sum` listing: `HASH  NAME` a line (text mode, two spaces), names
    /// relative to the tree's root, escaped as coreutils 9 does; `sha256sum -c` in the root
    /// checks it.
    pub fn to_sha256sum(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 100);
        for e in &self.entries {
            if needs_escape(&e.path) {
                out.push(b'\\');
            }
            push_hex(&mut out, &e.sha256);
            out.extend_from_slice(b"  ");
            out.extend_from_slice(&escape(&e.path));
            out.push(b'\n');
        }
        out
    }

    /// The sidecar: a header line, then one line a file, fields apart by one space:
    /// `SHA256 SIZE MTIME_SEC MTIME_NSEC MODE UID GID INODE PATH` (mode in octal, the
    /// path last and escaped as in the listing).
    pub fn to_sidecar(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 140);
        out.extend_from_slice(SIDECAR_HEADER.as_bytes());
        out.push(b'\n');
        for e in &self.entries {
            push_hex(&mut out, &e.sha256);
            out.extend_from_slice(
                format!(
                    " {} {} {} {:o} {} {} {} ",
                    e.size, e.mtime, e.mtime_nsec, e.mode, e.uid, e.gid, e.ino
                )
                .as_bytes(),
            );
            out.extend_from_slice(&escape(&e.path));
            out.push(b'\n');
        }
        out
    }

    /// A sidecar read back (strictly: any malformed line is an error naming it; what is
    /// on a drive is untrusted).
    pub fn parse_sidecar(data: &[u8]) -> Result<Manifest, ParseError> {
        let mut lines = data.split(|&b| b == b'\n');
        let err = |line: usize, what: &str| ParseError {
            line,
            what: what.to_string(),
        };
        if lines.next() != Some(SIDECAR_HEADER.as_bytes()) {
            return Err(err(1, &format!("not an {SIDECAR_HEADER:?} sidecar")));
        }
        if data.last() != Some(&b'\n') {
            return Err(err(0, "the file does not end with a newline (cut short?)"));
        }
        let mut entries = vec![];
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            if line.is_empty() {
                continue;
            }
            let mut f = line.splitn(9, |&b| b == b' ');
            let mut next = || f.next().ok_or_else(|| err(n, "too few fields"));
            let sha256 = parse_hex(next()?).ok_or_else(|| err(n, "bad SHA-256"))?;
            let num = |b: &[u8], what: &str| -> Result<u64, ParseError> {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| err(n, &format!("bad {what}")))
            };
            let size = num(next()?, "size")?;
            let mtime = std::str::from_utf8(next()?)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| err(n, "bad mtime"))?;
            let nsec = num(next()?, "mtime nanoseconds")?;
            if nsec >= 1_000_000_000 {
                return Err(err(n, "bad mtime nanoseconds"));
            }
            let mode = std::str::from_utf8(next()?)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 8).ok())
                .ok_or_else(|| err(n, "bad mode"))?;
            let uid = u32::try_from(num(next()?, "uid")?).map_err(|_| err(n, "bad uid"))?;
            let gid = u32::try_from(num(next()?, "gid")?).map_err(|_| err(n, "bad gid"))?;
            let ino = num(next()?, "inode")?;
            let path = unescape(next()?).ok_or_else(|| err(n, "bad escape in the path"))?;
            if path.is_empty()
                || path.starts_with(b"/")
                || path
                    .split(|&b| b == b'/')
                    .any(|c| c.is_empty() || c == b"." || c == b"..")
            {
                return Err(err(n, "not a relative path"));
            }
            entries.push(Entry {
                path,
                sha256,
                size,
                mtime,
                mtime_nsec: nsec as u32,
                mode,
                uid,
                gid,
                ino,
            });
        }
        Ok(Manifest { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &[u8]) -> Entry {
        Entry {
            path: path.to_vec(),
            sha256: [0xab; 32],
            size: 5,
            mtime: -3,
            mtime_nsec: 999_999_999,
            mode: 0o104755,
            uid: 1000,
            gid: 4294967294,
            ino: 12,
        }
    }

    #[test]
    fn escapes_as_gnu_and_round_trips() {
        assert_eq!(escape(b"a\\b\nc\rd"), b"a\\\\b\\nc\\rd");
        assert_eq!(unescape(b"a\\\\b\\nc\\rd").unwrap(), b"a\\b\nc\rd");
        assert!(unescape(b"a\\x").is_none());
        assert!(unescape(b"a\\").is_none());
        let m = Manifest {
            entries: vec![entry(b"plain"), entry(b"we\nird \\ \xff")],
        };
        let text = m.to_sha256sum();
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        assert_eq!(&lines[0][64..], b"  plain");
        assert_eq!(lines[1][0], b'\\');
        assert_eq!(&lines[1][65..], b"  we\\nird \\\\ \xff");
        let back = Manifest::parse_sidecar(&m.to_sidecar()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_bad_sidecar_is_refused_naming_the_line() {
        let m = Manifest {
            entries: vec![entry(b"a"), entry(b"b")],
        };
        let good = m.to_sidecar();
        assert!(Manifest::parse_sidecar(b"something else\n").is_err());
        assert!(Manifest::parse_sidecar(&good[..good.len() - 1]).is_err());
        for bad in ["zz", "../x", "/etc/passwd", "a//b", "a\\q"] {
            let text = String::from_utf8(good.clone())
                .unwrap()
                .replace(" b\n", &format!(" {bad}\n"));
            let e = Manifest::parse_sidecar(text.as_bytes());
            if bad == "zz" {
                assert!(e.is_ok(), "a plain name is fine");
            } else {
                assert_eq!(e.unwrap_err().line, 3, "{bad}");
            }
        }
        let text = String::from_utf8(good).unwrap().replacen("ab", "xy", 1);
        assert_eq!(
            Manifest::parse_sidecar(text.as_bytes()).unwrap_err().line,
            2
        );
    }
}
