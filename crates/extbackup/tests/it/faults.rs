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
