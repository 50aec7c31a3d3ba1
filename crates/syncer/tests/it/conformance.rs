//! What every `Syncer` promises, as one suite run on the fake and on the real backends
//! alike: after a sync the target holds what the source holds (new, changed and deleted
//! files), without what the exclude patterns leave out (excluded entries already on the
//! target go), and the guard refuses the same things whatever the backend.

use crate::opts;
use std::fs;
use std::path::Path;
use syncer::fake::FakeSyncer;
use syncer::{CommandSyncer, ErrorKind, Excludes, GuardedSync, RsyncSyncer, SyncOptions, Syncer};

/// Files under `root` with their contents (symbolic links as `-> target`).
fn listing(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                v.push((format!("{rel}/"), vec![]));
                stack.push(p);
            } else if md.file_type().is_symlink() {
                let to = fs::read_link(&p).unwrap().display().to_string();
                v.push((rel, format!("-> {to}").into_bytes()));
            } else {
                v.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    v.sort();
    v
}

fn keeps_the_syncer_promises(s: &dyn Syncer) {
    let name = s.describe();
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("a.txt"), "alpha\n").unwrap();
    fs::write(src.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    fs::write(src.join("sub/deeper/c"), "").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    fs::create_dir_all(&dst).unwrap();

    // A first copy, then one with a change, an addition and deletions.
    s.sync(&src, &dst, &opts(), &mut |_| {})
        .expect("first sync");
    assert_eq!(listing(&dst), listing(&src), "{name}: first copy");
    fs::write(src.join("a.txt"), "alpha, changed\n").unwrap();
    fs::write(src.join("new.txt"), "new\n").unwrap();
    fs::remove_file(src.join("sub/deeper/c")).unwrap();
    fs::remove_dir(src.join("sub/deeper")).unwrap();
    s.sync(&src, &dst, &opts(), &mut |_| {})
        .expect("second sync");
    assert_eq!(listing(&dst), listing(&src), "{name}: after changes");

    // The guard, the same for every backend: an empty or missing source is refused and the
    // target stays as it was.
    let before = listing(&dst);
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let e = s.sync(&empty, &dst, &opts(), &mut |_| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SourceUnusable, "{name}: {e}");
    let e = s
        .sync(&t.path().join("missing"), &dst, &opts(), &mut |_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SourceUnusable, "{name}: {e}");
    assert_eq!(listing(&dst), before, "{name}: the guard kept the target");
}

/// Excludes: the target holds the source without the excluded entries, and loses what it
/// held of them.
fn honours_excludes(s: &dyn Syncer) {
    let name = s.describe();
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    for f in [
        "keep.txt",
        "x.tmp",
        "cache/big",
        "sub/cache/kept",
        "sub/y.tmp",
        "sub/z",
    ] {
        fs::create_dir_all(src.join(f).parent().unwrap()).unwrap();
        fs::write(src.join(f), f).unwrap();
    }
    let all = SyncOptions {
        max_delete_fraction: None,
        ..opts()
    };
    s.sync(&src, &dst, &all, &mut |_| {}).expect("full copy");
    let o = SyncOptions {
        exclude: Excludes::new(&["*.tmp", "/cache/"]).unwrap(),
        ..all
    };
    s.sync(&src, &dst, &o, &mut |_| {})
        .expect("copy with excludes");
    let names: Vec<String> = listing(&dst).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["keep.txt", "sub/", "sub/cache/", "sub/cache/kept", "sub/z"],
        "{name}"
    );
}

#[test]
fn the_fake_keeps_the_syncer_promises() {
    keeps_the_syncer_promises(&FakeSyncer::new());
    honours_excludes(&FakeSyncer::new());
}

/// The first copy by cp (the target is empty), then rsync.
#[test]
fn rsync_keeps_the_syncer_promises() {
    keeps_the_syncer_promises(&RsyncSyncer::new());
    honours_excludes(&RsyncSyncer::new());
}

#[test]
fn rsync_without_the_first_copy_engine_keeps_the_syncer_promises() {
    keeps_the_syncer_promises(&RsyncSyncer::new().without_first_copy());
}

#[test]
fn a_command_syncer_keeps_the_syncer_promises() {
    let s = CommandSyncer::new("/bin/sh").with_args([
        "-c",
        "exec rsync -a --delete \"$EXTBACKUP_SOURCE/\" \"$EXTBACKUP_TARGET\"",
    ]);
    keeps_the_syncer_promises(&s);
    // It chooses what it copies itself: exclude patterns are refused, not ignored.
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("f"), "x").unwrap();
    let o = SyncOptions {
        exclude: Excludes::new(&["*.tmp"]).unwrap(),
        ..opts()
    };
    let e = s
        .sync(t.path(), &t.path().join("dst"), &o, &mut |_| {})
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("exclude patterns go with the rsync syncer"),
        "{e}"
    );
}
