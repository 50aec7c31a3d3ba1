//! `LibcryptsetupCrypt` on loop devices: everything but activation works without
//! device-mapper.

use crate::support::*;
use crypt::{Crypt, ErrorKind, FormatOptions, LibcryptsetupCrypt, Secret};
use std::path::{Path, PathBuf};

fn opts(key: &Path) -> FormatOptions {
    FormatOptions {
        key_file: key.to_path_buf(),
        passphrase: None,
        label: Some("offsite-a".into()),
        uuid: Some("0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9".into()),
        fast_pbkdf_for_tests: true,
    }
}

/// A 32 MiB loop device formatted by `LibcryptsetupCrypt` with `opts` and the random key
/// file `key`.
struct Formatted {
    img: LoopImage,
    key: PathBuf,
    c: LibcryptsetupCrypt,
}

/// The [`Formatted`] device for the running test, or `None` (the test skips) when not root.
/// Called on the test's own thread (it names the test).
fn formatted() -> Option<Formatted> {
    if !root_or_skip_here() {
        return None;
    }
    let img = LoopImage::blank(32);
    let key = img.key("key", &random_key());
    let c = LibcryptsetupCrypt::new();
    c.format(&img.dev, &opts(&key)).expect("format");
    Some(Formatted { img, key, c })
}

/// What stock `cryptsetup luksDump` says about `dev`.
fn luks_dump(dev: &Path) -> String {
    sh(std::process::Command::new("cryptsetup")
        .arg("luksDump")
        .arg(dev))
}

#[test]
fn format_then_inspect_shows_luks2_uuid_label_and_slot() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(32);
    let key = img.key("key", &random_key());
    let c = LibcryptsetupCrypt::new();
    let made = c.format(&img.dev, &opts(&key)).expect("format");
    let seen = c.inspect(&img.dev).expect("inspect");
    assert_eq!(made, seen);
    assert_eq!(seen.version, 2);
    assert_eq!(seen.uuid, "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9");
    assert_eq!(seen.label.as_deref(), Some("offsite-a"));
    assert_eq!(seen.cipher, "aes-xts-plain64");
    assert_eq!(seen.keyslots, vec![0]);
    // cryptsetup itself agrees, and the key-file slot uses pbkdf2.
    let dump = luks_dump(&img.dev);
    assert!(
        dump.contains("0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"),
        "{dump}"
    );
    assert!(dump.contains("pbkdf2"), "{dump}");
    assert!(dump.contains("512 bits"), "{dump}");
}

#[test]
fn verify_accepts_the_right_key_and_refuses_a_wrong_one() {
    let Some(Formatted { img, key, c }) = formatted() else {
        return;
    };
    let wrong = img.key("wrong", &random_key());
    assert_eq!(c.verify_key_file(&img.dev, &key).expect("right key"), 0);
    let e = c.verify_key_file(&img.dev, &wrong).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e:#}");
    // cryptsetup opens it with the same key file (same bytes, same meaning).
    sh(std::process::Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file"])
        .arg(&key)
        .arg(&img.dev));
}

#[test]
fn passphrase_slot_uses_argon2id_and_works() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(32);
    let key = img.key("key", &random_key());
    let c = LibcryptsetupCrypt::new();
    let mut o = opts(&key);
    o.passphrase = Some(Secret::new("correct horse battery staple"));
    let info = c.format(&img.dev, &o).expect("format");
    assert_eq!(info.keyslots, vec![0, 1]);
    let pass = img.key("pass", b"correct horse battery staple");
    assert_eq!(c.verify_key_file(&img.dev, &pass).expect("passphrase"), 1);
    let dump = luks_dump(&img.dev);
    assert!(dump.contains("argon2id"), "{dump}");
}

#[test]
fn add_key_file_needs_an_existing_key_and_adds_a_slot() {
    let Some(Formatted { img, key, c }) = formatted() else {
        return;
    };
    let second = img.key("second", &random_key());
    let wrong = img.key("wrong", &random_key());
    let e = c.add_key_file(&img.dev, &wrong, &second).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e:#}");
    let slot = c.add_key_file(&img.dev, &key, &second).expect("add key");
    assert_eq!(slot, 1);
    assert_eq!(c.verify_key_file(&img.dev, &second).expect("second key"), 1);
    assert_eq!(c.inspect(&img.dev).unwrap().keyslots, vec![0, 1]);
}

#[test]
fn header_backup_restores_a_corrupted_header() {
    let Some(Formatted { img, key, c }) = formatted() else {
        return;
    };
    let backup = img.path("header.bak");
    c.backup_header(&img.dev, &backup).expect("backup");
    // A second backup to the same file is refused (never overwrite a backup).
    assert_eq!(
        c.backup_header(&img.dev, &backup).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // Wipe both LUKS2 header copies (primary at 0, secondary at 16 KiB).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&img.dev)
            .unwrap();
        f.write_all(&vec![0u8; 64 * 1024]).unwrap();
        f.sync_all().unwrap();
    }
    let e = c.verify_key_file(&img.dev, &key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLuks, "{e:#}");
    c.restore_header(&img.dev, &backup).expect("restore");
    assert_eq!(
        c.verify_key_file(&img.dev, &key)
            .expect("key after restore"),
        0
    );
    assert_eq!(
        c.inspect(&img.dev).unwrap().uuid,
        "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
    );
}

#[test]
fn a_plain_device_is_not_luks() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(8);
    let e = LibcryptsetupCrypt::new().inspect(&img.dev).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLuks, "{e:#}");
    assert!(e.to_string().contains("no LUKS header"), "{e}");
}

#[test]
fn empty_and_missing_key_files_are_refused() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(32);
    let empty = img.key("empty", b"");
    let c = LibcryptsetupCrypt::new();
    let e = c.format(&img.dev, &opts(&empty)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:#}");
    let e = c.format(&img.dev, &opts(&img.path("nope"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:#}");
    // Nothing was written.
    assert_eq!(c.inspect(&img.dev).unwrap_err().kind(), ErrorKind::NotLuks);
}

/// On a kernel without device-mapper (this host) unlock is `Unsupported` naming dm-crypt;
/// on one with it (the guest) the same call activates the mapping for real. Either way the
/// test asserts something: it never skips.
#[test]
fn unlock_activates_or_says_dm_crypt_is_missing() {
    let Some(Formatted { img, key, c }) = formatted() else {
        return;
    };
    let has_dm = has_device_mapper();
    let name = "extbackup-test-unlock";
    if has_dm {
        let mapped = c.unlock(&img.dev, &key, name).expect("real activation");
        assert!(mapped.exists(), "{}", mapped.display());
        assert!(matches!(
            c.status(name).unwrap(),
            crypt::MappingStatus::Active { .. }
        ));
        c.lock(name, crypt::LockMode::Normal).unwrap();
    } else {
        let e = c.unlock(&img.dev, &key, name).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:#}");
        assert!(e.to_string().contains("dm-crypt"), "{e}");
    }
    assert_eq!(c.status(name).unwrap(), crypt::MappingStatus::Inactive);
}

#[test]
fn format_refuses_a_mounted_device() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(32);
    let key = img.key("key", &random_key());
    mkfs_ext4(&img.dev, &[]);
    let mnt = img.path("mnt");
    let guard = mount_at(&img.dev, &mnt);
    let e = LibcryptsetupCrypt::new()
        .format(&img.dev, &opts(&key))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e:#}");
    assert!(e.to_string().contains("in use"), "{e}");
    drop(guard);
    // The filesystem is untouched.
    let ty = sh(std::process::Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(&img.dev));
    assert_eq!(ty.trim(), "ext4");
}

#[test]
fn add_passphrase_makes_an_argon2id_slot_that_stock_cryptsetup_opens() {
    let Some(Formatted { img, key, c }) = formatted() else {
        return;
    };
    use crypt::PassphraseKdf;
    let wrong = img.key("wrong", &random_key());
    let pass = Secret::new("abcd-efgh-ijkl-mnop");
    let e = c
        .add_passphrase(&img.dev, &wrong, &pass, PassphraseKdf::CheapForTests)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e:#}");
    assert!(
        !format!("{e:?} {e:#}").contains("abcd-efgh"),
        "no secret in errors"
    );
    let slot = c
        .add_passphrase(&img.dev, &key, &pass, PassphraseKdf::CheapForTests)
        .expect("add passphrase");
    assert_eq!(slot, 1);
    assert_eq!(c.inspect(&img.dev).unwrap().keyslots, vec![0, 1]);
    let dump = luks_dump(&img.dev);
    let slot1 = &dump[dump.find("  1: luks2").expect("slot 1 in the dump")..];
    assert!(slot1.contains("argon2id"), "{dump}");
    assert!(
        dump[..dump.find("  1: luks2").unwrap()].contains("pbkdf2"),
        "{dump}"
    );
    // The stock tool opens it with the passphrase typed on its stdin, and refuses another.
    let test = |p: &str| {
        let mut child = std::process::Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-slot", "1"])
            .arg(&img.dev)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{p}").unwrap();
        child.wait().unwrap().success()
    };
    assert!(test("abcd-efgh-ijkl-mnop"));
    assert!(!test("abcd-efgh-ijkl-mnoq"));
    // Read-only activation needs device-mapper, which the host lacks: Unsupported, not a
    // verdict on the passphrase.
    let e = c
        .unlock_read_only(&img.dev, crypt::Key::Passphrase(&pass), "extbackup-ro-host")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:#}");
}
