//! The `Crypt` trait: LUKS volumes on the backup drives.
//!
//! Operations: inspect, format, add and verify a key file, unlock (activate to a named
//! mapping), lock (deactivate; deferred or forced when busy or gone), status, header
//! backup and restore. Key files are passed by path and read by the backend; their
//! contents never reach a log, an error message or a `Debug` output.
//!
//! Backends: `LibcryptsetupCrypt` (real LUKS2 through libcryptsetup), `LoopbackTestCrypt`
//! (no encryption, for tests and the demo on kernels without dm-crypt; refuses unless
//! explicitly enabled), and [`fake::FakeCrypt`] (in memory, records calls).
//!
//! ```no_run
//! use crypt::{Crypt, LibcryptsetupCrypt, LockMode};
//! use std::path::Path;
//! let c: Box<dyn Crypt> = Box::new(LibcryptsetupCrypt::new());
//! let dev = Path::new("/dev/disk/by-uuid/0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9");
//! let key = Path::new("/etc/extbackup/offsite.key");
//! c.verify_key_file(dev, key)?; // the UUID is not proof: the key must open it
//! let mapped = c.unlock(dev, key, "extbackup-offsite")?; // /dev/mapper/extbackup-offsite
//! # let _ = mapped;
//! c.lock("extbackup-offsite", LockMode::Deferred)?;
//! # Ok::<(), crypt::CryptError>(())
//! ```
//!
//! The fake, as other crates' tests use it:
//!
//! ```
//! use crypt::{fake::FakeCrypt, Crypt, ErrorKind};
//! use std::path::Path;
//! let dir = tempfile::tempdir().unwrap();
//! let (k, other) = (dir.path().join("k"), dir.path().join("other"));
//! std::fs::write(&k, [7u8; 64]).unwrap();
//! std::fs::write(&other, [8u8; 64]).unwrap();
//! let c = FakeCrypt::new();
//! c.add_volume("/dev/sdx", "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", &k);
//! assert_eq!(c.verify_key_file(Path::new("/dev/sdx"), &k).unwrap(), 0);
//! let e = c.verify_key_file(Path::new("/dev/sdx"), &other).unwrap_err();
//! assert_eq!(e.kind(), ErrorKind::WrongKey);
//! ```
#![warn(missing_docs)]

pub mod fake;
mod loopback;
mod luks;
mod util;

pub use loopback::{
    AllowTestBackend, LoopbackTestCrypt, ALLOW_ENV, DEFAULT_STATE_DIR, HEADER_AREA,
};
pub use luks::LibcryptsetupCrypt;

use std::path::{Path, PathBuf};

/// What went wrong, in broad terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The device has no LUKS header (or not one this backend understands).
    NotLuks,
    /// The key file does not unlock any keyslot.
    WrongKey,
    /// The device, the key file or the mapping does not exist.
    NotFound,
    /// The mapping is in use (mounted, open) and could not be closed.
    Busy,
    /// Not permitted (not root, or the loopback-test backend not enabled).
    PermissionDenied,
    /// The kernel lacks something (device-mapper, dm-crypt, a cipher).
    Unsupported,
    /// Bad input from the caller (bad label, key file too short...).
    InvalidArgument,
    /// Any other failure of libcryptsetup or the kernel.
    Other,
}

/// A Crypt error: a kind plus the backend's own error as the source.
pub type CryptError = backend_error::Error<ErrorKind>;

/// A LUKS header, as read by [`Crypt::inspect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LuksInfo {
    /// LUKS version (1 or 2).
    pub version: u8,
    /// The LUKS UUID (lower-case, hyphenated), as udev shows it in `ID_FS_UUID`.
    pub uuid: String,
    /// The LUKS2 label, if any.
    pub label: Option<String>,
    /// Cipher spec, e.g. `aes-xts-plain64`.
    pub cipher: String,
    /// The active keyslot numbers.
    pub keyslots: Vec<u32>,
}

/// How [`Crypt::format`] sets up a new volume.
#[derive(Clone, Debug)]
pub struct FormatOptions {
    /// The key file for the first keyslot (a fast PBKDF: a key file is high-entropy).
    pub key_file: PathBuf,
    /// Optional passphrase for a second keyslot (argon2id, since a passphrase is not
    /// high-entropy). Never logged.
    pub passphrase: Option<Secret>,
    /// LUKS2 label.
    pub label: Option<String>,
    /// A fixed UUID (tests); a random one otherwise.
    pub uuid: Option<String>,
    /// Use the cheapest PBKDF for every slot (tests only: makes formatting fast).
    pub fast_pbkdf_for_tests: bool,
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The key that opens a volume for [`Crypt::unlock_read_only`].
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// A key file, read by the backend (what `cryptsetup --key-file` does).
    File(&'a Path),
    /// A passphrase (a recovery passphrase typed by its owner).
    Passphrase(&'a Secret),
}

/// The cost of the PBKDF of a new passphrase keyslot ([`Crypt::add_passphrase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PassphraseKdf {
    /// argon2id at libcryptsetup's benchmarked defaults (what `cryptsetup luksAddKey`
    /// does): the right choice for every real drive.
    #[default]
    Default,
    /// The cheapest argon2id (4 iterations, 32 KiB). Tests only: full cost takes many
    /// seconds under software emulation, and a cheap slot is easy to brute-force.
    CheapForTests,
}

/// How hard [`Crypt::lock`] tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Close now; fail with `Busy` if in use.
    Normal,
    /// Close now if possible, else mark for deferred removal (closed when last user goes).
    Deferred,
    /// Close even if in use or the backing device is gone (I/O errors for users).
    Force,
}

/// What [`Crypt::lock`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOutcome {
    /// The mapping is gone.
    Closed,
    /// The mapping was already absent.
    NotActive,
    /// The kernel will remove it when its last user closes it.
    Deferred,
}

/// The state of a named mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingStatus {
    /// No such mapping.
    Inactive,
    /// Active at `path` (e.g. `/dev/mapper/extbackup-offsite-a`).
    Active {
        /// The block device to mount.
        path: PathBuf,
        /// The underlying device, if known.
        backing: Option<PathBuf>,
        /// Whether something holds it open.
        busy: bool,
    },
}

/// LUKS operations. Object safe: the backend is chosen at run time from the config.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Crypt: Send + Sync {
    /// Reads the LUKS header of `device` (`NotLuks` if it has none).
    fn inspect(&self, device: &Path) -> Result<LuksInfo, CryptError>;
    /// Writes a new LUKS2 header (aes-xts-plain64) with `opts.key_file` in a keyslot.
    /// Destroys what was on `device`: callers confirm with the user first.
    fn format(&self, device: &Path, opts: &FormatOptions) -> Result<LuksInfo, CryptError>;
    /// Adds `new_key` in a new keyslot, authorised by `existing_key`; returns the slot.
    fn add_key_file(
        &self,
        device: &Path,
        existing_key: &Path,
        new_key: &Path,
    ) -> Result<u32, CryptError>;
    /// Checks that `key_file` opens a keyslot of `device`, without activating it;
    /// returns the slot (`WrongKey` if none opens).
    fn verify_key_file(&self, device: &Path, key_file: &Path) -> Result<u32, CryptError>;
    /// Activates `device` as mapping `name` with `key_file`; returns the mapped device path.
    fn unlock(&self, device: &Path, key_file: &Path, name: &str) -> Result<PathBuf, CryptError>;
    /// Deactivates mapping `name`.
    fn lock(&self, name: &str, mode: LockMode) -> Result<LockOutcome, CryptError>;
    /// The state of mapping `name`.
    fn status(&self, name: &str) -> Result<MappingStatus, CryptError>;
    /// Saves the LUKS header of `device` to the new file `to` (fails if it exists).
    fn backup_header(&self, device: &Path, to: &Path) -> Result<(), CryptError>;
    /// Writes the header saved in `from` back onto `device`.
    fn restore_header(&self, device: &Path, from: &Path) -> Result<(), CryptError>;
    /// A short name for logs.
    fn describe(&self) -> String;

    /// Adds `passphrase` in a new keyslot (argon2id, cost `kdf`), authorised by
    /// `key_file`; returns the slot. Backends without passphrases say `Unsupported`.
    fn add_passphrase(
        &self,
        device: &Path,
        key_file: &Path,
        passphrase: &Secret,
        kdf: PassphraseKdf,
    ) -> Result<u32, CryptError> {
        let _ = (device, key_file, passphrase, kdf);
        Err(CryptError::new(
            ErrorKind::Unsupported,
            format!("{}: passphrase keyslots are not supported", self.describe()),
        ))
    }

    /// Activates `device` **read-only** as mapping `name` with `key` (a key file or a
    /// passphrase); returns the mapped device path. `WrongKey` when the key opens no slot.
    fn unlock_read_only<'k>(
        &self,
        device: &Path,
        key: Key<'k>,
        name: &str,
    ) -> Result<PathBuf, CryptError> {
        let _ = (device, key, name);
        Err(CryptError::new(
            ErrorKind::Unsupported,
            format!("{}: read-only unlocking is not supported", self.describe()),
        ))
    }
}
