//! `LibcryptsetupCrypt`: real LUKS2 through libcryptsetup (libcryptsetup-rs, `mutex` feature).

use crate::util::{
    check_exists, check_label, check_mapping_name, check_passphrase, key_bytes, read_key_file,
    wrong_passphrase,
};
use crate::*;
use libcryptsetup_rs::consts::flags::{CryptActivate, CryptDeactivate, CryptPbkdf, CryptVolumeKey};
use libcryptsetup_rs::consts::vals::{
    CryptKdf, CryptStatusInfo, EncryptionFormat, KeyslotInfo, LuksType,
};
use libcryptsetup_rs::{
    CryptDevice, CryptInit, CryptPbkdfType, CryptSettingsHandle, Either, LibcryptErr,
};
use rand::RngCore;
use std::io::Read;
use zeroize::Zeroizing;

/// LUKS2 keyslots are numbered 0..32.
const LUKS2_KEYSLOTS: u32 = 32;
/// 512-bit volume key (aes-xts with two 256-bit keys).
const VOLUME_KEY_BYTES: usize = 64;

/// Real LUKS2 volumes through libcryptsetup.
///
/// Key files are read by this backend into memory that is wiped afterwards, and passed
/// to libcryptsetup as the passphrase bytes (exactly what `cryptsetup --key-file` does),
/// so volumes stay compatible with `cryptsetup open --key-file`. Key-file keyslots use
/// PBKDF2 with the minimum iteration count: a key file is high-entropy, a slow KDF buys it
/// nothing. A passphrase keyslot uses argon2id with libcryptsetup's benchmarked defaults.
///
/// Activation needs device-mapper with dm-crypt; on a kernel without it, `unlock` fails
/// with [`ErrorKind::Unsupported`] while everything else (format, inspect, verify, keys,
/// header backup) still works on an image file or loop device.
#[derive(Clone, Debug)]
pub struct LibcryptsetupCrypt {
    _private: (),
}

impl Default for LibcryptsetupCrypt {
    fn default() -> Self {
        route_logs_once();
        Self { _private: () }
    }
}

/// Which operation failed, to map errnos to kinds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Init,
    Load,
    Key,
    Activate,
    Deactivate,
    Other,
}

fn errno_of(e: &LibcryptErr) -> Option<i32> {
    match e {
        LibcryptErr::IOError(io) => io.raw_os_error(),
        _ => None,
    }
}

/// Wraps a libcryptsetup error with a kind chosen from the errno and the operation.
fn lc_error(op: Op, e: LibcryptErr, msg: impl Into<String>) -> CryptError {
    let mut msg = msg.into();
    let kind = match (errno_of(&e), op) {
        (Some(libc::EPERM), Op::Key | Op::Activate) => {
            msg.push_str(": the key file opens no keyslot (wrong key file?)");
            ErrorKind::WrongKey
        }
        (Some(libc::EINVAL), Op::Load) => {
            msg.push_str(": no LUKS header found (not a LUKS device, or a damaged header: restore a header backup)");
            ErrorKind::NotLuks
        }
        (Some(libc::ENOENT | libc::ENXIO | libc::ENODEV), _) => ErrorKind::NotFound,
        (Some(libc::ENOTBLK), Op::Init) => ErrorKind::NotFound,
        (Some(libc::EBUSY), _) => ErrorKind::Busy,
        (Some(libc::EEXIST), Op::Activate) => {
            msg.push_str(": a mapping of that name already exists: lock it first");
            ErrorKind::Busy
        }
        (Some(libc::EACCES), _) => {
            msg.push_str(": permission denied (run as root)");
            ErrorKind::PermissionDenied
        }
        (Some(libc::ENOTSUP), Op::Activate | Op::Deactivate) => ErrorKind::Unsupported,
        _ => ErrorKind::Other,
    };
    CryptError::new(kind, msg).with_source(e)
}

/// Whether the running kernel has device-mapper (needed to activate a mapping).
pub(crate) fn device_mapper_available() -> bool {
    std::fs::read_to_string("/proc/misc")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
        })
        .unwrap_or(false)
        || Path::new("/sys/module/dm_mod").exists()
}

fn no_device_mapper(what: &str) -> CryptError {
    CryptError::new(
        ErrorKind::Unsupported,
        format!(
            "{what}: the kernel lacks device-mapper/dm-crypt (no device-mapper in /proc/misc); \
             load the dm-mod and dm-crypt modules (modprobe dm-crypt), or use the \
             loopback-test backend on a test machine"
        ),
    )
}

/// The key-file keyslot PBKDF: PBKDF2-SHA256 with the minimum iterations, no benchmark.
fn fast_pbkdf() -> CryptPbkdfType {
    CryptPbkdfType {
        type_: CryptKdf::Pbkdf2,
        hash: Some("sha256".into()),
        time_ms: 0,
        iterations: 1000,
        max_memory_kb: 0,
        parallel_threads: 0,
        flags: CryptPbkdf::NO_BENCHMARK,
    }
}

/// The cheapest argon2id (tests only).
fn cheap_argon2id() -> CryptPbkdfType {
    CryptPbkdfType {
        type_: CryptKdf::Argon2Id,
        hash: Some("sha256".into()),
        time_ms: 0,
        iterations: 4,
        max_memory_kb: 32,
        parallel_threads: 1,
        flags: CryptPbkdf::NO_BENCHMARK,
    }
}

/// libcryptsetup's messages go to `tracing` (target `libcryptsetup`) instead of stderr.
/// They never contain key material.
extern "C" fn log_to_tracing(
    level: libc::c_int,
    msg: *const libc::c_char,
    _usrptr: *mut libc::c_void,
) {
    if msg.is_null() {
        return;
    }
    // SAFETY: libcryptsetup passes a NUL-terminated string valid for this call.
    let msg = unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy();
    let msg = msg.trim();
    // libcryptsetup retries a deactivation while udev still holds the device and logs each
    // busy attempt as an error, although the removal then succeeds (a real failure comes
    // back as the call's error): those attempts are details.
    let retried = msg.starts_with("device-mapper: remove ioctl") && msg.contains("busy");
    if level == 1 && !retried {
        tracing::info!(target: "libcryptsetup", "{msg}");
    } else {
        tracing::debug!(target: "libcryptsetup", "{msg}");
    }
}

fn route_logs_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| libcryptsetup_rs::set_log_callback::<()>(Some(log_to_tracing), None));
}

impl LibcryptsetupCrypt {
    /// The libcryptsetup backend. libcryptsetup's own messages are sent to `tracing`
    /// (target `libcryptsetup`, errors at INFO, the rest at DEBUG), not to stderr.
    pub fn new() -> Self {
        Self::default()
    }

    fn open(device: &Path) -> Result<CryptDevice, CryptError> {
        check_exists(device)?;
        CryptInit::init(device).map_err(|e| {
            lc_error(
                Op::Init,
                e,
                format!("opening {} with libcryptsetup", device.display()),
            )
        })
    }

    fn load(device: &Path) -> Result<CryptDevice, CryptError> {
        let mut dev = Self::open(device)?;
        dev.context_handle().load::<()>(None, None).map_err(|e| {
            lc_error(
                Op::Load,
                e,
                format!("reading the LUKS header of {}", device.display()),
            )
        })?;
        Ok(dev)
    }

    fn set_pbkdf(
        dev: &mut CryptDevice,
        p: &CryptPbkdfType,
        device: &Path,
    ) -> Result<(), CryptError> {
        dev.settings_handle().set_pbkdf_type(p).map_err(|e| {
            lc_error(
                Op::Other,
                e,
                format!("setting the keyslot PBKDF for {}", device.display()),
            )
        })
    }
}

/// Reads the LUKS2 label from the binary header (offset 24, 48 bytes, NUL-terminated).
fn read_luks2_label(device: &Path) -> Option<String> {
    let mut hdr = [0u8; 72];
    std::fs::File::open(device)
        .ok()?
        .read_exact(&mut hdr)
        .ok()?;
    if &hdr[..6] != b"LUKS\xba\xbe" {
        return None;
    }
    let raw = &hdr[24..72];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let s = String::from_utf8_lossy(&raw[..end]).into_owned();
    (!s.is_empty()).then_some(s)
}

fn info_of(dev: &mut CryptDevice, device: &Path) -> Result<LuksInfo, CryptError> {
    let ctx = |e, what: &str| lc_error(Op::Other, e, format!("{what} of {}", device.display()));
    let version = match dev.format_handle().get_type() {
        Ok(EncryptionFormat::Luks1) => 1,
        Ok(EncryptionFormat::Luks2) => 2,
        Ok(other) => {
            return Err(CryptError::new(
                ErrorKind::NotLuks,
                format!("{} holds a {other:?} header, not LUKS", device.display()),
            ))
        }
        Err(e) => return Err(ctx(e, "reading the header type")),
    };
    let uuid = dev
        .status_handle()
        .get_uuid()
        .map_err(|e| ctx(e, "reading the UUID"))?
        .hyphenated()
        .to_string();
    let cipher = dev
        .status_handle()
        .get_cipher()
        .map_err(|e| ctx(e, "reading the cipher"))?;
    let mode = dev
        .status_handle()
        .get_cipher_mode()
        .map_err(|e| ctx(e, "reading the cipher mode"))?;
    let max = if version == 1 { 8 } else { LUKS2_KEYSLOTS };
    let mut keyslots = Vec::new();
    for slot in 0..max {
        if matches!(
            dev.keyslot_handle().status(slot),
            Ok(KeyslotInfo::Active | KeyslotInfo::ActiveLast)
        ) {
            keyslots.push(slot);
        }
    }
    let label = if version == 2 {
        read_luks2_label(device)
    } else {
        None
    };
    Ok(LuksInfo {
        version,
        uuid,
        label,
        cipher: format!("{cipher}-{mode}"),
        keyslots,
    })
}

impl Crypt for LibcryptsetupCrypt {
    fn inspect(&self, device: &Path) -> Result<LuksInfo, CryptError> {
        let mut dev = Self::load(device)?;
        info_of(&mut dev, device)
    }

    fn format(&self, device: &Path, opts: &FormatOptions) -> Result<LuksInfo, CryptError> {
        let key = read_key_file(&opts.key_file)?;
        if let Some(l) = &opts.label {
            check_label(l)?;
        }
        let uuid = match &opts.uuid {
            None => None,
            Some(u) => Some(uuid::Uuid::parse_str(u).map_err(|e| {
                CryptError::new(
                    ErrorKind::InvalidArgument,
                    format!("bad UUID {u:?}: use the hyphenated form"),
                )
                .with_source(e)
            })?),
        };
        crate::util::check_not_in_use(device)?;
        let mut dev = Self::open(device)?;
        let mut vk = Zeroizing::new(vec![0u8; VOLUME_KEY_BYTES]);
        rand::rngs::OsRng.fill_bytes(&mut vk);
        dev.context_handle()
            .format::<()>(
                EncryptionFormat::Luks2,
                ("aes", "xts-plain64"),
                uuid,
                Either::Left(&vk[..]),
                None,
            )
            .map_err(|e| {
                lc_error(
                    Op::Other,
                    e,
                    format!("writing a LUKS2 header on {}", device.display()),
                )
            })?;
        if let Some(l) = &opts.label {
            dev.context_handle().set_label(Some(l), None).map_err(|e| {
                lc_error(
                    Op::Other,
                    e,
                    format!("setting the label of {}", device.display()),
                )
            })?;
        }
        Self::set_pbkdf(&mut dev, &fast_pbkdf(), device)?;
        dev.keyslot_handle()
            .add_by_key(
                None,
                Some(Either::Left(&vk[..])),
                &key,
                CryptVolumeKey::empty(),
            )
            .map_err(|e| {
                lc_error(
                    Op::Other,
                    e,
                    format!("adding the key-file keyslot on {}", device.display()),
                )
            })?;
        if let Some(pass) = &opts.passphrase {
            if pass.expose().is_empty() {
                return Err(CryptError::new(
                    ErrorKind::InvalidArgument,
                    "the passphrase is empty: give a real one or none",
                ));
            }
            let pbkdf = if opts.fast_pbkdf_for_tests {
                cheap_argon2id()
            } else {
                CryptSettingsHandle::get_pbkdf_default(&LuksType::Luks2)
                    .map_err(|e| lc_error(Op::Other, e, "reading libcryptsetup's default PBKDF"))?
            };
            Self::set_pbkdf(&mut dev, &pbkdf, device)?;
            dev.keyslot_handle()
                .add_by_key(
                    None,
                    Some(Either::Left(&vk[..])),
                    pass.expose().as_bytes(),
                    CryptVolumeKey::empty(),
                )
                .map_err(|e| {
                    lc_error(
                        Op::Other,
                        e,
                        format!("adding the passphrase keyslot on {}", device.display()),
                    )
                })?;
        }
        drop(dev);
        self.inspect(device)
    }

    fn add_key_file(
        &self,
        device: &Path,
        existing_key: &Path,
        new_key: &Path,
    ) -> Result<u32, CryptError> {
        let old = read_key_file(existing_key)?;
        let new = read_key_file(new_key)?;
        let mut dev = Self::load(device)?;
        Self::set_pbkdf(&mut dev, &fast_pbkdf(), device)?;
        dev.keyslot_handle()
            .add_by_passphrase(None, &old, &new)
            .map_err(|e| {
                lc_error(
                    Op::Key,
                    e,
                    format!(
                        "adding the key file {} to {}",
                        new_key.display(),
                        device.display()
                    ),
                )
            })
    }

    fn verify_key_file(&self, device: &Path, key_file: &Path) -> Result<u32, CryptError> {
        let key = read_key_file(key_file)?;
        let mut dev = Self::load(device)?;
        dev.activate_handle()
            .activate_by_passphrase(None, None, &key, CryptActivate::empty())
            .map_err(|e| {
                lc_error(
                    Op::Key,
                    e,
                    format!(
                        "checking the key file {} against {}",
                        key_file.display(),
                        device.display()
                    ),
                )
            })
    }

    fn unlock(&self, device: &Path, key_file: &Path, name: &str) -> Result<PathBuf, CryptError> {
        check_mapping_name(name)?;
        let key = read_key_file(key_file)?;
        let mut dev = Self::load(device)?;
        let what = format!("unlocking {} as {name}", device.display());
        if !device_mapper_available() {
            return Err(no_device_mapper(&what));
        }
        dev.activate_handle()
            .activate_by_passphrase(Some(name), None, &key, CryptActivate::empty())
            .map_err(|e| {
                if errno_of(&e) == Some(libc::ENOTSUP) || !device_mapper_available() {
                    no_device_mapper(&what).with_source(e)
                } else {
                    lc_error(Op::Activate, e, what.clone())
                }
            })?;
        Ok(Path::new("/dev/mapper").join(name))
    }

    fn lock(&self, name: &str, mode: LockMode) -> Result<LockOutcome, CryptError> {
        check_mapping_name(name)?;
        if matches!(self.status(name)?, MappingStatus::Inactive) {
            return Ok(LockOutcome::NotActive);
        }
        let mut dev = CryptInit::init_by_name_and_header(name, None)
            .map_err(|e| lc_error(Op::Deactivate, e, format!("looking up the mapping {name}")))?;
        let deactivate = |dev: &mut CryptDevice, flags: CryptDeactivate| {
            dev.activate_handle().deactivate(name, flags)
        };
        match deactivate(&mut dev, CryptDeactivate::empty()) {
            Ok(()) => return Ok(LockOutcome::Closed),
            Err(e) if errno_of(&e) == Some(libc::EBUSY) && mode != LockMode::Normal => {}
            Err(e) => {
                let mut err = lc_error(Op::Deactivate, e, format!("closing the mapping {name}"));
                if err.kind() == ErrorKind::Busy {
                    err = CryptError::new(
                        ErrorKind::Busy,
                        format!(
                            "closing the mapping {name}: it is in use (mounted or open); \
                             unmount it first, or lock with deferred or forced removal"
                        ),
                    )
                    .with_source(err);
                }
                return Err(err);
            }
        }
        if mode == LockMode::Force {
            // Replaces the table with an error target, then removes it if nobody holds it.
            match deactivate(&mut dev, CryptDeactivate::FORCE) {
                Ok(()) => return Ok(LockOutcome::Closed),
                Err(e) if errno_of(&e) == Some(libc::EBUSY) => {}
                Err(e) => {
                    return Err(lc_error(
                        Op::Deactivate,
                        e,
                        format!("force-closing the mapping {name}"),
                    ))
                }
            }
        }
        deactivate(&mut dev, CryptDeactivate::DEFERRED).map_err(|e| {
            lc_error(
                Op::Deactivate,
                e,
                format!("marking the mapping {name} for deferred removal"),
            )
        })?;
        Ok(match self.status(name)? {
            MappingStatus::Inactive => LockOutcome::Closed,
            MappingStatus::Active { .. } => LockOutcome::Deferred,
        })
    }

    fn status(&self, name: &str) -> Result<MappingStatus, CryptError> {
        check_mapping_name(name)?;
        if !device_mapper_available() {
            return Ok(MappingStatus::Inactive);
        }
        let st = libcryptsetup_rs::status(None, name).map_err(|e| {
            lc_error(
                Op::Other,
                e,
                format!("reading the status of mapping {name}"),
            )
        })?;
        let busy = match st {
            CryptStatusInfo::Inactive | CryptStatusInfo::Invalid => {
                return Ok(MappingStatus::Inactive)
            }
            CryptStatusInfo::Busy => true,
            CryptStatusInfo::Active => false,
        };
        // From sysfs, not libcryptsetup: once the drive is pulled, crypt_get_device_name
        // returns NULL and libcryptsetup-rs's get_device_path dereferences it (SIGSEGV).
        let backing = backing_device(name);
        Ok(MappingStatus::Active {
            path: Path::new("/dev/mapper").join(name),
            backing,
            busy,
        })
    }

    fn backup_header(&self, device: &Path, to: &Path) -> Result<(), CryptError> {
        if to.exists() {
            return Err(CryptError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the header backup file {} exists already: choose a new name",
                    to.display()
                ),
            ));
        }
        let mut dev = Self::load(device)?;
        dev.backup_handle()
            .header_backup(Some(EncryptionFormat::Luks2), to)
            .map_err(|e| {
                lc_error(
                    Op::Other,
                    e,
                    format!(
                        "saving the LUKS header of {} to {}",
                        device.display(),
                        to.display()
                    ),
                )
            })
    }

    fn restore_header(&self, device: &Path, from: &Path) -> Result<(), CryptError> {
        check_exists(from).map_err(|e| {
            CryptError::new(
                e.kind(),
                format!("reading the header backup {}", from.display()),
            )
            .with_source(e)
        })?;
        let mut dev = Self::open(device)?;
        dev.backup_handle()
            .header_restore(Some(EncryptionFormat::Luks2), from)
            .map_err(|e| {
                lc_error(
                    Op::Other,
                    e,
                    format!(
                        "writing the header backup {} onto {}",
                        from.display(),
                        device.display()
                    ),
                )
            })
    }

    fn describe(&self) -> String {
        "libcryptsetup (LUKS2)".into()
    }

    fn add_passphrase(
        &self,
        device: &Path,
        key_file: &Path,
        passphrase: &Secret,
        kdf: PassphraseKdf,
    ) -> Result<u32, CryptError> {
        check_passphrase(passphrase)?;
        let key = read_key_file(key_file)?;
        let mut dev = Self::load(device)?;
        let pbkdf = match kdf {
            PassphraseKdf::CheapForTests => cheap_argon2id(),
            PassphraseKdf::Default => CryptSettingsHandle::get_pbkdf_default(&LuksType::Luks2)
                .map_err(|e| lc_error(Op::Other, e, "reading libcryptsetup's default PBKDF"))?,
        };
        Self::set_pbkdf(&mut dev, &pbkdf, device)?;
        dev.keyslot_handle()
            .add_by_passphrase(None, &key, passphrase.expose().as_bytes())
            .map_err(|e| {
                lc_error(
                    Op::Key,
                    e,
                    format!(
                        "adding a passphrase keyslot to {} (authorised by the key file {})",
                        device.display(),
                        key_file.display()
                    ),
                )
            })
    }

    fn unlock_read_only(
        &self,
        device: &Path,
        key: Key<'_>,
        name: &str,
    ) -> Result<PathBuf, CryptError> {
        check_mapping_name(name)?;
        let bytes = key_bytes(key)?;
        let mut dev = Self::load(device)?;
        let what = format!("unlocking {} read-only as {name}", device.display());
        if !device_mapper_available() {
            return Err(no_device_mapper(&what));
        }
        dev.activate_handle()
            .activate_by_passphrase(Some(name), None, &bytes, CryptActivate::READONLY)
            .map_err(|e| {
                if errno_of(&e) == Some(libc::ENOTSUP) || !device_mapper_available() {
                    no_device_mapper(&what).with_source(e)
                } else {
                    match key {
                        // Not lc_error's words: they are about a key file.
                        Key::Passphrase(_) if errno_of(&e) == Some(libc::EPERM) => {
                            wrong_passphrase(device).with_source(e)
                        }
                        _ => lc_error(Op::Activate, e, what.clone()),
                    }
                }
            })?;
        Ok(Path::new("/dev/mapper").join(name))
    }
}

/// The device under mapping `name` (`/dev/mapper/NAME` → `/sys/block/dm-N/slaves/X` →
/// `/dev/X`); `None` when it is gone (a pulled drive) or unknown.
fn backing_device(name: &str) -> Option<PathBuf> {
    let dm = std::fs::canonicalize(Path::new("/dev/mapper").join(name)).ok()?;
    let slaves = Path::new("/sys/block").join(dm.file_name()?).join("slaves");
    let slave = std::fs::read_dir(slaves).ok()?.flatten().next()?;
    let dev = Path::new("/dev").join(slave.file_name());
    dev.exists().then_some(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_kinds() {
        let e = |n| LibcryptErr::IOError(std::io::Error::from_raw_os_error(n));
        assert_eq!(
            lc_error(Op::Key, e(libc::EPERM), "x").kind(),
            ErrorKind::WrongKey
        );
        assert_eq!(
            lc_error(Op::Load, e(libc::EINVAL), "x").kind(),
            ErrorKind::NotLuks
        );
        assert_eq!(
            lc_error(Op::Other, e(libc::EINVAL), "x").kind(),
            ErrorKind::Other
        );
        assert_eq!(
            lc_error(Op::Deactivate, e(libc::EBUSY), "x").kind(),
            ErrorKind::Busy
        );
        assert_eq!(
            lc_error(Op::Init, e(libc::ENOENT), "x").kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            lc_error(Op::Other, e(libc::EACCES), "x").kind(),
            ErrorKind::PermissionDenied
        );
    }
}
