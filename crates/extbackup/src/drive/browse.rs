//! `extbackup mount` / `unmount`: a drive opened **read-only** for browsing and restoring,
//! with the key file or the recovery passphrase; and [`DriveView`], the read-only access
//! `restore` and `verify` use (the browse mount when there is one, else a temporary one).
//!
//! A browse mount uses its own mapping, `extbackup-ro-NAME` ([`browse_mapping`]); a plug-in
//! run of a drive mapped that way does not start ([`refuse_run_while_browsing`]).

use crypt::{Crypt, Key, LockMode, MappingStatus, Secret};
use mounter::{MountOptions, Mounter};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, DriveConfig, DriveName};
use crate::Failure;

/// The mapping name of a drive opened for browsing.
pub fn browse_mapping(drive: &str) -> String {
    format!("extbackup-ro-{drive}")
}

/// Where `extbackup mount` mounts a drive unless `--at` says otherwise.
pub fn default_mount_point(cfg: &Config, drive: &str) -> PathBuf {
    cfg.mount_root
        .join(crate::drive::layout::browse_name(drive))
}

/// The message when a plug-in run finds its drive opened for browsing; `None` when not.
pub fn refuse_run_while_browsing(crypt: &dyn Crypt, drive: &str) -> Option<String> {
    let m = browse_mapping(drive);
    match crypt.status(&m) {
        Ok(MappingStatus::Active { path, .. }) => {
            let at = mounts_of(&path)
                .first()
                .map(|p| format!(" at {}", p.display()))
                .unwrap_or_default();
            Some(format!(
                "drive {drive} is opened read-only for browsing ({m}{at}, by `extbackup mount`): \
                 not backing up now; `extbackup unmount {drive}` and plug it in again"
            ))
        }
        _ => None,
    }
}

/// The refusal for a plug-in run of `target` (as `extbackup run` gets it) whose drive is
/// opened for browsing; `None` when it is not (or is not a configured drive).
pub fn refuse_run(
    cfg: &Config,
    crypt: &dyn Crypt,
    target: &crate::drive::identify::Target,
) -> Option<String> {
    let drive = match target {
        crate::drive::identify::Target::Uuid(u) => cfg.drive_by_uuid(u)?,
        crate::drive::identify::Target::Device(d) => {
            cfg.drive_by_uuid(&crypt.inspect(d).ok()?.uuid)?
        }
    };
    refuse_run_while_browsing(crypt, drive.name.as_str())
}

/// A drive as the recovery commands name it.
#[derive(Clone, Debug)]
pub struct Drive {
    /// Its name (the configured one, or one taken from the LUKS label or UUID).
    pub name: String,
    /// Its LUKS device.
    pub device: PathBuf,
    /// Its configuration, when the configuration knows it.
    pub config: Option<DriveConfig>,
}

/// Finds the drive `name` (configured) or on `device` (any LUKS drive; the name comes from
/// the configuration, else from its label `extbackup-NAME`, else from its UUID).
pub fn resolve(
    cfg: &Config,
    crypt: &dyn Crypt,
    name: Option<&str>,
    device: Option<&Path>,
) -> Result<Drive, Failure> {
    let configured = name.map(|n| cfg.drive_by_name(n).cloned());
    let given = device.is_some();
    let device = match (device, &configured) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(Some(d))) => Path::new("/dev/disk/by-uuid").join(d.uuid.as_str()),
        (None, Some(None)) => {
            // Not configured (the NAS is gone?): a browse mount by that name may exist.
            return Err(Failure::new(format!(
                "no drive named {} in the configuration: name its device with --device \
                 (e.g. --device /dev/sdb, or /dev/sdb1 for a drive \
                 prepared with --partition)",
                name.unwrap_or_default()
            )));
        }
        (None, None) => return Err(Failure::new("name a drive or give --device DEV")),
    };
    if let (false, Some(Some(d))) = (given, &configured) {
        if !device.exists() {
            return Err(Failure::new(format!(
                "drive {} is not plugged in ({} does not exist): plug it in, or name its \
                 device with --device",
                d.name,
                device.display()
            )));
        }
    }
    let info = crypt.inspect(&device).map_err(|e| {
        Failure::with(
            format!("reading the LUKS header of {}", device.display()),
            e,
        )
    })?;
    let by_uuid = cfg.drive_by_uuid(&info.uuid).cloned();
    if let Some(Some(d)) = &configured {
        if d.uuid.as_str() != info.uuid.to_ascii_lowercase() {
            return Err(Failure::new(format!(
                "{} has LUKS UUID {}, not drive {}'s {}: wrong device?",
                device.display(),
                info.uuid,
                d.name,
                d.uuid
            )));
        }
    }
    let config = configured.flatten().or(by_uuid);
    let name = match (&config, name) {
        (Some(d), _) => d.name.to_string(),
        (None, Some(n)) => n.to_string(),
        (None, None) => info
            .label
            .as_deref()
            .and_then(|l| l.strip_prefix("extbackup-"))
            .and_then(|n| DriveName::try_from(n.to_string()).ok())
            .map(|n| n.to_string())
            .unwrap_or_else(|| info.uuid.chars().take(8).collect()),
    };
    DriveName::try_from(name.clone()).map_err(Failure::new)?;
    Ok(Drive {
        name,
        device,
        config,
    })
}

/// How to open a drive.
#[derive(Clone, Debug)]
pub enum Opener {
    /// With its configured key file.
    KeyFile,
    /// With this key file (a drive the configuration does not know: a bare machine).
    KeyFileAt(PathBuf),
    /// With the recovery passphrase; `tries` attempts, each asking `ask` for it.
    Passphrase {
        /// How many attempts (3 on a terminal, 1 otherwise).
        tries: u32,
    },
}

/// Opens `drive` read-only as mapping `mapping`; asks for the passphrase with `ask`.
pub fn unlock(
    crypt: &dyn Crypt,
    drive: &Drive,
    mapping: &str,
    opener: &Opener,
    ask: &mut dyn FnMut() -> Result<Secret, Failure>,
) -> Result<PathBuf, Failure> {
    match opener {
        Opener::KeyFileAt(key) => crypt
            .unlock_read_only(&drive.device, Key::File(key), mapping)
            .map_err(|e| {
                Failure::with(
                    format!(
                        "opening {} read-only with the key file {}",
                        drive.device.display(),
                        key.display()
                    ),
                    e,
                )
            }),
        Opener::KeyFile => {
            let d = drive.config.as_ref().ok_or_else(|| {
                Failure::new(format!(
                    "drive {} is not in the configuration, so its key file is unknown: use \
                     --passphrase (the recovery passphrase), or --key-file FILE where the \
                     command has it",
                    drive.name
                ))
            })?;
            crypt
                .unlock_read_only(&drive.device, Key::File(&d.key_file), mapping)
                .map_err(|e| {
                    Failure::with(
                        format!(
                            "opening {} read-only with the key file {}",
                            drive.device.display(),
                            d.key_file.display()
                        ),
                        e,
                    )
                })
        }
        Opener::Passphrase { tries } => {
            let mut last = None;
            for i in 0..(*tries).max(1) {
                let pass = ask()?;
                match crypt.unlock_read_only(&drive.device, Key::Passphrase(&pass), mapping) {
                    Ok(p) => return Ok(p),
                    Err(e) if e.kind() == crypt::ErrorKind::WrongKey => {
                        if i + 1 < *tries {
                            eprintln!("wrong passphrase, try again");
                        }
                        last = Some(e);
                    }
                    Err(e) => {
                        return Err(Failure::with(
                            format!("opening {} read-only", drive.device.display()),
                            e,
                        ))
                    }
                }
            }
            Err(Failure::with(
                format!(
                    "opening {} read-only: wrong passphrase; nothing was opened",
                    drive.device.display()
                ),
                last.expect("at least one try"),
            ))
        }
    }
}

/// Read-only mount options; with `noload`, ext4's journal is not replayed.
fn ro_options(noload: bool) -> MountOptions {
    let mut options: Vec<String> = ["ro", "nodev", "nosuid", "noexec", "noatime"]
        .map(String::from)
        .to_vec();
    if noload {
        options.push("noload".into());
    }
    MountOptions {
        fstype: None,
        options,
    }
}

/// What the note of a mount without the journal replayed says (printed by `mount`, logged
/// by the others).
pub const NOLOAD_NOTE: &str = "the drive's ext4 journal needs replaying (it was unplugged or \
    lost power while mounted?), which a read-only device cannot do, so it is mounted with \
    `noload`: nothing was written to it, and the journal's last changes are not applied \
    (files the interrupted run was writing may be missing or half-written: take them from an \
    older generation)";

/// Whether a mount failed with EROFS: ext4 refuses a read-only device whose journal needs
/// replaying ("write access unavailable, cannot proceed (try mounting with noload)").
fn is_read_only_refusal(e: &mounter::MountError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
        == Some(libc::EROFS)
}

/// A drive opened read-only and mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mounted {
    /// The read-only mapping.
    pub mapped: PathBuf,
    /// Mounted with `noload`: the journal needed replaying and was not (see [`NOLOAD_NOTE`]).
    pub journal_not_replayed: bool,
}

/// Opens `drive` read-only and mounts it at `at` (the browse mount). A filesystem whose
/// journal needs replaying (EROFS on the read-only device) is mounted with `noload`,
/// which writes nothing, and said so. Undoes the unlock when the mount fails.
pub fn mount(
    crypt: &dyn Crypt,
    mounter: &dyn Mounter,
    drive: &Drive,
    at: &Path,
    opener: &Opener,
    ask: &mut dyn FnMut() -> Result<Secret, Failure>,
) -> Result<Mounted, Failure> {
    let mapping = browse_mapping(&drive.name);
    if let Ok(MappingStatus::Active { .. }) = crypt.status(&mapping) {
        return Err(Failure::new(format!(
            "drive {} is already open for browsing ({mapping}); `extbackup unmount {}` first",
            drive.name, drive.name
        )));
    }
    if let Ok(MappingStatus::Active { .. }) =
        crypt.status(&crate::drive::layout::mapping_name(&drive.name))
    {
        return Err(Failure::new(format!(
            "drive {} is open for a backup run right now: wait until it is done",
            drive.name
        )));
    }
    let mapped = unlock(crypt, drive, &mapping, opener, ask)?;
    let what = || {
        format!(
            "mounting {} read-only at {}",
            mapped.display(),
            at.display()
        )
    };
    let journal_not_replayed = match mounter.mount(&mapped, at, &ro_options(false)) {
        Ok(_) => false,
        Err(e) if is_read_only_refusal(&e) => {
            tracing::debug!("{}: {}", what(), backend_error::chain(&e));
            if let Err(e2) = mounter.mount(&mapped, at, &ro_options(true)) {
                let _ = crypt.lock(&mapping, LockMode::Normal);
                return Err(Failure::with(
                    format!(
                        "{}: the filesystem refused a read-only device (a journal that needs \
                         replaying?), and `-o ro,noload` failed too; see dmesg, and \
                         docs/restore.md (fsck.ext4 on a read-write mapping)",
                        what()
                    ),
                    e2,
                ));
            }
            true
        }
        Err(e) => {
            let _ = crypt.lock(&mapping, LockMode::Normal);
            return Err(Failure::with(what(), e));
        }
    };
    Ok(Mounted {
        mapped,
        journal_not_replayed,
    })
}

/// The mount points of the block device `dev`.
pub fn mounts_of(dev: &Path) -> Vec<PathBuf> {
    let Ok(md) = std::fs::metadata(dev) else {
        return vec![];
    };
    let rdev = md.rdev();
    let (maj, min) = (libc::major(rdev) as u64, libc::minor(rdev) as u64);
    let canon = std::fs::canonicalize(dev).ok();
    mounter::mountinfo::read()
        .unwrap_or_default()
        .into_iter()
        // btrfs shows an anonymous device number (0:N): its source names the device.
        .filter(|m| {
            (m.major == maj && m.minor == min)
                || (canon.is_some() && std::fs::canonicalize(&m.source).ok() == canon)
        })
        .map(|m| m.target)
        .collect()
}

/// Unmounts and closes the browse mount of `drive`; `Ok(false)` when it was not open.
pub fn unmount(crypt: &dyn Crypt, mounter: &dyn Mounter, drive: &str) -> Result<bool, Failure> {
    let mapping = browse_mapping(drive);
    let path = match crypt.status(&mapping) {
        Ok(MappingStatus::Active { path, .. }) => path,
        Ok(MappingStatus::Inactive) => return Ok(false),
        Err(e) => return Err(Failure::with(format!("reading the state of {mapping}"), e)),
    };
    for mp in mounts_of(&path) {
        mounter
            .unmount(&mp)
            .map_err(|e| Failure::with(format!("unmounting {}", mp.display()), e))?;
        tracing::info!("unmounted {}", mp.display());
        // Only the folders made for it (the default and the temporary ones), if empty.
        let ours = mp.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with("browse-") || n.starts_with("extbackup-")
        });
        if ours {
            let _ = std::fs::remove_dir(&mp);
        }
    }
    // Just unmounted, the volume can be held a moment longer: udev probing it, or a mount
    // namespace another program made while it was mounted, until that lets go of its copy.
    // Wait that out (two seconds), not longer.
    let mut tries = 0;
    loop {
        match crypt.lock(&mapping, LockMode::Normal) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == crypt::ErrorKind::Busy && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(Failure::with(format!("closing {mapping}"), e)),
        }
    }
}

/// Read access to a drive's files for `restore` and `verify`: the browse mount when the
/// drive is open for browsing, else a temporary read-only mount closed on drop.
pub struct DriveView<'a> {
    mount_point: PathBuf,
    owned: Option<(&'a dyn Crypt, &'a dyn Mounter, String)>,
}

impl<'a> DriveView<'a> {
    /// Opens `drive` for reading (see the type's docs). `drive_name` alone is enough when
    /// the drive is open for browsing (no configuration, no device needed).
    pub fn open(
        crypt: &'a dyn Crypt,
        mounter: &'a dyn Mounter,
        drive: &dyn Fn() -> Result<Drive, Failure>,
        drive_name: &str,
        opener: &Opener,
        ask: &mut dyn FnMut() -> Result<Secret, Failure>,
    ) -> Result<Self, Failure> {
        if let Ok(MappingStatus::Active { path, .. }) = crypt.status(&browse_mapping(drive_name)) {
            let mp = mounts_of(&path).into_iter().next().ok_or_else(|| {
                Failure::new(format!(
                    "drive {drive_name} is open for browsing but not mounted: \
                     `extbackup unmount {drive_name}` and try again"
                ))
            })?;
            tracing::info!("using the browse mount of {drive_name} at {}", mp.display());
            return Ok(Self {
                mount_point: mp,
                owned: None,
            });
        }
        let drive = drive()?;
        let mp =
            std::env::temp_dir().join(format!("extbackup-{}-{}", drive.name, std::process::id()));
        if mount(crypt, mounter, &drive, &mp, opener, ask)?.journal_not_replayed {
            tracing::warn!("drive {}: {NOLOAD_NOTE}", drive.name);
        }
        Ok(Self {
            mount_point: mp,
            owned: Some((crypt, mounter, drive.name)),
        })
    }

    /// Where the drive's filesystem is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The copy of the source on the drive: the newest generation, else the plain mirror.
    pub fn data(&self) -> PathBuf {
        crate::drive::history::copy_root(&self.mount_point, None)
            .unwrap_or_else(|_| self.mount_point.join(crate::drive::layout::DATA_DIR))
    }

    /// The generation made at or before `at` (a date or time, UTC), or with `None` the
    /// newest (else the plain mirror).
    pub fn data_at(&self, at: Option<&str>) -> Result<PathBuf, crate::Failure> {
        crate::drive::history::copy_root(&self.mount_point, at)
    }
}

impl Drop for DriveView<'_> {
    fn drop(&mut self) {
        if let Some((crypt, mounter, name)) = self.owned.take() {
            if let Err(e) = unmount(crypt, mounter, &name) {
                tracing::error!("closing drive {name}: {}", e.chain().join(": "));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypt::fake::FakeCrypt;

    const UUID_A: &str = "11111111-2222-4333-8444-555555555555";

    fn cfg() -> Config {
        Config::parse(&format!(
            "source = \"/srv\"\n[[drive]]\nname = \"a\"\nuuid = \"{UUID_A}\"\nkey_file = \"/k/a\"\n"
        ))
        .unwrap()
    }

    /// Key files a, b, c with different contents (the fake compares contents).
    fn keys() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            std::fs::write(dir.path().join(n), [i as u8 + 1; 64]).unwrap();
        }
        dir
    }

    #[test]
    fn drives_resolve_by_name_or_device_and_unconfigured_ones_take_their_label() {
        let keys = keys();
        let c = FakeCrypt::new();
        c.add_volume("/dev/fake-a", UUID_A, keys.path().join("a"));
        let d = resolve(&cfg(), &c, Some("a"), Some(Path::new("/dev/fake-a"))).unwrap();
        assert_eq!(d.name, "a");
        assert!(d.config.is_some());
        // By device alone: the configuration knows its UUID.
        let d = resolve(&cfg(), &c, None, Some(Path::new("/dev/fake-a"))).unwrap();
        assert_eq!(d.name, "a");
        // By name, not plugged in: said so.
        let e = resolve(&cfg(), &c, Some("a"), None)
            .unwrap_err()
            .chain()
            .join(": ");
        assert!(e.contains("not plugged in"), "{e}");
        // A configured name on another drive's device: refused.
        c.add_volume(
            "/dev/fake-b",
            "21111111-2222-4333-8444-555555555555",
            keys.path().join("b"),
        );
        let e = resolve(&cfg(), &c, Some("a"), Some(Path::new("/dev/fake-b")))
            .unwrap_err()
            .chain()
            .join(": ");
        assert!(e.contains("wrong device"), "{e}");
        // Without a configuration entry: the name comes from the label extbackup-NAME.
        c.format(
            Path::new("/dev/fake-c"),
            &crypt::FormatOptions {
                key_file: keys.path().join("c"),
                passphrase: None,
                label: Some("extbackup-offsite-c".into()),
                uuid: Some("31111111-2222-4333-8444-555555555555".into()),
                fast_pbkdf_for_tests: true,
            },
        )
        .unwrap();
        let d = resolve(&cfg(), &c, None, Some(Path::new("/dev/fake-c"))).unwrap();
        assert_eq!((d.name.as_str(), d.config.is_none()), ("offsite-c", true));
    }

    #[test]
    fn a_run_is_refused_only_while_the_drive_is_open_for_browsing() {
        let keys = keys();
        let c = FakeCrypt::new();
        c.add_volume("/dev/fake-a", UUID_A, keys.path().join("a"));
        let t = crate::drive::identify::Target::Uuid(UUID_A.into());
        assert_eq!(refuse_run(&cfg(), &c, &t), None);
        c.unlock_read_only(
            Path::new("/dev/fake-a"),
            Key::File(&keys.path().join("a")),
            &browse_mapping("a"),
        )
        .unwrap();
        let why = refuse_run(&cfg(), &c, &t).expect("refused");
        assert!(why.contains("extbackup unmount a"), "{why}");
        let dev = crate::drive::identify::Target::Device("/dev/fake-a".into());
        assert!(refuse_run(&cfg(), &c, &dev).is_some());
        // The run's own mapping is not a browse mount.
        c.lock(&browse_mapping("a"), LockMode::Normal).unwrap();
        c.unlock(
            Path::new("/dev/fake-a"),
            &keys.path().join("a"),
            "extbackup-a",
        )
        .unwrap();
        assert_eq!(refuse_run(&cfg(), &c, &t), None);
    }
}
