//! The two files of a manifest: the GNU `sha256sum` listing and the sidecar, both written
//! and read here. See docs/manifests.md.

use std::io::Write as _;

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
    push_escaped(&mut out, name);
    out
}

/// Appends `name` to `out` escaped as [`escape`] does.
fn push_escaped(out: &mut Vec<u8>, name: &[u8]) {
    if !needs_escape(name) {
        out.extend_from_slice(name);
        return;
    }
    for &b in name {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
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

impl Entry {
    /// Appends its line of the GNU `sha256sum` listing to `out`.
    pub fn push_listing_line(&self, out: &mut Vec<u8>) {
        if needs_escape(&self.path) {
            out.push(b'\\');
        }
        push_hex(out, &self.sha256);
        out.extend_from_slice(b"  ");
        push_escaped(out, &self.path);
        out.push(b'\n');
    }

    /// Appends its line of the sidecar to `out`.
    pub fn push_sidecar_line(&self, out: &mut Vec<u8>) {
        push_hex(out, &self.sha256);
        // Into the Vec directly: writing to a Vec cannot fail.
        let _ = write!(
            out,
            " {} {} {} {:o} {} {} {} ",
            self.size, self.mtime, self.mtime_nsec, self.mode, self.uid, self.gid, self.ino
        );
        push_escaped(out, &self.path);
        out.push(b'\n');
    }

    /// One sidecar line (without its newline) read strictly; `n` is its line number.
    fn parse_sidecar_line(line: &[u8], n: usize) -> Result<Entry, ParseError> {
        let err = |what: &str| ParseError {
            line: n,
            what: what.to_string(),
        };
        let mut f = line.splitn(9, |&b| b == b' ');
        let mut next = || f.next().ok_or_else(|| err("too few fields"));
        let sha256 = parse_hex(next()?).ok_or_else(|| err("bad SHA-256"))?;
        let num = |b: &[u8], what: &str| decimal(b).ok_or_else(|| err(&format!("bad {what}")));
        let size = num(next()?, "size")?;
        let mtime = {
            let b = next()?;
            let (neg, digits) = match b.strip_prefix(b"-") {
                Some(d) => (true, d),
                None => (false, b),
            };
            decimal(digits)
                .and_then(|v| i64::try_from(v).ok())
                .map(|v| if neg { -v } else { v })
                .ok_or_else(|| err("bad mtime"))?
        };
        let nsec = num(next()?, "mtime nanoseconds")?;
        if nsec >= 1_000_000_000 {
            return Err(err("bad mtime nanoseconds"));
        }
        let mode = std::str::from_utf8(next()?)
            .ok()
            .and_then(|s| u32::from_str_radix(s, 8).ok())
            .ok_or_else(|| err("bad mode"))?;
        let uid = u32::try_from(num(next()?, "uid")?).map_err(|_| err("bad uid"))?;
        let gid = u32::try_from(num(next()?, "gid")?).map_err(|_| err("bad gid"))?;
        let ino = num(next()?, "inode")?;
        let path = unescape(next()?).ok_or_else(|| err("bad escape in the path"))?;
        if path.is_empty()
            || path.starts_with(b"/")
            || path
                .split(|&b| b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            return Err(err("not a relative path"));
        }
        Ok(Entry {
            path,
            sha256,
            size,
            mtime,
            mtime_nsec: nsec as u32,
            mode,
            uid,
            gid,
            ino,
        })
    }
}

impl Manifest {
    /// The GNU `sha256sum` listing: `HASH  NAME` a line (text mode, two spaces), names
    /// relative to the tree's root, escaped as coreutils 9 does; `sha256sum -c` in the root
    /// checks it.
    pub fn to_sha256sum(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 100);
        for e in &self.entries {
            e.push_listing_line(&mut out);
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
            e.push_sidecar_line(&mut out);
        }
        out
    }

    /// A sidecar read back (strictly: any malformed line is an error naming it; what is
    /// on a drive is untrusted).
    pub fn parse_sidecar(data: &[u8]) -> Result<Manifest, ParseError> {
        let mut entries = SidecarReader::new(data)?
            .unordered()
            .collect::<Result<Vec<Entry>, ParseError>>()?;
        // Sorted by path ([`Manifest::get`] searches it): a sidecar written in another order
        // (by hand, or by the first build, which followed the walk) is sorted here; a path
        // listed twice is refused.
        if !entries.is_sorted_by(|a, b| a.path < b.path) {
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
                return Err(ParseError {
                    line: 0,
                    what: format!(
                        "the path {} is listed twice",
                        String::from_utf8_lossy(&escape(&w[0].path))
                    ),
                });
            }
        }
        Ok(Manifest { entries })
    }
}

/// A sidecar read line by line, strictly (see [`Manifest::parse_sidecar`]), its entries
/// in path order: a line out of order (or a path twice) is an error, unless
/// [`SidecarReader::unordered`]. Holds one line at a time.
pub struct SidecarReader<R> {
    input: R,
    line: usize,
    buf: Vec<u8>,
    /// The previous entry's path (empty before the first: no path is empty).
    last: Vec<u8>,
    ordered: bool,
}

impl<R: std::io::BufRead> SidecarReader<R> {
    /// Reads the header line: an error when it is not a sidecar's.
    pub fn new(mut input: R) -> Result<Self, ParseError> {
        let mut buf = vec![];
        let bad = |what: String| ParseError { line: 1, what };
        input
            .read_until(b'\n', &mut buf)
            .map_err(|e| bad(e.to_string()))?;
        if buf.strip_suffix(b"\n") != Some(SIDECAR_HEADER.as_bytes()) {
            return Err(bad(format!("not an {SIDECAR_HEADER:?} sidecar")));
        }
        Ok(SidecarReader {
            input,
            line: 1,
            buf,
            last: vec![],
            ordered: true,
        })
    }

    /// Entries in any order (the caller sorts them).
    pub fn unordered(mut self) -> Self {
        self.ordered = false;
        self
    }
}

impl<R: std::io::BufRead> Iterator for SidecarReader<R> {
    type Item = Result<Entry, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            let n = self.line;
            let err = |what: &str| {
                Some(Err(ParseError {
                    line: n,
                    what: what.to_string(),
                }))
            };
            match self.input.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return err(&e.to_string()),
            }
            let Some(line) = self.buf.strip_suffix(b"\n") else {
                return err("the file does not end with a newline (cut short?)");
            };
            if line.is_empty() {
                continue;
            }
            let e = match Entry::parse_sidecar_line(line, n) {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            if self.ordered {
                if !self.last.is_empty() && e.path <= self.last {
                    return err("out of order (paths are sorted, each listed once)");
                }
                self.last.clone_from(&e.path);
            }
            return Some(Ok(e));
        }
    }
}

/// A decimal number of digits only (no sign, no spaces), `None` when it overflows.
fn decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    b.iter().try_fold(0u64, |v, &d| {
        d.is_ascii_digit()
            .then(|| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
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
        // Out of order: sorted; a path twice: refused.
        let swapped = Manifest {
            entries: vec![entry(b"b"), entry(b"a.b"), entry(b"a/x")],
        };
        let back = Manifest::parse_sidecar(&swapped.to_sidecar()).unwrap();
        assert!(back.get(b"a/x").is_some() && back.get(b"a.b").is_some());
        let twice = Manifest {
            entries: vec![entry(b"b"), entry(b"a"), entry(b"b")],
        };
        let e = Manifest::parse_sidecar(&twice.to_sidecar()).unwrap_err();
        assert!(e.what.contains("the path b is listed twice"), "{e}");
        for bad in ["+5", " 5", "99999999999999999999999"] {
            let text =
                String::from_utf8(good.clone())
                    .unwrap()
                    .replacen(" 5 ", &format!(" {bad} "), 1);
            assert_eq!(
                Manifest::parse_sidecar(text.as_bytes()).unwrap_err().line,
                2,
                "{bad:?}"
            );
        }
        let text = String::from_utf8(good).unwrap().replacen("ab", "xy", 1);
        assert_eq!(
            Manifest::parse_sidecar(text.as_bytes()).unwrap_err().line,
            2
        );
    }
}
