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

pub mod follow;
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

    /// Everything but the path (left empty).
    fn clone_meta(&self) -> Entry {
        Entry {
            path: vec![],
            ..*self
        }
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
    /// Files whose hash was taken while the copy wrote them ([`follow::Follower`]).
    pub alongside: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Files that could not be listed or read, with why (left out of the manifest): the
    /// first hundred.
    pub problems: Vec<String>,
    /// How many there were in all.
    pub problem_count: u64,
    /// Why the previous manifest could not be used (from the line named on).
    pub previous_unusable: Option<String>,
}

impl Stats {
    fn problem(&mut self, what: String) {
        self.problem_count += 1;
        if self.problems.len() < PROBLEMS_KEPT {
            self.problems.push(what);
        }
    }
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

/// Entries held before they are written out: a chunk ends at this many files to read, or
/// this many entries in all.
const CHUNK_READS: usize = 4096;
const CHUNK_ENTRIES: usize = 16384;
/// Problems kept by name (the rest only counted).
const PROBLEMS_KEPT: usize = 100;

/// The manifest of the tree at `root` (a real folder: the caller checked it), the hashes of
/// files unchanged since `previous` (as `how` tells them) carried over, every other
/// file read on [`threads`] threads (a hard-link group once). Symbolic links are not
/// followed (nor listed: only regular files are), mounts not crossed. A file that cannot
/// be read is left out and named in [`Stats::problems`]; only a root that cannot be opened
/// is an error. The whole manifest in memory: for large trees, [`write()`].
pub fn build(
    root: &Path,
    previous: Option<&Manifest>,
    how: Carry,
) -> io::Result<(Manifest, Stats)> {
    let bad = |e: ParseError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let prev = previous.map(Manifest::to_sidecar);
    let prev = match &prev {
        Some(p) => Some(format::SidecarReader::new(&p[..]).map_err(bad)?),
        None => None,
    };
    let (mut sidecar, mut listing) = (vec![], vec![]);
    let stats = write(
        root,
        prev.into_iter().flatten(),
        how,
        None,
        &mut sidecar,
        &mut listing,
    )?;
    Ok((Manifest::parse_sidecar(&sidecar).map_err(bad)?, stats))
}

/// A walk entry's name: its path's last component (found with one backward scan; walkdir's
/// `file_name` parses the whole path, and the sort asks for it at every comparison).
fn name(e: &walkdir::DirEntry) -> &[u8] {
    let p = e.path().as_os_str().as_bytes();
    &p[p.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1)..]
}

/// The order of two names of one folder as their full paths sort byte by byte: a folder's
/// name as if it ended in `/` (its files' paths go on with a `/`).
fn path_order(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then_with(|| {
        // One is the other's beginning: the next byte (a folder's `/`, or the end) decides.
        let next = |s: &[u8], dir: bool| s.get(n).copied().or(dir.then_some(b'/'));
        next(a, a_dir).cmp(&next(b, b_dir))
    })
}

/// The previous manifest, read along the walk (both go in path order).
struct Previous<I> {
    entries: I,
    head: Option<Entry>,
    started: bool,
    broken: Option<String>,
}

impl<I: Iterator<Item = Result<Entry, ParseError>>> Previous<I> {
    /// The previous entry of `path`, if it has one; entries before it are passed.
    fn at(&mut self, path: &[u8]) -> Option<Entry> {
        if !self.started {
            self.started = true;
            self.pull();
        }
        while self.head.as_ref().is_some_and(|h| h.path.as_slice() < path) {
            self.pull();
        }
        if self.head.as_ref().is_some_and(|h| h.path == path) {
            let e = self.head.take();
            self.pull();
            return e;
        }
        None
    }

    fn pull(&mut self) {
        self.head = match self.entries.next() {
            Some(Ok(e)) => Some(e),
            Some(Err(e)) => {
                // What follows a bad line is not trusted either: the rest is read.
                self.broken.get_or_insert_with(|| e.to_string());
                self.entries.by_ref().for_each(drop);
                None
            }
            None => None,
        }
    }
}

/// One file of a chunk: its entry complete, or to read.
enum Item {
    Ready(Entry),
    Read { path: Vec<u8>, ino: u64 },
}

/// The manifest of the tree at `root` written as the walk goes, in path order: the sidecar
/// (header first) to `sidecar`, the `sha256sum` listing to `listing`. `previous` is the
/// previous manifest's entries in path order ([`format::SidecarReader`]): a file at the same
/// path that is unchanged as `how` tells carries its entry over (in a new generation the
/// same inode, without a `stat`: [`Carry::SameInode`]). Every other file is read, on
/// [`threads`] threads, in chunks in the order of their inodes, a hard-link group once.
/// Memory stays small whatever the tree's size: a chunk of entries, the hard-link groups
/// with names still to come. Symbolic links are not followed (nor listed: only regular
/// files are), mounts not crossed. A file that cannot be read is left out and counted in
/// [`Stats`]; a previous manifest that turns out bad part-way is not used from there on
/// ([`Stats::previous_unusable`]); only a root that cannot be opened, or output that
/// cannot be written, is an error.
pub fn write(
    root: &Path,
    previous: impl Iterator<Item = Result<Entry, ParseError>>,
    how: Carry,
    seen: Option<&follow::Seen>,
    sidecar: &mut dyn io::Write,
    listing: &mut dyn io::Write,
) -> io::Result<Stats> {
    use walkdir::DirEntryExt;
    let handle = Beneath::open(root)?;
    let mut stats = Stats::default();
    let mut prev = Previous {
        entries: previous,
        head: None,
        started: false,
        broken: None,
    };
    sidecar.write_all(format::SIDECAR_HEADER.as_bytes())?;
    sidecar.write_all(b"\n")?;
    let mut out = Output {
        sidecar,
        listing,
        side_buf: Vec::with_capacity(1 << 20),
        list_buf: Vec::with_capacity(1 << 20),
        linked: HashMap::new(),
    };
    let mut chunk: Vec<Item> = vec![];
    let mut reads = 0usize;
    // Below the root the walk's paths are the root's path, a slash (unless it ends in
    // one), the rest.
    let skip = root.as_os_str().len() + usize::from(!root.as_os_str().as_bytes().ends_with(b"/"));
    // In path order, byte by byte: a folder's name sorts as if it ended in `/`, so its
    // files come where their full paths sort (`a.b` before `a/x`).
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
        .sort_by(|a, b| {
            path_order(
                name(a),
                a.file_type().is_dir(),
                name(b),
                b.file_type().is_dir(),
            )
        });
    'walk: for item in walk {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                stats.problem(format!("listing: {e}"));
                continue;
            }
        };
        if !item.file_type().is_file() {
            continue;
        }
        let path = item.path().as_os_str().as_bytes()[skip..].to_vec();
        let ino = item.ino();
        let before = prev.at(&path);
        // Carried over (`Ok`), or the path to read (`Err`).
        // Its metadata, once asked for (a mirror's carry-over and the follower need it).
        let mut meta: Option<std::fs::Metadata> = None;
        let carried: Result<Entry, Vec<u8>> = match (how, before) {
            // The previous generation's file itself: its entry as it was, no stat needed.
            (Carry::SameInode, Some(b)) if b.ino == ino => Ok(Entry { path, ..b }),
            (Carry::SameInode, _) => Err(path),
            (Carry::SameInodeSizeMtime, before) => {
                let m = match item.metadata() {
                    Ok(m) => m,
                    Err(e) => {
                        stats.problem(format!("{}: {e}", item.path().display()));
                        continue;
                    }
                };
                let now = Entry::from_meta(path, &m, [0; 32]);
                meta = Some(m);
                match before {
                    Some(b) if b.key() == now.key() => Ok(Entry {
                        sha256: b.sha256,
                        ..now
                    }),
                    _ => Err(now.path),
                }
            }
        };
        let next = 'item: {
            let path = match carried {
                Ok(e) => {
                    stats.carried += 1;
                    break 'item Item::Ready(e);
                }
                Err(path) => path,
            };
            let path = match out.linked(path, ino) {
                Ok(e) => break 'item Item::Ready(e),
                Err(path) => path,
            };
            // Hashed while the copy wrote it, and unchanged since.
            if let Some(seen) = seen.filter(|s| !s.is_empty()) {
                let m = match meta.take().map_or_else(|| item.metadata(), Ok) {
                    Ok(m) => m,
                    Err(e) => {
                        stats.problem(format!("{}: {e}", item.path().display()));
                        continue 'walk;
                    }
                };
                if let Some(d) = seen.digest(&m) {
                    stats.alongside += 1;
                    break 'item Item::Ready(Entry::from_meta(path, &m, d));
                }
            }
            reads += 1;
            Item::Read { path, ino }
        };
        chunk.push(next);
        if reads >= CHUNK_READS || chunk.len() >= CHUNK_ENTRIES {
            out.chunk(&handle, root, &mut chunk, &mut stats)?;
            reads = 0;
        }
    }
    out.chunk(&handle, root, &mut chunk, &mut stats)?;
    out.flush()?;
    stats.previous_unusable = prev.broken;
    Ok(stats)
}

/// Where [`write`] puts what it has: both files, buffered, and the hard-link groups read
/// whose other names are still to come.
struct Output<'a> {
    sidecar: &'a mut dyn io::Write,
    listing: &'a mut dyn io::Write,
    side_buf: Vec<u8>,
    list_buf: Vec<u8>,
    /// Inode → its entry (the path left empty) and how many of its names are still to come.
    linked: HashMap<u64, (Entry, u64)>,
}

impl Output<'_> {
    /// The entry of `path` when it is another name of a hard-link group read already.
    fn linked(&mut self, path: Vec<u8>, ino: u64) -> Result<Entry, Vec<u8>> {
        let Some((e, left)) = self.linked.get_mut(&ino) else {
            return Err(path);
        };
        let e = Entry {
            path,
            ..e.clone_meta()
        };
        *left -= 1;
        if *left == 0 {
            self.linked.remove(&ino);
        }
        Ok(e)
    }

    /// Reads the chunk's files to read (each inode once, in inode order: on a hard disk,
    /// roughly the order of their data) and writes the chunk out in its order.
    fn chunk(
        &mut self,
        handle: &Beneath,
        root: &Path,
        chunk: &mut Vec<Item>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let mut order: Vec<(u64, usize)> = vec![];
        let mut first = std::collections::HashSet::new();
        for (i, item) in chunk.iter().enumerate() {
            if let Item::Read { ino, .. } = item {
                if first.insert(*ino) {
                    order.push((*ino, i));
                }
            }
        }
        order.sort_unstable();
        let rel = |i: usize| match &chunk[i] {
            Item::Read { path, .. } => Path::new(std::ffi::OsStr::from_bytes(path)),
            Item::Ready(e) => e.rel(),
        };
        let hashed = parallel(&order, threads(), |&(_, i)| hash_file(handle, rel(i)));
        // Inode → its entry (path empty) and link count, or `None`: it could not be read.
        let mut got: HashMap<u64, Option<(Entry, u64)>> = HashMap::new();
        for (&(ino, i), r) in order.iter().zip(hashed) {
            let v = match r {
                Ok((d, m)) => {
                    stats.read += 1;
                    stats.bytes_read += m.size();
                    Some((Entry::from_meta(vec![], &m, d), m.nlink()))
                }
                Err(e) => {
                    stats.problem(format!("{}: {e}", root.join(rel(i)).display()));
                    None
                }
            };
            got.insert(ino, v);
        }
        let mut names: HashMap<u64, u64> = HashMap::new();
        for item in chunk.drain(..) {
            let e = match item {
                Item::Ready(e) => e,
                Item::Read { path, ino } => {
                    // A group that could not be read is left out.
                    let Some(Some((e, _))) = got.get(&ino) else {
                        continue;
                    };
                    *names.entry(ino).or_default() += 1;
                    Entry {
                        path,
                        ..e.clone_meta()
                    }
                }
            };
            stats.files += 1;
            e.push_sidecar_line(&mut self.side_buf);
            e.push_listing_line(&mut self.list_buf);
            if self.side_buf.len() >= 1 << 20 {
                self.flush()?;
            }
        }
        // Groups with names still to come (later in the walk) keep their entry.
        for (ino, v) in got {
            if let Some((e, nlink)) = v {
                let left = nlink.saturating_sub(names.get(&ino).copied().unwrap_or(0));
                if left > 0 {
                    self.linked.insert(ino, (e, left));
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sidecar.write_all(&self.side_buf)?;
        self.listing.write_all(&self.list_buf)?;
        self.side_buf.clear();
        self.list_buf.clear();
        Ok(())
    }
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
    fn entries_are_sorted_by_path_bytes_so_get_finds_every_one() {
        // The walk gives a folder's files before a sibling whose name continues with a
        // byte below `/` (`photos/x` before `photos 2020`, `a/x` before `a.b`).
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("r");
        for d in ["photos", "photos 2020", "a", "a-b"] {
            fs::create_dir_all(r.join(d)).unwrap();
            fs::write(r.join(d).join("x"), d).unwrap();
        }
        fs::write(r.join("a.b"), b"file").unwrap();
        // A root given with a trailing slash lists the same paths.
        let mut with_slash = r.clone().into_os_string();
        with_slash.push("/");
        for root in [r.clone(), with_slash.into()] {
            let (m, _) = build(&root, None, Carry::SameInode).unwrap();
            let names: Vec<&[u8]> = m.entries.iter().map(|e| e.path.as_slice()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            for n in ["photos/x", "photos 2020/x", "a/x", "a-b/x", "a.b"] {
                assert!(m.get(n.as_bytes()).is_some(), "{n} in {names:?}");
            }
        }
    }

    #[test]
    fn a_tree_larger_than_a_chunk_reads_each_link_group_once_and_survives_a_bad_previous() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("r");
        let n = CHUNK_READS + 904;
        for i in 0..n {
            let d = r.join(format!("d{:02}", i % 50));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(format!("f{i:05}")), i.to_string()).unwrap();
        }
        // A group whose names lie in the first and the last chunk.
        fs::write(r.join("aaa"), b"linked").unwrap();
        fs::hard_link(r.join("aaa"), r.join("zzz")).unwrap();
        let (m, s) = build(&r, None, Carry::SameInode).unwrap();
        assert_eq!((s.files, s.read), (n as u64 + 2, n as u64 + 1));
        assert_eq!(m.get(b"zzz").unwrap().sha256, sha(b"linked"));
        assert_eq!(m.get(b"d07/f00057").unwrap().sha256, sha(b"57"));
        // A previous sidecar bad from some line on: used up to there, the rest read.
        let mut side = m.to_sidecar();
        let at = side.len() / 2;
        let cut = at + side[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
        side.splice(cut..cut + 3, *b"zzz");
        let prev = format::SidecarReader::new(&side[..]).unwrap();
        let (mut out, mut list) = (vec![], vec![]);
        let s2 = write(&r, prev, Carry::SameInode, None, &mut out, &mut list).unwrap();
        assert!(s2
            .previous_unusable
            .as_deref()
            .unwrap()
            .contains("bad SHA-256"));
        assert!(s2.carried > 1000 && s2.read > 1000, "{s2:?}");
        // `aaa` carried over, `zzz` (after the bad line) read.
        assert_eq!(s2.carried + s2.read, n as u64 + 2);
        assert_eq!(Manifest::parse_sidecar(&out).unwrap(), m);
        assert_eq!(list, m.to_sha256sum());
    }

    #[test]
    fn path_order_is_the_full_paths_byte_order() {
        use std::cmp::Ordering::*;
        for (a, ad, b, bd, want) in [
            ("a", true, "a.b", false, Greater), // "a/..." after "a.b"
            ("a", false, "a.b", false, Less),
            ("photos", true, "photos 2020", true, Greater),
            ("ab", false, "a", true, Greater), // 'b' after '/'
            ("a0", false, "a", true, Greater), // '0' after '/'
            ("x", false, "y", true, Less),
            ("same", false, "same", false, Equal),
        ] {
            assert_eq!(
                path_order(a.as_bytes(), ad, b.as_bytes(), bd),
                want,
                "{a} {b}"
            );
        }
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
