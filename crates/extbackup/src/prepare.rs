//! `extbackup prepare DEVICE --name NAME`: the seed's "preparing a new backup disk" in one
//! command. Optional GPT partition (sfdisk), LUKS2 with a new random 4096-byte key file
//! (0400), the LUKS header backup beside it, ext4 with a label on the unlocked volume, and
//! the drive appended to the configuration file (the user's comments kept).
//!
//! The confirmation is the caller's job (the command line asks, naming the device);
//! [`check_device`] refuses a device that is mounted, has mounted partitions or is held
//! open by something else.

use crypt::{Crypt, FormatOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::config::{self, Config, DriveConfig, DriveName, Uuid};

/// Where key files go unless `--keys-dir` says otherwise.
pub const DEFAULT_KEYS_DIR: &str = "/etc/extbackup/keys";

/// Size of a new key file in bytes.
pub const KEY_SIZE: usize = 4096;

/// A failed preparation: what failed and how to fix it.
pub type PrepareError = crate::Failure;

/// What to prepare.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// The whole disk (or partition) to erase.
    pub device: PathBuf,
    /// The drive's name in the configuration.
    pub name: String,
    /// Make a GPT with one partition first, and put LUKS on the partition.
    pub partition: bool,
    /// Where the key file and the header backup go.
    pub keys_dir: PathBuf,
    /// The configuration file to append the drive to.
    pub config_path: PathBuf,
    /// The drive's own mount point, if not `mount_root/NAME`.
    pub mount_point: Option<PathBuf>,
    /// The recovery passphrase keyslot, or none.
    pub recovery: crate::recovery::RecoveryChoice,
    /// The filesystem inside the LUKS volume.
    pub fs: Filesystem,
}

/// The filesystem `prepare` makes on the drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Filesystem {
    /// ext4 (generations are hard-link trees).
    #[default]
    Ext4,
    /// btrfs (generations are read-only subvolume snapshots; needs btrfs-progs).
    Btrfs,
}

impl Filesystem {
    /// `mkfs.ext4` / `mkfs.btrfs` with a label, quiet and forced.
    fn mkfs(self, label: &str) -> Command {
        match self {
            Filesystem::Ext4 => {
                let mut c = Command::new("mkfs.ext4");
                c.args(["-q", "-F", "-L", label]);
                c
            }
            Filesystem::Btrfs => {
                let mut c = Command::new("mkfs.btrfs");
                c.args(["-q", "-f", "-L", label]);
                c
            }
        }
    }
}

/// What was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The LUKS device (the partition with `--partition`).
    pub luks_device: PathBuf,
    /// Its LUKS UUID.
    pub uuid: String,
    /// The new key file.
    pub key_file: PathBuf,
    /// The LUKS header backup.
    pub header_backup: PathBuf,
    /// The LUKS2 label (`extbackup-NAME`); the ext4 label is NAME (16 bytes at most).
    pub label: String,
    /// Whether a recovery passphrase keyslot was added.
    pub recovery_passphrase: bool,
}

/// A line describing `device` for the confirmation prompt (size, model when known).
pub fn describe_device(device: &Path) -> String {
    let mut s = device.display().to_string();
    if let Some(dir) = sys_dir(device) {
        let size = std::fs::read_to_string(dir.join("size"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|sectors| crate::pipeline::human(sectors * 512));
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
        libc::major(rdev),
        libc::minor(rdev)
    ));
    p.exists().then_some(p)
}

/// Refuses `device` unless it is a block device that is not mounted, has no mounted
/// partition, is not active swap (nor has a swap partition) and is not held by another
/// device (an open LUKS mapping, RAID, LVM).
pub fn check_device(device: &Path) -> Result<(), PrepareError> {
    let md = std::fs::metadata(device)
        .map_err(|e| PrepareError::with(format!("{}: no such device", device.display()), e))?;
    if !md.file_type().is_block_device() {
        return Err(PrepareError::new(format!(
            "{} is not a block device: name the whole disk, e.g. /dev/sdX (for an image \
             file, attach it first with `losetup --find --show IMAGE`)",
            device.display()
        )));
    }
    let dir = sys_dir(device).ok_or_else(|| {
        PrepareError::new(format!("{}: not found in /sys/dev/block", device.display()))
    })?;
    let mut devs = vec![(
        dir.clone(),
        format!("{}:{}", libc::major(md.rdev()), libc::minor(md.rdev())),
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
                    format!("{}:{}", libc::major(md.rdev()), libc::minor(md.rdev())),
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
            return Err(PrepareError::new(format!(
                "{name} is mounted at {}: refusing to erase a mounted device; unmount it first if you really mean it",
                m.target.display()
            )));
        }
        if let Some((p, _)) = swaps.iter().find(|(_, d)| d == dev) {
            return Err(PrepareError::new(format!(
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
            return Err(PrepareError::new(format!(
                "{name} is in use by {}: close it first (e.g. `cryptsetup close`)",
                holders.join(", ")
            )));
        }
    }
    Ok(())
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<(), PrepareError> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    tracing::info!("$ {shown}");
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| PrepareError::with(format!("starting `{shown}` (is it installed?)"), e))?;
    if let (Some(text), Some(mut inp)) = (stdin, child.stdin.take()) {
        let _ = inp.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| PrepareError::with(format!("running `{shown}`"), e))?;
    if !out.status.success() {
        return Err(PrepareError::new(format!(
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

fn make_partition(device: &Path) -> Result<PathBuf, PrepareError> {
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
            return Err(PrepareError::new(format!(
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

fn new_key_file(path: &Path) -> Result<(), PrepareError> {
    let mut key = vec![0u8; KEY_SIZE];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| PrepareError::with("reading /dev/urandom", e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| {
            PrepareError::with(
                format!(
                    "creating the key file {} (an existing key file is never overwritten)",
                    path.display()
                ),
                e,
            )
        })?;
    f.write_all(&key)
        .and_then(|_| f.sync_all())
        .map_err(|e| PrepareError::with(format!("writing {}", path.display()), e))?;
    // In case the umask or an existing ACL widened it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))
        .map_err(|e| PrepareError::with(format!("chmod 0400 {}", path.display()), e))
}

/// Reads the configuration file's text (empty when it does not exist yet) and checks that
/// `name` is free in it.
fn config_text(path: &Path, name: &DriveName) -> Result<String, PrepareError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(PrepareError::with(format!("reading {}", path.display()), e)),
    };
    let cfg = Config::parse(&text).map_err(|e| {
        PrepareError::with(
            format!(
                "{} is not a valid configuration: fix it first (`extbackup config check`)",
                path.display()
            ),
            e,
        )
    })?;
    if cfg.drive_by_name(name.as_str()).is_some() {
        return Err(PrepareError::new(format!(
            "{} already has a drive named {name}: pick another --name",
            path.display()
        )));
    }
    Ok(text)
}

/// Prepares the drive. Destroys what is on `opts.device`: the caller has confirmed.
pub fn prepare(crypt: &dyn Crypt, opts: &PrepareOptions) -> Result<Prepared, PrepareError> {
    let name = DriveName::try_from(opts.name.clone()).map_err(PrepareError::new)?;
    let text = config_text(&opts.config_path, &name)?;
    // The configuration wants absolute paths (runs start from /): `--keys-dir keys` means
    // the folder here, not one relative to wherever the next run starts.
    let absolute = |p: &Path| {
        std::path::absolute(p)
            .map_err(|e| PrepareError::with(format!("resolving {}", p.display()), e))
    };
    let keys_dir = absolute(&opts.keys_dir)?;
    let mount_point = opts.mount_point.as_deref().map(absolute).transpose()?;
    let key_file = keys_dir.join(format!("{name}.key"));
    let header_backup = keys_dir.join(format!("{name}.luks-header"));
    // Before erasing anything: the drive's table must leave a valid configuration valid.
    if !text.is_empty() {
        let probe = DriveConfig {
            name: name.clone(),
            uuid: Uuid::try_from("00000000-0000-4000-8000-000000000000".to_string())
                .map_err(PrepareError::new)?,
            key_file: key_file.clone(),
            mount_point: mount_point.clone(),
            history: None,
        };
        let mut with = text.clone();
        if !with.ends_with('\n') {
            with.push('\n');
        }
        with.push_str(&config::drive_table(&probe));
        if let Err(e) = Config::parse(&with) {
            return Err(PrepareError::with(
                format!(
                    "drive {name} would make {} invalid: nothing was erased; fix the \
                     options (e.g. --mount-point)",
                    opts.config_path.display()
                ),
                e,
            ));
        }
    }
    check_device(&opts.device)?;

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keys_dir)
        .map_err(|e| PrepareError::with(format!("creating {}", keys_dir.display()), e))?;
    for p in [&key_file, &header_backup] {
        if p.exists() {
            return Err(PrepareError::new(format!(
                "{} exists already: a drive of that name was prepared before; remove it \
                 (after making sure no drive needs it) or pick another --name",
                p.display()
            )));
        }
    }

    let luks_device = if opts.partition {
        tracing::info!(
            "prepare: GPT with one partition on {}",
            opts.device.display()
        );
        make_partition(&opts.device)?
    } else {
        opts.device.clone()
    };

    tracing::info!("prepare: new key file {}", key_file.display());
    new_key_file(&key_file)?;
    let label = format!("extbackup-{name}");
    // ext4 labels hold 16 bytes; the LUKS2 label (48) carries the full form.
    let ext4_label: String = name.as_str().chars().take(16).collect();
    tracing::info!("prepare: LUKS2 on {}", luks_device.display());
    let (passphrase, cheap) = match &opts.recovery {
        crate::recovery::RecoveryChoice::Passphrase(p, kdf) => {
            tracing::info!("prepare: with a recovery passphrase keyslot (argon2id)");
            (Some(p.clone()), *kdf == crypt::PassphraseKdf::CheapForTests)
        }
        crate::recovery::RecoveryChoice::None => (None, false),
    };
    let recovery_passphrase = passphrase.is_some();
    let info = crypt
        .format(
            &luks_device,
            &FormatOptions {
                key_file: key_file.clone(),
                passphrase,
                label: Some(label.clone()),
                uuid: None,
                fast_pbkdf_for_tests: cheap,
            },
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(&key_file);
            PrepareError::with(format!("formatting {} as LUKS", luks_device.display()), e)
        })?;
    tracing::info!("prepare: LUKS UUID {}", info.uuid);

    tracing::info!("prepare: LUKS header backup {}", header_backup.display());
    crypt
        .backup_header(&luks_device, &header_backup)
        .map_err(|e| PrepareError::with("saving the LUKS header backup", e))?;
    let _ = std::fs::set_permissions(&header_backup, std::fs::Permissions::from_mode(0o400));

    let mapping = format!("extbackup-prepare-{name}");
    let mapped = crypt
        .unlock(&luks_device, &key_file, &mapping)
        .map_err(|e| PrepareError::with(format!("unlocking the new volume as {mapping}"), e))?;
    let mkfs = run(opts.fs.mkfs(&ext4_label).arg(&mapped), None);
    let closed = crypt.lock(&mapping, crypt::LockMode::Normal);
    mkfs?;
    closed.map_err(|e| PrepareError::with(format!("closing {mapping}"), e))?;

    let uuid = Uuid::try_from(info.uuid.clone()).map_err(PrepareError::new)?;
    let drive = DriveConfig {
        name: name.clone(),
        uuid,
        key_file: key_file.clone(),
        mount_point,
        history: None,
    };
    append_drive(&opts.config_path, &text, &drive)?;
    Ok(Prepared {
        luks_device,
        uuid: info.uuid,
        key_file,
        header_backup,
        label,
        recovery_passphrase,
    })
}

/// Appends `drive` to the configuration `text` read from `path` and writes it back
/// (a new file gets a header explaining the keys still needed).
fn append_drive(path: &Path, text: &str, drive: &DriveConfig) -> Result<(), PrepareError> {
    // Formatting takes a while: another `prepare` may have added its drive since `text` was
    // read. Append to what the file holds now, so that its drive is not lost.
    let now = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(PrepareError::with(format!("reading {}", path.display()), e)),
    };
    if now != text {
        tracing::info!(
            "{} changed while preparing: adding the drive to its current text",
            path.display()
        );
        if let Ok(cfg) = Config::parse(&now) {
            if cfg.drive_by_name(drive.name.as_str()).is_some() {
                return Err(PrepareError::new(format!(
                    "{} got a drive named {} while preparing; add this one by hand under \
                     another name:{}",
                    path.display(),
                    drive.name,
                    config::drive_table(drive)
                )));
            }
        }
    }
    let text = now.as_str();
    let mut new = text.to_string();
    if new.is_empty() {
        new.push_str(
            "# extbackup configuration (see docs/configuration.md).\n\
             # Set the source before the first run:\n\
             # source = \"/srv/backup\"\n",
        );
    } else if !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&config::drive_table(drive));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| PrepareError::with(format!("creating {}", dir.display()), e))?;
    }
    // The configuration keeps its mode.
    oskit::write_atomic(path, new.as_bytes(), None).map_err(|e| {
        PrepareError::with(
            format!(
                "adding drive {} to {}; add this by hand:{}",
                drive.name,
                path.display(),
                config::drive_table(drive)
            ),
            e,
        )
    })
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
    fn a_drive_added_by_another_prepare_meanwhile_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "source = \"/srv\"\n").unwrap();
        let drive = |n: &str, u: &str| DriveConfig {
            name: DriveName::try_from(n.to_string()).unwrap(),
            uuid: Uuid::try_from(u.to_string()).unwrap(),
            key_file: format!("/k/{n}.key").into(),
            mount_point: None,
            history: None,
        };
        let a = drive("a", "11111111-2222-4333-8444-555555555555");
        let b = drive("b", "21111111-2222-4333-8444-555555555555");
        let text_a = config_text(&p, &a.name).unwrap();
        // A second `prepare` for drive b, started at the same time, finishes first.
        let text_b = config_text(&p, &b.name).unwrap();
        append_drive(&p, &text_b, &b).unwrap();
        append_drive(&p, &text_a, &a).unwrap();
        let names: Vec<String> = Config::parse(&std::fs::read_to_string(&p).unwrap())
            .unwrap()
            .drives
            .iter()
            .map(|d| d.name.to_string())
            .collect();
        assert_eq!(names, ["b", "a"]);
        // The same name added meanwhile is refused, not duplicated.
        let e = append_drive(&p, &text_a, &a).unwrap_err().to_string();
        assert!(e.contains("got a drive named a"), "{e}");
    }

    #[test]
    fn a_mount_point_that_breaks_the_configuration_is_refused_before_erasing() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.toml");
        let cfg = "source = \"/srv/backup\"\n";
        std::fs::write(&config_path, cfg).unwrap();
        // Not even a block device: the refusal must come before the device is looked at.
        let device = dir.path().join("disk.img");
        std::fs::write(&device, b"precious").unwrap();
        let crypt = crypt::fake::FakeCrypt::new();
        let e = prepare(
            &crypt,
            &PrepareOptions {
                device: device.clone(),
                name: "a".into(),
                partition: false,
                keys_dir: dir.path().join("keys"),
                config_path: config_path.clone(),
                mount_point: Some("/srv/backup/a".into()),
                recovery: crate::recovery::RecoveryChoice::None,
                fs: Filesystem::Ext4,
            },
        )
        .unwrap_err();
        let chain = e.chain().join(": ");
        assert!(chain.contains("nothing was erased"), "{chain}");
        assert!(chain.contains("overlaps the source"), "{chain}");
        assert!(crypt.calls().is_empty(), "{:?}", crypt.calls());
        assert_eq!(std::fs::read(&device).unwrap(), b"precious");
        assert!(!dir.path().join("keys").exists());
        assert_eq!(std::fs::read_to_string(&config_path).unwrap(), cfg);
    }

    #[test]
    fn a_regular_file_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = check_device(f.path()).unwrap_err().to_string();
        assert!(e.contains("not a block device"), "{e}");
    }

    #[test]
    fn key_files_are_random_0400_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.key");
        let b = dir.path().join("b.key");
        new_key_file(&a).unwrap();
        new_key_file(&b).unwrap();
        let (ka, kb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(ka.len(), KEY_SIZE);
        assert_ne!(ka, kb);
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        assert!(new_key_file(&a).is_err());
        assert_eq!(std::fs::read(&a).unwrap(), ka);
    }

    #[test]
    fn drive_is_appended_keeping_comments_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "# keep me\nsource = \"/srv\"\n").unwrap();
        let name = DriveName::try_from("a".to_string()).unwrap();
        let text = config_text(&p, &name).unwrap();
        let d = DriveConfig {
            name: name.clone(),
            uuid: Uuid::try_from("11111111-2222-4333-8444-555555555555".to_string()).unwrap(),
            key_file: "/k/a.key".into(),
            mount_point: None,
            history: None,
        };
        append_drive(&p, &text, &d).unwrap();
        let new = std::fs::read_to_string(&p).unwrap();
        assert!(new.starts_with("# keep me\n"));
        assert_eq!(Config::parse(&new).unwrap().drives, vec![d]);
        let e = config_text(&p, &name).unwrap_err().to_string();
        assert!(e.contains("already has a drive named a"), "{e}");
    }
}
