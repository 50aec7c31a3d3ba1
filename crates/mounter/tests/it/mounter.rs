//! fsck, mount, unmount and mounted_at on real ext4 on loop devices.

use crate::support::*;
use mounter::{ErrorKind, MountOptions, Mounter, NixMounter};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn fsck_on_a_clean_ext4_reports_clean() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::ext4(16);
    let r = NixMounter::new().fsck(&img.dev).expect("fsck");
    assert_eq!(r.exit_code, 0);
    assert!(!r.fixed);
    assert!(r.output.contains("clean"), "{}", r.output);
}

#[test]
fn fsck_fixes_a_damaged_ext4_and_says_so() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::ext4(16);
    // A wrong link count on lost+found, and the "not cleanly unmounted" state so that
    // preen mode really checks: fixable by -p.
    sh(Command::new("debugfs")
        .args(["-w", "-R", "sif <11> links_count 5"])
        .arg(&img.dev));
    sh(Command::new("debugfs")
        .args(["-w", "-R", "ssv state 0"])
        .arg(&img.dev));
    let m = NixMounter::new();
    let r = m.fsck(&img.dev).expect("fsck fixes it");
    assert_eq!(r.exit_code, 1);
    assert!(r.fixed);
    assert!(r.output.contains("FIXED"), "{}", r.output);
    // Now clean.
    assert!(!m.fsck(&img.dev).expect("second fsck").fixed);
}

#[test]
fn fsck_on_damage_preen_cannot_fix_fails_with_the_output() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::ext4(16);
    sh(Command::new("debugfs")
        .args(["-w", "-R", "clri <2>"])
        .arg(&img.dev));
    sh(Command::new("debugfs")
        .args(["-w", "-R", "ssv state 0"])
        .arg(&img.dev));
    let e = NixMounter::new().fsck(&img.dev).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FsckFailed, "{e:?}");
    assert!(format!("{e:?}").contains("Root inode"), "{e:?}");
}

#[test]
fn a_garbage_device_has_an_unknown_filesystem() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::blank(8);
    let m = NixMounter::new();
    assert_eq!(
        m.fsck(&img.dev).unwrap_err().kind(),
        ErrorKind::UnknownFilesystem
    );
    let e = m
        .mount(&img.dev, &img.path("mnt"), &MountOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownFilesystem, "{e:?}");
}

#[test]
fn mount_with_defaults_creates_a_0700_mountpoint_and_sets_nodev_nosuid_noexec() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::ext4(16);
    let mnt = img.path("backup/drive a"); // a space: escaped as \040 in mountinfo
    let m = NixMounter::new();
    let info = m
        .mount(&img.dev, &mnt, &MountOptions::default())
        .expect("mount");
    assert_eq!(info.fstype, "ext4");
    assert_eq!(info.target, mnt);
    assert_eq!(info.source, img.dev);
    let mode = std::fs::metadata(img.path("backup"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "created parent: {mode:o}");
    let e = entry(&mnt).expect("in mountinfo");
    for o in ["nodev", "nosuid", "noexec", "noatime"] {
        assert!(e.has_option(o), "{o} missing: {:?}", e.mount_options);
    }
    assert!(e.has_option("rw"));
    assert_eq!(m.mounted_at(&mnt).unwrap(), Some(info.clone()));
    // Mounting again there, or the same device elsewhere, is refused.
    let again = m
        .mount(&img.dev, &mnt, &MountOptions::default())
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyMounted);
    let elsewhere = m
        .mount(&img.dev, &img.path("other"), &MountOptions::default())
        .unwrap_err();
    assert_eq!(elsewhere.kind(), ErrorKind::AlreadyMounted);
    std::fs::write(mnt.join("f"), b"x").unwrap();
    let r = m.unmount(&mnt).expect("unmount");
    assert_eq!((r.attempts, r.lazy), (1, false));
    assert_eq!(m.mounted_at(&mnt).unwrap(), None);
    assert_eq!(m.unmount(&mnt).unwrap_err().kind(), ErrorKind::NotMounted);
}

#[test]
fn mount_point_created_has_mode_0700_and_options_apply() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::ext4(16);
    let mnt = img.path("m");
    let m = NixMounter::new();
    let opts = MountOptions {
        fstype: Some("ext4".into()),
        options: vec!["ro".into(), "nosuid".into(), "errors=remount-ro".into()],
    };
    m.mount(&img.dev, &mnt, &opts).expect("mount ro");
    let e = entry(&mnt).expect("mounted");
    assert!(e.has_option("ro"), "{:?}", e.mount_options);
    assert!(e.has_option("nosuid"));
    assert!(!e.has_option("noexec"));
    assert!(
        e.super_options.iter().any(|o| o == "errors=remount-ro"),
        "{:?}",
        e.super_options
    );
    m.unmount(&mnt).unwrap();
    let mode = std::fs::metadata(&mnt).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

#[test]
fn busy_unmount_retries_then_fails_when_lazy_is_off() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::ext4(16);
    let mnt = img.path("mnt");
    let m = NixMounter::new()
        .with_retries(3, Duration::from_millis(10))
        .with_lazy_fallback(false);
    m.mount(&img.dev, &mnt, &MountOptions::default()).unwrap();
    let held = std::fs::File::create(mnt.join("held")).unwrap();
    let e = m.unmount(&mnt).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("after 3 unmount attempts"), "{msg}");
    assert!(msg.contains("this process"), "names the holder: {msg}");
    assert!(m.mounted_at(&mnt).unwrap().is_some(), "still mounted");
    drop(held);
    let r = m.unmount(&mnt).expect("unmount once released");
    assert!(!r.lazy);
}

#[test]
fn busy_unmount_falls_back_to_lazy_and_reports_it() {
    if !root_or_skip_here() {
        return;
    }
    let img = LoopImage::ext4(16);
    let mnt = img.path("mnt");
    let m = NixMounter::new().with_retries(2, Duration::from_millis(10));
    m.mount(&img.dev, &mnt, &MountOptions::default()).unwrap();
    let mut held = std::fs::File::create(mnt.join("held")).unwrap();
    let r = m.unmount(&mnt).expect("lazy unmount");
    assert!(r.lazy);
    assert_eq!(r.attempts, 3);
    assert_eq!(m.mounted_at(&mnt).unwrap(), None, "detached from the tree");
    // The open file still works until closed.
    std::io::Write::write_all(&mut held, b"still writable").unwrap();
    drop(held);
}

#[test]
fn missing_device_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let m = NixMounter::new();
    let e = m
        .mount(
            &dir.path().join("nodev"),
            &dir.path().join("m"),
            &MountOptions::default(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        m.fsck(&dir.path().join("nodev")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
