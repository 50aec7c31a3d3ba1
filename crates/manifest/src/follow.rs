//! Hashing a copy's files while the copy runs ([`Follower`]): on a first copy every file
//! must be read for its manifest, and read right after the copy wrote it, it comes from the
//! page cache while the copy keeps writing the next ones on another core.
//!
//! The follower learns of each file the moment its writer closes it (`fanotify(7)`,
//! `FAN_CLOSE_WRITE` on the drive's mount: no walk, no polling of the tree), reads it
//! through the descriptor the event carries, and keeps its digest with the inode's change
//! time as it was before and after reading. [`crate::write`] takes a digest for a file only
//! when the file's inode and change time are still those: any later write, `chmod`,
//! `utime`, link or rename moves the change time (the kernel sets it; no one can set it
//! back), so a file changed after it was hashed is read again. Events the kernel could not
//! queue, files closed after [`Follower::finish`], and everything when fanotify is not
//! available (no `CAP_SYS_ADMIN`, an old kernel) are simply read after the copy.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oskit::closed::ClosedWrites;

use crate::Digest;

/// At most this many digests are kept (48 bytes each: 48 MiB at most); files past it are
/// read after the copy.
const KEPT: usize = 1 << 20;

/// The digests of files hashed while they were written.
#[derive(Debug, Default)]
pub struct Seen {
    /// (inode, change time in nanoseconds when it was hashed, digest), sorted.
    digests: Vec<(u64, i64, Digest)>,
    /// Whether the kernel dropped events (its queue was full): those files are read after.
    pub overflowed: bool,
}

/// A change time in nanoseconds since 1970.
fn ctime_ns(m: &std::fs::Metadata) -> i64 {
    m.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.ctime_nsec())
}

impl Seen {
    /// The digest of the file with metadata `m`, if it was hashed as it is now.
    pub fn digest(&self, m: &std::fs::Metadata) -> Option<Digest> {
        let key = (m.ino(), ctime_ns(m));
        self.digests
            .binary_search_by(|&(ino, ct, _)| (ino, ct).cmp(&key))
            .ok()
            .map(|i| self.digests[i].2)
    }

    /// How many files were hashed.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// Hashes every regular file closed after writing on the mount of a folder, on one thread
/// (the copy keeps the other cores), until [`Follower::finish`]. (At the lowest CPU
/// priority `cargo xtask bench manifest` measured the first copy 1.06x and 1.35x `cp -a` in
/// two runs, at normal priority 1.12x and 1.16x: with cp taking both cores it reaches
/// fewer files in time.)
/// Dropped without [`Follower::finish`] (the copy failed), it stops.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Seen>>,
}

impl Follower {
    /// Starts following the mount that holds `dir`. An error when fanotify is not
    /// available here (the caller reads every file after the copy instead).
    pub fn start(dir: &Path) -> io::Result<Follower> {
        let closed = ClosedWrites::watch(dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("manifest-follow".into())
            .spawn(move || follow(&closed, &flag))?;
        Ok(Follower {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops following; what was hashed.
    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        let mut seen = thread.join().unwrap_or_default();
        seen.digests.sort_unstable_by_key(|&(ino, ct, _)| (ino, ct));
        seen
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn follow(closed: &ClosedWrites, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let Ok(batch) = closed.next(Duration::from_millis(50)) else {
            break;
        };
        seen.overflowed |= batch.overflowed;
        for file in batch.files {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if seen.digests.len() >= KEPT {
                continue;
            }
            let Ok(before) = file.metadata() else {
                continue;
            };
            if !before.is_file() {
                continue;
            }
            let Ok((digest, n)) = crate::hash_reader(&file) else {
                continue;
            };
            let Ok(after) = file.metadata() else { continue };
            let when = |m: &std::fs::Metadata| (ctime_ns(m), m.size());
            if when(&before) == when(&after) && n == after.size() {
                seen.digests.push((after.ino(), ctime_ns(&after), digest));
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    /// Needs root (fanotify): `cargo xtask test` runs the tests as root, where this must
    /// work; it fails rather than skips when it cannot follow.
    #[test]
    fn files_closed_after_writing_are_hashed_and_a_later_change_is_read_again() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("copy");
        fs::create_dir_all(root.join("d")).unwrap();
        let follower = Follower::start(t.path()).expect("fanotify (run the tests as root)");
        for (n, data) in [("d/a", &b"aaa"[..]), ("b", b"bb"), ("c", b"c")] {
            let mut f = fs::File::create(root.join(n)).unwrap();
            f.write_all(data).unwrap();
        }
        // Give the follower time for its events (it hashes on its own thread).
        std::thread::sleep(std::time::Duration::from_secs(2));
        let seen = follower.finish();
        assert!(!seen.overflowed);
        let sha = |d: &[u8]| -> Digest { <sha2::Sha256 as sha2::Digest>::digest(d).into() };
        let meta = |n: &str| fs::symlink_metadata(root.join(n)).unwrap();
        assert_eq!(seen.digest(&meta("d/a")), Some(sha(b"aaa")));
        assert_eq!(seen.digest(&meta("c")), Some(sha(b"c")));
        assert_eq!(seen.digest(&meta("b")), Some(sha(b"bb")));
        // A link made since moved the change time: read again.
        fs::hard_link(root.join("b"), root.join("b-again")).unwrap();
        assert_eq!(seen.digest(&meta("b")), None);
        // A file changed after it was hashed (its mtime even put back): read again.
        let before = meta("c");
        fs::write(root.join("c"), b"C").unwrap();
        fs::File::options()
            .write(true)
            .open(root.join("c"))
            .unwrap()
            .set_modified(before.modified().unwrap())
            .unwrap();
        assert_eq!(seen.digest(&meta("c")), None);
        // The manifest takes what was hashed and reads the rest.
        let (mut side, mut list) = (vec![], vec![]);
        let stats = crate::write(
            &root,
            std::iter::empty(),
            crate::Carry::SameInode,
            Some(&seen),
            &mut side,
            &mut list,
        )
        .unwrap();
        assert_eq!((stats.files, stats.alongside, stats.read), (4, 1, 2));
        let m = crate::Manifest::parse_sidecar(&side).unwrap();
        assert_eq!(m.get(b"c").unwrap().sha256, sha(b"C"));
        assert_eq!(m.get(b"b-again").unwrap().sha256, sha(b"bb"));
        assert_eq!(m.get(b"d/a").unwrap().sha256, sha(b"aaa"));
    }
}
