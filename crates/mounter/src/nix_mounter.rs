//! `NixMounter`: mount(2)/umount2(2) through nix, fsck through `fsck.TYPE -p`, types
//! through `blkid -p`.

use crate::mountinfo::{self, MountEntry};
use crate::*;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

/// Real mounts. Needs root (CAP_SYS_ADMIN).
///
/// Unmount tries `attempts` times with a doubling back-off starting at `backoff` while
/// the filesystem is busy; then, if lazy unmounts are allowed (the default), detaches it
/// lazily (`MNT_DETACH`) and says so in [`UnmountReport::lazy`]; otherwise fails with
/// `Busy`, naming the processes that hold it.
#[derive(Clone, Debug)]
pub struct NixMounter {
    attempts: u32,
    backoff: Duration,
    allow_lazy: bool,
}

impl Default for NixMounter {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(200),
            allow_lazy: true,
        }
    }
}

/// A system tool, looked up in the sbin folders first (they are not always on PATH).
fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn io_err(kind: ErrorKind, msg: String, e: std::io::Error) -> MountError {
    MountError::new(kind, msg).with_source(e)
}

fn errno_err(e: Errno, msg: String) -> MountError {
    let (kind, hint) = match e {
        Errno::EPERM | Errno::EACCES => (ErrorKind::PermissionDenied, ": mounting needs root"),
        Errno::ENOENT | Errno::ENOTDIR => (ErrorKind::NotFound, ""),
        Errno::EBUSY => (ErrorKind::Busy, ""),
        Errno::ENODEV => (
            ErrorKind::UnknownFilesystem,
            ": the kernel does not know this filesystem type",
        ),
        Errno::EINVAL => (
            ErrorKind::Other,
            ": bad superblock, bad option or not a mount point (see dmesg)",
        ),
        _ => (ErrorKind::Other, ""),
    };
    MountError::new(kind, format!("{msg}{hint}")).with_source(std::io::Error::from(e))
}

/// The filesystem type on `device`, by `blkid -p` (low-level probe, no cache).
pub(crate) fn detect_fstype(device: &Path) -> Result<String, MountError> {
    let out = oskit::process::tie_to_parent(&mut Command::new(tool("blkid")))
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(device)
        .output()
        .map_err(|e| {
            io_err(
                ErrorKind::Other,
                "running blkid (install util-linux)".into(),
                e,
            )
        })?;
    let ty = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !ty.is_empty() {
        return Ok(ty);
    }
    // blkid exits 2 when it finds nothing.
    Err(MountError::new(
        ErrorKind::UnknownFilesystem,
        format!(
            "no recognisable filesystem on {}: is it the right device, unlocked? (prepare a \
             new drive with mkfs first)",
            device.display()
        ),
    )
    .with_source(std::io::Error::other(format!(
        "blkid: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))))
}

/// Parses fstab-style options into mount flags and the data string.
pub(crate) fn parse_options(opts: &[String]) -> (MsFlags, Option<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let (set, clear) = match o {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (
                MsFlags::MS_NOATIME,
                MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME,
            ),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (
                MsFlags::MS_RELATIME,
                MsFlags::MS_NOATIME | MsFlags::MS_STRICTATIME,
            ),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (
                MsFlags::MS_STRICTATIME,
                MsFlags::MS_NOATIME | MsFlags::MS_RELATIME,
            ),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            // Userspace-only options of mount(8)/fstab: nothing for the kernel.
            "defaults" | "auto" | "noauto" | "nofail" | "user" | "nouser" | "users" | "owner"
            | "group" | "_netdev" => continue,
            o if o.starts_with("x-") || o.starts_with("comment=") => continue,
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags.remove(clear);
        flags.insert(set);
    }
    let data = (!data.is_empty()).then(|| data.join(","));
    (flags, data)
}

/// Processes with an open file or working directory under `mountpoint` (for messages).
fn holders(mountpoint: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    let me = std::process::id().to_string();
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let under = |l: PathBuf| l.starts_with(mountpoint);
        let mut hit = std::fs::read_link(p.path().join("cwd")).is_ok_and(under);
        if !hit {
            if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
                hit = fds
                    .flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(under));
            }
        }
        if hit {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            let who = if pid == me { " (this process)" } else { "" };
            found.push(format!("{pid} ({}){who}", comm.trim()));
        }
        if found.len() >= 5 {
            break;
        }
    }
    found
}

impl NixMounter {
    /// The defaults: 5 attempts, 200 ms first back-off, lazy unmount as a last resort.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many unmount attempts, and the first back-off (doubled each time).
    pub fn with_retries(mut self, attempts: u32, first_backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = first_backoff;
        self
    }

    /// Whether unmount may fall back to a lazy (detached) unmount. With `false`, a busy
    /// filesystem stays mounted and unmount fails with `Busy`.
    pub fn with_lazy_fallback(mut self, allow: bool) -> Self {
        self.allow_lazy = allow;
        self
    }

    fn entry_at(mountpoint: &Path) -> Result<Option<MountEntry>, MountError> {
        let target = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into());
        let entries = mountinfo::read()
            .map_err(|e| io_err(ErrorKind::Other, "reading /proc/self/mountinfo".into(), e))?;
        // The last entry for a path is the one on top.
        Ok(entries.into_iter().rev().find(|e| e.target == target))
    }

    fn make_mountpoint(mountpoint: &Path) -> Result<(), MountError> {
        match std::fs::metadata(mountpoint) {
            Ok(md) if md.is_dir() => Ok(()),
            Ok(_) => Err(MountError::new(
                ErrorKind::Other,
                format!("the mount point {} is not a folder", mountpoint.display()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(mountpoint)
                .and_then(|_| {
                    std::fs::set_permissions(mountpoint, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| {
                    io_err(
                        ErrorKind::Other,
                        format!("creating the mount point {}", mountpoint.display()),
                        e,
                    )
                }),
            Err(e) => Err(io_err(
                ErrorKind::Other,
                format!("checking the mount point {}", mountpoint.display()),
                e,
            )),
        }
    }
}

fn check_device(device: &Path) -> Result<std::fs::Metadata, MountError> {
    std::fs::metadata(device).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Other
        };
        io_err(kind, format!("opening the device {}", device.display()), e)
    })
}

impl Mounter for NixMounter {
    fn fsck(&self, device: &Path) -> Result<FsckReport, MountError> {
        check_device(device)?;
        let fstype = detect_fstype(device)?;
        let checker = tool(&format!("fsck.{fstype}"));
        if !checker.is_absolute() {
            return Err(MountError::new(
                ErrorKind::FsckFailed,
                format!(
                    "no checker fsck.{fstype} is installed for the {fstype} filesystem on {}: \
                     install it (e2fsprogs for ext2/3/4)",
                    device.display()
                ),
            ));
        }
        let out = oskit::process::tie_to_parent(&mut Command::new(&checker))
            .arg("-p")
            .arg(device)
            .output()
            .map_err(|e| {
                io_err(
                    ErrorKind::FsckFailed,
                    format!("running {} on {}", checker.display(), device.display()),
                    e,
                )
            })?;
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        let code = out.status.code().unwrap_or(-1);
        match code {
            0 => Ok(FsckReport {
                exit_code: 0,
                fixed: false,
                output,
            }),
            // 1: errors corrected; 2: corrected, reboot advised (only matters for /).
            1 | 2 => Ok(FsckReport {
                exit_code: code,
                fixed: true,
                output,
            }),
            _ => Err(MountError::new(
                ErrorKind::FsckFailed,
                format!(
                    "fsck.{fstype} -p found errors on {} it could not fix (exit {code}): run \
                     `fsck.{fstype} {}` by hand",
                    device.display(),
                    device.display()
                ),
            )
            .with_source(std::io::Error::other(output.trim().to_string()))),
        }
    }

    fn mount(
        &self,
        device: &Path,
        mountpoint: &Path,
        opts: &MountOptions,
    ) -> Result<MountInfo, MountError> {
        let md = check_device(device)?;
        Self::make_mountpoint(mountpoint)?;
        if let Some(e) = Self::entry_at(mountpoint)? {
            return Err(MountError::new(
                ErrorKind::AlreadyMounted,
                format!(
                    "{} is already a mount point (of {}): unmount it first",
                    mountpoint.display(),
                    e.source.display()
                ),
            ));
        }
        if md.file_type().is_block_device() {
            let (ma, mi) = (
                nix::sys::stat::major(md.rdev()),
                nix::sys::stat::minor(md.rdev()),
            );
            let entries = mountinfo::read()
                .map_err(|e| io_err(ErrorKind::Other, "reading /proc/self/mountinfo".into(), e))?;
            if let Some(e) = entries.iter().find(|e| (e.major, e.minor) == (ma, mi)) {
                return Err(MountError::new(
                    ErrorKind::AlreadyMounted,
                    format!(
                        "{} is already mounted at {}: unmount it first",
                        device.display(),
                        e.target.display()
                    ),
                ));
            }
        }
        let fstype = match &opts.fstype {
            Some(t) => t.clone(),
            None => detect_fstype(device)?,
        };
        let (flags, data) = parse_options(&opts.options);
        nix::mount::mount(
            Some(device),
            mountpoint,
            Some(fstype.as_str()),
            flags,
            data.as_deref(),
        )
        .map_err(|e| {
            errno_err(
                e,
                format!(
                    "mounting {} ({fstype}) at {}",
                    device.display(),
                    mountpoint.display()
                ),
            )
        })?;
        Ok(self.mounted_at(mountpoint)?.unwrap_or(MountInfo {
            source: device.into(),
            target: mountpoint.into(),
            fstype,
        }))
    }

    fn unmount(&self, mountpoint: &Path) -> Result<UnmountReport, MountError> {
        if Self::entry_at(mountpoint)?.is_none() {
            return Err(MountError::new(
                ErrorKind::NotMounted,
                format!("{} is not mounted", mountpoint.display()),
            ));
        }
        let mut wait = self.backoff;
        let mut last = Errno::EBUSY;
        for attempt in 1..=self.attempts {
            match nix::mount::umount2(mountpoint, MntFlags::empty()) {
                Ok(()) => {
                    return Ok(UnmountReport {
                        attempts: attempt,
                        lazy: false,
                    })
                }
                Err(Errno::EBUSY) => {
                    last = Errno::EBUSY;
                    if attempt < self.attempts {
                        std::thread::sleep(wait);
                        wait = wait.saturating_mul(2);
                    }
                }
                Err(e) => return Err(errno_err(e, format!("unmounting {}", mountpoint.display()))),
            }
        }
        if self.allow_lazy {
            nix::mount::umount2(mountpoint, MntFlags::MNT_DETACH)
                .map_err(|e| errno_err(e, format!("lazily unmounting {}", mountpoint.display())))?;
            return Ok(UnmountReport {
                attempts: self.attempts + 1,
                lazy: true,
            });
        }
        let who = holders(mountpoint);
        let who = if who.is_empty() {
            "see `fuser -vm` for the processes using it".to_string()
        } else {
            format!("held by {}", who.join(", "))
        };
        Err(MountError::new(
            ErrorKind::Busy,
            format!(
                "{} is still busy after {} unmount attempts ({who}); close those files and \
                 unmount again",
                mountpoint.display(),
                self.attempts
            ),
        )
        .with_source(std::io::Error::from(last)))
    }

    fn mounted_at(&self, mountpoint: &Path) -> Result<Option<MountInfo>, MountError> {
        Ok(Self::entry_at(mountpoint)?.map(|e| MountInfo {
            source: e.source,
            target: e.target,
            fstype: e.fstype,
        }))
    }

    fn describe_device(&self, device: &Path) -> String {
        crate::disk::describe_device(device)
    }
    fn check_unused(&self, device: &Path) -> Result<(), MountError> {
        crate::disk::check_unused(device)
    }
    fn partition(&self, device: &Path) -> Result<PathBuf, MountError> {
        crate::disk::make_partition(device)
    }
    fn mkfs(&self, device: &Path, fstype: &str, label: &str) -> Result<(), MountError> {
        crate::disk::mkfs(device, fstype, label)
    }
    fn describe(&self) -> String {
        "mount(2) via nix".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> (MsFlags, Option<String>) {
        parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn default_options_become_flags_without_data() {
        let (f, d) = parse_options(&MountOptions::default().options);
        assert_eq!(
            f,
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME
        );
        assert_eq!(d, None);
    }

    #[test]
    fn later_options_override_earlier_and_unknown_go_to_data() {
        let (f, d) = p(&[
            "ro,noexec",
            "rw",
            "exec",
            "errors=remount-ro",
            "defaults",
            "x-systemd.foo",
            "commit=60",
        ]);
        assert_eq!(f, MsFlags::empty());
        assert_eq!(d.as_deref(), Some("errors=remount-ro,commit=60"));
        let (f, _) = p(&["noatime", "relatime"]);
        assert_eq!(f, MsFlags::MS_RELATIME);
        let (f, _) = p(&["ro"]);
        assert_eq!(f, MsFlags::MS_RDONLY);
    }

    #[test]
    fn errnos_map_to_kinds() {
        assert_eq!(
            errno_err(Errno::EPERM, "m".into()).kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(errno_err(Errno::EBUSY, "m".into()).kind(), ErrorKind::Busy);
        assert_eq!(
            errno_err(Errno::ENODEV, "m".into()).kind(),
            ErrorKind::UnknownFilesystem
        );
        assert_eq!(
            errno_err(Errno::ENOENT, "m".into()).kind(),
            ErrorKind::NotFound
        );
    }
}
