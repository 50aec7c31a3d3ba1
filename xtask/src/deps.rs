//! The Debian packages the workspace needs, installed with apt when missing.

use crate::util;
use anyhow::{bail, Result};
use std::process::Command;

/// Which group of packages a task needs.
#[derive(Clone, Copy, Debug)]
pub enum Set {
    /// Everything `cargo xtask test` needs.
    All,
}

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
    "man-db", // man -w: cargo xtask deb --check
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
