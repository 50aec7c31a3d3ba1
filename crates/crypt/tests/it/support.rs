//! Loop devices, image files and key files for the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when running as root; otherwise prints the SKIP line for `name`.
pub fn root_or_skip(name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIP {name}: needs root (loop devices); run as root, e.g. cargo xtask test");
        false
    }
}

/// A temp folder with an image file attached to a loop device; detached on drop.
pub struct LoopImage {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub dev: PathBuf,
}

impl LoopImage {
    /// A zero-filled image of `mib` MiB on a new loop device.
    pub fn new(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("disk.img");
        let f = std::fs::File::create(&image).expect("create image");
        f.set_len(mib * 1024 * 1024).expect("size image");
        drop(f);
        let dev = attach(&image);
        Self { dir, image, dev }
    }

    /// A key file in the temp folder with `contents`.
    pub fn key(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write key");
        p
    }
}

impl Drop for LoopImage {
    fn drop(&mut self) {
        detach(&self.dev);
    }
}

/// `losetup --find --show IMAGE`.
pub fn attach(image: &Path) -> PathBuf {
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(image)
        .output()
        .expect("run losetup");
    assert!(
        out.status.success(),
        "losetup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `losetup -d DEV`, ignoring errors (already detached).
pub fn detach(dev: &Path) {
    let _ = Command::new("losetup")
        .arg("-d")
        .arg(dev)
        .stderr(std::process::Stdio::null())
        .status();
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 4 KiB of random key material.
pub fn random_key() -> Vec<u8> {
    use rand::RngCore;
    let mut k = vec![0u8; 4096];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

/// Unmounts `dir` if something is mounted there (cleanup in tests).
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
