//! Issue 18 D: smaller faults of the host around a run (the state directory, the records,
//! the configuration file, exit codes, a dead run), each with the real binary.

use std::fs;

use crate::support::{path_str, World};

/// The indicator's last state on the console (stdout).
fn last_indicator_state(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

#[test]
fn safety_a_state_dir_that_is_a_file_gives_red_and_a_mail() {
    let Some((w, lo)) = World::prepared("t1", 32) else {
        return;
    };
    let state = w.path("state");
    fs::rename(&state, w.path("state.away")).unwrap();
    fs::write(&state, "not a folder\n").unwrap();
    let out = w.run(&lo.dev);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed run, not a usage error"
    );
    let subjects = w.subjects();
    assert_eq!(subjects.len(), 1, "one mail: {subjects:?}");
    assert!(subjects[0].ends_with("FAILED at identify"), "{subjects:?}");
    let mail = w.last_mail();
    assert!(
        mail.contains(path_str(&state)) && mail.contains("Not a directory"),
        "the mail names the cause: {mail}"
    );
    assert!(
        last_indicator_state(&out).contains("failure"),
        "red: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FAILED at identify"), "{err}");
}

#[test]
fn safety_a_run_log_ending_in_garbage_keeps_the_next_record_and_the_last_success() {
    let Some((w, lo)) = World::prepared("t1", 32) else {
        return;
    };
    let log = w.path("state/runs.jsonl");
    fs::write(&log, "{\"drive\":\"t1\",\"res").unwrap(); // garbage, no newline
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let rec: serde_json::Value = serde_json::from_str(lines[1]).expect("the record whole");
    assert_eq!(rec["result"], "success");
    // status, with drives/t1.json gone, reads the last success from the log.
    fs::remove_file(w.path("state/drives/t1.json")).unwrap();
    let out = w.cmd(&["status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("last success: 20") && !shown.contains("last success: never"),
        "the last success is found: {shown}"
    );
}

#[test]
fn safety_unknown_drive_names_and_bad_restore_paths_are_usage_errors() {
    let Some((w, lo)) = World::prepared("t1", 32) else {
        return;
    };
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    for args in [
        &["history", "NOSUCH"][..],
        &["mount", "NOSUCH"],
        &["unmount", "NOSUCH"],
        &["restore", "NOSUCH", "/", "--to", "/tmp/nowhere-extbackup"],
    ] {
        let out = w.cmd(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let to = w.path("restored");
    let to = path_str(&to);
    // `..`, a path not in the copy, a destination inside the source or under the mount root.
    let src_dest = w.path("src/inside");
    let mnt_dest = w.path("mnt/t2");
    for args in [
        &["restore", "t1", "../etc", "--to", to][..],
        &["restore", "t1", "no-such-file", "--to", to],
        &["restore", "t1", "a.txt", "--to", path_str(&src_dest)],
        &["restore", "t1", "a.txt", "--to", path_str(&mnt_dest)],
    ] {
        let mut args = args.to_vec();
        args.extend(["--device", path_str(&lo.dev)]);
        let out = w.cmd(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert!(
        !w.path("mnt/t2").exists(),
        "nothing made under the mount root"
    );
    assert!(!w.path("src/inside").exists());
    assert!(
        crate::support::mounted_under(w.dir.path()).is_empty(),
        "the drive is closed again"
    );
    // A good restore still works.
    let out = w.cmd(&[
        "restore",
        "t1",
        "a.txt",
        "--to",
        to,
        "--device",
        path_str(&lo.dev),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        fs::read_to_string(w.path("restored/a.txt")).unwrap(),
        "alpha\n"
    );
}

#[test]
fn safety_config_dev_zero_fails_at_once_as_a_usage_error() {
    for args in [&["config", "check"][..], &["status"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_extbackup"))
            .args(["--config", "/dev/zero"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/dev/zero") && err.contains("not a regular file"),
            "{err}"
        );
    }
}

#[test]
fn safety_config_check_refuses_extra_args_that_delete_or_write_elsewhere() {
    let w = World::new("loopback-test");
    for arg in [
        "--remove-source-files",
        "--delete-excluded",
        "--link-dest=/srv",
    ] {
        w.edit_config(|cfg| {
            let base = cfg.split("\n[syncer]").next().unwrap().to_string();
            format!("{base}\n[syncer]\nextra_args = [{arg:?}]\n")
        });
        let out = w.cmd(&["config", "check"]);
        assert_eq!(out.status.code(), Some(2), "{arg}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(arg), "{err}");
    }
}
