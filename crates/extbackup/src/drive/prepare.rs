//! `extbackup prepare DEVICE --name NAME`: the seed's "preparing a new backup disk" in one
//! command. Optional GPT partition (sfdisk), LUKS2 with a new random 4096-byte key file
//! (0400), the LUKS header backup beside it, ext4 with a label on the unlocked volume, and
//! the drive appended to the configuration file (the user's comments kept).
//!
//! A [`plan`] (names, paths, a configuration that stays valid) touches no device; its
//! [`execute`] does the work through the `Crypt` and `Mounter` traits. The confirmation is
//! the caller's job (the command line asks, naming the device, after
//! `Mounter::check_unused` refused a device that is mounted, has mounted partitions or is
//! held open by something else).

use crypt::{Crypt, FormatOptions};
use mounter::Mounter;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    pub recovery: crate::drive::recovery::RecoveryChoice,
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
    /// Its name for `Mounter::mkfs`.
    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Btrfs => "btrfs",
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
    let text = match crate::config::read_file(path) {
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

/// What `prepare` will do, worked out before anything is touched: the names and paths,
/// and a configuration that stays valid with the new drive in it.
#[derive(Debug)]
pub struct Plan {
    name: DriveName,
    /// The configuration file's text when the plan was made.
    text: String,
    keys_dir: PathBuf,
    key_file: PathBuf,
    header_backup: PathBuf,
    mount_point: Option<PathBuf>,
}

/// Prepares the drive: [`plan`], then [`execute`]. Destroys what is on `opts.device`: the
/// caller has confirmed.
pub fn prepare(
    crypt: &dyn Crypt,
    disks: &dyn Mounter,
    opts: &PrepareOptions,
) -> Result<Prepared, PrepareError> {
    let plan = plan(opts)?;
    execute(&plan, crypt, disks, opts)
}

/// Works out the names and paths and checks that the configuration stays valid with the
/// new drive; touches no device.
pub fn plan(opts: &PrepareOptions) -> Result<Plan, PrepareError> {
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
    Ok(Plan {
        name,
        text,
        keys_dir,
        key_file,
        header_backup,
        mount_point,
    })
}

/// Carries `plan` out on `opts.device`: partition (with `--partition`), key file, LUKS2,
/// header backup, filesystem, and the drive's table in the configuration.
pub fn execute(
    plan: &Plan,
    crypt: &dyn Crypt,
    disks: &dyn Mounter,
    opts: &PrepareOptions,
) -> Result<Prepared, PrepareError> {
    let Plan {
        name,
        text,
        keys_dir,
        key_file,
        header_backup,
        mount_point,
    } = plan;
    disks
        .check_unused(&opts.device)
        .map_err(|e| PrepareError::with(format!("{} is in use", opts.device.display()), e))?;

    make_keys_dir(keys_dir, key_file, header_backup)?;

    let luks_device = if opts.partition {
        tracing::info!(
            "prepare: GPT with one partition on {}",
            opts.device.display()
        );
        disks
            .partition(&opts.device)
            .map_err(|e| PrepareError::with("partitioning", e))?
    } else {
        opts.device.clone()
    };

    tracing::info!("prepare: new key file {}", key_file.display());
    new_key_file(key_file)?;
    let label = format!("extbackup-{name}");
    // ext4 labels hold 16 bytes; the LUKS2 label (48) carries the full form.
    let ext4_label: String = name.as_str().chars().take(16).collect();
    let info = format_luks(crypt, &luks_device, plan, &label, &opts.recovery)?;
    let recovery_passphrase = matches!(
        opts.recovery,
        crate::drive::recovery::RecoveryChoice::Passphrase(..)
    );

    make_filesystem(
        crypt,
        disks,
        &luks_device,
        key_file,
        name,
        opts.fs,
        &ext4_label,
    )?;

    let uuid = Uuid::try_from(info.uuid.clone()).map_err(PrepareError::new)?;
    let drive = DriveConfig {
        name: name.clone(),
        uuid,
        key_file: key_file.clone(),
        mount_point: mount_point.clone(),
        history: None,
    };
    append_drive(&opts.config_path, text, &drive)?;
    Ok(Prepared {
        luks_device,
        uuid: info.uuid,
        key_file: key_file.clone(),
        header_backup: header_backup.clone(),
        label,
        recovery_passphrase,
    })
}

/// LUKS2 on `luks_device` with the plan's key file (and the recovery passphrase), then
/// its header backup (mode 0400); the key file goes when formatting fails.
fn format_luks(
    crypt: &dyn Crypt,
    luks_device: &Path,
    plan: &Plan,
    label: &str,
    recovery: &crate::drive::recovery::RecoveryChoice,
) -> Result<crypt::LuksInfo, PrepareError> {
    let (key_file, header_backup) = (&plan.key_file, &plan.header_backup);
    tracing::info!("prepare: LUKS2 on {}", luks_device.display());
    let (passphrase, cheap) = recovery_slot(recovery);
    let info = crypt
        .format(
            luks_device,
            &FormatOptions {
                key_file: key_file.clone(),
                passphrase,
                label: Some(label.to_string()),
                uuid: None,
                fast_pbkdf_for_tests: cheap,
            },
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(key_file);
            PrepareError::with(format!("formatting {} as LUKS", luks_device.display()), e)
        })?;
    tracing::info!("prepare: LUKS UUID {}", info.uuid);
    tracing::info!("prepare: LUKS header backup {}", header_backup.display());
    crypt
        .backup_header(luks_device, header_backup)
        .map_err(|e| PrepareError::with("saving the LUKS header backup", e))?;
    let _ = std::fs::set_permissions(header_backup, std::fs::Permissions::from_mode(0o400));
    Ok(info)
}

/// The recovery passphrase to put in a keyslot, and whether its KDF may be cheap (tests).
fn recovery_slot(choice: &crate::drive::recovery::RecoveryChoice) -> (Option<crypt::Secret>, bool) {
    match choice {
        crate::drive::recovery::RecoveryChoice::Passphrase(p, kdf) => {
            tracing::info!("prepare: with a recovery passphrase keyslot (argon2id)");
            (Some(p.clone()), *kdf == crypt::PassphraseKdf::CheapForTests)
        }
        crate::drive::recovery::RecoveryChoice::None => (None, false),
    }
}

/// The keys folder (0700), refusing to replace a key file or header backup of an earlier
/// drive of the same name.
fn make_keys_dir(
    keys_dir: &Path,
    key_file: &Path,
    header_backup: &Path,
) -> Result<(), PrepareError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(keys_dir)
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
    Ok(())
}

/// Opens the new volume, makes its filesystem, closes it again.
fn make_filesystem(
    crypt: &dyn Crypt,
    disks: &dyn Mounter,
    luks_device: &Path,
    key_file: &Path,
    name: &DriveName,
    fs: Filesystem,
    label: &str,
) -> Result<(), PrepareError> {
    let mapping = format!("extbackup-prepare-{name}");
    let mapped = crypt
        .unlock(luks_device, key_file, &mapping)
        .map_err(|e| PrepareError::with(format!("unlocking the new volume as {mapping}"), e))?;
    let mkfs = disks
        .mkfs(&mapped, fs.name(), label)
        .map_err(|e| PrepareError::with(format!("making a filesystem on {mapping}"), e));
    let closed = crypt.lock(&mapping, crypt::LockMode::Normal);
    mkfs?;
    closed.map_err(|e| PrepareError::with(format!("closing {mapping}"), e))?;
    Ok(())
}

/// Appends `drive` to the configuration `text` read from `path` and writes it back
/// (a new file gets a header explaining the keys still needed).
fn append_drive(path: &Path, text: &str, drive: &DriveConfig) -> Result<(), PrepareError> {
    // Formatting takes a while: another `prepare` may have added its drive since `text` was
    // read. Append to what the file holds now, so that its drive is not lost.
    let now = match crate::config::read_file(path) {
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
        let disks = mounter::fake::FakeMounter::new();
        let e = prepare(
            &crypt,
            &disks,
            &PrepareOptions {
                device: device.clone(),
                name: "a".into(),
                partition: false,
                keys_dir: dir.path().join("keys"),
                config_path: config_path.clone(),
                mount_point: Some("/srv/backup/a".into()),
                recovery: crate::drive::recovery::RecoveryChoice::None,
                fs: Filesystem::Ext4,
            },
        )
        .unwrap_err();
        let chain = e.chain().join(": ");
        assert!(chain.contains("nothing was erased"), "{chain}");
        assert!(chain.contains("overlaps the source"), "{chain}");
        assert!(crypt.calls().is_empty(), "{:?}", crypt.calls());
        assert!(disks.calls().is_empty(), "{:?}", disks.calls());
        assert_eq!(std::fs::read(&device).unwrap(), b"precious");
        assert!(!dir.path().join("keys").exists());
        assert_eq!(std::fs::read_to_string(&config_path).unwrap(), cfg);
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
