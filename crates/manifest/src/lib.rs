//! The SHA-256 manifest of a tree on a drive (a generation, or the plain mirror `data/`):
//! written when the tree is complete, read back by `scrub`, `versions` and `restore`.
//!
//! A manifest is two files (see docs/manifests.md): a GNU `sha256sum` listing
//! ([`Manifest::to_sha256sum`], so `cd TREE && sha256sum -c --quiet LISTING` checks the
//! tree on a bare machine) and a sidecar with each file's size, mtime, mode, owner, inode
//! ([`Manifest::to_sidecar`]), which is what the next manifest carries hashes over from
//! ([`build`], [`Carry`]): in a new generation a file whose inode the previous
//! generation's sidecar lists is that very file (hard-linked by rsync's `--link-dest`, kept
//! by a btrfs snapshot) and keeps its entry without being read or even stat'ed; in a mirror
//! a file keeps its hash when inode, size and mtime all match.
//!
//! Every file is opened through [`oskit::beneath::Beneath`] on the tree's root: no
//! symbolic link is followed, no mount crossed. The walk does not follow links either.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use oskit::beneath::Beneath;
use sha2::Digest as _;

pub mod format;

pub use format::ParseError;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// One regular file of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its path relative to the tree's root (bytes: names need not be UTF-8).
    pub path: Vec<u8>,
    /// The SHA-256 of its content.
    pub sha256: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (seconds since 1970, and nanoseconds).
    pub mtime: i64,
    /// The nanoseconds of its modification time.
    pub mtime_nsec: u32,
    /// Its mode (type and permission bits).
    pub mode: u32,
    /// Its owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Its inode number: files with the same number on one filesystem are one file (the
    /// hard-link group; across generations, a file `--link-dest` shared).
    pub ino: u64,
}

impl Entry {
    /// The path as a [`Path`].
    pub fn rel(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(&self.path))
    }

    fn key(&self) -> (u64, u64, i64, u32) {
        (self.ino, self.size, self.mtime, self.mtime_nsec)
    }

    fn from_meta(path: Vec<u8>, m: &std::fs::Metadata, sha256: Digest) -> Entry {
        Entry {
            path,
            sha256,
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec() as u32,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            ino: m.ino(),
        }
    }
}

/// Every regular file of a tree, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The files.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// The entry of `path`, if listed.
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_slice().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// How [`build`] decides that a file is unchanged since the previous manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// A new generation built from the previous one (rsync's `--link-dest`, a btrfs
    /// snapshot): a file whose inode number the previous sidecar lists *is* that file,
    /// which rsync never changes in place; its entry is taken whole, without a `stat`. (On
    /// ext4 the previous generation still holds its inodes, so their numbers cannot have
    /// been reused.)
    SameInode,
    /// A tree updated in place (the plain mirror): inode, size and mtime must all match.
    SameInodeSizeMtime,
}

/// What building a manifest did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Regular files listed.
    pub files: u64,
    /// Files whose hash came from the previous manifest (not read).
    pub carried: u64,
    /// Files read and hashed (a hard-link group counts once).
    pub read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Files that could not be listed or read, with why (left out of the manifest).
    pub problems: Vec<String>,
}

/// How many threads hash: the machine's cores, at most 4 (a USB disk gains nothing more).
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// The SHA-256 of a reader's content and how many bytes it gave.
pub fn hash_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
    // One buffer a thread, reused: a new 256 KiB buffer a file costs an mmap, page faults
    // and a munmap each, which for many small files is more than their hashing.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((h.finalize().into(), n))
    })
}

/// The regular file `rel` below `root` hashed (opened beneath the root, no link followed),
/// with its metadata as it was opened.
pub fn hash_file(root: &Beneath, rel: &Path) -> io::Result<(Digest, std::fs::Metadata)> {
    let (f, m) = root.open_file(rel)?;
    let (d, _) = hash_reader(f)?;
    Ok((d, m))
}

/// `f` applied to every item on `threads` threads, results in the items' order.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                out.lock().expect("no thread panics holding it")[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .expect("no thread panicked")
        .into_iter()
        .map(|r| r.expect("every item done"))
        .collect()
}

/// The manifest of the tree at `root` (a real folder: the caller checked it), the hashes of
/// files unchanged since `previous` (as `how` tells them) carried over, every other
/// file read on [`threads`] threads (a hard-link group once). Symbolic links are not
/// followed (nor listed: only regular files are), mounts not crossed. A file that cannot
/// be read is left out and named in [`Stats::problems`]; only a root that cannot be opened
/// is an error.
pub fn build(
    root: &Path,
    previous: Option<&Manifest>,
    how: Carry,
) -> io::Result<(Manifest, Stats)> {
    use walkdir::DirEntryExt;
    let handle = Beneath::open(root)?;
    let mut stats = Stats::default();
    let carry: HashMap<(u64, u64, i64, u32), Digest> = previous
        .map(|p| p.entries.iter().map(|e| (e.key(), e.sha256)).collect())
        .unwrap_or_default();
    let by_inode: HashMap<u64, &Entry> = match (how, previous) {
        (Carry::SameInode, Some(p)) => p.entries.iter().map(|e| (e.ino, e)).collect(),
        _ => HashMap::new(),
    };
    let mut entries: Vec<Entry> = vec![];
    // Files to read: the index of the first entry of each inode not carried.
    let mut to_read: Vec<usize> = vec![];
    let mut seen: std::collections::HashSet<u64> = Default::default();
    let mut carried: Vec<bool> = vec![];
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
        .sort_by_file_name();
    for item in walk {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                stats.problems.push(format!("listing: {e}"));
                continue;
            }
        };
        if !item.file_type().is_file() {
            continue;
        }
        let rel = item
            .path()
            .strip_prefix(root)
            .expect("below the root")
            .as_os_str()
            .as_bytes()
            .to_vec();
        // The previous generation's file itself: its entry as it was, no stat needed.
        if let Some(prev) = by_inode.get(&item.ino()) {
            let mut e = (*prev).clone();
            e.path = rel;
            stats.carried += 1;
            carried.push(true);
            entries.push(e);
            continue;
        }
        let m = match item.metadata() {
            Ok(m) => m,
            Err(e) => {
                stats
                    .problems
                    .push(format!("{}: {e}", item.path().display()));
                continue;
            }
        };
        let mut e = Entry::from_meta(rel, &m, [0; 32]);
        let i = entries.len();
        if let Some(d) = carry.get(&e.key()) {
            e.sha256 = *d;
            stats.carried += 1;
            carried.push(true);
        } else {
            if seen.insert(e.ino) {
                to_read.push(i);
            }
            carried.push(false);
        }
        entries.push(e);
    }
    let hashed = parallel(&to_read, threads(), |&i| {
        hash_file(&handle, entries[i].rel())
    });
    let mut digest_of: HashMap<u64, Digest> = HashMap::new();
    for (&i, r) in to_read.iter().zip(hashed) {
        match r {
            Ok((d, m)) => {
                let path = std::mem::take(&mut entries[i].path);
                entries[i] = Entry::from_meta(path, &m, d);
                digest_of.insert(entries[i].ino, d);
                stats.read += 1;
                stats.bytes_read += m.size();
            }
            Err(e) => stats
                .problems
                .push(format!("{}: {e}", root.join(entries[i].rel()).display())),
        }
    }
    // The other names of a group read above take its digest; a group that could not be
    // read is left out.
    let entries: Vec<Entry> = entries
        .into_iter()
        .zip(carried)
        .filter_map(|(mut e, carried)| {
            if carried {
                return Some(e);
            }
            e.sha256 = *digest_of.get(&e.ino)?;
            Some(e)
        })
        .collect();
    stats.files = entries.len() as u64;
    Ok((Manifest { entries }, stats))
}

/// What a check found wrong with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The file is not there (or is no longer a regular file).
    Missing,
    /// Its content is not what the manifest says.
    Changed {
        /// The digest read now.
        found: Digest,
    },
    /// It could not be read (an I/O error: a failing disk).
    Unreadable(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Missing => f.write_str("missing"),
            Fault::Changed { .. } => f.write_str("content changed (SHA-256 differs)"),
            Fault::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// The file `rel` below `root` read and compared with `expected`: `None` when it matches.
pub fn check_file(root: &Beneath, rel: &Path, expected: &Digest) -> Option<Fault> {
    match hash_file(root, rel) {
        Ok((d, _)) if &d == expected => None,
        Ok((d, _)) => Some(Fault::Changed { found: d }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Fault::Missing),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Some(Fault::Missing),
        Err(e) => Some(Fault::Unreadable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn sha(data: &[u8]) -> Digest {
        sha2::Sha256::digest(data).into()
    }

    #[test]
    fn builds_carries_over_unchanged_inodes_and_reads_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        fs::create_dir_all(a.join("sub")).unwrap();
        fs::write(a.join("one"), b"one").unwrap();
        fs::write(a.join("sub/two"), b"two").unwrap();
        fs::hard_link(a.join("one"), a.join("sub/one-again")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.join("link")).unwrap();
        let (m, s) = build(&a, None, Carry::SameInode).unwrap();
        let names: Vec<&[u8]> = m.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(names, [&b"one"[..], b"sub/one-again", b"sub/two"]);
        assert_eq!(m.get(b"sub/one-again").unwrap().sha256, sha(b"one"));
        assert_eq!(m.get(b"sub/two").unwrap().sha256, sha(b"two"));
        assert_eq!((s.files, s.read, s.carried), (3, 2, 0));

        // A new tree linking `one` (as --link-dest does), `sub/two` rewritten: only that read.
        let b = t.path().join("b");
        fs::create_dir_all(b.join("sub")).unwrap();
        fs::hard_link(a.join("one"), b.join("one")).unwrap();
        fs::write(b.join("sub/two"), b"TWO").unwrap();
        let (m2, s2) = build(&b, Some(&m), Carry::SameInode).unwrap();
        assert_eq!((s2.files, s2.read, s2.carried), (2, 1, 1));
        assert_eq!(m2.get(b"sub/two").unwrap().sha256, sha(b"TWO"));

        // Carrying over trusts the previous sidecar: a planted wrong hash for the same
        // inode stays (so a no-change run reads nothing; scrub finds the difference).
        let mut fake = m.clone();
        let ino = fake.entries[0].ino;
        for e in fake.entries.iter_mut().filter(|e| e.ino == ino) {
            e.sha256 = [7; 32];
        }
        let (m3, s3) = build(&b, Some(&fake), Carry::SameInode).unwrap();
        assert_eq!(m3.get(b"one").unwrap().sha256, [7; 32]);
        assert_eq!(s3.carried, 1);

        // A mirror: a file changed in place (same inode, new size and mtime) is read again;
        // unchanged ones are carried over.
        let (m4, s4) = build(&a, None, Carry::SameInodeSizeMtime).unwrap();
        assert_eq!(s4.read, 2);
        fs::write(a.join("sub/two"), b"two, longer").unwrap();
        let (m5, s5) = build(&a, Some(&m4), Carry::SameInodeSizeMtime).unwrap();
        assert_eq!((s5.read, s5.carried), (1, 2));
        assert_eq!(m5.get(b"sub/two").unwrap().sha256, sha(b"two, longer"));
        // Trusting the inode alone would have kept the old hash: that mode is for new
        // generations only, where rsync never writes into an existing inode.
        let (m6, _) = build(&a, Some(&m4), Carry::SameInode).unwrap();
        assert_eq!(m6.get(b"sub/two").unwrap().sha256, sha(b"two"));
    }

    #[test]
    fn check_file_tells_missing_changed_and_fine() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
        let h = Beneath::open(t.path()).unwrap();
        assert_eq!(check_file(&h, Path::new("f"), &sha(b"x")), None);
        assert!(matches!(
            check_file(&h, Path::new("f"), &sha(b"y")),
            Some(Fault::Changed { .. })
        ));
        assert_eq!(
            check_file(&h, Path::new("gone"), &sha(b"x")),
            Some(Fault::Missing)
        );
        // A symlink in place of the file is not followed.
        assert!(check_file(&h, Path::new("l"), &sha(b"x")).is_some());
    }

    #[test]
    fn parallel_keeps_the_order() {
        let v: Vec<u32> = (0..1000).collect();
        assert_eq!(
            parallel(&v, 3, |x| x * 2),
            v.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert!(parallel(&Vec::<u32>::new(), 3, |x| *x).is_empty());
    }
}
