//! The source lock: `flock(LOCK_EX)` on a lock file, compatible with `flock(1)`.

use crate::{ErrorKind, SyncError};
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
    _lock: oskit::FileLock,
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
        let mut waiting = false;
        loop {
            let taken = oskit::FileLock::try_lock(path).map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::NotFound
                    || e.kind() == std::io::ErrorKind::PermissionDenied
                {
                    format!(
                        "opening the source lock file {}: check that its folder exists and \
                         is writable",
                        path.display()
                    )
                } else {
                    format!("locking {}", path.display())
                };
                SyncError::new(ErrorKind::Other, what).with_source(e)
            })?;
            if let Some(lock) = taken {
                tracing::debug!("source lock {} taken", path.display());
                return Ok(SourceLock {
                    _lock: lock,
                    path: path.to_path_buf(),
                });
            }
            if !waiting {
                waiting = true;
                tracing::info!(
                    "the source lock {} is held by another job: waiting up to {:.1} s",
                    path.display(),
                    timeout.as_secs_f64()
                );
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
