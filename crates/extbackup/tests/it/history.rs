//! History on the drive (issue 9), end to end with the real binary as root: loop devices,
//! the loopback-test crypt backend, real ext4, real rsync with `--link-dest`.

use crate::support::{meta_snapshot, mounted_under, World};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[allow(dead_code, unused_imports)]
#[path = "../../../syncer/tests/it/util.rs"]
pub(crate) mod sync_util;
use sync_util::{assert_same_tree, odd_tree};

/// `extbackup mount NAME --at DIR` (read-only) for the duration of `f`.
pub(crate) fn with_drive<T>(w: &World, dev: &Path, name: &str, f: impl FnOnce(&Path) -> T) -> T {
    let at = w.path(&format!("look-{name}"));
    let out = w.cmd(&[
        "mount",
        name,
        "--device",
        dev.to_str().unwrap(),
        "--at",
        at.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "mount");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&at)));
    let out = w.cmd(&["unmount", name]);
    assert_eq!(out.status.code(), Some(0), "unmount");
    match r {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// The complete generations on a mounted drive (oldest first) and the names of folders
/// that are not complete generations.
pub(crate) fn generations(mp: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let dir = mp.join("generations");
    let mut complete = vec![];
    let mut other = vec![];
    let Ok(rd) = fs::read_dir(&dir) else {
        return (complete, other);
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let looks_complete = n.len() == 18 && n.ends_with('Z') && !n.contains('.');
        if looks_complete {
            complete.push(e.path());
        } else {
            other.push(n);
        }
    }
    complete.sort();
    (complete, other)
}

pub(crate) fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Looks at drive t1 (mounted read-only meanwhile): exactly `want` complete generations
/// and nothing else, the newest equal to `src`; then `f` on the mount point and the
/// generations, oldest first.
fn check_generations<T>(
    w: &World,
    dev: &Path,
    src: &Path,
    want: usize,
    f: impl FnOnce(&Path, &[PathBuf]) -> T,
) -> T {
    with_drive(w, dev, "t1", |mp| {
        let (g, other) = generations(mp);
        assert_eq!((g.len(), other.len()), (want, 0), "{g:?} {other:?}");
        assert_same_tree(src, g.last().unwrap());
        f(mp, &g)
    })
}

/// `history t1 --device DEV --json` (which must succeed): the generations' entries.
pub(crate) fn history_json(w: &World, dev: &Path) -> Vec<serde_json::Value> {
    let out = w.cmd(&["history", "t1", "--device", dev.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    h.as_array().unwrap().clone()
}

/// A run of `dev` that must succeed and log `needle`.
fn run_logging(w: &World, dev: &Path, needle: &str) {
    let out = w.run(dev);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains(needle), "{}", stderr(&out));
}

/// The test's configuration with `top` (top-level keys) in front and `tables` at the end.
pub(crate) fn set_config(w: &World, top: &str, tables: &str) {
    w.edit_config(|text| {
        let base = text.split("# test top\n").last().unwrap();
        let base = base.split("\n# test tables\n").next().unwrap();
        format!("{top}\n# test top\n{base}\n# test tables\n{tables}\n")
    });
}

#[test]
fn history_three_runs_keep_each_generation_as_the_source_was_and_restore_at_brings_back_a_good_file(
) {
    let Some((w, lo)) = World::prepared("t1", 96) else {
        return;
    };
    odd_tree(&w.path("src/odd"));
    let src = w.path("src");

    // Run 1.
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    let snap1 = check_generations(&w, &lo.dev, &src, 1, |mp, g| {
        assert!(!mp.join("data").exists(), "no plain mirror beside");
        meta_snapshot(&g[0])
    });

    // The NAS damages a file (garbage, same size), a file is added, one deleted, a hard
    // link changes, an xattr changes.
    fs::write(w.path("src/a.txt"), b"\0GARB\x01").unwrap(); // same size as "alpha\n"
    fs::write(w.path("src/new.txt"), "new\n").unwrap();
    fs::remove_file(w.path("src/sub/c.txt")).unwrap();
    fs::remove_file(w.path("src/odd/plain/linked2")).unwrap();
    sync_util::set_xattr(&w.path("src/odd/plain/a.txt"), "user.comment", b"changed");
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0));
    let (snap2, name1) = check_generations(&w, &lo.dev, &src, 2, |_, g| {
        assert_eq!(meta_snapshot(&g[0]), snap1, "generation 1 is untouched");
        assert_eq!(fs::read(g[0].join("a.txt")).unwrap(), b"alpha\n");
        // Unchanged files are shared, not copied.
        let ino = |p: PathBuf| fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(g[0].join("sub/b.bin")),
            ino(g[1].join("sub/b.bin")),
            "an unchanged file is one inode in both generations"
        );
        assert_ne!(ino(g[0].join("a.txt")), ino(g[1].join("a.txt")));
        let name1 = g[0].file_name().unwrap().to_str().unwrap().to_string();
        (meta_snapshot(&g[1]), name1)
    });

    // history lists both, the second with far fewer new bytes.
    let h = history_json(&w, &lo.dev);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["name"], name1.as_str());
    let (new1, new2) = (
        h[0]["bytes_new"].as_u64().unwrap(),
        h[1]["bytes_new"].as_u64().unwrap(),
    );
    assert!(new1 > 300_000 && new2 < new1 / 4, "{h:?}");
    let out = w.cmd(&["history", "t1", "--device", lo.dev.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 generation(s)"));

    // restore --at the first generation brings the good file back; without --at, the
    // newest (garbage) one.
    let to = w.path("restored");
    let out = w.restore_from("t1", &lo.dev, "a.txt", Some(&name1), &to);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"alpha\n");
    let to2 = w.path("restored-newest");
    let out = w.restore_from("t1", &lo.dev, "a.txt", None, &to2);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        fs::read(to2.join("a.txt")).unwrap(),
        fs::read(w.path("src/a.txt")).unwrap()
    );
    let out = w.restore_from(
        "t1",
        &lo.dev,
        "a.txt",
        Some("1999-01-01"),
        Path::new("/tmp/x"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no generation at or before"),
        "{}",
        stderr(&out)
    );

    // Run 3: more changes; every generation still equals its own source.
    fs::write(w.path("src/odd/plain/sub/b.bin"), b"replaced").unwrap();
    fs::remove_dir_all(w.path("src/odd/names")).unwrap();
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    check_generations(&w, &lo.dev, &src, 3, |_, g| {
        assert_eq!(meta_snapshot(&g[0]), snap1);
        assert_eq!(meta_snapshot(&g[1]), snap2);
    });
    assert!(mounted_under(w.dir.path()).is_empty());
}

#[test]
fn history_a_plain_mirror_becomes_the_first_generation_without_copying_and_history_false_stays_plain(
) {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    set_config(&w, "history = false", "");
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    let old_ino = with_drive(&w, &lo.dev, "t1", |mp| {
        assert!(
            !mp.join("generations").exists(),
            "history = false: a plain mirror"
        );
        assert_eq!(
            crate::support::snapshot(&mp.join("data")),
            w.source_snapshot()
        );
        fs::metadata(mp.join("data/sub/b.bin")).unwrap().ino()
    });
    // History on (the default): the mirror becomes the first generation, renamed.
    set_config(&w, "", "");
    run_logging(&w, &lo.dev, "became the first generation");
    let st = w.drive_state("t1");
    assert_eq!(
        st["last_success"]["files_copied"], 0,
        "nothing copied: {st}"
    );
    with_drive(&w, &lo.dev, "t1", |mp| {
        let (g, other) = generations(mp);
        assert_eq!((g.len(), other.len()), (2, 0), "{g:?} {other:?}");
        assert!(!mp.join("data").exists());
        for gen in &g {
            assert_eq!(
                fs::metadata(gen.join("sub/b.bin")).unwrap().ino(),
                old_ino,
                "the same inode: not copied"
            );
            assert_eq!(crate::support::snapshot(gen), w.source_snapshot());
        }
    });
    let mail = w.last_mail();
    assert!(mail.contains("became the first generation"), "{mail}");
}

#[test]
fn history_a_killed_run_leaves_nothing_that_looks_complete_and_the_next_run_finishes() {
    let Some((w, lo)) = World::prepared("t1", 96) else {
        return;
    };
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    // 30 MiB more, copied at 3 MiB/s: the run is killed in the middle.
    for i in 0..30 {
        let data: Vec<u8> = (0..1 << 20).map(|b: u32| (b * 7 + i) as u8).collect();
        fs::write(w.path(&format!("src/big-{i:02}.bin")), data).unwrap();
    }
    set_config(&w, "", "[syncer]\nextra_args = [\"--bwlimit=3m\"]");
    let mut child = w.spawn_run(&lo.dev);
    let gens = w.path("mnt/t1/generations");
    let t0 = Instant::now();
    let building = loop {
        let found = fs::read_dir(&gens).ok().and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(".incomplete"))
        });
        if let Some(p) = found {
            let n = fs::read_dir(&p).map(|r| r.count()).unwrap_or(0);
            if n >= 5 {
                break p;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the copy never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500)); // rsync ends on PDEATHSIG
    let (g, other) = generations(&w.path("mnt/t1"));
    assert_eq!(g.len(), 1, "only run 1's generation looks complete: {g:?}");
    assert_eq!(other.len(), 1, "{other:?}");
    assert!(building.exists());
    // The next run closes what the killed one left, resumes and finishes.
    set_config(&w, "", "");
    run_logging(&w, &lo.dev, "resuming the generation");
    check_generations(&w, &lo.dev, &w.path("src"), 2, |_, _| ());
}

#[test]
fn history_space_pressure_prunes_the_oldest_never_the_newest_and_a_source_too_big_deletes_nothing()
{
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    let big = |tag: u8| {
        let _ = fs::remove_dir_all(w.path("src/big"));
        fs::create_dir_all(w.path("src/big")).unwrap();
        for i in 0..18u8 {
            let data: Vec<u8> = (0..1u32 << 20)
                .map(|b| (b as u8).wrapping_mul(tag).wrapping_add(i))
                .collect();
            fs::write(w.path(&format!("src/big/{i:02}.bin")), data).unwrap();
        }
    };
    // Two generations of 18 MiB each fill most of the ~60 MiB drive.
    big(3);
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    big(5);
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    let names = with_drive(&w, &lo.dev, "t1", |mp| generations(mp).0);
    assert_eq!(names.len(), 2);
    // A third cannot fit beside both: the oldest goes, the newest stays.
    big(7);
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mail = w.last_mail();
    let first = names[0].file_name().unwrap().to_str().unwrap();
    let second = names[1].file_name().unwrap().to_str().unwrap();
    assert!(
        mail.contains("space was short") && mail.contains(first),
        "the mail says what was pruned: {mail}"
    );
    let now = with_drive(&w, &lo.dev, "t1", |mp| {
        let (g, _) = generations(mp);
        assert_same_tree(&w.path("src"), g.last().unwrap());
        g
    });
    let now: Vec<&str> = now
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now[0], second, "the newest before the run is kept");
    // A source the drive cannot hold even alone: refused before anything is deleted.
    for i in 18..70u8 {
        fs::write(w.path(&format!("src/big/{i:02}.bin")), vec![i; 1 << 20]).unwrap();
    }
    let before = w.mails().len();
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(1));
    let mails = w.mails();
    assert_eq!(mails.len(), before + 1);
    let mail = w.last_mail();
    assert!(
        mail.contains("cannot hold even one more generation")
            && mail.contains("nothing was deleted"),
        "{mail}"
    );
    let after = with_drive(&w, &lo.dev, "t1", |mp| generations(mp).0);
    let after: Vec<&str> = after
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(after, now, "nothing deleted");
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_history_generations_on_real_luks_keep_the_good_file_and_restore_at_brings_it_back() {
    let (w, lo) = World::on_blank_disk("libcryptsetup", 64);
    w.prepare(&lo.dev, "t1");
    // The guest's /tmp (tmpfs) has no user xattrs: the source lives on ext4.
    let img = testkit::LoopImage::ext4(48);
    let fs_src = img.mount("src");
    let src = w.path("src");
    crate::support::sh(Command::new("cp").arg("-a").arg(src.join(".")).arg(&fs_src));
    crate::support::sh(Command::new("mount").arg("--bind").arg(&fs_src).arg(&src));
    odd_tree(&w.path("src/odd"));
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    let snap1 = check_generations(&w, &lo.dev, &src, 1, |_, g| meta_snapshot(&g[0]));
    fs::write(w.path("src/a.txt"), "GARBA\n").unwrap();
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    let name1 = check_generations(&w, &lo.dev, &src, 2, |_, g| {
        assert_eq!(meta_snapshot(&g[0]), snap1, "generation 1 is untouched");
        g[0].file_name().unwrap().to_str().unwrap().to_string()
    });
    let to = w.path("restored");
    let out = w.restore_from("t1", &lo.dev, "a.txt", Some(&name1), &to);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"alpha\n");
    crate::support::sh(Command::new("umount").arg(&src));
    assert!(mounted_under(w.dir.path()).is_empty());
}

#[test]
fn history_on_btrfs_generations_are_read_only_snapshots_and_pruning_deletes_subvolumes() {
    let Some((w, lo)) = World::blank(200) else {
        return;
    };
    let out = w.try_prepare(
        &lo.dev,
        "t1",
        &["--fs", "btrfs", "--no-recovery-passphrase"],
    );
    assert_eq!(out.status.code(), Some(0), "prepare --fs btrfs");
    odd_tree(&w.path("src/odd"));
    let src = w.path("src");
    assert_eq!(w.run(&lo.dev).status.code(), Some(0));
    let snap1 = check_generations(&w, &lo.dev, &src, 1, |_, g| meta_snapshot(&g[0]));
    fs::write(w.path("src/a.txt"), "GARBA\n").unwrap();
    fs::remove_file(w.path("src/sub/c.txt")).unwrap();
    run_logging(&w, &lo.dev, "btrfs snapshot");
    check_generations(&w, &lo.dev, &src, 2, |_, g| {
        assert_eq!(meta_snapshot(&g[0]), snap1, "generation 1 is untouched");
        for gen in g {
            assert_eq!(fs::metadata(gen).unwrap().ino(), 256, "a subvolume");
            let ro = Command::new("btrfs")
                .args(["property", "get", "-ts"])
                .arg(gen)
                .arg("ro")
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&ro.stdout).trim(), "ro=true");
        }
        // An unchanged file is the same inode (shared extents) in both snapshots.
        let id = |p: PathBuf| {
            let m = fs::metadata(p).unwrap();
            (m.ino(), m.ctime(), m.ctime_nsec())
        };
        assert_eq!(id(g[0].join("sub/b.bin")), id(g[1].join("sub/b.bin")));
    });
    let h = history_json(&w, &lo.dev);
    assert_eq!(h.len(), 2);
    assert!(
        h[1]["bytes_new"].as_u64().unwrap() < h[0]["bytes_new"].as_u64().unwrap() / 4,
        "{h:?}"
    );
    // A policy that keeps only the newest: the older snapshots are deleted.
    set_config(
        &w,
        "",
        "[history]\nkeep_within_days = 0\ndaily = 0\nweekly = 0\nmonthly = 0",
    );
    run_logging(&w, &lo.dev, "pruned by the retention policy");
    check_generations(&w, &lo.dev, &src, 1, |_, _| ());
}
