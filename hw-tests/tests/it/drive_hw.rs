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
    let test = "hw_drive_prepare_then_backup_run";
    let Some(drive) = gate::env("EXTBACKUP_TEST_DRIVE") else {
        gate::skip(
            test,
            "no drive named: cargo xtask hw-test --drive /dev/sdX --yes-destroy",
        );
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
        gate::skip(
            test,
            "the extbackup binary is not built: cargo build -p extbackup (or set EXTBACKUP_BIN)",
        );
        return;
    };
    if !gate::is_root() {
        gate::skip(test, "needs root (cryptsetup, mount)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
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
            "# written by hw_drive_prepare_then_backup_run\nsource = \"{}\"\n\
             state_dir = \"{}\"\nmount_root = \"{}\"\n",
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
        &bin,
        &[
            "--config",
            cfg,
            "prepare",
            &drive,
            "--name",
            "hwtest",
            "--keys-dir",
            keys_s,
            "--mount-point",
            mnt_s,
            "--yes",
        ],
    );
    let written = std::fs::read_to_string(&config).expect("config after prepare");
    assert!(
        written.contains("hwtest"),
        "prepare appended the drive to the configuration:\n{written}"
    );
    run(&bin, &["--config", cfg, "run", "--device", &drive]);
    // The run unmounts and closes the drive; its record says it succeeded.
    run(&bin, &["--config", cfg, "status"]);
}
