//! One LED, many jobs: several real processes (shell scripts calling the `blinkstick`
//! binary) share one emulated stick whose state lives in files
//! (`BLINKSTICK_EMULATE_DIR`), as they would share a real one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blinkstick::emulator::Firmware;
use blinkstick::{Rgb, Variant};

const SERIAL: &str = "BS000001-3.0";

struct Bench {
    dir: PathBuf,
}

impl Bench {
    fn new(tag: &str) -> Bench {
        let dir = std::env::temp_dir().join(format!("bs-slots-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Bench { dir }
    }

    /// A shell running `script` with `$B` the binary and the emulator environment.
    fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .env("B", env!("CARGO_BIN_EXE_blinkstick"))
            .env("BLINKSTICK_EMULATE", format!("square:{SERIAL}"))
            .env("BLINKSTICK_EMULATE_DIR", self.dir.join("emu"))
            .env("BLINKSTICK_SLOTS_DIR", self.dir.join("slots"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, script: &str) -> String {
        let out = self.sh(script).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "`{script}` failed: {text}");
        text
    }

    fn spawn(&self, script: &str) -> Child {
        self.sh(script).stdout(Stdio::null()).spawn().unwrap()
    }

    /// LED 1 (the shared display's default) as the emulated firmware drives it.
    fn led(&self) -> Rgb {
        led_in(&self.dir)
    }

    /// Waits (up to 10 s: machines are shared) until the LED is `want`.
    fn wait_led(&self, want: Rgb, what: &str) {
        let t = Instant::now();
        while self.led() != want {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{what}: LED is {} instead of {want}; slots:\n{}",
                self.led(),
                self.run("$B --slots")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn led_in(dir: &Path) -> Rgb {
    let mut fw = Firmware::new(Variant::Square, SERIAL);
    if let Ok(b) = std::fs::read(dir.join("emu").join(format!("{SERIAL}.state"))) {
        assert!(fw.restore(&b), "a valid state file");
    }
    fw.led(0, 1)
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const WORKING: Rgb = Rgb::new(5, 19, 12); // 33c280 at limit 10
const RED: Rgb = Rgb::new(25, 0, 0);
const GREEN: Rgb = Rgb::new(0, 12, 0);

#[test]
fn drive_a_fails_while_b_works_red_stays_until_acknowledged() {
    let b = Bench::new("ack");
    // drive B: a job that works for a while (its slot owned by the script's shell)
    let mut drive_b = b.spawn(
        "$B --slot drive-b --state working || exit 1; \
         while [ ! -e \"$BLINKSTICK_SLOTS_DIR/go\" ]; do sleep 0.05; done; \
         $B --slot drive-b --state success",
    );
    b.wait_led(WORKING, "B working");
    // drive A, another process, starts and fails while B still works
    b.run("$B --slot drive-a --state working && $B --slot drive-a --state failure");
    assert_eq!(b.led(), RED, "A failed while B works");
    // B finishes well: red stays
    std::fs::write(b.dir.join("slots/go"), "").unwrap();
    assert!(drive_b.wait().unwrap().success());
    assert_eq!(b.led(), RED, "B's success does not hide A's failure");
    // A runs again: still red while it works, green once it succeeds (acknowledged)
    b.run("$B --slot drive-a --state working");
    assert_eq!(b.led(), RED, "a rerun of A keeps its failure showing");
    b.run("$B --slot drive-a --state success");
    assert_eq!(b.led(), GREEN, "A's next good run acknowledges its failure");
    // a new failure, acknowledged from the command line this time
    b.run("$B --slot drive-b --state failure");
    assert_eq!(b.led(), RED);
    let out = b.run("$B --slots");
    assert!(
        out.contains("drive-b\tfailure") && out.contains("LED: failure"),
        "{out}"
    );
    b.run("$B --slot drive-b --ack");
    assert_eq!(b.led(), GREEN, "acknowledged: A's success shows");
}

#[test]
fn a_killed_jobs_slot_is_cleared() {
    let b = Bench::new("kill");
    b.run("$B --slot nightly --state success");
    assert_eq!(b.led(), GREEN);
    let mut job = b.spawn("$B --slot nas-backup --state working || exit 1; exec sleep 600");
    b.wait_led(WORKING, "the job works");
    job.kill().unwrap(); // SIGKILL: the job never reports again
    job.wait().unwrap();
    // its watcher notices and redraws: the other slot's green shows again
    b.wait_led(GREEN, "after the job was killed");
    let out = b.run("$B --slots");
    assert!(
        !out.contains("nas-backup"),
        "the dead job's slot is gone: {out}"
    );
}

#[test]
fn many_concurrent_jobs_leave_a_consistent_led() {
    let b = Bench::new("many");
    let jobs: Vec<Child> = (0..6)
        .map(|i| {
            b.spawn(&format!(
                "for n in 1 2 3; do $B --slot job{i} --state working || exit 1; \
                 $B --slot job{i} --state success || exit 1; done"
            ))
        })
        .collect();
    for mut j in jobs {
        assert!(j.wait().unwrap().success());
    }
    assert_eq!(b.led(), GREEN, "every job ended well");
    let out = b.run("$B --slots");
    assert_eq!(out.matches("\tsuccess").count(), 6, "{out}");
    // one failure among them wins
    b.run("$B --slot job3 --state failure");
    assert_eq!(b.led(), RED);
}
