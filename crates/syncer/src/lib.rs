//! The `Syncer` trait: make the drive's copy equal to the NAS's backup repository.
//!
//! `GuardedSync::sync(source, target, options, progress)` returns a report (files and bytes copied and
//! deleted, duration, warnings). Before touching the target, the guard refuses a source that
//! is missing, empty, or (when so configured) not a mount point, and a run that would delete
//! more than a configured share of the target's files: a mirror from an empty source would
//! otherwise wipe the backup. The source lock (`flock` on a configured file, compatible with
//! `flock(1)`) is held for the whole sync by the caller.
//!
//! Backends: `RsyncSyncer` (`rsync -aHAX --numeric-ids --delete-delay`; the first copy onto
//! an empty target by `cp`, see [`first_copy`]), `CommandSyncer`
//! (the user's own script, with `EXTBACKUP_SOURCE`, `EXTBACKUP_TARGET`, `EXTBACKUP_DRIVE`),
//! and [`fake::FakeSyncer`] (copies nothing, records calls).
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use syncer::{GuardedSync, RsyncSyncer, SourceLock, SyncOptions};
//!
//! let _lock = SourceLock::acquire(Path::new("/run/lock/backup-repo.lock"), Duration::from_secs(600))?;
//! let opts = SyncOptions {
//!     drive: "offsite-a".into(),
//!     require_source_mount_point: true,
//!     max_delete_fraction: Some(0.2),
//!     exclude: syncer::Excludes::new(&["*.tmp", "/cache/"])?,
//!     ..Default::default()
//! };
//! let report = RsyncSyncer::new().sync(
//!     Path::new("/srv/backup"),
//!     Path::new("/extbackup/backup"),
//!     &opts,
//!     &mut |p| eprintln!("{} bytes, {:?}", p.bytes, p.fraction),
//! )?;
//! println!("{} files copied, {} deleted", report.files_copied, report.files_deleted);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod child;
mod command;
#[cfg(feature = "mock")]
mod mock;
#[cfg(feature = "mock")]
pub use mock::MockSyncer;
pub mod exclude;
mod failure;
pub mod fake;
pub mod first_copy;
pub mod generations;
pub mod guard;
pub mod linking;
mod lock;
mod rsync;

pub use command::CommandSyncer;
pub use exclude::Excludes;
pub use first_copy::first_copy_applies;
pub use guard::{check_deletions, check_source, guard, DeletionCount};
pub use lock::SourceLock;
pub use rsync::RsyncSyncer;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What went wrong, in broad terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The source is missing, empty, or not a mount point: refusing to mirror it.
    SourceUnusable,
    /// The run would delete more of the target than allowed.
    TooManyDeletions,
    /// The target ran out of space (ENOSPC or a quota, as rsync's messages say).
    NoSpace,
    /// Reading or writing failed for another reason than space (rsync exit 11 without
    /// ENOSPC): an I/O error, a drive that was pulled, a filesystem gone read-only.
    Io,
    /// Some files could not be transferred (rsync exit 23).
    PartialTransfer,
    /// The source lock is held by someone else and the timeout passed.
    LockTimeout,
    /// The sync program is missing or could not start.
    NotFound,
    /// Interrupted by a signal or cancelled.
    Interrupted,
    /// Any other failure (the message has the exit status and stderr tail).
    Other,
}

/// A Syncer error: a kind plus the backend's own error as the source.
pub type SyncError = backend_error::Error<ErrorKind>;

/// How to sync. Written as a literal naming what differs from the default, ending in
/// `..Default::default()`; the default checks nothing the guard may skip (no mount-point
/// requirement, no deletion limit), forces nothing, links nothing and excludes nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncOptions {
    /// The drive's name, passed to command syncers as `EXTBACKUP_DRIVE`.
    pub drive: String,
    /// Refuse unless the source is a mount point.
    pub require_source_mount_point: bool,
    /// Refuse when more than this share (0.0..=1.0) of the target's files would be deleted;
    /// `None` disables the check.
    pub max_delete_fraction: Option<f64>,
    /// Override the guard (the user said so explicitly).
    pub force: bool,
    /// The previous generation, when `target` is a new one being built beside it (see
    /// [`generations`]): unchanged files are hard-linked from it instead of copied, and the
    /// guard counts deletions against it (the target may still be empty).
    pub link_dest: Option<PathBuf>,
    /// What of the source is not copied ([`exclude`]); what the target holds of it is
    /// deleted (the target equals the source without the excluded entries), and the guard
    /// counts those deletions.
    pub exclude: Excludes,
    /// How many entries the source is expected to hold (the guard's count of the previous
    /// generation's), for the linking pass's progress; `None`: not known.
    pub expected_entries: Option<u64>,
}

/// Progress during a sync.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Bytes transferred so far.
    pub bytes: u64,
    /// Share done, 0.0..=1.0, when known.
    pub fraction: Option<f32>,
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncReport {
    /// Files created or updated on the target.
    pub files_copied: u64,
    /// Bytes transferred.
    pub bytes_copied: u64,
    /// Files deleted from the target (with [`SyncOptions::link_dest`]: the entries of the
    /// previous generation the new one no longer has, as the guard counted them).
    pub files_deleted: u64,
    /// Files in the source.
    pub files_total: u64,
    /// Bytes in the source.
    pub bytes_total: u64,
    /// How long it took.
    pub duration: Duration,
    /// Non-fatal problems (e.g. rsync exit 24: files vanished during the run).
    pub warnings: Vec<String>,
    /// Files copied instead of hard-linked to [`SyncOptions::link_dest`]: their copy there
    /// had too many links already (the filesystem's limit per inode).
    pub copied_not_linked: u64,
    /// What the new and changed files and the folders of a new generation take on the drive,
    /// when the sync measured it on the way (the linking pass does; see
    /// [`generations::new_cost`] for what it counts): the link-dest alarm's expectation
    /// without a walk of its own. `None` when not measured.
    pub new_bytes: Option<u64>,
}

/// Mirrors a source tree onto a target tree. Object safe: chosen at run time.
///
/// A backend implements [`mirror`](Syncer::mirror) only; callers call
/// [`GuardedSync::sync`], implemented once for every syncer, which runs the guard first. A
/// backend cannot skip the guard, and cannot be called around it by mistake.
pub trait Syncer: Send + Sync {
    /// Makes `target` equal to `source`. Not called directly: [`GuardedSync::sync`] calls it
    /// once the guard allowed the copy.
    fn mirror(
        &self,
        source: &Path,
        target: &Path,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SyncReport, SyncError>;
    /// A short name for logs.
    fn describe(&self) -> String;
}

/// The one way to sync: the guard's checks ([`guard()`]), then the backend's
/// [`mirror`](Syncer::mirror). Implemented for every [`Syncer`] (a blanket impl no backend
/// can replace).
pub trait GuardedSync {
    /// Refuses what the guard refuses (a missing, empty or unmounted source; too many
    /// deletions), else makes `target` equal to `source`.
    fn sync(
        &self,
        source: &Path,
        target: &Path,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SyncReport, SyncError>;
}

impl<T: Syncer + ?Sized> GuardedSync for T {
    fn sync(
        &self,
        source: &Path,
        target: &Path,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SyncReport, SyncError> {
        let gone = guard::guard(source, target, opts)?;
        let counted = SyncOptions {
            expected_entries: opts
                .expected_entries
                .or((gone.total > 0).then_some(gone.total)),
            ..opts.clone()
        };
        let mut report = self.mirror(source, target, &counted, progress)?;
        if opts.link_dest.is_some() {
            // A new generation deletes nothing: what it lacks of the previous one is what
            // the guard counted (when the deletion check is on).
            report.files_deleted = gone.deleted;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::SyncOptions;

    /// The options the unit tests sync with: drive `d`, at most half the files deleted.
    pub(crate) fn opts() -> SyncOptions {
        SyncOptions {
            drive: "d".into(),
            max_delete_fraction: Some(0.5),
            ..Default::default()
        }
    }
}
