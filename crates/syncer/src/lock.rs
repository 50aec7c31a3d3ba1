//! The source lock: `flock(LOCK_EX)` on a lock file, compatible with `flock(1)`.

use crate::{ErrorKind, SyncError};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a busy lock is tried again.
const POLL: Duration = Duration::from_millis(100);

/// An exclusive `flock` on the source's lock file, held until dropped.
///
/// Other jobs writing the source (the NAS's own backup, for instance) cooperate by taking
/// the same lock, e.g. `flock /run/lock/backup.lock rsync ...`. The kernel releases it when
/// this process dies, so a crash never leaves a stale lock.
#[derive(Debug)]
pub struct SourceLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl SourceLock {
    /// Takes the lock on `path` (created, mode 0644, if missing), trying again every 100 ms
    /// until `timeout` has passed; then fails with [`ErrorKind::LockTimeout`].
    pub fn acquire(path: &Path, timeout: Duration) -> Result<SourceLock, SyncError> {
        Self::acquire_unless(path, timeout, &mut || Ok(()))
    }

    /// Like [`acquire`](Self::acquire), and between two tries asks `stop` whether to give up
    /// (a stop signal): its error ends the wait. A timeout's message names the whole wait.
    pub fn acquire_unless(
        path: &Path,
        timeout: Duration,
        stop: &mut dyn FnMut() -> Result<(), SyncError>,
    ) -> Result<SourceLock, SyncError> {
        let start = Instant::now();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| {
                SyncError::new(
                    ErrorKind::Other,
                    format!(
                        "opening the source lock file {}: check that its folder exists and \
                         is writable",
                        path.display()
                    ),
                )
                .with_source(e)
            })?;
        let mut waiting = false;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    tracing::debug!("source lock {} taken", path.display());
                    return Ok(SourceLock {
                        _lock: lock,
                        path: path.to_path_buf(),
                    });
                }
                Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => {
                    if !waiting {
                        waiting = true;
                        tracing::info!(
                            "the source lock {} is held by another job: waiting up to {:.1} s",
                            path.display(),
                            timeout.as_secs_f64()
                        );
                    }
                    file = f
                }
                Err((_, errno)) => {
                    return Err(SyncError::new(
                        ErrorKind::Other,
                        format!("locking {}", path.display()),
                    )
                    .with_source(std::io::Error::from(errno)))
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(SyncError::new(
                    ErrorKind::LockTimeout,
                    format!(
                        "the source lock {} is held by another job (the NAS's own backup?) and \
                         was not released within {:.1} s; try again when it has finished, or \
                         raise the lock timeout (`fuser -v {}` shows who holds it)",
                        path.display(),
                        timeout.as_secs_f64(),
                        path.display()
                    ),
                ));
            }
            stop()?;
            std::thread::sleep(POLL.min(timeout - waited));
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
