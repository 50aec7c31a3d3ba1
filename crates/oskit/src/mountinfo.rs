//! Parsing `/proc/self/mountinfo` (proc(5)), octal escapes included.
//!
//! ```
//! let line = "36 35 7:3 / /mnt/my\\040backup rw,nodev,noatime shared:1 - ext4 /dev/loop3 rw\n";
//! let e = &oskit::mountinfo::parse(line)[0];
//! assert_eq!(e.target, std::path::Path::new("/mnt/my backup"));
//! assert_eq!((e.major, e.minor), (7, 3));
//! assert!(e.has_option("nodev"));
//! ```

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique mount ID.
    pub mount_id: u64,
    /// ID of the parent mount.
    pub parent_id: u64,
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// Root of the mount within the filesystem.
    pub root: PathBuf,
    /// Mount point.
    pub target: PathBuf,
    /// Per-mount options (`rw`, `nodev`, `noexec`...).
    pub mount_options: Vec<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source (the device), as the filesystem reports it.
    pub source: PathBuf,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Whether `opt` is among the per-mount options.
    pub fn has_option(&self, opt: &str) -> bool {
        self.mount_options.iter().any(|o| o == opt)
    }
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash); other bytes are kept as they are (paths need not be UTF-8).
pub fn unescape(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u16 * 64
                + (b[i + 2] - b'0') as u16 * 8
                + (b[i + 3] - b'0') as u16;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut it = line.split(' ');
    let mount_id = it.next()?.parse().ok()?;
    let parent_id = it.next()?.parse().ok()?;
    let (ma, mi) = it.next()?.split_once(':')?;
    let root = PathBuf::from(unescape(it.next()?));
    let target = PathBuf::from(unescape(it.next()?));
    let mount_options = it.next()?.split(',').map(String::from).collect();
    // Optional fields up to the lone "-".
    for f in it.by_ref() {
        if f == "-" {
            break;
        }
    }
    let fstype = unescape(it.next()?).to_string_lossy().into_owned();
    let source = PathBuf::from(unescape(it.next()?));
    let super_options = it
        .next()
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_default();
    Some(MountEntry {
        mount_id,
        parent_id,
        major: ma.parse().ok()?,
        minor: mi.parse().ok()?,
        root,
        target,
        mount_options,
        fstype,
        source,
        super_options,
    })
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect()
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), OsString::from("/mnt/a b"));
        assert_eq!(
            unescape(r"tab\011nl\012bs\134"),
            OsString::from("tab\tnl\nbs\\")
        );
        // Not an escape: kept as is.
        assert_eq!(unescape(r"a\9b\04"), OsString::from(r"a\9b\04"));
        for kept in [
            r"plain/path",
            r"trailing\04",
            r"not\999octal",
            r"end\",
            r"big\400",
        ] {
            assert_eq!(unescape(kept), OsString::from(kept));
        }
    }

    #[test]
    fn lines_with_and_without_optional_fields_parse() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 master:2 - ext4 /dev/sda1 rw,errors=remount-ro
36 22 7:3 /sub /mnt/my\\040backup rw,nosuid,nodev,noexec,noatime - ext4 /dev/loop3 rw
garbage line
";
        let v = parse(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].target, Path::new("/"));
        assert_eq!(v[0].super_options, vec!["rw", "errors=remount-ro"]);
        let e = &v[1];
        assert_eq!(e.mount_id, 36);
        assert_eq!(e.parent_id, 22);
        assert_eq!(e.root, Path::new("/sub"));
        assert_eq!(e.target, Path::new("/mnt/my backup"));
        assert_eq!(e.fstype, "ext4");
        assert_eq!(e.source, Path::new("/dev/loop3"));
        for o in ["nosuid", "nodev", "noexec", "noatime"] {
            assert!(e.has_option(o), "{o}");
        }
        assert!(!e.has_option("ro"));
    }

    #[test]
    fn this_process_mountinfo_has_a_root() {
        let v = read().expect("read mountinfo");
        assert!(v.iter().any(|e| e.target == Path::new("/")));
    }
}
