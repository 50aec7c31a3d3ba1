//! `CommandSyncer` with small shell scripts.

use crate::opts;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use syncer::{CommandSyncer, ErrorKind, GuardedSync};

fn script(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("my-backup");
    fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn runs_the_script_with_the_environment() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join("data"), "payload").unwrap();
    let env_out = t.path().join("env");
    let prog = script(
        t.path(),
        &format!(
            "printf '%s\\n' \"$EXTBACKUP_SOURCE\" \"$EXTBACKUP_TARGET\" \"$EXTBACKUP_DRIVE\" \"$1\" > '{}'\n\
             cp -a \"$EXTBACKUP_SOURCE/.\" \"$EXTBACKUP_TARGET\"\necho copied; echo note >&2\n",
            env_out.display()
        ),
    );
    let mut calls = vec![];
    let r = CommandSyncer::new(&prog)
        .with_args(["--monthly"])
        .sync(&src, &dst, &opts(), &mut |p| calls.push(p))
        .expect("script succeeds");
    let env = fs::read_to_string(&env_out).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    assert_eq!(
        lines,
        vec![
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
            "offsite-a",
            "--monthly"
        ]
    );
    assert_eq!(fs::read_to_string(dst.join("data")).unwrap(), "payload");
    assert_eq!(calls.last().unwrap().fraction, Some(1.0));
    assert!(r.warnings.is_empty());
}

#[test]
fn a_failing_script_reports_status_and_stderr_tail() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), "x").unwrap();
    let prog = script(
        t.path(),
        "echo 'first line' >&2\necho 'disk not ready' >&2\nexit 3\n",
    );
    let e = CommandSyncer::new(&prog)
        .sync(&src, &t.path().join("dst"), &opts(), &mut |_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other);
    let msg = e.to_string();
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("disk not ready"), "{msg}");
}

#[test]
fn the_guard_stops_the_script_from_running() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("empty");
    fs::create_dir_all(&src).unwrap();
    let marker = t.path().join("ran");
    let prog = script(t.path(), &format!("touch '{}'\n", marker.display()));
    let e = CommandSyncer::new(&prog)
        .sync(&src, &t.path().join("dst"), &opts(), &mut |_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SourceUnusable);
    assert!(!marker.exists(), "the script ran despite the guard");
}

#[test]
fn a_missing_program_is_not_found() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), "x").unwrap();
    let e = CommandSyncer::new(t.path().join("nope"))
        .sync(&src, &t.path().join("dst"), &opts(), &mut |_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
}

#[test]
fn a_script_killed_by_a_signal_is_interrupted() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), "x").unwrap();
    let prog = script(t.path(), "kill -TERM $$\nsleep 5\n");
    let e = CommandSyncer::new(&prog)
        .sync(&src, &t.path().join("dst"), &opts(), &mut |_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted, "{e:?}");
    assert!(e.to_string().contains("signal 15"), "{e}");
}
