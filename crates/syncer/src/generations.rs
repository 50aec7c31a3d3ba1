//! Dated generations on the drive: the layout, the names, building a new one beside the
//! previous (hard links to unchanged files), the interrupted one, the migration of a plain
//! mirror, and the retention policy as pure logic.
//!
//! ```text
//! generations/2026-11-27T153000Z/             a complete generation (read-only by convention)
//! generations/2026-11-28T091500Z.incomplete/  being built; never looks complete
//! ```
//!
//! A new generation is built under its `.incomplete` name with
//! [`SyncOptions::link_dest`](crate::SyncOptions::link_dest) pointing at the newest complete
//! one, and renamed to its final name only after the copy succeeded ([`Generations::commit`],
//! a `rename(2)` then an `fsync` of the folder): a run killed at any moment leaves either the
//! previous generations alone or an `.incomplete` folder, which the next run resumes.

use oskit::process::tie_to_parent;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The folder on the drive that holds the generations.
pub const GENERATIONS_DIR: &str = "generations";
/// The suffix of a generation being built.
pub const INCOMPLETE: &str = ".incomplete";

/// A generation's time: seconds since the Unix epoch, shown in UTC as `2026-11-27T153000Z`.
///
/// The calendar is the `time` crate's (a real one: no 2026-02-31, leap years as they are),
/// within the years 1970..=9999 ([`Stamp::MIN`]..=[`Stamp::MAX`]): [`Stamp::parse`] refuses
/// a date outside them, and a stamp outside them is named as the nearest end of the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(pub i64);

/// The folder name's layout.
const NAME: &[time::format_description::FormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour][minute][second]Z");
/// ISO 8601's layout.
const ISO: &[time::format_description::FormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

impl Stamp {
    /// The earliest stamp: 1970-01-01T000000Z.
    pub const MIN: Stamp = Stamp(0);
    /// The latest stamp: 9999-12-31T235959Z.
    pub const MAX: Stamp = Stamp(253_402_300_799);

    /// The UTC date and time (clamped to [`Stamp::MIN`]..=[`Stamp::MAX`]).
    fn utc(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(self.0.clamp(Self::MIN.0, Self::MAX.0))
            .expect("years 1970..=9999 are within the time crate's range")
    }

    /// The folder name, `YYYY-MM-DDTHHMMSSZ`.
    pub fn name(self) -> String {
        self.utc()
            .format(NAME)
            .expect("a UTC date of years 1970..=9999 formats")
    }

    /// The same time as ISO 8601 (`2026-11-27T15:30:00Z`), for people and JSON.
    pub fn iso(self) -> String {
        self.utc()
            .format(ISO)
            .expect("a UTC date of years 1970..=9999 formats")
    }

    /// Parses a folder name (`2026-11-27T153000Z`), or a date a person types:
    /// `2026-11-27`, `2026-11-27T15:30`, `2026-11-27T15:30:00Z`, `2026-11-27 153000` (UTC).
    /// A date alone is the end of that day. The date must exist (`2026-02-31` does not) and
    /// its year be within 1970..=9999.
    pub fn parse(s: &str) -> Option<Stamp> {
        let s = s.trim().trim_end_matches('Z');
        let (date, time) = match s.split_once(['T', ' ']) {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let mut it = date.split('-');
        let y: i32 = num(it.next()?, 4)?;
        let m: u8 = num(it.next()?, 2)?;
        let d: u8 = num(it.next()?, 2)?;
        if it.next().is_some() || !(1970..=9999).contains(&y) {
            return None;
        }
        let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
        let digits: String = match time {
            Some(t) => {
                if !t.chars().all(|c| c.is_ascii_digit() || c == ':') {
                    return None;
                }
                t.chars().filter(|c| *c != ':').collect()
            }
            None => "235959".into(),
        };
        if !matches!(digits.len(), 2 | 4 | 6) {
            return None;
        }
        let part = |i: usize| {
            digits
                .get(i..i + 2)
                .map_or(Some(0), |p| p.parse::<u8>().ok())
        };
        let time = time::Time::from_hms(part(0)?, part(2)?, part(4)?).ok()?;
        Some(Stamp(
            time::PrimitiveDateTime::new(date, time)
                .assume_utc()
                .unix_timestamp(),
        ))
    }

    /// The UTC day number (days since 1970-01-01).
    pub fn day(self) -> i64 {
        self.0.div_euclid(86400)
    }

    /// The month number (`year * 12 + month`, UTC), for the monthly retention rule.
    fn month(self) -> i64 {
        let d = self.utc();
        i64::from(d.year()) * 12 + i64::from(u8::from(d.month()))
    }
}

fn num<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    (s.len() == len && s.chars().all(|c| c.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A complete generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// When its run started.
    pub stamp: Stamp,
    /// Its folder.
    pub path: PathBuf,
}

/// A generation being built (under its `.incomplete` name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    /// The folder to copy into.
    pub path: PathBuf,
    /// The stamp it gets when complete.
    pub stamp: Stamp,
    /// The interrupted generation this one continues, if any (its old name).
    pub resumed: Option<String>,
    /// Other interrupted generations removed (their names).
    pub removed: Vec<String>,
    /// It began as a btrfs snapshot of the newest generation: it holds it already, so the
    /// copy needs no `--link-dest`.
    pub snapshot: bool,
}

/// How far past the clock a generation may be dated and still count: a day (a clock set
/// back a little, a run in another time zone's idea of UTC). One dated later is
/// *future-dated*: kept, reported, but never taken as the newest.
pub const FUTURE_SLACK_SECS: i64 = 86_400;

impl Stamp {
    /// The system clock's time.
    pub fn now() -> Stamp {
        Stamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        )
    }
}

/// The generations under one drive's mount point, judged at a time (`now`): a generation
/// dated more than [`FUTURE_SLACK_SECS`] after it is *future-dated* (a clock that was
/// ahead, or a folder planted on the drive) and is never the newest: not built on, not
/// restored by default, not counted by the retention.
#[derive(Clone, Debug)]
pub struct Generations {
    root: PathBuf,
    dir: PathBuf,
    now: Stamp,
}

/// Everything `generations/` holds, sorted out ([`Generations::listing`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The complete generations dated at most a day after `now`, oldest first.
    pub complete: Vec<Generation>,
    /// Complete generations dated later than that, oldest first.
    pub future: Vec<Generation>,
    /// Folders left by interrupted runs or removals (`….incomplete`).
    pub incomplete: Vec<PathBuf>,
    /// Anything else (not a folder, or a name that is no valid date): never read, never
    /// deleted; their names.
    pub ignored: Vec<String>,
}

impl Listing {
    /// Lines for the log and the mail about what is not an ordinary generation; none when
    /// everything is in order.
    pub fn report(&self) -> Vec<String> {
        let mut v = vec![];
        if !self.future.is_empty() {
            let names: Vec<String> = self.future.iter().map(|g| g.stamp.name()).collect();
            v.push(format!(
                "history: {} generation(s) dated in the future ({}): made while the clock was \
                 ahead, or not made by extbackup; kept, but never taken as the newest (not \
                 built on, not restored by default, not pruned); delete them by hand once \
                 they are no longer wanted",
                names.len(),
                names.join(", ")
            ));
        }
        if !self.ignored.is_empty() {
            v.push(format!(
                "history: {} entr(ies) under generations/ that are no generation, ignored: {}",
                self.ignored.len(),
                self.ignored.join(", ")
            ));
        }
        v
    }
}

impl Generations {
    /// The generations of the drive mounted at `mount_point` (`mount_point/generations`),
    /// judged at the system clock's time.
    pub fn at(mount_point: &Path) -> Self {
        Self {
            root: mount_point.to_path_buf(),
            dir: mount_point.join(GENERATIONS_DIR),
            now: Stamp::now(),
        }
    }

    /// The same, judged at `now` instead of the clock's time.
    pub fn judged_at(mut self, now: Stamp) -> Self {
        self.now = now;
        self
    }

    /// Whether `generations` exists, after checking it is a real folder on the drive's own
    /// filesystem: a drive is untrusted, and a symlinked `generations` would have a new
    /// generation written into, and retention delete in, a folder off the drive. Checked
    /// before every read and write of the folder (never followed; an error naming it).
    fn checked(&self) -> io::Result<bool> {
        let drive = match oskit::beneath::Beneath::open(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            r => r?,
        };
        match drive.kind(Path::new(GENERATIONS_DIR))? {
            None => Ok(false),
            Some(oskit::beneath::Kind::Dir) => drive
                .real_dir(Path::new(GENERATIONS_DIR))
                .map(|_| true)
                .map_err(|e| drive.explain(&self.dir, e)),
            Some(k) => Err(io::Error::other(format!(
                "{} is {}, not a folder: not followed (the drive check moves it aside)",
                self.dir.display(),
                k.words()
            ))),
        }
    }

    /// Creates `generations` (a real folder on the drive, see [`checked`](Self::checked)).
    fn create(&self) -> io::Result<()> {
        if !self.checked()? {
            oskit::beneath::Beneath::open(&self.root)?
                .create_dir_all(Path::new(GENERATIONS_DIR), 0o755)?;
        }
        Ok(())
    }

    /// The `generations` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `generations/` holds, sorted out.
    pub fn listing(&self) -> io::Result<Listing> {
        let mut l = Listing::default();
        if !self.checked()? {
            return Ok(l);
        }
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(l),
            Err(e) => return Err(e),
        };
        let mut entries = vec![];
        for e in rd {
            let e = e?;
            entries.push((e.file_name(), e.file_type()?.is_dir()));
        }
        entries.sort();
        let limit = self.now.0.saturating_add(FUTURE_SLACK_SECS);
        for (name, dir) in entries {
            let Some(n) = name.to_str().filter(|_| dir) else {
                l.ignored.push(name.to_string_lossy().into_owned());
                continue;
            };
            if n.ends_with(INCOMPLETE) {
                l.incomplete.push(self.dir.join(n));
                continue;
            }
            match Stamp::parse(n).filter(|s| s.name() == n) {
                Some(stamp) => {
                    let g = Generation {
                        stamp,
                        path: self.dir.join(n),
                    };
                    if stamp.0 > limit {
                        l.future.push(g);
                    } else {
                        l.complete.push(g);
                    }
                }
                None => l.ignored.push(n.to_string()),
            }
        }
        Ok(l)
    }

    /// The complete generations, oldest first (not the future-dated ones).
    pub fn list(&self) -> io::Result<Vec<Generation>> {
        Ok(self.listing()?.complete)
    }

    /// The newest complete generation (never a future-dated one): always a full,
    /// consistent copy.
    pub fn newest(&self) -> io::Result<Option<Generation>> {
        Ok(self.list()?.pop())
    }

    /// The generation a person means by `at` (a date or time, see [`Stamp::parse`]): the
    /// newest one made at or before it. A future-dated generation only when `at` is its
    /// exact time (its name typed out).
    pub fn at_or_before(&self, at: Stamp) -> io::Result<Option<Generation>> {
        let l = self.listing()?;
        if let Some(g) = l.future.into_iter().find(|g| g.stamp == at) {
            return Ok(Some(g));
        }
        Ok(l.complete.into_iter().rev().find(|g| g.stamp <= at))
    }

    /// The interrupted generations (folder names ending in `.incomplete`).
    pub fn incomplete(&self) -> io::Result<Vec<PathBuf>> {
        Ok(self.listing()?.incomplete)
    }

    /// Starts the generation of `stamp` (moved on past the newest, and a second on while
    /// that name is taken) under its `.incomplete` name. An interrupted generation is
    /// resumed: renamed to the new name, so what it already holds is not copied again; any
    /// other interrupted one is removed. The name is always a valid date within
    /// [`Stamp::MIN`]..=[`Stamp::MAX`]: a future-dated generation is not the newest, so it
    /// never pushes the new one's date on; a clock past 9999 is an error.
    pub fn start(&self, stamp: Stamp) -> io::Result<Started> {
        self.create()?;
        let newest = self.newest()?.map(|g| g.stamp);
        let mut stamp = stamp
            .max(Stamp::MIN)
            .max(newest.map_or(Stamp::MIN, |n| Stamp(n.0 + 1)));
        while stamp <= Stamp::MAX && self.dir.join(stamp.name()).exists() {
            stamp = Stamp(stamp.0 + 1);
        }
        if stamp > Stamp::MAX {
            return Err(io::Error::other(format!(
                "no valid name for a new generation: the clock or the newest generation is at \
                 or past {} (set the clock right)",
                Stamp::MAX.name()
            )));
        }
        let path = self.dir.join(format!("{}{INCOMPLETE}", stamp.name()));
        // Resume the newest interrupted copy (it is the most complete); a removal cut short
        // (`.removing.incomplete`) is finished, never resumed.
        let (mut old, removing): (Vec<PathBuf>, Vec<PathBuf>) = self
            .incomplete()?
            .into_iter()
            .partition(|p| !file_name(p).contains(".removing"));
        let resumed = old.pop();
        old.extend(removing);
        let mut removed = vec![];
        for o in old {
            remove_tree(&o)?;
            removed.push(file_name(&o));
        }
        let mut snapshot = false;
        let resumed = match resumed {
            Some(o) if o == path => Some(file_name(&o)),
            Some(o) => {
                fs::rename(&o, &path)?;
                Some(file_name(&o))
            }
            None if is_btrfs(&self.dir) => {
                // On btrfs a generation is a subvolume: a snapshot of the newest one when
                // that is a subvolume (a migrated mirror is a plain folder: link to it).
                match self.newest()? {
                    Some(prev) if is_subvolume(&prev.path) => {
                        btrfs(&["subvolume", "snapshot"], &[&prev.path, &path])?;
                        snapshot = true;
                    }
                    _ => btrfs(&["subvolume", "create"], &[&path])?,
                }
                None
            }
            None => {
                fs::create_dir(&path)?;
                None
            }
        };
        sync_dir(&self.dir)?;
        Ok(Started {
            path,
            stamp,
            resumed,
            removed,
            snapshot,
        })
    }

    /// Gives a generation built with [`start`](Self::start) its final name, durably.
    pub fn commit(&self, started: &Started) -> io::Result<Generation> {
        let path = self.dir.join(started.stamp.name());
        self.checked()?;
        fs::rename(&started.path, &path)?;
        sync_dir(&self.dir)?;
        if is_subvolume(&path) {
            btrfs(
                &["property", "set", "-ts"],
                &[&path, Path::new("ro"), Path::new("true")],
            )?;
        }
        Ok(Generation {
            stamp: started.stamp,
            path,
        })
    }

    /// Makes a plain mirror (the `data` folder of the layout before generations) the first
    /// generation, dated `stamp`, by renaming it: nothing is copied. Does nothing (`None`)
    /// when `legacy` does not exist.
    pub fn migrate(&self, legacy: &Path, stamp: Stamp) -> io::Result<Option<Generation>> {
        // A real folder only: a symlinked `data` is never taken for the mirror.
        if !fs::symlink_metadata(legacy).is_ok_and(|m| m.is_dir()) {
            return Ok(None);
        }
        self.create()?;
        let mut stamp = stamp;
        while self.dir.join(stamp.name()).exists() {
            stamp = Stamp(stamp.0 + 1);
        }
        let path = self.dir.join(stamp.name());
        fs::rename(legacy, &path)?;
        sync_dir(&self.dir)?;
        if let Some(parent) = legacy.parent() {
            sync_dir(parent)?;
        }
        Ok(Some(Generation { stamp, path }))
    }

    /// Removes a generation: renamed to `.incomplete` first (so a removal cut short never
    /// leaves a damaged folder that looks complete), then deleted.
    pub fn remove(&self, g: &Generation) -> io::Result<()> {
        let doomed = self
            .dir
            .join(format!("{}.removing{INCOMPLETE}", g.stamp.name()));
        self.checked()?;
        if fs::symlink_metadata(&g.path)?.file_type().is_symlink() {
            return Err(io::Error::other(format!(
                "{} is a symbolic link: not followed",
                g.path.display()
            )));
        }
        if is_subvolume(&g.path) {
            btrfs(
                &["property", "set", "-ts"],
                &[&g.path, Path::new("ro"), Path::new("false")],
            )?;
        }
        fs::rename(&g.path, &doomed)?;
        sync_dir(&self.dir)?;
        remove_tree(&doomed)
    }
}

/// Whether `p` is on btrfs.
pub fn is_btrfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// Whether `p` is a btrfs subvolume (its root folder has inode 256).
pub fn is_subvolume(p: &Path) -> bool {
    is_btrfs(p) && fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.ino() == 256)
}

/// Runs `btrfs ARGS PATHS...` (btrfs-progs); its stderr in the error.
fn btrfs(args: &[&str], paths: &[&Path]) -> io::Result<()> {
    let out = tie_to_parent(&mut std::process::Command::new("btrfs"))
        .args(args)
        .args(paths)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("running btrfs (install btrfs-progs): {e}"),
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "btrfs {} {}: {} {}",
        args.join(" "),
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Deletes a tree (a btrfs subvolume with `btrfs subvolume delete`, then waits until its
/// space is given back, so that the free space read next is true).
fn remove_tree(p: &Path) -> io::Result<()> {
    if is_subvolume(p) {
        btrfs(&["subvolume", "delete", "--commit-after"], &[p])?;
        let parent = p.parent().unwrap_or(Path::new("/"));
        return btrfs(&["subvolume", "sync"], &[parent]);
    }
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Files and bytes of a tree, and the bytes it holds that `previous` does not (inodes not
/// shared with it: what this generation added). Hard links counted once; allocated blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeFigures {
    /// Entries (files, folders, links) in the tree.
    pub files: u64,
    /// Allocated bytes of the tree.
    pub bytes: u64,
    /// Allocated bytes not shared with the previous generation.
    pub bytes_new: u64,
}

/// What identifies a file's data across generations: its inode number and change time.
/// Not the device: every btrfs subvolume (snapshot) has its own `st_dev`, while an
/// unchanged file keeps its inode number and ctime in a snapshot, as a hard link does.
pub type FileKey = (u64, i64, i64);

fn key(md: &fs::Metadata) -> FileKey {
    (md.ino(), md.ctime(), md.ctime_nsec())
}

/// The [`FileKey`]s of a tree's non-folders (all on one filesystem).
pub fn inodes(root: &Path) -> io::Result<HashSet<FileKey>> {
    let mut set = HashSet::new();
    walk(root, &mut |md| {
        if !md.is_dir() {
            set.insert(key(md));
        }
    })?;
    Ok(set)
}

/// [`TreeFigures`] of `root` against the inodes of the previous generation.
pub fn figures(root: &Path, previous: &HashSet<FileKey>) -> io::Result<TreeFigures> {
    let mut f = TreeFigures::default();
    let mut seen = HashSet::new();
    walk(root, &mut |md| {
        f.files += 1;
        let bytes = md.blocks() * 512;
        if md.is_dir() {
            f.bytes += bytes;
            f.bytes_new += bytes;
            return;
        }
        let key = key(md);
        if !seen.insert(key) {
            return;
        }
        f.bytes += bytes;
        if !previous.contains(&key) {
            f.bytes_new += bytes;
        }
    })?;
    f.files = f.files.saturating_sub(1); // the root itself
    Ok(f)
}

/// Bytes that removing all of `doomed` would give back while `kept` stays: the blocks of
/// their inodes not also in `kept` (folders included), each inode once.
pub fn freeable(doomed: &[Generation], kept: &HashSet<FileKey>) -> io::Result<u64> {
    Ok(freeable_cost(doomed, kept)?.bytes)
}

/// What a tree costs on the drive, or gives back: allocated bytes and inodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Allocated bytes.
    pub bytes: u64,
    /// Inodes (files, folders, links: every entry with its own inode, once).
    pub inodes: u64,
}

/// Bytes and inodes that removing all of `doomed` would give back while `kept` stays: the
/// blocks and inodes not also in `kept` (folders included), each inode once.
pub fn freeable_cost(doomed: &[Generation], kept: &HashSet<FileKey>) -> io::Result<Cost> {
    let mut seen = HashSet::new();
    let mut total = Cost::default();
    for g in doomed {
        walk(&g.path, &mut |md| {
            let key = key(md);
            if md.is_dir() || (!kept.contains(&key) && seen.insert(key)) {
                total.bytes += md.blocks() * 512;
                total.inodes += 1;
            }
        })?;
    }
    Ok(total)
}

/// About the bytes a new generation of `source` built beside `previous` takes on the drive:
/// the allocated blocks of every file whose path is new or whose size or modification time
/// differ from `previous`'s (hard links counted once), plus a block for every folder (a
/// hard-link tree has its own folders). Unchanged files cost nothing: they are links. What
/// `exclude` leaves out is not counted.
pub fn new_bytes(source: &Path, previous: &Path, exclude: &crate::Excludes) -> io::Result<u64> {
    Ok(new_cost(source, previous, exclude)?.bytes)
}

/// [`new_bytes`], with the inodes the new generation needs: one for every folder, symbolic
/// link or special file (a hard-link tree has its own), and one for every new or changed
/// file (hard links counted once); unchanged files are links and need none.
pub fn new_cost(source: &Path, previous: &Path, exclude: &crate::Excludes) -> io::Result<Cost> {
    let mut total = Cost::default();
    let mut seen = HashSet::new();
    let mut it = walkdir::WalkDir::new(source).into_iter();
    while let Some(e) = it.next() {
        let e = e?;
        if e.depth() == 0 {
            total.bytes += FOLDER_BYTES;
            total.inodes += 1;
            continue;
        }
        let r = e.path().strip_prefix(source).unwrap_or(e.path());
        let md = e.metadata()?;
        if exclude.excludes(r, md.is_dir()) {
            if e.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if md.is_dir() {
            total.bytes += FOLDER_BYTES;
            total.inodes += 1;
            continue;
        }
        if md.nlink() > 1 && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        if !md.is_file() {
            total.inodes += 1;
            continue;
        }
        if !fs::symlink_metadata(previous.join(r)).is_ok_and(|p| quick_same(&p, &md)) {
            total.bytes += md.blocks() * 512;
            total.inodes += 1;
        }
    }
    Ok(total)
}

/// What [`new_cost`] counts for a folder: one block (a hard-link tree has its own folders).
pub(crate) const FOLDER_BYTES: u64 = 4096;

/// rsync's quick check: `prev` is a regular file with `src`'s size and modification time
/// (to the nanosecond), so rsync would take it as unchanged content.
pub(crate) fn quick_same(prev: &fs::Metadata, src: &fs::Metadata) -> bool {
    prev.is_file()
        && prev.size() == src.size()
        && (prev.mtime(), prev.mtime_nsec()) == (src.mtime(), src.mtime_nsec())
}

/// At most what a copy of `source` takes on a drive whose blocks are `drive_block` bytes,
/// without walking it, when `source` is a filesystem of its own (a mount point with no
/// other filesystem mounted beneath it): its used blocks plus a drive block per used inode
/// (a small file rounds up to a whole block there, whatever its size on the source), and
/// its used inodes. An upper bound of [`new_cost`] and of a first copy's size (excluded
/// entries, hard links and unchanged files only make the copy smaller); `None` when the
/// source is not a filesystem of its own (the bound would miss what is mounted beneath, or
/// count a whole filesystem for a folder of it) or cannot be read: then walk.
///
/// Issue 22: the walk costs 16 s at a million files, the statvfs call nothing; when the
/// bound fits the drive the walk is not needed.
pub fn whole_filesystem_bound(source: &Path, drive_block: u64) -> Option<Cost> {
    let canon = fs::canonicalize(source).ok()?;
    let mounts = oskit::mountinfo::read().ok()?;
    if !mounts.iter().any(|m| m.target == canon)
        || mounts
            .iter()
            .any(|m| m.target != canon && m.target.starts_with(&canon))
    {
        return None;
    }
    let st = nix::sys::statvfs::statvfs(&canon).ok()?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let (blocks, free, frsize, files, ffree) = (
        st.blocks() as u64,
        st.blocks_free() as u64,
        st.fragment_size() as u64,
        st.files() as u64,
        st.files_free() as u64,
    );
    if files == 0 {
        // No fixed inode count (btrfs): the used inodes are unknown.
        return None;
    }
    let inodes = files.saturating_sub(ffree);
    Some(Cost {
        bytes: blocks.saturating_sub(free) * frsize + inodes * drive_block,
        inodes,
    })
}

/// The block size of the filesystem holding `p` (`statvfs`'s `f_bsize`), 4096 when it
/// cannot be read.
pub fn block_size(p: &Path) -> u64 {
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    nix::sys::statvfs::statvfs(p).map_or(4096, |st| st.block_size() as u64)
}

/// The files of `source` (paths relative to it) that cannot be hard-linked to their copy
/// in `previous` without passing `link_max` links on one inode: a file with several names
/// in the source (a hard-link group of `k` names) whose unchanged copy in `previous` has
/// `n` links already gets `k` more when the new generation links to it, and `n + k` must
/// stay within the filesystem's limit (ext4 65,000, btrfs 65,535). Whole groups, sorted.
/// Files with a single name are not looked at: each generation adds one link to them, and
/// retention keeps far fewer generations than the limit.
pub fn unlinkable(
    source: &Path,
    previous: &Path,
    exclude: &crate::Excludes,
    link_max: u64,
) -> io::Result<Vec<PathBuf>> {
    let mut groups: std::collections::HashMap<(u64, u64), (Vec<PathBuf>, fs::Metadata)> =
        std::collections::HashMap::new();
    let mut it = walkdir::WalkDir::new(source).into_iter();
    while let Some(e) = it.next() {
        let e = e?;
        if e.depth() == 0 {
            continue;
        }
        let r = e.path().strip_prefix(source).unwrap_or(e.path());
        let dir = e.file_type().is_dir();
        if exclude.excludes(r, dir) {
            if dir {
                it.skip_current_dir();
            }
            continue;
        }
        if !e.file_type().is_file() {
            continue;
        }
        let md = e.metadata()?;
        if md.nlink() < 2 {
            continue;
        }
        groups
            .entry((md.dev(), md.ino()))
            .or_insert_with(|| (vec![], md))
            .0
            .push(r.to_path_buf());
    }
    let mut out = vec![];
    for (names, md) in groups.into_values() {
        let k = names.len() as u64;
        let too_many = names.iter().any(|r| {
            fs::symlink_metadata(previous.join(r)).is_ok_and(|p| {
                p.is_file()
                    && p.size() == md.size()
                    && (p.mtime(), p.mtime_nsec()) == (md.mtime(), md.mtime_nsec())
                    && p.nlink() + k > link_max
            })
        });
        if too_many {
            out.extend(names);
        }
    }
    out.sort();
    Ok(out)
}

/// The most hard links one inode may have on the filesystem holding `p`
/// (`pathconf(_PC_LINK_MAX)`); `None` when it does not say.
pub fn link_max(p: &Path) -> Option<u64> {
    nix::unistd::pathconf(p, nix::unistd::PathconfVar::LINK_MAX)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
}

fn walk(root: &Path, f: &mut dyn FnMut(&fs::Metadata)) -> io::Result<()> {
    let md = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    f(&md);
    if !md.is_dir() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        f(&e?.metadata()?);
    }
    Ok(())
}

/// Which generations to keep, in the manner of restic's `forget` (and btrbk, Time Machine):
/// everything younger than `keep_within_days`, plus the newest generation of each of the
/// last `daily` days, `weekly` ISO weeks and `monthly` months that hold one (each rule
/// counts only periods with a generation, so a drive plugged in once a week still keeps
/// `daily` of them). The newest generation is always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep every generation younger than this many days.
    pub keep_within_days: u32,
    /// Days (with a generation) whose newest generation is kept.
    pub daily: u32,
    /// ISO weeks (Monday to Sunday, UTC) whose newest generation is kept.
    pub weekly: u32,
    /// Calendar months whose newest generation is kept.
    pub monthly: u32,
}

impl Default for Retention {
    /// Everything for 14 days, then 30 dailies, 12 weeklies, 24 monthlies.
    fn default() -> Self {
        Self {
            keep_within_days: 14,
            daily: 30,
            weekly: 12,
            monthly: 24,
        }
    }
}

/// A period's number (day, ISO week, month) of a stamp.
type Bucket = fn(Stamp) -> i64;

impl Retention {
    /// For each of `stamps` (any order), whether the policy keeps it at time `now`.
    pub fn keep(&self, stamps: &[Stamp], now: Stamp) -> Vec<bool> {
        let mut order: Vec<usize> = (0..stamps.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(stamps[i]));
        let mut keep = vec![false; stamps.len()];
        if let Some(&newest) = order.first() {
            keep[newest] = true;
        }
        let within = i64::from(self.keep_within_days) * 86400;
        let rules: [(u32, Bucket); 3] = [
            (self.daily, |s| s.day()),
            // ISO weeks start on Monday; 1970-01-01 was a Thursday.
            (self.weekly, |s| (s.day() + 3).div_euclid(7)),
            (self.monthly, |s| s.month()),
        ];
        for &i in &order {
            // (A stamp ahead of `now`, after the clock went back, counts as young.)
            if within > 0 && now.0 - stamps[i].0 < within {
                keep[i] = true;
            }
        }
        for (count, bucket) in rules {
            let mut left = count;
            let mut last = None;
            for &i in &order {
                if left == 0 {
                    break;
                }
                let b = bucket(stamps[i]);
                if last != Some(b) {
                    keep[i] = true;
                    last = Some(b);
                    left -= 1;
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_generations_folder_or_generation_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let (mp, nas) = (d.path().join("drive"), d.path().join("nas"));
        fs::create_dir_all(nas.join("2020-01-01T000000Z")).unwrap();
        fs::write(nas.join("2020-01-01T000000Z/precious.txt"), "keep").unwrap();
        fs::create_dir_all(&mp).unwrap();
        std::os::unix::fs::symlink(&nas, mp.join(GENERATIONS_DIR)).unwrap();
        let gens = Generations::at(&mp);
        for e in [
            gens.list().unwrap_err(),
            gens.start(Stamp(2_000_000_000)).unwrap_err(),
            gens.remove(&Generation {
                stamp: Stamp(1_577_836_800),
                path: gens.dir().join("2020-01-01T000000Z"),
            })
            .unwrap_err(),
        ] {
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        // A symlinked `data` is not migrated either.
        std::os::unix::fs::symlink(&nas, mp.join("data")).unwrap();
        fs::remove_file(mp.join(GENERATIONS_DIR)).unwrap();
        assert!(gens.migrate(&mp.join("data"), Stamp(0)).unwrap().is_none());
        // A symlinked generation inside a real folder is not one.
        fs::create_dir(mp.join(GENERATIONS_DIR)).unwrap();
        std::os::unix::fs::symlink(
            nas.join("2020-01-01T000000Z"),
            mp.join("generations/2020-01-01T000000Z"),
        )
        .unwrap();
        assert!(gens.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(nas.join("2020-01-01T000000Z"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn stamps_name_and_parse_in_utc() {
        let s = Stamp::parse("2026-11-27T153000Z").unwrap();
        assert_eq!(s.name(), "2026-11-27T153000Z");
        assert_eq!(s.iso(), "2026-11-27T15:30:00Z");
        assert_eq!(Stamp::parse("2026-11-27T15:30:00Z"), Some(s));
        assert_eq!(Stamp::parse("2026-11-27 15:30"), Some(s));
        assert_eq!(
            Stamp::parse("2026-11-27").unwrap().name(),
            "2026-11-27T235959Z"
        );
        assert_eq!(Stamp(0).name(), "1970-01-01T000000Z");
        assert_eq!(Stamp(951_782_400).name(), "2000-02-29T000000Z");
        for bad in [
            "",
            "2026-13-01",
            "2026-11-27T25",
            "26-11-27",
            "2026-11-27Tab",
            "x",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn stamps_follow_the_real_calendar() {
        // Days a month does not have.
        for bad in [
            "2026-02-31",
            "2025-02-29",
            "2026-04-31",
            "2100-02-29",
            "2026-02-00",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
        // Leap days that exist.
        assert_eq!(
            Stamp::parse("2024-02-29T12:00").unwrap().name(),
            "2024-02-29T120000Z"
        );
        assert_eq!(
            Stamp::parse("2000-02-29").unwrap().name(),
            "2000-02-29T235959Z"
        );
        // The day after a leap day is the next day's number.
        assert_eq!(
            Stamp::parse("2024-03-01T00:00").unwrap().day(),
            Stamp::parse("2024-02-29T00:00").unwrap().day() + 1
        );
    }

    #[test]
    fn stamps_keep_to_the_years_1970_to_9999() {
        for bad in ["1969-12-31", "0000-01-01", "1900-06-15T12:00"] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
        assert_eq!(Stamp::parse("1970-01-01T00:00:00Z"), Some(Stamp::MIN));
        assert_eq!(Stamp::parse("9999-12-31"), Some(Stamp::MAX));
        assert_eq!(Stamp::MAX.name(), "9999-12-31T235959Z");
        assert_eq!(Stamp::MAX.iso(), "9999-12-31T23:59:59Z");
        // Outside the range, a stamp is named as the range's nearest end.
        assert_eq!(Stamp(-1).name(), Stamp::MIN.name());
        assert_eq!(Stamp(i64::MAX).name(), Stamp::MAX.name());
    }

    /// 40 runs, one a day at 15:30 UTC from 2026-01-01 to 2026-02-09, judged on the last day
    /// with keep 7 days, 10 dailies, 4 weeklies, 3 monthlies.
    #[test]
    fn retention_over_forty_dates_keeps_exactly_what_the_policy_names() {
        let first = Stamp::parse("2026-01-01T15:30").unwrap();
        let stamps: Vec<Stamp> = (0..40).map(|i| Stamp(first.0 + i * 86400)).collect();
        let now = *stamps.last().unwrap();
        let policy = Retention {
            keep_within_days: 7,
            daily: 10,
            weekly: 4,
            monthly: 3,
        };
        let keep = policy.keep(&stamps, now);
        let kept: Vec<String> = stamps
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s.name()[..10].to_string())
            .collect();
        // Within 7 days: 02-03..02-09 (7 runs, strictly younger than 7 x 24 h).
        // 10 dailies: 01-31..02-09. Weekly (ISO weeks, newest of each; 02-09 is a Monday):
        // Mon 02-09, Sun 02-08, Sun 02-01, Sun 01-25. Monthly: 02-09 (Feb), 01-31 (Jan); only
        // two months hold runs.
        let want = [
            "2026-01-25",
            "2026-01-31",
            "2026-02-01",
            "2026-02-02",
            "2026-02-03",
            "2026-02-04",
            "2026-02-05",
            "2026-02-06",
            "2026-02-07",
            "2026-02-08",
            "2026-02-09",
        ];
        assert_eq!(kept, want);
        // Irregular runs and a policy of nothing: only the newest survives.
        let none = Retention {
            keep_within_days: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
        };
        let keep = none.keep(&[stamps[3], stamps[9], stamps[1]], now);
        assert_eq!(keep, [false, true, false]);
        // Generations dated a little ahead of `now` (runs in the same second are moved on
        // by a second) are not kept by a zero-day window either.
        let ahead = [Stamp(now.0), Stamp(now.0 + 1), Stamp(now.0 + 2)];
        assert_eq!(none.keep(&ahead, now), [false, false, true]);
        // Two runs on the same day: the daily rule keeps the later one only.
        let same_day = [Stamp(first.0), Stamp(first.0 + 3600)];
        let daily1 = Retention { daily: 1, ..none };
        assert_eq!(
            daily1.keep(&same_day, Stamp(first.0 + 30 * 86400)),
            [false, true]
        );
    }

    #[test]
    fn a_generation_is_built_aside_committed_resumed_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let g = Generations::at(d.path());
        assert_eq!(g.list().unwrap(), vec![]);
        // The plain mirror becomes the first generation.
        fs::create_dir_all(d.path().join("data/sub")).unwrap();
        fs::write(d.path().join("data/sub/f"), "x").unwrap();
        let t1 = Stamp::parse("2026-11-27T10:00").unwrap();
        let first = g.migrate(&d.path().join("data"), t1).unwrap().unwrap();
        assert!(!d.path().join("data").exists());
        assert_eq!(fs::read(first.path.join("sub/f")).unwrap(), b"x");
        // Interrupted: the folder never has a complete-looking name.
        let s = g.start(Stamp(t1.0 + 60)).unwrap();
        assert!(s.path.to_str().unwrap().ends_with(".incomplete"));
        assert_eq!(g.list().unwrap(), vec![first.clone()]);
        fs::write(s.path.join("half"), "y").unwrap();
        // The next run resumes it under its own name.
        let s2 = g.start(Stamp(t1.0 + 120)).unwrap();
        assert_eq!(s2.resumed.as_deref(), Some("2026-11-27T100100Z.incomplete"));
        assert_eq!(fs::read(s2.path.join("half")).unwrap(), b"y");
        let second = g.commit(&s2).unwrap();
        assert_eq!(second.path.file_name().unwrap(), "2026-11-27T100200Z");
        assert_eq!(g.newest().unwrap(), Some(second.clone()));
        assert_eq!(g.incomplete().unwrap(), Vec::<PathBuf>::new());
        // A clock set back never dates a new generation before the newest.
        let s3 = g.start(t1).unwrap();
        assert!(s3.stamp > second.stamp);
        // Dates people type pick the newest at or before.
        let at = |s: &str| g.at_or_before(Stamp::parse(s).unwrap()).unwrap();
        assert_eq!(at("2026-11-27T10:01"), Some(first.clone()));
        assert_eq!(at("2026-11-27"), Some(second.clone()));
        assert_eq!(at("2026-11-26"), None);
        g.remove(&first).unwrap();
        assert_eq!(g.list().unwrap(), vec![second]);
    }

    #[test]
    fn future_dated_and_foreign_entries_are_never_the_newest_and_new_names_stay_valid() {
        let d = tempfile::tempdir().unwrap();
        let now = Stamp::parse("2026-12-03T10:00").unwrap();
        let g = Generations::at(d.path()).judged_at(now);
        let dir = d.path().join(GENERATIONS_DIR);
        for n in [
            "2026-12-01T100000Z",
            "2026-12-04T095959Z", // within a day of now: counts
            "9999-12-31T235959Z",
            "2036-12-03T100000Z",
            "2026-02-31T000000Z",
            "10000-01-01T000000Z",
            "junk",
        ] {
            fs::create_dir_all(dir.join(n)).unwrap();
        }
        fs::write(dir.join("README"), "x").unwrap();
        let l = g.listing().unwrap();
        let names = |v: &[Generation]| v.iter().map(|g| g.stamp.name()).collect::<Vec<_>>();
        assert_eq!(
            names(&l.complete),
            ["2026-12-01T100000Z", "2026-12-04T095959Z"]
        );
        assert_eq!(
            names(&l.future),
            ["2036-12-03T100000Z", "9999-12-31T235959Z"]
        );
        assert_eq!(
            l.ignored,
            [
                "10000-01-01T000000Z",
                "2026-02-31T000000Z",
                "README",
                "junk"
            ]
        );
        let report = l.report().join("\n");
        assert!(report.contains("9999-12-31T235959Z") && report.contains("README"));
        assert_eq!(
            g.newest().unwrap().unwrap().stamp.name(),
            "2026-12-04T095959Z"
        );
        // A date after everything picks the newest that is not future-dated; the exact
        // name of a future-dated one picks it.
        let at = |s: &str| g.at_or_before(Stamp::parse(s).unwrap()).unwrap().unwrap();
        assert_eq!(at("9999-12-30").stamp.name(), "2026-12-04T095959Z");
        assert_eq!(at("9999-12-31T235959Z").stamp.name(), "9999-12-31T235959Z");
        // The new generation follows the newest that counts, not the planted one.
        let s = g.start(now).unwrap();
        assert_eq!(s.stamp.name(), "2026-12-04T100000Z");
        assert!(Stamp::parse(&s.stamp.name()).is_some());
        // A clock past 9999 gets no name.
        let e = Generations::at(d.path())
            .judged_at(Stamp::MAX)
            .start(Stamp(Stamp::MAX.0 + 10))
            .unwrap_err();
        assert!(e.to_string().contains("no valid name"), "{e}");
    }

    #[test]
    fn new_cost_counts_the_inodes_of_folders_links_and_changed_files() {
        let d = tempfile::tempdir().unwrap();
        let (src, prev) = (d.path().join("s"), d.path().join("p"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("same"), "x").unwrap();
        fs::write(src.join("sub/new"), "y").unwrap();
        fs::hard_link(src.join("sub/new"), src.join("sub/new2")).unwrap();
        std::os::unix::fs::symlink("same", src.join("link")).unwrap();
        fs::create_dir_all(&prev).unwrap();
        std::process::Command::new("cp")
            .arg("-a")
            .arg(src.join("same"))
            .arg(prev.join("same"))
            .status()
            .unwrap();
        let c = new_cost(&src, &prev, &crate::Excludes::default()).unwrap();
        // root + sub, the link, one inode for sub/new and sub/new2; `same` is linked.
        assert_eq!(c.inodes, 2 + 1 + 1);
    }

    #[test]
    fn a_hard_link_group_past_the_link_limit_is_unlinkable_as_a_whole() {
        let d = tempfile::tempdir().unwrap();
        let (src, prev) = (d.path().join("s"), d.path().join("p"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), "x").unwrap();
        for i in 0..3 {
            fs::hard_link(src.join("f"), src.join(format!("l{i}"))).unwrap();
        }
        fs::write(src.join("single"), "y").unwrap();
        // The previous generation: a copy of the group (4 names on one inode).
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&prev)
            .status()
            .unwrap();
        assert_eq!(fs::metadata(prev.join("f")).unwrap().nlink(), 4);
        let ex = crate::Excludes::default();
        // 4 links there + 4 more names: 8 fit a limit of 8, not one of 7.
        assert_eq!(
            unlinkable(&src, &prev, &ex, 8).unwrap(),
            Vec::<PathBuf>::new()
        );
        let names = unlinkable(&src, &prev, &ex, 7).unwrap();
        let want: Vec<PathBuf> = ["f", "l0", "l1", "l2"].iter().map(PathBuf::from).collect();
        assert_eq!(names, want);
        // A changed file is copied anyway: never unlinkable.
        fs::write(src.join("f"), "changed").unwrap();
        assert_eq!(
            unlinkable(&src, &prev, &ex, 7).unwrap(),
            Vec::<PathBuf>::new()
        );
        assert!(link_max(d.path()).is_some_and(|n| n > 1));
    }
}
