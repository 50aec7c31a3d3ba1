//! Issue 18 D: every outcome a run records reaches every monitor (the state directory and
//! `status`, the mail, the ping, the Prometheus textfile, the LED), however the run ends: a
//! failure at `identify`, a lock that is not given, a state directory that is a file, a run
//! killed by SIGKILL (told by the next invocation), a drive lazily unmounted under the run.

use crate::support::{LockHolder, World};
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// Adds a Prometheus textfile to the configuration; returns its path.
fn with_textfile(w: &World) -> std::path::PathBuf {
    let t = w.path("metrics/extbackup.prom");
    fs::create_dir_all(t.parent().unwrap()).unwrap();
    let cfg = fs::read_to_string(&w.config).unwrap();
    fs::write(
        &w.config,
        format!("{cfg}\n[monitor]\ntextfile = \"{}\"\n", t.display()),
    )
    .unwrap();
    t
}

/// The value of `metric{drive="NAME"}` in the textfile.
fn metric(text: &str, metric: &str, drive: &str) -> Option<u64> {
    let key = format!("{metric}{{drive=\"{drive}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().unwrap())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The textfile says the last run of `drive` failed, finishing at or after `since`.
fn textfile_says_failed_since(t: &std::path::Path, drive: &str, since: u64) {
    let text = fs::read_to_string(t).unwrap();
    assert_eq!(
        metric(&text, "extbackup_last_run_success", drive),
        Some(0),
        "{text}"
    );
    let ts = metric(&text, "extbackup_last_run_timestamp_seconds", drive).unwrap();
    assert!(
        ts >= since,
        "the run's timestamp {ts} is older than {since}: {text}"
    );
}

#[test]
fn safety_a_run_failing_at_identify_or_the_source_lock_reaches_the_textfile_status_and_mail() {
    let Some((w, lo)) = World::prepared("mo", 64) else {
        return;
    };
    let t = with_textfile(&w);
    let dev = lo.dev.to_str().unwrap();
    assert_eq!(
        w.run(&lo.dev).status.code(),
        Some(0),
        "the first, normal run"
    );
    let text = fs::read_to_string(&t).unwrap();
    assert_eq!(
        metric(&text, "extbackup_last_run_success", "mo"),
        Some(1),
        "{text}"
    );

    // identify: a key file others may read
    let key = w.path("keys/mo.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t0 = now();
    let mails = w.mails().len();
    let out = w.cmd(&["run", "--device", dev]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED at identify"));
    textfile_says_failed_since(&t, "mo", t0);
    assert_eq!(w.mails().len(), mails + 1, "one failure mail");
    assert_eq!(
        w.drive_state("mo")["last_failure"]["failed_step"],
        "identify"
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(w.run(&lo.dev).status.code(), Some(0), "healed");
    let text = fs::read_to_string(&t).unwrap();
    assert_eq!(
        metric(&text, "extbackup_last_run_success", "mo"),
        Some(1),
        "{text}"
    );

    // source lock: held by another job past the timeout
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t0 = now();
    let _held = LockHolder::hold(&w.path("src.lock"), 30);
    let out = w.cmd(&["run", "--device", dev]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED at source lock"));
    textfile_says_failed_since(&t, "mo", t0);
    assert_eq!(
        w.drive_state("mo")["last_failure"]["failed_step"],
        "source lock"
    );
    drop(_held);

    // the state directory is a file: nothing can be recorded there, the textfile still says
    // so (from the run's own record), with a mail
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t0 = now();
    let mails = w.mails().len();
    fs::rename(w.path("state"), w.path("state.away")).unwrap();
    fs::write(w.path("state"), "not a folder\n").unwrap();
    // by UUID, as the udev rule starts it (a device alone cannot be told from its header
    // without the crypt backend, which is what cannot be built here)
    let cfg: toml::Table = toml::from_str(&fs::read_to_string(&w.config).unwrap()).unwrap();
    let uuid = cfg["drive"][0]["uuid"].as_str().unwrap().to_string();
    let out = w.cmd(&["run", "--uuid", &uuid]);
    assert_eq!(out.status.code(), Some(1));
    textfile_says_failed_since(&t, "mo", t0);
    assert_eq!(w.mails().len(), mails + 1, "one failure mail");
}

/// A run of drive `name` copying slowly (12 MiB at 200 KiB/s), killed with SIGKILL once
/// `current.json` says it is at the sync; waits until its rsync is gone too.
fn killed_during_the_sync(w: &World, dev: &std::path::Path) {
    let mut child = w.spawn_run(dev);
    let current = w.path("state/current.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !fs::read_to_string(&current).is_ok_and(|c| c.contains("\"step\":\"sync\"")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached the sync"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500)); // rsync ends on PDEATHSIG
}

#[test]
fn safety_a_run_killed_with_sigkill_is_told_by_the_next_status_or_run_through_every_monitor() {
    let Some((w, lo)) = World::prepared("mk", 64) else {
        return;
    };
    let t = with_textfile(&w);
    assert_eq!(
        w.run(&lo.dev).status.code(),
        Some(0),
        "the first, normal run"
    );
    fs::write(w.path("src/big.bin"), vec![7u8; 12 << 20]).unwrap();
    w.edit_config(|cfg| {
        cfg.replacen(
            "[indicator]",
            "[syncer]\nkind = \"rsync\"\nextra_args = [\"--bwlimit=200\"]\n\n[indicator]",
            1,
        )
    });
    let t0 = now();
    let mails = w.mails().len();
    killed_during_the_sync(&w, &lo.dev);
    // Nothing told yet: the killed run could not.
    assert_eq!(w.mails().len(), mails);
    assert!(w.path("state/current.json").exists());

    // `status` finds it: a failure at the sync, red, one mail, the textfile.
    let out = w.cmd(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        so.contains("last failure:") && so.contains("at step sync: interrupted"),
        "{so}"
    );
    assert!(
        se.contains("extbackup: failure"),
        "the LED shows the failure: {se}"
    );
    assert_eq!(w.mails().len(), mails + 1, "one mail for the killed run");
    assert!(w.subjects().last().unwrap().ends_with("FAILED at sync"));
    let mail = w.last_mail();
    assert!(mail.contains("interrupted"), "{mail}");
    textfile_says_failed_since(&t, "mk", t0);
    assert_eq!(w.drive_state("mk")["last_failure"]["failed_step"], "sync");
    assert!(!w.path("state/current.json").exists());
    // Told once: a second `status` mails nothing more, `--json` stays JSON.
    let out = w.cmd(&["status", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("status --json is JSON");
    assert_eq!(w.mails().len(), mails + 1);

    // Killed again; this time the next run (which resumes the copy) tells it.
    let t0 = now();
    killed_during_the_sync(&w, &lo.dev);
    w.edit_config(|cfg| cfg.replace("extra_args = [\"--bwlimit=200\"]", "extra_args = []"));
    let out = w.run(&lo.dev);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("was interrupted during step sync"), "{log}");
    let failed = |w: &World| {
        w.subjects()
            .iter()
            .filter(|s| s.ends_with("FAILED at sync"))
            .count()
    };
    assert_eq!(failed(&w), 2, "one mail per killed run: {:?}", w.subjects());
    let st = w.drive_state("mk");
    assert_eq!(st["last_failure"]["failed_step"], "sync");
    // (read as a record: however its times are written)
    let finished = |v: &serde_json::Value| {
        serde_json::from_value::<extbackup::drive::state::RunRecord>(v.clone())
            .unwrap()
            .finished
    };
    assert!(finished(&st["last_failure"]) >= t0);
    assert!(finished(&st["last_success"]) >= t0);
    // The run's own success is the textfile's last word.
    let text = fs::read_to_string(&t).unwrap();
    assert_eq!(
        metric(&text, "extbackup_last_run_success", "mk"),
        Some(1),
        "{text}"
    );
}

/// Issue 18 D: the drive lazily unmounted (`umount -l`) under a run, during the copy (the
/// copy goes on into the detached filesystem) or between steps: the run fails naming the
/// cause, and nothing is written into the bare folder left at the mount point (no
/// generation renamed there, no record, no `.extbackup`). History on and off.
#[test]
fn safety_a_drive_lazily_unmounted_under_a_run_fails_naming_it_and_nothing_is_written_elsewhere() {
    for history in [true, false] {
        let Some((w, lo)) = World::prepared(&format!("lz{}", u8::from(history)), 64) else {
            return;
        };
        w.set_top(&format!("history = {history}"));
        let name = format!("lz{}", u8::from(history));
        assert_eq!(
            w.run(&lo.dev).status.code(),
            Some(0),
            "the first, normal run"
        );
        fs::write(w.path("src/big.bin"), vec![7u8; 4 << 20]).unwrap();
        w.edit_config(|cfg| {
            cfg.replacen(
                "[indicator]",
                "[syncer]\nkind = \"rsync\"\nextra_args = [\"--bwlimit=1m\"]\n\n[indicator]",
                1,
            )
        });
        let child = w
            .command()
            .args(["run", "--device", lo.dev.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let current = w.path("state/current.json");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !fs::read_to_string(&current).is_ok_and(|c| c.contains("\"step\":\"sync\"")) {
            assert!(
                std::time::Instant::now() < deadline,
                "the run never reached the sync"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mp = w.path(&format!("mnt/{name}"));
        testkit::sh(std::process::Command::new("umount").arg("-l").arg(&mp));
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "history {history}: {log}");
        assert!(
            log.contains("is no longer the drive's mount") || log.contains("no longer mounted at"),
            "history {history}: the cause is named: {log}"
        );
        assert!(!log.contains("No such file or directory"), "{log}");
        // The bare folder at the mount point holds nothing the run wrote.
        let left: Vec<_> = fs::read_dir(&mp)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "history {history}: written on the NAS: {left:?}"
        );
        let st = w.drive_state(&name);
        // History on: naming the generation complete; off: the copy itself ends (into the
        // detached filesystem) and the record step finds the mount gone.
        let step = st["last_failure"]["failed_step"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            ["sync", "record"].contains(&step.as_str()),
            "history {history}: {step}"
        );
        assert!(log.contains(&format!("FAILED at {step}")), "{log}");
        // The next run heals: it closes what is left and completes.
        w.edit_config(|cfg| cfg.replace("extra_args = [\"--bwlimit=1m\"]", "extra_args = []"));
        let out = w.run(&lo.dev);
        assert_eq!(
            out.status.code(),
            Some(0),
            "history {history}: the next run"
        );
    }
}
