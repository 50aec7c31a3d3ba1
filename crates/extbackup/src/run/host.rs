//! The operations of the pipeline that are not a backend: the run lock, the source lock,
//! free space and tree sizes, and the record on the drive. Behind the [`Host`] trait so
//! that the pipeline's order of operations can be pinned with mocks.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::drive::state::RunRecord;

/// A failed host operation (locks, statvfs, walking a tree, writing the record): the
/// orchestrator's one error shape, so a step's error keeps every cause.
pub type HostError = crate::Failure;

/// Locks, space and records.
#[cfg_attr(test, mockall::automock)]
pub trait Host: Send {
    /// Takes the run lock without waiting; `false` when another run holds it.
    fn try_lock_run(&mut self) -> Result<bool, HostError>;
    /// Waits for the run lock.
    fn wait_lock_run(&mut self) -> Result<(), HostError>;
    /// Releases the run lock.
    fn unlock_run(&mut self);
    /// Takes the source lock at `path`, waiting up to `timeout`.
    fn lock_source(&mut self, path: &Path, timeout: Duration) -> Result<(), HostError>;
    /// Releases the source lock.
    fn unlock_source(&mut self);
    /// Bytes available to us on the filesystem holding `path` (for root, the blocks reserved
    /// for root too).
    fn free_space(&self, path: &Path) -> Result<u64, HostError>;
    /// Bytes the files under `path` occupy (allocated blocks; 0 if it does not exist),
    /// without what `exclude` leaves out.
    fn tree_size(&self, path: &Path, exclude: &syncer::Excludes) -> Result<u64, HostError>;
    /// The drive check right after mounting ([`crate::drive::check`]): a symlink or an entry
    /// of the wrong kind at the top of the drive is moved aside (one warning each) or fails
    /// the run naming it. `sources` are the named sources' folder names.
    fn check_drive(
        &mut self,
        mountpoint: &Path,
        sources: &[String],
    ) -> Result<Vec<String>, HostError>;
    /// Writes the run record onto the drive mounted at `mountpoint`.
    fn record_on_drive(&mut self, mountpoint: &Path, run: &RunRecord) -> Result<(), HostError>;
}

/// How often a wait for a lock looks at the stop flag.
const CANCEL_CHECK: Duration = Duration::from_millis(200);

/// The real host: `flock(2)`, `statvfs(3)`, the filesystem.
#[derive(Debug)]
pub struct SystemHost {
    run_lock_path: PathBuf,
    run_lock: Option<oskit::FileLock>,
    source_lock: Option<syncer::SourceLock>,
    cancel: Option<&'static AtomicBool>,
    header_backups: Vec<(String, PathBuf)>,
}

impl SystemHost {
    /// A host whose run lock is the file `run_lock_path`.
    pub fn new(run_lock_path: impl Into<PathBuf>) -> Self {
        Self {
            run_lock_path: run_lock_path.into(),
            run_lock: None,
            source_lock: None,
            cancel: None,
            header_backups: vec![],
        }
    }

    /// With the LUKS header backups of the configured drives ((name, file), see
    /// [`crate::drive::recovery::header_backups`]): the record step also stores the other drives'
    /// backups on the drive it writes.
    pub fn with_header_backups(mut self, headers: Vec<(String, PathBuf)>) -> Self {
        self.header_backups = headers;
        self
    }

    /// Waits for the run lock and the source lock stop when `flag` is set (by the SIGTERM
    /// handler), instead of waiting on (up to the source lock's timeout, an hour by
    /// default) while systemd's stop timeout runs out and SIGKILL leaves the drive open.
    pub fn with_cancel(mut self, flag: &'static AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    fn cancelled(&self, what: &str) -> Result<(), HostError> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(HostError::new(format!(
                "stopped by a signal (SIGTERM or Ctrl-C) while waiting for {what}"
            )));
        }
        Ok(())
    }

    fn make_state_dir(&self) -> Result<(), HostError> {
        if let Some(dir) = self.run_lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                HostError::with(format!("creating the state directory {}", dir.display()), e)
            })?;
        }
        Ok(())
    }

    fn lock_error(&self, e: std::io::Error) -> HostError {
        HostError::with(
            format!("taking the run lock {}", self.run_lock_path.display()),
            e,
        )
    }
}

impl Host for SystemHost {
    fn try_lock_run(&mut self) -> Result<bool, HostError> {
        self.make_state_dir()?;
        self.run_lock =
            oskit::FileLock::try_lock(&self.run_lock_path).map_err(|e| self.lock_error(e))?;
        Ok(self.run_lock.is_some())
    }

    fn wait_lock_run(&mut self) -> Result<(), HostError> {
        self.make_state_dir()?;
        if self.cancel.is_none() {
            let l = oskit::FileLock::lock(&self.run_lock_path).map_err(|e| self.lock_error(e))?;
            self.run_lock = Some(l);
            return Ok(());
        }
        loop {
            if let Some(l) =
                oskit::FileLock::try_lock(&self.run_lock_path).map_err(|e| self.lock_error(e))?
            {
                self.run_lock = Some(l);
                return Ok(());
            }
            self.cancelled("the run lock (another drive's backup)")?;
            std::thread::sleep(CANCEL_CHECK);
        }
    }

    fn unlock_run(&mut self) {
        self.run_lock = None;
    }

    fn lock_source(&mut self, path: &Path, timeout: Duration) -> Result<(), HostError> {
        let what = format!("the source lock {}", path.display());
        let mut stopped = None;
        let l = syncer::SourceLock::acquire_unless(path, timeout, &mut || {
            self.cancelled(&what).map_err(|e| {
                let msg = e.to_string();
                stopped = Some(e);
                syncer::SyncError::new(syncer::ErrorKind::Interrupted, msg)
            })
        });
        if let Some(e) = stopped {
            return Err(e);
        }
        let l = l.map_err(|e| {
            HostError::with(
                format!(
                    "taking the source lock {} (waited up to {} s; `fuser -v {}` shows who \
                     holds it; raise source_lock.timeout_secs to wait longer)",
                    path.display(),
                    timeout.as_secs(),
                    path.display()
                ),
                e,
            )
        })?;
        self.source_lock = Some(l);
        Ok(())
    }

    fn unlock_source(&mut self) {
        self.source_lock = None;
    }

    fn free_space(&self, path: &Path) -> Result<u64, HostError> {
        // Runs are root, and root may use the blocks ext4 reserves (5% by default): counting
        // only the unreserved ones refused copies that fit.
        oskit::free_space(path)
            .map_err(|e| HostError::with(format!("statvfs {}", path.display()), e))
    }

    fn tree_size(&self, path: &Path, exclude: &syncer::Excludes) -> Result<u64, HostError> {
        tree_size(path, exclude)
            .map_err(|e| HostError::with(format!("measuring {}", path.display()), e))
    }

    fn check_drive(
        &mut self,
        mountpoint: &Path,
        sources: &[String],
    ) -> Result<Vec<String>, HostError> {
        crate::drive::check::check(mountpoint, sources)
    }

    fn record_on_drive(&mut self, mountpoint: &Path, run: &RunRecord) -> Result<(), HostError> {
        crate::drive::state::record_on_drive(mountpoint, run).map_err(|e| {
            HostError::with(
                format!("writing the run record under {}", mountpoint.display()),
                e,
            )
        })?;
        crate::drive::recovery::store_headers(mountpoint, &self.header_backups, &run.drive);
        Ok(())
    }
}

/// Allocated bytes of the files under `path`, not following symbolic links; hard links
/// counted once; what `exclude` leaves out (paths relative to `path`) is not counted, nor
/// entered.
pub fn tree_size(path: &Path, exclude: &syncer::Excludes) -> std::io::Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut it = walkdir::WalkDir::new(path)
        .follow_root_links(false)
        .into_iter();
    while let Some(e) = it.next() {
        let e = match e {
            Ok(e) => e,
            Err(e)
                if e.depth() == 0
                    && e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) =>
            {
                return Ok(0)
            }
            Err(e) => return Err(e.into()),
        };
        let md = e.metadata()?;
        let rel = e.path().strip_prefix(path).unwrap_or(e.path());
        if e.depth() > 0 && exclude.excludes(rel, md.is_dir()) {
            if md.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        total += md.blocks() * 512;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lock_is_exclusive_between_hosts_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/run.lock");
        let mut a = SystemHost::new(&p);
        let mut b = SystemHost::new(&p);
        assert!(a.try_lock_run().unwrap());
        assert!(!b.try_lock_run().unwrap());
        a.unlock_run();
        assert!(b.try_lock_run().unwrap());
    }

    #[test]
    fn source_lock_times_out_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src.lock");
        let mut a = SystemHost::new(dir.path().join("r"));
        let mut b = SystemHost::new(dir.path().join("r"));
        a.lock_source(&p, Duration::ZERO).unwrap();
        let e = b.lock_source(&p, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("taking the source lock"), "{e}");
        a.unlock_source();
        b.lock_source(&p, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_stop_signal_ends_the_wait_for_a_held_source_lock() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src.lock");
        let mut a = SystemHost::new(dir.path().join("r"));
        let mut b = SystemHost::new(dir.path().join("r")).with_cancel(&STOP);
        a.lock_source(&p, Duration::ZERO).unwrap();
        STOP.store(true, Ordering::Relaxed);
        // Without the stop flag this waits the whole timeout and then times out.
        let e = b.lock_source(&p, Duration::from_secs(3)).unwrap_err();
        assert!(
            e.to_string().contains("stopped by a signal"),
            "{}",
            crate::chain(&e)
        );
        a.unlock_source();
        // A free lock is still taken, and the full timeout is still waited without a stop.
        STOP.store(false, Ordering::Relaxed);
        b.lock_source(&p, Duration::ZERO).unwrap();
        let mut c = SystemHost::new(dir.path().join("r")).with_cancel(&STOP);
        let e = c.lock_source(&p, Duration::from_millis(500)).unwrap_err();
        assert!(e.to_string().contains("waited up to"), "{e}");
    }

    #[test]
    fn a_source_lock_timeout_names_the_whole_wait_not_the_poll_interval() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src.lock");
        let mut a = SystemHost::new(dir.path().join("r"));
        a.lock_source(&p, Duration::ZERO).unwrap();
        // With a stop flag the wait is sliced; the message still gives the whole wait.
        let mut b = SystemHost::new(dir.path().join("r")).with_cancel(&STOP);
        let e = crate::chain(&b.lock_source(&p, Duration::from_millis(700)).unwrap_err());
        assert!(e.contains("within 0.7 s"), "{e}");
        assert!(!e.contains("within 0.2 s"), "{e}");
    }

    #[test]
    fn a_stop_signal_ends_the_wait_for_the_run_lock() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/run.lock");
        let mut a = SystemHost::new(&p);
        let mut b = SystemHost::new(&p).with_cancel(&STOP);
        assert!(a.try_lock_run().unwrap());
        let t = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            STOP.store(true, Ordering::Relaxed);
        });
        let e = b.wait_lock_run().unwrap_err();
        t.join().unwrap();
        assert!(e.to_string().contains("stopped by a signal"), "{e}");
        a.unlock_run();
        STOP.store(false, Ordering::Relaxed);
        b.wait_lock_run().unwrap();
    }

    #[test]
    fn tree_size_counts_file_blocks_but_not_excluded_ones() {
        let none = syncer::Excludes::default();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(tree_size(&dir.path().join("missing"), &none).unwrap(), 0);
        let empty = tree_size(dir.path(), &none).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(dir.path().join("d/f"), dir.path().join("g")).unwrap();
        let full = tree_size(dir.path(), &none).unwrap();
        assert!(full - empty >= 100_000, "{full} {empty}");
        assert!(
            full - empty < 200_000,
            "hard link counted once: {full} {empty}"
        );
        std::fs::create_dir(dir.path().join("cache")).unwrap();
        std::fs::write(dir.path().join("cache/big"), vec![1u8; 300_000]).unwrap();
        std::fs::write(dir.path().join("d/x.tmp"), vec![1u8; 300_000]).unwrap();
        let ex = syncer::Excludes::new(&["/cache/", "*.tmp"]).unwrap();
        assert_eq!(tree_size(dir.path(), &ex).unwrap(), full);
        assert!(tree_size(dir.path(), &none).unwrap() >= full + 600_000);
    }

    #[test]
    fn free_space_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let host = SystemHost::new(dir.path().join("r"));
        assert!(host.free_space(dir.path()).unwrap() > 0);
        let e = host.free_space(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("statvfs"), "{e}");
    }
}
