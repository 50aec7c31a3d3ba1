//! The first copy onto an empty target: GNU `cp` instead of rsync (issue 14.6).
//!
//! A local rsync pipes every byte from its sender process to its receiver process and
//! builds the whole file list first; onto an empty drive there is nothing to compare, and
//! `cp` copies at the drive's speed (`cargo xtask bench first-copy` measures both against
//! `cp -a`). [`RsyncSyncer`](crate::RsyncSyncer) uses this engine only when
//! [`first_copy_applies`] (an empty target, no `--link-dest`, no extra rsync arguments);
//! every later sync is rsync's.
//!
//! What it runs: `cp -dR --preserve=mode,ownership,timestamps,links,xattr --sparse=auto
//! -t TARGET -- SOURCE/<each top-level entry but lost+found>`, one invocation, so hard
//! links across the whole tree stay hard links. `mode` carries POSIX ACLs; `xattr` named
//! explicitly makes a failure to copy an extended attribute an error (plain `cp -a` would
//! ignore it); numeric owners are kept as they are (cp never maps names); holes stay holes
//! (`--sparse=auto`); names are passed as paths under SOURCE after `--`, so none reads as an
//! option. The target folder's own mode, owner, times, xattrs and ACLs are then set by
//! rsync on that one folder (`rsync -aAX --numeric-ids --modify-window=-1 --exclude=*
//! SOURCE/ TARGET`), as the
//! full rsync would have set them.
//!
//! Failures: "No space left on device" is [`ErrorKind::NoSpace`], a device error or a
//! target that vanished [`ErrorKind::Io`], a signal [`ErrorKind::Interrupted`], with the
//! same messages as rsync's. Any other failure (a file that vanished meanwhile, one that
//! cannot be read) is not final: rsync then runs over what cp left and its result is the
//! result, so the kinds stay rsync's (exit 23, exit 24's warning).
//!
//! Progress: the bytes cp has written (`wchar` in `/proc/PID/io`), against the source's
//! size from a walk made meanwhile on a thread; the report's figures come from that walk
//! and count what rsync's `--stats` would count for the same first copy.

use crate::child::{collect_stderr, spawn_error};
use crate::failure::{
    io_error, no_space_error, says_device_failed, says_no_space, tail_text, target_gone,
};
use crate::{guard, ErrorKind, Progress, SyncError, SyncOptions, SyncReport};
use oskit::process::tie_to_parent;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Beyond this many bytes of top-level names (the command line's budget, well under
/// `ARG_MAX`), the first copy is left to rsync.
const ARGS_BUDGET: usize = 512 * 1024;

/// How often the progress is read while cp runs.
const POLL: Duration = Duration::from_millis(250);

/// Whether a sync may use the first-copy engine instead of rsync: the target is missing
/// (its parent exists) or an empty folder (a `lost+found` alone counts as empty), and the
/// options ask for nothing but a mirror (no `link_dest`).
///
/// Every field of [`SyncOptions`] is named here on purpose: a new option (excludes, say)
/// stops the build until it is decided whether cp can honour it (cp cannot exclude: with
/// excludes, the answer must be false).
pub fn first_copy_applies(target: &Path, opts: &SyncOptions) -> bool {
    let SyncOptions {
        drive: _,
        require_source_mount_point: _,
        max_delete_fraction: _,
        force: _,
        link_dest,
        exclude,
        // Progress only: cp needs no count.
        expected_entries: _,
    } = opts;
    // cp cannot exclude: rsync copies what is not excluded.
    if link_dest.is_some() || !exclude.is_empty() {
        return false;
    }
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => is_empty(target).unwrap_or(false),
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => target
            .parent()
            .map(|p| p.as_os_str().is_empty() || p.is_dir())
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn is_empty(dir: &Path) -> io::Result<bool> {
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        if !guard::IGNORED_AT_ROOT.iter().any(|n| name == **n) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What cp is to copy: the source's top-level entries (its `lost+found` left out).
pub(crate) struct Plan {
    entries: Vec<PathBuf>,
    create_root: bool,
}

/// The plan for a first copy, or `None` when rsync should do it (too many top-level
/// names for one command line, or the source cannot be listed: rsync reports that).
pub(crate) fn plan(source: &Path, target: &Path) -> Option<Plan> {
    let mut entries = vec![];
    let mut budget = 0usize;
    for e in fs::read_dir(source).ok()? {
        let e = e.ok()?;
        let name = e.file_name();
        if guard::IGNORED_AT_ROOT.iter().any(|n| name == **n) {
            continue;
        }
        let p = source.join(&name);
        budget += p.as_os_str().len() + 1 + std::mem::size_of::<usize>();
        if budget > ARGS_BUDGET {
            tracing::info!(
                "the source has too many top-level entries for one cp command line: rsync \
                 makes the first copy"
            );
            return None;
        }
        entries.push(p);
    }
    Some(Plan {
        entries,
        create_root: !target.exists(),
    })
}

/// How a first copy ended.
pub(crate) enum Outcome {
    /// Everything is on the target; the report says what was copied.
    Copied(SyncReport),
    /// cp stopped for a reason rsync may get past or report in its own terms (the message
    /// says what cp said); rsync is to complete the copy.
    Stopped(String),
}

/// Runs cp for `plan`. The target folder's own metadata is left to the caller.
pub(crate) fn copy(
    cp: &Path,
    source: &Path,
    target: &Path,
    plan: &Plan,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, SyncError> {
    let start = Instant::now();
    if plan.create_root {
        fs::create_dir(target).map_err(|e| {
            SyncError::new(
                ErrorKind::Io,
                format!("creating the target folder {}", target.display()),
            )
            .with_source(e)
        })?;
    }
    let mut args: Vec<OsString> = [
        "-dR",
        "--preserve=mode,ownership,timestamps,links,xattr",
        "--sparse=auto",
        "-t",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(target.as_os_str().to_owned());
    args.push("--".into());
    args.extend(plan.entries.iter().map(|p| p.as_os_str().to_owned()));
    tracing::info!(
        "first copy onto an empty target: running {} -dR --preserve=mode,ownership,timestamps,links,xattr \
         --sparse=auto -t {} -- ({} top-level entries of {})",
        cp.display(),
        target.display(),
        plan.entries.len(),
        source.display()
    );
    // The source's size, measured while cp copies: for the progress fraction and the report.
    let (totals_tx, totals_rx) = mpsc::channel();
    let src = source.to_path_buf();
    std::thread::spawn(move || {
        // Second to cp on a busy NAS's cores: the walk is only for the progress fraction
        // and the report (failing to lower it is harmless).
        let _ = oskit::set_thread_priority(Some(19), None);
        let _ = totals_tx.send(Totals::of(&src));
    });
    let mut child = tie_to_parent(&mut Command::new(cp))
        .args(&args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cp, e))?;
    let stderr = collect_stderr(&mut child, "cp");
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let mut totals: Option<io::Result<Totals>> = None;
    let mut last = Progress {
        bytes: 0,
        fraction: None,
    };
    let status = loop {
        match done_rx.recv_timeout(POLL) {
            Ok(status) => break status,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(io::Error::other("the thread waiting for cp ended"))
            }
        }
        if totals.is_none() {
            totals = totals_rx.try_recv().ok();
        }
        let Some(written) = bytes_written(pid) else {
            continue;
        };
        let total = totals.as_ref().and_then(|t| t.as_ref().ok());
        let p = Progress {
            bytes: written.max(last.bytes),
            fraction: total.map(|t| {
                let f = written as f64 / t.bytes_once.max(1) as f64;
                (f.min(0.99) as f32).max(last.fraction.unwrap_or(0.0))
            }),
        };
        if p != last {
            last = p;
            progress(p);
        }
    };
    let tail = stderr.join().unwrap_or_default();
    let status = status
        .map_err(|e| SyncError::new(ErrorKind::Other, "waiting for cp to finish").with_source(e))?;
    if let Some(outcome) = map_status(status, &tail, target)? {
        return Ok(outcome);
    }
    let totals = match totals {
        Some(t) => t,
        None => totals_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the walk of the source ended"))),
    };
    let mut report = match totals {
        Ok(t) => t.report(plan.create_root),
        Err(e) => SyncReport {
            warnings: vec![format!(
                "the source's size could not be measured for the report ({e}); the copy itself succeeded"
            )],
            ..SyncReport::default()
        },
    };
    report.duration = start.elapsed();
    progress(Progress {
        bytes: report.bytes_copied.max(last.bytes),
        fraction: Some(1.0),
    });
    tracing::info!(
        "cp done: {} files copied ({} bytes), {} files / {} bytes in the source, {:.1} s",
        report.files_copied,
        report.bytes_copied,
        report.files_total,
        report.bytes_total,
        report.duration.as_secs_f64()
    );
    Ok(Outcome::Copied(report))
}

/// The bytes the process `pid` has written so far (`wchar` of `/proc/PID/io`).
fn bytes_written(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// cp's exit status: `Ok(None)` on success, `Ok(Some(Stopped))` when rsync is to complete
/// the copy, an error when the failure is final (no space, a failed or vanished drive, a
/// signal).
pub(crate) fn map_status(
    status: ExitStatus,
    stderr_tail: &[String],
    target: &Path,
) -> Result<Option<Outcome>, SyncError> {
    let Some(code) = status.code() else {
        let sig = status.signal().unwrap_or(0);
        return Err(SyncError::new(
            ErrorKind::Interrupted,
            format!(
                "cp was killed by signal {sig}; the drive's copy is incomplete until the next \
                 complete run"
            ),
        ));
    };
    if code == 0 {
        return Ok(None);
    }
    let tail = tail_text(stderr_tail);
    if says_no_space(stderr_tail) {
        return Err(no_space_error("cp", code, target, &tail));
    }
    let device_failed = says_device_failed(stderr_tail);
    if device_failed || target_gone(target) {
        return Err(io_error("cp", code, device_failed, target, &tail));
    }
    Ok(Some(Outcome::Stopped(format!(
        "the first copy with cp stopped (exit {code}); rsync completed it. cp said:\n{tail}"
    ))))
}

/// The source's figures, counted as rsync's `--stats` counts them for a first copy.
#[derive(Debug, Default)]
struct Totals {
    /// Entries below the root (its `lost+found` left out).
    entries: u64,
    /// Regular files, each inode once (hard links after the first are not copied again).
    regular_inodes: u64,
    /// Folders, symbolic links, devices, fifos and sockets.
    non_regular: u64,
    /// Sizes of all regular files (every name) plus symbolic link target lengths.
    bytes_all: u64,
    /// Sizes of regular files, each inode once.
    bytes_once: u64,
}

impl Totals {
    fn of(source: &Path) -> io::Result<Totals> {
        let mut t = Totals::default();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        // Symbolic links are not followed (the source's root is, as cp's arguments are).
        let mut it = walkdir::WalkDir::new(source).min_depth(1).into_iter();
        while let Some(e) = it.next() {
            let e = e?;
            if e.depth() == 1 && guard::IGNORED_AT_ROOT.iter().any(|n| *e.file_name() == **n) {
                if e.file_type().is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
            let m = match e.metadata() {
                Ok(m) => m,
                // Vanished meanwhile: cp reports it.
                Err(err)
                    if err.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) =>
                {
                    if e.file_type().is_dir() {
                        it.skip_current_dir();
                    }
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            t.entries += 1;
            let ft = m.file_type();
            if ft.is_file() {
                t.bytes_all += m.len();
                if m.nlink() == 1 || seen.insert((m.dev(), m.ino())) {
                    t.regular_inodes += 1;
                    t.bytes_once += m.len();
                }
            } else {
                t.non_regular += 1;
                if ft.is_symlink() {
                    t.bytes_all += m.len();
                } else if !ft.is_dir() {
                    debug_assert!(
                        ft.is_fifo()
                            || ft.is_socket()
                            || ft.is_block_device()
                            || ft.is_char_device()
                    );
                }
            }
        }
        Ok(t)
    }

    fn report(&self, created_root: bool) -> SyncReport {
        SyncReport {
            files_copied: self.regular_inodes + self.non_regular + u64::from(created_root),
            bytes_copied: self.bytes_once,
            files_deleted: 0,
            files_total: self.entries + 1,
            bytes_total: self.bytes_all,
            ..SyncReport::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::opts;

    #[test]
    fn applies_only_to_an_empty_or_missing_target_without_link_dest() {
        let t = tempfile::tempdir().unwrap();
        let empty = t.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(first_copy_applies(&empty, &opts()));
        assert!(first_copy_applies(&t.path().join("missing"), &opts()));
        // A missing parent: rsync creates one level only, and says so.
        assert!(!first_copy_applies(&t.path().join("no/such"), &opts()));
        // A drive's root with its lost+found only is empty.
        fs::create_dir(empty.join("lost+found")).unwrap();
        assert!(first_copy_applies(&empty, &opts()));
        fs::write(empty.join("old"), "x").unwrap();
        assert!(!first_copy_applies(&empty, &opts()));
        // A file in the way.
        assert!(!first_copy_applies(&empty.join("old"), &opts()));
        // A new generation next to the previous one: rsync's --link-dest.
        let gen = SyncOptions {
            link_dest: Some(t.path().to_path_buf()),
            ..opts()
        };
        assert!(!first_copy_applies(&t.path().join("missing"), &gen));
        // Excludes: cp cannot leave anything out.
        let excluding = SyncOptions {
            exclude: crate::Excludes::new(&["*.tmp"]).unwrap(),
            ..opts()
        };
        assert!(!first_copy_applies(&t.path().join("missing"), &excluding));
    }

    #[test]
    fn the_plan_leaves_lost_and_found_out() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("lost+found")).unwrap();
        fs::create_dir_all(src.join("lost+found-not")).unwrap();
        fs::write(src.join("-x"), "").unwrap();
        let p = plan(&src, &t.path().join("dst")).unwrap();
        let mut names: Vec<_> = p.entries.iter().map(|e| e.file_name().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["-x", "lost+found-not"]);
        assert!(p.entries.iter().all(|e| e.starts_with(&src)));
        assert!(p.create_root);
        assert!(!plan(&src, t.path()).unwrap().create_root);
    }

    #[test]
    fn cp_failures_map_to_rsyncs_kinds_or_to_rsync_completing() {
        let st = |code: i32| ExitStatus::from_raw(code << 8);
        let t = Path::new("/");
        assert!(map_status(st(0), &[], t).unwrap().is_none());
        let full = ["cp: error writing '/t/x': No space left on device".to_string()];
        let e = map_status(st(1), &full, t).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert!(e.to_string().contains("larger drive"), "{e}");
        let eio = ["cp: error reading '/s/x': Input/output error".to_string()];
        assert_eq!(
            map_status(st(1), &eio, t).err().unwrap().kind(),
            ErrorKind::Io
        );
        let gone = Path::new("/nonexistent-extbackup-target");
        let e = map_status(st(1), &[], gone).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains("is gone"), "{e}");
        let killed = map_status(ExitStatus::from_raw(15), &[], t).err().unwrap();
        assert_eq!(killed.kind(), ErrorKind::Interrupted);
        let vanished = ["cp: cannot stat '/s/x': No such file or directory".to_string()];
        match map_status(st(1), &vanished, t) {
            Ok(Some(Outcome::Stopped(m))) => assert!(m.contains("cannot stat"), "{m}"),
            _ => panic!("a vanished file is for rsync to complete"),
        }
    }

    #[test]
    fn totals_count_as_rsyncs_stats() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        fs::create_dir_all(s.join("d")).unwrap();
        fs::create_dir_all(s.join("lost+found")).unwrap();
        fs::write(s.join("a"), "12345").unwrap();
        fs::hard_link(s.join("a"), s.join("d/b")).unwrap();
        std::os::unix::fs::symlink("a", s.join("l")).unwrap();
        fs::write(s.join("c"), "xy").unwrap();
        nix::unistd::mkfifo(
            &s.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        // rsync -aHAX says: Number of files: 7 (reg: 3, dir: 2, link: 1, special: 1),
        // 2 regular files transferred, Total file size: 13, transferred: 7.
        let r = Totals::of(s).unwrap().report(true);
        assert_eq!((r.files_total, r.bytes_total), (7, 13));
        assert_eq!((r.files_copied, r.bytes_copied), (2 + 4, 7));
        assert_eq!(Totals::of(s).unwrap().report(false).files_copied, 5);
    }
}
