//! The one way a run and the drive commands touch a drive's filesystem: a handle on its
//! mount point ([`oskit::beneath::Beneath`]) that resolves paths beneath it only, never
//! through a symbolic link, never across a mount. What a drive holds is untrusted (it spends
//! a month in someone else's drawer and may be mounted read-write by its owner): a symlink
//! at `data`, `generations`, `.extbackup` or any record is never followed, it is an error
//! (and the drive check, [`crate::drive::check`], moves it aside first).

use std::path::{Path, PathBuf};

pub use oskit::beneath::{Beneath as Drive, Kind};

use crate::Failure;

/// The handle on the drive mounted at `mount_point`.
pub fn open(mount_point: &Path) -> Result<Drive, Failure> {
    Drive::open(mount_point)
        .map_err(|e| Failure::with(format!("opening the drive at {}", mount_point.display()), e))
}

/// `dir` when it is a real folder on the drive at `mount_point` (no symbolic link on the
/// way, no mount crossed, the mount point's filesystem): what rsync and cp are handed is
/// checked with this just before they start.
pub fn real_dir(mount_point: &Path, dir: &Path) -> Result<PathBuf, Failure> {
    open(mount_point)?.real_dir(dir).map_err(|e| {
        Failure::with(
            format!(
                "{} is not a real folder on the drive: refused (nothing on a drive is followed \
                 out of it)",
                dir.display()
            ),
            e,
        )
    })
}
