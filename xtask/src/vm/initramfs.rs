//! The guest's initramfs: a static busybox, the kernel modules the tests need (with their
//! dependencies) and the `/init` script, written as an uncompressed newc cpio archive.

use super::cache::Cache;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Modules the guest must have: booting fails if one is missing and not built in.
pub const REQUIRED_MODULES: &[&str] = &[
    "9pnet_virtio",
    "9p",
    "dm_mod",
    "dm_crypt",
    "ecb",
    "xts",
    "uhid",
    "hid_generic",
    "usbhid",
    "dummy_hcd",
    "libcomposite",
    "usb_f_hid",
    "loop",
    "ext4",
];

/// Modules loaded when present (helpers for crypto, USB storage, overlay for /etc).
pub const OPTIONAL_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "overlay",
    "crc32c_generic",
    "crc32c_intel",
    "aesni_intel",
    "aes_generic",
    "cbc",
    "sha256_generic",
    "sha512_generic",
    "af_alg",
    "algif_skcipher",
    "algif_hash",
    "usb_f_mass_storage",
    "usb_f_fs",
    "usb_storage",
    "sd_mod",
    "hidraw",
    "vfat",
];

/// Builds the archive into `out`; `init` is the text of `/init`.
pub fn build(cache: &Cache, init: &str, out: &Path) -> Result<()> {
    let mods = cache.modules_dir();
    let dep_text = fs::read_to_string(mods.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", mods.display()))?;
    let builtin = fs::read_to_string(mods.join("modules.builtin")).unwrap_or_default();
    let deps = parse_modules_dep(&dep_text);
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();

    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, required) in REQUIRED_MODULES
        .iter()
        .map(|m| (m, true))
        .chain(OPTIONAL_MODULES.iter().map(|m| (m, false)))
    {
        if builtin.contains(*name) {
            continue;
        }
        if !deps.by_name.contains_key(*name) {
            if required {
                bail!(
                    "kernel {} has no module {name} (neither built in nor in modules.dep)",
                    cache.kver
                );
            }
            continue;
        }
        visit(&deps, name, &mut seen, &mut order);
    }
    // Every crypto module too, so the kernel's own module requests (crc32c, sha...) work.
    for path in deps.deps.keys() {
        if path.starts_with("kernel/crypto/")
            || path.starts_with("kernel/arch/x86/crypto/")
            || path.starts_with("kernel/arch/arm64/crypto/")
        {
            let name = module_name(path);
            visit(&deps, &name, &mut seen, &mut Vec::new());
        }
    }

    let mut cpio = Cpio::default();
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "host",
        "share",
        "tmp",
        "etc",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(d);
    }
    cpio.node("dev/console", 0o020600, (5, 1));
    cpio.node("dev/null", 0o020666, (1, 3));
    let busybox = fs::read(cache.busybox())?;
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.file("init", 0o755, init.as_bytes());
    let moddir = format!("lib/modules/{}", cache.kver);
    cpio.dir(&moddir);
    let mut dep_lines = String::new();
    let mut dirs = BTreeSet::new();
    for path in seen_paths(&deps, &seen) {
        let data = fs::read(mods.join(&path)).with_context(|| format!("reading module {path}"))?;
        let full = format!("{moddir}/{path}");
        let mut parent = Path::new(&full).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent {
            if p.as_os_str().is_empty() || p == Path::new(&moddir) {
                break;
            }
            chain.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) {
                cpio.dir(&d);
            }
        }
        cpio.file(&full, 0o644, &data);
        dep_lines.push_str(&format!("{path}: {}\n", deps.deps[&path].join(" ")));
    }
    cpio.file(
        &format!("{moddir}/modules.dep"),
        0o644,
        dep_lines.as_bytes(),
    );
    for extra in ["modules.builtin", "modules.alias", "modules.order"] {
        if let Ok(data) = fs::read(mods.join(extra)) {
            cpio.file(&format!("{moddir}/{extra}"), 0o644, &data);
        }
    }
    let load: Vec<String> = order.iter().map(|p| format!("/{moddir}/{p}")).collect();
    cpio.file(
        "etc/modules-load",
        0o644,
        (load.join("\n") + "\n").as_bytes(),
    );
    let bytes = cpio.finish();
    let mut f = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.write_all(&bytes)?;
    Ok(())
}

/// Depth-first: dependencies before the module. `order` gets paths in load order.
fn visit(deps: &ModDeps, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
    let Some(path) = deps.by_name.get(name) else {
        return;
    };
    if !seen.insert(path.clone()) {
        return;
    }
    for d in &deps.deps[path] {
        let dn = module_name(d);
        visit(deps, &dn, seen, order);
    }
    order.push(path.clone());
}

fn seen_paths(deps: &ModDeps, seen: &BTreeSet<String>) -> Vec<String> {
    deps.deps
        .keys()
        .filter(|p| seen.contains(*p))
        .cloned()
        .collect()
}

/// `modules.dep` parsed: path → dependency paths, and module name → path.
#[derive(Debug, Default)]
pub struct ModDeps {
    /// Path (relative to `lib/modules/<kver>`) → the paths it depends on.
    pub deps: BTreeMap<String, Vec<String>>,
    /// Module name (`-` as `_`, no suffix) → path.
    pub by_name: BTreeMap<String, String>,
}

/// Parses `modules.dep` lines `path: dep dep...`.
pub fn parse_modules_dep(text: &str) -> ModDeps {
    let mut m = ModDeps::default();
    for line in text.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let path = path.trim().to_string();
        let list = rest.split_whitespace().map(str::to_string).collect();
        m.by_name.insert(module_name(&path), path.clone());
        m.deps.insert(path, list);
    }
    m
}

/// `kernel/drivers/md/dm-crypt.ko` → `dm_crypt`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// A newc ("070701") cpio archive in memory.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    /// A directory (mode 0755).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }
    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data, (0, 0));
    }
    /// A device node; `mode` includes the file type bits.
    pub fn node(&mut self, name: &str, mode: u32, rdev: (u32, u32)) {
        self.entry(name, mode, &[], rdev);
    }
    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_name_normalises_dashes_and_suffixes() {
        assert_eq!(module_name("kernel/drivers/md/dm-crypt.ko"), "dm_crypt");
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz"), "9p");
    }

    #[test]
    fn visit_loads_dependencies_first() {
        let deps = parse_modules_dep(
            "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n",
        );
        let mut seen = BTreeSet::new();
        let mut order: Vec<String> = Vec::new();
        visit(&deps, "a", &mut seen, &mut order);
        assert_eq!(order, vec!["kernel/c.ko", "kernel/b.ko", "kernel/a.ko"]);
    }

    #[test]
    fn cpio_entries_are_aligned_and_end_with_trailer() {
        let mut c = Cpio::default();
        c.file("abc", 0o644, b"hello");
        let bytes = c.finish();
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        // header (110) + "abc\0" = 114 -> padded to 116, then 5 data bytes -> 124.
        assert_eq!(&bytes[116..121], b"hello");
        assert_eq!(&bytes[124..130], b"070701");
        let tail = String::from_utf8_lossy(&bytes[124..]);
        assert!(tail.contains("TRAILER!!!"));
    }
}
