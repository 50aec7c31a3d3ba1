//! Issue 18 D: a source that is `/`, or that holds (or lies inside) a folder the run writes
//! (the state directory, the mail spool, the mount root), is refused by `config check` and
//! by a run, before anything is touched.

use crate::support::World;
use std::fs;

#[test]
fn safety_a_source_of_slash_or_holding_the_state_dir_spool_or_mount_root_is_refused() {
    let w = World::new("loopback-test");
    let base = fs::read_to_string(&w.config).unwrap();
    let d = w.dir.path().display().to_string();
    let src = format!("source = \"{d}/src\"");
    let cases = [
        (base.replace(&src, "source = \"/\""), "is / (the whole system)"),
        (
            base.replace(&format!("state_dir = \"{d}/state\""), &format!("state_dir = \"{d}/src/.state\"")),
            "state_dir",
        ),
        (
            base.replace(&format!("mount_root = \"{d}/mnt\""), &format!("mount_root = \"{d}/src/mnt\"")),
            "mount_root",
        ),
        (
            base.replace(
                &format!("transport = {{ kind = \"file\", dir = \"{d}/mail\" }}"),
                &format!("spool_dir = \"{d}/src/spool\"\ntransport = {{ kind = \"file\", dir = \"{d}/mail\" }}"),
            ),
            "the mail spool",
        ),
        // The source inside the state directory is the same overlap, the other way round.
        (base.replace(&src, &format!("source = \"{d}/state/src\"")), "is around the source"),
    ];
    for (text, needle) in cases {
        assert_ne!(text, base, "the case changed the configuration ({needle})");
        fs::write(&w.config, &text).unwrap();
        for args in [&["config", "check"][..], &["run", "--device", "/dev/null"]] {
            let out = w.cmd(args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {needle}: {err}");
            assert!(err.contains(needle), "{args:?} {needle}: {err}");
        }
        // Refused before anything was made: no state directory, no mail.
        assert!(!w.path("state").exists(), "{needle}");
        assert!(w.mails().is_empty(), "{needle}");
    }
}
