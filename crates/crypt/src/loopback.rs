//! `LoopbackTestCrypt`: a stand-in for LUKS on kernels without dm-crypt (tests, the demo).
//!
//! **No encryption.** `format` writes a small plain header of its own in the first MiB
//! (magic, version, UUID, label, a salt and a salted SHA-256 of each key file), so that
//! `verify_key_file` and `unlock` still reject a wrong key. `unlock` exposes the rest of the
//! device as a new loop device at a 1 MiB offset (`losetup --find --show --offset`), so the
//! rest of the pipeline gets a real block device; `lock` detaches it. The name -> loop
//! mapping lives in a small state folder.
//!
//! It refuses to exist unless explicitly enabled twice: the caller passes
//! [`AllowTestBackend::Yes`] (from a config key such as `crypt.backend = "loopback-test"`)
//! **and** the environment has `EXTBACKUP_ALLOW_LOOPBACK_CRYPT=1`. Every operation refuses
//! a device that is not a regular image file or a loop device backed by one.

use crate::util::{check_exists, check_label, check_mapping_name, io_error, read_key_file};
use crate::*;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::process::Command;

/// The environment variable that must be `1` for [`LoopbackTestCrypt`] to be built.
pub const ALLOW_ENV: &str = "EXTBACKUP_ALLOW_LOOPBACK_CRYPT";
/// Where the name -> loop device mapping is kept by default.
pub const DEFAULT_STATE_DIR: &str = "/run/extbackup-loopback";
/// The size of the plain header area; the data starts after it.
pub const HEADER_AREA: u64 = 1024 * 1024;

const MAGIC: &str = "EXTBACKUP-LOOPBACK-TEST-CRYPT (NOT ENCRYPTED)";
const HEADER_TEXT_MAX: usize = 4096;
const MAX_KEYS: usize = 8;
const LOOP_MAJOR: u64 = 7;

/// Whether the caller explicitly enabled the loopback-test backend (from the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowTestBackend {
    /// The config asked for the loopback-test backend.
    Yes,
    /// It did not: construction fails.
    No,
}

/// The no-encryption test backend. See the module docs.
#[derive(Clone, Debug)]
pub struct LoopbackTestCrypt {
    state_dir: PathBuf,
}

/// The parsed plain header.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    uuid: String,
    label: Option<String>,
    salt: String,
    keys: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_hash(salt: &str, key: &[u8]) -> String {
    hex(&Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(key)
        .finalize())
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut s = format!("{MAGIC}\nversion=1\nuuid={}\n", self.uuid);
        if let Some(l) = &self.label {
            s.push_str(&format!("label={l}\n"));
        }
        s.push_str(&format!("salt={}\n", self.salt));
        for k in &self.keys {
            s.push_str(&format!("key={k}\n"));
        }
        s.into_bytes()
    }

    fn decode(raw: &[u8]) -> Option<Header> {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = std::str::from_utf8(&raw[..end]).ok()?;
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut h = Header {
            uuid: String::new(),
            label: None,
            salt: String::new(),
            keys: Vec::new(),
        };
        let mut version_ok = false;
        for l in lines {
            let (k, v) = l.split_once('=')?;
            match k {
                "version" => version_ok = v == "1",
                "uuid" => h.uuid = v.into(),
                "label" => h.label = Some(v.into()),
                "salt" => h.salt = v.into(),
                "key" => h.keys.push(v.into()),
                _ => {}
            }
        }
        (version_ok && !h.uuid.is_empty() && !h.salt.is_empty()).then_some(h)
    }

    fn info(&self) -> LuksInfo {
        LuksInfo {
            version: 0,
            uuid: self.uuid.clone(),
            label: self.label.clone(),
            cipher: "none (loopback-test, not encrypted)".into(),
            keyslots: (0..self.keys.len() as u32).collect(),
        }
    }

    fn slot_of(&self, key: &[u8]) -> Option<u32> {
        let h = key_hash(&self.salt, key);
        self.keys.iter().position(|k| *k == h).map(|i| i as u32)
    }
}

fn refuse(msg: String) -> CryptError {
    CryptError::new(ErrorKind::PermissionDenied, msg)
}

fn other(msg: String, e: impl Into<backend_error::Source>) -> CryptError {
    CryptError::new(ErrorKind::Other, msg).with_source(e)
}

/// The `/sys/dev/block/7:N/loop` folder of a loop device, if `md` is one.
fn loop_sysfs(md: &std::fs::Metadata) -> Option<PathBuf> {
    if !md.file_type().is_block_device() {
        return None;
    }
    let rdev = md.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    (major == LOOP_MAJOR).then(|| PathBuf::from(format!("/sys/dev/block/{major}:{minor}/loop")))
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Refuses anything but a regular image file or a loop device backed by a regular file.
fn check_test_device(device: &Path) -> Result<(), CryptError> {
    let md = check_exists(device)?;
    if md.file_type().is_file() {
        return Ok(());
    }
    let why = match loop_sysfs(&md) {
        None => "it is neither a loop device nor a regular image file".to_string(),
        Some(sys) => match read_trimmed(&sys.join("backing_file")) {
            None => "it is a loop device with nothing attached".to_string(),
            Some(b) => {
                let b = b.trim_end_matches(" (deleted)");
                match std::fs::metadata(b) {
                    Ok(m) if m.file_type().is_file() => return Ok(()),
                    _ => format!("it is a loop device backed by {b}, which is not a regular file"),
                }
            }
        },
    };
    Err(refuse(format!(
        "refusing to use {} with the loopback-test crypt backend: {why}; this backend does \
         NO encryption and only ever touches image files and loop devices over them",
        device.display()
    )))
}

fn device_size(device: &Path) -> Result<u64, CryptError> {
    let mut f = File::open(device).map_err(|e| io_error(e, "opening the device", device))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| io_error(e, "measuring the device", device))
}

fn read_header_area(device: &Path, len: usize) -> Result<Vec<u8>, CryptError> {
    let mut f = File::open(device).map_err(|e| io_error(e, "opening the device", device))?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = f
            .read(&mut buf[filled..])
            .map_err(|e| io_error(e, "reading the header of", device))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

fn write_at_start(device: &Path, data: &[u8]) -> Result<(), CryptError> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|e| io_error(e, "opening for writing", device))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_error(e, "writing the header of", device))
}

fn read_header(device: &Path) -> Result<Header, CryptError> {
    let raw = read_header_area(device, HEADER_TEXT_MAX)?;
    if let Some(h) = Header::decode(&raw) {
        return Ok(h);
    }
    let why = if raw.starts_with(b"LUKS\xba\xbe") {
        "it has a real LUKS header, which the loopback-test backend does not handle (use the libcryptsetup backend)"
    } else {
        "no loopback-test header found (format it first)"
    };
    Err(CryptError::new(
        ErrorKind::NotLuks,
        format!("{} is not a loopback-test volume: {why}", device.display()),
    ))
}

fn run(cmd: &mut Command, what: &str) -> Result<String, CryptError> {
    let out = oskit::process::tie_to_parent(cmd).output().map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::Unsupported
        } else {
            ErrorKind::Other
        };
        CryptError::new(
            kind,
            format!("{what}: cannot run losetup (install util-linux)"),
        )
        .with_source(e)
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let kind = if msg.contains("ermission denied") {
            ErrorKind::PermissionDenied
        } else {
            ErrorKind::Other
        };
        return Err(
            CryptError::new(kind, format!("{what}: losetup failed ({})", out.status))
                .with_source(std::io::Error::other(msg)),
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether something holds `dev` exclusively (a mount does).
fn is_busy(dev: &Path) -> bool {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
    {
        Ok(_) => false,
        Err(e) => e.raw_os_error() == Some(libc::EBUSY),
    }
}

/// A recorded mapping.
struct Mapping {
    loop_dev: PathBuf,
    backing: PathBuf,
}

impl LoopbackTestCrypt {
    /// Builds the backend with the default state folder ([`DEFAULT_STATE_DIR`]).
    /// Fails with `PermissionDenied` unless `allow` is `Yes` **and** `EXTBACKUP_ALLOW_LOOPBACK_CRYPT=1`.
    pub fn new(allow: AllowTestBackend) -> Result<Self, CryptError> {
        Self::with_state_dir(allow, DEFAULT_STATE_DIR)
    }

    /// Like [`new`](Self::new), keeping the name -> loop mapping in `state_dir` (created 0700).
    pub fn with_state_dir(
        allow: AllowTestBackend,
        state_dir: impl Into<PathBuf>,
    ) -> Result<Self, CryptError> {
        if allow != AllowTestBackend::Yes {
            return Err(refuse(
                "the loopback-test crypt backend (no encryption) is not enabled: set \
                 crypt.backend = \"loopback-test\" in the config, for tests and demos only"
                    .into(),
            ));
        }
        if std::env::var_os(ALLOW_ENV).as_deref() != Some(std::ffi::OsStr::new("1")) {
            return Err(refuse(format!(
                "the loopback-test crypt backend (no encryption) also needs the environment \
                 variable {ALLOW_ENV}=1, so that it is never used on a real drive by accident"
            )));
        }
        let state_dir = state_dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .map_err(|e| io_error(e, "creating the state folder", &state_dir))?;
        Ok(Self { state_dir })
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }

    fn mapping(&self, name: &str) -> Result<Option<Mapping>, CryptError> {
        let p = self.state_file(name);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e, "reading the state file", &p)),
        };
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).map(PathBuf::from))
        };
        match (get("loop="), get("backing=")) {
            (Some(loop_dev), Some(backing)) => Ok(Some(Mapping { loop_dev, backing })),
            _ => Err(CryptError::new(
                ErrorKind::Other,
                format!("the state file {} is damaged: remove it", p.display()),
            )),
        }
    }

    /// Whether the recorded loop device is still attached to our backing at our offset.
    fn still_attached(m: &Mapping) -> bool {
        let Ok(md) = std::fs::metadata(&m.loop_dev) else {
            return false;
        };
        let Some(sys) = loop_sysfs(&md) else {
            return false;
        };
        let backing = read_trimmed(&sys.join("backing_file"));
        let offset = read_trimmed(&sys.join("offset"));
        backing.as_deref().map(Path::new) == Some(m.backing.as_path())
            && offset.as_deref() == Some(&HEADER_AREA.to_string())
    }
}

impl Crypt for LoopbackTestCrypt {
    fn inspect(&self, device: &Path) -> Result<LuksInfo, CryptError> {
        check_test_device(device)?;
        Ok(read_header(device)?.info())
    }

    fn format(&self, device: &Path, opts: &FormatOptions) -> Result<LuksInfo, CryptError> {
        check_test_device(device)?;
        let key = read_key_file(&opts.key_file)?;
        crate::util::check_not_in_use(device)?;
        if let Some(l) = &opts.label {
            check_label(l)?;
        }
        let uuid = match &opts.uuid {
            Some(u) => uuid::Uuid::parse_str(u)
                .map_err(|e| {
                    CryptError::new(ErrorKind::InvalidArgument, format!("bad UUID {u:?}"))
                        .with_source(e)
                })?
                .hyphenated()
                .to_string(),
            None => uuid::Uuid::new_v4().hyphenated().to_string(),
        };
        let size = device_size(device)?;
        if size < 2 * HEADER_AREA {
            return Err(CryptError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{} is {size} bytes: the loopback-test backend needs at least 2 MiB",
                    device.display()
                ),
            ));
        }
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let salt = hex(&salt);
        let mut keys = vec![key_hash(&salt, &key)];
        if let Some(p) = &opts.passphrase {
            keys.push(key_hash(&salt, p.expose().as_bytes()));
        }
        let h = Header {
            uuid,
            label: opts.label.clone(),
            salt,
            keys,
        };
        let mut area = vec![0u8; HEADER_AREA as usize];
        let enc = h.encode();
        area[..enc.len()].copy_from_slice(&enc);
        write_at_start(device, &area)?;
        Ok(h.info())
    }

    fn add_key_file(
        &self,
        device: &Path,
        existing_key: &Path,
        new_key: &Path,
    ) -> Result<u32, CryptError> {
        check_test_device(device)?;
        let old = read_key_file(existing_key)?;
        let new = read_key_file(new_key)?;
        self.add_key_bytes(device, existing_key, &old, &new)
    }

    fn verify_key_file(&self, device: &Path, key_file: &Path) -> Result<u32, CryptError> {
        check_test_device(device)?;
        let key = read_key_file(key_file)?;
        read_header(device)?
            .slot_of(&key)
            .ok_or_else(|| wrong_key(device, key_file))
    }

    fn unlock(&self, device: &Path, key_file: &Path, name: &str) -> Result<PathBuf, CryptError> {
        check_mapping_name(name)?;
        self.verify_key_file(device, key_file)?;
        self.attach(device, name, false)
    }

    fn lock(&self, name: &str, mode: LockMode) -> Result<LockOutcome, CryptError> {
        check_mapping_name(name)?;
        let Some(m) = self.mapping(name)? else {
            return Ok(LockOutcome::NotActive);
        };
        let p = self.state_file(name);
        if !Self::still_attached(&m) {
            let _ = std::fs::remove_file(&p);
            return Ok(LockOutcome::NotActive);
        }
        let busy = is_busy(&m.loop_dev);
        if busy && mode == LockMode::Normal {
            return Err(CryptError::new(
                ErrorKind::Busy,
                format!(
                    "closing the mapping {name} ({}): it is in use (mounted or open); unmount \
                     it first, or lock with deferred or forced removal",
                    m.loop_dev.display()
                ),
            ));
        }
        // On a busy loop device the kernel sets autoclear instead: it goes with its last user.
        run(
            Command::new("losetup").arg("-d").arg(&m.loop_dev),
            &format!("closing the mapping {name}"),
        )?;
        std::fs::remove_file(&p).map_err(|e| io_error(e, "removing the state file", &p))?;
        Ok(if busy {
            LockOutcome::Deferred
        } else {
            LockOutcome::Closed
        })
    }

    fn status(&self, name: &str) -> Result<MappingStatus, CryptError> {
        check_mapping_name(name)?;
        let Some(m) = self.mapping(name)? else {
            return Ok(MappingStatus::Inactive);
        };
        if !Self::still_attached(&m) {
            return Ok(MappingStatus::Inactive);
        }
        Ok(MappingStatus::Active {
            busy: is_busy(&m.loop_dev),
            path: m.loop_dev,
            backing: Some(m.backing),
        })
    }

    fn backup_header(&self, device: &Path, to: &Path) -> Result<(), CryptError> {
        check_test_device(device)?;
        read_header(device)?;
        let area = read_header_area(device, HEADER_AREA as usize)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CryptError::new(
                        ErrorKind::InvalidArgument,
                        format!("the header backup file {} exists already", to.display()),
                    )
                    .with_source(e)
                } else {
                    io_error(e, "creating the header backup", to)
                }
            })?;
        f.write_all(&area)
            .and_then(|_| f.sync_all())
            .map_err(|e| other(format!("writing {}", to.display()), e))
    }

    fn restore_header(&self, device: &Path, from: &Path) -> Result<(), CryptError> {
        check_test_device(device)?;
        let data =
            std::fs::read(from).map_err(|e| io_error(e, "reading the header backup", from))?;
        if data.len() != HEADER_AREA as usize || Header::decode(&data).is_none() {
            return Err(CryptError::new(
                ErrorKind::InvalidArgument,
                format!("{} is not a loopback-test header backup", from.display()),
            ));
        }
        write_at_start(device, &data)
    }

    fn describe(&self) -> String {
        "loopback-test (NO encryption)".into()
    }

    fn add_passphrase(
        &self,
        device: &Path,
        key_file: &Path,
        passphrase: &Secret,
        _kdf: PassphraseKdf,
    ) -> Result<u32, CryptError> {
        check_test_device(device)?;
        crate::util::check_passphrase(passphrase)?;
        let old = read_key_file(key_file)?;
        self.add_key_bytes(device, key_file, &old, passphrase.expose().as_bytes())
    }

    fn unlock_read_only(
        &self,
        device: &Path,
        key: Key<'_>,
        name: &str,
    ) -> Result<PathBuf, CryptError> {
        check_mapping_name(name)?;
        check_test_device(device)?;
        let bytes = crate::util::key_bytes(key)?;
        if read_header(device)?.slot_of(&bytes).is_none() {
            return Err(match key {
                Key::File(p) => wrong_key(device, p),
                Key::Passphrase(_) => crate::util::wrong_passphrase(device),
            });
        }
        self.attach(device, name, true)
    }
}

impl LoopbackTestCrypt {
    /// Adds the key `new` to the header, authorised by `old` (the key file `old_path`).
    fn add_key_bytes(
        &self,
        device: &Path,
        old_path: &Path,
        old: &[u8],
        new: &[u8],
    ) -> Result<u32, CryptError> {
        let mut h = read_header(device)?;
        if h.slot_of(old).is_none() {
            return Err(wrong_key(device, old_path));
        }
        if h.keys.len() >= MAX_KEYS {
            return Err(CryptError::new(
                ErrorKind::InvalidArgument,
                format!("{} has all {MAX_KEYS} key slots in use", device.display()),
            ));
        }
        h.keys.push(key_hash(&h.salt, new));
        let enc = h.encode();
        if enc.len() > HEADER_TEXT_MAX {
            return Err(CryptError::new(ErrorKind::Other, "header too large"));
        }
        let mut block = vec![0u8; HEADER_TEXT_MAX];
        block[..enc.len()].copy_from_slice(&enc);
        write_at_start(device, &block)?;
        Ok(h.keys.len() as u32 - 1)
    }

    /// Exposes the data area of `device` as a new loop device recorded as mapping `name`.
    fn attach(&self, device: &Path, name: &str, read_only: bool) -> Result<PathBuf, CryptError> {
        if let MappingStatus::Active { path, .. } = self.status(name)? {
            return Err(CryptError::new(
                ErrorKind::Busy,
                format!(
                    "the mapping {name} is already active at {}: lock it first",
                    path.display()
                ),
            ));
        }
        let backing = std::fs::canonicalize(device)
            .map_err(|e| io_error(e, "resolving the device path", device))?;
        let what = format!("unlocking {} as {name}", device.display());
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--offset"])
            .arg(HEADER_AREA.to_string());
        if read_only {
            cmd.arg("--read-only");
        }
        let out = run(cmd.arg(&backing), &what)?;
        let loop_dev = PathBuf::from(out);
        let state = format!(
            "loop={}\nbacking={}\n",
            loop_dev.display(),
            backing.display()
        );
        let p = self.state_file(name);
        if let Err(e) = std::fs::write(&p, state) {
            let _ = run(Command::new("losetup").arg("-d").arg(&loop_dev), &what);
            return Err(io_error(e, "writing the state file", &p));
        }
        Ok(loop_dev)
    }
}

fn wrong_key(device: &Path, key: &Path) -> CryptError {
    CryptError::new(
        ErrorKind::WrongKey,
        format!(
            "the key file {} opens no key slot of {}",
            key.display(),
            device.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks_keys() {
        let h = Header {
            uuid: "0b1c2d3e-0000-4000-8000-000000000001".into(),
            label: Some("offsite A".into()),
            salt: "00ff".into(),
            keys: vec![key_hash("00ff", b"key one")],
        };
        let back = Header::decode(&h.encode()).expect("decodes");
        assert_eq!(back, h);
        assert_eq!(back.slot_of(b"key one"), Some(0));
        assert_eq!(back.slot_of(b"key two"), None);
        assert_eq!(back.info().keyslots, vec![0]);
    }

    #[test]
    fn garbage_is_not_a_header() {
        assert!(Header::decode(b"\0\0\0").is_none());
        assert!(Header::decode(b"LUKS\xba\xbe\0\x02").is_none());
        let mut wrong_version = Header {
            uuid: "u".into(),
            label: None,
            salt: "s".into(),
            keys: vec![],
        }
        .encode();
        let s = String::from_utf8(wrong_version.clone())
            .unwrap()
            .replace("version=1", "version=9");
        wrong_version = s.into_bytes();
        assert!(Header::decode(&wrong_version).is_none());
    }

    #[test]
    fn refused_unless_enabled_by_argument() {
        let dir = tempfile::tempdir().unwrap();
        let e = LoopbackTestCrypt::with_state_dir(AllowTestBackend::No, dir.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("not enabled"));
    }

    #[test]
    fn non_loop_devices_are_refused() {
        let e = check_test_device(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("neither a loop device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, b"x").unwrap();
        assert!(check_test_device(&img).is_ok());
    }
}
