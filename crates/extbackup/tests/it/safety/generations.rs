//! Safety (issue 18, items 3 to 5): no good generation lost to a bad run, generation names
//! and clocks that cannot freeze the history, and drives that do not stay red. The real
//! binary as root on loop devices (loopback-test crypt, real ext4, real rsync).

use crate::history::{history_json, set_config, stderr, with_drive};
use crate::support::World;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use syncer::generations::{Generations, Listing, Stamp};

/// What `generations/` holds on drive t1, judged at the clock's time.
fn listing(w: &World, dev: &Path) -> Listing {
    with_drive(w, dev, "t1", |mp| Generations::at(mp).listing().unwrap())
}

fn names(l: &[syncer::generations::Generation]) -> Vec<String> {
    l.iter().map(|g| g.stamp.name()).collect()
}

/// Keep only the newest generation after each run.
const KEEP_ONLY_NEWEST: &str =
    "[history]\nkeep_within_days = 0\ndaily = 0\nweekly = 0\nmonthly = 0";

/// `src/big/NN.bin`, `count` files of 1 MiB whose bytes depend on `tag`.
fn big(w: &World, tag: u8, count: u8) {
    let _ = fs::remove_dir_all(w.path("src/big"));
    fs::create_dir_all(w.path("src/big")).unwrap();
    for i in 0..count {
        let data: Vec<u8> = (0..1u32 << 20)
            .map(|b| (b as u8).wrapping_mul(tag).wrapping_add(i))
            .collect();
        fs::write(w.path(&format!("src/big/{i:02}.bin")), data).unwrap();
    }
}

fn ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
}

#[test]
fn safety_a_renamed_source_on_a_nearly_full_drive_prunes_nothing_and_is_refused() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    // Two generations of 20 MiB fill most of the ~60 MiB drive.
    big(&w, 3, 20);
    ok(&w.run(&lo.dev));
    big(&w, 5, 20);
    ok(&w.run(&lo.dev));
    let before = names(&listing(&w, &lo.dev).complete);
    assert_eq!(before.len(), 2);
    // Ransomware renames every file: all of it looks new, more than the drive has free.
    for e in walkdir::WalkDir::new(w.path("src")).contents_first(true) {
        let p = e.unwrap().into_path();
        if p.is_file() {
            let mut locked = p.clone().into_os_string();
            locked.push(".locked");
            fs::rename(&p, locked).unwrap();
        }
    }
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(1), "refused");
    let mail = w.last_mail();
    assert!(
        mail.contains("failed the sync guard") && mail.contains("no generation was pruned"),
        "{mail}"
    );
    assert!(!stderr(&out).contains("removed the oldest generation"));
    assert_eq!(
        names(&listing(&w, &lo.dev).complete),
        before,
        "nothing pruned"
    );
}

#[test]
fn safety_a_planted_future_generation_is_ignored_reported_and_the_next_name_is_valid() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    ok(&w.run(&lo.dev));
    w.with_drive_rw(&lo.dev, |mp| {
        let g = mp.join("generations");
        fs::create_dir_all(g.join("9999-12-31T235959Z/sub")).unwrap();
        fs::write(g.join("9999-12-31T235959Z/a.txt"), "planted\n").unwrap();
        fs::create_dir_all(g.join("2026-02-31T000000Z")).unwrap();
        fs::write(g.join("README"), "not a generation").unwrap();
    });
    fs::write(w.path("src/a.txt"), "alpha 2\n").unwrap();
    let out = w.run(&lo.dev);
    ok(&out);
    let mail = w.last_mail();
    assert!(
        mail.contains("dated in the future") && mail.contains("9999-12-31T235959Z"),
        "{mail}"
    );
    assert!(
        mail.contains("2026-02-31T000000Z") && mail.contains("README"),
        "{mail}"
    );
    let status = String::from_utf8_lossy(&w.cmd(&["status"]).stdout).into_owned();
    assert!(status.contains("dated in the future"), "{status}");
    let l = listing(&w, &lo.dev);
    assert_eq!(l.complete.len(), 2, "{l:?}");
    assert_eq!(names(&l.future), ["9999-12-31T235959Z"]);
    let year = Stamp(extbackup::fmt::now() as i64).name()[..4].to_string();
    let newest = l.complete.last().unwrap().stamp.name();
    assert!(newest.starts_with(&year), "{newest}");
    // The new generation was built on the real one: an unchanged file is linked.
    with_drive(&w, &lo.dev, "t1", |mp| {
        let real = Generations::at(mp).list().unwrap();
        let ino = |p: &Path| fs::metadata(p.join("sub/b.bin")).unwrap().ino();
        assert_eq!(ino(&real[0].path), ino(&real[1].path));
        assert_eq!(fs::read(real[1].path.join("a.txt")).unwrap(), b"alpha 2\n");
    });
    // restore takes the newest real generation, not the planted one.
    let to = w.path("restored");
    ok(&w.restore_from("t1", &lo.dev, "a.txt", None, &to));
    assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"alpha 2\n");
    // history lists the real ones.
    assert_eq!(history_json(&w, &lo.dev).len(), 2);
    // A date that does not exist is refused.
    let out = w.restore_from("t1", &lo.dev, "a.txt", Some("2026-02-31"), &w.path("r2"));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("is not a date"), "{}", stderr(&out));
    // Retention works on the real generations; the planted one stays.
    set_config(&w, "", KEEP_ONLY_NEWEST);
    ok(&w.run(&lo.dev));
    let l = listing(&w, &lo.dev);
    assert_eq!((l.complete.len(), l.future.len()), (1, 1), "{l:?}");
}

#[test]
fn safety_a_run_with_the_clock_ten_years_ahead_does_not_freeze_retention() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    ok(&w.run(&lo.dev));
    let ahead = extbackup::fmt::now() + 10 * 365 * 86400;
    fs::write(w.path("src/a.txt"), "ahead\n").unwrap();
    let out = w
        .command()
        .args(["run", "--device", lo.dev.to_str().unwrap()])
        .env(extbackup::fmt::TEST_NOW_ENV, ahead.to_string())
        .output()
        .unwrap();
    ok(&out);
    let l = listing(&w, &lo.dev);
    assert_eq!((l.complete.len(), l.future.len()), (1, 1), "{l:?}");
    let future = l.future[0].stamp.name();
    // Back to the right time: each run makes a generation named now, and retention (only
    // the newest) prunes the one before it.
    set_config(&w, "", KEEP_ONLY_NEWEST);
    let mut seen = vec![];
    for i in 0..2 {
        fs::write(w.path("src/a.txt"), format!("run {i}\n")).unwrap();
        let out = w.run(&lo.dev);
        ok(&out);
        assert!(w.last_mail().contains("dated in the future"));
        let l = listing(&w, &lo.dev);
        assert_eq!(names(&l.future), vec![future.as_str()]);
        assert_eq!(l.complete.len(), 1, "retention pruned: {l:?}");
        let newest = l.complete[0].stamp;
        assert!(newest.0 <= extbackup::fmt::now() as i64 + 60, "named now");
        assert!(!seen.contains(&newest));
        seen.push(newest);
        assert_eq!(
            with_drive(&w, &lo.dev, "t1", |mp| fs::read(
                Generations::at(mp)
                    .newest()
                    .unwrap()
                    .unwrap()
                    .path
                    .join("a.txt")
            )
            .unwrap()),
            format!("run {i}\n").into_bytes()
        );
    }
}

#[test]
fn safety_a_file_with_60000_hard_links_is_copied_not_linked_and_every_run_completes() {
    let Some((w, lo)) = World::prepared("t1", 96) else {
        return;
    };
    let dir = w.path("src/links");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f"), "linked\n").unwrap();
    for i in 0..60_000 {
        fs::hard_link(dir.join("f"), dir.join(format!("l{i:05}"))).unwrap();
    }
    ok(&w.run(&lo.dev));
    // ext4 allows 65,000 links per inode: the next generation cannot link 60,001 more
    // names to the first one's inode; they are copied (one new inode), twice in a row.
    for i in 0..2 {
        fs::write(w.path("src/a.txt"), format!("run {i}\n")).unwrap();
        let out = w.run(&lo.dev);
        ok(&out);
        let log = stderr(&out);
        assert_eq!(log.matches("Too many links").count(), 0, "{log}");
        let mail = w.last_mail();
        assert!(mail.contains("60001 file(s) were copied instead"), "{mail}");
        with_drive(&w, &lo.dev, "t1", |mp| {
            let g = Generations::at(mp).list().unwrap();
            assert_eq!(g.len(), 2 + i);
            let (prev, new) = (&g[g.len() - 2].path, &g[g.len() - 1].path);
            let md = fs::metadata(new.join("links/l59999")).unwrap();
            assert_eq!(md.nlink(), 60_001);
            assert_ne!(md.ino(), fs::metadata(prev.join("links/f")).unwrap().ino());
            assert_eq!(md.ino(), fs::metadata(new.join("links/f")).unwrap().ino());
            // Other unchanged files are still linked.
            let ino = |p: &Path| fs::metadata(p.join("sub/b.bin")).unwrap().ino();
            assert_eq!(ino(prev), ino(new));
        });
    }
}

#[test]
fn safety_a_leftover_incomplete_generation_after_enospc_does_not_block_the_next_run() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    big(&w, 3, 8);
    ok(&w.run(&lo.dev));
    // A run without the free-space check runs out of space half-way.
    big(&w, 5, 70);
    let check = |on: bool| {
        w.edit_config(|c| {
            let c = c.replace("\ncheck_free_space = false", "");
            if on {
                c
            } else {
                c.replace(
                    "require_source_mount_point = false",
                    "require_source_mount_point = false\ncheck_free_space = false",
                )
            }
        })
    };
    check(false);
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(1), "ENOSPC");
    assert!(
        w.last_mail().contains("ran out of space"),
        "{}",
        w.last_mail()
    );
    let l = listing(&w, &lo.dev);
    assert_eq!((l.complete.len(), l.incomplete.len()), (1, 1), "{l:?}");
    // The source shrinks to what the drive can hold (the files copied before the
    // failure); the next normal run reuses the interrupted generation and completes.
    for i in 30..70 {
        fs::remove_file(w.path(&format!("src/big/{i:02}.bin"))).unwrap();
    }
    check(true);
    let out = w.run(&lo.dev);
    ok(&out);
    assert!(
        stderr(&out).contains("held by an interrupted generation (reused)"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("resuming the generation"));
    let l = listing(&w, &lo.dev);
    assert_eq!((l.complete.len(), l.incomplete.len()), (2, 0), "{l:?}");
}

#[test]
fn safety_a_drive_out_of_inodes_prunes_for_inodes_or_fails_naming_inodes() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    ok(&w.run(&lo.dev));
    let free = with_drive(&w, &lo.dev, "t1", |mp| {
        oskit::free_inodes(mp).unwrap().expect("ext4 counts inodes")
    });
    // Empty files: no bytes, one inode each; every run changes them all.
    let n = free * 45 / 100;
    let dir = w.path("src/many");
    fs::create_dir_all(&dir).unwrap();
    let touch_all = |t: u64| {
        for i in 0..n {
            let f = fs::File::create(dir.join(format!("{i:06}"))).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
                .unwrap();
        }
    };
    touch_all(1_000_000);
    ok(&w.run(&lo.dev));
    touch_all(2_000_000);
    ok(&w.run(&lo.dev));
    let before = names(&listing(&w, &lo.dev).complete);
    assert_eq!(before.len(), 3);
    // A third copy of them does not fit beside the others: the oldest go for inodes.
    touch_all(3_000_000);
    let out = w.run(&lo.dev);
    ok(&out);
    let mail = w.last_mail();
    assert!(
        mail.contains("space was short") && mail.contains(&before[1]),
        "{mail}"
    );
    let after = names(&listing(&w, &lo.dev).complete);
    assert!(
        !after.contains(&before[1]) && after.contains(&before[2]),
        "{after:?}"
    );
    // More files than the drive has inodes at all: refused, naming inodes, nothing deleted.
    for i in n..free * 2 {
        fs::File::create(dir.join(format!("{i:06}"))).unwrap();
    }
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(1));
    let mail = w.last_mail();
    assert!(
        mail.contains("short of inodes") && mail.contains("nothing was deleted"),
        "{mail}"
    );
    assert_eq!(names(&listing(&w, &lo.dev).complete), after);
}
