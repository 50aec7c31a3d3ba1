//! An in-memory `Crypt` for tests of other crates: volumes are entries in a map, unlocking
//! "maps" a device to itself, and every call is recorded. It keeps the trait's promises as
//! the real backends do (the crate's conformance suite runs on it and on them): a key file
//! opens a volume by its contents, not its path; an empty or missing key file is refused; a
//! header backup is never overwritten and restores the header it saved.

use crate::util::{io_error, read_key_file};
use crate::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A volume known to the fake.
#[derive(Clone, Debug)]
pub struct FakeVolume {
    /// Its header.
    pub info: LuksInfo,
    /// The contents of the key files (and the passphrases) that open it.
    keys: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    volumes: BTreeMap<PathBuf, FakeVolume>,
    active: BTreeMap<String, PathBuf>,
    calls: Vec<String>,
    busy: Vec<String>,
}

/// In-memory `Crypt`; clones share state.
#[derive(Clone, Debug, Default)]
pub struct FakeCrypt {
    inner: Arc<Mutex<Inner>>,
}

impl FakeCrypt {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a LUKS volume at `device` with `uuid`, opened by the key file `key` (which must
    /// exist: the fake compares contents, as the real backends do).
    pub fn add_volume(&self, device: impl Into<PathBuf>, uuid: &str, key: impl AsRef<Path>) {
        let key = read_key_file(key.as_ref())
            .unwrap_or_else(|e| panic!("FakeCrypt::add_volume: {e}: create the key file first"));
        let info = LuksInfo {
            version: 2,
            uuid: uuid.into(),
            label: None,
            cipher: "aes-xts-plain64".into(),
            keyslots: vec![0],
        };
        self.inner.lock().unwrap().volumes.insert(
            device.into(),
            FakeVolume {
                info,
                keys: vec![key.to_vec()],
            },
        );
    }
    /// Destroys the header of `device` (as zeroing its first MiB would): `inspect` then says
    /// `NotLuks` until a header backup is restored.
    pub fn damage_header(&self, device: &Path) {
        self.inner.lock().unwrap().volumes.remove(device);
    }
    /// Makes `lock(name, Normal)` fail with `Busy` until cleared.
    pub fn set_busy(&self, name: &str, busy: bool) {
        let mut i = self.inner.lock().unwrap();
        i.busy.retain(|n| n != name);
        if busy {
            i.busy.push(name.into());
        }
    }
    /// Every call so far, as `op device-or-name`.
    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }
    /// The names of the active mappings.
    pub fn active(&self) -> Vec<String> {
        self.inner.lock().unwrap().active.keys().cloned().collect()
    }

    fn record(&self, op: &str, what: &Path) {
        self.inner
            .lock()
            .unwrap()
            .calls
            .push(format!("{op} {}", what.display()));
    }

    fn volume(&self, device: &Path) -> Result<FakeVolume, CryptError> {
        self.inner
            .lock()
            .unwrap()
            .volumes
            .get(device)
            .cloned()
            .ok_or_else(|| {
                CryptError::new(
                    ErrorKind::NotLuks,
                    format!("{} is not a LUKS volume", device.display()),
                )
            })
    }

    /// Adds `key` in a new keyslot of `device` (a volume the caller has checked); returns
    /// the slot.
    fn push_key(&self, device: &Path, key: Vec<u8>) -> u32 {
        let mut i = self.inner.lock().unwrap();
        let v = i.volumes.get_mut(device).expect("checked by the caller");
        v.keys.push(key);
        let slot = (v.keys.len() - 1) as u32;
        v.info.keyslots.push(slot);
        slot
    }

    /// "Maps" `device` as `name` (to itself); returns the mapped path.
    fn activate(&self, device: &Path, name: &str) -> PathBuf {
        self.inner
            .lock()
            .unwrap()
            .active
            .insert(name.into(), device.into());
        device.into()
    }

    fn check_key(&self, device: &Path, key: &Path) -> Result<u32, CryptError> {
        let v = self.volume(device)?;
        let bytes = read_key_file(key)?;
        match v.keys.iter().position(|k| k[..] == bytes[..]) {
            Some(slot) => Ok(slot as u32),
            None => Err(CryptError::new(
                ErrorKind::WrongKey,
                format!(
                    "the key file {} opens no keyslot of {}",
                    key.display(),
                    device.display()
                ),
            )),
        }
    }
}

impl Crypt for FakeCrypt {
    fn inspect(&self, device: &Path) -> Result<LuksInfo, CryptError> {
        self.record("inspect", device);
        Ok(self.volume(device)?.info)
    }
    fn format(&self, device: &Path, opts: &FormatOptions) -> Result<LuksInfo, CryptError> {
        self.record("format", device);
        let info = LuksInfo {
            version: 2,
            uuid: opts
                .uuid
                .clone()
                .unwrap_or_else(|| "00000000-0000-4000-8000-000000000000".into()),
            label: opts.label.clone(),
            cipher: "aes-xts-plain64".into(),
            keyslots: vec![0],
        };
        let mut info = info;
        let mut keys = vec![read_key_file(&opts.key_file)?.to_vec()];
        if let Some(p) = &opts.passphrase {
            keys.push(passphrase_key(p));
            info.keyslots.push(1);
        }
        self.inner.lock().unwrap().volumes.insert(
            device.into(),
            FakeVolume {
                info: info.clone(),
                keys,
            },
        );
        Ok(info)
    }
    fn add_key_file(&self, device: &Path, existing: &Path, new: &Path) -> Result<u32, CryptError> {
        self.record("add_key_file", device);
        self.check_key(device, existing)?;
        let new = read_key_file(new)?.to_vec();
        Ok(self.push_key(device, new))
    }
    fn verify_key_file(&self, device: &Path, key: &Path) -> Result<u32, CryptError> {
        self.record("verify_key_file", device);
        self.check_key(device, key)
    }
    fn unlock(&self, device: &Path, key: &Path, name: &str) -> Result<PathBuf, CryptError> {
        self.record("unlock", device);
        self.check_key(device, key)?;
        Ok(self.activate(device, name))
    }
    fn lock(&self, name: &str, mode: LockMode) -> Result<LockOutcome, CryptError> {
        self.record("lock", Path::new(name));
        let mut i = self.inner.lock().unwrap();
        if !i.active.contains_key(name) {
            return Ok(LockOutcome::NotActive);
        }
        if i.busy.iter().any(|n| n == name) {
            match mode {
                LockMode::Normal => {
                    return Err(CryptError::new(
                        ErrorKind::Busy,
                        format!("mapping {name} is in use"),
                    ))
                }
                LockMode::Deferred => return Ok(LockOutcome::Deferred),
                LockMode::Force => {}
            }
        }
        i.active.remove(name);
        Ok(LockOutcome::Closed)
    }
    fn status(&self, name: &str) -> Result<MappingStatus, CryptError> {
        let i = self.inner.lock().unwrap();
        Ok(match i.active.get(name) {
            None => MappingStatus::Inactive,
            Some(dev) => MappingStatus::Active {
                path: dev.clone(),
                backing: Some(dev.clone()),
                busy: i.busy.iter().any(|n| n == name),
            },
        })
    }
    fn backup_header(&self, device: &Path, to: &Path) -> Result<(), CryptError> {
        self.record("backup_header", device);
        let v = self.volume(device)?;
        // Like the real backends: never overwrite an existing backup.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &v.to_bytes()))
            .map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::AlreadyExists {
                    ErrorKind::InvalidArgument
                } else {
                    ErrorKind::Other
                };
                CryptError::new(kind, format!("writing {}", to.display())).with_source(e)
            })
    }
    fn restore_header(&self, device: &Path, from: &Path) -> Result<(), CryptError> {
        self.record("restore_header", device);
        let bytes = std::fs::read(from).map_err(|e| io_error(e, "reading", from))?;
        let v = FakeVolume::from_bytes(&bytes).ok_or_else(|| {
            CryptError::new(
                ErrorKind::NotLuks,
                format!("{} is not a LUKS header backup", from.display()),
            )
        })?;
        self.inner.lock().unwrap().volumes.insert(device.into(), v);
        Ok(())
    }
    fn describe(&self) -> String {
        "fake".into()
    }
    fn add_passphrase(
        &self,
        device: &Path,
        key_file: &Path,
        passphrase: &Secret,
        _kdf: PassphraseKdf,
    ) -> Result<u32, CryptError> {
        self.record("add_passphrase", device);
        self.check_key(device, key_file)?;
        Ok(self.push_key(device, passphrase_key(passphrase)))
    }
    fn unlock_read_only(
        &self,
        device: &Path,
        key: Key<'_>,
        name: &str,
    ) -> Result<PathBuf, CryptError> {
        self.record("unlock_read_only", device);
        match key {
            Key::File(k) => {
                self.check_key(device, k)?;
            }
            Key::Passphrase(p) => {
                if !self.volume(device)?.keys.contains(&passphrase_key(p)) {
                    return Err(CryptError::new(
                        ErrorKind::WrongKey,
                        format!("the passphrase opens no keyslot of {}", device.display()),
                    ));
                }
            }
        }
        Ok(self.activate(device, name))
    }
}

/// How the fake keeps a passphrase among its keys.
fn passphrase_key(p: &Secret) -> Vec<u8> {
    format!("passphrase:{}", p.expose()).into_bytes()
}

impl FakeVolume {
    /// The fake's header backup: a magic line, then UUID, label, keyslots and keys in hex.
    fn to_bytes(&self) -> Vec<u8> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut s = format!(
            "FAKE-LUKS-HEADER\n{}\n{}\n",
            self.info.uuid,
            self.info.label.as_deref().unwrap_or("")
        );
        for k in &self.keys {
            s.push_str(&hex(k));
            s.push('\n');
        }
        s.into_bytes()
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(b).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "FAKE-LUKS-HEADER" {
            return None;
        }
        let uuid = lines.next()?.to_string();
        let label = Some(lines.next()?.to_string()).filter(|l| !l.is_empty());
        let keys: Vec<Vec<u8>> = lines
            .map(|l| {
                (0..l.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(l.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .collect::<Option<_>>()?;
        Some(Self {
            info: LuksInfo {
                version: 2,
                uuid,
                label,
                cipher: "aes-xts-plain64".into(),
                keyslots: (0..keys.len() as u32).collect(),
            },
            keys,
        })
    }
}
