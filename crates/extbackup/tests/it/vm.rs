//! The guest-only end-to-end test: real LUKS2 through libcryptsetup on a loop device.

use crate::support::{copy_on, mounted_under, read_opened_drive, zero_start, LoopDevice, World};
use crypt::{Crypt, LibcryptsetupCrypt, LockMode};
use std::fs;
use std::process::Command;

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_prepare_and_run_with_real_luks_copies_the_source() {
    let (w, lo) = World::on_blank_disk("libcryptsetup", 64);
    w.prepare(&lo.dev, "t1");
    let info = LibcryptsetupCrypt::new().inspect(&lo.dev).unwrap();
    assert_eq!(info.version, 2, "real LUKS2 header");

    let out = w.run(&lo.dev);
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
    let (w, lo) = World::on_blank_disk("libcryptsetup", 64);
    let out = w.try_prepare(&lo.dev, "t1", &["--partition", "--no-recovery-passphrase"]);
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
    let out = w.run(&part);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.drive_state("t1")["last_success"]["result"], "success");
}

#[test]
#[ignore = "needs dm-crypt and udevd: run in the QEMU guest by cargo xtask vm-test"]
fn vm_watch_backs_up_a_configured_drive_already_present_at_start() {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let (w, lo) = World::on_blank_disk("libcryptsetup", 64);
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` with `input` on its stdin; whether it succeeded.
fn with_input(cmd: &mut Command, input: &str) -> bool {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait().unwrap().success()
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_recovery_the_nas_is_gone_open_with_the_passphrase_mount_and_restore() {
    use crate::support::meta_snapshot;
    let (w, lo) = World::on_blank_disk("libcryptsetup", 48);
    std::os::unix::fs::symlink("../a.txt", w.path("src/sub/link")).unwrap();
    let dev = lo.dev.to_str().unwrap();
    w.prepare(&lo.dev, "t1");
    assert_eq!(w.run(dev).status.code(), Some(0));
    let src = meta_snapshot(&w.path("src"));
    let src_sub = meta_snapshot(&w.path("src/sub"));

    // prepare without a terminal and without a passphrase option refuses, naming them.
    let other = LoopDevice::new(&w.path("other.img"), 24);
    let out = w.cmd(&[
        "prepare",
        other.dev.to_str().unwrap(),
        "--name",
        "t2",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(
        e.contains("--recovery-passphrase-file") && e.contains("--no-recovery-passphrase"),
        "{e}"
    );

    // The NAS is gone: no key file, no configuration, no state.
    fs::remove_dir_all(w.path("keys")).unwrap();
    fs::remove_file(&w.config).unwrap();
    fs::remove_dir_all(w.path("state")).unwrap();

    // Only the cryptsetup binary and mount -o ro: the files with their metadata.
    let pass_line = format!("{}\n", World::PASSPHRASE);
    assert!(
        with_input(
            Command::new("cryptsetup")
                .args(["open", "--readonly"])
                .arg(&lo.dev)
                .arg("vm-recovery-cs"),
            &pass_line
        ),
        "cryptsetup opens the drive with the recovery passphrase"
    );
    let cs = w.path("cs");
    fs::create_dir_all(&cs).unwrap();
    crate::support::sh(
        Command::new("mount")
            .args(["-o", "ro", "/dev/mapper/vm-recovery-cs"])
            .arg(&cs),
    );
    let seen = meta_snapshot(&copy_on(&cs));
    crate::support::sh(Command::new("umount").arg(&cs));
    crate::support::sh(Command::new("cryptsetup").args(["close", "vm-recovery-cs"]));
    assert_eq!(
        seen, src,
        "the drive's copy equals the source, metadata included"
    );

    // extbackup mount --passphrase: a wrong one opens nothing.
    let mapper = std::path::Path::new("/dev/mapper/extbackup-ro-t1");
    let at = w.path("browse");
    let at_s = at.to_str().unwrap();
    let out = w.mount_with_passphrase(dev, &["--at", at_s], "not the passphrase");
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("wrong passphrase")
            && e.contains("nothing was opened")
            && e.contains("the passphrase opens no keyslot")
            && !e.contains("key file"),
        "{e}"
    );
    assert!(!mapper.exists(), "nothing opened");
    assert!(mounted_under(w.dir.path()).is_empty());
    // The right one: read-only, the same files.
    let out = w.mount_with_passphrase(dev, &["--at", at_s], World::PASSPHRASE);
    assert_eq!(out.status.code(), Some(0));
    assert!(mapper.exists());
    assert_eq!(
        crate::support::sh(Command::new("blockdev").arg("--getro").arg(mapper)).trim(),
        "1",
        "the mapping itself is read-only"
    );
    assert_eq!(meta_snapshot(&copy_on(&at)), src);

    // restore of a sub-folder (no configuration: through the browse mount).
    let to = w.path("restored");
    let out = w.cmd(&["restore", "t1", "sub", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(meta_snapshot(&to.join("sub")), src_sub);
    // Again onto the existing (one changed) files, without --overwrite: nothing changes.
    fs::write(to.join("sub/c.txt"), "edited after the restore\n").unwrap();
    let before = meta_snapshot(&to);
    let out = w.cmd(&["restore", "t1", "sub", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("would be replaced"));
    assert_eq!(meta_snapshot(&to), before, "nothing changed");

    assert_eq!(w.cmd(&["unmount", "t1"]).status.code(), Some(0));
    assert!(!mapper.exists(), "closed");
    assert!(mounted_under(w.dir.path()).is_empty(), "unmounted");
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_recovery_verify_finds_a_silent_change_and_a_zeroed_header_comes_back() {
    use crate::support::flip_one_byte_keeping_mtime;
    let w = World::new("libcryptsetup");
    let (l1, l2) = w.two_drives_backed_up(40);
    let (d1, d2) = (l1.dev.to_str().unwrap(), l2.dev.to_str().unwrap());

    // verify: clean; then one byte changed on the drive, size and mtime kept: exit 1, named.
    let out = w.cmd(&["verify", "t1", "--device", d1, "--full"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("no differences"));
    let c = LibcryptsetupCrypt::new();
    let mapped = c
        .unlock(&l1.dev, &w.path("keys/t1.key"), "vm-recovery-rw")
        .unwrap();
    let rw = w.path("rw");
    fs::create_dir_all(&rw).unwrap();
    crate::support::sh(Command::new("mount").arg(&mapped).arg(&rw));
    flip_one_byte_keeping_mtime(&copy_on(&rw).join("sub/b.bin"), 4321);
    crate::support::sh(Command::new("umount").arg(&rw));
    c.lock("vm-recovery-rw", LockMode::Normal).unwrap();
    let out = w.cmd(&["verify", "t1", "--device", d1, "--full"]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(s.contains("differs in content (SHA-256): sub/b.bin"), "{s}");
    assert!(s.contains("1 difference(s)"), "{s}");

    // The kit, and t1's header as the run of t2 stored it on drive t2.
    let kit = w.path("kit");
    let out = w.recovery_kit("t1", d1, &kit, &[]);
    assert_eq!(out.status.code(), Some(0));
    let b2 = w.path("b2");
    let out = w.cmd(&["mount", "t2", "--device", d2, "--at", b2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let from_t2 = w.path("t1-from-t2.img");
    fs::copy(b2.join(".extbackup/headers/t1.img"), &from_t2).unwrap();
    assert_eq!(w.cmd(&["unmount", "t2"]).status.code(), Some(0));

    let pass_line = format!("{}\n", World::PASSPHRASE);
    let opens = || {
        with_input(
            Command::new("cryptsetup")
                .args(["open", "--test-passphrase"])
                .arg(&l1.dev)
                .stderr(std::process::Stdio::null()),
            &pass_line,
        )
    };
    assert!(opens());
    for backup in [kit.join("t1.luks-header"), from_t2] {
        // Zero the whole LUKS2 header area (16 MiB: both headers and the keyslots).
        zero_start(&l1.dev, 16 << 20);
        assert!(!opens(), "a zeroed header opens nothing");
        crate::support::sh(
            Command::new("cryptsetup")
                .args(["luksHeaderRestore", "--batch-mode"])
                .arg(&l1.dev)
                .arg("--header-backup-file")
                .arg(&backup),
        );
        assert!(opens(), "opens again after restoring {}", backup.display());
    }
}
