//! `cargo xtask hw-test`: the hw-tests crate against real hardware.
//!
//! - BlinkStick tests (every report, each LED, animations; replug with `--replug`) run
//!   on the stick named by `--blinkstick SERIAL`, or on the only one attached.
//! - The drive test DESTROYS a USB drive through `extbackup prepare` and `extbackup run`,
//!   only with `--drive /dev/sdX --yes-destroy`; it refuses a drive that is not a whole
//!   USB disk or that is mounted, and `--drive` without `--yes-destroy`.
//!
//! What is absent is skipped with the reason; with no hardware at all the task prints
//! what it would run and exits 0. See docs/hardware-testing.md.

use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "cargo xtask hw-test [--blinkstick SERIAL] [--replug] \
[--drive /dev/sdX --yes-destroy]";

/// Options of `cargo xtask hw-test`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    blinkstick: Option<String>,
    replug: bool,
    drive: Option<PathBuf>,
    yes_destroy: bool,
}

fn parse_args(args: &[String]) -> Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--blinkstick" => {
                a.blinkstick = Some(
                    it.next()
                        .cloned()
                        .with_context(|| format!("--blinkstick needs a serial\nusage: {USAGE}"))?,
                )
            }
            "--replug" => a.replug = true,
            "--drive" => {
                a.drive = Some(PathBuf::from(it.next().with_context(|| {
                    format!("--drive needs a device path\nusage: {USAGE}")
                })?))
            }
            "--yes-destroy" => a.yes_destroy = true,
            "-h" | "--help" => bail!("usage: {USAGE}"),
            other => bail!("unknown option `{other}`\nusage: {USAGE}"),
        }
    }
    if a.drive.is_some() && !a.yes_destroy {
        bail!(
            "refusing to touch {}: the drive test erases it completely; add --yes-destroy \
             if that is what you want",
            a.drive.as_deref().unwrap_or(Path::new("?")).display()
        );
    }
    if a.yes_destroy && a.drive.is_none() {
        bail!("--yes-destroy needs --drive /dev/sdX naming the drive to erase");
    }
    Ok(a)
}

/// A BlinkStick seen in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stick {
    serial: String,
    product: String,
    bcd: String,
}

fn attached_sticks(root: &Path) -> Vec<Stick> {
    let read = |p: PathBuf| {
        fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<Stick> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            read(p.join("idVendor")).eq_ignore_ascii_case("20a0")
                && read(p.join("idProduct")).eq_ignore_ascii_case("41e5")
        })
        .map(|p| Stick {
            serial: read(p.join("serial")),
            product: read(p.join("product")),
            bcd: read(p.join("bcdDevice")),
        })
        .collect();
    out.sort_by(|a, b| a.serial.cmp(&b.serial));
    out
}

/// One hardware test group and whether it runs.
#[derive(Debug, PartialEq, Eq)]
struct Planned {
    tests: &'static [&'static str],
    run: Result<(), String>,
}

const STICK_TESTS: &[&str] = &[
    "blinkstick_hw::hw_blinkstick_every_report_round_trips",
    "blinkstick_hw::hw_blinkstick_each_led_lights_in_turn",
    "blinkstick_hw::hw_blinkstick_animations_end_where_they_should",
];
const REPLUG_TESTS: &[&str] = &["blinkstick_hw::hw_blinkstick_survives_replug"];
const DRIVE_TESTS: &[&str] = &["drive_hw::hw_drive_prepare_then_backup_run"];

/// Picks the stick: the named one (which must be attached) or the only one attached.
fn choose_stick(named: Option<&str>, attached: &[Stick]) -> Result<Result<String, String>> {
    match named {
        Some(s) => {
            if attached.iter().any(|a| a.serial == s) {
                Ok(Ok(s.to_string()))
            } else {
                bail!(
                    "no BlinkStick with serial {s} is attached (attached: {})",
                    if attached.is_empty() {
                        "none".to_string()
                    } else {
                        attached
                            .iter()
                            .map(|a| a.serial.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )
            }
        }
        None => Ok(match attached {
            [] => Err("no BlinkStick attached (VID 20a0 PID 41e5 not in /sys/bus/usb)".into()),
            [one] => Ok(one.serial.clone()),
            many => Err(format!(
                "{} BlinkSticks attached ({}): name one with --blinkstick SERIAL",
                many.len(),
                many.iter()
                    .map(|a| a.serial.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }),
    }
}

/// Checks the named drive: a whole disk on USB, nothing of it mounted. Returns a line
/// describing it.
fn check_drive(drive: &Path) -> Result<String> {
    let meta =
        fs::metadata(drive).with_context(|| format!("{} does not exist", drive.display()))?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_block_device() {
        bail!("{} is not a block device", drive.display());
    }
    let name = drive
        .file_name()
        .and_then(|n| n.to_str())
        .context("odd device path")?;
    let sys = Path::new("/sys/class/block").join(name);
    if !sys.join("device").exists() {
        bail!(
            "{} is not a whole disk (a partition or a virtual device); name the disk, e.g. /dev/sdb",
            drive.display()
        );
    }
    let real = fs::canonicalize(&sys).unwrap_or_default();
    if !real.to_string_lossy().contains("/usb") {
        bail!(
            "{} is not on a USB bus ({}); the drive test only erases USB drives",
            drive.display(),
            real.display()
        );
    }
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dev = drive.display().to_string();
    if let Some(m) = mounts.lines().find(|l| l.starts_with(&dev)) {
        bail!("{dev} (or a partition of it) is mounted: `{m}`; unmount it first");
    }
    let read = |f: &str| {
        fs::read_to_string(sys.join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let size = read("size").parse::<u64>().unwrap_or(0) * 512;
    Ok(format!(
        "{dev}: {} {} ({:.1} GB)",
        read("device/vendor"),
        read("device/model"),
        size as f64 / 1e9
    ))
}

/// `cargo xtask hw-test`.
pub fn run(args: &[String]) -> Result<()> {
    let a = parse_args(args)?;
    let sticks = attached_sticks(Path::new("/sys/bus/usb/devices"));
    let stick = choose_stick(a.blinkstick.as_deref(), &sticks)?;
    let mut plan = vec![Planned {
        tests: STICK_TESTS,
        run: stick.clone().map(|_| ()),
    }];
    plan.push(Planned {
        tests: REPLUG_TESTS,
        run: match (&stick, a.replug) {
            (Err(e), _) => Err(e.clone()),
            (Ok(_), false) => Err("needs a person to replug the stick: add --replug".into()),
            (Ok(_), true) => Ok(()),
        },
    });
    let mut env: Vec<(String, String)> = Vec::new();
    if let Ok(s) = &stick {
        env.push(("BLINKSTICK_SERIAL".into(), s.clone()));
        let st = sticks
            .iter()
            .find(|x| &x.serial == s)
            .expect("chosen from the list");
        println!(
            "hw-test: BlinkStick {} {} (bcdDevice {})",
            st.product, st.serial, st.bcd
        );
    }
    if a.replug {
        env.push(("BLINKSTICK_REPLUG".into(), "1".into()));
    }
    let drive_run = match &a.drive {
        None => Err("no drive named: --drive /dev/sdX --yes-destroy".to_string()),
        Some(d) => {
            let what = check_drive(d)?;
            println!("hw-test: WILL ERASE {what} (extbackup prepare, then extbackup run)");
            match build_extbackup() {
                Ok(bin) => {
                    let ds = d.display().to_string();
                    env.push(("EXTBACKUP_TEST_DRIVE".into(), ds.clone()));
                    env.push(("EXTBACKUP_TEST_DRIVE_CONFIRM".into(), ds));
                    env.push(("EXTBACKUP_BIN".into(), bin.display().to_string()));
                    Ok(())
                }
                Err(e) => Err(format!("the extbackup binary does not build: {e:#}")),
            }
        }
    };
    plan.push(Planned {
        tests: DRIVE_TESTS,
        run: drive_run,
    });

    let mut selected: Vec<&str> = Vec::new();
    for p in &plan {
        for t in p.tests {
            match &p.run {
                Ok(()) => {
                    println!("hw-test: run  {t}");
                    selected.push(t);
                }
                Err(why) => println!("hw-test: SKIP {t}: {why}"),
            }
        }
    }
    if selected.is_empty() {
        println!("hw-test: no hardware to test; nothing run");
        return Ok(());
    }
    let root = util::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "test",
            "-p",
            "hw-tests",
            "--features",
            "hardware",
            "--test",
            "it",
            "--",
            "--exact",
            "--test-threads=1",
            "--nocapture",
        ])
        .args(&selected)
        .envs(env);
    util::run(&mut cmd)
}

/// Builds the extbackup binary (debug) and returns its path.
fn build_extbackup() -> Result<PathBuf> {
    let root = util::root();
    util::cargo(
        &root,
        &["build", "-p", "extbackup", "--bin", "extbackup"],
        &[],
    )?;
    let bin = root.join("target/debug/extbackup");
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn drive_without_yes_destroy_is_refused() {
        let e = args(&["--drive", "/dev/sdz"]).expect_err("must refuse");
        assert!(format!("{e:#}").contains("--yes-destroy"), "{e:#}");
        assert!(args(&["--yes-destroy"]).is_err());
        let a = args(&["--drive", "/dev/sdz", "--yes-destroy"]).expect("named and confirmed");
        assert_eq!(a.drive.as_deref(), Some(Path::new("/dev/sdz")));
    }

    #[test]
    fn choose_stick_takes_the_named_or_the_only_one() {
        let s = |serial: &str| Stick {
            serial: serial.into(),
            product: "BlinkStick".into(),
            bcd: "0200".into(),
        };
        assert!(choose_stick(None, &[]).expect("no error").is_err());
        assert_eq!(
            choose_stick(None, &[s("BS1-3.0")]).expect("ok"),
            Ok("BS1-3.0".to_string())
        );
        let two = [s("BS1-3.0"), s("BS2-3.0")];
        assert!(choose_stick(None, &two).expect("ok").is_err());
        assert_eq!(
            choose_stick(Some("BS2-3.0"), &two).expect("ok"),
            Ok("BS2-3.0".to_string())
        );
        assert!(
            choose_stick(Some("BS9-3.0"), &two).is_err(),
            "named but absent"
        );
    }

    #[test]
    fn attached_sticks_filters_by_vid_pid() {
        let d = std::env::temp_dir().join(format!("xtask-hw-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        for (dir, vid, serial) in [("1-1", "20a0", "BS1-3.0"), ("1-2", "046d", "X")] {
            let p = d.join(dir);
            fs::create_dir_all(&p).expect("mkdir");
            fs::write(p.join("idVendor"), vid).expect("write");
            fs::write(p.join("idProduct"), "41e5").expect("write");
            fs::write(p.join("serial"), serial).expect("write");
        }
        let found = attached_sticks(&d);
        let _ = fs::remove_dir_all(&d);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].serial, "BS1-3.0");
    }

    #[test]
    fn check_drive_refuses_what_is_not_a_usb_disk() {
        assert!(check_drive(Path::new("/nonexistent/sdq")).is_err());
        assert!(
            check_drive(Path::new("/dev/null")).is_err(),
            "not a block device"
        );
    }
}
