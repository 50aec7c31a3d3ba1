//! The guest's ingredients: the Debian kernel, QEMU and busybox, fetched as .debs with
//! `apt-get download` and unpacked with `dpkg-deb -x` under `target/vm-cache`.
//!
//! Nothing is installed on the host (installing qemu-system-x86 would make apt remove the
//! qemu-utils backport). A finished cache carries a `ready` stamp; a later run with the
//! stamp present downloads nothing.

use crate::arch::{Arch, AMD64, ARM64};
use crate::util;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unpacked cache: where the kernel, its modules, qemu and busybox are.
#[derive(Debug, Clone)]
pub struct Cache {
    /// `target/vm-cache/root`: every .deb unpacked into one tree.
    pub root: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub kver: String,
    /// Where qemu was unpacked (the same tree as `root` for amd64; for arm64 the guest's
    /// tree holds arm64 files only and qemu, an amd64 program, lies beside it).
    pub qemu_root: PathBuf,
    /// The guest's architecture.
    pub arch: Arch,
}

impl Cache {
    /// After unpacking: the kernel, qemu and busybox are there, and the kernel's modules
    /// get their index (`busybox depmod`, run by `busybox`: the host's for a foreign tree).
    fn finish_unpacked(&self, busybox: &Path) -> Result<()> {
        for needed in [self.vmlinuz(), self.qemu(), self.busybox()] {
            if !needed.is_file() {
                bail!(
                    "{} is missing after unpacking the packages",
                    needed.display()
                );
            }
        }
        super::run_checked(
            Command::new(busybox)
                .arg("depmod")
                .arg("-b")
                .arg(&self.root)
                .arg(&self.kver),
        )
        .with_context(|| {
            format!(
                "busybox depmod on the unpacked {} kernel modules",
                self.kver
            )
        })?;
        Ok(())
    }

    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.kver))
    }
    /// `lib/modules/<kver>` inside the cache.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.kver))
    }
    /// The qemu binary.
    pub fn qemu(&self) -> PathBuf {
        self.qemu_root.join(if self.arch == ARM64 {
            "usr/bin/qemu-system-aarch64"
        } else {
            "usr/bin/qemu-system-x86_64"
        })
    }
    /// The static busybox.
    pub fn busybox(&self) -> PathBuf {
        self.root.join("bin/busybox")
    }
    /// `LD_LIBRARY_PATH` for qemu: the cache's library folders.
    pub fn ld_library_path(&self) -> String {
        [
            "usr/lib/x86_64-linux-gnu",
            "lib/x86_64-linux-gnu",
            "usr/lib/x86_64-linux-gnu/ceph",
        ]
        .iter()
        .map(|p| self.qemu_root.join(p).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
    }
    /// The firmware search folders for qemu's `-L`.
    pub fn firmware_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.qemu_root.join("usr/share/qemu"),
            self.qemu_root.join("usr/share/seabios"),
        ]
    }
}

/// The cache folder.
pub fn dir() -> PathBuf {
    util::root().join("target/vm-cache")
}

/// Returns the cache, downloading and unpacking it first if it is not complete.
pub fn ensure() -> Result<Cache> {
    let dir = dir();
    let stamp = dir.join("ready");
    let root = dir.join("root");
    if let Ok(kver) = fs::read_to_string(&stamp) {
        let cache = Cache {
            root: root.clone(),
            kver: kver.trim().to_string(),
            qemu_root: root.clone(),
            arch: AMD64,
        };
        if cache.vmlinuz().is_file() && cache.qemu().is_file() && cache.busybox().is_file() {
            return Ok(cache);
        }
        eprintln!(
            "xtask: vm cache {} is incomplete, rebuilding it",
            dir.display()
        );
    }
    if !util::is_root() {
        bail!(
            "the VM cache {} is missing and building it needs root (apt-get download, \
             depmod); run as root, e.g. `sudo cargo xtask vm-test`",
            dir.display()
        );
    }
    let kernel_pkg = kernel_package()?;
    let kver = kernel_pkg
        .strip_prefix("linux-image-")
        .context("unexpected kernel package name")?
        .to_string();
    let debs = dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let mut wanted = vec![kernel_pkg.clone(), "busybox-static".to_string()];
    wanted.extend(missing_closure("qemu-system-x86")?);
    eprintln!(
        "xtask: fetching {} packages: {}",
        wanted.len(),
        wanted.join(" ")
    );
    download(&debs, &wanted)?;
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    fs::create_dir_all(&root)?;
    for entry in fs::read_dir(&debs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            super::run_checked(Command::new("dpkg-deb").arg("-x").arg(&path).arg(&root))?;
        }
    }
    let cache = Cache {
        qemu_root: root.clone(),
        root,
        kver,
        arch: AMD64,
    };
    cache.finish_unpacked(&cache.busybox())?;
    fs::write(&stamp, format!("{}\n", cache.kver))?;
    Ok(cache)
}

/// The arm64 guest's userland (with their dependencies, all `:arm64`): what the arm64
/// test set runs (see `ARM64_SET` in vm/mod.rs) besides its own binaries. Changing this
/// list makes the next run fetch the tree again.
pub const ARM64_USERLAND: &[&str] = &[
    "libc-bin",
    "dash",
    "coreutils",
    "grep",
    "sed",
    "findutils",
    "util-linux",
    "mount",
    "fdisk",
    "e2fsprogs",
    "rsync",
    "kmod",
    "udev",
    "libcryptsetup12",
    "cryptsetup-bin",
    "libudev1",
    "libusb-1.0-0",
    "libssl3",
    "busybox-static",
];

/// The arm64 guest: Debian's arm64 kernel, busybox and [`ARM64_USERLAND`] unpacked into
/// `target/vm-cache/arm64/root` (the guest's root, shared read-only over 9p), and
/// `qemu-system-arm` (the host's amd64 build, for `qemu-system-aarch64`) with whichever
/// of its dependencies the host lacks in `target/vm-cache/arm64/qemu`. The stamp names
/// the kernel and every package file fetched, and the userland list it was made from: a
/// different list fetches again; `rm -rf target/vm-cache/arm64` refetches.
pub fn ensure_arm64() -> Result<Cache> {
    let dir = dir().join("arm64");
    let stamp = dir.join("ready");
    let root = dir.join("root");
    let qemu_root = dir.join("qemu");
    let wanted_line = format!("userland: {}", ARM64_USERLAND.join(" "));
    if let Ok(text) = fs::read_to_string(&stamp) {
        let mut lines = text.lines();
        let kver = lines.next().unwrap_or_default().trim().to_string();
        let cache = Cache {
            root: root.clone(),
            kver,
            qemu_root: qemu_root.clone(),
            arch: ARM64,
        };
        if lines.next() == Some(wanted_line.as_str())
            && cache.vmlinuz().is_file()
            && cache.qemu().is_file()
            && cache.busybox().is_file()
        {
            return Ok(cache);
        }
        eprintln!(
            "xtask: arm64 vm cache {} is incomplete or for another package list, rebuilding it",
            dir.display()
        );
    }
    if !util::is_root() {
        bail!(
            "the arm64 VM cache {} is missing and building it needs root (apt-get download); \
             run as root",
            dir.display()
        );
    }
    // busybox depmod of the amd64 cache indexes the arm64 modules (no depmod on the host).
    let host = ensure()?;
    let kernel_pkg = kernel_package_for(ARM64)?;
    let kver = kernel_pkg
        .strip_prefix("linux-image-")
        .context("unexpected kernel package name")?
        .to_string();
    let guest_debs = dir.join("debs");
    let qemu_debs = dir.join("qemu-debs");
    for d in [&guest_debs, &qemu_debs] {
        if d.exists() {
            fs::remove_dir_all(d)?;
        }
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut guest = vec![format!("{kernel_pkg}:arm64")];
    let userland: Vec<String> = ARM64_USERLAND
        .iter()
        .map(|p| format!("{p}:arm64"))
        .collect();
    guest.extend(full_closure(&userland)?);
    eprintln!(
        "xtask: fetching {} arm64 packages for the guest: {}",
        guest.len(),
        guest.join(" ")
    );
    download(&guest_debs, &guest)?;
    let qemu = missing_closure("qemu-system-arm")?;
    eprintln!("xtask: fetching {}", qemu.join(" "));
    download(&qemu_debs, &qemu)?;
    for (debs, tree) in [(&guest_debs, &root), (&qemu_debs, &qemu_root)] {
        if tree.exists() {
            fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))?;
        }
        fs::create_dir_all(tree)?;
        for entry in fs::read_dir(debs)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "deb") {
                super::run_checked(Command::new("dpkg-deb").arg("-x").arg(&path).arg(tree))?;
            }
        }
    }
    let cache = Cache {
        root,
        kver,
        qemu_root,
        arch: ARM64,
    };
    cache.finish_unpacked(&host.busybox())?;
    let mut files: Vec<String> = fs::read_dir(&guest_debs)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    fs::write(
        &stamp,
        format!("{}\n{wanted_line}\n{}\n", cache.kver, files.join("\n")),
    )?;
    Ok(cache)
}

/// `pkgs` and everything they need (Depends, Pre-Depends; the first of alternatives;
/// virtual names skipped), whatever the host has: a foreign architecture's tree. One
/// `apt-cache depends` per level of the graph (each call loads apt's whole cache).
fn full_closure(pkgs: &[String]) -> Result<Vec<String>> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let mut level: Vec<String> = pkgs.to_vec();
    while !level.is_empty() {
        level.retain(|p| seen.insert(p.clone()));
        if level.is_empty() {
            break;
        }
        out.extend(level.iter().cloned());
        let o = Command::new("apt-cache")
            .args([
                "depends",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ])
            .args(&level)
            .output()
            .context("running apt-cache depends")?;
        if !o.status.success() {
            bail!(
                "apt-cache depends {} failed (run `cargo xtask deps --arch arm64` first): {}",
                level.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        level = dependency_groups(&String::from_utf8_lossy(&o.stdout))
            .into_iter()
            .filter_map(|g| g.into_iter().next())
            .filter(|p| !seen.contains(p))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    Ok(out)
}

/// `linux-image-6.1.*-amd64`: the package `linux-image-amd64` depends on.
fn kernel_package() -> Result<String> {
    kernel_package_for(AMD64)
}

/// `linux-image-6.1.*-ARCH`: the package `linux-image-ARCH` depends on (for arm64, with
/// `dpkg --add-architecture arm64` done, as `cargo xtask deps --arch arm64` does).
fn kernel_package_for(arch: Arch) -> Result<String> {
    let meta = if arch.is_host() {
        format!("linux-image-{}", arch.deb)
    } else {
        format!("linux-image-{0}:{0}", arch.deb)
    };
    let suffix = format!("-{}", arch.deb);
    for attempt in 0..2 {
        let out = Command::new("apt-cache")
            .args(["depends", &meta])
            .output()
            .context("running apt-cache (is this Debian?)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(p) = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(|p| p.split(':').next().unwrap_or(p))
            .find(|p| p.starts_with("linux-image-") && p.ends_with(&suffix))
        {
            return Ok(p.to_string());
        }
        if attempt == 0 {
            apt_update()?;
        }
    }
    bail!("apt-cache does not know {meta}; check /etc/apt/sources.list")
}

fn apt_update() -> Result<()> {
    eprintln!("xtask: the apt cache lacks the packages, running apt-get update");
    super::run_checked(Command::new("apt-get").args(["update", "-qq"]))
}

/// `pkg` and every package it needs (Depends, Pre-Depends; the first of alternatives)
/// that is not installed on the host.
fn missing_closure(pkg: &str) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([pkg.to_string()]);
    let mut out = Vec::new();
    while let Some(p) = queue.pop_front() {
        if !seen.insert(p.clone()) {
            continue;
        }
        if p != pkg && util::installed(&p) {
            continue;
        }
        out.push(p.clone());
        let o = Command::new("apt-cache")
            .args([
                "depends",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ])
            .arg(&p)
            .output()
            .context("running apt-cache depends")?;
        for group in dependency_groups(&String::from_utf8_lossy(&o.stdout)) {
            if group.iter().any(|d| util::installed(d)) {
                continue;
            }
            if let Some(first) = group.into_iter().next() {
                queue.push_back(first);
            }
        }
    }
    Ok(out)
}

/// Parses `apt-cache depends` output into groups of alternatives, skipping virtual names.
fn dependency_groups(text: &str) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut continuing = false;
    for line in text.lines() {
        let t = line.trim_start();
        let (alt, rest) = match t.strip_prefix('|') {
            Some(r) => (true, r),
            None => (false, t),
        };
        let name = match rest
            .strip_prefix("Depends: ")
            .or_else(|| rest.strip_prefix("PreDepends: "))
        {
            Some(n) => n.trim(),
            None => continue,
        };
        if !continuing {
            groups.push(Vec::new());
        }
        if !name.starts_with('<') {
            groups
                .last_mut()
                .expect("pushed above")
                .push(name.to_string());
        }
        continuing = alt;
    }
    groups.retain(|g| !g.is_empty());
    groups
}

fn download(debs: &Path, pkgs: &[String]) -> Result<()> {
    let attempt = |pkgs: &[String]| {
        Command::new("apt-get")
            .current_dir(debs)
            .arg("download")
            .arg("-qq")
            .args(pkgs)
            .status()
    };
    let ok = attempt(pkgs).context("running apt-get download")?.success();
    if !ok {
        apt_update()?;
        if !attempt(pkgs)?.success() {
            bail!(
                "apt-get download {} failed; check the network and /etc/apt/sources.list",
                pkgs.join(" ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_groups_keeps_first_alternative_and_drops_virtuals() {
        let text = "qemu-system-x86\n  Depends: libaio1\n |Depends: foo\n  Depends: bar\n  \
                    Depends: <virt>\n  PreDepends: dpkg\n";
        let g = dependency_groups(text);
        assert_eq!(
            g,
            vec![
                vec!["libaio1".to_string()],
                vec!["foo".to_string(), "bar".to_string()],
                vec!["dpkg".to_string()],
            ]
        );
    }
}
