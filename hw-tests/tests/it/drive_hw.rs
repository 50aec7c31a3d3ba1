//! A real USB drive through the real binary: `extbackup prepare` then `extbackup run`.
//! DESTROYS the drive named by `EXTBACKUP_TEST_DRIVE`, and only when
//! `EXTBACKUP_TEST_DRIVE_CONFIRM` repeats the same path (the hw-test task sets both only
//! with `--drive /dev/sdX --yes-destroy`). Ignored unless the `hardware` feature is on.

use hw_tests::{gate, sysfs};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The extbackup binary: `EXTBACKUP_BIN`, else target/{debug,release}/extbackup.
fn extbackup_bin() -> Option<PathBuf> {
    if let Some(p) = gate::env("EXTBACKUP_BIN") {
        return Some(PathBuf::from(p));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("extbackup"))
        .find(|p| p.is_file())
}

fn run(bin: &Path, args: &[&str]) {
    eprintln!("$ {} {}", bin.display(), args.join(" "));
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`extbackup {}` failed ({})",
        args.join(" "),
        out.status
    );
}

#[test]
#[cfg_attr(
    not(feature = "hardware"),
    ignore = "needs a USB drive to destroy: cargo xtask hw-test --drive /dev/sdX --yes-destroy"
)]
fn hw_drive_prepare_then_backup_run() {
    let Some(drive) = gate::env("EXTBACKUP_TEST_DRIVE") else {
        testkit::skip_here("no drive named: cargo xtask hw-test --drive /dev/sdX --yes-destroy");
        return;
    };
    assert_eq!(
        gate::env("EXTBACKUP_TEST_DRIVE_CONFIRM").as_deref(),
        Some(drive.as_str()),
        "EXTBACKUP_TEST_DRIVE_CONFIRM must repeat {drive} to allow destroying it"
    );
    let dev = sysfs::block_device(Path::new(&drive))
        .unwrap_or_else(|| panic!("{drive} is not a whole disk in /sys/class/block"));
    assert!(
        dev.usb,
        "{drive} ({}) is not on a USB bus; refusing to destroy it",
        dev.model
    );
    let Some(bin) = extbackup_bin() else {
        testkit::skip_here(
            "the extbackup binary is not built: cargo build -p extbackup (or set EXTBACKUP_BIN)",
        );
        return;
    };
    if !gate::is_root() {
        testkit::skip_here("needs root (cryptsetup, mount)");
        return;
    }
    prepare_then_run(&bin, Path::new(&drive));
}

/// `extbackup prepare` on `drive`, then `extbackup run` onto it, then `status`; checks the
/// copy by mounting the drive again with the key file `prepare` made.
fn prepare_then_run(bin: &Path, drive: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let drive = drive.to_str().expect("utf-8 device path");
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("sub")).expect("source tree");
    let payload = b"hello from hw-test\n";
    std::fs::write(source.join("sub/hello.txt"), payload).expect("file");
    let config = dir.path().join("config.toml");
    let keys = dir.path().join("keys");
    let mnt = dir.path().join("mnt");
    std::fs::write(
        &config,
        format!(
            "# written by hw-tests\nsource = \"{}\"\nstate_dir = \"{}\"\n\
             mount_root = \"{}\"\n[indicator]\nbackend = \"console\"\n\
             [policy]\nrequire_source_mount_point = false\n",
            source.display(),
            dir.path().join("state").display(),
            dir.path().join("mounts").display(),
        ),
    )
    .expect("config");
    let cfg = config.to_str().expect("utf-8");
    let keys_s = keys.to_str().expect("utf-8");
    let mnt_s = mnt.to_str().expect("utf-8");
    run(
        bin,
        &[
            "--config",
            cfg,
            "prepare",
            drive,
            "--name",
            "hwtest",
            "--keys-dir",
            keys_s,
            "--mount-point",
            mnt_s,
            "--yes",
            "--no-recovery-passphrase",
        ],
    );
    let written = std::fs::read_to_string(&config).expect("config after prepare");
    assert!(
        written.contains("hwtest"),
        "prepare appended the drive to the configuration:\n{written}"
    );
    run(bin, &["--config", cfg, "run", "--device", drive]);
    // The run unmounts and closes the drive; its record says it succeeded.
    run(bin, &["--config", cfg, "status"]);
    // Open the drive again with the key file prepare made: the file is there.
    let key = keys.join("hwtest.key");
    let check = dir.path().join("check");
    std::fs::create_dir(&check).expect("mkdir");
    let mapping = format!("hwtest-verify-{}", std::process::id());
    let _g = Unlocked {
        mapping: mapping.clone(),
        mountpoint: check.clone(),
    };
    sh(Command::new("cryptsetup")
        .args(["open", "--readonly", "--key-file"])
        .arg(&key)
        .args([drive, &mapping]));
    sh(Command::new("mount")
        .args(["-o", "ro"])
        .arg(format!("/dev/mapper/{mapping}"))
        .arg(&check));
    let found = find_file(&check, "hello.txt")
        .unwrap_or_else(|| panic!("no hello.txt on the drive after the run"));
    assert_eq!(std::fs::read(&found).expect("read the copy"), payload);
}

/// Unmounts and closes the verification mapping even when an assertion fails.
struct Unlocked {
    mapping: String,
    mountpoint: PathBuf,
}

impl Drop for Unlocked {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        let _ = Command::new("cryptsetup")
            .args(["close", &self.mapping])
            .status();
    }
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("starting a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) && p.is_file() {
            return Some(p);
        }
        if p.is_dir() && !p.is_symlink() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

#[test]
#[ignore = "needs dm-crypt and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_drive_prepare_then_backup_run_on_a_usb_mass_storage_gadget() {
    let Some(bin) = extbackup_bin() else {
        testkit::skip_here(
            "the extbackup binary is not built: cargo build -p extbackup (vm-test without -p builds it)",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("usb-disk.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image file");
    let disk = hw_tests::storage::UsbDisk::create("extbk_disk", &img, "TestDisk")
        .expect("the mass-storage gadget gives a /dev/sdX");
    let dev = sysfs::block_device(disk.disk()).expect("sysfs knows the disk");
    assert!(dev.usb, "{} hangs off a USB bus", disk.disk().display());
    assert!(dev.model.contains("TestDisk"), "model: {}", dev.model);
    prepare_then_run(&bin, disk.disk());
}
