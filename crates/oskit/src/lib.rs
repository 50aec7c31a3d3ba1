//! The few Linux facts and writes that several crates share, written once: mountinfo
//! parsing ([`mountinfo`]), a durable atomic file write ([`write_atomic`]), the root
//! check ([`is_root`]), file locks ([`FileLock`]), free space, `poll(2)`, the process group
//! and the terminal's echo; sizes and durations as people read them ([`human`]: `1.5 GiB`,
//! `1 h 2 min`, the one formatter of the workspace); and the one way to start a child
//! process, tied to this process's life ([`process::tie_to_parent`], `PR_SET_PDEATHSIG`); a
//! handle that resolves paths beneath a folder only ([`beneath::Beneath`]: no symlink, no
//! mount crossed), for the untrusted drive. It
//! depends on nothing in the workspace, so the backend crates, the orchestrator, `testkit`,
//! `hw-tests` and `xtask` can all use it.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let p = dir.path().join("state.json");
//! oskit::write_atomic(&p, b"{}", None).unwrap();
//! assert_eq!(std::fs::read(&p).unwrap(), b"{}");
//! ```
#![warn(missing_docs)]

pub mod beneath;
pub mod closed;
pub mod human;
pub mod mountinfo;
pub mod process;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Replaces `path` with `data` so that a crash or a power cut leaves either the old or the
/// new content, never a mix: a temporary file beside it, written and `fsync`ed, renamed
/// over it, then the folder `fsync`ed. With `mode` the file gets that mode; without it, it
/// keeps the mode of the file it replaces (a new one gets 0644 less the umask).
pub fn write_atomic(path: &Path, data: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mode = mode.or_else(|| {
        fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    });
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode.unwrap_or(0o644))
            .open(&tmp)?;
        if let Some(m) = mode {
            // The umask may have taken bits away: the mode asked for is the mode given.
            f.set_permissions(fs::Permissions::from_mode(m))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_and_keep_or_set_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", Some(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, b"two, longer", None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two, longer");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "kept"
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A folder that is missing is an error, not a panic.
        assert!(write_atomic(&dir.path().join("missing/f"), b"x", None).is_err());
    }
}

/// An exclusive `flock(2)` on a lock file (compatible with `flock(1)`), held until dropped;
/// the kernel releases it when the process dies, so a crash never leaves a stale lock.
#[derive(Debug)]
pub struct FileLock {
    _lock: nix::fcntl::Flock<File>,
}

impl FileLock {
    fn open(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
    }

    /// Takes the lock on `path` (created 0644 if missing) if nobody holds it: `None` when
    /// someone does.
    pub fn try_lock(path: &Path) -> std::io::Result<Option<FileLock>> {
        use nix::fcntl::{Flock, FlockArg};
        let mut file = Self::open(path)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => return Ok(Some(FileLock { _lock: l })),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(e.into()),
            }
        }
    }

    /// Waits for the lock on `path` as long as it takes.
    pub fn lock(path: &Path) -> std::io::Result<FileLock> {
        use nix::fcntl::{Flock, FlockArg};
        let mut file = Self::open(path)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(l) => return Ok(FileLock { _lock: l }),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(e.into()),
            }
        }
    }
}

/// Bytes that may still be written on the filesystem holding `path`: for root, the blocks
/// reserved for root included (root may use them, and runs are root).
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)?;
    let blocks = if is_root() {
        st.blocks_free()
    } else {
        st.blocks_available()
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(blocks as u64 * st.fragment_size() as u64)
}

/// Free inodes on the filesystem holding `path` (for root, the reserved ones too, as
/// [`free_space`]); `None` when it has no fixed number of them (btrfs reports 0 of 0).
pub fn free_inodes(path: &Path) -> std::io::Result<Option<u64>> {
    let st = nix::sys::statvfs::statvfs(path)?;
    let free = if is_root() {
        st.files_free()
    } else {
        st.files_available()
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.files() > 0).then_some(free as u64))
}

/// Whether this process leads its process group (as under systemd, or started by a shell).
pub fn leads_process_group() -> bool {
    nix::unistd::getpgrp() == nix::unistd::getpid()
}

/// Sends SIGTERM to this process's group (this process included): the way a stopping run
/// ends its rsync at once instead of at systemd's final SIGKILL.
pub fn terminate_process_group() -> std::io::Result<()> {
    nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::Signal::SIGTERM)?;
    Ok(())
}

/// The processes below `pid` (children, grandchildren...), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        if let Some(ppid) = stat
            .get(close + 2..)
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok())
        {
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// Sends SIGTERM to every process below this one (rsync and its helpers, fsck...).
pub fn terminate_descendants() {
    for pid in descendants(std::process::id()) {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Sends SIGTERM (or, with `kill`, SIGKILL) to the process group `pgid` (a child started
/// with `process_group(0)` leads its own): how a hook that overruns its timeout is ended
/// with everything it started.
pub fn signal_group(pgid: u32, kill: bool) -> std::io::Result<()> {
    use nix::sys::signal::Signal;
    let sig = if kill {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    let pgid =
        i32::try_from(pgid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig)?;
    Ok(())
}

/// An I/O scheduling class (`ioprio_set(2)`), as `ionice -c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoClass {
    /// Only when no one else uses the disk (`ionice -c3`).
    Idle,
    /// The normal class at a level 0 (first) ..= 7 (last) (`ionice -c2 -n N`).
    BestEffort(u8),
}

/// The calling thread's CPU and I/O priority, as saved by [`set_thread_priority`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadPriority {
    nice: i32,
    ioprio: i32,
}

const IOPRIO_WHO_PROCESS: i32 = 1;
const IOPRIO_CLASS_SHIFT: i32 = 13;

/// Sets the calling thread's nice value and I/O class (Linux keeps both per thread; the
/// processes it starts afterwards inherit them) and returns what they were, for
/// [`restore_thread_priority`]. Lowering the nice value again needs root (runs are root).
pub fn set_thread_priority(
    nice: Option<i32>,
    io: Option<IoClass>,
) -> std::io::Result<ThreadPriority> {
    use nix::libc;
    let errno = nix::errno::Errno::last_raw;
    nix::errno::Errno::clear();
    // SAFETY: getpriority/ioprio_get read the calling thread's values; no memory is passed.
    let old_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if old_nice == -1 && errno() != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let old_io = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) } as i32;
    if old_io < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let saved = ThreadPriority {
        nice: old_nice,
        ioprio: old_io,
    };
    if let Some(n) = nice {
        // SAFETY: sets the calling thread's nice value; no memory is passed.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if let Some(c) = io {
        let value = match c {
            IoClass::Idle => 3 << IOPRIO_CLASS_SHIFT,
            IoClass::BestEffort(level) => (2 << IOPRIO_CLASS_SHIFT) | i32::from(level.min(7)),
        };
        set_ioprio(value)?;
    }
    Ok(saved)
}

/// Puts back what [`set_thread_priority`] saved.
pub fn restore_thread_priority(p: ThreadPriority) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: sets the calling thread's nice value; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, p.nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    set_ioprio(p.ioprio)
}

/// The calling thread's nice value and I/O priority as `ionice -p` shows it
/// (`(class, level)`: 0 none, 1 realtime, 2 best-effort, 3 idle).
pub fn thread_priority() -> std::io::Result<(i32, (i32, i32))> {
    use nix::libc;
    // SAFETY: reads the calling thread's values; no memory is passed.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    // SAFETY: as above.
    let io = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) } as i32;
    if io < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((nice, (io >> IOPRIO_CLASS_SHIFT, io & 0xff)))
}

fn set_ioprio(value: i32) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: sets the calling thread's I/O priority; no memory is passed.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` is readable or `timeout` passes (`poll(2)`): true when readable.
pub fn wait_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> std::io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                return Ok(fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLIN)))
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs `f` (reading a secret from the terminal `tty`) with the terminal's echo off, and
/// restores the terminal's settings afterwards whatever `f` did.
pub fn without_echo<T>(
    tty: &impl std::os::fd::AsFd,
    f: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let old = tcgetattr(tty)?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(tty, SetArg::TCSAFLUSH, &quiet)?;
    let r = f();
    let _ = tcsetattr(tty, SetArg::TCSAFLUSH, &old);
    r
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_file_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = FileLock::try_lock(&p).unwrap().expect("free");
        assert!(FileLock::try_lock(&p).unwrap().is_none(), "held");
        drop(a);
        let _b = FileLock::lock(&p).unwrap();
        assert!(free_space(dir.path()).unwrap() > 0);
    }

    #[test]
    fn a_child_and_its_child_are_descendants() {
        let mut c = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let below = loop {
            let d = descendants(std::process::id());
            if d.len() >= 2 || std::time::Instant::now() > deadline {
                break d;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(below.contains(&c.id()), "{below:?}");
        assert!(below.len() >= 2, "the shell's sleep too: {below:?}");
        // Only the shell's own: other tests' children are descendants of this process too.
        let ours = descendants(c.id());
        let _ = c.kill();
        let _ = c.wait();
        for p in ours {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    #[test]
    fn a_pipe_with_data_is_readable_and_an_empty_one_times_out() {
        use std::os::fd::AsFd;
        let (r, w) = nix::unistd::pipe().unwrap();
        assert!(!wait_readable(r.as_fd(), std::time::Duration::from_millis(10)).unwrap());
        nix::unistd::write(&w, b"x").unwrap();
        assert!(wait_readable(r.as_fd(), std::time::Duration::from_millis(10)).unwrap());
    }
}
