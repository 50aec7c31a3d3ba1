//! Shared helpers for the workspace's integration tests on real parts (dev-only).
//!
//! One job: what every crate's `tests/it` needs to work with loop devices and mounts as
//! root, written once: the one way to skip ([`skip`], [`skip_here`]: the agreed `SKIP` line,
//! or a failure under `cargo xtask test`, in CI and in the QEMU guest), the root check that
//! skips ([`root_or_skip_here`], named after the running test), running a
//! command that must succeed ([`sh`]), image files on loop devices that clean up after
//! themselves ([`LoopImage`], [`LoopDevice`]), ext4 ([`mkfs_ext4`]) and mounts
//! ([`mount_at`], [`MountGuard`], [`mounted_under`]). It depends on no workspace crate, so
//! any of them can use it as a dev-dependency (`testkit = { path = "../testkit" }`).
//! Crate-specific helpers stay in each crate's own `tests/it` support module.
//!
//! ```no_run
//! use testkit::{mkfs_ext4, root_or_skip_here, LoopImage};
//!
//! if root_or_skip_here() {
//!     // A 16 MiB image in a temp folder on a loop device, formatted and mounted.
//!     let img = LoopImage::blank(16);
//!     mkfs_ext4(&img.dev, &[]);
//!     let mnt = img.mount("mnt");
//!     std::fs::write(mnt.join("f"), b"x").unwrap();
//!     // Dropping `img` unmounts what is mounted under its folder and detaches the device.
//! }
//! ```

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use oskit::is_root;

/// The environment variable `cargo xtask test` sets: every test must run its real part.
pub const REQUIRE_REAL_ENV: &str = "EXTBACKUP_REQUIRE_REAL";
/// The environment variable naming a file where each skip is noted, one line each
/// (`cargo xtask test` counts them).
pub const SKIP_LOG_ENV: &str = "EXTBACKUP_SKIP_LOG";

/// Whether a test that cannot run its real part must fail rather than skip: under
/// `cargo xtask test` ([`REQUIRE_REAL_ENV`]) and in CI (`CI` set).
pub fn must_run_real() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty() && v != "0");
    set(REQUIRE_REAL_ENV) || set("CI")
}

/// The one way a test says it cannot run its real part here: notes it in the skip log
/// ([`SKIP_LOG_ENV`]); then fails when [`must_run_real`], else prints the agreed
/// `SKIP name: why` line (the test returns early).
pub fn skip(name: &str, why: &str) {
    let log = std::env::var_os(SKIP_LOG_ENV).map(std::path::PathBuf::from);
    skip_as(name, why, must_run_real(), log.as_deref());
}

fn skip_as(name: &str, why: &str, must_run: bool, log: Option<&Path>) {
    if let Some(log) = log {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{name}: {why}");
        }
    }
    assert!(
        !must_run,
        "{name} cannot run its real part here ({why}); under `cargo xtask test` and in CI \
         every test must run it"
    );
    eprintln!("SKIP {name}: {why}");
}

#[cfg(test)]
mod skip_tests {
    #[test]
    fn a_skip_is_logged_and_fails_when_the_real_part_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips.log");
        super::skip_as("t1", "needs root", false, Some(&log));
        let r = std::panic::catch_unwind(|| super::skip_as("t2", "needs root", true, Some(&log)));
        let msg = r.expect_err("a required test that cannot run fails");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("t2 cannot run its real part"), "{msg}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(logged, "t1: needs root\nt2: needs root\n");
    }

    #[test]
    fn the_test_name_is_the_running_tests_own() {
        assert_eq!(
            super::test_name(),
            "skip_tests::the_test_name_is_the_running_tests_own"
        );
    }
}

/// The running test's name as libtest reports it (`module::test_fn`): libtest runs each test
/// on a thread named after it. Call it on the test's own thread (not one the test spawned);
/// elsewhere it is that thread's name, or `unnamed thread`.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed thread")
        .to_string()
}

/// [`skip`] for the running test, named by [`test_name`]: the way a test skips without
/// typing its own name.
pub fn skip_here(why: &str) {
    skip(&test_name(), why);
}

/// [`root_or_skip`] for the running test, named by [`test_name`]: the way a test on loop
/// devices starts, `if !testkit::root_or_skip_here() { return; }`.
pub fn root_or_skip_here() -> bool {
    root_or_skip(&test_name())
}

/// True when running as root; otherwise [`skip`]s the test `name` (which fails under
/// `cargo xtask test` and in CI) and returns false (the test then returns early).
/// [`root_or_skip_here`] names the running test itself.
pub fn root_or_skip(name: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(
        name,
        "needs root (loop devices); run as root, e.g. cargo xtask test",
    );
    false
}

/// Runs a command and returns its stdout; panics with the command and its output when it
/// cannot start or exits non-zero.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates (or truncates) `path` as a zero-filled, sparse file of `mib` MiB.
pub fn sized_file(path: &Path, mib: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(mib << 20))
        .unwrap_or_else(|e| panic!("creating the {mib} MiB image {}: {e}", path.display()));
}

/// Whether the bytes of `needle` occur anywhere in the file at `path`, bytewise
/// (`LC_ALL=C grep -a -F -q`: fast on a large image also in a debug build). Panics when
/// grep fails (e.g. the file is missing).
pub fn file_contains(path: &Path, needle: &str) -> bool {
    let status = Command::new("grep")
        .env("LC_ALL", "C")
        .args(["-a", "-F", "-q", "--", needle])
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("cannot run grep: {e}"));
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "grep for {needle:?} in {} failed ({status})",
            path.display()
        ),
    }
}

/// `losetup --find --show IMAGE`: attaches `image` to a free loop device and returns the
/// device's path.
pub fn attach(image: &Path) -> PathBuf {
    PathBuf::from(
        sh(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image))
        .trim(),
    )
}

/// `losetup -d DEV`, ignoring errors (it may be detached already).
pub fn detach(dev: &Path) {
    let _ = Command::new("losetup")
        .arg("-d")
        .arg(dev)
        .stderr(Stdio::null())
        .status();
}

/// `mkfs.ext4 -q -F [EXTRA...] TARGET` on a device or an image file.
pub fn mkfs_ext4(target: &Path, extra: &[&str]) {
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .args(extra)
        .arg(target));
}

/// Creates the folder `at` (and its parents) and mounts `dev` there with `mount(8)`;
/// the returned guard unmounts it when dropped.
pub fn mount_at(dev: &Path, at: &Path) -> MountGuard {
    mount_dir(dev, at);
    MountGuard(at.to_path_buf())
}

fn mount_dir(dev: &Path, at: &Path) {
    std::fs::create_dir_all(at)
        .unwrap_or_else(|e| panic!("creating the mount point {}: {e}", at.display()));
    sh(Command::new("mount").arg(dev).arg(at));
}

/// Unmounts the path it holds when dropped, if something is mounted there (cleanup in
/// tests: a normal unmount, lazily when busy, errors ignored).
#[derive(Debug)]
pub struct MountGuard(pub PathBuf);

impl MountGuard {
    /// `umount PATH`, which must succeed (the test's own unmount, not cleanup).
    pub fn unmount(self) {
        sh(Command::new("umount").arg(&self.0));
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        unmount_quietly(&self.0);
    }
}

/// A normal unmount of `target`, falling back to a lazy one; errors ignored.
fn unmount_quietly(target: &Path) {
    use nix::mount::{umount2, MntFlags};
    if umount2(target, MntFlags::empty()).is_err() {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
}

/// The mount points of this process's mount namespace, in `/proc/self/mountinfo` order
/// (parents before what is mounted over or below them), escapes decoded.
pub fn mount_points() -> Vec<PathBuf> {
    oskit::mountinfo::read()
        .expect("reading /proc/self/mountinfo")
        .into_iter()
        .map(|m| m.target)
        .collect()
}

/// The mount points at or below `root` (compared by path components), in mountinfo
/// order.
pub fn mounted_under(root: &Path) -> Vec<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|m| m.starts_with(root))
        .collect()
}

/// Unmounts everything mounted at or below `root`, deepest (latest) first; errors ignored.
pub fn unmount_under(root: &Path) {
    for m in mounted_under(root).iter().rev() {
        unmount_quietly(m);
    }
}

/// A loop device over an image file the caller places; detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    /// The loop device, e.g. `/dev/loop3`.
    pub dev: PathBuf,
}

impl LoopDevice {
    /// Creates `image` as a zero-filled file of `mib` MiB and attaches it.
    pub fn new(image: &Path, mib: u64) -> Self {
        sized_file(image, mib);
        Self::attach(image)
    }

    /// Attaches an existing `image` (`losetup --find --show`).
    pub fn attach(image: &Path) -> Self {
        Self { dev: attach(image) }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        detach(&self.dev);
    }
}

/// A temp folder holding `disk.img`, attached to a loop device. On drop it unmounts what
/// is still mounted under the folder, detaches the device and removes the folder.
#[derive(Debug)]
pub struct LoopImage {
    /// The temp folder (scratch space for the test: mount points, key files...).
    pub dir: tempfile::TempDir,
    /// The image file, `dir/disk.img`.
    pub image: PathBuf,
    /// The loop device the image is attached to.
    pub dev: PathBuf,
}

impl LoopImage {
    /// A zero-filled image of `mib` MiB, no filesystem.
    pub fn blank(mib: u64) -> Self {
        Self::build(mib, None)
    }

    /// An image of `mib` MiB with a fresh ext4 (made on the file, before attaching).
    pub fn ext4(mib: u64) -> Self {
        Self::ext4_with(mib, &[])
    }

    /// Like [`LoopImage::ext4`], with extra `mkfs.ext4` options (e.g. `["-m", "0"]`).
    pub fn ext4_with(mib: u64, mkfs_options: &[&str]) -> Self {
        Self::build(mib, Some(mkfs_options))
    }

    fn build(mib: u64, ext4: Option<&[&str]>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("disk.img");
        sized_file(&image, mib);
        if let Some(extra) = ext4 {
            mkfs_ext4(&image, extra);
        }
        let dev = attach(&image);
        Self { dir, image, dev }
    }

    /// A path under the temp folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Mounts the device at `rel` under the temp folder (created) and returns that path;
    /// it is unmounted when the image is dropped.
    pub fn mount(&self, rel: &str) -> PathBuf {
        let at = self.path(rel);
        mount_dir(&self.dev, &at);
        at
    }
}

impl Drop for LoopImage {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
        detach(&self.dev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_folder_is_a_mount_point_and_under_itself() {
        assert!(mount_points().iter().any(|m| m == Path::new("/")));
        assert!(!mounted_under(Path::new("/")).is_empty());
    }

    #[test]
    fn a_fresh_temp_folder_has_nothing_mounted_under_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(mounted_under(dir.path()).is_empty());
    }

    #[test]
    fn sh_returns_stdout_of_a_successful_command() {
        assert_eq!(sh(Command::new("echo").arg("hello")), "hello\n");
    }

    #[test]
    #[should_panic(expected = "failed")]
    fn sh_panics_when_the_command_fails() {
        sh(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]));
    }

    #[test]
    fn sized_file_makes_a_file_of_that_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        sized_file(&p, 3);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 << 20);
    }

    #[test]
    fn file_contains_finds_a_needle_among_binary_bytes_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        let mut data = vec![0u8; 3 << 20];
        data.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 7 % 251) as u8);
        data[(2 << 20) + 5..(2 << 20) + 21].copy_from_slice(b"through dm-crypt");
        std::fs::write(&p, &data).unwrap();
        assert!(file_contains(&p, "through dm-crypt"));
        assert!(!file_contains(&p, "through dm-cryptX"));
        assert!(
            !file_contains(&p, "-e"),
            "an option-like needle is a needle"
        );
        data[(2 << 20) + 12] = b'\n';
        std::fs::write(&p, &data).unwrap();
        assert!(!file_contains(&p, "through dm-crypt"));
    }

    #[test]
    #[should_panic(expected = "failed")]
    fn file_contains_panics_on_a_missing_file() {
        file_contains(Path::new("/nonexistent/testkit-file"), "x");
    }

    #[test]
    fn loop_image_mounts_ext4_and_cleans_up_on_drop() {
        if !root_or_skip("loop_image_mounts_ext4_and_cleans_up_on_drop") {
            return;
        }
        let img = LoopImage::ext4(16);
        let image = img.image.clone();
        let dir = img.dir.path().to_path_buf();
        let mnt = img.mount("a dir/mnt");
        std::fs::write(mnt.join("f"), b"x").unwrap();
        assert_eq!(mounted_under(&dir), vec![mnt.clone()]);
        // Another test may take the freed loop number: ask whether *our* image is attached.
        let sys = Path::new("/sys/block")
            .join(img.dev.file_name().unwrap())
            .join("loop/backing_file");
        let ours_attached =
            || std::fs::read_to_string(&sys).is_ok_and(|b| Path::new(b.trim()) == image.as_path());
        assert!(ours_attached(), "attached");
        drop(img);
        assert!(mounted_under(&dir).is_empty(), "unmounted");
        assert!(!dir.exists(), "folder removed");
        assert!(!ours_attached(), "detached");
    }

    #[test]
    fn mount_guard_unmounts_on_drop() {
        if !root_or_skip("mount_guard_unmounts_on_drop") {
            return;
        }
        let img = LoopImage::blank(16);
        mkfs_ext4(&img.dev, &["-m", "0"]);
        let mnt = img.path("m");
        let guard = mount_at(&img.dev, &mnt);
        assert_eq!(mounted_under(img.dir.path()), vec![mnt.clone()]);
        drop(guard);
        assert!(mounted_under(img.dir.path()).is_empty());
        let guard = mount_at(&img.dev, &mnt);
        guard.unmount();
        assert!(mounted_under(img.dir.path()).is_empty());
    }
}
