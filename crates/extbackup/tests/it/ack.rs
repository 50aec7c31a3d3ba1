//! `extbackup ack NAME`: acknowledges a drive's failure on the shared LED (slots of the
//! blinkstick crate, in a folder of the test's own).

use std::fs;

use crate::support::World;

#[test]
fn ack_acknowledges_a_failed_slot_once() {
    let w = World::new("loopback-test");
    let slots = w.path("slots");
    let cfg = fs::read_to_string(&w.config).unwrap();
    fs::write(
        &w.config,
        cfg.replacen(
            "[indicator]\nbackend = \"console\"",
            &format!(
                "[indicator]\nbackend = \"none\"\nslots_dir = \"{}\"",
                slots.display()
            ),
            1,
        ),
    )
    .unwrap();
    // a failed run of offsite-a, as the blinkstick crate's slots record it
    fs::create_dir_all(&slots).unwrap();
    fs::write(
        slots.join("offsite-a.slot"),
        "state=failure\nunacked_failure=1\npid=1\nstart=0\nupdated=0\n",
    )
    .unwrap();
    let out = w.cmd(&["ack", "offsite-a"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "offsite-a: failure acknowledged\n"
    );
    assert!(!slots.join("offsite-a.slot").exists(), "the slot is gone");
    // Nothing left in the shared slot: known, nothing to do.
    let out = w.cmd(&["ack", "extbackup"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "extbackup: no failure to acknowledge\n"
    );
    // offsite-a is no configured drive and its slot is gone: a name nothing knows.
    let out = w.cmd(&["ack", "offsite-a"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown name is a usage error"
    );
    let out = w.cmd(&["ack", "NOSUCH"]);
    assert_eq!(out.status.code(), Some(2), "ack NOSUCH does not exit 0");
    let out = w.cmd(&["ack", "../etc"]);
    assert!(!out.status.success(), "a bad slot name is refused");
}
