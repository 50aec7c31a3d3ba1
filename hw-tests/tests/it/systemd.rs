//! The plug-in journey under a real systemd (guest booted with systemd 252 as PID 1 by
//! `cargo xtask vm-test`, which runs every `vm_systemd_*` test in that boot):
//! `extbackup install` → a drive is plugged in (a USB mass-storage gadget on dummy_hcd: a
//! real hot-plug, udev `add`) → the udev rule's `SYSTEMD_WANTS` → PID 1 starts
//! `extbackup@UUID.service` in its sandbox → the emulated BlinkStick (uhid) shows the
//! colours, read back from the device → a real SMTP server (python3-aiosmtpd) gets the mail.
//!
//! Everything a unit reads lives under /var/lib (the units have a private /tmp).

use blinkstick::emulator::{uhid::UhidDevice, EmulatedDevice};
use blinkstick::{Rgb, Variant};
use hw_tests::storage::UsbDisk;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::sh;

const GREEN: Rgb = Rgb { r: 0, g: 255, b: 0 };
const RED: Rgb = Rgb { r: 255, g: 0, b: 0 };
/// How long a unit may take under TCG before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// The extbackup binary vm-test built (the test copies it in place with `install`).
fn extbackup_bin() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("extbackup"))
        .find(|p| p.is_file())
        .expect("the extbackup binary is built (cargo xtask vm-test builds the workspace)")
}

/// The `blinkstick` binary vm-test built, copied to /usr/local/bin (on the units' PATH;
/// the guest's /usr is an in-memory overlay) while it lives.
struct BlinkstickOnPath(PathBuf);

impl BlinkstickOnPath {
    fn new() -> Self {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        let from = ["debug", "release"]
            .iter()
            .map(|p| target.join(p).join("blinkstick"))
            .find(|p| p.is_file())
            .expect("the blinkstick binary is built (cargo xtask vm-test builds the workspace)");
        let to = PathBuf::from("/usr/local/bin/blinkstick");
        std::fs::copy(&from, &to).expect("copying blinkstick to /usr/local/bin");
        BlinkstickOnPath(to)
    }
}

impl Drop for BlinkstickOnPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn require_systemd() {
    assert!(
        Path::new("/run/systemd/system").is_dir(),
        "systemd is not PID 1: vm_systemd_* tests run in the guest's systemd boot \
         (cargo xtask vm-test --filter vm_systemd)"
    );
}

/// One test's world: config, source, state and keys under /var/lib, an SMTP server, an
/// emulated BlinkStick, and the installed rule and units.
struct Rig {
    dir: PathBuf,
    config: PathBuf,
    bin: PathBuf,
    stick: EmulatedDevice,
    _uhid: UhidDevice,
    smtp: Child,
    smtp_port: u16,
    mail: PathBuf,
    units: Vec<String>,
}

impl Rig {
    fn new(name: &str, extra_config: &str) -> Rig {
        require_systemd();
        let dir = PathBuf::from(format!("/var/lib/extbackup-it/{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/sub")).unwrap();
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        std::fs::write(dir.join("src/a.txt"), "alpha\n").unwrap();
        std::fs::write(dir.join("src/sub/b.bin"), vec![7u8; 200_000]).unwrap();
        let serial = format!("BS{:06}-3.0", std::process::id() % 1_000_000);
        let stick = EmulatedDevice::new(Variant::Square, &serial);
        let uhid = UhidDevice::create(stick.clone()).expect("a uhid BlinkStick");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/notifier/tests/it/smtp_server.py");
        let mut smtp = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(dir.join("mail"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the SMTP server (python3-aiosmtpd)");
        let mut line = String::new();
        let _ = BufReader::new(smtp.stdout.take().unwrap()).read_line(&mut line);
        assert_eq!(line.trim(), "READY", "the SMTP server started");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"source = "{d}/src"
state_dir = "{d}/state"
mount_root = "{d}/mnt"
host = "vmhost"

[indicator]
backend = "blinkstick"
serial = "{serial}"
index = 0
limit = 100
breathe_period_ms = 600
colors = {{ working = "0000ff", success = "00ff00", failure = "ff0000", attention = "ffff00" }}
# Each test its own slots (one LED shared by jobs: an earlier test's red would stay until
# acknowledged), in the state folder, which the sandboxed unit may write.
slots_dir = "{d}/state/slots"

[mail]
to = ["root@localhost"]
from = "extbackup@vmhost"
transport = {{ kind = "smtp", host = "127.0.0.1", port = {port}, security = "none" }}

[policy]
require_source_mount_point = false
{extra_config}"#,
                d = dir.display()
            ),
        )
        .unwrap();
        Rig {
            bin: extbackup_bin(),
            mail: dir.join("mail"),
            dir,
            config,
            stick,
            _uhid: uhid,
            smtp,
            smtp_port: port,
            units: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Runs the binary vm-test built with `--config`.
    fn extbackup(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "$ extbackup {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `extbackup install`: it copies itself out of target/ to /usr/local/sbin and tells
    /// udevd and systemd.
    fn install(&self) -> String {
        let out = self.extbackup(&["install"]);
        assert!(out.status.success(), "install failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("copied"), "{text}");
        assert!(text.contains("next steps"), "{text}");
        let svc = std::fs::read_to_string("/etc/systemd/system/extbackup@.service").unwrap();
        assert!(
            svc.contains("ExecStart=/usr/local/sbin/extbackup --config "),
            "{svc}"
        );
        text
    }

    /// A 64 MiB image made a backup drive by `extbackup prepare` (through a loop device,
    /// so the USB plug-in later is the drive's first `add`). Returns (image, LUKS UUID).
    fn prepare(&self, name: &str) -> (PathBuf, String) {
        let img = self.path(&format!("{name}.img"));
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(64 << 20))
            .unwrap();
        let lo = sh(Command::new("losetup").args(["--find", "--show"]).arg(&img));
        let lo = lo.trim().to_string();
        let out = self.extbackup(&[
            "prepare",
            &lo,
            "--name",
            name,
            "--yes",
            // The journey under test does not need one (the recovery tests cover it).
            "--no-recovery-passphrase",
            "--keys-dir",
            self.path("keys").to_str().unwrap(),
        ]);
        let uuid = sh(Command::new("cryptsetup").args(["luksUUID", &lo]));
        sh(Command::new("udevadm").arg("settle"));
        sh(Command::new("losetup").args(["-d", &lo]));
        assert!(out.status.success(), "prepare failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("plug it in") || text.contains("next"),
            "prepare says what to do next: {text}"
        );
        (img, uuid.trim().to_string())
    }

    /// Plugs `img` in as a USB disk.
    fn plug(&self, tag: &str, img: &Path) -> UsbDisk {
        UsbDisk::create(&format!("sd_{tag}"), img, "BackupDisk").expect("the USB gadget disk")
    }

    fn unit_props(&self, unit: &str) -> std::collections::HashMap<String, String> {
        sh(Command::new("systemctl").args([
            "show",
            unit,
            "-p",
            "ActiveState,Result,ExecMainStatus,ExecMainCode,InvocationID,MainPID",
        ]))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Waits until `unit` has run and ended, by systemd's own journal records of it (an
    /// inactive unit that succeeded is unloaded at once, so `systemctl show` cannot tell
    /// "done" from "not started"); collects the LED colours seen meanwhile.
    fn wait_unit_done(&mut self, unit: &str) -> (UnitEnd, Vec<Rgb>) {
        self.units.push(unit.to_string());
        let t0 = Instant::now();
        let mut seen: Vec<Rgb> = Vec::new();
        loop {
            let c = self.led();
            if seen.last() != Some(&c) {
                seen.push(c);
            }
            if let Some(end) = unit_end(unit) {
                seen.push(self.led());
                return (end, seen);
            }
            assert!(
                t0.elapsed() < PATIENCE,
                "{unit} did not finish in {PATIENCE:?}: {:?}\n{}",
                self.unit_props(unit),
                journal(unit)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `unit` is active and the LED shows working (blue only).
    fn wait_working(&mut self, unit: &str) {
        self.units.push(unit.to_string());
        let t0 = Instant::now();
        loop {
            let c = self.led();
            let p = self.unit_props(unit);
            if p.get("ActiveState").map(String::as_str) == Some("activating")
                && c.r == 0
                && c.g == 0
                && c.b > 0
            {
                return;
            }
            assert!(
                t0.elapsed() < PATIENCE,
                "{unit} never showed working: {p:?} LED {c:?}\n{}",
                journal(unit)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The LED's colour, read back from the emulated device.
    fn led(&self) -> Rgb {
        self.stick.leds(0)[0]
    }

    /// The messages the SMTP server accepted, raw.
    fn mails(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.mail)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "msg"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect()
    }

    /// The failure unit of drive `uuid` ran and succeeded, turned the LED red and sent one
    /// mail; returns the mails.
    fn failure_reported(&mut self, uuid: &str) -> Vec<String> {
        let failed = format!("extbackup-failed@{uuid}.service");
        let (fp, _) = self.wait_unit_done(&failed);
        let flog = journal(&failed);
        assert_eq!(fp.result, "success", "{fp:?}\n{flog}");
        assert_eq!(self.led(), RED, "{flog}");
        let mails = self.wait_mails(1);
        assert_eq!(mails.len(), 1, "{mails:?}\n{flog}");
        mails
    }

    /// Waits for `n` mails (a mail may follow the unit's end: OnFailure= runs after it).
    fn wait_mails(&self, n: usize) -> Vec<String> {
        let t0 = Instant::now();
        loop {
            let m = self.mails();
            if m.len() >= n || t0.elapsed() > PATIENCE {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.smtp.kill();
        let _ = self.smtp.wait();
        for u in &self.units {
            for verb in ["stop", "reset-failed"] {
                let _ = Command::new("systemctl")
                    .args([verb, u])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a unit's run ended, from PID 1's journal messages about it.
#[derive(Debug)]
struct UnitEnd {
    /// `success`, or the unit's result on failure (`exit-code`, `signal`...).
    result: String,
    /// The main process's exit status when systemd logged it (it does on a failure).
    exit_status: Option<String>,
}

/// PID 1's "deactivated successfully" (7ad2d189...) or "failed with result" (d9b373ed...)
/// record for `unit`, if it has ended.
fn unit_end(unit: &str) -> Option<UnitEnd> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-o", "json", "-u", unit])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |line: &str, k: &str| {
        let pat = format!("\"{k}\":\"");
        let start = line.find(&pat)? + pat.len();
        Some(line[start..].split('"').next()?.to_string())
    };
    let exit_status = text.lines().rev().find_map(|l| field(l, "EXIT_STATUS"));
    for line in text.lines().rev() {
        match field(line, "MESSAGE_ID").as_deref() {
            Some("7ad2d189f7e94e70a38c781354912448") => {
                return Some(UnitEnd {
                    result: "success".into(),
                    exit_status,
                })
            }
            Some("d9b373ed55a64feb8242e02dbe79a49c") => {
                return Some(UnitEnd {
                    result: field(line, "UNIT_RESULT").unwrap_or_default(),
                    exit_status,
                })
            }
            _ => {}
        }
    }
    None
}

fn journal(unit: &str) -> String {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-o", "cat", "-u", unit])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn subject(mail: &str) -> &str {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
}

fn mapping_exists(drive: &str) -> bool {
    Path::new(&format!("/dev/mapper/extbackup-{drive}")).exists()
}

/// a + g: `install` first, with no drive configured; a drive prepared afterwards is
/// plugged in and backed up by PID 1's unit with no further command.
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_plug_in_backs_up_a_drive_prepared_after_install() {
    let mut rig = Rig::new("happy", "");
    let next = rig.install();
    assert!(
        next.contains("prepare"),
        "install says to prepare a drive: {next}"
    );
    let (img, uuid) = rig.prepare("offsite-a");
    assert_eq!(rig.led(), Rgb { r: 0, g: 0, b: 0 }, "LED off before");
    let unit = format!("extbackup@{uuid}.service");
    let disk = rig.plug("happy", &img);
    let (end, seen) = rig.wait_unit_done(&unit);
    let log = journal(&unit);
    assert_eq!(end.result, "success", "{end:?}\n{log}");
    assert!(
        seen.iter().any(|c| c.r == 0 && c.g == 0 && c.b > 0),
        "the LED showed working (blue): {seen:?}"
    );
    assert_eq!(rig.led(), GREEN, "green at the end: {seen:?}");
    let mails = rig.wait_mails(1);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        subject(&mails[0]),
        "extbackup: offsite-a done, safe to remove"
    );
    assert!(!mapping_exists("offsite-a"), "mapping closed");
    let st = std::fs::read_to_string(rig.path("state/drives/offsite-a.json")).unwrap();
    assert!(st.contains("\"success\""), "{st}");
    // The journal got priorities: nothing at err or worse for a good run, info lines there.
    let err =
        sh(Command::new("journalctl").args(["--no-pager", "-o", "cat", "-p", "err", "-u", &unit]));
    assert!(err.trim().is_empty() || err.contains("No entries"), "{err}");
    assert!(log.contains("closed extbackup-offsite-a"), "{log}");
    drop(disk);
}

/// b: a key file that does not open the drive: the run fails at identify (the key must
/// open the drive before it counts as ours) → red, one mail
/// naming the step (OnFailure= adds none: the run reported it), logged at priority err.
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_wrong_key_turns_red_and_mails_the_failed_step() {
    let mut rig = Rig::new("wrongkey", "");
    rig.install();
    let (img, uuid) = rig.prepare("offsite-b");
    let key = rig.path("keys/offsite-b.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, vec![1u8; 4096]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    let unit = format!("extbackup@{uuid}.service");
    let _disk = rig.plug("wrongkey", &img);
    let (end, _) = rig.wait_unit_done(&unit);
    let log = journal(&unit);
    assert_eq!(end.result, "exit-code", "{end:?}\n{log}");
    assert_eq!(end.exit_status.as_deref(), Some("1"), "{end:?}\n{log}");
    assert_eq!(rig.led(), RED);
    let mails = rig.wait_mails(1);
    assert_eq!(
        subject(&mails[0]),
        "extbackup: offsite-b FAILED at identify",
        "{mails:?}"
    );
    assert!(mails[0].contains("key"), "the mail says why: {}", mails[0]);
    // The OnFailure= unit ran and added nothing.
    let failed = format!("extbackup-failed@{uuid}.service");
    let (fp, _) = rig.wait_unit_done(&failed);
    assert_eq!(fp.result, "success", "{fp:?}\n{}", journal(&failed));
    assert_eq!(rig.mails().len(), 1, "one mail only");
    let err =
        sh(Command::new("journalctl").args(["--no-pager", "-o", "cat", "-p", "err", "-u", &unit]));
    assert!(
        err.contains("FAILED at identify"),
        "journalctl -p err finds it: {err}\n{log}"
    );
    assert!(!mapping_exists("offsite-b"));
}

/// c: the run is killed mid-copy (SIGKILL, as a crash): the unit fails, OnFailure= turns
/// the LED red, mails, and closes the mapping the dead run left open.
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_killed_run_is_reported_through_on_failure() {
    // A slow copy (rsync --bwlimit) so there is time to kill it.
    let mut rig = Rig::new(
        "killed",
        "\n[syncer]\nkind = \"rsync\"\nextra_args = [\"--bwlimit=20\"]\n",
    );
    rig.install();
    std::fs::write(rig.path("src/slow.bin"), vec![3u8; 4 << 20]).unwrap();
    let (img, uuid) = rig.prepare("offsite-c");
    let unit = format!("extbackup@{uuid}.service");
    let _disk = rig.plug("killed", &img);
    rig.wait_working(&unit);
    // Let it reach the copy: the mapping is open.
    let t0 = Instant::now();
    while !mapping_exists("offsite-c") && t0.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(mapping_exists("offsite-c"), "{}", journal(&unit));
    sh(Command::new("systemctl").args(["kill", "--kill-who=main", "--signal=SIGKILL", &unit]));
    let (end, _) = rig.wait_unit_done(&unit);
    assert_eq!(end.result, "signal", "{end:?}\n{}", journal(&unit));
    let mails = rig.failure_reported(&uuid);
    assert_eq!(subject(&mails[0]), "extbackup: offsite-c FAILED at unit");
    assert!(mails[0].contains("signal"), "{}", mails[0]);
    assert!(
        !mapping_exists("offsite-c"),
        "closed by the failure unit: {}",
        journal(&format!("extbackup-failed@{uuid}.service"))
    );
}

/// h: a LUKS drive that is not ours: its unit starts, leaves it untouched (exit 75) and
/// counts as a success; no LED change, no mail, no mapping.
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_foreign_luks_drive_is_left_alone_without_failing() {
    let mut rig = Rig::new("foreign", "");
    rig.install();
    let img = rig.path("foreign.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(32 << 20))
        .unwrap();
    let key = rig.path("foreign.key");
    std::fs::write(&key, b"someone else's drive").unwrap();
    sh(Command::new("cryptsetup")
        .args([
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
        ])
        .args(["--pbkdf-force-iterations", "1000", "--key-file"])
        .arg(&key)
        .arg(&img));
    let uuid = sh(Command::new("cryptsetup").arg("luksUUID").arg(&img));
    let uuid = uuid.trim();
    let before = std::fs::read(&img).unwrap();
    let unit = format!("extbackup@{uuid}.service");
    let disk = rig.plug("foreign", &img);
    let (end, _) = rig.wait_unit_done(&unit);
    let log = journal(&unit);
    // Exit 75 (SuccessExitStatus=) ends as a success; the run says why it left it alone.
    assert_eq!(end.result, "success", "{end:?}\n{log}");
    assert!(
        log.contains("is not a configured drive: left untouched"),
        "{log}"
    );
    drop(disk);
    assert_eq!(std::fs::read(&img).unwrap(), before, "not one byte changed");
    assert_eq!(rig.led(), Rgb { r: 0, g: 0, b: 0 }, "LED untouched");
    std::thread::sleep(Duration::from_secs(1));
    assert!(rig.mails().is_empty(), "no mail");
    let failed = journal(&format!("extbackup-failed@{uuid}.service"));
    assert!(
        failed.trim().is_empty() || failed.contains("No entries"),
        "OnFailure= did not run: {failed}"
    );
}

/// Prepares `name` with a slow copy ahead (rsync --bwlimit in the config, a 2 MiB file in
/// the source), plugs it in and waits until the copy runs (the mapping is open).
fn plugged_mid_copy(rig: &mut Rig, name: &str) -> (String, UsbDisk) {
    std::fs::write(rig.path("src/slow.bin"), vec![3u8; 2 << 20]).unwrap();
    let (img, uuid) = rig.prepare(name);
    let unit = format!("extbackup@{uuid}.service");
    let disk = rig.plug(name, &img);
    rig.wait_working(&unit);
    let t0 = Instant::now();
    // "step N/M: sync", whatever the number of steps.
    let syncing = |log: &str| {
        log.lines()
            .any(|l| l.contains("step ") && l.ends_with(": sync"))
    };
    while !syncing(&journal(&unit)) && t0.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(mapping_exists(name), "{}", journal(&unit));
    (unit, disk)
}

const SLOW: &str = "\n[syncer]\nkind = \"rsync\"\nextra_args = [\"--bwlimit=20\"]\n";

/// f: `systemctl stop` (as at shutdown) mid-copy: the copy stops, extbackup unmounts and
/// closes before `TimeoutStopSec` (no SIGKILL from systemd).
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_stop_mid_copy_unmounts_and_closes_in_time() {
    let mut rig = Rig::new("stop", SLOW);
    // With `blinkstick` on the units' PATH (as the package's /usr/bin/blinkstick), a run
    // outside systemd would leave a `--slot-watch` helper, which systemd would SIGKILL
    // here: in a unit the run starts none.
    let _bs = BlinkstickOnPath::new();
    rig.install();
    let (unit, _disk) = plugged_mid_copy(&mut rig, "offsite-f");
    sh(Command::new("systemctl").args(["stop", &unit]));
    let (end, _) = rig.wait_unit_done(&unit);
    let log = journal(&unit);
    assert!(
        !log.contains("Killing process"),
        "systemd had to SIGKILL: {log}"
    );
    assert_ne!(end.result, "timeout", "{end:?}\n{log}");
    assert!(
        log.contains("closed extbackup-offsite-f"),
        "closed on stop: {log}"
    );
    assert!(!mapping_exists("offsite-f"), "{log}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("offsite-f"), "{mounts}");
}

/// e: the drive is pulled mid-copy: the run fails (red), leaves no mapping, and the
/// journal names the cause.
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_drive_pulled_mid_copy_turns_red_and_leaves_nothing_open() {
    let mut rig = Rig::new("pulled", SLOW);
    rig.install();
    let (unit, disk) = plugged_mid_copy(&mut rig, "offsite-e");
    drop(disk);
    let (end, _) = rig.wait_unit_done(&unit);
    let log = journal(&unit);
    assert_eq!(end.result, "exit-code", "{end:?}\n{log}");
    assert_eq!(rig.led(), RED, "{log}");
    let err =
        sh(Command::new("journalctl").args(["--no-pager", "-o", "cat", "-p", "err", "-u", &unit]));
    assert!(
        err.contains("disappeared during the run (pulled?)") && err.contains("FAILED at sync"),
        "the cause at priority err: {err}\n{log}"
    );
    // The mapping goes once the kernel lets it (deferred removal after the unmount).
    let t0 = Instant::now();
    while mapping_exists("offsite-e") && t0.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!mapping_exists("offsite-e"), "{log}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("offsite-e"), "{mounts}");
    let mails = rig.wait_mails(1);
    assert!(
        subject(&mails[0]) == "extbackup: offsite-e FAILED at sync",
        "{mails:?}"
    );
}

/// d: a second drive plugged in while the first one's run copies: it waits for the run
/// lock, then both end green with one mail each.
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_second_drive_waits_for_the_first_then_both_succeed() {
    let mut rig = Rig::new(
        "two",
        "\n[syncer]\nkind = \"rsync\"\nextra_args = [\"--bwlimit=200\"]\n",
    );
    rig.install();
    let (img2, uuid2) = rig.prepare("offsite-d2");
    let (unit1, _disk1) = plugged_mid_copy(&mut rig, "offsite-d1");
    let unit2 = format!("extbackup@{uuid2}.service");
    let _disk2 = rig.plug("second", &img2);
    let (end1, _) = rig.wait_unit_done(&unit1);
    let (end2, _) = rig.wait_unit_done(&unit2);
    let (log1, log2) = (journal(&unit1), journal(&unit2));
    assert_eq!(end1.result, "success", "{log1}");
    assert_eq!(end2.result, "success", "{log2}");
    assert!(
        log2.contains("waiting for it to finish"),
        "the second run waited: {log2}"
    );
    assert_eq!(rig.led(), GREEN);
    let mails = rig.wait_mails(2);
    let mut subjects: Vec<&str> = mails.iter().map(|m| subject(m)).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "extbackup: offsite-d1 done, safe to remove",
            "extbackup: offsite-d2 done, safe to remove"
        ]
    );
}

/// c (second form): a configuration error (exit 2) fails the unit before any step; the
/// OnFailure= unit still turns the LED red and mails, with the file's [indicator] and
/// [mail] alone.
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_config_error_is_reported_through_on_failure() {
    let mut rig = Rig::new("badconfig", "");
    rig.install();
    let (img, uuid) = rig.prepare("offsite-g");
    let text = std::fs::read_to_string(&rig.config).unwrap();
    let broken = text.replacen(
        &format!("source = \"{}/src\"", rig.dir.display()),
        "source = \"relative/src\"",
        1,
    );
    assert_ne!(broken, text);
    std::fs::write(&rig.config, broken).unwrap();
    let unit = format!("extbackup@{uuid}.service");
    let _disk = rig.plug("badconfig", &img);
    let (end, _) = rig.wait_unit_done(&unit);
    let log = journal(&unit);
    assert_eq!(end.result, "exit-code", "{end:?}\n{log}");
    assert_eq!(end.exit_status.as_deref(), Some("2"), "{end:?}\n{log}");
    let mails = rig.failure_reported(&uuid);
    assert!(
        mails[0].contains("relative/src"),
        "the mail names the error: {}",
        mails[0]
    );
    assert!(!mapping_exists("offsite-g"));
}

/// Purges the package when the test ends, also when it failed half-way (the journeys that
/// run after it in the same boot must not find it).
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "extbackup"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The Debian package vm-test built from the debug binaries (`target/deb`).
fn packaged_deb() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/deb");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with("_amd64.deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no extbackup_*_amd64.deb in {}: cargo xtask vm-test builds it for \
                 vm_systemd_packaged_* (or run cargo xtask deb --debug)",
                dir.display()
            )
        })
}

/// README.md's "Install on your NAS" commands: the block after the comment that names
/// this test, one command per line, its comment cut off.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- vm_systemd_packaged_*")
        .expect("README.md marks the block vm_systemd_packaged_* runs");
    let block = &readme[start..];
    let body = &block[block.find("```sh\n").expect("a sh block follows") + 6..];
    let body = &body[..body.find("```").unwrap()];
    body.lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Runs `line` with `sh -c` in `dir` (a person's shell), with the answers typed on a
/// terminal (`script`) when `answers` are given: each one once its prompt is shown.
fn shell(line: &str, dir: &Path, answers: &[(&str, &str)]) -> String {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    eprintln!("$ {line}");
    let t0 = Instant::now();
    let mut cmd = if answers.is_empty() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", line]);
        c
    } else {
        let mut c = Command::new("script");
        c.args(["-qefc", line, "/dev/null"]);
        c
    };
    let mut child = cmd
        .current_dir(dir)
        // The recovery passphrase's argon2id at its normal cost takes minutes under TCG.
        .env("EXTBACKUP_TEST_CHEAP_PASSPHRASE_KDF", "1")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut r| {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    })
    .collect();
    let mut stdin = child.stdin.take().unwrap();
    for (prompt, answer) in answers {
        let t0 = Instant::now();
        while !seen.lock().unwrap().contains(prompt) {
            assert!(
                t0.elapsed() < PATIENCE,
                "`{line}` never asked {prompt:?}:\n{}",
                seen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    let status = child.wait().unwrap();
    for r in readers {
        let _ = r.join();
    }
    let out = seen.lock().unwrap().clone();
    eprintln!("{out}(`{line}`: {:.1} s)", t0.elapsed().as_secs_f64());
    assert!(status.success(), "`{line}` failed ({status}):\n{out}");
    out
}

/// What a person does in `sudoedit /etc/extbackup/config.toml`: the source, the source
/// lock their NAS job takes, and [mail] (the example's lines uncommented and filled in).
fn edit_config_as_a_person(path: &Path, source: &Path, smtp_port: u16) {
    let example = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut edits = 0;
    for line in example.lines() {
        let new = match line {
            l if l.starts_with("source = ") => format!("source = \"{}\"", source.display()),
            "# [source_lock]" => "[source_lock]".into(),
            "# path = \"/run/lock/backup.lock\"" => "path = \"/run/lock/backup.lock\"".into(),
            "# [mail]" => "[mail]".into(),
            l if l.starts_with("# to = ") => "to = [\"root@localhost\"]".into(),
            l if l.starts_with("# transport = { kind = \"smtp\"") => format!(
                "transport = {{ kind = \"smtp\", host = \"127.0.0.1\", port = {smtp_port}, \
                 security = \"none\" }}"
            ),
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        edits += 1;
        out.push_str(&new);
        out.push('\n');
    }
    assert_eq!(
        edits, 6,
        "the example has the lines a person edits:\n{example}"
    );
    // A quiet NAS while the copy runs (docs/configuration.md): the unit must be able to
    // put the priority back afterwards.
    out.push_str("\n[quiet]\nnice = 10\nio_class = \"idle\"\n");
    std::fs::write(path, out).unwrap();
}

fn mode(p: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

/// Files below /etc/systemd/system and /etc/udev/rules.d whose name starts with
/// `extbackup` or `90-extbackup` (units, drop-in folders, wants links, the rule).
fn installed_leftovers() -> Vec<String> {
    let mut left = Vec::new();
    for dir in [
        "/etc/systemd/system",
        "/etc/systemd/system/timers.target.wants",
        "/etc/udev/rules.d",
    ] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("extbackup") || name.starts_with("90-extbackup") {
                left.push(e.path().display().to_string());
            }
        }
    }
    left
}

/// The README's "Install on your NAS" path under PID 1, literally: the package installed
/// with apt, the example config copied and edited, `prepare` on a hot-plugged USB drive,
/// `config check`, `install`; the drive unplugged and plugged in again starts the
/// **packaged** unit: green, mail. Then `apt remove` (config, keys and state kept, nothing
/// of `install` left) and `apt purge` (state gone, config and keys still kept).
#[test]
#[ignore = "needs systemd as PID 1, dm-crypt, uhid and a USB gadget: run in the QEMU guest by cargo xtask vm-test"]
fn vm_systemd_packaged_readme_path_from_apt_install_to_green_then_remove_and_purge() {
    let mut rig = Rig::new("packaged", "");
    let deb = packaged_deb();
    // A NAS without extbackup: undo what the other journeys in this boot installed (their
    // units in /etc would hide the packaged ones, their /usr/local/sbin copy would come
    // first on PATH).
    let local = Path::new("/usr/local/sbin/extbackup"); // where `install` copies itself
    if local.exists() {
        let _ = Command::new(local).arg("uninstall").status();
        let _ = std::fs::remove_file(local);
    }
    let _purge = PurgeOnDrop;
    // The NAS's backup: a mounted file system (require_source_mount_point, the default).
    let source = rig.path("nas-backup");
    std::fs::create_dir_all(&source).unwrap();
    sh(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "nasbackup"])
        .arg(&source));
    std::fs::write(source.join("a.txt"), "alpha\n").unwrap();
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("sub/b.bin"), vec![7u8; 200_000]).unwrap();
    let img = rig.path("drive.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .unwrap();
    let disk = rig.plug("pkg", &img);
    let dev = disk.disk().display().to_string();
    let lock_mode = mode("/run/lock");

    let commands = readme_commands();
    let mut ran = Vec::new();
    for line in &commands {
        let line = line.strip_prefix("sudo ").unwrap_or(line);
        if line.starts_with("sudoedit ") {
            let file = line.split_whitespace().nth(1).unwrap();
            edit_config_as_a_person(Path::new(file), &source, rig.smtp_port);
        } else if line.starts_with("apt install ") {
            // "Copy the package to the NAS": the folder that holds it.
            shell(
                &line.replacen("apt install", "apt-get install -y", 1),
                deb.parent().unwrap(),
                &[],
            );
        } else if line.contains("/dev/sdX") {
            let out = shell(
                &line.replace("/dev/sdX", &dev),
                Path::new("/"),
                &[("Type `yes`", "yes"), ("Type `stored`", "stored")],
            );
            assert!(out.contains("prepared"), "{out}");
            assert!(
                !out.contains("remove ioctl"),
                "no device-mapper noise: {out}"
            );
        } else {
            let out = shell(line, Path::new("/"), &[]);
            if line.contains("config check") {
                assert!(out.contains(": valid"), "{out}");
            }
        }
        ran.push(
            line.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    assert_eq!(
        ran,
        [
            "apt install",
            "cp /usr/share/doc/extbackup/examples/config.toml",
            "sudoedit /etc/extbackup/config.toml",
            "extbackup prepare",
            "extbackup config",
            "extbackup install"
        ],
        "README's steps: {commands:?}"
    );
    assert_eq!(mode("/etc/extbackup"), 0o755);
    assert_eq!(mode("/etc/extbackup/keys"), 0o700);
    // install added a rule and drop-ins; the packaged units stay the ones that run.
    assert!(!Path::new("/etc/systemd/system/extbackup@.service").exists());
    assert!(Path::new("/etc/udev/rules.d/90-extbackup.rules").is_file());
    let enabled = Command::new("systemctl")
        .args(["is-enabled", "extbackup-check.timer"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "enabled");

    let cfg = std::fs::read_to_string("/etc/extbackup/config.toml").unwrap();
    let uuid = cfg
        .lines()
        .find_map(|l| l.strip_prefix("uuid = \""))
        .expect("prepare added the drive")
        .trim_end_matches('"')
        .to_string();
    let unit = format!("extbackup@{uuid}.service");
    let show =
        sh(Command::new("systemctl").args(["show", &unit, "-p", "FragmentPath,DropInPaths"]));
    // The packaged unit (/lib is /usr/lib on a merged-/usr system), not one in /etc.
    assert!(
        show.lines().any(|l| l.starts_with("FragmentPath=")
            && l.ends_with("/lib/systemd/system/extbackup@.service")
            && !l.contains("/etc/")),
        "{show}"
    );
    assert!(show.contains("50-extbackup-install.conf"), "{show}");

    // Unplug, plug in again: a real `add`, PID 1 starts the packaged unit.
    drop(disk);
    sh(Command::new("udevadm").arg("settle"));
    let disk = rig.plug("pkg2", &img);
    let (end, seen) = rig.wait_unit_done(&unit);
    let log = journal(&unit);
    assert_eq!(end.result, "success", "{end:?}\n{log}");
    // The example leaves [indicator] index at its default, 1 (the seed's `--index 1`); a
    // Square has 8 LEDs, so LED 1 shows it, dimmed by the default limit (10 %).
    let led = rig.stick.leds(0)[1];
    assert!(
        led.g > 0 && led.r == 0 && led.b == 0,
        "green at the end: {led:?} (LED 0 seen: {seen:?})\n{log}"
    );
    let mails = rig.wait_mails(1);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        subject(&mails[0]),
        "extbackup: offsite-a done, safe to remove"
    );
    assert!(log.contains("closed extbackup-offsite-a"), "{log}");
    assert!(
        log.contains("copy priority: nice 10"),
        "[quiet] applied: {log}"
    );
    assert!(
        !log.contains("putting the priority back") && !log.contains("remove ioctl"),
        "the priority came back without an error, no device-mapper noise: {log}"
    );
    assert_eq!(
        mode("/run/lock"),
        lock_mode,
        "/run/lock keeps its mode (1777)"
    );
    let st = std::fs::read_to_string("/var/lib/extbackup/drives/offsite-a.json").unwrap();
    assert!(st.contains("\"success\""), "{st}");
    drop(disk);

    // apt remove: nothing of install's left pointing at the gone binary; config, keys and
    // state kept.
    shell("apt-get remove -y extbackup", Path::new("/"), &[]);
    assert!(!Path::new("/usr/bin/extbackup").exists());
    assert!(!Path::new("/usr/lib/systemd/system/extbackup@.service").exists());
    assert_eq!(installed_leftovers(), Vec::<String>::new());
    // (systemctl exits 1 when it lists nothing)
    let units = Command::new("systemctl")
        .args(["list-unit-files", "extbackup*"])
        .output()
        .unwrap();
    let units = String::from_utf8_lossy(&units.stdout);
    assert!(units.contains("0 unit files"), "{units}");
    assert!(Path::new("/etc/extbackup/config.toml").is_file());
    assert!(Path::new("/etc/extbackup/keys/offsite-a.key").is_file());
    assert!(Path::new("/var/lib/extbackup/drives/offsite-a.json").is_file());

    // apt purge: the state goes; the configuration and the keys (they open the drives) stay.
    shell("apt-get purge -y extbackup", Path::new("/"), &[]);
    assert!(!Path::new("/var/lib/extbackup").exists());
    assert!(Path::new("/etc/extbackup/config.toml").is_file());
    assert!(Path::new("/etc/extbackup/keys/offsite-a.key").is_file());
    let status = Command::new("dpkg")
        .args(["-s", "extbackup"])
        .output()
        .unwrap();
    assert!(!status.status.success(), "purged");
    let _ = Command::new("umount").arg(&source).status();
}
