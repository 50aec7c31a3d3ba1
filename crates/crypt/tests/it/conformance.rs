//! What every `Crypt` backend promises, as one suite run on the in-memory fake and on the
//! real backends alike (in the spirit of stratisd's one suite for SimEngine and the real
//! engine): a fake that other crates' tests rely on must behave like what it stands for.

use crate::support::*;
use crypt::fake::FakeCrypt;
use crypt::{
    AllowTestBackend, Crypt, ErrorKind, FormatOptions, LibcryptsetupCrypt, LockMode, LockOutcome,
    LoopbackTestCrypt, MappingStatus, ALLOW_ENV,
};
use std::path::{Path, PathBuf};

const UUID: &str = "5b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";

/// One backend with two devices of its own and a way to destroy a header.
struct Rig<'a> {
    crypt: &'a dyn Crypt,
    /// Formatted by the suite.
    device: PathBuf,
    /// Never formatted.
    blank: PathBuf,
    /// Where the key files and the header backup go.
    dir: PathBuf,
    /// Destroys the header of `device` (zeroes its start, for the real ones).
    damage: &'a dyn Fn(),
    /// Whether mappings can really be activated here.
    activation: bool,
}

fn opts(key: &Path) -> FormatOptions {
    FormatOptions {
        key_file: key.to_path_buf(),
        passphrase: None,
        label: Some("conformance".into()),
        uuid: Some(UUID.into()),
        fast_pbkdf_for_tests: true,
    }
}

/// The error's message and every cause's, joined by `: `.
fn chain(e: &crypt::CryptError) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn kind<T: std::fmt::Debug>(r: Result<T, crypt::CryptError>) -> ErrorKind {
    r.expect_err("an error").kind()
}

fn keeps_the_crypt_promises(r: Rig<'_>) {
    let c = r.crypt;
    let name = c.describe();
    let key = |n: &str, bytes: &[u8]| {
        let p = r.dir.join(n);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let a = key("a.key", &random_key());
    let a_copy = key("a-copy.key", &std::fs::read(&a).unwrap());
    let b = key("b.key", &random_key());
    let empty = key("empty.key", b"");

    // A device without a header is not LUKS; bad key files write nothing.
    assert_eq!(kind(c.inspect(&r.blank)), ErrorKind::NotLuks, "{name}");
    assert_eq!(
        kind(c.format(&r.blank, &opts(&empty))),
        ErrorKind::InvalidArgument,
        "{name}: empty key file"
    );
    assert_eq!(
        kind(c.format(&r.blank, &opts(&r.dir.join("missing.key")))),
        ErrorKind::NotFound,
        "{name}: missing key file"
    );
    assert_eq!(kind(c.inspect(&r.blank)), ErrorKind::NotLuks, "{name}");

    // Format: the header says what was asked.
    let info = c.format(&r.device, &opts(&a)).expect("format");
    assert_eq!(
        (info.uuid.as_str(), info.label.as_deref()),
        (UUID, Some("conformance"))
    );
    assert_eq!(c.inspect(&r.device).unwrap().uuid, UUID, "{name}");

    // A key file opens the volume by its contents, not its path.
    let slot = c.verify_key_file(&r.device, &a).expect("the key");
    assert_eq!(
        c.verify_key_file(&r.device, &a_copy).unwrap(),
        slot,
        "{name}: a copy"
    );
    assert_eq!(
        kind(c.verify_key_file(&r.device, &b)),
        ErrorKind::WrongKey,
        "{name}"
    );

    // A new key file needs an existing one.
    assert_eq!(
        kind(c.add_key_file(&r.device, &b, &b)),
        ErrorKind::WrongKey,
        "{name}"
    );
    let slot_b = c.add_key_file(&r.device, &a, &b).expect("add b");
    assert_ne!(slot_b, slot, "{name}: a new slot");
    assert_eq!(c.verify_key_file(&r.device, &b).unwrap(), slot_b, "{name}");

    // A header backup is never overwritten, and brings a destroyed header back.
    let backup = r.dir.join("header.bak");
    c.backup_header(&r.device, &backup).expect("backup");
    let saved = std::fs::read(&backup).unwrap();
    assert!(
        c.backup_header(&r.device, &backup).is_err(),
        "{name}: overwrite"
    );
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        saved,
        "{name}: backup untouched"
    );
    (r.damage)();
    assert_eq!(
        kind(c.inspect(&r.device)),
        ErrorKind::NotLuks,
        "{name}: damaged"
    );
    c.restore_header(&r.device, &backup).expect("restore");
    assert_eq!(c.inspect(&r.device).unwrap().uuid, UUID, "{name}: restored");
    assert_eq!(c.verify_key_file(&r.device, &a).unwrap(), slot, "{name}");
    assert_eq!(c.verify_key_file(&r.device, &b).unwrap(), slot_b, "{name}");

    // Mappings: an unknown one is inactive and closing it is no error.
    let map = "extbackup-conformance";
    assert_eq!(c.status(map).unwrap(), MappingStatus::Inactive, "{name}");
    assert_eq!(
        c.lock(map, LockMode::Normal).unwrap(),
        LockOutcome::NotActive,
        "{name}"
    );
    if r.activation {
        assert_eq!(
            kind(c.unlock(&r.device, &b.with_extension("x"), map)),
            ErrorKind::NotFound
        );
        // A wrong key says which kind of key was wrong, in every cause.
        let pass = crypt::Secret::new("not the recovery passphrase");
        let e = c
            .unlock_read_only(&r.device, crypt::Key::Passphrase(&pass), map)
            .unwrap_err();
        let said = chain(&e);
        assert_eq!(e.kind(), ErrorKind::WrongKey, "{name}: {said}");
        assert!(
            said.contains("the passphrase opens no keyslot") && !said.contains("key file"),
            "{name}: {said}"
        );
        let e = c
            .unlock_read_only(&r.device, crypt::Key::File(&b.with_extension("wrong")), map)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{name}: {}", chain(&e));
        std::fs::write(r.dir.join("wrong.key"), [7u8; 64]).unwrap();
        let e = c
            .unlock_read_only(&r.device, crypt::Key::File(&r.dir.join("wrong.key")), map)
            .unwrap_err();
        let said = chain(&e);
        assert_eq!(e.kind(), ErrorKind::WrongKey, "{name}: {said}");
        assert!(
            said.contains("key file") && !said.contains("passphrase"),
            "{name}: {said}"
        );
        assert_eq!(c.status(map).unwrap(), MappingStatus::Inactive, "{name}");
        let mapped = c.unlock(&r.device, &a, map).expect("unlock");
        assert!(mapped.exists(), "{name}: {}", mapped.display());
        assert!(
            matches!(c.status(map).unwrap(), MappingStatus::Active { .. }),
            "{name}"
        );
        assert_eq!(
            c.lock(map, LockMode::Normal).unwrap(),
            LockOutcome::Closed,
            "{name}"
        );
    } else {
        assert_eq!(
            kind(c.unlock(&r.device, &a, map)),
            ErrorKind::Unsupported,
            "{name}"
        );
    }
    assert_eq!(c.status(map).unwrap(), MappingStatus::Inactive, "{name}");
}

/// Zeroes the first 4 MiB of `dev` (both LUKS2 binary headers, the loopback header).
fn zero_start(dev: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all(&vec![0u8; 4 << 20]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn the_fake_keeps_the_crypt_promises() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCrypt::new();
    // The fake's devices are files (it "maps" a device to itself).
    let (device, blank) = (dir.path().join("device"), dir.path().join("blank"));
    std::fs::write(&device, b"").unwrap();
    std::fs::write(&blank, b"").unwrap();
    let damage = || fake.damage_header(&device);
    keeps_the_crypt_promises(Rig {
        crypt: &fake,
        device: device.clone(),
        blank,
        dir: dir.path().into(),
        damage: &damage,
        activation: true,
    });
}

#[test]
fn the_loopback_test_backend_keeps_the_crypt_promises() {
    if !root_or_skip_here() {
        return;
    }
    let (img, blank) = (LoopImage::blank(32), LoopImage::blank(8));
    std::env::set_var(ALLOW_ENV, "1");
    let c = LoopbackTestCrypt::with_state_dir(AllowTestBackend::Yes, img.path("state")).unwrap();
    keeps_the_crypt_promises_on(&c, &img, &blank, true);
}

#[test]
fn libcryptsetup_keeps_the_crypt_promises() {
    if !root_or_skip_here() {
        return;
    }
    libcryptsetup_suite();
}

/// The same suite where device-mapper exists: real activation included.
#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_libcryptsetup_keeps_the_crypt_promises_with_activation() {
    assert!(has_device_mapper(), "the guest kernel has device-mapper");
    libcryptsetup_suite();
}

fn libcryptsetup_suite() {
    let (img, blank) = (LoopImage::blank(32), LoopImage::blank(8));
    // Real activation needs device-mapper: in the QEMU guest, not on this host.
    keeps_the_crypt_promises_on(
        &LibcryptsetupCrypt::new(),
        &img,
        &blank,
        has_device_mapper(),
    );
}

/// The suite for a backend on loop devices: `img` formatted (and its temp folder for the
/// files), `blank` never; a header is destroyed by zeroing the start of `img`.
fn keeps_the_crypt_promises_on(
    c: &dyn Crypt,
    img: &LoopImage,
    blank: &LoopImage,
    activation: bool,
) {
    let damage = || zero_start(&img.dev);
    keeps_the_crypt_promises(Rig {
        crypt: c,
        device: img.dev.clone(),
        blank: blank.dev.clone(),
        dir: img.path(""),
        damage: &damage,
        activation,
    });
}
