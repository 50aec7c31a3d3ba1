//! The guest-only end-to-end test: real LUKS2 through libcryptsetup on a loop device.

use crate::support::{mounted_under, read_opened_drive, LoopDevice, World};
use crypt::{Crypt, LibcryptsetupCrypt, LockMode};
use std::fs;
use std::process::Command;

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_prepare_and_run_with_real_luks_copies_the_source() {
    let w = World::new("libcryptsetup");
    let lo = LoopDevice::new(&w.path("disk.img"), 64);
    w.prepare(&lo.dev, "t1");
    let info = LibcryptsetupCrypt::new().inspect(&lo.dev).unwrap();
    assert_eq!(info.version, 2, "real LUKS2 header");

    let out = w.cmd(&["run", "--device", lo.dev.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let st = w.drive_state("t1");
    assert_eq!(st["last_success"]["result"], "success");
    assert!(
        mounted_under(w.dir.path()).is_empty(),
        "nothing left mounted"
    );

    // Open it again independently and compare.
    let c = LibcryptsetupCrypt::new();
    let mapped = c
        .unlock(&lo.dev, &w.path("keys/t1.key"), "extbackup-vm-check")
        .unwrap();
    let (snap, _) = read_opened_drive(&mapped, &w.path("check"));
    c.lock("extbackup-vm-check", LockMode::Normal).unwrap();
    assert_eq!(snap, w.source_snapshot(), "the drive mirrors the source");
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_prepare_with_partition_puts_luks_on_the_partition_and_runs() {
    let w = World::new("libcryptsetup");
    let lo = LoopDevice::new(&w.path("disk.img"), 64);
    let out = w.cmd(&[
        "prepare",
        lo.dev.to_str().unwrap(),
        "--name",
        "t1",
        "--partition",
        "--yes",
        "--keys-dir",
        w.path("keys").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let part = format!("{}p1", lo.dev.display());
    let info = LibcryptsetupCrypt::new()
        .inspect(std::path::Path::new(&part))
        .unwrap();
    let cfg = fs::read_to_string(&w.config).unwrap();
    assert!(
        cfg.contains(&info.uuid),
        "the partition's UUID is configured: {cfg}"
    );
    let out = w.cmd(&["run", "--device", &part]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.drive_state("t1")["last_success"]["result"], "success");
}

#[test]
#[ignore = "needs dm-crypt and udevd: run in the QEMU guest by cargo xtask vm-test"]
fn vm_watch_backs_up_a_configured_drive_already_present_at_start() {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let w = World::new("libcryptsetup");
    let lo = LoopDevice::new(&w.path("disk.img"), 64);
    w.prepare(&lo.dev, "t1");
    // Let udev probe the new LUKS header (ID_FS_TYPE=crypto_LUKS) before watching.
    let _ = Command::new("udevadm")
        .args(["trigger", "--settle", "--action=change"])
        .arg(&lo.dev)
        .status();
    let _ = Command::new("udevadm").arg("settle").status();
    let mut watch = Command::new(env!("CARGO_BIN_EXE_extbackup"))
        .arg("--config")
        .arg(&w.config)
        .arg("watch")
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = w.path("state/drives/t1.json");
    let t0 = Instant::now();
    while !state.exists() && t0.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(200));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = watch.wait().unwrap();
    assert!(
        state.exists(),
        "watch ran the backup for the drive present at start"
    );
    assert_eq!(w.drive_state("t1")["last_success"]["result"], "success");
    assert_eq!(st.code(), Some(0), "watch stops cleanly on SIGTERM");
}
