//! The `Mounter` trait: check, mount and unmount the filesystem on an unlocked drive.
//!
//! fsck runs before every mount (preen mode); a filesystem it cannot fix stops the run.
//! Mounts use `nodev,nosuid,noexec,noatime` unless configured otherwise; the mount point is
//! created with mode 0700. Unmount retries, and falls back to a lazy unmount only as a last
//! resort, saying so in its report.
//!
//! Backends: `NixMounter` (mount(2)/umount2(2) through nix, fsck through `fsck -p`), and
//! [`fake::FakeMounter`] (in memory, records calls). [`mountinfo`] (the workspace's one
//! parser, from `oskit`) parses `/proc/self/mountinfo`.
//!
//! ```no_run
//! use mounter::{MountOptions, Mounter, NixMounter};
//! use std::path::Path;
//! let m: Box<dyn Mounter> = Box::new(NixMounter::new().with_lazy_fallback(false));
//! let dev = Path::new("/dev/mapper/extbackup-offsite");
//! let report = m.fsck(dev)?; // FsckFailed stops the run
//! if report.fixed {
//!     println!("fsck fixed errors:\n{}", report.output);
//! }
//! m.mount(dev, Path::new("/mnt/extbackup"), &MountOptions::default())?;
//! let done = m.unmount(Path::new("/mnt/extbackup"))?;
//! assert!(!done.lazy);
//! # Ok::<(), mounter::MountError>(())
//! ```
#![warn(missing_docs)]

mod disk;
pub mod fake;
pub use oskit::mountinfo;
mod nix_mounter;

pub use nix_mounter::NixMounter;

use std::path::{Path, PathBuf};

/// What went wrong, in broad terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The device or mount point does not exist.
    NotFound,
    /// No recognisable filesystem on the device.
    UnknownFilesystem,
    /// fsck found errors it could not fix (or it failed to run).
    FsckFailed,
    /// The filesystem is in use and could not be unmounted.
    Busy,
    /// Not permitted (mounting needs root).
    PermissionDenied,
    /// Already mounted somewhere (or something else is mounted at the mount point).
    AlreadyMounted,
    /// Not mounted.
    NotMounted,
    /// Any other failure.
    Other,
}

/// A Mounter error: a kind plus the backend's own error as the source.
pub type MountError = backend_error::Error<ErrorKind>;

/// How to mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Filesystem type; detected (blkid) when `None`.
    pub fstype: Option<String>,
    /// Mount flags and data as in fstab, e.g. `["nodev", "nosuid", "noexec", "noatime"]`.
    pub options: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            fstype: None,
            options: ["nodev", "nosuid", "noexec", "noatime"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// What fsck did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsckReport {
    /// fsck's exit status (0 clean, 1 errors corrected).
    pub exit_code: i32,
    /// Whether it corrected errors.
    pub fixed: bool,
    /// What it printed, for the log and the mail.
    pub output: String,
}

/// What unmount did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmountReport {
    /// How many attempts it took (1 when the first worked).
    pub attempts: u32,
    /// Whether it fell back to a lazy (detached) unmount.
    pub lazy: bool,
}

/// A mounted filesystem, as found in `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// The mounted device.
    pub source: PathBuf,
    /// Where it is mounted.
    pub target: PathBuf,
    /// Its filesystem type.
    pub fstype: String,
}

/// Filesystem operations. Object safe: the backend is chosen at run time.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Mounter: Send + Sync {
    /// Checks the filesystem on `device` in preen mode (`fsck -p`); `FsckFailed` if it has
    /// errors fsck cannot fix.
    fn fsck(&self, device: &Path) -> Result<FsckReport, MountError>;
    /// Mounts `device` at `mountpoint` (created 0700 if missing).
    fn mount(
        &self,
        device: &Path,
        mountpoint: &Path,
        opts: &MountOptions,
    ) -> Result<MountInfo, MountError>;
    /// Unmounts `mountpoint`, retrying; lazy only as a last resort.
    fn unmount(&self, mountpoint: &Path) -> Result<UnmountReport, MountError>;
    /// What is mounted at `mountpoint`, if anything.
    fn mounted_at(&self, mountpoint: &Path) -> Result<Option<MountInfo>, MountError>;
    /// A short name for logs.
    fn describe(&self) -> String;

    /// A line naming the disk `device` for a confirmation prompt (size, model when known).
    fn describe_device(&self, device: &Path) -> String;
    /// Refuses `device` unless it is a block device that nothing uses: not mounted, no
    /// mounted partition, not active swap (nor a swap partition), not held by another
    /// device (an open LUKS mapping, RAID, LVM).
    fn check_unused(&self, device: &Path) -> Result<(), MountError>;
    /// Writes a GPT with one partition over the whole of `device`; returns the partition.
    /// Destroys what was on `device`: callers confirm with the user first.
    fn partition(&self, device: &Path) -> Result<PathBuf, MountError>;
    /// Makes a new `fstype` filesystem (`ext4` or `btrfs`) labelled `label` on `device`.
    /// Destroys what was on `device`: callers confirm with the user first.
    fn mkfs(&self, device: &Path, fstype: &str, label: &str) -> Result<(), MountError>;
}
