//! One handle on a folder (a drive's mount point) that resolves paths beneath it only: never
//! through a symbolic link, never across a mount, never above it (`openat2(2)` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`, Linux 5.6 and later). What a
//! drive holds is untrusted: a symlink planted at `data`, `generations` or `.extbackup`
//! makes a plain `open` write on the NAS; through [`Beneath`] it is an error (`ELOOP`), and
//! a path that leaves the folder or crosses a mount is one too (`EXDEV`).
//!
//! Paths given to its methods are relative to the folder (an absolute path below the
//! folder is accepted and made relative); `..` is refused.
//!
//! ```no_run
//! let drive = oskit::beneath::Beneath::open(std::path::Path::new("/mnt/drive"))?;
//! drive.create_dir_all(".extbackup".as_ref(), 0o755)?;
//! drive.append(".extbackup/runs.jsonl".as_ref(), b"{}\n", 0o644)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// What an entry is, read without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A folder.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A device node, fifo or socket.
    Other,
}

impl Kind {
    fn of(mode: u32) -> Kind {
        match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// The kind in words ("a folder", "a symbolic link", ...).
    pub fn words(self) -> &'static str {
        match self {
            Kind::Dir => "a folder",
            Kind::File => "a file",
            Kind::Symlink => "a symbolic link",
            Kind::Other => "a device, fifo or socket",
        }
    }
}

/// A folder whose paths are resolved beneath it only (see the module).
#[derive(Debug)]
pub struct Beneath {
    root: PathBuf,
    fd: OwnedFd,
    dev: u64,
    mnt: Option<u64>,
}

/// The mount ID of the file open as `fd` (`statx` `STATX_MNT_ID`, Linux 5.8), if known.
fn mount_id(fd: &OwnedFd) -> Option<u64> {
    use nix::libc;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `fd` is open, the path is an empty C string (AT_EMPTY_PATH: the file itself)
    // and `stx` is writable memory of the right size.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    // SAFETY: statx succeeded, so it filled the struct in.
    let stx = unsafe { stx.assume_init() };
    (r == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

fn io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The mount points [`pin`]ned in this process: each path with the device and mount ID
/// found there when it was pinned.
static PINNED: std::sync::Mutex<Vec<(PathBuf, u64, Option<u64>)>> =
    std::sync::Mutex::new(Vec::new());

/// `root` itself (never followed when it is a symbolic link) as an `O_PATH` descriptor, with
/// its device and mount ID.
fn open_root(root: &Path) -> io::Result<(OwnedFd, nix::libc::dev_t, Option<u64>)> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    // SAFETY: `open` just returned this descriptor, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let dev = fstat(fd.as_raw_fd()).map_err(io)?.st_dev;
    let mnt = mount_id(&fd);
    Ok((fd, dev, mnt))
}

/// Notes that the filesystem mounted at `root` now is the drive: from now on every
/// [`Beneath::open`] of `root` in this process checks that this same mount is still there.
/// A drive unmounted under a run (`umount -l`, a pulled disk) leaves `root` a plain folder of
/// the filesystem beneath (the NAS's); opening it then is an error that says so, never a
/// write there. [`unpin`] when the drive is unmounted by the run itself.
pub fn pin(root: &Path) -> io::Result<()> {
    let (_, dev, mnt) = open_root(root)?;
    let mut p = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    p.retain(|(r, _, _)| r != root);
    p.push((root.to_path_buf(), dev, mnt));
    Ok(())
}

/// Forgets what [`pin`] noted for `root`.
pub fn unpin(root: &Path) {
    let mut p = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    p.retain(|(r, _, _)| r != root);
}

/// An error when `root` is [`pin`]ned and is no longer the pinned mount (or is gone); `Ok`
/// when it is, or when it is not pinned.
pub fn check_pin(root: &Path) -> io::Result<()> {
    if !PINNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(r, _, _)| r == root)
    {
        return Ok(());
    }
    Beneath::open(root).map(drop).map_err(|e| {
        if e.kind() == io::ErrorKind::Other {
            e
        } else {
            io::Error::other(format!(
                "{} is no longer the drive's mount: {e} (unmounted under this run and removed?)",
                root.display()
            ))
        }
    })
}

/// An error when `root` is pinned and what is there now (device `dev`, mount `mnt`) is not
/// the pinned mount.
fn check_pinned(root: &Path, dev: u64, mnt: Option<u64>) -> io::Result<()> {
    let p = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_, pdev, pmnt)) = p.iter().find(|(r, _, _)| r == root) else {
        return Ok(());
    };
    let same = match (pmnt, mnt) {
        (Some(a), Some(b)) => *a == b,
        _ => *pdev == dev,
    };
    if same {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{} is no longer the drive's mount: the drive was unmounted under this run (lazily, \
         `umount -l`, or pulled) and the path is now a folder of another filesystem; nothing \
         is read or written there",
        root.display()
    )))
}

const RESOLVE: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_XDEV);

impl Beneath {
    /// A handle on `root` (itself not followed when it is a symbolic link).
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let (fd, dev, mnt) = open_root(root)?;
        check_pinned(root, dev, mnt)?;
        Ok(Beneath {
            root: root.to_path_buf(),
            fd,
            dev,
            mnt,
        })
    }

    /// The folder's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the folder: an absolute path must lie below it; `..` is refused.
    pub fn relative(&self, path: &Path) -> io::Result<PathBuf> {
        let rel = if path.is_absolute() {
            path.strip_prefix(&self.root).map_err(|_| {
                invalid(format!(
                    "{} is not below {}",
                    path.display(),
                    self.root.display()
                ))
            })?
        } else {
            path
        };
        let mut out = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                _ => {
                    return Err(invalid(format!(
                        "{} leaves {}",
                        path.display(),
                        self.root.display()
                    )))
                }
            }
        }
        Ok(out)
    }

    fn open_how(&self, rel: &Path, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
        let rel = self.relative(rel)?;
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(RESOLVE);
        let fd = openat2(self.fd.as_raw_fd(), rel, how).map_err(io)?;
        // SAFETY: `openat2` just returned this descriptor, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The folder `rel` opened for reading (and for the `*at` calls).
    pub fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_how(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
    }

    /// `rel`'s parent folder, opened, and its last name.
    fn parent(&self, rel: &Path) -> io::Result<(OwnedFd, OsString)> {
        let rel = self.relative(rel)?;
        let name = rel
            .file_name()
            .ok_or_else(|| invalid(format!("{}: no file name", rel.display())))?
            .to_owned();
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.dir(parent)?, name))
    }

    /// `path` (absolute below the folder, or relative) when it is a real folder on the
    /// folder's own filesystem: no component a symbolic link, no mount crossed, and the same
    /// mount (`statx` mount ID; where the kernel lacks it, the same `st_dev`: btrfs gives each
    /// subvolume, so each generation, an `st_dev` of its own). What rsync and cp are handed
    /// is checked with this just before they start.
    pub fn real_dir(&self, path: &Path) -> io::Result<PathBuf> {
        let fd = self
            .open_how(path, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
            .map_err(|e| self.explain(path, e))?;
        let same = match (self.mnt, mount_id(&fd)) {
            (Some(a), Some(b)) => a == b,
            _ => fstat(fd.as_raw_fd()).map_err(io)?.st_dev == self.dev,
        };
        if !same {
            return Err(io::Error::other(format!(
                "{} is on another filesystem than {}",
                path.display(),
                self.root.display()
            )));
        }
        Ok(self.root.join(self.relative(path)?))
    }

    /// An error of resolving `path` in words: which part of it is a symbolic link (or not
    /// a folder), or that it crosses a mount.
    pub fn explain(&self, path: &Path, e: io::Error) -> io::Error {
        let what = match e.raw_os_error() {
            Some(nix::libc::ELOOP) | Some(nix::libc::ENOTDIR) => self.culprit(path),
            Some(nix::libc::EXDEV) => {
                Some("it leaves the drive or crosses a mount (not followed)".to_string())
            }
            _ => None,
        };
        match what {
            Some(why) => io::Error::new(e.kind(), format!("{}: {why}: {e}", path.display())),
            None => e,
        }
    }

    /// The first part of `path` that is not a real folder, in words.
    fn culprit(&self, path: &Path) -> Option<String> {
        let rel = self.relative(path).ok()?;
        let mut at = PathBuf::new();
        for c in rel.components() {
            at.push(c);
            match self.kind(&at) {
                Ok(Some(Kind::Dir)) => {}
                Ok(Some(k)) => {
                    return Some(format!(
                        "{} is {} (not followed)",
                        self.root.join(&at).display(),
                        k.words()
                    ))
                }
                _ => return None,
            }
        }
        None
    }

    /// What `rel` is, not following it; `None` when it (or its folder) does not exist.
    pub fn kind(&self, rel: &Path) -> io::Result<Option<Kind>> {
        let (dir, name) = match self.parent(rel) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            r => r?,
        };
        match fstatat(
            Some(dir.as_raw_fd()),
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some(Kind::of(st.st_mode))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Creates `rel` and the folders above it that are missing (with `mode`).
    pub fn create_dir_all(&self, rel: &Path, mode: u32) -> io::Result<()> {
        let rel = self.relative(rel)?;
        let mut done = PathBuf::new();
        for c in rel.components() {
            let dir = self.dir(&done)?;
            match mkdirat(
                Some(dir.as_raw_fd()),
                c.as_os_str(),
                Mode::from_bits_truncate(mode),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io(e)),
            }
            done.push(c);
        }
        // Whatever existed must be a real folder: this fails on a symlink or a file.
        self.dir(&rel).map(drop)
    }

    /// Replaces the file `rel` with `data` (a temporary file beside it, fsynced, renamed
    /// over it, the folder fsynced), with `mode`.
    pub fn write_atomic(&self, rel: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.write_atomic_all(&[(rel, data)], mode)
    }

    /// Replaces several files of one folder at once, each atomically: every temporary file
    /// written and fsynced first, then each renamed over its target, then the folder fsynced
    /// once (two journal commits on ext4 instead of two a file). A failure before the
    /// renames leaves every target as it was.
    pub fn write_atomic_all(&self, files: &[(&Path, &[u8])], mode: u32) -> io::Result<()> {
        let rels: Vec<&Path> = files.iter().map(|(rel, _)| *rel).collect();
        let mut staged = self.stage(&rels, mode)?;
        for (i, (_, data)) in files.iter().enumerate() {
            staged.file(i).write_all(data)?;
        }
        staged.commit()
    }

    /// Temporary files beside each of `rels` (created with `mode`), to write as they grow
    /// ([`Staged::file`]) and then put in place all at once ([`Staged::commit`]), as
    /// [`Beneath::write_atomic_all`] does; dropped uncommitted, they are removed and the
    /// targets stay as they were.
    pub fn stage(&self, rels: &[&Path], mode: u32) -> io::Result<Staged> {
        let mut staged = Staged { files: vec![] };
        for rel in rels {
            let (dir, name) = self.parent(rel)?;
            let tmp = format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id());
            let dirfd = dir.as_raw_fd();
            let _ = unlinkat(Some(dirfd), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            let f = file_at(
                dirfd,
                OsStr::new(&tmp),
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                mode,
            )?;
            staged.files.push(StagedFile {
                dir,
                tmp,
                name,
                file: f,
            });
            let f = &staged.files.last().expect("just pushed").file;
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        Ok(staged)
    }

    /// Appends `data` to the file `rel` (created with `mode` when missing), fsynced.
    pub fn append(&self, rel: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        let fd = self.open_how(
            rel,
            OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT,
            mode,
        )?;
        let mut f = std::fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(invalid(format!("{}: not a regular file", rel.display())));
        }
        f.write_all(data)?;
        f.sync_data()
    }

    /// `fsync`s the folder `rel` (its entries survive a power cut).
    pub fn sync_dir(&self, rel: &Path) -> io::Result<()> {
        nix::unistd::fsync(self.dir(rel)?.as_raw_fd()).map_err(io)
    }

    /// Writes back everything of the folder's filesystem still in the page cache
    /// (`syncfs(2)`).
    pub fn sync_filesystem(&self) -> io::Result<()> {
        nix::unistd::syncfs(self.fd.as_raw_fd()).map_err(io)
    }

    /// The contents of the regular file `rel`.
    pub fn read(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let fd = self.open_how(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?;
        let mut f = std::fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(invalid(format!("{}: not a regular file", rel.display())));
        }
        let mut v = vec![];
        f.read_to_end(&mut v)?;
        Ok(v)
    }

    /// The regular file `rel` opened for reading, with its metadata as opened (no symbolic
    /// link followed anywhere on the way; a fifo or device is refused without blocking).
    pub fn open_file(&self, rel: &Path) -> io::Result<(std::fs::File, std::fs::Metadata)> {
        let fd = self.open_how(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?;
        let f = std::fs::File::from(fd);
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(invalid(format!("{}: not a regular file", rel.display())));
        }
        Ok((f, m))
    }

    /// Removes the file (or symbolic link, not followed) `rel`.
    pub fn remove_file(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        unlinkat(
            Some(dir.as_raw_fd()),
            name.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        )
        .map_err(io)
    }

    /// The entries of the folder `rel` with their kinds (not followed), sorted by name.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<(OsString, Kind)>> {
        let fd = self.dir(rel)?;
        let mut out = vec![];
        let mut d = nix::dir::Dir::from_fd(fd_into_raw(fd)).map_err(io)?;
        let dirfd = d.as_raw_fd();
        for e in d.iter() {
            let e = e.map_err(io)?;
            let name = OsStr::from_bytes_(e.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let st =
                fstatat(Some(dirfd), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)?;
            out.push((name.to_owned(), Kind::of(st.st_mode)));
        }
        out.sort();
        Ok(out)
    }

    /// Renames `from` to `to` (both beneath the folder; neither followed), never replacing
    /// what is at `to`.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (fd1, n1) = self.parent(from)?;
        let (fd2, n2) = self.parent(to)?;
        nix::fcntl::renameat2(
            Some(fd1.as_raw_fd()),
            n1.as_os_str(),
            Some(fd2.as_raw_fd()),
            n2.as_os_str(),
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(io)
    }
}

fn fd_into_raw(fd: OwnedFd) -> RawFd {
    std::os::fd::IntoRawFd::into_raw_fd(fd)
}

trait FromBytes {
    fn from_bytes_(b: &[u8]) -> &OsStr;
}
impl FromBytes for OsStr {
    fn from_bytes_(b: &[u8]) -> &OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// A file `name` in the folder `dirfd` (no symbolic link followed).
/// Files written beside their targets, put in place by [`Staged::commit`]
/// ([`Beneath::stage`]).
pub struct Staged {
    files: Vec<StagedFile>,
}

struct StagedFile {
    dir: OwnedFd,
    tmp: String,
    name: OsString,
    file: std::fs::File,
}

impl Staged {
    /// The temporary file of the `i`th target (in the order given to [`Beneath::stage`]).
    pub fn file(&mut self, i: usize) -> &mut std::fs::File {
        &mut self.files[i].file
    }

    /// Every file fsynced, then each renamed over its target, then each folder fsynced
    /// once. A failure before the renames leaves every target as it was.
    pub fn commit(mut self) -> io::Result<()> {
        for f in &self.files {
            f.file.sync_all()?;
        }
        let mut dirs = vec![];
        while !self.files.is_empty() {
            let f = self.files.remove(0);
            let dirfd = f.dir.as_raw_fd();
            if let Err(e) =
                nix::fcntl::renameat(Some(dirfd), f.tmp.as_str(), Some(dirfd), f.name.as_os_str())
            {
                let _ = unlinkat(Some(dirfd), f.tmp.as_str(), UnlinkatFlags::NoRemoveDir);
                return Err(io(e));
            }
            dirs.push(f.dir);
        }
        // One fsync per distinct folder (the files of one folder share it).
        let mut seen = std::collections::HashSet::new();
        for d in dirs {
            let st = fstat(d.as_raw_fd()).map_err(io)?;
            if seen.insert((st.st_dev, st.st_ino)) {
                nix::unistd::fsync(d.as_raw_fd()).map_err(io)?;
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = unlinkat(
                Some(f.dir.as_raw_fd()),
                f.tmp.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

fn file_at(dirfd: RawFd, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<std::fs::File> {
    let fd = nix::fcntl::openat(
        Some(dirfd),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(io)?;
    // SAFETY: `openat` just returned this descriptor, owned by nothing else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Beneath, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("drive");
        let outside = dir.path().join("nas");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), "precious").unwrap();
        let b = Beneath::open(&root).unwrap();
        (dir, b, outside)
    }

    #[test]
    fn writes_appends_reads_and_lists_beneath_the_folder() {
        let (_d, b, _) = setup();
        b.create_dir_all(Path::new(".extbackup/headers"), 0o755)
            .unwrap();
        b.write_atomic(Path::new(".extbackup/last-run.json"), b"{}", 0o644)
            .unwrap();
        b.append(Path::new(".extbackup/runs.jsonl"), b"1\n", 0o644)
            .unwrap();
        b.append(Path::new(".extbackup/runs.jsonl"), b"2\n", 0o644)
            .unwrap();
        assert_eq!(
            b.read(Path::new(".extbackup/runs.jsonl")).unwrap(),
            b"1\n2\n"
        );
        let abs = b.root().join(".extbackup/last-run.json");
        assert_eq!(b.read(&abs).unwrap(), b"{}");
        let names: Vec<_> = b.read_dir(Path::new(".extbackup")).unwrap();
        assert_eq!(
            names,
            vec![
                ("headers".into(), Kind::Dir),
                ("last-run.json".into(), Kind::File),
                ("runs.jsonl".into(), Kind::File)
            ]
        );
        assert_eq!(
            b.real_dir(&b.root().join(".extbackup/headers")).unwrap(),
            b.root().join(".extbackup/headers")
        );
        b.rename(Path::new(".extbackup/headers"), Path::new("h2"))
            .unwrap();
        assert_eq!(b.kind(Path::new("h2")).unwrap(), Some(Kind::Dir));
        assert_eq!(b.kind(Path::new("nothing")).unwrap(), None);
    }

    #[test]
    fn write_atomic_all_replaces_every_file_and_follows_no_link() {
        let (_d, b, nas) = setup();
        b.create_dir_all(Path::new("m"), 0o755).unwrap();
        b.write_atomic(Path::new("m/a"), b"old", 0o644).unwrap();
        b.write_atomic_all(&[(Path::new("m/a"), b"A"), (Path::new("m/b"), b"B")], 0o640)
            .unwrap();
        assert_eq!(b.read(Path::new("m/a")).unwrap(), b"A");
        assert_eq!(b.read(Path::new("m/b")).unwrap(), b"B");
        assert_eq!(
            b.read_dir(Path::new("m")).unwrap().len(),
            2,
            "no temporary left"
        );
        symlink(&nas, b.root().join("d")).unwrap();
        assert!(b
            .write_atomic_all(&[(Path::new("m/a"), b"X"), (Path::new("d/f"), b"Y")], 0o644)
            .is_err());
        assert_eq!(b.read(Path::new("m/a")).unwrap(), b"A", "nothing renamed");
        assert_eq!(std::fs::read(nas.join("f")).unwrap(), b"precious");
        assert_eq!(
            b.read_dir(Path::new("m")).unwrap().len(),
            2,
            "no temporary left"
        );
    }

    #[test]
    fn staged_files_dropped_uncommitted_leave_every_target_as_it_was() {
        let (_d, b, _nas) = setup();
        b.create_dir_all(Path::new("m"), 0o755).unwrap();
        b.write_atomic(Path::new("m/a"), b"old", 0o644).unwrap();
        let mut st = b
            .stage(&[Path::new("m/a"), Path::new("m/b")], 0o644)
            .unwrap();
        st.file(0).write_all(b"half of a new").unwrap();
        drop(st);
        assert_eq!(b.read(Path::new("m/a")).unwrap(), b"old");
        assert_eq!(
            b.read_dir(Path::new("m")).unwrap().len(),
            1,
            "no temporary left"
        );
        let mut st = b
            .stage(&[Path::new("m/a"), Path::new("m/b")], 0o600)
            .unwrap();
        st.file(0).write_all(b"new a").unwrap();
        st.file(1).write_all(b"new b").unwrap();
        st.commit().unwrap();
        assert_eq!(b.read(Path::new("m/a")).unwrap(), b"new a");
        assert_eq!(b.read(Path::new("m/b")).unwrap(), b"new b");
        assert_eq!(b.read_dir(Path::new("m")).unwrap().len(), 2);
    }

    #[test]
    fn open_file_and_remove_file_never_follow_a_link() {
        let (_d, b, nas) = setup();
        b.create_dir_all(Path::new("m"), 0o755).unwrap();
        b.write_atomic(Path::new("m/f"), b"mine", 0o644).unwrap();
        let mut s = String::new();
        b.open_file(Path::new("m/f"))
            .unwrap()
            .0
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "mine");
        symlink(nas.join("f"), b.root().join("m/l")).unwrap();
        symlink(&nas, b.root().join("d")).unwrap();
        assert!(b.open_file(Path::new("m/l")).is_err());
        assert!(b.open_file(Path::new("d/f")).is_err());
        assert!(b.open_file(Path::new("m")).is_err(), "a folder is no file");
        nix::unistd::mkfifo(&b.root().join("m/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        assert!(
            b.open_file(Path::new("m/fifo")).is_err(),
            "refused, without blocking"
        );
        assert!(b.remove_file(Path::new("d/f")).is_err());
        b.remove_file(Path::new("m/l")).unwrap();
        assert!(nas.join("f").exists(), "the link went, not its target");
        b.remove_file(Path::new("m/f")).unwrap();
        assert_eq!(b.kind(Path::new("m/f")).unwrap(), None);
    }

    #[test]
    fn symlinks_and_dotdot_are_never_followed() {
        let (_d, b, nas) = setup();
        symlink(&nas, b.root().join("data")).unwrap();
        symlink(nas.join("f"), b.root().join("file")).unwrap();
        std::fs::create_dir(b.root().join("meta")).unwrap();
        symlink(&nas, b.root().join("meta/headers")).unwrap();
        for e in [
            b.real_dir(Path::new("data")).unwrap_err(),
            b.write_atomic(Path::new("data/x"), b"x", 0o644)
                .unwrap_err(),
            b.append(Path::new("file"), b"x", 0o644).unwrap_err(),
            b.append(Path::new("data/f"), b"x", 0o644).unwrap_err(),
            b.read(Path::new("file")).unwrap_err(),
            b.create_dir_all(Path::new("meta/headers/x"), 0o755)
                .unwrap_err(),
            b.create_dir_all(Path::new("data"), 0o755).unwrap_err(),
            b.read_dir(Path::new("data")).unwrap_err(),
            b.real_dir(Path::new("../nas")).unwrap_err(),
            b.real_dir(&nas).unwrap_err(),
        ] {
            assert!(
                matches!(
                    e.raw_os_error(),
                    Some(nix::libc::ELOOP) | Some(nix::libc::ENOTDIR)
                ) || e.kind() == io::ErrorKind::InvalidInput
                    || e.to_string().contains("symbolic link"),
                "{e}"
            );
        }
        assert!(b
            .real_dir(Path::new("data"))
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        assert_eq!(b.kind(Path::new("data")).unwrap(), Some(Kind::Symlink));
        // The symlink itself can be moved aside, which follows nothing.
        b.rename(Path::new("data"), Path::new("meta/aside"))
            .unwrap();
        assert_eq!(
            b.kind(Path::new("meta/aside")).unwrap(),
            Some(Kind::Symlink)
        );
        assert_eq!(std::fs::read_dir(&nas).unwrap().count(), 1);
        assert_eq!(std::fs::read(nas.join("f")).unwrap(), b"precious");
    }

    #[test]
    fn a_mount_below_the_folder_is_not_crossed() {
        if !crate::is_root() {
            // testkit depends on oskit, so its skip is spelled out here: never a pass
            // under EXTBACKUP_REQUIRE_REAL.
            assert!(
                std::env::var_os("EXTBACKUP_REQUIRE_REAL").is_none(),
                "a_mount_below_the_folder_is_not_crossed needs root (a tmpfs mount)"
            );
            eprintln!("SKIP: a_mount_below_the_folder_is_not_crossed: needs root");
            return;
        }
        let (_d, b, _) = setup();
        let m = b.root().join("data");
        std::fs::create_dir(&m).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &m,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let e = b.real_dir(Path::new("data")).unwrap_err();
        let w = b
            .write_atomic(Path::new("data/x"), b"x", 0o644)
            .unwrap_err();
        nix::mount::umount(&m).unwrap();
        assert!(e.to_string().contains("crosses a mount"), "{e}");
        assert_eq!(w.raw_os_error(), Some(nix::libc::EXDEV), "{w}");
    }
}
