//! `RsyncSyncer` with the real rsync.

use crate::opts;
use crate::util::{
    assert_same_tree, entries, non_utf8, odd_tree, root_or_skip_here, total_size, LoopFs,
};
use std::fs;
use std::path::Path;
use std::process::Command;
use syncer::{ErrorKind, GuardedSync, Progress, RsyncSyncer, SyncOptions};

fn no_progress(_: Progress) {}

#[test]
fn mirrors_an_odd_tree_onto_ext4_then_only_changes() {
    if !root_or_skip_here() {
        return;
    }
    let src_fs = LoopFs::new(64);
    let dst_fs = LoopFs::new(64);
    let src = &src_fs.mnt;
    let dst = dst_fs.mnt.join("backup");
    odd_tree(src);
    let o = SyncOptions {
        require_source_mount_point: true,
        ..opts()
    };
    // rsync's own first copy (the first-copy engine has its test in first_copy.rs).
    let s = RsyncSyncer::new().without_first_copy();

    let r = s.sync(src, &dst, &o, &mut no_progress).expect("first sync");
    assert_same_tree(src, &dst);
    // The sparse file stays sparse: its 8 MiB hold two written blocks, not 8 MiB of zeros.
    let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&fs::metadata(p).unwrap()) * 512;
    let (in_src, on_drive) = (
        blocks(&src.join("sparse.img")),
        blocks(&dst.join("sparse.img")),
    );
    assert!(
        on_drive <= in_src.max(64 << 10),
        "sparse.img takes {on_drive} bytes on the drive, {in_src} in the source"
    );
    let n = entries(src).len() as u64;
    assert_eq!(
        r.files_total,
        n + 1,
        "rsync counts the root folder too: {r:?}"
    );
    assert_eq!(r.bytes_total, total_size(src), "{r:?}");
    assert_eq!(r.files_deleted, 0);
    assert!(r.files_copied > 0 && r.bytes_copied > 0, "{r:?}");
    assert!(r.warnings.is_empty(), "{r:?}");

    // Nothing changed: nothing copied.
    let r = s.sync(src, &dst, &o, &mut no_progress).expect("re-sync");
    assert_eq!(
        (r.files_copied, r.bytes_copied, r.files_deleted),
        (0, 0, 0),
        "{r:?}"
    );

    // One file changed: only it is copied.
    fs::write(src.join("plain/sub/b.bin"), b"new content, 23 bytes\n").unwrap();
    let r = s
        .sync(src, &dst, &o, &mut no_progress)
        .expect("sync after a change");
    assert_eq!(r.files_copied, 1, "{r:?}");
    assert_eq!(r.bytes_copied, 22, "{r:?}");
    assert_same_tree(src, &dst);

    // Deletions are mirrored: a file and a folder with one file in it.
    fs::remove_file(src.join("names").join(non_utf8(b"bad-\xff\xfe-utf8"))).unwrap();
    fs::remove_dir_all(src.join("setgid-dir")).unwrap();
    let r = s
        .sync(src, &dst, &o, &mut no_progress)
        .expect("sync after deletions");
    assert_eq!(r.files_deleted, 3, "{r:?}");
    assert_eq!(r.files_copied, 0, "{r:?}");
    assert!(!dst.join("setgid-dir").exists());
    assert_same_tree(src, &dst);
    assert!(
        dst_fs.mnt.join("lost+found").is_dir(),
        "the drive's lost+found is kept"
    );
}

#[test]
fn progress_rises_and_ends_at_100_percent() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(src.join("many")).unwrap();
    let big: Vec<u8> = (0..48u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("big"), &big).unwrap();
    for i in 0..300 {
        fs::write(src.join(format!("many/{i}")), vec![b'x'; 1000 + i]).unwrap();
    }
    let mut seen: Vec<Progress> = vec![];
    let r = RsyncSyncer::new()
        .without_first_copy()
        .sync(&src, &dst, &opts(), &mut |p| seen.push(p))
        .expect("sync");
    assert!(seen.len() >= 3, "{seen:?}");
    for w in seen.windows(2) {
        assert!(w[1].bytes >= w[0].bytes, "bytes went down: {w:?}");
        assert!(
            w[1].fraction.unwrap() >= w[0].fraction.unwrap(),
            "fraction went down: {w:?}"
        );
    }
    let before_end = &seen[..seen.len() - 1];
    assert!(
        before_end
            .iter()
            .any(|p| p.bytes > 0 && p.fraction.unwrap() > 0.0),
        "rsync's own progress lines were not parsed: {seen:?}"
    );
    let last = seen.last().unwrap();
    assert_eq!(last.fraction, Some(1.0));
    assert_eq!(last.bytes, r.bytes_copied);
    assert_eq!(r.bytes_copied, total_size(&src));
    assert_eq!(
        r.files_copied,
        300 + 1 + 2,
        "300 + big + the `many` folder + the target folder itself: {r:?}"
    );
}

#[test]
fn guard_refuses_before_touching_the_target() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    for i in 0..10 {
        fs::write(dst.join(format!("f{i}")), "old").unwrap();
    }
    let s = RsyncSyncer::new();
    // Empty source.
    let e = s.sync(&src, &dst, &opts(), &mut no_progress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SourceUnusable, "{e:?}");
    assert_eq!(entries(&dst).len(), 10);
    // Missing source.
    let e = s
        .sync(&t.path().join("missing"), &dst, &opts(), &mut no_progress)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SourceUnusable, "{e:?}");
    // Not a mount point.
    fs::write(src.join("f0"), "newer").unwrap();
    let must_mount = SyncOptions {
        require_source_mount_point: true,
        ..opts()
    };
    let e = s
        .sync(&src, &dst, &must_mount, &mut no_progress)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SourceUnusable, "{e:?}");
    assert!(e.to_string().contains("--force"), "{e}");
    // 9 of 10 would go.
    let e = s.sync(&src, &dst, &opts(), &mut no_progress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooManyDeletions, "{e:?}");
    assert!(e.to_string().contains("9 of the 10"), "{e}");
    assert_eq!(entries(&dst).len(), 10, "the target was touched");
    assert_eq!(fs::read_to_string(dst.join("f0")).unwrap(), "old");
    // Forced: the mirror happens.
    let forced = SyncOptions {
        force: true,
        ..must_mount
    };
    let r = s
        .sync(&src, &dst, &forced, &mut no_progress)
        .expect("forced");
    assert_eq!(r.files_deleted, 9, "{r:?}");
    assert_eq!(entries(&dst), vec![Path::new("f0").to_path_buf()]);
    assert_eq!(fs::read_to_string(dst.join("f0")).unwrap(), "newer");
}

#[test]
fn a_drive_too_small_is_no_space() {
    if !root_or_skip_here() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = crate::util::too_big_source(t.path());
    let small = LoopFs::new(8);
    // rsync's own exit 11 (cp makes a first copy by default: see first_copy.rs).
    let e = RsyncSyncer::new()
        .without_first_copy()
        .sync(&src, &small.mnt.join("backup"), &opts(), &mut no_progress)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
    assert!(e.to_string().contains("rsync exit 11"), "{e}");
    assert!(e.to_string().contains("ran out of space"), "{e}");
    assert!(e.to_string().contains("larger drive"), "{e}");
}

#[test]
fn an_unwritable_target_folder_is_a_partial_transfer() {
    if !root_or_skip_here() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::write(src.join("ok"), "fine").unwrap();
    let drive = LoopFs::new(16);
    let dst = drive.mnt.join("backup");
    let s = RsyncSyncer::new();
    s.sync(&src, &dst, &opts(), &mut no_progress).unwrap();
    fs::write(src.join("locked/new"), "cannot land").unwrap();
    fs::write(src.join("ok2"), "lands").unwrap();
    let chattr = |flag: &str| {
        let st = Command::new("chattr")
            .arg(flag)
            .arg(dst.join("locked"))
            .status();
        assert!(st.is_ok_and(|s| s.success()), "chattr {flag}");
    };
    chattr("+i");
    let res = s.sync(&src, &dst, &opts(), &mut no_progress);
    chattr("-i");
    let e = res.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PartialTransfer, "{e:?}");
    assert!(e.to_string().contains("exit 23"), "{e}");
    assert_eq!(fs::read_to_string(dst.join("ok2")).unwrap(), "lands");
}

#[test]
fn rsync_missing_is_not_found_with_the_apt_hint() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("x"), "x").unwrap();
    let e = RsyncSyncer::new()
        .with_program(t.path().join("no-such-dir/rsync"))
        .sync(&src, &t.path().join("dst"), &opts(), &mut no_progress)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
    assert!(e.to_string().contains("apt-get install rsync"), "{e}");
}

/// Exit 24 cannot be provoked reliably with the real rsync: a stand-in prints what
/// rsync prints and exits 24; the sync succeeds with a warning and parsed figures.
#[test]
fn exit_24_is_a_warning_with_the_figures_kept() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("x"), "x").unwrap();
    let fake = t.path().join("rsync");
    fs::write(
        &fake,
        "#!/bin/sh\n\
         printf '          5 100%%    0.00kB/s    0:00:00 (xfr#1, to-chk=0/2)\\r'\n\
         printf '\\nNumber of files: 2 (reg: 1, dir: 1)\\nNumber of regular files transferred: 1\\n'\n\
         printf 'Total file size: 5 bytes\\nTotal transferred file size: 5 bytes\\n'\n\
         echo 'file has vanished: \"/src/gone\"' >&2\n\
         exit 24\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let r = RsyncSyncer::new()
        .without_first_copy()
        .with_program(&fake)
        .sync(&src, &t.path().join("dst"), &opts(), &mut no_progress)
        .expect("exit 24 is success");
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert!(r.warnings[0].contains("vanished"));
    assert_eq!((r.files_total, r.files_copied, r.bytes_copied), (2, 1, 5));
}

/// rsync compares whole seconds by default; a same-size change within the same second
/// must still be copied.
#[test]
fn a_same_size_change_within_the_same_second_is_copied() {
    use std::time::{Duration, SystemTime};
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir(&src).unwrap();
    let f = src.join("f");
    let at = |ms: u64| {
        let when = SystemTime::UNIX_EPOCH + Duration::from_millis(1_600_000_000_000 + ms);
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(when)
            .unwrap();
    };
    fs::write(&f, "version 1").unwrap();
    at(100);
    let s = RsyncSyncer::new();
    s.sync(&src, &dst, &opts(), &mut no_progress).unwrap();
    fs::write(&f, "version 2").unwrap();
    at(600);
    let r = s.sync(&src, &dst, &opts(), &mut no_progress).unwrap();
    assert_eq!(r.files_copied, 1, "{r:?}");
    assert_eq!(fs::read_to_string(dst.join("f")).unwrap(), "version 2");
}

#[test]
fn rsync_killed_by_a_signal_is_interrupted() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("x"), "x").unwrap();
    let fake = t.path().join("rsync");
    fs::write(&fake, "#!/bin/sh\nkill -KILL $$\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let e = RsyncSyncer::new()
        .without_first_copy()
        .with_program(&fake)
        .sync(&src, &t.path().join("dst"), &opts(), &mut no_progress)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted, "{e:?}");
    assert!(e.to_string().contains("signal 9"), "{e}");
}
