//! The link-dest alarm (issue 19) with the real binary as root: loop devices, the
//! loopback-test crypt backend, real ext4, real rsync `--link-dest`. A generation that
//! links to the one before is quiet; one whose hard links fail (the previous generation's
//! files made immutable: rsync copies them instead, and exits 0) or whose files all had
//! their mode changed takes the source's whole size again, and the run warns, names the
//! cause, and records it.

use crate::history::{generations, with_drive};
use crate::support::{sh, World};
use std::fs;
use std::path::Path;
use std::process::Command;

/// 80 MiB of data that neither compresses to holes nor links by itself: 10 files of 8 MiB.
fn big_source(w: &World) {
    fs::create_dir_all(w.path("src/big")).unwrap();
    for i in 0..10u8 {
        let data: Vec<u8> = (0..8 << 20).map(|j: u32| (j % 251) as u8 ^ i | 1).collect();
        fs::write(w.path(&format!("src/big/f{i}")), data).unwrap();
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The drive's last run record's warnings.
fn recorded_warnings(w: &World, dev: &Path) -> Vec<String> {
    with_drive(w, dev, "t1", |mp| {
        let rec: serde_json::Value =
            serde_json::from_slice(&fs::read(mp.join(".extbackup/last-run.json")).unwrap())
                .unwrap();
        rec["warnings"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    })
}

/// A run that must succeed; its log.
fn run_ok(w: &World, dev: &Path) -> String {
    let out = w.run(dev);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{e}");
    e
}

#[test]
fn linkdest_alarm_is_quiet_for_a_no_change_generation_and_names_failed_links_and_a_chmod() {
    let Some((w, lo)) = World::prepared("t1", 400) else {
        return;
    };
    big_source(&w);
    let dev = lo.dev.as_path();
    run_ok(&w, dev);

    // No change: the generation links everything; measured, and quiet.
    let log = run_ok(&w, dev);
    assert!(
        log.contains("history: generation ") && log.contains(" on the drive (new and changed"),
        "the generation was measured: {log}"
    );
    assert!(!log.contains("link-dest alarm"), "{log}");
    assert!(
        !w.last_mail().contains("link-dest alarm"),
        "{}",
        w.last_mail()
    );
    assert!(recorded_warnings(&w, dev).is_empty());

    // The previous generation's files become immutable (as a tool or a hand could make
    // them): rsync cannot link to them and silently copies. Nothing in a run repairs that.
    let newest = with_drive(&w, dev, "t1", |mp| {
        let (g, _) = generations(mp);
        g.last().unwrap().file_name().unwrap().to_owned()
    });
    w.with_drive_rw(dev, |mp| {
        let g = mp.join("generations").join(&newest);
        sh(Command::new("find")
            .arg(&g)
            .args(["-type", "f", "-exec", "chattr", "+i", "{}", "+"]));
    });
    let log = run_ok(&w, dev);
    assert!(log.contains("link-dest alarm: generation "), "{log}");
    assert!(
        log.contains("hard links to the previous generation failed"),
        "the cause is named: {log}"
    );
    // Every regular file of the source: the 10 big ones and the world's 3.
    assert!(log.contains("13 file(s)"), "{log}");
    let mail = w.last_mail();
    assert!(mail.contains("warning: link-dest alarm"), "{mail}");
    let rec = recorded_warnings(&w, dev);
    assert!(
        rec.len() == 1
            && rec[0].contains("link-dest alarm")
            && rec[0].contains(" MiB on the drive"),
        "in the run's record: {rec:?}"
    );
    let st = String::from_utf8_lossy(&w.cmd(&["status"]).stdout).into_owned();
    assert!(st.contains("link-dest alarm"), "{st}");

    // Every file's mode changed in the source (content unchanged): rsync copies them all
    // into the next generation; the alarm names the metadata change.
    sh(Command::new("find")
        .arg(w.path("src/big"))
        .args(["-type", "f", "-exec", "chmod", "0600", "{}", "+"]));
    let log = run_ok(&w, dev);
    assert!(log.contains("link-dest alarm: generation "), "{log}");
    assert!(
        log.contains("10 unchanged file(s)") && log.contains("mode or owner changed"),
        "{log}"
    );
    assert!(
        !log.contains("hard links to the previous generation failed"),
        "{log}"
    );

    // And the generation after links to that one again: quiet.
    let log = run_ok(&w, dev);
    assert!(!log.contains("link-dest alarm"), "{log}");
    assert!(recorded_warnings(&w, dev).is_empty());
}
