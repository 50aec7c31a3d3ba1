//! `cargo xtask demo`: the whole story on this machine, in a temp folder.
//!
//! Installs what is missing, builds `extbackup`, makes a sample source tree and a disk
//! image on a loop device, prepares it with `extbackup prepare --yes`, runs
//! `extbackup run` with the console indicator and the file mail transport, then shows the
//! LED states, the mail and `extbackup status`, and cleans up the loop device.
//!
//! Real LUKS needs dm-crypt in the kernel. Where it is missing (many CI and container
//! kernels) the demo says so and runs inside a QEMU guest whose kernel has it (see
//! `cargo xtask vm-test`); `--host` keeps it on this kernel with the loopback-test backend
//! (the same pipeline, no encryption).

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{deps, util};

const HELP: &str = "\
cargo xtask demo [--vm | --host] [--keep]

Without an option the demo uses real LUKS: on this kernel when it has dm-crypt, otherwise
inside a QEMU guest (Debian's kernel, fetched once into target/vm-cache; about a minute).

  --vm     always run the demo inside the QEMU guest
  --host   always run it on this kernel; without dm-crypt that means the loopback-test
           crypt backend (the same pipeline, but the drive is NOT encrypted)
  --keep   keep the temp folder (source, image, config, mail) for a look
";

/// Whether this kernel can activate dm-crypt mappings.
pub fn have_dm_crypt() -> bool {
    let misc = fs::read_to_string("/proc/misc").unwrap_or_default();
    misc.lines().any(|l| l.ends_with(" device-mapper"))
        || Path::new("/sys/module/dm_crypt").exists()
}

/// Entry point.
pub fn run(args: &[String]) -> Result<()> {
    let (mut vm, mut host, mut keep, mut no_build) = (false, false, false, false);
    for a in args {
        match a.as_str() {
            "--vm" => vm = true,
            "--host" => host = true,
            "--keep" => keep = true,
            // Used inside the guest, where the checkout is read-only.
            "--no-build" => no_build = true,
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            other => bail!("unknown option `{other}` for `cargo xtask demo`\n\n{HELP}"),
        }
    }
    if !util::is_root() {
        bail!("the demo needs root (loop devices, mounts): run it as root, e.g. `sudo cargo xtask demo`");
    }
    let root = util::root();
    if !no_build {
        deps::ensure(deps::Set::All)?;
        util::cargo(&root, &["build", "--quiet", "-p", "extbackup"], &[])?;
    }
    if vm && host {
        bail!("--vm and --host contradict each other\n\n{HELP}");
    }
    let exe = root.join("target/debug/extbackup");
    let real_luks = have_dm_crypt();
    if vm || (!real_luks && !host) {
        if !real_luks {
            println!(
                "== this kernel has NO device-mapper/dm-crypt (see /proc/misc), so real LUKS \
                 volumes cannot be opened here: the demo runs in a QEMU guest whose kernel has \
                 it.\n   `cargo xtask demo --host` runs it here with the loopback-test backend \
                 instead (no encryption)."
            );
        }
        return in_vm(&root);
    }
    if real_luks {
        println!("== this kernel has dm-crypt: the demo uses real LUKS2 (libcryptsetup)");
    } else {
        println!(
            "== this kernel has NO device-mapper/dm-crypt (see /proc/misc), so real LUKS volumes \
             cannot be opened here.\n   The demo uses the loopback-test crypt backend instead: \
             the same pipeline, but the drive is NOT encrypted.\n   `cargo xtask demo` without \
             --host runs it with real LUKS inside a QEMU guest."
        );
    }
    let dir = std::env::temp_dir().join(format!("extbackup-demo-{}", std::process::id()));
    let result = demo(&exe, &dir, real_luks);
    if keep {
        println!("== kept {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn in_vm(root: &Path) -> Result<()> {
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    println!("== booting a QEMU guest (Debian kernel with dm-crypt); this takes a minute");
    let out = crate::vm::run_in_guest(
        &[
            xtask.to_str().context("xtask path is not UTF-8")?,
            "demo",
            "--no-build",
        ],
        &crate::vm::GuestOpts {
            cwd: Some(root.to_path_buf()),
            timeout: std::time::Duration::from_secs(420),
            ..Default::default()
        },
    )?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    if !out.success() {
        bail!("the demo failed in the guest (exit {})", out.exit_code);
    }
    Ok(())
}

/// Detaches the loop device on drop.
struct LoopDev(String);

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
        println!("== detached {}", self.0);
    }
}

fn extbackup(exe: &Path, config: &Path, args: &[&str]) -> Result<Output> {
    let out = Command::new(exe)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("EXTBACKUP_ALLOW_LOOPBACK_CRYPT", "1")
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    Ok(out)
}

fn show(title: &str, text: &[u8]) {
    println!("-- {title}");
    for l in String::from_utf8_lossy(text).lines() {
        println!("   {l}");
    }
}

fn demo(exe: &Path, dir: &Path, real_luks: bool) -> Result<()> {
    fs::create_dir_all(dir.join("mail"))?;
    // A sample source tree.
    let src = dir.join("source");
    for (p, body) in [
        (
            "documents/letter.txt",
            "Dear future me,\nthis file is backed up.\n".repeat(20),
        ),
        (
            "documents/notes.md",
            "# Notes\n\n- plug the drive in\n- walk away\n".into(),
        ),
        (
            "photos/2026/readme.txt",
            "holiday pictures go here\n".into(),
        ),
    ] {
        let path = src.join(p);
        fs::create_dir_all(path.parent().expect("has a parent"))?;
        fs::write(path, body)?;
    }
    let mut x: u32 = 12345;
    let photo: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    fs::write(src.join("photos/2026/beach.raw"), photo)?;
    println!("== sample source tree: {}", src.display());

    // A 64 MiB disk image on a loop device.
    let img = dir.join("drive.img");
    fs::File::create(&img)?.set_len(64 << 20)?;
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&img)
        .output()
        .context("running losetup")?;
    if !out.status.success() {
        bail!(
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dev = LoopDev(String::from_utf8_lossy(&out.stdout).trim().to_string());
    println!("== disk image {} on {}", img.display(), dev.0);

    let config = dir.join("config.toml");
    let d = dir.display();
    fs::write(
        &config,
        format!(
            r#"# extbackup demo configuration
source = "{d}/source"
state_dir = "{d}/state"
mount_root = "{d}/mnt"

[source_lock]
path = "{d}/source.lock"
timeout_secs = 10

[indicator]
backend = "console"

[mail]
to = ["you@example.org"]
transport = {{ kind = "file", dir = "{d}/mail" }}

[crypt]
backend = "{backend}"

[policy]
# The demo's source is a plain folder, not a mounted filesystem.
require_source_mount_point = false
"#,
            backend = if real_luks {
                "libcryptsetup"
            } else {
                "loopback-test"
            }
        ),
    )?;

    println!("\n== $ extbackup prepare {} --name demo-a --yes", dev.0);
    let keys = dir.join("keys");
    let out = extbackup(
        exe,
        &config,
        &[
            "prepare",
            &dev.0,
            "--name",
            "demo-a",
            "--yes",
            "--no-recovery-passphrase",
            "--keys-dir",
            path_str(&keys)?,
        ],
    )?;
    show("prepare says", &out.stdout);
    if !out.status.success() {
        show("log", &out.stderr);
        bail!("prepare failed ({})", out.status);
    }

    println!("\n== $ extbackup run --device {}", dev.0);
    let out = extbackup(exe, &config, &["run", "--device", &dev.0])?;
    show(
        "the log (stderr; journald keeps it under systemd)",
        &out.stderr,
    );
    show("the LED states (console indicator)", &out.stdout);
    println!(
        "-- exit code {:?} (0 done, 75 not ours, 1 failed)",
        out.status.code()
    );
    if !out.status.success() {
        bail!("the run failed");
    }

    let mails = mail_files(&dir.join("mail"))?;
    for m in &mails {
        let raw = String::from_utf8_lossy(&fs::read(m)?).into_owned();
        show(
            &format!("the mail {} (quoted-printable decoded)", m.display()),
            decode_qp(&raw).as_bytes(),
        );
    }

    println!("\n== $ extbackup status");
    let out = extbackup(exe, &config, &["status"])?;
    show("status", &out.stdout);
    println!("\n== done: the drive is closed and safe to remove (the LED would be green)");
    Ok(())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("temp path is not UTF-8")
}

fn mail_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    v.sort();
    Ok(v)
}

/// Undoes quoted-printable soft line breaks and `=XX` escapes, for showing the mail.
fn decode_qp(s: &str) -> String {
    let joined = s.replace("=\r\n", "").replace("=\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
