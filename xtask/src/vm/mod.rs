//! `cargo xtask vm-test`: runs every workspace test named `vm_*` (they are ignored on
//! the host) inside a QEMU guest booted on Debian's 6.1 kernel, which has what the host
//! kernel lacks: device-mapper/dm-crypt, uhid, dummy_hcd + USB gadget configfs.
//!
//! The guest mounts the host's `/` read-only over 9p, chroots into it (tmpfs on /tmp, /run,
//! /var/tmp; an in-memory overlay on /etc), starts systemd-udevd and runs the host's own
//! test binaries. Results come back through a second, writable 9p share; qemu's exit code
//! is never trusted. [`run_in_guest`] runs any command in the same guest for other tasks.

mod cache;
mod initramfs;
mod libtest;

use crate::util;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the guest's `/results` share (a folder under target/) appears inside the chroot.
const GUEST_SHARE: &str = "/run/xtask-vm";

/// How to boot the guest.
#[derive(Debug, Clone)]
pub struct GuestOpts {
    /// Kill the guest after this long (counted from qemu's start).
    pub timeout: Duration,
    /// Copy the guest console to stderr while it runs.
    pub verbose: bool,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs (multi-threaded TCG: each is a host thread).
    pub cpus: u32,
    /// Working directory of the command inside the guest (the host path; the guest sees
    /// the host's tree at the same paths). Default: the repository root.
    pub cwd: Option<PathBuf>,
    /// Extra environment for the command (EXTBACKUP_IN_VM=1 is always set).
    pub env: Vec<(String, String)>,
    /// Boot with systemd as PID 1 (the job runs as `xtask-job.service`) instead of a
    /// chroot under the initramfs shell.
    pub systemd: bool,
    /// The guest's architecture: amd64 (the host's userland) or arm64 (the cache's
    /// arm64 userland; no systemd mode).
    pub arch: crate::arch::Arch,
}

impl Default for GuestOpts {
    fn default() -> Self {
        GuestOpts {
            timeout: Duration::from_secs(240),
            verbose: false,
            memory_mib: 1024,
            cpus: std::env::var("XTASK_VM_CPUS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
            cwd: None,
            env: Vec::new(),
            systemd: false,
            arch: crate::arch::AMD64,
        }
    }
}

/// What a command run by [`run_in_guest`] did.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The command's exit code inside the guest.
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// The guest's whole serial console (kernel messages, init's progress).
    pub console: String,
}

impl GuestOutput {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Runs `cmd` (program and arguments) inside a fresh guest with the same setup as the
/// vm-test suite (modules loaded, chroot into the host root, udevd running,
/// EXTBACKUP_IN_VM=1), and returns its exit code and output.
///
/// Fails if the guest could not boot, crashed, or hit `opts.timeout` before the command
/// finished (the error carries the end of the console).
pub fn run_in_guest(cmd: &[&str], opts: &GuestOpts) -> Result<GuestOutput> {
    let Some(program) = cmd.first() else {
        bail!("run_in_guest: empty command");
    };
    let _ = program;
    let cache = if opts.arch == crate::arch::ARM64 {
        if opts.systemd {
            bail!("the arm64 guest has no systemd mode");
        }
        cache::ensure_arm64()?
    } else {
        cache::ensure()?
    };
    let share = new_share()?;
    let mut body = String::new();
    let cwd = opts.cwd.clone().unwrap_or_else(util::root);
    writeln!(body, "cd {}", sh_quote(&cwd.display().to_string()))?;
    for (k, v) in &opts.env {
        writeln!(body, "export {k}={}", sh_quote(v))?;
    }
    let quoted: Vec<String> = cmd.iter().map(|a| sh_quote(a)).collect();
    writeln!(
        body,
        "{} >{GUEST_SHARE}/stdout 2>{GUEST_SHARE}/stderr </dev/null",
        quoted.join(" ")
    )?;
    writeln!(body, "echo $? >{GUEST_SHARE}/exit-code.tmp")?;
    writeln!(
        body,
        "mv {GUEST_SHARE}/exit-code.tmp {GUEST_SHARE}/exit-code"
    )?;
    let boot = boot(&cache, &share, &body, opts)?;
    let read = |n: &str| fs::read_to_string(share.join(n)).unwrap_or_default();
    let code = read("exit-code");
    let Ok(exit_code) = code.trim().parse::<i32>() else {
        bail!(
            "the guest {} before the command finished (no exit code came back){}",
            if boot.timed_out {
                "timed out"
            } else {
                "stopped"
            },
            console_tail(&boot.console)
        );
    };
    Ok(GuestOutput {
        exit_code,
        stdout: read("stdout"),
        stderr: read("stderr"),
        console: boot.console,
    })
}

struct Boot {
    console: String,
    timed_out: bool,
}

static SHARE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty results folder under target/vm-share.
fn new_share() -> Result<PathBuf> {
    let n = SHARE_COUNTER.fetch_add(1, Ordering::SeqCst);
    let parent = util::root().join("target/vm-share");
    // Shares of finished xtask processes are only kept until the next run.
    if let Ok(rd) = fs::read_dir(&parent) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or_default();
            if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = parent.join(format!("{}-{n}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn console_tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let start = lines.len().saturating_sub(25);
    format!(
        "\n--- last lines of the guest console ---\n{}",
        lines[start..].join("\n")
    )
}

/// Host folders the guest must see although they may lie under a folder it covers with a
/// tmpfs (a checkout in /tmp, as CI clones may be): the checkout and the target folder.
fn kept_paths() -> Vec<PathBuf> {
    let root = util::root();
    let mut keep = vec![root.clone()];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        let t = if t.is_absolute() { t } else { root.join(t) };
        if !t.starts_with(&root) {
            keep.push(t);
        }
    }
    keep
}

/// Units of the host image a test guest does not want (masked in systemd mode).
const MASKED_UNITS: &[&str] = &[
    "postgresql.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "man-db.timer",
    "remote-fs.target",
    // apt's hook asks PackageKit (D-Bus activated, slow under TCG) and waits for a timeout.
    "packagekit.service",
];

/// The job as a systemd unit (systemd mode): output to the journal and the console, the
/// guest powered off when it ends, whatever its result.
fn job_unit() -> String {
    format!(
        "[Unit]\nDescription=xtask vm job\nAfter=systemd-udevd.service systemd-journald.service \
         systemd-udev-trigger.service\n\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh {GUEST_SHARE}/job.sh\nStandardOutput=journal+console\n\
         StandardError=journal+console\nTimeoutStartSec=infinity\n\
         ExecStopPost=/bin/sh -c 'sync; systemctl poweroff --force --force'\n"
    )
}

/// The guest's `/init` (busybox sh, in the initramfs). With `systemd`, it ends by
/// `switch_root` into the host root with systemd as PID 1, which runs the job as
/// `xtask-job.service`; otherwise it chroots and runs the job itself.
fn init_script(systemd: bool, foreign: bool) -> String {
    let tail = init_tail(systemd);
    let root = if foreign { FOREIGN_ROOT } else { HOST_ROOT };
    let keep = kept_paths()
        .iter()
        .map(|p| format!("'{}'", p.display()))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() {{ echo "xtask-vm: $*"; }}
fatal() {{ say "FATAL: $*"; poweroff -f; sleep 5; }}
say "init on $(uname -r)"
ln -s /bin/busybox /sbin/modprobe 2>/dev/null
echo /sbin/modprobe > /proc/sys/kernel/modprobe
while read -r m; do
  # Two dummy UDCs: two USB gadgets (e.g. two backup drives) plugged in at once.
  case "$m" in */dummy_hcd.ko*) p=num=2 ;; *) p= ;; esac
  insmod "$m" $p || say "insmod $m failed"
done < /etc/modules-load
R=/host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /share || fatal "cannot mount the results share (9p)"
{root}
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t configfs configfs $R/sys/kernel/config || say "no configfs"
# The checkout may lie under /tmp or /run, which get a tmpfs below: hold on to it first.
for p in {keep}; do
  mkdir -p "/keep$p" && mount --bind "$H$p" "/keep$p" || fatal "cannot hold on to $p"
done
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=755 tmpfs $R/run
mkdir -p $R/var/tmp 2>/dev/null; mount -t tmpfs -o mode=1777 tmpfs $R/var/tmp
if [ -z "$FOREIGN" ]; then
  mkdir -p /ovl && mount -t tmpfs tmpfs /ovl && mkdir -p /ovl/up /ovl/work
  mount -t overlay overlay -o lowerdir=$R/etc,upperdir=/ovl/up,workdir=/ovl/work $R/etc || say "no overlay on /etc (it stays read-only)"
fi
for p in {keep}; do
  mkdir -p "$R$p" 2>/dev/null; mount --bind "/keep$p" "$R$p" || fatal "cannot show $p in the guest"
done
mkdir -p $R{GUEST_SHARE} && mount --bind /share $R{GUEST_SHARE}
{tail}"#
    )
}

/// `/init`'s root on the amd64 guest: the host's own `/`, read-only over 9p.
const HOST_ROOT: &str = r#"H=$R
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot $R || fatal "cannot mount the host root (9p)""#;

/// `/init`'s root on a foreign-architecture guest (arm64): the cache's tree of that
/// architecture's packages (9p `guestroot`, read-only) under an in-memory overlay, so
/// mount points can be made and /etc written; the host's `/` (9p `hostroot`) only lends
/// the checkout and the target folder (bind-mounted below at their host paths). The
/// packages were unpacked, never configured: /bin/sh and the library cache are made here.
const FOREIGN_ROOT: &str = r#"H=/hostfs FOREIGN=1
mkdir -p $H /lower /ovl
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot $H || fatal "cannot mount the host root (9p)"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose guestroot /lower || fatal "cannot mount the guest root (9p)"
mount -t tmpfs tmpfs /ovl && mkdir -p /ovl/up /ovl/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/ovl/up,workdir=/ovl/work $R || fatal "no overlay on the guest root"
mkdir -p $R/proc $R/sys $R/dev $R/tmp $R/run $R/var/tmp $R/etc
[ -e $R/bin/sh ] || ln -s dash $R/bin/sh
chroot $R /sbin/ldconfig || say "ldconfig failed""#;

/// The end of `/init`: run the job in a chroot, or hand over to systemd.
fn init_tail(systemd: bool) -> String {
    if !systemd {
        return format!(
            r#"say "running the job"
chroot $R /bin/sh {GUEST_SHARE}/job.sh
say "job exited with $?"
sync
umount $R{GUEST_SHARE} /share 2>/dev/null
poweroff -f
"#
        );
    }
    let unit = job_unit().replace('\'', "'\\''");
    format!(
        r#"# systemd as PID 1: /var and /usr writable in memory too (journal, units' state,
# `extbackup install` putting its binary in /usr/local/sbin, dpkg installing the .deb), no
# fstab, the job a unit.
for d in var usr; do
  n=$(echo $d | tr / _)
  mkdir -p /ovl/$n-up /ovl/$n-work
  mount -t overlay overlay -o lowerdir=$R/$d,upperdir=/ovl/$n-up,workdir=/ovl/$n-work $R/$d || fatal "no overlay on /$d"
done
mount -t tmpfs -o mode=1777 tmpfs $R/var/tmp
# dpkg in the guest (vm_systemd_packaged_*): man-db's trigger would re-index every page
# over 9p under TCG (minutes); without this file it skips that.
rm -f $R/var/lib/man-db/auto-update
echo > $R/etc/fstab
S=$R/etc/systemd/system
echo '{unit}' > $S/xtask-job.service
mkdir -p $S/multi-user.target.wants
ln -sf ../xtask-job.service $S/multi-user.target.wants/xtask-job.service
for u in {masked}; do ln -sf /dev/null $S/$u; done
say "starting systemd"
exec switch_root $R /lib/systemd/systemd --unit=multi-user.target
"#,
        masked = MASKED_UNITS.join(" ")
    )
}

/// The start of every job inside the chroot: environment and udevd.
fn job_prelude() -> String {
    format!(
        r#"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 EXTBACKUP_IN_VM=1 EXTBACKUP_REQUIRE_REAL=1
# systemd tools (udevadm trigger/settle...) refuse to act in a chroot without this.
export SYSTEMD_IGNORE_CHROOT=1
if [ -d /run/systemd/system ]; then
  # systemd mode: PID 1 started udevd and triggered the devices.
  unset SYSTEMD_IGNORE_CHROOT
  udevadm settle --timeout=30
elif [ -x /lib/systemd/systemd-udevd ]; then
  /lib/systemd/systemd-udevd --daemon && udevadm trigger --action=add && udevadm settle --timeout=30
else
  echo "xtask-vm: no systemd-udevd on the host root (install udev)"
fi
touch {GUEST_SHARE}/started
"#
    )
}

/// Boots the guest with `job` (shell, run in the chroot after the prelude) and waits.
fn boot(cache: &cache::Cache, share: &Path, job: &str, opts: &GuestOpts) -> Result<Boot> {
    let arm64 = cache.arch == crate::arch::ARM64;
    let init = init_script(opts.systemd, arm64);
    let cache_dir = if arm64 {
        cache::dir().join("arm64")
    } else {
        cache::dir()
    };
    let initrd = cache_dir.join("initramfs.cpio");
    let tmp_initrd = cache_dir.join(format!("initramfs.{}.tmp", std::process::id()));
    initramfs::build(cache, &init, &tmp_initrd)?;
    fs::rename(&tmp_initrd, &initrd)?;
    fs::write(share.join("job.sh"), format!("{}\n{job}", job_prelude()))?;

    let mut append = format!(
        "console={} panic=-1 oops=panic rdinit=/init",
        if arm64 { "ttyAMA0" } else { "ttyS0" }
    );
    if !opts.verbose {
        append.push_str(" quiet loglevel=3");
    }
    let mut cmd = Command::new(cache.qemu());
    cmd.env("LD_LIBRARY_PATH", cache.ld_library_path());
    for l in cache.firmware_dirs() {
        cmd.arg("-L").arg(l);
    }
    if arm64 {
        // No KVM across architectures. pauth-impdef: QEMU's own pointer-authentication
        // hash instead of the architected QARMA, much cheaper to emulate.
        cmd.args(["-M", "virt", "-cpu", "max,pauth-impdef=on"]);
    } else {
        cmd.args(["-cpu", "max"]);
    }
    cmd.args(["-accel", "tcg", "-smp", &opts.cpus.to_string()])
        .args(["-m", &opts.memory_mib.to_string()])
        .args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(cache.vmlinuz())
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &append])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=share,security_model=none",
            share.display()
        ));
    if arm64 {
        cmd.arg("-virtfs").arg(format!(
            "local,path={},mount_tag=guestroot,security_model=none,readonly=on,multidevs=remap",
            cache.root.display()
        ));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", cache.qemu().display()))?;
    let console = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let console = Arc::clone(&console);
        let verbose = opts.verbose;
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                let line = String::from_utf8_lossy(&buf).replace('\r', "");
                if verbose {
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
                console.lock().expect("console lock").push_str(&line);
                buf.clear();
            }
        })
    })
    .collect();
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > opts.timeout {
            timed_out = true;
            eprintln!(
                "xtask: the guest did not finish within {} s; killing qemu",
                opts.timeout.as_secs()
            );
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for r in readers {
        let _ = r.join();
    }
    let console = console.lock().expect("console lock").clone();
    let _ = fs::write(share.join("console.log"), &console);
    if !share.join("started").exists() {
        bail!(
            "the guest never reached the job (boot failed{}){}",
            if timed_out { ", timed out" } else { "" },
            console_tail(&console)
        );
    }
    Ok(Boot { console, timed_out })
}

/// Quotes for POSIX sh.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs a command, failing with its stderr on a non-zero exit.
fn run_checked(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Options of `cargo xtask vm-test`.
#[derive(Debug)]
struct Args {
    filter: Option<String>,
    keep_going: bool,
    verbose: bool,
    timeout: Option<u64>,
    test_timeout: Option<u64>,
    packages: Vec<String>,
    arch: crate::arch::Arch,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            filter: None,
            keep_going: false,
            verbose: false,
            timeout: None,
            test_timeout: None,
            packages: Vec::new(),
            arch: crate::arch::AMD64,
        }
    }
}

const USAGE: &str = "cargo xtask vm-test [--filter SUBSTR] [--keep-going] [--verbose] \
[--timeout SECS] [--test-timeout SECS] [-p PACKAGE]... [--arch amd64|arm64]";

fn parse_args(args: &[String]) -> Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\nusage: {USAGE}"))
        };
        match arg.as_str() {
            "--filter" => a.filter = Some(value("--filter")?),
            "--keep-going" => a.keep_going = true,
            "--verbose" | "-v" => a.verbose = true,
            "--timeout" => {
                let v = value("--timeout")?;
                a.timeout = Some(
                    v.parse()
                        .with_context(|| format!("--timeout {v}: not a number of seconds"))?,
                );
            }
            "--test-timeout" => {
                let v = value("--test-timeout")?;
                a.test_timeout = Some(
                    v.parse()
                        .with_context(|| format!("--test-timeout {v}: not a number of seconds"))?,
                );
            }
            "-p" | "--package" => a.packages.push(value("--package")?),
            "--arch" => a.arch = crate::arch::Arch::parse(&value("--arch")?)?,
            "-h" | "--help" => bail!("usage: {USAGE}"),
            other => bail!("unknown option `{other}`\nusage: {USAGE}"),
        }
    }
    Ok(a)
}

/// One test binary and the vm_ tests it holds.
struct TestBin {
    label: String,
    exe: PathBuf,
    manifest_dir: PathBuf,
    tests: Vec<String>,
}

/// Builds the workspace's test binaries on the host; returns them and whether the build
/// had failures (only possible with `keep_going`).
/// A built test binary: label, executable, its package's folder.
type Built = (String, PathBuf, PathBuf);

fn build_test_binaries(a: &Args) -> Result<(Vec<Built>, bool)> {
    let root = util::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["test", "--no-run", "--message-format=json"]);
    if a.packages.is_empty() {
        // The same build as `cargo xtask test`'s host run, so it is not built twice.
        cmd.args(["--workspace", "--features", util::TEST_FEATURES]);
    } else {
        cmd.arg("--all-features");
        for p in &a.packages {
            cmd.args(["-p", p]);
        }
    }
    if a.keep_going {
        cmd.arg("--no-fail-fast");
    }
    eprintln!("xtask: building the test binaries on the host");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    let bins = parse_built(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .map(|(label, exe, dir, _)| (label, exe, dir))
        .collect();
    let failed = !out.status.success();
    if failed && !a.keep_going {
        bail!("building the test binaries failed (use --keep-going to run what built)");
    }
    Ok((bins, failed))
}

/// The test binaries in `cargo test --no-run --message-format=json` output (compiler
/// errors are printed): label, executable, package folder, package name.
fn parse_built(json: &str) -> Vec<(String, PathBuf, PathBuf, String)> {
    let root = util::root();
    let mut bins = Vec::new();
    for line in json.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-message" {
            if let Some(rendered) = v["message"]["rendered"].as_str() {
                if v["message"]["level"] == "error" {
                    eprint!("{rendered}");
                }
            }
        }
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let target = v["target"]["name"].as_str().unwrap_or("?");
        let kind = v["target"]["kind"][0].as_str().unwrap_or("?");
        let pkg = v["package_id"]
            .as_str()
            .map(package_name)
            .unwrap_or_else(|| "?".into());
        let label = match kind {
            "lib" => format!("{pkg} (lib)"),
            "test" => format!("{pkg} (test {target})"),
            k => format!("{pkg} ({k} {target})"),
        };
        let manifest_dir = v["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.clone());
        bins.push((label, PathBuf::from(exe), manifest_dir, pkg));
    }
    bins
}

/// `path+file:///work/main/crates/x#0.1.0` or `x 0.1.0 (path+...)` → `x`.
fn package_name(id: &str) -> String {
    if let Some((_, rest)) = id.split_once('#') {
        if let Some((name, _)) = rest.split_once('@') {
            return name.to_string();
        }
        if let Some(url) = id.split_once('#').map(|(u, _)| u) {
            return url.rsplit('/').next().unwrap_or(url).to_string();
        }
    }
    id.split_whitespace().next().unwrap_or(id).to_string()
}

fn list_vm_tests(exe: &Path, filter: Option<&str>) -> Result<Vec<String>> {
    let out = Command::new(exe)
        .args(["--list", "--ignored"])
        .output()
        .with_context(|| format!("listing the tests of {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(libtest::parse_list(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|n| n.contains("vm_") && filter.is_none_or(|f| n.contains(f)))
        .collect())
}

/// `cargo xtask vm-test`.
pub fn vm_test(args: &[String]) -> Result<()> {
    let a = parse_args(args)?;
    if a.arch == crate::arch::ARM64 {
        return vm_test_arm64(&a);
    }
    let (built, build_failed) = build_test_binaries(&a)?;
    let mut bins = Vec::new();
    for (label, exe, manifest_dir) in built {
        let tests = list_vm_tests(&exe, a.filter.as_deref())?;
        if !tests.is_empty() {
            bins.push(TestBin {
                label,
                exe,
                manifest_dir,
                tests,
            });
        }
    }
    let total: usize = bins.iter().map(|b| b.tests.len()).sum();
    if total == 0 {
        bail!(
            "no vm_ tests found{}: 0 passed, 0 failed",
            a.filter
                .as_ref()
                .map(|f| format!(" matching `{f}`"))
                .unwrap_or_default()
        );
    }
    // `vm_systemd_*` tests share a second boot with systemd as PID 1.
    let split = |systemd: bool| -> Vec<TestBin> {
        bins.iter()
            .map(|b| TestBin {
                label: b.label.clone(),
                exe: b.exe.clone(),
                manifest_dir: b.manifest_dir.clone(),
                tests: b
                    .tests
                    .iter()
                    .filter(|t| is_systemd_test(t) == systemd)
                    .cloned()
                    .collect(),
            })
            .filter(|b| !b.tests.is_empty())
            .collect()
    };
    // `vm_systemd_packaged_*` install the package: build it (from the debug binaries the
    // tests just built) where they find it.
    if bins
        .iter()
        .any(|b| b.tests.iter().any(|t| t.contains("vm_systemd_packaged")))
    {
        let out = util::root().join("target/deb");
        crate::deb::build(&util::root(), crate::arch::AMD64, true, &out)?;
    }
    let cache = cache::ensure()?;
    let mut tally = Tally::default();
    for systemd in [false, true] {
        let bins = split(systemd);
        let total: usize = bins.iter().map(|b| b.tests.len()).sum();
        if total == 0 {
            continue;
        }
        eprintln!(
            "xtask: {total} vm_ tests in {} binaries; booting the guest{}",
            bins.len(),
            if systemd {
                " with systemd as PID 1"
            } else {
                ""
            }
        );
        // A systemd journey test (install, prepare, plug in, unit, mail) does more than one
        // step of the plain suite: it gets a longer hang guard unless --test-timeout.
        let per_test = a.test_timeout.unwrap_or(if systemd {
            SYSTEMD_TEST_TIMEOUT
        } else {
            DEFAULT_TEST_TIMEOUT
        });
        let share = new_share()?;
        // The packaged journey installs and removes a package with apt (apt and dpkg read
        // their lists and database over 9p: ~2 minutes under TCG on a busy host) besides
        // a run: a longer hang guard.
        let packaged = a.test_timeout.unwrap_or(PACKAGED_TEST_TIMEOUT);
        let job = guest_job(&bins, per_test, packaged)?;
        let opts = GuestOpts {
            // A backstop only: each test has its own limit, so the default grows with them.
            timeout: Duration::from_secs(
                a.timeout
                    .unwrap_or(GUEST_OVERHEAD + packaged.max(per_test) * total as u64),
            ),
            verbose: a.verbose,
            systemd,
            ..GuestOpts::default()
        };
        let started = Instant::now();
        let boot = boot(&cache, &share, &job, &opts)?;
        eprintln!(
            "xtask: guest finished in {:.1} s (console and logs: {})",
            started.elapsed().as_secs_f64(),
            share.display()
        );
        if boot.timed_out {
            println!(
                "vm: the guest hit the {} s limit (--timeout); what had not finished counts as failed",
                opts.timeout.as_secs()
            );
        }
        report(&bins, &share, per_test, &mut tally)?;
    }
    tally.finish(build_failed)
}

/// Passed and failed tests of a vm-test run, and the failures' output.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: String,
}

impl Tally {
    /// Prints the failures and the closing `N passed, N failed` line; fails if anything
    /// failed, did not build, or nothing ran.
    fn finish(self, build_failed: bool) -> Result<()> {
        let Tally {
            passed,
            failed,
            failures,
        } = self;
        if !failures.is_empty() {
            println!("\nfailures:\n{failures}");
        }
        if build_failed {
            println!("vm: some test targets did not build (see above); their tests did not run");
        }
        println!("{passed} passed, {failed} failed");
        if failed > 0 || passed == 0 || build_failed {
            bail!("the QEMU guest suite failed");
        }
        Ok(())
    }
}

/// Reads each test's outcome from the share, prints one line per test and counts it.
fn report(bins: &[TestBin], share: &Path, per_test: u64, tally: &mut Tally) -> Result<()> {
    for (i, b) in bins.iter().enumerate() {
        for (j, t) in b.tests.iter().enumerate() {
            let r = read_outcome(share, i, j, t, per_test);
            let secs = r
                .seconds
                .map(|s| format!(" ({s:.1} s)"))
                .unwrap_or_default();
            match &r.failure {
                None => {
                    println!("vm: ok     {} :: {t}{secs}", b.label);
                    tally.passed += 1;
                }
                Some(why) => {
                    println!("vm: FAILED {} :: {t}{secs}{}", b.label, why.headline());
                    tally.failed += 1;
                    writeln!(
                        tally.failures,
                        "---- {} :: {t} ----\n{}",
                        b.label,
                        why.details()
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The arm64 guest's test set: (package, test path in its `it` binary). Each proves on
/// arm64 what a NAS board does: `prepare` + `run` on real LUKS2 (dm-crypt) with the copy
/// checked, the recovery path (open with the passphrase, mount, restore), and the LED
/// (the indicator's states read back from an emulated BlinkStick over uhid and hidapi).
/// Picked to finish in a few minutes under TCG, and kept small for CI's time (each test
/// here costs 25-45 s; `vm_history_*` passed too and was left out for that);
/// docs/testing.md names them.
pub const ARM64_SET: &[(&str, &str)] = &[
    (
        "extbackup",
        "vm::vm_prepare_and_run_with_real_luks_copies_the_source",
    ),
    (
        "extbackup",
        "vm::vm_recovery_the_nas_is_gone_open_with_the_passphrase_mount_and_restore",
    ),
    (
        "indicator",
        "vm_uhid::vm_uhid_indicator_shows_states_and_survives_a_replug",
    ),
];

/// Per-test limit (seconds) in the arm64 guest unless `--test-timeout`: a hang guard
/// (TCG across architectures is several times slower than the amd64 guest).
const ARM64_TEST_TIMEOUT: u64 = 300;

/// `cargo xtask vm-test --arch arm64`: cross-builds the `it` binaries of [`ARM64_SET`]'s
/// packages (debug, `--target aarch64-unknown-linux-gnu`), boots Debian's arm64 kernel in
/// `qemu-system-aarch64 -M virt` on the cache's arm64 userland and runs the set there.
fn vm_test_arm64(a: &Args) -> Result<()> {
    let arch = crate::arch::ARM64;
    crate::deps::ensure(crate::deps::Set::Arm64)?;
    let mut packages: Vec<&str> = ARM64_SET.iter().map(|(p, _)| *p).collect();
    packages.dedup();
    let root = util::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["test", "--no-run", "--message-format=json"])
        .args(arch.cargo_args())
        .envs(arch.cargo_env())
        // No debug info for the cross build (compile and link time in CI; a panic's
        // message and location are enough there). Build scripts and proc macros are
        // built without it anyway, so the host's artifacts are shared as before.
        .env("CARGO_PROFILE_DEV_DEBUG", "0");
    for p in &packages {
        cmd.args(["-p", p]);
    }
    cmd.args(["--test", "it"]);
    eprintln!(
        "xtask: cross-building the test binaries of {} for {}",
        packages.join(", "),
        arch.triple
    );
    let built_at = Instant::now();
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("cross-building the arm64 test binaries failed");
    }
    eprintln!(
        "xtask: cross build done in {:.1} s",
        built_at.elapsed().as_secs_f64()
    );
    let mut bins = Vec::new();
    for (label, exe, manifest_dir, pkg) in parse_built(&String::from_utf8_lossy(&out.stdout)) {
        let tests: Vec<String> = ARM64_SET
            .iter()
            .filter(|(p, t)| *p == pkg && a.filter.as_deref().is_none_or(|f| t.contains(f)))
            .map(|(_, t)| t.to_string())
            .collect();
        if !tests.is_empty() {
            bins.push(TestBin {
                label,
                exe,
                manifest_dir,
                tests,
            });
        }
    }
    let total: usize = bins.iter().map(|b| b.tests.len()).sum();
    if total == 0 {
        bail!("no arm64 vm_ tests selected: 0 passed, 0 failed");
    }
    let cache = cache::ensure_arm64()?;
    let per_test = a.test_timeout.unwrap_or(ARM64_TEST_TIMEOUT);
    let share = new_share()?;
    let job = guest_job(&bins, per_test, per_test)?;
    let opts = GuestOpts {
        timeout: Duration::from_secs(
            a.timeout
                .unwrap_or(GUEST_OVERHEAD * 2 + per_test * total as u64),
        ),
        verbose: a.verbose,
        ..GuestOpts::default()
    };
    eprintln!(
        "xtask: {total} arm64 vm_ tests in {} binaries; booting the arm64 guest ({})",
        bins.len(),
        cache.kver
    );
    let started = Instant::now();
    let boot = boot(&cache, &share, &job, &opts)?;
    eprintln!(
        "xtask: arm64 guest finished in {:.1} s (console and logs: {})",
        started.elapsed().as_secs_f64(),
        share.display()
    );
    if boot.timed_out {
        println!(
            "vm: the guest hit the {} s limit (--timeout); what had not finished counts as failed",
            opts.timeout.as_secs()
        );
    }
    let mut tally = Tally::default();
    report(&bins, &share, per_test, &mut tally)?;
    tally.finish(false)
}

/// Whether a test runs in the systemd-as-PID-1 guest: its name (last path segment) starts
/// with `vm_systemd_`.
fn is_systemd_test(name: &str) -> bool {
    name.rsplit("::")
        .next()
        .unwrap_or(name)
        .starts_with("vm_systemd_")
}

/// Boot, udev and slack (seconds) in the default whole-guest limit.
const GUEST_OVERHEAD: u64 = 120;
/// Per-test limit (seconds) of the `vm_systemd_*` tests unless `--test-timeout`: a hang
/// guard, not a speed target. The longest (two drives, one waiting for the other, both
/// prepared and copied at a limited rate under TCG) took 169 s on a loaded 2-core machine.
const SYSTEMD_TEST_TIMEOUT: u64 = 300;
/// Per-test limit (seconds) unless `--test-timeout`.
const DEFAULT_TEST_TIMEOUT: u64 = 90;
/// Per-test limit (seconds) of `vm_systemd_packaged_*` unless `--test-timeout`.
const PACKAGED_TEST_TIMEOUT: u64 = 600;

/// The shell job: one invocation per test (so a hang or crash costs one test), each
/// under `timeout`, with its log, exit code and duration written to the share.
fn guest_job(bins: &[TestBin], per_test: u64, packaged: u64) -> Result<String> {
    let mut job = String::new();
    writeln!(job, "mkdir -p {GUEST_SHARE}/out")?;
    for (i, b) in bins.iter().enumerate() {
        let dir = sh_quote(&b.manifest_dir.display().to_string());
        let exe = sh_quote(&b.exe.display().to_string());
        for (j, t) in b.tests.iter().enumerate() {
            let out = format!("{GUEST_SHARE}/out/{i}-{j}");
            let per_test = if t.contains("vm_systemd_packaged") {
                packaged
            } else {
                per_test
            };
            writeln!(job, "echo {}", sh_quote(&format!("xtask-vm: {t}")))?;
            writeln!(job, "s=$(date +%s%N)")?;
            writeln!(
                job,
                "(cd {dir} && CARGO_MANIFEST_DIR={dir} timeout -k 5 {per_test} {exe} \
                 --ignored --exact --test-threads=1 {}) >{out}.log 2>&1 </dev/null",
                sh_quote(t)
            )?;
            writeln!(
                job,
                "echo $? $(( ($(date +%s%N) - s) / 1000000 )) >{out}.rc"
            )?;
        }
    }
    writeln!(job, "touch {GUEST_SHARE}/done")?;
    Ok(job)
}

/// Why a test did not pass.
enum Failure {
    /// It ran and libtest reported FAILED; its captured output.
    Failed(String),
    /// It never started: the guest stopped (timeout, crash) first.
    NeverRan,
    /// The per-test `timeout` killed it.
    TimedOut(u64, String),
    /// It started but has no outcome (the binary crashed, or the guest died in it).
    NoOutcome(String, Option<i32>),
    /// libtest passed it but the binary exited non-zero.
    BadExit(i32, String),
}

impl Failure {
    fn headline(&self) -> String {
        match self {
            Failure::Failed(_) => String::new(),
            Failure::NeverRan => " (never ran: the guest stopped first)".into(),
            Failure::TimedOut(t, _) => format!(" (killed after {t} s: hung?)"),
            Failure::NoOutcome(_, Some(c)) => format!(" (no outcome; the binary exited {c})"),
            Failure::NoOutcome(_, None) => " (no outcome: the guest stopped in it)".into(),
            Failure::BadExit(c, _) => format!(" (passed, but the binary exited {c})"),
        }
    }
    fn details(&self) -> String {
        match self {
            Failure::Failed(out) => out.trim_end().to_string(),
            Failure::NeverRan => "never started".into(),
            Failure::TimedOut(_, log) | Failure::NoOutcome(log, _) | Failure::BadExit(_, log) => {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            }
        }
    }
}

/// What one test's files on the share say.
struct Outcome {
    failure: Option<Failure>,
    seconds: Option<f64>,
}

fn read_outcome(share: &Path, i: usize, j: usize, name: &str, per_test: u64) -> Outcome {
    let base = share.join(format!("out/{i}-{j}"));
    let rc_text = fs::read_to_string(base.with_extension("rc")).unwrap_or_default();
    let mut parts = rc_text.split_whitespace();
    let rc = parts.next().and_then(|v| v.parse::<i32>().ok());
    let seconds = parts
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| ms / 1000.0);
    let Ok(log) = fs::read_to_string(base.with_extension("log")) else {
        return Outcome {
            failure: Some(Failure::NeverRan),
            seconds,
        };
    };
    let report = libtest::parse(&log);
    let failure = match (report.outcomes.get(name), rc) {
        (_, Some(124 | 137)) => Some(Failure::TimedOut(per_test, log)),
        (Some(true), Some(0)) => None,
        (Some(true), Some(c)) => Some(Failure::BadExit(c, log)),
        (Some(true), None) => None,
        (Some(false), _) => Some(Failure::Failed(
            report.failure_output.get(name).cloned().unwrap_or(log),
        )),
        (None, c) => Some(Failure::NoOutcome(log, c)),
    };
    Outcome { failure, seconds }
}

/// `cargo xtask vm-run [--verbose] [--timeout SECS] -- CMD...`: [`run_in_guest`] from the
/// command line; exits with the command's status.
pub fn vm_run(args: &[String]) -> Result<()> {
    let mut opts = GuestOpts::default();
    let mut it = args.iter();
    let mut cmd: Vec<&str> = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--verbose" | "-v" => opts.verbose = true,
            "--systemd" => opts.systemd = true,
            "--arch" => {
                let v = it.next().context("--arch needs a value")?;
                opts.arch = crate::arch::Arch::parse(v)?;
            }
            "--timeout" => {
                let v = it.next().context("--timeout needs a value")?;
                opts.timeout = Duration::from_secs(
                    v.parse()
                        .with_context(|| format!("--timeout {v}: not a number of seconds"))?,
                );
            }
            "--" => {
                cmd.extend(it.by_ref().map(String::as_str));
            }
            other => bail!("unknown option `{other}`\nusage: cargo xtask vm-run [--verbose] [--systemd] [--arch amd64|arm64] [--timeout SECS] -- CMD [ARGS...]"),
        }
    }
    if cmd.is_empty() {
        bail!(
            "usage: cargo xtask vm-run [--verbose] [--systemd] [--arch amd64|arm64] [--timeout SECS] -- CMD [ARGS...]"
        );
    }
    let out = run_in_guest(&cmd, &opts)?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    if !out.success() {
        if !opts.verbose {
            eprintln!("{}", console_tail(&out.console));
        }
        bail!("`{}` exited {} in the guest", cmd.join(" "), out.exit_code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arm64_test_exists_in_its_package_it_binary() {
        for (pkg, test) in ARM64_SET {
            let (module, name) = test.split_once("::").expect("module::name");
            assert!(name.starts_with("vm_"), "{test}: a vm_ test");
            let dir = if *pkg == "hw-tests" {
                util::root().join("hw-tests")
            } else {
                util::root().join("crates").join(pkg)
            };
            let main = fs::read_to_string(dir.join("tests/it/main.rs")).expect("it/main.rs");
            assert!(
                main.lines().any(|l| l.trim() == format!("mod {module};")),
                "{pkg}: tests/it/main.rs has no `mod {module};`"
            );
            let src = fs::read_to_string(dir.join(format!("tests/it/{module}.rs")))
                .unwrap_or_else(|e| panic!("{pkg} tests/it/{module}.rs: {e}"));
            assert!(
                src.contains(&format!("fn {name}()")),
                "{pkg}: no test {name} in tests/it/{module}.rs"
            );
        }
    }

    #[test]
    fn sh_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(sh_quote("/a/b-c.d"), "/a/b-c.d");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn package_name_reads_both_id_formats() {
        assert_eq!(
            package_name("path+file:///work/main/crates/crypt#0.1.0"),
            "crypt"
        );
        assert_eq!(
            package_name("path+file:///work/main/hw-tests#hw-tests@0.1.0"),
            "hw-tests"
        );
        assert_eq!(package_name("foo 0.1.0 (path+file:///x)"), "foo");
    }

    #[test]
    fn read_outcome_tells_pass_fail_timeout_and_never_ran() {
        let d = std::env::temp_dir().join(format!("xtask-vm-outcome-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("out")).expect("mkdir");
        let w = |n: &str, v: &str| fs::write(d.join("out").join(n), v).expect("write");
        w(
            "0-0.log",
            "running 1 test\ntest m::vm_a ... ok\n\ntest result: ok. 1 passed\n",
        );
        w("0-0.rc", "0 1500\n");
        w("0-1.log", "running 1 test\ntest m::vm_b ... FAILED\n\nfailures:\n\n---- m::vm_b stdout ----\nboom\n\nfailures:\n    m::vm_b\n\ntest result: FAILED.\n");
        w("0-1.rc", "101 20\n");
        w("0-2.log", "running 1 test\ntest m::vm_c ... ");
        w("0-2.rc", "124 90000\n");
        w("0-3.log", "running 1 test\ntest m::vm_d ... ");
        let ok = read_outcome(&d, 0, 0, "m::vm_a", 90);
        assert!(ok.failure.is_none());
        assert_eq!(ok.seconds, Some(1.5));
        let failed = read_outcome(&d, 0, 1, "m::vm_b", 90);
        assert!(matches!(&failed.failure, Some(Failure::Failed(o)) if o.contains("boom")));
        let hung = read_outcome(&d, 0, 2, "m::vm_c", 90);
        assert!(matches!(hung.failure, Some(Failure::TimedOut(90, _))));
        let died = read_outcome(&d, 0, 3, "m::vm_d", 90);
        assert!(matches!(died.failure, Some(Failure::NoOutcome(_, None))));
        let never = read_outcome(&d, 0, 4, "m::vm_e", 90);
        assert!(matches!(never.failure, Some(Failure::NeverRan)));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn parse_args_reads_every_option() {
        let a = parse_args(
            &[
                "--filter",
                "gadget",
                "--keep-going",
                "--verbose",
                "--timeout",
                "90",
                "-p",
                "x",
            ]
            .map(String::from),
        )
        .expect("valid options");
        assert_eq!(a.filter.as_deref(), Some("gadget"));
        assert!(a.keep_going && a.verbose);
        assert_eq!(a.timeout, Some(90));
        assert_eq!(a.packages, vec!["x"]);
        assert!(parse_args(&["--bogus".to_string()]).is_err());
        assert!(parse_args(&["--timeout".to_string()]).is_err());
    }
}
