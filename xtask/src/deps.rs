//! The Debian packages the workspace needs, installed with apt when missing.

use crate::util;
use anyhow::{bail, Result};
use std::process::Command;

/// Which group of packages a task needs.
#[derive(Clone, Copy, Debug)]
pub enum Set {
    /// Everything `cargo xtask test` needs on the host.
    All,
    /// The cross build for arm64 (`deb --arch arm64`, `vm-test --arch arm64`): Debian's
    /// cross gcc, the `:arm64` -dev packages (after `dpkg --add-architecture arm64`) and
    /// the Rust target (`rustup target add`).
    Arm64,
}

/// The `:arm64` half of [`BUILD`], and the cross compiler.
const CROSS_ARM64: &[&str] = &[
    "gcc-aarch64-linux-gnu",
    "libc6-dev:arm64",
    "libudev-dev:arm64",
    "libusb-1.0-0-dev:arm64",
    "libcryptsetup-dev:arm64",
    "libssl-dev:arm64",
];

/// Build dependencies of the -sys crates (hidapi, rusb, libcryptsetup-rs, udev, lettre).
const BUILD: &[&str] = &[
    "binutils", // readelf: cargo xtask deb
    "pkg-config",
    "libclang-dev",
    "libudev-dev",
    "libusb-1.0-0-dev",
    "libcryptsetup-dev",
    "libssl-dev",
];

/// Programs the tests drive for real.
const RUNTIME: &[&str] = &[
    "bsdutils",    // script(1): the progress line on a pseudo-terminal (extbackup host test)
    "btrfs-progs", // history: generations as btrfs snapshots (prepare --fs btrfs)
    "cryptsetup-bin",
    "e2fsprogs",
    "fdisk",
    "lintian", // cargo xtask deb --check: no errors, no warnings
    "man-db",  // man -w: cargo xtask deb --check
    "mount",
    "python3-aiosmtpd",
    "python3-venv", // the Python BlinkStick CLI: cargo xtask parity (in test) and bench
    "rsync",
    "systemd", // systemd-escape, systemd-analyze: extbackup escape/install tests
    "udev",
    "util-linux",
];

/// Installs the missing packages of `set` with apt-get (as root), or explains what to do.
pub fn ensure(set: Set) -> Result<()> {
    let wanted: Vec<&str> = match set {
        Set::All => BUILD.iter().chain(RUNTIME).copied().collect(),
        Set::Arm64 => {
            ensure(Set::All)?;
            add_arm64()?;
            CROSS_ARM64.to_vec()
        }
    };
    let missing: Vec<&str> = wanted.into_iter().filter(|p| !util::installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "these packages are missing and this is not a Debian-like system: {}\n\
             install their equivalents with your package manager, then run again",
            missing.join(" ")
        );
    }
    if !util::is_root() {
        bail!(
            "these Debian packages are missing: {0}\nrun as root, or: sudo apt-get install {0}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    util::run(Command::new("apt-get").args(["update", "-qq"]))?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

/// `dpkg --add-architecture arm64` (as root, once) and the Rust target.
fn add_arm64() -> Result<()> {
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()?;
    if !String::from_utf8_lossy(&foreign.stdout)
        .lines()
        .any(|l| l.trim() == "arm64")
    {
        if !util::is_root() {
            bail!("the arm64 cross build needs `dpkg --add-architecture arm64`: run as root");
        }
        util::run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        util::run(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let have = targets.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == crate::arch::ARM64.triple)
    });
    if !have {
        util::run(Command::new("rustup").args(["target", "add", crate::arch::ARM64.triple]))?;
    }
    Ok(())
}
