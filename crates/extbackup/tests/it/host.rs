//! Host end-to-end tests: real loop devices, the loopback-test crypt backend, real ext4,
//! real rsync, mail as files. As root only (they SKIP otherwise).

use crate::support::{
    mkfs_ext4, mount_at, mounted_under, read_opened_drive, root_or_skip_here, LockHolder,
    LoopDevice, World,
};
use crypt::{Crypt, LockMode};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Opens the drive read-only (outside the binary) and returns a snapshot of `data/` and
/// the run record written on the drive.
pub(crate) fn read_drive(
    w: &World,
    dev: &Path,
    name: &str,
) -> (Vec<(PathBuf, Vec<u8>, u32)>, String) {
    let c = w.check_crypt();
    let key = w.path(&format!("keys/{name}.key"));
    let mapping = format!("check-{name}");
    let mapped = c.unlock(dev, &key, &mapping).unwrap();
    let drive = read_opened_drive(&mapped, &w.path("check-mnt"));
    c.lock(&mapping, LockMode::Normal).unwrap();
    drive
}

/// The checks every failure must pass: exit 1, exactly one mail naming `step`, the source
/// untouched, nothing left mounted, red last on the indicator.
fn assert_failed_cleanly(
    w: &World,
    out: &std::process::Output,
    step: &str,
    before: &[(PathBuf, Vec<u8>, u32)],
    mails_before: usize,
) {
    assert_eq!(out.status.code(), Some(1), "exit code");
    let subjects = w.subjects();
    assert_eq!(
        subjects.len(),
        mails_before + 1,
        "exactly one new mail: {subjects:?}"
    );
    let last = subjects.last().unwrap();
    assert!(
        last.ends_with(&format!("FAILED at {step}")),
        "subject names the step {step}: {last}"
    );
    let mail = w.mails().pop().unwrap();
    assert!(mail.contains(&format!("step {step}")) || mail.contains(step));
    assert_eq!(w.source_snapshot(), before, "the source is untouched");
    assert!(
        mounted_under(w.dir.path()).is_empty(),
        "nothing left mounted"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last_state = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last_state.contains("failure"),
        "indicator ends red: {stdout}"
    );
    let st = w.drive_state("t1");
    assert_eq!(st["last_failure"]["failed_step"], step);
}

#[test]
fn prepare_then_run_mirrors_the_source_and_a_second_run_copies_only_the_change() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };

    // prepare: key file 0400, header backup, config appended with the comment kept.
    let key = w.path("keys/t1.key");
    assert_eq!(fs::read(&key).unwrap().len(), 4096);
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert!(w.path("keys/t1.luks-header").exists());
    let cfg = fs::read_to_string(&w.config).unwrap();
    assert!(cfg.starts_with("# test configuration: this comment must survive"));
    assert!(cfg.contains("[[drive]]\nname = \"t1\""), "{cfg}");
    let check = w.cmd(&["config", "check"]);
    assert_eq!(check.status.code(), Some(0));

    // First run: the drive's data equals the source.
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let working = stdout.find("working").expect("working shown");
    let success = stdout.rfind("success").expect("success shown");
    assert!(working < success, "{stdout}");
    assert!(
        mounted_under(w.dir.path()).is_empty(),
        "unmounted after the run"
    );
    let (snap, rec) = read_drive(&w, &lo.dev, "t1");
    assert_eq!(snap, w.source_snapshot(), "the drive mirrors the source");
    assert!(rec.contains("\"result\": \"success\""), "{rec}");
    let st = w.drive_state("t1");
    assert_eq!(st["last_success"]["result"], "success");
    let first_files = st["last_success"]["files_copied"].as_u64().unwrap();
    assert!(first_files >= 3, "{st}");
    assert_eq!(w.subjects(), vec!["extbackup: t1 done, safe to remove"]);

    // A change: one file edited, one added, one deleted.
    fs::write(w.path("src/a.txt"), "alpha, edited\n").unwrap();
    fs::write(w.path("src/new.txt"), "new\n").unwrap();
    fs::remove_file(w.path("src/sub/c.txt")).unwrap();
    // With hooks (the real binary runs them, the drive in their environment) and --json.
    let hooks = format!(
        "\n[[hooks.before]]\nname = \"dump\"\ncommand = [\"/bin/sh\", \"-c\", \"echo before $EXTBACKUP_DRIVE $EXTBACKUP_UUID $EXTBACKUP_MOUNT_POINT; mountpoint -q $EXTBACKUP_MOUNT_POINT && echo mounted\"]\n\
         [[hooks.after]]\nname = \"note\"\ncommand = [\"/bin/sh\", \"-c\", \"echo after $EXTBACKUP_OUTCOME >> {}\"]\n",
        w.path("after.log").display()
    );
    fs::OpenOptions::new()
        .append(true)
        .open(&w.config)
        .unwrap()
        .write_all(hooks.as_bytes())
        .unwrap();
    let out = w.cmd(&["run", "--json", "--device", lo.dev.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let uuid = w.drive_state("t1")["last_success"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mp = w.path("mnt/t1");
    assert!(
        stderr.contains(&format!("hook \"dump\": before t1 {uuid} {}", mp.display())),
        "{stderr}"
    );
    assert!(stderr.contains("hook \"dump\": mounted"), "{stderr}");
    assert_eq!(
        fs::read_to_string(w.path("after.log")).unwrap(),
        "after success\n"
    );
    // stdout: JSON objects only, one per line: every step, progress, the result.
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let steps: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"identify"));
    assert!(
        steps.contains(&"before hooks") && steps.contains(&"sync"),
        "{steps:?}"
    );
    assert_eq!(steps.last(), Some(&"close"));
    let last_progress = events
        .iter()
        .rfind(|e| e["event"] == "progress")
        .expect("progress");
    assert_eq!(last_progress["fraction"], 1.0);
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["result"], "success");
    assert_eq!(result["files_copied"], 2);
    let st = w.drive_state("t1");
    assert_eq!(
        st["last_success"]["files_copied"], 2,
        "only the change: {st}"
    );
    assert_eq!(st["last_success"]["files_deleted"], 1, "{st}");
    let (snap, _) = read_drive(&w, &lo.dev, "t1");
    assert_eq!(
        snap,
        w.source_snapshot(),
        "the drive mirrors the changed source"
    );

    // On a terminal (a pseudo-terminal from script(1)): the console indicator's state and
    // the copy's progress share one bottom line; every log line is written whole above it.
    fs::write(w.path("src/tty.txt"), "on a terminal\n").unwrap();
    let tty = Command::new("script")
        .args(["-qefc"])
        .arg(format!(
            "'{}' --config '{}' run --device '{}'",
            env!("CARGO_BIN_EXE_extbackup"),
            w.config.display(),
            lo.dev.display()
        ))
        .arg("/dev/null")
        .env("EXTBACKUP_ALLOW_LOOPBACK_CRYPT", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) runs");
    let screen = String::from_utf8_lossy(&tty.stdout);
    eprintln!("--- on a terminal\n{screen:?}");
    assert_eq!(tty.status.code(), Some(0), "{screen}");
    assert!(
        screen.contains("\r\x1b[2K"),
        "the bottom line is redrawn in place: {screen:?}"
    );
    assert!(
        screen.contains("100%") && screen.contains("/s"),
        "{screen:?}"
    );
    // What the terminal shows: for each line, what follows the last clear.
    let shown: Vec<&str> = screen
        .split('\n')
        .map(|l| l.trim_end_matches('\r').rsplit("\r\x1b[2K").next().unwrap())
        .collect();
    for l in shown.iter().filter(|l| l.contains("step ")) {
        assert!(
            !l.contains("working") && !l.contains("sync ") && !l.contains("/s"),
            "a log line ran together with the bottom line: {l:?}"
        );
    }
    assert!(
        shown.iter().any(|l| l.contains("step 9/12: sync")),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|l| l.ends_with("success: safe to remove")),
        "{shown:?}"
    );

    // status shows it, in text and JSON.
    let out = w.cmd(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("t1 (UUID"), "{text}");
    // Just now: "(0 seconds ago)", "(1 second ago)", "(3 seconds ago)".
    assert!(
        text.contains(" second ago)") || text.contains(" seconds ago)"),
        "{text}"
    );
    let out = w.cmd(&["status", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        j["drives"][0]["last_success"]["files_copied"], 1,
        "the terminal run's"
    );

    // check: fresh, no reminder; with a zero-day limit and a backdated record, a reminder.
    let out = w.cmd(&["check", "--max-age", "1"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.subjects().len(), 3, "no reminder for a fresh backup");
    let state_file = w.path("state/drives/t1.json");
    let mut st = w.drive_state("t1");
    // Written as ISO 8601; put back as seconds, the form records had before (still read).
    let finished =
        extbackup::fmt::parse_iso(st["last_success"]["finished"].as_str().unwrap()).unwrap();
    st["last_success"]["finished"] = (finished - 10 * 86_400).into();
    fs::write(&state_file, serde_json::to_vec(&st).unwrap()).unwrap();
    let out = w.cmd(&["check", "--max-age", "7"]);
    assert_eq!(out.status.code(), Some(0));
    let subjects = w.subjects();
    assert_eq!(subjects.len(), 4, "{subjects:?}");
    assert_eq!(subjects[3], "extbackup: reminder: t1 needs a backup");
    assert!(w.mails()[3].contains("10 days"), "{}", w.mails()[3]);
}

#[test]
fn a_held_source_lock_fails_at_source_lock_and_cleans_up() {
    let Some((w, lo)) = World::prepared("t1", 32) else {
        return;
    };
    let holder = LockHolder::hold(&w.path("src.lock"), 60);
    let before = w.source_snapshot();
    let out = w.run(&lo.dev);
    drop(holder);
    assert_failed_cleanly(&w, &out, "source lock", &before, 0);
}

#[test]
fn a_drive_too_small_fails_at_free_space_and_cleans_up() {
    let Some((w, lo)) = World::prepared("t1", 16) else {
        return;
    };
    // 24 MiB of incompressible data cannot fit on a 16 MiB drive.
    let mut big = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(w.path("src/big.bin"), &big).unwrap();
    let before = w.source_snapshot();
    let out = w.run(&lo.dev);
    assert_failed_cleanly(&w, &out, "free space", &before, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no space on the drive"), "{err}");
}

#[test]
fn a_wrong_key_file_fails_at_identify_and_touches_nothing() {
    let Some((w, lo)) = World::prepared("t1", 32) else {
        return;
    };
    let wrong = w.path("keys/wrong.key");
    fs::write(&wrong, vec![1u8; 4096]).unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o400)).unwrap();
    let right = w.path("keys/t1.key");
    w.edit_config(|cfg| cfg.replace(right.to_str().unwrap(), wrong.to_str().unwrap()));
    let before = w.source_snapshot();
    let out = w.run(&lo.dev);
    assert_failed_cleanly(&w, &out, "identify", &before, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("working"), "never started: {stdout}");
}

#[test]
fn a_drive_that_is_not_configured_is_skipped_with_75() {
    let Some((w, lo)) = World::blank(16) else {
        return;
    };
    let before_dev = fs::read(w.path("disk.img")).unwrap();
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(75));
    let out = w.cmd(&["run", "--uuid", "11111111-2222-4333-8444-555555555555"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(w.mails().is_empty(), "no mail for a foreign drive");
    assert_eq!(
        fs::read(w.path("disk.img")).unwrap(),
        before_dev,
        "untouched"
    );
}

#[test]
fn bad_configuration_and_usage_exit_2() {
    let w = World::new("loopback-test");
    let out = w.cmd(&["run"]);
    assert_eq!(out.status.code(), Some(2), "no --uuid/--device");
    w.edit_config(|cfg| format!("{cfg}\nbogus = 1\n"));
    let out = w.cmd(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line"), "{err}");
}

#[test]
fn prepare_refuses_a_mounted_device_and_leaves_it_alone() {
    let Some((w, lo)) = World::blank(16) else {
        return;
    };
    mkfs_ext4(&lo.dev, &[]);
    let mp = w.path("busy");
    let busy = mount_at(&lo.dev, &mp);
    fs::write(mp.join("precious"), "keep").unwrap();
    let out = w.try_prepare(&lo.dev, "t1", &[]);
    let still = fs::read_to_string(mp.join("precious"));
    drop(busy);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is mounted at"), "{err}");
    assert_eq!(still.unwrap(), "keep");
    assert!(!w.path("keys/t1.key").exists(), "no key file made");
    assert!(!fs::read_to_string(&w.config).unwrap().contains("[[drive]]"));
}

#[test]
fn prepare_refuses_an_active_swap_device_and_leaves_it_alone() {
    if !root_or_skip_here() {
        return;
    }
    let w = World::new("loopback-test");
    let lo = LoopDevice::new(&w.path("swap.img"), 16);
    crate::support::sh(Command::new("mkswap").arg(&lo.dev));
    crate::support::sh(Command::new("swapon").arg(&lo.dev));
    let before = fs::read(w.path("swap.img")).unwrap();
    let out = w.try_prepare(&lo.dev, "t1", &[]);
    let after = fs::read(w.path("swap.img")).unwrap();
    crate::support::sh(Command::new("swapoff").arg(&lo.dev));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("swap"), "{err}");
    assert!(after == before, "the swap area is untouched");
    assert!(!w.path("keys/t1.key").exists(), "no key file made");
}

#[test]
fn prepare_with_a_relative_keys_dir_writes_an_absolute_key_file() {
    let Some((w, lo)) = World::blank(32) else {
        return;
    };
    let out = w
        .command()
        .current_dir(w.dir.path())
        .args(["prepare", lo.dev.to_str().unwrap(), "--name", "t1", "--yes"])
        .args(["--keys-dir", "keys", "--no-recovery-passphrase"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let cfg = fs::read_to_string(&w.config).unwrap();
    let want = format!(
        "key_file = {:?}",
        w.path("keys/t1.key").display().to_string()
    );
    assert!(cfg.contains(&want), "{want} in\n{cfg}");
    // The configuration stays valid, from any folder.
    let out = w.cmd(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn prepare_without_yes_and_without_a_terminal_refuses() {
    let Some((w, lo)) = World::blank(16) else {
        return;
    };
    let before = fs::read(w.path("disk.img")).unwrap();
    let out = w.cmd(&["prepare", lo.dev.to_str().unwrap(), "--name", "t1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without confirmation"), "{err}");
    assert_eq!(fs::read(w.path("disk.img")).unwrap(), before, "untouched");
}

/// Runs `extbackup run` on `dev` in its own process group (as under systemd), reads its log
/// until a line containing `marker`, waits until `ready()` (polled), then sends SIGTERM.
/// Returns the log up to the marker, and the process's output whose stderr is the rest of
/// the log.
fn run_and_sigterm(
    w: &World,
    dev: &Path,
    marker: &str,
    ready: &dyn Fn() -> bool,
) -> (String, std::process::Output) {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let mut child = w
        .command()
        .args(["run", "--device", dev.to_str().unwrap()])
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        let reached = line.contains(marker);
        line.clear();
        if reached {
            break;
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "never ready: {log}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut err, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        log,
        std::process::Output {
            stderr: rest,
            ..out
        },
    )
}

#[test]
fn sigterm_during_the_sync_stops_it_and_cleans_up() {
    let Some((w, lo)) = World::prepared("t1", 32) else {
        return;
    };
    // A sync that would take a minute.
    w.edit_config(|cfg| {
        cfg.replacen(
            "[indicator]",
            &format!(
                "[syncer]\nkind = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}; sleep 60\"]\n\n[indicator]",
                // In the state folder: the sync step may write only there and on the drive
                // (run::confine).
                w.path("state/sync-started").display()
            ),
            1,
        )
    });
    let before = w.source_snapshot();
    let t0 = std::time::Instant::now();
    let started = w.path("state/sync-started");
    let (log, out) = run_and_sigterm(&w, &lo.dev, "syncing ", &|| started.exists());
    let rest = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("step 9/12: sync"), "{log}");
    eprintln!("{log}{rest}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(30),
        "stopped well before the sync's minute"
    );
    assert_failed_cleanly(&w, &out, "sync", &before, 0);
}

#[test]
fn sigterm_while_waiting_for_the_source_lock_stops_and_cleans_up() {
    let Some((w, lo)) = World::prepared("t1", 32) else {
        return;
    };
    // The source lock is held by another job for longer than systemd's stop timeout.
    w.edit_config(|cfg| cfg.replacen("timeout_secs = 1", "timeout_secs = 600", 1));
    let holder = LockHolder::hold(&w.path("src.lock"), 120);
    let before = w.source_snapshot();
    let t0 = std::time::Instant::now();
    // Logged once the first try found the lock held: the wait is going on.
    let (log, out) = run_and_sigterm(&w, &lo.dev, "held by another job: waiting", &|| true);
    let rest = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("step 6/12: source lock"), "{log}");
    drop(holder);
    eprintln!("{log}{rest}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(60),
        "stopped instead of waiting out the lock's 600 s"
    );
    assert!(rest.contains("stopped by a signal"), "{rest}");
    assert_failed_cleanly(&w, &out, "source lock", &before, 0);
}

#[test]
fn free_space_is_what_root_can_really_write() {
    use extbackup::run::host::Host;
    use std::io::Write;
    if !root_or_skip_here() {
        return;
    }
    // 10% reserved for root: runs are root, and may use them.
    let img = testkit::LoopImage::ext4_with(32, &["-m", "10"]);
    let mp = img.mount("m");
    let host = extbackup::run::host::SystemHost::new(img.path("run.lock"));
    let free = host.free_space(&mp).unwrap();
    let mut f = fs::File::create(mp.join("fill")).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("{e}"),
        }
    }
    drop(f);
    // The file's own extent and metadata blocks take some (under 1 MiB here); the reserve
    // is over 3 MiB.
    let slack = 1024 * 1024;
    assert!(
        free + slack >= written && free <= written + slack,
        "free_space said {free} bytes, root wrote {written}"
    );
}

#[test]
fn install_print_shows_the_rule_the_units_and_the_stable_binary() {
    let w = World::new("loopback-test");
    w.edit_config(|cfg| {
        format!(
            "{cfg}\n[[drive]]\nname = \"a\"\nuuid = \"0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab\"\nkey_file = \"/nonexistent/a.key\"\n\n[[drive]]\nname = \"b\"\nuuid = \"1b1c2d3e-aaaa-4bbb-8ccc-0123456789ab\"\nkey_file = \"/nonexistent/b.key\"\n"
        )
    });
    let out = w.cmd(&["install", "--print"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    // One line for every LUKS drive: the raw UUID is the instance, no backslash.
    assert!(
        text.contains(r#"ENV{SYSTEMD_WANTS}+="extbackup@$env{ID_FS_UUID}.service""#),
        "{text}"
    );
    assert!(!text.contains(r"\x2d"), "{text}");
    assert!(text.contains(" run --uuid %i\n"), "{text}");
    // The binary under target/ is not referenced: the stable copy is.
    assert!(
        text.contains("ExecStart=/usr/local/sbin/extbackup --config "),
        "{text}"
    );
    assert!(
        text.contains(&format!("--config {}", w.config.display())),
        "{text}"
    );
    // A key file that is missing is config check's business, not install's.
    assert_eq!(w.cmd(&["config", "check"]).status.code(), Some(2));
}

/// The pids of the processes below `pid` (children, grandchildren...) named `comm`.
fn descendants_named(pid: u32, comm: &str) -> Vec<u32> {
    oskit::descendants(pid)
        .into_iter()
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

#[test]
fn kill_9_of_a_run_ends_its_rsync_and_the_next_run_cleans_up() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    // A copy that takes about a minute: 12 MiB at 200 KiB/s.
    fs::write(w.path("src/big.bin"), vec![7u8; 12 << 20]).unwrap();
    w.edit_config(|cfg| {
        cfg.replacen(
            "[indicator]",
            "[syncer]\nkind = \"rsync\"\nextra_args = [\"--bwlimit=200\"]\n\n[indicator]",
            1,
        )
    });
    let mut child = w.spawn_run(&lo.dev);
    // Ready when rsync writes: its receiver has the drive's temp file open.
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rsyncs = loop {
        let r = descendants_named(pid, "rsync");
        if r.len() >= 2 {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rsync never started under the run"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rsyncs
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "rsync {rsyncs:?} goes on writing to the drive after its run was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The next run finds the mapping and the mount left behind, says so, and backs up.
    w.edit_config(|cfg| cfg.replace("extra_args = [\"--bwlimit=200\"]", "extra_args = []"));
    let out = w.run(&lo.dev);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("from an interrupted run"), "{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        mounted_under(w.dir.path()).is_empty(),
        "nothing left mounted"
    );
    let (snap, _) = read_drive(&w, &lo.dev, "t1");
    assert_eq!(snap, w.source_snapshot(), "the drive mirrors the source");
}

/// `check` without `[mail]`: each drive past its limit is logged, the indicator shows
/// attention, and the exit code is 0 (the timer's unit does not fail every day).
#[test]
fn check_without_mail_logs_each_stale_drive_and_shows_attention() {
    let w = World::new("loopback-test");
    w.edit_config(|cfg| {
        let start = cfg.find("[mail]").unwrap();
        let end = cfg[start..].find("[crypt]").unwrap() + start;
        let no_mail = format!("{}{}", &cfg[..start], &cfg[end..]);
        format!(
            "{no_mail}\n[[drive]]\nname = \"offsite-a\"\nuuid = \"0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab\"\nkey_file = \"/nonexistent/a.key\"\n\n[[drive]]\nname = \"offsite-b\"\nuuid = \"1b1c2d3e-aaaa-4bbb-8ccc-0123456789ab\"\nkey_file = \"/nonexistent/b.key\"\n"
        )
    });
    let out = w.cmd(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("drive offsite-a: never backed up"), "{err}");
    assert!(err.contains("drive offsite-b: never backed up"), "{err}");
    assert!(
        err.contains("attention"),
        "the console indicator shows attention: {err}"
    );
    let out = w.cmd(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("due next: drive offsite-a: never backed up"),
        "{text}"
    );
}

/// `notify-failure` (run by OnFailure=): a unit that failed without reporting (here a
/// configuration error, exit 2) gets a failure mail and the failure colour, even though the
/// configuration does not load: its [indicator] and [mail] are used alone. A run that
/// reported itself (exit 1) gets nothing more.
#[test]
fn notify_failure_reports_a_config_error_and_stays_quiet_after_exit_1() {
    let w = World::new("loopback-test");
    w.edit_config(|cfg| {
        cfg.lines()
            .map(|l| {
                if l.starts_with("source = ") {
                    "source = \"relative/path\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert_eq!(
        w.cmd(&["status"]).status.code(),
        Some(2),
        "the config is broken"
    );
    let uuid = "0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab";
    let unit = format!("extbackup@{uuid}.service");
    let notify = |status: &str| {
        Command::new(env!("CARGO_BIN_EXE_extbackup"))
            .arg("--config")
            .arg(&w.config)
            .args(["notify-failure", "--uuid", uuid, "--unit", &unit])
            .env("MONITOR_SERVICE_RESULT", "exit-code")
            .env("MONITOR_EXIT_CODE", "exited")
            .env("MONITOR_EXIT_STATUS", status)
            .output()
            .unwrap()
    };
    let out = notify("1");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        w.subjects().is_empty(),
        "exit 1 was reported by the run itself"
    );
    let out = notify("2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        w.subjects(),
        [format!("extbackup: {uuid} FAILED at unit")],
        "{err}"
    );
    let mail = &w.mails()[0];
    assert!(mail.contains("exited 2"), "{mail}");
    assert!(
        mail.contains("relative/path"),
        "the mail names the config error: {mail}"
    );
    assert!(
        err.contains("failure"),
        "the indicator shows failure: {err}"
    );
}
