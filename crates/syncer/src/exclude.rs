//! Exclude patterns: the subset of rsync's exclude-pattern language that extbackup accepts,
//! matched here exactly as rsync matches it (the rsync backend hands the same patterns to
//! rsync; a test runs both over one tree and compares what they select).
//!
//! A pattern is matched against the path of each entry relative to the source's root
//! (`photos/2024/a.jpg`):
//!
//! - no `/` (other than a trailing one) and no `**`: matched against the entry's name at
//!   any depth (`*.tmp`, `.cache`);
//! - a leading `/`: anchored at the source's root (`/cache` is only the top-level one);
//! - a `/` inside (`build/out`): matched against the end of the path, whole names only;
//! - a trailing `/`: only folders match (`node_modules/`);
//! - `*` matches any run of characters but `/`, `?` one character but `/`; `**` matches
//!   anything, `/` included (`**/node_modules/` is every `node_modules` folder, the
//!   top-level one too, as the pattern starts with `**`; `a/**/b` needs at least one folder
//!   between `a` and `b`, as in rsync);
//! - `[abc]`, `[a-z]`, `[!a-z]` or `[^a-z]`, `[[:digit:]]`: one character of a class
//!   (never `/`);
//! - in a pattern with wildcards a `\` makes the next character literal; in a pattern
//!   without wildcards it is a literal `\`.
//!
//! An excluded folder is not entered: nothing below it is copied. Refused, with a message:
//! an empty pattern, rsync filter-rule prefixes (`+ `, `- `, `!`), a trailing `***`, an
//! unclosed `[`, a control character (newlines cannot be passed to rsync).

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One checked pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// As written.
    text: String,
    /// Without the leading `/` and the trailing `/`.
    body: Vec<u8>,
    anchored: bool,
    dir_only: bool,
    wild: bool,
    /// Contains `**`.
    wild2: bool,
    /// `/` inside `body`.
    slashes: usize,
}

/// A refused pattern: the pattern and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why it is refused.
    pub reason: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exclude pattern {:?}: {}", self.pattern, self.reason)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Checks `text` against the supported subset.
    pub fn new(text: &str) -> Result<Self, PatternError> {
        let err = |reason: &str| PatternError {
            pattern: text.into(),
            reason: reason.into(),
        };
        refuse_unsupported(text).map_err(err)?;
        let mut body = text.as_bytes();
        let anchored = body.first() == Some(&b'/');
        if anchored {
            body = &body[1..];
        }
        let dir_only = body.len() > 1 && body.last() == Some(&b'/');
        if dir_only {
            body = &body[..body.len() - 1];
        }
        if body.is_empty() || body.ends_with(b"/") {
            return Err(err("names nothing: give a name after the `/`"));
        }
        let wild = body.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
        if wild {
            check_classes(body).map_err(err)?;
        }
        Ok(Self {
            text: text.into(),
            wild2: wild && body.windows(2).any(|w| w == b"**"),
            slashes: body.iter().filter(|b| **b == b'/').count(),
            body: body.to_vec(),
            anchored,
            dir_only,
            wild,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the entry at `rel` (relative to the source's root, `/`-separated, no leading
    /// `/`) matches.
    pub fn matches(&self, rel: &[u8], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        let prefix = self.wild2 && self.body.starts_with(b"**");
        let name_only = !self.anchored && self.slashes == 0 && !self.wild2;
        let subject: std::borrow::Cow<'_, [u8]> = if name_only {
            rel.rsplit(|b| *b == b'/').next().unwrap_or(rel).into()
        } else if prefix {
            // rsync lets a leading `**` match the root's `/`: `**/x` matches `x` at the top.
            [b"/", rel].concat().into()
        } else {
            rel.into()
        };
        if !self.wild {
            return self.literal(&subject);
        }
        if self.anchored || prefix || name_only {
            return wildmatch(&self.body, &subject);
        }
        if !self.wild2 {
            // The last `slashes + 1` names of the path.
            return wildmatch(&self.body, tail_names(&subject, self.slashes + 1));
        }
        // An inner or trailing `**`: tried at the start and after every `/`.
        std::iter::once(0)
            .chain(
                subject
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'/')
                    .map(|(i, _)| i + 1),
            )
            .any(|i| wildmatch(&self.body, &subject[i..]))
    }

    fn literal(&self, subject: &[u8]) -> bool {
        let p = &self.body[..];
        if self.anchored {
            return subject == p;
        }
        subject.ends_with(p)
            && (subject.len() == p.len() || subject[subject.len() - p.len() - 1] == b'/')
    }
}

/// The rsync syntax this module does not implement, refused rather than misread.
fn refuse_unsupported(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("is empty");
    }
    if text.chars().any(char::is_control) {
        return Err("holds a newline or another control character");
    }
    if text.starts_with("+ ") || text.starts_with("- ") || text == "!" {
        return Err(
            "rsync filter-rule prefixes (`+ `, `- `, `!`) are not supported: give the \
             pattern alone (every pattern excludes)",
        );
    }
    if text.trim_end_matches('/').ends_with("***") {
        return Err(
            "a trailing `***` is not supported: `dir/` excludes a folder and everything in it",
        );
    }
    Ok(())
}

/// Refuses an unclosed `[`.
fn check_classes(p: &[u8]) -> Result<(), &'static str> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' => i += 2,
            b'[' => match class_end(p, i) {
                Some(end) => i = end + 1,
                None => return Err("has a `[` without its `]`"),
            },
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index of the `]` closing the class opened at `start`.
fn class_end(p: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if matches!(p.get(i), Some(b'!' | b'^')) {
        i += 1;
    }
    let first = i;
    while i < p.len() {
        match p[i] {
            b']' if i > first => return Some(i),
            b'\\' => i += 2,
            b'[' if p.get(i + 1) == Some(&b':') => {
                let close = p[i + 2..].windows(2).position(|w| w == b":]")?;
                i += close + 4;
            }
            _ => i += 1,
        }
    }
    None
}

/// The last `n` `/`-separated names of `s` (all of `s` when it has fewer).
fn tail_names(s: &[u8], n: usize) -> &[u8] {
    let mut seen = 0;
    for (i, b) in s.iter().enumerate().rev() {
        if *b == b'/' {
            seen += 1;
            if seen == n {
                return &s[i + 1..];
            }
        }
    }
    s
}

/// rsync's wildmatch: `*` stops at `/`, `**` does not, `?` and classes never match `/`.
fn wildmatch(p: &[u8], t: &[u8]) -> bool {
    let (Some(&pc), rest) = (p.first(), p.get(1..).unwrap_or(&[])) else {
        return t.is_empty();
    };
    match pc {
        b'*' => {
            let stars = p.iter().take_while(|b| **b == b'*').count();
            let after = &p[stars..];
            let cross = stars >= 2;
            for i in 0..=t.len() {
                if wildmatch(after, &t[i..]) {
                    return true;
                }
                if i < t.len() && t[i] == b'/' && !cross {
                    return false;
                }
            }
            false
        }
        b'?' => t.first().is_some_and(|c| *c != b'/') && wildmatch(rest, &t[1..]),
        b'[' => {
            let end = class_end(p, 0).expect("classes checked when the pattern was made");
            t.first()
                .is_some_and(|c| *c != b'/' && class_matches(&p[1..end], *c))
                && wildmatch(&p[end + 1..], &t[1..])
        }
        b'\\' if !rest.is_empty() => t.first() == Some(&rest[0]) && wildmatch(&rest[1..], &t[1..]),
        c => t.first() == Some(&c) && wildmatch(rest, &t[1..]),
    }
}

/// Whether `c` is in the class `spec` (between `[` and `]`).
fn class_matches(spec: &[u8], c: u8) -> bool {
    let (negated, spec) = match spec.first() {
        Some(b'!' | b'^') => (true, &spec[1..]),
        _ => (false, spec),
    };
    let mut hit = false;
    let mut i = 0;
    while i < spec.len() {
        if spec[i] == b'[' && spec.get(i + 1) == Some(&b':') {
            let close = spec[i + 2..]
                .windows(2)
                .position(|w| w == b":]")
                .unwrap_or(0);
            hit |= named_class(&spec[i + 2..i + 2 + close], c);
            i += close + 4;
            continue;
        }
        let (lo, next) = if spec[i] == b'\\' && i + 1 < spec.len() {
            (spec[i + 1], i + 2)
        } else {
            (spec[i], i + 1)
        };
        if spec.get(next) == Some(&b'-') && next + 1 < spec.len() {
            let hi_at = next + 1;
            let (hi, after) = if spec[hi_at] == b'\\' && hi_at + 1 < spec.len() {
                (spec[hi_at + 1], hi_at + 2)
            } else {
                (spec[hi_at], hi_at + 1)
            };
            hit |= (lo..=hi).contains(&c);
            i = after;
        } else {
            hit |= lo == c;
            i = next;
        }
    }
    hit != negated
}

fn named_class(name: &[u8], c: u8) -> bool {
    match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"blank" => c == b' ' || c == b'\t',
        b"cntrl" => c.is_ascii_control(),
        b"digit" => c.is_ascii_digit(),
        b"graph" => c.is_ascii_graphic(),
        b"lower" => c.is_ascii_lowercase(),
        b"print" => c.is_ascii_graphic() || c == b' ',
        b"punct" => c.is_ascii_punctuation(),
        b"space" => c.is_ascii_whitespace() || c == 0x0b,
        b"upper" => c.is_ascii_uppercase(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => false,
    }
}

/// A source's exclude patterns; the default excludes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Excludes {
    patterns: Vec<Pattern>,
}

impl Excludes {
    /// Checks every pattern; the first refused one is the error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        Ok(Self {
            patterns: patterns
                .iter()
                .map(|p| Pattern::new(p.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// No patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as written.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(Pattern::as_str)
    }

    /// Whether the entry at `rel` (relative to the source's root) is excluded. Only the
    /// entry itself is matched: a caller walking the tree does not enter an excluded folder.
    pub fn excludes(&self, rel: &Path, is_dir: bool) -> bool {
        let rel = rel.as_os_str().as_bytes();
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        !rel.is_empty() && self.patterns.iter().any(|p| p.matches(rel, is_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &str, path: &str, dir: bool) -> bool {
        Excludes::new(&[p]).unwrap().excludes(Path::new(path), dir)
    }

    #[test]
    fn a_name_without_slash_matches_at_any_depth() {
        assert!(ex("*.tmp", "a.tmp", false));
        assert!(ex("*.tmp", "x/y/a.tmp", false));
        assert!(!ex("*.tmp", "a.tmp.keep", false));
        assert!(ex("cache", "x/cache", true));
        assert!(!ex("cache", "x/cache2", true));
        assert!(!ex("cache", "xcache", false));
    }

    #[test]
    fn a_leading_slash_anchors_and_a_trailing_one_wants_a_folder() {
        assert!(ex("/cache", "cache", true));
        assert!(!ex("/cache", "x/cache", true));
        assert!(ex("/cache/", "cache", true));
        assert!(!ex("/cache/", "cache", false));
        assert!(ex("node_modules/", "a/b/node_modules", true));
        assert!(!ex("node_modules/", "a/b/node_modules", false));
    }

    #[test]
    fn inner_slashes_match_the_end_of_the_path_by_whole_names() {
        assert!(ex("build/out", "build/out", false));
        assert!(ex("build/out", "x/build/out", false));
        assert!(!ex("build/out", "xbuild/out", false));
        assert!(ex("b*/o?t", "x/build/out", false));
        assert!(!ex("b*/o?t", "build/x/out", false));
    }

    #[test]
    fn stars_and_classes() {
        assert!(!ex("/a*z", "ab/cz", false), "* stops at /");
        assert!(ex("/a**z", "ab/cz", false), "** crosses /");
        assert!(ex("**/node_modules/", "node_modules", true));
        assert!(ex("**/node_modules/", "a/b/node_modules", true));
        assert!(!ex("/a/**/b", "a/b", false), "rsync needs a folder between");
        assert!(ex("/a/**/b", "a/x/y/b", false));
        assert!(ex("x**", "p/xq/r", false));
        assert!(ex("[ab]?.log", "d/a1.log", false));
        assert!(!ex("[!ab]?.log", "d/a1.log", false));
        assert!(ex("[^ab]?.log", "d/c1.log", false));
        assert!(ex("file[[:digit:]]", "file7", false));
        assert!(!ex("file[[:digit:]]", "filex", false));
        assert!(ex("[]x]", "]", false));
        assert!(ex("a\\*b", "a*b", false));
        assert!(!ex("a\\*b", "axb", false));
        assert!(
            ex("back\\slash", "back\\slash", false),
            "literal without wildcards"
        );
    }

    #[test]
    fn unsupported_syntax_is_refused_with_a_reason() {
        for (p, why) in [
            ("", "empty"),
            ("+ keep", "prefixes"),
            ("- drop", "prefixes"),
            ("!", "prefixes"),
            ("dir/***", "***"),
            ("a[bc", "without its"),
            ("a\nb", "newline"),
            ("/", "names nothing"),
            ("//", "names nothing"),
        ] {
            let e = Pattern::new(p).unwrap_err();
            assert!(e.to_string().contains(why), "{p:?}: {e}");
        }
        // A leading dash is just a name.
        assert!(ex("-x", "d/-x", false));
    }
}
