//! The guest's ingredients: the Debian kernel, QEMU and busybox, fetched as .debs with
//! `apt-get download` and unpacked with `dpkg-deb -x` under `target/vm-cache`.
//!
//! Nothing is installed on the host (installing qemu-system-x86 would make apt remove the
//! qemu-utils backport). A finished cache carries a `ready` stamp; a later run with the
//! stamp present downloads nothing.

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
}

impl Cache {
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
        self.root.join("usr/bin/qemu-system-x86_64")
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
        .map(|p| self.root.join(p).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
    }
    /// The firmware search folders for qemu's `-L`.
    pub fn firmware_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.root.join("usr/share/qemu"),
            self.root.join("usr/share/seabios"),
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
    let cache = Cache { root, kver };
    for needed in [cache.vmlinuz(), cache.qemu(), cache.busybox()] {
        if !needed.is_file() {
            bail!(
                "{} is missing after unpacking the packages",
                needed.display()
            );
        }
    }
    super::run_checked(
        Command::new(cache.busybox())
            .arg("depmod")
            .arg("-b")
            .arg(&cache.root)
            .arg(&cache.kver),
    )
    .context("busybox depmod on the unpacked kernel modules")?;
    fs::write(&stamp, format!("{}\n", cache.kver))?;
    Ok(cache)
}

/// `linux-image-6.1.*-amd64`: the package `linux-image-amd64` depends on.
fn kernel_package() -> Result<String> {
    for attempt in 0..2 {
        let out = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .output()
            .context("running apt-cache (is this Debian?)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(p) = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        {
            return Ok(p.to_string());
        }
        if attempt == 0 {
            apt_update()?;
        }
    }
    bail!("apt-cache does not know linux-image-amd64; check /etc/apt/sources.list")
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
