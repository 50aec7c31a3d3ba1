//! The first-copy engine (cp onto an empty target) against rsync: the same result, byte
//! for byte and attribute for attribute.

use crate::opts;
use crate::util::{allocated, assert_same_tree, odder_tree, root_or_skip_here, LoopFs};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use syncer::{
    first_copy_applies, ErrorKind, GuardedSync, Progress, RsyncSyncer, SyncOptions, Syncer,
};

/// A cp that records its arguments in `log`, then runs the real cp.
fn recording_cp(dir: &Path, log: &Path) -> std::path::PathBuf {
    let p = dir.join("cp");
    fs::write(
        &p,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexec cp \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn the_first_copy_by_cp_equals_rsyncs_then_rsync_changes_nothing() {
    if !root_or_skip_here() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src_fs = LoopFs::new(64);
    let dst_fs = LoopFs::new(64);
    let src = &src_fs.mnt;
    odder_tree(src);
    let o = SyncOptions {
        require_source_mount_point: true,
        ..opts()
    };
    // The pipeline's case: the target folder was just made and is empty.
    let by_cp = dst_fs.mnt.join("by-cp");
    fs::create_dir(&by_cp).unwrap();
    assert!(first_copy_applies(&by_cp, &o));
    let log = t.path().join("cp-args");
    let engine = RsyncSyncer::new().with_cp_program(recording_cp(t.path(), &log));
    assert!(
        engine.describe().contains("first copy"),
        "{}",
        engine.describe()
    );
    let mut seen: Vec<Progress> = vec![];
    let r_cp = engine
        .sync(src, &by_cp, &o, &mut |p| seen.push(p))
        .expect("first copy by cp");
    let args = fs::read_to_string(&log).expect("cp ran");
    assert!(
        args.contains("--preserve=mode,ownership,timestamps,links,xattr"),
        "{args}"
    );
    assert!(!args.contains("lost+found"), "{args}");
    assert_eq!(seen.last().map(|p| p.fraction), Some(Some(1.0)), "{seen:?}");

    // rsync alone, onto a missing folder of the same filesystem.
    let by_rsync = dst_fs.mnt.join("by-rsync");
    let r_rsync = RsyncSyncer::new()
        .without_first_copy()
        .sync(src, &by_rsync, &o, &mut |_| {})
        .expect("first copy by rsync");

    assert_same_tree(src, &by_cp);
    assert_same_tree(src, &by_rsync);
    assert_same_tree(&by_rsync, &by_cp);
    assert!(
        !by_cp.join("lost+found").exists(),
        "the source's lost+found was copied"
    );
    for copy in [&by_cp, &by_rsync] {
        let (in_src, on_drive) = (
            allocated(&src.join("sparse.img")),
            allocated(&copy.join("sparse.img")),
        );
        assert!(
            on_drive <= in_src.max(64 << 10),
            "sparse.img takes {on_drive} bytes in {}, {in_src} in the source",
            copy.display()
        );
    }
    // The report counts what rsync's --stats counts (rsync created its target folder, cp's
    // existed: one folder less).
    assert_eq!(
        (
            r_cp.files_total,
            r_cp.bytes_total,
            r_cp.bytes_copied,
            r_cp.files_deleted
        ),
        (
            r_rsync.files_total,
            r_rsync.bytes_total,
            r_rsync.bytes_copied,
            0
        ),
        "cp: {r_cp:?}\nrsync: {r_rsync:?}"
    );
    assert_eq!(
        r_cp.files_copied + 1,
        r_rsync.files_copied,
        "cp: {r_cp:?}\nrsync: {r_rsync:?}"
    );
    assert!(r_cp.warnings.is_empty(), "{r_cp:?}");

    // The next sync is rsync's (the target is not empty), and finds nothing to do.
    assert!(!first_copy_applies(&by_cp, &o));
    fs::remove_file(&log).unwrap();
    let again = engine
        .sync(src, &by_cp, &o, &mut |_| {})
        .expect("second sync");
    assert!(!log.exists(), "cp ran on a target that was not empty");
    assert_eq!(
        (again.files_copied, again.bytes_copied, again.files_deleted),
        (0, 0, 0),
        "{again:?}"
    );
    assert_same_tree(src, &by_cp);
}

#[test]
fn a_first_copy_onto_a_drive_too_small_is_no_space() {
    if !root_or_skip_here() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = crate::util::too_big_source(t.path());
    let small = LoopFs::new(8);
    let log = t.path().join("cp-args");
    let e = RsyncSyncer::new()
        .with_cp_program(recording_cp(t.path(), &log))
        .sync(&src, &small.mnt.join("backup"), &opts(), &mut |_| {})
        .unwrap_err();
    assert!(log.exists(), "cp did not run");
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("ran out of space") && msg.contains("larger drive"),
        "{msg}"
    );
    assert!(msg.contains("cp exit 1"), "{msg}");
}

/// cp stops on something rsync can get past (here: a stand-in that copies nothing and says
/// a file vanished): rsync completes the copy, and the report says so.
#[test]
fn a_first_copy_cp_cannot_finish_is_completed_by_rsync() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/a"), "alpha").unwrap();
    let cp = t.path().join("cp");
    fs::write(
        &cp,
        "#!/bin/sh\necho \"cp: cannot stat '/src/gone': No such file or directory\" >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&cp, fs::Permissions::from_mode(0o755)).unwrap();
    let r = RsyncSyncer::new()
        .with_cp_program(&cp)
        .sync(&src, &dst, &opts(), &mut |_| {})
        .expect("rsync completes the copy");
    assert_eq!(fs::read_to_string(dst.join("sub/a")).unwrap(), "alpha");
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert!(r.warnings[0].contains("rsync completed it"), "{r:?}");
    assert!(r.warnings[0].contains("cannot stat"), "{r:?}");
}

/// With extra rsync arguments (an exclude, a bandwidth limit), cp is not used: it could not
/// honour them.
#[test]
fn extra_rsync_arguments_leave_the_first_copy_to_rsync() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir_all(src.join("skip-me")).unwrap();
    fs::write(src.join("skip-me/x"), "x").unwrap();
    fs::write(src.join("keep"), "k").unwrap();
    let log = t.path().join("cp-args");
    RsyncSyncer::new()
        .with_cp_program(recording_cp(t.path(), &log))
        .with_extra_args(["--exclude=/skip-me"])
        .sync(&src, &dst, &opts(), &mut |_| {})
        .expect("sync");
    assert!(!log.exists(), "cp ran despite an exclude");
    assert!(!dst.join("skip-me").exists());
    assert_eq!(fs::read_to_string(dst.join("keep")).unwrap(), "k");
}

/// The progress of a first copy is what cp has written (here a stand-in writes 20 MB in
/// steps before it becomes the real cp): it rises, and ends at 100% with the copied bytes.
#[test]
fn the_progress_of_a_first_copy_rises_and_ends_at_100_percent() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("data"), vec![7u8; 30 << 20]).unwrap();
    let cp = t.path().join("cp");
    fs::write(
        &cp,
        "#!/bin/sh\ni=0\nwhile [ $i -lt 20 ]; do\n  printf '%01000000d' 0 > /dev/null\n  \
         sleep 0.05\n  i=$((i+1))\ndone\nexec cp \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&cp, fs::Permissions::from_mode(0o755)).unwrap();
    let mut seen: Vec<Progress> = vec![];
    let r = RsyncSyncer::new()
        .with_cp_program(&cp)
        .sync(&src, &dst, &opts(), &mut |p| seen.push(p))
        .expect("first copy");
    assert_eq!(fs::read(dst.join("data")).unwrap().len(), 30 << 20);
    let before_end = &seen[..seen.len() - 1];
    assert!(
        before_end
            .iter()
            .any(|p| p.bytes > 0 && p.fraction.is_some_and(|f| f > 0.0 && f < 1.0)),
        "no progress while cp ran: {seen:?}"
    );
    for w in seen.windows(2) {
        assert!(w[1].bytes >= w[0].bytes, "bytes went down: {w:?}");
        assert!(w[1].fraction >= w[0].fraction, "fraction went down: {w:?}");
    }
    let last = seen.last().unwrap();
    assert_eq!(last.fraction, Some(1.0));
    assert!(last.bytes >= r.bytes_copied, "{last:?} {r:?}");
    assert_eq!(r.bytes_copied, 30 << 20);
}

/// cp killed by a signal (a stop, or the run's death through `PR_SET_PDEATHSIG`) is
/// [`ErrorKind::Interrupted`], as rsync killed is; rsync does not then finish the copy.
#[test]
fn a_first_copy_killed_by_a_signal_is_interrupted() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("x"), "x").unwrap();
    let cp = t.path().join("cp");
    fs::write(&cp, "#!/bin/sh\nkill -TERM $$\n").unwrap();
    fs::set_permissions(&cp, fs::Permissions::from_mode(0o755)).unwrap();
    let e = RsyncSyncer::new()
        .with_cp_program(&cp)
        .sync(&src, &dst, &opts(), &mut |_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted, "{e:?}");
    assert!(e.to_string().contains("cp was killed by signal 15"), "{e}");
    assert!(!dst.join("x").exists(), "rsync completed a stopped copy");
}
