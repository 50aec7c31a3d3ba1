//! The watcher and the installed udev rule against real udev events. These need
//! systemd-udevd and new loop nodes, so they run in the QEMU guest only
//! (`cargo xtask vm-test`), which starts udevd.

use extbackup::system::install::{self, InstallPaths};
use extbackup::system::watch::{Found, Watcher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use testkit::{detach, sh, sized_file};

/// A generous bound for udev in a software-emulated guest (a wait, not a speed target).
const PATIENCE: Duration = Duration::from_secs(120);

/// A scratch directory under the (writable) temp dir.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("extbackup-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 32 MiB LUKS2 image with a cheap PBKDF; returns its path and UUID.
fn luks_image(dir: &Path, name: &str) -> (PathBuf, String) {
    let img = dir.join(format!("{name}.img"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&key, b"a test key, not a secret").unwrap();
    sized_file(&img, 32);
    sh(Command::new("cryptsetup")
        .args(["luksFormat", "--batch-mode", "--type", "luks2"])
        .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
        .arg("--key-file")
        .arg(&key)
        .arg(&img));
    let uuid = sh(Command::new("cryptsetup").arg("luksUUID").arg(&img))
        .trim()
        .to_string();
    (img, uuid)
}

/// A loop device on a node that did not exist before (only new nodes give `add`).
struct Loop {
    node: PathBuf,
}

impl Loop {
    fn attach(img: &Path) -> Loop {
        let n = (40..200)
            .find(|n| {
                !Path::new(&format!("/sys/block/loop{n}")).exists()
                    && !Path::new(&format!("/dev/loop{n}")).exists()
            })
            .expect("a free loop number");
        let node = PathBuf::from(format!("/dev/loop{n}"));
        sh(Command::new("losetup").arg(&node).arg(img));
        Loop { node }
    }
    fn sys(&self) -> PathBuf {
        Path::new("/sys/block").join(self.node.file_name().unwrap())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        detach(&self.node);
    }
}

/// A rule file in /run/udev/rules.d (the guest's / is read-only), removed on drop.
struct RuntimeRule(PathBuf);

impl Drop for RuntimeRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = Command::new("udevadm")
            .args(["control", "--reload"])
            .status();
    }
}

fn require_vm() {
    assert!(
        std::env::var_os("EXTBACKUP_IN_VM").is_some() || Path::new("/run/udev/control").exists(),
        "needs a running systemd-udevd: run in the QEMU guest by cargo xtask vm-test"
    );
}

#[test]
#[ignore = "needs udevd events: run in the QEMU guest by cargo xtask vm-test"]
fn vm_watcher_calls_back_for_a_new_luks_device_and_finds_present_ones() {
    require_vm();
    let dir = scratch("watch");
    let (ours, uuid) = luks_image(&dir, "ours");
    let (other, _) = luks_image(&dir, "other");

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel::<Found>();
    let watcher = Watcher::new([uuid.as_str()]).settle_timeout(PATIENCE);
    let w = watcher.clone();
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        w.run_notify(
            &s,
            move || ready_tx.send(()).unwrap(),
            move |f| {
                let _ = tx.send(f);
            },
        )
    });
    ready_rx.recv_timeout(PATIENCE).expect("watcher listening");

    // Not configured: no callback. Then ours: one, for its node, as an add.
    let _other_loop = Loop::attach(&other);
    let ours_loop = Loop::attach(&ours);
    let f = rx
        .recv_timeout(PATIENCE)
        .expect("a callback for the new LUKS device");
    assert_eq!(f.uuid, uuid);
    assert_eq!(f.devnode, ours_loop.node);
    assert!(!f.at_start);
    assert!(
        Path::new(&format!("/dev/disk/by-uuid/{uuid}")).exists(),
        "called back after udev settled (by-uuid link in place)"
    );
    // Every add calls back, also one udev replays for a device already known.
    sh(Command::new("udevadm")
        .args(["trigger", "--action=add"])
        .arg(ours_loop.sys()));
    let again = rx
        .recv_timeout(PATIENCE)
        .expect("a callback for the second add");
    assert_eq!(
        (again.uuid.as_str(), again.at_start),
        (uuid.as_str(), false)
    );
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap().expect("watcher ran without error");

    // A watcher started now finds the drive already present.
    let stop = AtomicBool::new(false);
    let mut found = Vec::new();
    watcher
        .run_notify(
            &stop,
            || {},
            |f| {
                found.push(f);
                stop.store(true, Ordering::Relaxed);
            },
        )
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].uuid, uuid);
    assert!(found[0].at_start);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs udevd events: run in the QEMU guest by cargo xtask vm-test"]
fn vm_installed_rule_gives_the_drive_systemd_wants() {
    require_vm();
    let dir = scratch("rule");
    let (img, uuid) = luks_image(&dir, "drive");
    let paths = InstallPaths {
        udev_dir: "/run/udev/rules.d".into(),
        ..InstallPaths::default()
    };
    let files = install::render(&[("vm-drive", uuid.as_str())], &paths).unwrap();
    let (rule_path, rule) = files[0].clone();
    assert!(rule_path.ends_with(install::RULE_FILE));
    install::write(&[(rule_path.clone(), rule)]).unwrap();
    let _rule = RuntimeRule(rule_path);
    sh(Command::new("udevadm").args(["control", "--reload"]));
    // The raw UUID is the instance: nothing escaped, no backslash for old systemd to drop.
    let unit = format!("extbackup@{uuid}.service");

    // What systemd sees: the properties of the `add` event. A new loop node's own add
    // may be probed before the image is attached (then it has no ID_FS_*, by design of
    // loop devices); a real drive's add has them. So replay an add once it is attached.
    let lp = Loop::attach(&img);
    sh(Command::new("udevadm").arg("settle"));
    let socket = udev::MonitorBuilder::new()
        .and_then(|b| b.match_subsystem("block"))
        .and_then(|b| b.listen())
        .expect("udev monitor");
    sh(Command::new("udevadm")
        .args(["trigger", "--action=add"])
        .arg(lp.sys()));
    let until = Instant::now() + PATIENCE;
    let (wants, tags) = loop {
        assert!(
            Instant::now() < until,
            "no add event for {}",
            lp.node.display()
        );
        let hit = socket.iter().find_map(|ev| {
            let d = ev.device();
            (ev.event_type() == udev::EventType::Add && d.devnode() == Some(lp.node.as_path()))
                .then(|| {
                    let p = |k: &str| {
                        d.property_value(k)
                            .map(|v| v.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    };
                    (p("SYSTEMD_WANTS"), p("TAGS"))
                })
        });
        match hit {
            Some(h) => break h,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert_eq!(wants, unit, "SYSTEMD_WANTS of the add event");
    assert!(tags.contains(":systemd:"), "TAGS={tags}");

    // udev's own dry run of the rules for an add of this device agrees.
    let out = Command::new("udevadm")
        .args(["test", "--action=add"])
        .arg(lp.sys())
        .output()
        .expect("udevadm test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.trim() == format!("SYSTEMD_WANTS={unit}")),
        "udevadm test output lacks SYSTEMD_WANTS={unit}:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.contains(install::RULE_FILE)
            && (l.contains("Invalid") || l.contains("invalid") || l.contains("error"))),
        "udevadm test complains about the rule:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
