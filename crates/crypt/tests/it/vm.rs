//! Real dm-crypt activation: these run only in the QEMU guest (`cargo xtask vm-test`),
//! where the kernel has device-mapper and dm-crypt. They make everything they need
//! themselves, under the (writable) temp folder.

use crate::support::*;
use crypt::{
    Crypt, ErrorKind, FormatOptions, LibcryptsetupCrypt, LockMode, LockOutcome, MappingStatus,
};
use std::path::Path;
use std::process::Command;

fn formatted(mib: u64) -> (LoopImage, std::path::PathBuf, LibcryptsetupCrypt) {
    let img = LoopImage::blank(mib);
    let key = img.key("key", &random_key());
    let c = LibcryptsetupCrypt::new();
    c.format(
        &img.dev,
        &FormatOptions {
            key_file: key.clone(),
            passphrase: None,
            label: None,
            uuid: None,
            fast_pbkdf_for_tests: true,
        },
    )
    .expect("format");
    (img, key, c)
}

/// Closes the mapping whatever happens to the test.
struct MappingGuard<'a>(&'a LibcryptsetupCrypt, &'static str);

impl Drop for MappingGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.lock(self.1, LockMode::Force);
    }
}

fn wait_inactive(c: &LibcryptsetupCrypt, name: &str) -> bool {
    for _ in 0..50 {
        if c.status(name).unwrap() == MappingStatus::Inactive {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_unlock_mkfs_mount_write_read_unmount_lock() {
    let (img, key, c) = formatted(64);
    let name = "extbackup-vm-rt";
    let mapped = c.unlock(&img.dev, &key, name).expect("unlock");
    let _g = MappingGuard(&c, name);
    assert_eq!(mapped, Path::new("/dev/mapper").join(name));
    match c.status(name).unwrap() {
        MappingStatus::Active {
            path,
            busy,
            backing,
        } => {
            assert_eq!(path, mapped);
            assert!(!busy);
            assert_eq!(backing.as_deref(), Some(img.dev.as_path()));
        }
        other => panic!("expected active, got {other:?}"),
    }
    mkfs_ext4(&mapped, &[]);
    let mnt = img.path("mnt");
    let mg = mount_at(&mapped, &mnt);
    std::fs::write(mnt.join("f"), b"through dm-crypt").unwrap();
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"through dm-crypt");
    mg.unmount();
    assert_eq!(c.lock(name, LockMode::Normal).unwrap(), LockOutcome::Closed);
    assert_eq!(c.status(name).unwrap(), MappingStatus::Inactive);
    // The plaintext is not on the backing image.
    assert!(!file_contains(&img.image, "through dm-crypt"));
    // And it is back after a second unlock.
    let mapped = c.unlock(&img.dev, &key, name).expect("unlock again");
    let mg = mount_at(&mapped, &mnt);
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"through dm-crypt");
    mg.unmount();
    assert_eq!(c.lock(name, LockMode::Normal).unwrap(), LockOutcome::Closed);
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_unlock_with_wrong_key_is_refused() {
    let (img, _key, c) = formatted(32);
    let wrong = img.key("wrong", &random_key());
    let name = "extbackup-vm-wrong";
    let _g = MappingGuard(&c, name);
    let e = c.unlock(&img.dev, &wrong, name).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e:#}");
    assert_eq!(c.status(name).unwrap(), MappingStatus::Inactive);
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_lock_while_mounted_normal_is_busy_deferred_goes_on_unmount() {
    let (img, key, c) = formatted(64);
    let name = "extbackup-vm-busy";
    let mapped = c.unlock(&img.dev, &key, name).expect("unlock");
    let _g = MappingGuard(&c, name);
    mkfs_ext4(&mapped, &[]);
    let mnt = img.path("mnt");
    let mg = mount_at(&mapped, &mnt);
    assert!(matches!(
        c.status(name).unwrap(),
        MappingStatus::Active { busy: true, .. }
    ));
    let e = c.lock(name, LockMode::Normal).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e:#}");
    assert_eq!(
        c.lock(name, LockMode::Deferred).unwrap(),
        LockOutcome::Deferred
    );
    assert!(matches!(
        c.status(name).unwrap(),
        MappingStatus::Active { .. }
    ));
    mg.unmount();
    assert!(
        wait_inactive(&c, name),
        "mapping should go after the unmount"
    );
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_force_lock_after_backing_device_was_detached() {
    let (img, key, c) = formatted(32);
    let name = "extbackup-vm-gone";
    c.unlock(&img.dev, &key, name).expect("unlock");
    let _g = MappingGuard(&c, name);
    // "Pull the drive": detach the loop device under the mapping (autoclear while held).
    detach(&img.dev);
    assert_eq!(c.lock(name, LockMode::Force).unwrap(), LockOutcome::Closed);
    assert!(wait_inactive(&c, name));
    assert_eq!(
        c.lock(name, LockMode::Force).unwrap(),
        LockOutcome::NotActive
    );
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_force_lock_while_mounted_is_deferred_and_goes_on_unmount() {
    let (img, key, c) = formatted(64);
    let name = "extbackup-vm-force";
    let mapped = c.unlock(&img.dev, &key, name).expect("unlock");
    let _g = MappingGuard(&c, name);
    mkfs_ext4(&mapped, &[]);
    let mnt = img.path("mnt");
    let mg = mount_at(&mapped, &mnt);
    // Still held by the mount: the table is replaced by an error target, and the mapping
    // is removed when the last user goes.
    assert_eq!(
        c.lock(name, LockMode::Force).unwrap(),
        LockOutcome::Deferred
    );
    let _ = Command::new("umount").arg(&mnt).status();
    drop(mg);
    assert!(
        wait_inactive(&c, name),
        "mapping should go after the unmount"
    );
}
