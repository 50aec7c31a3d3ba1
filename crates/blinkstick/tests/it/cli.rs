//! The `blinkstick` binary: options, exit status, and the seed's commands on an
//! in-process emulated stick (`BLINKSTICK_EMULATE`, reports checked through `--trace`).

use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blinkstick"));
    c.env_remove("BLINKSTICK_EMULATE");
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("running blinkstick");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn emulated(spec: &str) -> Command {
    let mut c = bin();
    c.env("BLINKSTICK_EMULATE", spec);
    c
}

#[test]
fn help_lists_every_option() {
    let (code, out, _) = run(bin().arg("--help"));
    assert_eq!(code, 0);
    for opt in [
        "-i, --info",
        "-s, --serial",
        "--channel",
        "--index",
        "--brightness",
        "--limit",
        "--set-color",
        "--inverse",
        "--set-led-count",
        "--blink",
        "--pulse",
        "--morph",
        "--duration",
        "--delay",
        "--repeats",
        "--set-mode",
        "--set-infoblock1",
        "--set-infoblock2",
        "--add-udev-rule",
        "--print",
        "--list",
        "--trace",
        "-v, --verbose",
        "[COLOR]",
    ] {
        assert!(out.contains(opt), "--help lacks {opt}:\n{out}");
    }
}

#[test]
#[cfg(any(feature = "hidapi", feature = "rusb"))]
fn no_stick_is_an_error_with_status_1() {
    // (Not a vm_ test: the guest, which may serve uhid sticks, never runs it.)
    let (code, _, err) = run(bin().args(["--set-color", "red"]));
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains("no BlinkStick found"), "{err}");
}

/// One emulated BlinkStick Square.
const SQUARE: &str = "square:BS000001-3.0";

/// Runs `blinkstick ARGS` (`args` split at spaces) on the emulated sticks `spec`, expects
/// exit status 0, and returns its stdout and stderr (where `--trace` writes the reports).
#[track_caller]
fn ok(spec: &str, args: &str) -> (String, String) {
    let (code, out, err) = run(emulated(spec).args(args.split_whitespace()));
    assert_eq!(code, 0, "{err}");
    (out, err)
}

/// Asserts that `text` contains each of `wanted`.
#[track_caller]
fn assert_has(text: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(text.contains(w), "{text}");
    }
}

#[test]
fn seed_start_command_sends_report5() {
    let (_, err) = ok(SQUARE, "--trace --index 1 --limit 10 --set-color 33c280");
    assert_has(&err, &["set 05 00 01 05 13 0c"]);
}

#[test]
fn seed_stop_command_and_positional_colour() {
    let (_, err) = ok(SQUARE, "--trace --index 1 --limit 10 --set-color green");
    assert_has(&err, &["set 05 00 01 00 0c 00"]);
    let (_, err) = ok(SQUARE, "--trace green");
    assert_has(&err, &["set 01 00 80 00"]);
}

#[test]
fn acts_on_all_sticks_without_serial_and_one_with() {
    let spec = "square:BS000001-3.0,nano:BS000002-3.0";
    let (_, err) = ok(spec, "--trace --set-color #010203");
    assert_has(
        &err,
        &[
            "BS000001-3.0 set 01 01 02 03",
            "BS000002-3.0 set 01 01 02 03",
        ],
    );
    let (_, err) = ok(spec, "--trace -s BS000002-3.0 red");
    assert!(!err.contains("BS000001-3.0 set"), "{err}");
    assert_has(&err, &["BS000002-3.0 set 01 ff 00 00"]);
}

#[test]
fn unknown_serial_or_colour_is_an_error() {
    let (code, _, err) = run(emulated(SQUARE).args(["-s", "BS7", "red"]));
    assert_eq!(code, 1);
    assert!(err.contains("BS7"), "{err}");
    let (code, _, err) = run(emulated(SQUARE).args(["--trace", "greenish"]));
    assert_eq!(code, 1);
    assert!(err.contains("`greenish`"), "{err}");
    assert!(!err.contains(" set "), "nothing sent: {err}");
}

#[test]
fn inverse_and_brightness() {
    let (_, err) = ok(SQUARE, "--trace --brightness 10 --inverse 33c280");
    assert_has(&err, &["set 01 fa ec f3"]);
}

#[test]
fn info_mode_led_count_and_blocks() {
    let args = "--trace --set-infoblock1 nas --set-mode 3 --set-led-count 12 --info";
    let (out, err) = ok("flex:BS000006-3.0", args);
    assert_has(&out, &["BlinkStick Flex", "BS000006-3.0"]);
    assert_has(&err, &["set 04 03", "set 81 0c", "set 02 6e 61 73 00"]);
}

#[test]
fn nano_mode_1_warns() {
    let (_, err) = ok("nano:BS000005-3.0", "--set-mode 1");
    assert!(err.contains("warning") && err.contains("dark"), "{err}");
}

#[test]
fn blink_sends_on_and_off_at_the_index() {
    let (_, err) = ok(
        SQUARE,
        "--trace --blink --repeats 2 --delay 10 --index 2 blue",
    );
    let sets: Vec<&str> = err.lines().filter(|l| l.contains(" set ")).collect();
    assert_eq!(sets.len(), 4, "{err}");
    assert!(sets[0].ends_with("05 00 02 00 00 ff"));
    assert!(sets[3].ends_with("05 00 02 00 00 00"));
}

#[test]
fn udev_rules_print_and_write() {
    let (code, out, _) = run(bin().args(["--add-udev-rule", "--print"]));
    assert_eq!(code, 0);
    assert!(out.contains("SUBSYSTEM==\"hidraw\""), "{out}");
    assert!(out.contains("SUBSYSTEM==\"usb\""), "{out}");
    // Group plugdev and the desktop user, never world-writable (the Python tool's 0666).
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        for must in ["MODE=\"0660\"", "GROUP=\"plugdev\"", "TAG+=\"uaccess\""] {
            assert!(line.contains(must), "{must} in {line}");
        }
    }
    assert!(!out.contains("0666"), "{out}");
    let dir = std::env::temp_dir().join(format!("blinkstick-udev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("85-blinkstick.rules");
    let (code, _, err) = run(bin()
        .args(["--add-udev-rule", "--udev-rules-file"])
        .arg(&file));
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, out);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn list_shows_serial_and_variant() {
    let (out, _) = ok("pro:BS000002-2.0,nano:BS000005-3.0", "--list");
    assert_has(&out, &["BS000002-2.0\tpro", "BS000005-3.0\tnano"]);
}

#[test]
fn endless_pulse_starts_at_once_in_constant_memory() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    // 4294967295 pulses would be ~100 GB of frames if they were made before the first one
    let mut child = emulated(SQUARE)
        .args(["--trace", "--pulse", "--repeats", "4294967295", "red"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting blinkstick");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut sets = Vec::new();
    // a wait for the child's output, not a speed target
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sets.len() < 3 {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(" set ") => sets.push(l),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(still_running, "blinkstick exited early; frames: {sets:?}");
    assert_eq!(sets.len(), 3, "{sets:?}");
    assert!(sets[0].ends_with("set 01 00 00 00"), "starts off: {sets:?}");
}
