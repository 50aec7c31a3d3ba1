//! `LoopbackTestCrypt` round trips on loop devices, and its refusals.

use crate::support::*;
use crypt::{
    AllowTestBackend, Crypt, ErrorKind, FormatOptions, LockMode, LockOutcome, LoopbackTestCrypt,
    MappingStatus, ALLOW_ENV,
};
use std::path::Path;
use std::process::Command;

fn backend(state: &Path) -> LoopbackTestCrypt {
    std::env::set_var(ALLOW_ENV, "1");
    LoopbackTestCrypt::with_state_dir(AllowTestBackend::Yes, state).expect("enabled backend")
}

fn opts(key: &Path) -> FormatOptions {
    FormatOptions {
        key_file: key.to_path_buf(),
        passphrase: None,
        label: Some("demo".into()),
        uuid: None,
        fast_pbkdf_for_tests: true,
    }
}

fn loop_attached(dev: &Path) -> bool {
    let name = dev.file_name().unwrap().to_string_lossy().into_owned();
    Path::new("/sys/block")
        .join(name)
        .join("loop/backing_file")
        .exists()
}

#[test]
fn loopback_round_trip_format_unlock_mkfs_mount_write_lock() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(64);
    let key = img.key("key", &random_key());
    let c = backend(&img.path("state"));
    let info = c.format(&img.dev, &opts(&key)).expect("format");
    assert_eq!(c.inspect(&img.dev).expect("inspect"), info);
    assert_eq!(info.label.as_deref(), Some("demo"));

    let mapped = c
        .unlock(&img.dev, &key, "extbackup-lbt-rt")
        .expect("unlock");
    assert!(
        mapped.to_string_lossy().starts_with("/dev/loop"),
        "{mapped:?}"
    );
    match c.status("extbackup-lbt-rt").unwrap() {
        MappingStatus::Active { path, busy, .. } => {
            assert_eq!(path, mapped);
            assert!(!busy);
        }
        other => panic!("expected active, got {other:?}"),
    }
    mkfs_ext4(&mapped, &[]);
    let mnt = img.path("mnt");
    let guard = mount_at(&mapped, &mnt);
    std::fs::write(mnt.join("hello.txt"), b"kept across lock/unlock").unwrap();
    guard.unmount();
    assert_eq!(
        c.lock("extbackup-lbt-rt", LockMode::Normal).unwrap(),
        LockOutcome::Closed
    );
    assert!(!loop_attached(&mapped));
    assert_eq!(
        c.status("extbackup-lbt-rt").unwrap(),
        MappingStatus::Inactive
    );
    assert_eq!(
        c.lock("extbackup-lbt-rt", LockMode::Normal).unwrap(),
        LockOutcome::NotActive
    );
    // mkfs on the mapped device did not touch the header; the data is still there.
    assert_eq!(c.verify_key_file(&img.dev, &key).unwrap(), 0);
    let mapped = c
        .unlock(&img.dev, &key, "extbackup-lbt-rt")
        .expect("unlock again");
    let guard = mount_at(&mapped, &mnt);
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"kept across lock/unlock"
    );
    guard.unmount();
    assert_eq!(
        c.lock("extbackup-lbt-rt", LockMode::Normal).unwrap(),
        LockOutcome::Closed
    );
}

#[test]
fn loopback_busy_lock_normal_fails_deferred_goes_on_unmount() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(64);
    let key = img.key("key", &random_key());
    let c = backend(&img.path("state"));
    c.format(&img.dev, &opts(&key)).expect("format");
    let mapped = c
        .unlock(&img.dev, &key, "extbackup-lbt-busy")
        .expect("unlock");
    mkfs_ext4(&mapped, &[]);
    let mnt = img.path("mnt");
    let guard = mount_at(&mapped, &mnt);
    assert!(matches!(
        c.status("extbackup-lbt-busy").unwrap(),
        MappingStatus::Active { busy: true, .. }
    ));
    let e = c.lock("extbackup-lbt-busy", LockMode::Normal).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e:#}");
    assert!(loop_attached(&mapped));
    assert_eq!(
        c.lock("extbackup-lbt-busy", LockMode::Deferred).unwrap(),
        LockOutcome::Deferred
    );
    assert!(loop_attached(&mapped), "still there while mounted");
    guard.unmount();
    let mut gone = false;
    for _ in 0..50 {
        if !loop_attached(&mapped) {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        gone,
        "{} should be auto-cleared after unmount",
        mapped.display()
    );
}

#[test]
fn loopback_wrong_key_is_refused() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(8);
    let key = img.key("key", &random_key());
    let wrong = img.key("wrong", &random_key());
    let c = backend(&img.path("state"));
    c.format(&img.dev, &opts(&key)).expect("format");
    assert_eq!(
        c.verify_key_file(&img.dev, &wrong).unwrap_err().kind(),
        ErrorKind::WrongKey
    );
    let e = c
        .unlock(&img.dev, &wrong, "extbackup-lbt-wrong")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e:#}");
    assert_eq!(
        c.status("extbackup-lbt-wrong").unwrap(),
        MappingStatus::Inactive
    );
    // A second key file works once added with the first.
    let second = img.key("second", &random_key());
    assert_eq!(c.add_key_file(&img.dev, &key, &second).unwrap(), 1);
    assert_eq!(c.verify_key_file(&img.dev, &second).unwrap(), 1);
}

#[test]
fn loopback_header_backup_and_restore() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(8);
    let key = img.key("key", &random_key());
    let c = backend(&img.path("state"));
    c.format(&img.dev, &opts(&key)).expect("format");
    let bak = img.path("hdr.bak");
    c.backup_header(&img.dev, &bak).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img.dev)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[0u8; 4096]))
        .unwrap();
    assert_eq!(c.inspect(&img.dev).unwrap_err().kind(), ErrorKind::NotLuks);
    c.restore_header(&img.dev, &bak).unwrap();
    assert_eq!(c.verify_key_file(&img.dev, &key).unwrap(), 0);
}

#[test]
fn loopback_refuses_devices_that_are_not_loop_devices() {
    let dir = tempfile::tempdir().unwrap();
    let c = backend(&dir.path().join("state"));
    let key = dir.path().join("key");
    std::fs::write(&key, random_key()).unwrap();
    let e = c.format(Path::new("/dev/null"), &opts(&key)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e:#}");
    assert!(e.to_string().contains("NO encryption"), "{e}");
    let e = c.inspect(Path::new("/dev/zero")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e:#}");
}

#[test]
fn loopback_refused_without_the_environment_variable() {
    const CHILD: &str = "EXTBACKUP_TEST_LOOPBACK_ENV_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let dir = tempfile::tempdir().unwrap();
        let e = LoopbackTestCrypt::with_state_dir(AllowTestBackend::Yes, dir.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains(ALLOW_ENV), "{e}");
        return;
    }
    // Other tests set the variable in this process: check in a child without it.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "loopback::loopback_refused_without_the_environment_variable",
            "--exact",
            "--test-threads=1",
        ])
        .env_remove(ALLOW_ENV)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    assert!(stdout.contains("1 passed"), "child ran no test: {stdout}");
}

#[test]
fn loopback_says_not_luks_for_a_real_luks_header() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("luks.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(32 * 1024 * 1024))
        .unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, random_key()).unwrap();
    crypt::LibcryptsetupCrypt::new()
        .format(&img, &opts(&key))
        .expect("real LUKS2 on an image file");
    let c = backend(&dir.path().join("state"));
    let e = c.inspect(&img).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLuks, "{e:#}");
    assert!(e.to_string().contains("real LUKS header"), "{e}");
    assert_eq!(
        c.verify_key_file(&img, &key).unwrap_err().kind(),
        ErrorKind::NotLuks
    );
}

#[test]
fn loopback_passphrase_slot_unlocks_read_only_and_a_wrong_one_opens_nothing() {
    if !root_or_skip_here() {
        return;
    }
    use crypt::{Key, PassphraseKdf, Secret};
    let img = LoopImage::blank(16);
    let key = img.key("key", &random_key());
    let c = backend(&img.path("state"));
    c.format(&img.dev, &opts(&key)).expect("format");
    let pass = Secret::new("correct horse battery staple");
    assert_eq!(
        c.add_passphrase(&img.dev, &key, &pass, PassphraseKdf::Default)
            .expect("add"),
        1
    );
    let wrong = Secret::new("incorrect horse");
    let e = c
        .unlock_read_only(&img.dev, Key::Passphrase(&wrong), "extbackup-lbt-ro")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e:#}");
    assert!(e.to_string().contains("passphrase"), "{e}");
    assert_eq!(
        c.status("extbackup-lbt-ro").unwrap(),
        MappingStatus::Inactive,
        "a wrong passphrase opens nothing"
    );
    let mapped = c
        .unlock_read_only(&img.dev, Key::Passphrase(&pass), "extbackup-lbt-ro")
        .expect("passphrase opens");
    let ro = sh(Command::new("blockdev").arg("--getro").arg(&mapped));
    let _ = c.lock("extbackup-lbt-ro", LockMode::Normal);
    assert_eq!(ro.trim(), "1", "the mapping is read-only");
    let mapped = c
        .unlock_read_only(&img.dev, Key::File(&key), "extbackup-lbt-ro")
        .expect("key file opens");
    assert!(loop_attached(&mapped));
    assert_eq!(
        c.lock("extbackup-lbt-ro", LockMode::Normal).unwrap(),
        LockOutcome::Closed
    );
}
