//! Loop devices with real filesystems for the tests.

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

/// A temp folder with an image on a loop device; unmounts what it mounted and detaches
/// on drop.
pub struct LoopImage {
    pub dir: tempfile::TempDir,
    #[allow(dead_code)]
    pub image: PathBuf,
    pub dev: PathBuf,
}

impl LoopImage {
    /// A zero-filled image of `mib` MiB (no filesystem yet).
    pub fn blank(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib * 1024 * 1024))
            .expect("image");
        Self::attach(dir, image)
    }

    /// An image with a fresh ext4 (made on the file, before attaching).
    pub fn ext4(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib * 1024 * 1024))
            .expect("image");
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        Self::attach(dir, image)
    }

    fn attach(dir: tempfile::TempDir, image: PathBuf) -> Self {
        let dev = PathBuf::from(
            sh(Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&image))
            .trim()
            .to_string(),
        );
        Self { dir, image, dev }
    }

    /// A path under the temp folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for LoopImage {
    fn drop(&mut self) {
        // Anything still mounted from our temp folder goes first (lazily: this is cleanup).
        if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
            for e in mount::mountinfo::parse(&text).iter().rev() {
                if e.target.starts_with(self.dir.path()) {
                    let _ = nix::mount::umount2(&e.target, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// The mountinfo entry for `target`, if mounted.
pub fn entry(target: &Path) -> Option<mount::mountinfo::MountEntry> {
    let target = std::fs::canonicalize(target).ok()?;
    mount::mountinfo::read()
        .unwrap()
        .into_iter()
        .rev()
        .find(|e| e.target == target)
}
