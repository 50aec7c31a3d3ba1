//! The block-device side of preparing a drive: what a disk is (size, model), whether
//! anything uses it (mounts, swap, holders, partitions), a GPT with one partition, and a
//! new filesystem. `NixMounter` implements the `Mounter` methods with these.

use crate::{ErrorKind, MountError};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn err(message: impl Into<String>) -> MountError {
    MountError::new(ErrorKind::Other, message)
}

fn fail(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> MountError {
    MountError::new(ErrorKind::Other, message).with_source(source)
}

/// A line describing `device` for the confirmation prompt (size, model when known).
pub(crate) fn describe_device(device: &Path) -> String {
    let mut s = device.display().to_string();
    if let Some(dir) = sys_dir(device) {
        let size = std::fs::read_to_string(dir.join("size"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|sectors| oskit::human::bytes(sectors.saturating_mul(512)));
        let model = std::fs::read_to_string(dir.join("device/model"))
            .ok()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty());
        let backing = std::fs::read_to_string(dir.join("loop/backing_file"))
            .ok()
            .map(|m| format!("loop on {}", m.trim()));
        let parts: Vec<String> = [size, model, backing].into_iter().flatten().collect();
        if !parts.is_empty() {
            s.push_str(&format!(" ({})", parts.join(", ")));
        }
    }
    s
}

fn sys_dir(device: &Path) -> Option<PathBuf> {
    let md = std::fs::metadata(device).ok()?;
    if !md.file_type().is_block_device() {
        return None;
    }
    let rdev = md.rdev();
    let p = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    ));
    p.exists().then_some(p)
}

/// Refuses `device` unless it is a block device that is not mounted, has no mounted
/// partition, is not active swap (nor has a swap partition) and is not held by another
/// device (an open LUKS mapping, RAID, LVM).
pub(crate) fn check_unused(device: &Path) -> Result<(), MountError> {
    let md = std::fs::metadata(device)
        .map_err(|e| fail(format!("{}: no such device", device.display()), e))?;
    if !md.file_type().is_block_device() {
        return Err(err(format!(
            "{} is not a block device: name the whole disk, e.g. /dev/sdX (for an image \
             file, attach it first with `losetup --find --show IMAGE`)",
            device.display()
        )));
    }
    let dir = sys_dir(device)
        .ok_or_else(|| err(format!("{}: not found in /sys/dev/block", device.display())))?;
    let mut devs = vec![(
        dir.clone(),
        format!(
            "{}:{}",
            nix::sys::stat::major(md.rdev()),
            nix::sys::stat::minor(md.rdev())
        ),
    )];
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.join("partition").exists() {
                if let Ok(d) = std::fs::read_to_string(p.join("dev")) {
                    devs.push((p.clone(), d.trim().to_string()));
                }
            }
        }
    }
    let mounts = oskit::mountinfo::read().unwrap_or_default();
    // Active swap is in neither mountinfo nor `holders`.
    let swaps: Vec<(String, String)> = std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| {
            let md = std::fs::metadata(p).ok()?;
            md.file_type().is_block_device().then(|| {
                (
                    p.to_string(),
                    format!(
                        "{}:{}",
                        nix::sys::stat::major(md.rdev()),
                        nix::sys::stat::minor(md.rdev())
                    ),
                )
            })
        })
        .collect();
    for (sys, dev) in &devs {
        let name = sys
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dev.clone());
        if let Some(m) = mounts
            .iter()
            .find(|m| format!("{}:{}", m.major, m.minor) == *dev)
        {
            return Err(err(format!(
                "{name} is mounted at {}: refusing to erase a mounted device; unmount it first if you really mean it",
                m.target.display()
            )));
        }
        if let Some((p, _)) = swaps.iter().find(|(_, d)| d == dev) {
            return Err(err(format!(
                "{name} is in use as swap ({p}): refusing to erase it; `swapoff {p}` first if \
                 you really mean it"
            )));
        }
        let holders: Vec<String> = std::fs::read_dir(sys.join("holders"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !holders.is_empty() {
            return Err(err(format!(
                "{name} is in use by {}: close it first (e.g. `cryptsetup close`)",
                holders.join(", ")
            )));
        }
    }
    Ok(())
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<(), MountError> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    tracing::info!("$ {shown}");
    oskit::process::tie_to_parent(cmd);
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("starting `{shown}` (is it installed?)"), e))?;
    if let (Some(text), Some(mut inp)) = (stdin, child.stdin.take()) {
        let _ = inp.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("running `{shown}`"), e))?;
    if !out.status.success() {
        return Err(err(format!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn partition_path(device: &Path) -> PathBuf {
    let s = device.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p1"))
    } else {
        PathBuf::from(format!("{s}1"))
    }
}

/// The first partition of `device`, named after the kernel's device, not the path given:
/// `/dev/disk/by-id/usb-…-0:0` is `/dev/sdb`, whose partition is `/dev/sdb1`.
fn partition_of(device: &Path) -> PathBuf {
    let disk = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    partition_path(&disk)
}

pub(crate) fn make_partition(device: &Path) -> Result<PathBuf, MountError> {
    run(
        Command::new("sfdisk")
            .args(["--quiet", "--wipe", "always", "--label", "gpt"])
            .arg(device),
        Some("label: gpt\n,,L\n"),
    )?;
    // The kernel may not re-read the table itself (loop devices): ask it.
    let part = partition_of(device);
    if !part.exists() {
        let _ = run(Command::new("partx").arg("-u").arg(device), None);
    }
    if !part.exists() {
        let _ = run(Command::new("partx").arg("-a").arg(device), None);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !part.exists() {
        if Instant::now() > deadline {
            return Err(err(format!(
                "the new partition {} did not appear: run `partx -a {}` and try again without --partition on {}",
                part.display(),
                device.display(),
                part.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(part)
}

/// Makes a new filesystem of type `fstype` (`ext4`, `btrfs`) labelled `label` on `device`.
pub(crate) fn mkfs(device: &Path, fstype: &str, label: &str) -> Result<(), MountError> {
    let mut cmd = match fstype {
        "ext4" => {
            let mut c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-L", label]);
            c
        }
        "btrfs" => {
            let mut c = Command::new("mkfs.btrfs");
            c.args(["-q", "-f", "-L", label]);
            c
        }
        other => {
            return Err(MountError::new(
                ErrorKind::UnknownFilesystem,
                format!("cannot make a {other} filesystem: use ext4 or btrfs"),
            ))
        }
    };
    run(cmd.arg(device), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(
            partition_path(Path::new("/dev/sdb")),
            Path::new("/dev/sdb1")
        );
        assert_eq!(
            partition_path(Path::new("/dev/loop3")),
            Path::new("/dev/loop3p1")
        );
        assert_eq!(
            partition_path(Path::new("/dev/nvme0n1")),
            Path::new("/dev/nvme0n1p1")
        );
    }

    #[test]
    fn the_partition_of_a_symlinked_disk_is_the_kernel_devices() {
        let dir = tempfile::tempdir().unwrap();
        for (link, disk, part) in [
            ("usb-Vendor_Disk_1234-0:0", "sdb", "sdb1"),
            ("backup-disk", "loop3", "loop3p1"),
        ] {
            std::fs::write(dir.path().join(disk), b"").unwrap();
            std::os::unix::fs::symlink(dir.path().join(disk), dir.path().join(link)).unwrap();
            assert_eq!(
                partition_of(&dir.path().join(link)),
                dir.path().canonicalize().unwrap().join(part),
                "{link}"
            );
        }
        // A path that does not resolve keeps the kernel's naming rule.
        assert_eq!(
            partition_of(Path::new("/nonexistent/sdq")),
            Path::new("/nonexistent/sdq1")
        );
    }

    #[test]
    fn a_regular_file_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = check_unused(f.path()).unwrap_err().to_string();
        assert!(e.contains("not a block device"), "{e}");
    }
}
