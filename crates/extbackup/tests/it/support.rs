//! A scratch world for one test: a temp folder with a source tree, a configuration, and
//! helpers to run the real binary and read its mail. Loop devices, commands and mounts
//! come from `testkit`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crypt::{AllowTestBackend, LoopbackTestCrypt};
pub use testkit::{mkfs_ext4, mount_at, mounted_under, root_or_skip_here, sh, LoopDevice};

/// One test's world.
pub struct World {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl World {
    /// A world whose configuration uses `crypt` (`loopback-test` or `libcryptsetup`).
    pub fn new(crypt: &'static str) -> World {
        let dir = tempfile::Builder::new()
            .prefix("extbackup-it-")
            .tempdir()
            .unwrap();
        let w = World {
            config: dir.path().join("config.toml"),
            dir,
        };
        fs::create_dir_all(w.path("mail")).unwrap();
        fs::create_dir_all(w.path("src/sub")).unwrap();
        fs::write(w.path("src/a.txt"), "alpha\n").unwrap();
        fs::write(w.path("src/sub/b.bin"), vec![42u8; 300_000]).unwrap();
        fs::write(w.path("src/sub/c.txt"), "gamma\n").unwrap();
        let text = format!(
            r#"# test configuration: this comment must survive `prepare`
source = "{d}/src"
state_dir = "{d}/state"
mount_root = "{d}/mnt"
host = "testhost"

[source_lock]
path = "{d}/src.lock"
timeout_secs = 1

[indicator]
backend = "console"

[mail]
to = ["root@localhost"]
from = "extbackup@testhost"
transport = {{ kind = "file", dir = "{d}/mail" }}

[crypt]
backend = "{crypt}"

[policy]
require_source_mount_point = false
"#,
            d = w.dir.path().display()
        );
        fs::write(&w.config, text).unwrap();
        w
    }

    /// The common opening of a test on a drive: as root (else the test skips, under its own
    /// name), a world on the loopback-test backend and a `mib` MiB disk image on a loop
    /// device, prepared as drive `name`. `None`: the test was skipped.
    pub fn prepared(name: &str, mib: u64) -> Option<(World, LoopDevice)> {
        let (w, lo) = World::blank(mib)?;
        w.prepare(&lo.dev, name);
        Some((w, lo))
    }

    /// Like [`prepared`](Self::prepared), with the disk left blank (`disk.img`, not prepared).
    pub fn blank(mib: u64) -> Option<(World, LoopDevice)> {
        if !root_or_skip_here() {
            return None;
        }
        Some(World::on_blank_disk("loopback-test", mib))
    }

    /// A world on `crypt` and a blank `mib` MiB disk image `disk.img` on a loop device, with
    /// no root check (the guest's tests, which run as root).
    pub fn on_blank_disk(crypt: &'static str, mib: u64) -> (World, LoopDevice) {
        let w = World::new(crypt);
        let lo = LoopDevice::new(&w.path("disk.img"), mib);
        (w, lo)
    }

    /// Two drives of `mib` MiB, `disk1.img` prepared as `t1` and `disk2.img` as `t2`, each
    /// backed up once (which must succeed).
    pub fn two_drives_backed_up(&self, mib: u64) -> (LoopDevice, LoopDevice) {
        let l1 = LoopDevice::new(&self.path("disk1.img"), mib);
        let l2 = LoopDevice::new(&self.path("disk2.img"), mib);
        self.prepare(&l1.dev, "t1");
        self.prepare(&l2.dev, "t2");
        assert_eq!(self.run(&l1.dev).status.code(), Some(0));
        assert_eq!(self.run(&l2.dev).status.code(), Some(0));
        (l1, l2)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The binary with `--config`, the loopback-test permission and the cheapest recovery
    /// KDF in its environment: the caller adds the arguments and runs it.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_extbackup"));
        c.arg("--config")
            .arg(&self.config)
            .env("EXTBACKUP_ALLOW_LOOPBACK_CRYPT", "1")
            .env(extbackup::drive::recovery::CHEAP_KDF_ENV, "1");
        c
    }

    /// Runs the binary ([`command`](Self::command)) with `args` and no stdin.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("extbackup runs");
        echo(args, "", &out);
        out
    }

    /// Like [`cmd`](Self::cmd), with `input` on stdin (a passphrase, as if piped in).
    pub fn cmd_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("extbackup runs");
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        let out = child.wait_with_output().unwrap();
        echo(args, " (with input)", &out);
        out
    }

    /// `run --device DEV`.
    pub fn run(&self, dev: impl AsRef<Path>) -> Output {
        self.cmd(&["run", "--device", path_str(dev.as_ref())])
    }

    /// `run --device DEV` started in the background, its output thrown away: a run to kill.
    pub fn spawn_run(&self, dev: &Path) -> Child {
        self.command()
            .args(["run", "--device", path_str(dev)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `mount --device DEV --passphrase` and then `more`, with `passphrase` typed in.
    pub fn mount_with_passphrase(
        &self,
        dev: impl AsRef<Path>,
        more: &[&str],
        passphrase: &str,
    ) -> Output {
        let mut args = vec!["mount", "--device", path_str(dev.as_ref()), "--passphrase"];
        args.extend_from_slice(more);
        self.cmd_input(&args, &format!("{passphrase}\n"))
    }

    /// `restore DRIVE --device DEV PATH [--at AT] --to TO`.
    pub fn restore_from(
        &self,
        drive: &str,
        dev: &Path,
        path: &str,
        at: Option<&str>,
        to: &Path,
    ) -> Output {
        let mut args = vec!["restore", drive, "--device", path_str(dev), path];
        if let Some(at) = at {
            args.extend(["--at", at]);
        }
        args.extend(["--to", path_str(to)]);
        self.cmd(&args)
    }

    /// `recovery kit DRIVE --device DEV --to TO` and then `more`.
    pub fn recovery_kit(
        &self,
        drive: &str,
        dev: impl AsRef<Path>,
        to: &Path,
        more: &[&str],
    ) -> Output {
        let mut args = vec![
            "recovery",
            "kit",
            drive,
            "--device",
            path_str(dev.as_ref()),
            "--to",
            path_str(to),
        ];
        args.extend_from_slice(more);
        self.cmd(&args)
    }

    /// Rewrites the configuration file with `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let cfg = fs::read_to_string(&self.config).unwrap();
        fs::write(&self.config, edit(cfg)).unwrap();
    }

    /// The loopback-test backend on the world's own state folder (`check-crypt`), to open a
    /// drive outside the binary.
    pub fn check_crypt(&self) -> LoopbackTestCrypt {
        std::env::set_var(crypt::ALLOW_ENV, "1");
        LoopbackTestCrypt::with_state_dir(AllowTestBackend::Yes, self.path("check-crypt")).unwrap()
    }

    /// The recovery passphrase `prepare` gives the drives.
    pub const PASSPHRASE: &'static str = "test recovery passphrase 1";

    /// `prepare DEVICE --name NAME --yes --keys-dir DIR/keys --recovery-passphrase-file F`
    /// (with [`World::PASSPHRASE`], at the cheapest argon2id), which must succeed.
    pub fn prepare(&self, dev: &Path, name: &str) {
        let pass = self.path("recovery-passphrase");
        fs::write(&pass, format!("{}\n", Self::PASSPHRASE)).unwrap();
        let out = self.try_prepare(dev, name, &["--recovery-passphrase-file", path_str(&pass)]);
        assert_eq!(out.status.code(), Some(0), "prepare failed");
    }

    /// `prepare DEVICE --name NAME --yes --keys-dir DIR/keys` and then `more`, for the caller
    /// to judge (unlike [`prepare`](Self::prepare), which must succeed).
    pub fn try_prepare(&self, dev: &Path, name: &str, more: &[&str]) -> Output {
        let keys = self.path("keys");
        let mut args = vec![
            "prepare",
            path_str(dev),
            "--name",
            name,
            "--yes",
            "--keys-dir",
            path_str(&keys),
        ];
        args.extend_from_slice(more);
        self.cmd(&args)
    }

    /// The mails written so far, as text, oldest first.
    pub fn mails(&self) -> Vec<String> {
        let mut v: Vec<(std::time::SystemTime, String)> = fs::read_dir(self.path("mail"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| {
                (
                    e.metadata().unwrap().modified().unwrap(),
                    fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort_by_key(|(t, _)| *t);
        v.into_iter().map(|(_, s)| s).collect()
    }

    /// The newest mail as text, its quoted-printable soft line breaks joined.
    pub fn last_mail(&self) -> String {
        self.mails()
            .pop()
            .unwrap()
            .replace("=\r\n", "")
            .replace("=\n", "")
    }

    /// The `Subject:` lines of the mails.
    pub fn subjects(&self) -> Vec<String> {
        self.mails()
            .iter()
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.starts_with("Subject: "))
                    .map(|l| l["Subject: ".len()..].to_string())
            })
            .collect()
    }

    /// The recorded state of `drive` as JSON.
    pub fn drive_state(&self, drive: &str) -> serde_json::Value {
        let p = self.path(&format!("state/drives/{drive}.json"));
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    }

    /// A listing of the source tree with contents, to show it was not touched.
    pub fn source_snapshot(&self) -> Vec<(PathBuf, Vec<u8>, u32)> {
        snapshot(&self.path("src"))
    }
}

/// A path as the `&str` of a command's argument.
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Shows a command's outcome in the test's output.
fn echo(args: &[&str], how: &str, out: &Output) {
    eprintln!(
        "$ extbackup {}{how}\nexit {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes zeros over the first `bytes` of `dev` (a LUKS header gone), synced.
pub fn zero_start(dev: &Path, bytes: usize) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all(&vec![0u8; bytes]).unwrap();
    f.sync_all().unwrap();
}

/// Another job holding the `flock` on a file (at most `secs` seconds), until dropped.
pub struct LockHolder(Child);

impl LockHolder {
    /// Starts `flock PATH sleep SECS` and waits until it holds the lock.
    pub fn hold(path: &Path, secs: u32) -> LockHolder {
        let child = Command::new("flock")
            .arg(path)
            .args(["sleep", &secs.to_string()])
            .spawn()
            .expect("flock(1) runs");
        let holder = LockHolder(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Command::new("flock")
            .arg("-n")
            .arg(path)
            .arg("true")
            .status()
            .unwrap()
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "flock never took {}",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        holder
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Mounts an opened (unlocked) drive `mapped` read-only at `mp` (created), returns a
/// snapshot of its copy (newest generation) and the run record written on it (empty when there is none),
/// and unmounts it again.
pub fn read_opened_drive(mapped: &Path, mp: &Path) -> (Vec<(PathBuf, Vec<u8>, u32)>, String) {
    fs::create_dir_all(mp).unwrap();
    sh(Command::new("mount").args(["-o", "ro"]).arg(mapped).arg(mp));
    let snap = snapshot(&copy_on(mp));
    let rec = fs::read_to_string(mp.join(".extbackup/last-run.json")).unwrap_or_default();
    sh(Command::new("umount").arg(mp));
    (snap, rec)
}

/// The copy of the source on a drive mounted at `mp`: its newest generation, else the plain
/// mirror `data/`.
pub fn copy_on(mp: &Path) -> PathBuf {
    extbackup::drive::history::copy_root(mp, None).unwrap()
}

/// Every file under `root` with its contents and mode.
pub fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut v = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap().flatten() {
            let md = e.metadata().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if md.is_dir() {
                stack.push(e.path());
                v.push((rel, vec![], md.permissions().mode()));
            } else {
                v.push((rel, fs::read(e.path()).unwrap(), md.permissions().mode()));
            }
        }
    }
    v.sort();
    v
}

/// Every entry under `root` with its type, mode, owner, size, modification time (ns) and
/// content (files) or target (symlinks): what "equal with metadata" means in these tests.
pub fn meta_snapshot(root: &Path) -> Vec<(PathBuf, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut v = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap().flatten() {
            let md = fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let what = if md.is_dir() {
                stack.push(e.path());
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display())
            } else {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                fs::read(e.path()).unwrap().hash(&mut h);
                format!("file {:x}", h.finish())
            };
            let mtime = if md.is_dir() {
                String::new()
            } else {
                format!("{}.{:09}", md.mtime(), md.mtime_nsec())
            };
            v.push((
                rel,
                format!(
                    "{what} mode {:o} {}:{} size {} mtime {mtime}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    if md.is_dir() { 0 } else { md.size() }
                ),
            ));
        }
    }
    v.sort();
    v
}

/// Changes one byte of `file` in place, keeping its size and modification time (what a
/// sync would not notice).
pub fn flip_one_byte_keeping_mtime(file: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mtime = fs::metadata(file).unwrap().modified().unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.set_modified(mtime).unwrap();
    f.sync_all().unwrap();
}

/// The shell script [`World::cmd_confined`] runs in a new mount namespace (other tests'
/// drive mounts, copied into it, detached first): `/` and every
/// other mount read-only but the test's folder ($1), the loopback-test backend's state
/// folder (it stands for /dev/mapper, which is outside any filesystem tree) and the kernel's
/// interfaces (/proc, /sys, /dev: device nodes, not data); it checks that `/` refuses a
/// write, then runs the rest of its arguments.
const CONFINE: &str = r#"
set -e
T="$1"; shift
mount --make-rprivate /
# The new namespace holds a copy of every mount, other tests' drives too: detached here at
# once, or their unmount in the first namespace would leave them busy (a loop device that
# cannot be closed).
for m in $(findmnt -rn -o TARGET,SOURCE | awk '$2 ~ /^\/dev\/(loop|mapper\/)/ {print $1}' | sort -r); do
  umount -l "$m" 2>/dev/null || true
done
mount --bind "$T" "$T"
mount --bind /run/extbackup-loopback /run/extbackup-loopback
# libcryptsetup's own lock folder (the real LUKS backend, in the guest)
mkdir -p /run/cryptsetup
mount --bind /run/cryptsetup /run/cryptsetup
for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  case "$m" in
    "$T"|"$T"/*|/run/extbackup-loopback|/run/cryptsetup|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;;
  esac
  mount -o remount,bind,ro "$m" || echo "confine: $m stays writable" >&2
done
if touch /etc/.extbackup-confine-probe 2>/dev/null; then
  rm -f /etc/.extbackup-confine-probe
  echo "confine: / is still writable" >&2
  exit 99
fi
exec "$@"
"#;

impl World {
    /// Like [`cmd`](Self::cmd), in a private mount namespace where `/` is read-only apart
    /// from this world's folder (see [`CONFINE`]). Exit 99 (and a line on stderr) when
    /// the namespace could not be made so.
    pub fn cmd_confined(&self, args: &[&str]) -> Output {
        self.cmd_confined_env(args, &[])
    }

    /// Like [`cmd_confined`](Self::cmd_confined), with `env` added to the binary's
    /// environment (`TMPDIR` for the drive commands' temporary mount points).
    pub fn cmd_confined_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        fs::create_dir_all("/run/extbackup-loopback").unwrap();
        let mut plain = self.command();
        for (k, v) in env {
            plain.env(k, v);
        }
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            CONFINE,
            "sh",
        ])
        .arg(self.dir.path())
        .arg(plain.get_program())
        .args(plain.get_args())
        .envs(plain.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let out = c
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("unshare runs");
        echo(args, " (confined)", &out);
        assert_ne!(out.status.code(), Some(99), "the confinement failed");
        out
    }

    /// A checksum listing (type, mode, owner, size, mtime, content hash or link target) of
    /// everything in this world's folder that is not the drive's or the run's own: the mount
    /// root, the state folder, the mail folder and the disk image are left out.
    pub fn outside_listing(&self) -> Vec<(PathBuf, String)> {
        let mut v = vec![];
        for e in fs::read_dir(self.dir.path()).unwrap().flatten() {
            let n = e.file_name();
            if ["mnt", "state", "mail", "disk.img"].iter().any(|x| n == *x) {
                continue;
            }
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                for (p, s) in meta_snapshot(&e.path()) {
                    v.push((PathBuf::from(&n).join(p), s));
                }
            }
            let content = if md.is_file() {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                fs::read(e.path()).unwrap().hash(&mut h);
                format!(" {:x}", h.finish())
            } else {
                String::new()
            };
            v.push((
                PathBuf::from(&n),
                format!("{:o} {}{content}", md.mode_bits(), md.len()),
            ));
        }
        v.sort();
        v
    }

    /// A world on the loopback-test backend with a `mib` MiB loop device prepared as drive
    /// `name` with filesystem `fs` (`ext4` or `btrfs`); `None`: skipped (not root).
    pub fn prepared_fs(name: &str, mib: u64, fs_type: &str) -> Option<(World, LoopDevice)> {
        if fs_type == "ext4" {
            return World::prepared(name, mib);
        }
        if !root_or_skip_here() {
            return None;
        }
        let w = World::new("loopback-test");
        let lo = LoopDevice::new(&w.path("disk.img"), mib);
        let out = w.cmd(&[
            "prepare",
            lo.dev.to_str().unwrap(),
            "--name",
            name,
            "--fs",
            fs_type,
            "--yes",
            "--no-recovery-passphrase",
            "--keys-dir",
            w.path("keys").to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "prepare --fs {fs_type}");
        Some((w, lo))
    }

    /// The drive prepared on `dev` (loopback-test: its filesystem 1 MiB in) mounted
    /// read-write at `plant/` for `f`, as its owner could; unmounted again after.
    pub fn with_drive_rw<T>(&self, dev: &Path, f: impl FnOnce(&Path) -> T) -> T {
        let out = sh(Command::new("losetup")
            .args(["--find", "--show", "--offset", "1048576"])
            .arg(dev));
        let inner = PathBuf::from(out.trim());
        let mp = self.path("plant");
        fs::create_dir_all(&mp).unwrap();
        sh(Command::new("mount").arg(&inner).arg(&mp));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mp)));
        // A mount namespace another test is making at this moment (`cmd_confined`) holds a
        // copy of this mount until its script detaches it: busy for that while, not longer.
        let mut last = None;
        for _ in 0..50 {
            let out = Command::new("umount").arg(&mp).output().unwrap();
            let busy = String::from_utf8_lossy(&out.stderr).contains("busy");
            last = (!out.status.success()).then_some(out);
            if !busy {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if let Some(out) = last {
            panic!("umount {}: {out:?}", mp.display());
        }
        sh(Command::new("losetup").arg("-d").arg(&inner));
        match r {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Puts `line` among the configuration's top-level keys.
    pub fn set_top(&self, line: &str) {
        let text = fs::read_to_string(&self.config).unwrap();
        fs::write(&self.config, format!("{line}\n{text}")).unwrap();
    }
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}
impl ModeBits for fs::Metadata {
    fn mode_bits(&self) -> u32 {
        use std::os::unix::fs::MetadataExt;
        self.mode()
    }
}
