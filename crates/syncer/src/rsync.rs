//! `RsyncSyncer`: `rsync -aHAX --numeric-ids --delete-delay`, with progress and stats; the
//! first copy onto an empty target by cp ([`crate::first_copy`]).

use crate::child::{collect_stderr, spawn_error};
use crate::failure::{
    io_error, no_space_error, says_device_failed, says_no_space, tail_text, target_gone,
};
use crate::first_copy::{self, Outcome};
use crate::{
    generations, guard, ErrorKind, Excludes, Progress, SyncError, SyncOptions, SyncReport, Syncer,
};
use oskit::process::tie_to_parent;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

/// Mirrors with rsync: `-aHAX --sparse --numeric-ids --delete-delay --no-inc-recursive
/// --modify-window=-1 --info=progress2,stats2 --exclude=/lost+found SOURCE/
/// TARGET`, with a `--filter=-s PATTERN` per exclude pattern
/// ([`SyncOptions::exclude`](crate::SyncOptions::exclude)).
///
/// `--sparse` writes runs of zeros as holes, so a sparse file takes on the drive about
/// what it takes in the source (the free-space check counts allocated blocks).
///
/// `--modify-window=-1` makes rsync compare modification times to the nanosecond (its
/// default is whole seconds, which misses a same-size change made within the second of
/// the previous sync). `lost+found` at the top of the source and the target is neither
/// copied nor deleted.
///
/// Progress comes from rsync's `progress2` lines as they arrive; the report's figures
/// from its `--stats`. Exit codes: 24 (files vanished) is a warning in the report; "No space
/// left on device" is [`ErrorKind::NoSpace`]; 11 otherwise, a device error (EIO, ENODEV,
/// EROFS) or a target that vanished is [`ErrorKind::Io`]; 23 [`ErrorKind::PartialTransfer`];
/// 20 or a signal [`ErrorKind::Interrupted`]; anything else [`ErrorKind::Other`] with the
/// tail of stderr.
///
/// The first copy onto an empty target (no `link_dest`, no extra arguments) is made by cp
/// instead, at the drive's speed, with the same fidelity: see [`crate::first_copy`];
/// [`RsyncSyncer::without_first_copy`] turns that off.
#[derive(Clone, Debug)]
pub struct RsyncSyncer {
    program: PathBuf,
    extra_args: Vec<OsString>,
    /// The first-copy engine's cp, `None` when rsync makes every copy.
    cp: Option<PathBuf>,
    /// A new generation is built by [`crate::linking`] then rsync, not by `--link-dest`.
    linking: bool,
}

impl Default for RsyncSyncer {
    fn default() -> Self {
        Self::new()
    }
}

/// The share of a generation's sync the progress gives the linking pass (measured: 4.4 s
/// of the 6.8 s of a no-change generation at 200,000 files, rsync the rest).
const LINKING_SHARE: f64 = 0.65;

impl RsyncSyncer {
    /// `rsync` from `PATH`, no extra arguments.
    pub fn new() -> Self {
        Self {
            program: "rsync".into(),
            extra_args: vec![],
            cp: Some("cp".into()),
            linking: true,
        }
    }

    /// A new generation ([`SyncOptions::link_dest`]) is built by rsync `--link-dest` alone,
    /// as before issue 22, instead of the linking pass ([`crate::linking`]) followed by
    /// rsync (for comparisons: `cargo xtask bench scale`).
    pub fn without_linking_pass(mut self) -> Self {
        self.linking = false;
        self
    }

    /// rsync makes every copy, the first one onto an empty target too (see
    /// [`first_copy`](crate::first_copy)).
    pub fn without_first_copy(mut self) -> Self {
        self.cp = None;
        self
    }

    /// Uses another cp binary for the first copy onto an empty target (GNU cp's options).
    pub fn with_cp_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.cp = Some(program.into());
        self
    }

    /// Uses another rsync binary.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Adds arguments before the paths (e.g. `--exclude=/tmp`, `--bwlimit=50M`). With extra
    /// arguments, rsync makes the first copy too (cp would not honour them).
    pub fn with_extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The full argument list for mirroring `source` onto `target`.
    pub fn args(&self, source: &Path, target: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = [
            "-aHAX",
            // Holes stay holes: without it a 200 MiB sparse file holding 4 KiB is written
            // in full, and the free-space check (allocated blocks) is wrong.
            "--sparse",
            "--numeric-ids",
            "--delete-delay",
            "--no-inc-recursive",
            // Compare mtimes to the nanosecond: by default rsync compares whole seconds,
            // so a file changed (same size) within the second of the last sync would be
            // skipped, and times set within that second are left unfixed.
            "--modify-window=-1",
            "--info=progress2,stats2",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        for n in guard::IGNORED_AT_ROOT {
            a.push(format!("--exclude=/{n}").into());
        }
        a.extend(self.extra_args.iter().cloned());
        // Copy the contents (trailing slash); never let a path read as an option.
        let mut src = safe_path(source).into_os_string().into_vec();
        if !src.ends_with(b"/") {
            src.push(b'/');
        }
        a.push(OsString::from_vec(src));
        a.push(safe_path(target).into_os_string());
        a
    }

    /// The filter arguments for `exclude`: one `--filter=-s PATTERN` each. The explicit
    /// rule prefix means no pattern is read as an option or as a rule of its own; `s`
    /// (sender side) hides the entry from the copy without protecting it on the target, so
    /// `--delete` removes what the target holds of it (the target equals the source
    /// without the excluded entries; `/lost+found`'s plain exclude still protects it).
    pub fn exclude_args(exclude: &Excludes) -> Vec<OsString> {
        exclude
            .patterns()
            .map(|p| OsString::from(format!("--filter=-s {p}")))
            .collect()
    }

    /// The copy by rsync. With `link_dest`, files that cannot be hard-linked to the previous
    /// generation (their inode there would pass the filesystem's link limit, see
    /// [`generations::unlinkable`]) are left out of the linking pass and copied by a second
    /// one, without `--link-dest`: rsync itself, when a link fails with "Too many links",
    /// loops on the hard-link group (measured with rsync 3.2.7: 95 million error lines in
    /// five minutes for one file with 60,000 names).
    fn run(
        &self,
        source: &Path,
        target: &Path,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SyncReport, SyncError> {
        if let (Some(prev), true) = (&opts.link_dest, self.linking) {
            if let Some(report) = self.linked_generation(source, prev, target, opts, progress)? {
                return Ok(report);
            }
        }
        let unlinkable = match &opts.link_dest {
            Some(prev) => self.unlinkable(source, prev, target, opts),
            None => vec![],
        };
        if unlinkable.is_empty() {
            return self.pass(
                source,
                target,
                &opts.exclude,
                opts.link_dest.as_deref(),
                progress,
                None,
            );
        }
        let mut list = Vec::new();
        for r in &unlinkable {
            list.push(b'/');
            list.extend_from_slice(&escape_pattern(r.as_os_str().as_bytes()));
            list.push(0);
        }
        let mut report = self.pass(
            source,
            target,
            &opts.exclude,
            opts.link_dest.as_deref(),
            progress,
            Some(list),
        )?;
        let mut names = Vec::new();
        for r in &unlinkable {
            names.extend_from_slice(r.as_os_str().as_bytes());
            names.push(0);
        }
        let copied = self.copy_listed(source, target, names)?;
        report.files_copied += copied.files_copied;
        report.bytes_copied += copied.bytes_copied;
        report.files_total += unlinkable.len() as u64;
        report.bytes_total += copied.bytes_total;
        report.copied_not_linked = unlinkable.len() as u64;
        report.warnings.push(format!(
            "{} file(s) were copied instead of hard-linked to the previous generation: their \
             copy there already has so many hard links that one more would pass the \
             filesystem's limit ({})",
            unlinkable.len(),
            generations::link_max(target).map_or("?".into(), |n| n.to_string())
        ));
        Ok(report)
    }

    /// A new generation beside `prev`: the linking pass ([`crate::linking`]), then rsync
    /// over the nearly complete tree without `--link-dest` (it copies what was not linked,
    /// as new inodes). `None` when the linking pass could not work here (e.g. `prev` on
    /// another filesystem): the caller builds the generation with `--link-dest` instead.
    fn linked_generation(
        &self,
        source: &Path,
        prev: &Path,
        target: &Path,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<SyncReport>, SyncError> {
        let t0 = Instant::now();
        tracing::info!(
            "linking the unchanged files of {} from the previous generation {}",
            source.display(),
            prev.display()
        );
        let max = generations::link_max(target);
        // Progress: the pass is the first LINKING_SHARE of the sync, measured against the
        // entries the guard counted in the previous generation (unknown without the guard).
        let expected = opts.expected_entries.filter(|&n| n > 0);
        let mut walked = |done: u64| {
            if let Some(n) = expected {
                let f = (LINKING_SHARE * done as f64 / n as f64).min(LINKING_SHARE);
                progress(Progress {
                    bytes: 0,
                    fraction: Some(f as f32),
                });
            }
        };
        let linked = match crate::linking::link_unchanged(
            source,
            prev,
            target,
            &opts.exclude,
            max,
            &mut walked,
        ) {
            Ok(l) => l,
            Err(e) => {
                if let Some(kind) = linking_failure(&e) {
                    let msg = format!("linking unchanged files into {}", target.display());
                    return Err(SyncError::new(kind, msg).with_source(e));
                }
                tracing::warn!(
                    "the linking pass stopped ({e}); rsync --link-dest builds the rest of the \
                     generation"
                );
                return Ok(None);
            }
        };
        tracing::info!(
            "linking pass: {} unchanged files linked to the previous generation, {} folders \
             made, {:.1} s",
            linked.linked,
            linked.folders,
            t0.elapsed().as_secs_f64()
        );
        if linked.unshared > 0 {
            tracing::info!(
                "{} file(s) of the resumed generation shared an inode and differ from the \
                 source now: removed, rsync writes them anew",
                linked.unshared
            );
        }
        // Incremental recursion here: rsync holds one folder's list at a time instead of
        // the whole tree's (measured, `rsync -aHAX` with nothing to do: 13 MB at 50,000
        // files, 19 MB at 100,000 whole-tree; 7-11 MB incremental; about 130 MB at a
        // million whole-tree), and with nearly everything linked the progress figures it
        // cannot give up front matter little. Hard links stay exact (rsync's manual:
        // incremental recursion only costs -H efficiency, not accuracy).
        // rsync's own progress the rest of the way.
        let mut rest = |p: Progress| {
            progress(Progress {
                fraction: p
                    .fraction
                    .map(|f| (LINKING_SHARE + (1.0 - LINKING_SHARE) * f64::from(f)) as f32)
                    .or(expected.map(|_| LINKING_SHARE as f32)),
                ..p
            })
        };
        let mut report = self.pass_with(
            source,
            target,
            &opts.exclude,
            None,
            &mut rest,
            None,
            Recursion::Incremental,
        )?;
        report.duration = t0.elapsed();
        report.new_bytes = Some(linked.new_bytes);
        if linked.over_link_limit > 0 {
            report.copied_not_linked = linked.over_link_limit;
            report.warnings.push(format!(
                "{} file(s) were copied instead of hard-linked to the previous generation: their \
                 copy there already has so many hard links that one more would pass the \
                 filesystem's limit ({})",
                linked.over_link_limit,
                max.map_or("?".into(), |n| n.to_string())
            ));
        }
        Ok(Some(report))
    }

    /// The files that cannot be linked to `prev` (none when that cannot be told: rsync
    /// then links as usual).
    fn unlinkable(
        &self,
        source: &Path,
        prev: &Path,
        target: &Path,
        opts: &SyncOptions,
    ) -> Vec<PathBuf> {
        let Some(max) = generations::link_max(target) else {
            return vec![];
        };
        match generations::unlinkable(source, prev, &opts.exclude, max) {
            Ok(v) => {
                if !v.is_empty() {
                    tracing::warn!(
                        "{} file(s) of the source cannot be hard-linked to the previous \
                         generation (at most {max} links per inode): they are copied instead",
                        v.len()
                    );
                }
                v
            }
            Err(e) => {
                tracing::warn!("looking for files with too many hard links: {e}");
                vec![]
            }
        }
    }

    /// Copies the files named in `names` (NUL-separated, relative to `source`) into
    /// `target` without `--link-dest` (hard links among them kept), deleting nothing.
    fn copy_listed(
        &self,
        source: &Path,
        target: &Path,
        names: Vec<u8>,
    ) -> Result<SyncReport, SyncError> {
        let mut src = safe_path(source).into_os_string().into_vec();
        if !src.ends_with(b"/") {
            src.push(b'/');
        }
        let args: Vec<OsString> = [
            "-aHAX",
            "--sparse",
            "--numeric-ids",
            "--modify-window=-1",
            "--info=stats2",
            "--from0",
            "--files-from=-",
        ]
        .into_iter()
        .map(OsString::from)
        .chain([OsString::from_vec(src), safe_path(target).into_os_string()])
        .collect();
        tracing::info!("copying the files that cannot be linked: rsync {}", {
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        });
        let (mut child, stderr) = self.start(&args, Stdio::piped(), Some(names))?;
        let mut out = String::new();
        let read = child
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_string(&mut out);
        let status = child.wait();
        let tail = stderr.join().unwrap_or_default();
        let status = status.map_err(|e| {
            SyncError::new(ErrorKind::Other, "waiting for rsync to finish").with_source(e)
        })?;
        read.map_err(|e| {
            SyncError::new(ErrorKind::Other, "reading rsync's output").with_source(e)
        })?;
        let mut stats = Stats::default();
        for l in out.lines() {
            stats.parse_line(l.trim());
        }
        let mut report = stats.report();
        map_status(status, &tail, target, &mut report)?;
        Ok(report)
    }

    /// One rsync pass of the mirror; `skip`: NUL-separated exclude patterns read from stdin.
    fn pass(
        &self,
        source: &Path,
        target: &Path,
        exclude: &Excludes,
        link_dest: Option<&Path>,
        progress: &mut dyn FnMut(Progress),
        skip: Option<Vec<u8>>,
    ) -> Result<SyncReport, SyncError> {
        let whole = Recursion::WholeTree;
        self.pass_with(source, target, exclude, link_dest, progress, skip, whole)
    }

    /// [`pass`](Self::pass), choosing how rsync recurses.
    #[allow(clippy::too_many_arguments)]
    fn pass_with(
        &self,
        source: &Path,
        target: &Path,
        exclude: &Excludes,
        link_dest: Option<&Path>,
        progress: &mut dyn FnMut(Progress),
        skip: Option<Vec<u8>>,
        recursion: Recursion,
    ) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let mut args = self.args(source, target);
        if recursion == Recursion::Incremental {
            args.retain(|a| a != "--no-inc-recursive");
        }
        let at = args.len() - 2 - self.extra_args.len();
        args.splice(at..at, Self::exclude_args(exclude));
        if skip.is_some() {
            // A plain exclude: not copied, and what the target holds of them is not deleted
            // (the second pass writes them).
            let at = args.len() - 2 - self.extra_args.len();
            args.splice(at..at, ["--from0", "--exclude-from=-"].map(OsString::from));
        }
        if let Some(prev) = link_dest {
            // Unchanged files become hard links to the previous generation's (an absolute
            // path: a relative one is taken relative to the target).
            let prev = std::path::absolute(prev).unwrap_or_else(|_| prev.to_path_buf());
            let mut a = OsString::from("--link-dest=");
            a.push(prev.as_os_str());
            args.insert(args.len() - 2, a);
        }
        tracing::info!(
            "running {} {}",
            self.program.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let (mut child, stderr) = self.start(&args, Stdio::piped(), skip)?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stats = Stats::default();
        let mut last = Progress {
            bytes: 0,
            fraction: None,
        };
        let mut buf = [0u8; 16 * 1024];
        let mut pending: Vec<u8> = Vec::with_capacity(256);
        let read_result = loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            };
            for &b in &buf[..n] {
                if b == b'\r' || b == b'\n' {
                    handle_line(&pending, &mut stats, &mut last, progress);
                    pending.clear();
                } else {
                    pending.push(b);
                }
            }
        };
        handle_line(&pending, &mut stats, &mut last, progress);
        let status = child.wait();
        let tail = stderr.join().unwrap_or_default();
        let status = status.map_err(|e| {
            SyncError::new(ErrorKind::Other, "waiting for rsync to finish").with_source(e)
        })?;
        if let Err(e) = read_result {
            return Err(SyncError::new(ErrorKind::Other, "reading rsync's output").with_source(e));
        }
        let mut report = stats.report();
        report.duration = start.elapsed();
        map_status(status, &tail, target, &mut report)?;
        progress(Progress {
            bytes: report.bytes_copied.max(last.bytes),
            fraction: Some(1.0),
        });
        tracing::info!(
            "rsync done: {} files copied ({} bytes), {} deleted, {} files / {} bytes in the source, {:.1} s",
            report.files_copied,
            report.bytes_copied,
            report.files_deleted,
            report.files_total,
            report.bytes_total,
            report.duration.as_secs_f64()
        );
        Ok(report)
    }
}

impl RsyncSyncer {
    /// The cp for this sync when the first-copy engine may make it.
    fn first_copy_engine(&self, target: &Path, opts: &SyncOptions) -> Option<&Path> {
        let cp = self.cp.as_deref()?;
        if !first_copy::first_copy_applies(target, opts) {
            return None;
        }
        if !self.extra_args.is_empty() {
            tracing::info!(
                "the target is empty, but rsync makes this first copy: cp could not honour the \
                 extra rsync arguments"
            );
            return None;
        }
        Some(cp)
    }

    /// Starts rsync with `args` in the C locale, tied to this process, with `input` on its
    /// stdin (else none), its stdout as given and its stderr read on a thread (the tail
    /// kept for errors).
    fn start(
        &self,
        args: &[OsString],
        stdout: Stdio,
        input: Option<Vec<u8>>,
    ) -> Result<(std::process::Child, std::thread::JoinHandle<Vec<String>>), SyncError> {
        let mut child = tie_to_parent(&mut Command::new(&self.program))
            .args(args)
            .env("LC_ALL", "C")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(&self.program, e))?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            std::thread::spawn(move || {
                use std::io::Write;
                // rsync reads it all before it copies; a write error shows as its failure.
                let _ = stdin.write_all(&data);
            });
        }
        let stderr = collect_stderr(&mut child, "rsync");
        Ok((child, stderr))
    }

    /// Sets the target folder's own mode, owner, times, xattrs and ACLs as rsync sets them
    /// (rsync on that folder alone: `--exclude=*` leaves out everything below it).
    fn copy_root_metadata(&self, source: &Path, target: &Path) -> Result<(), SyncError> {
        let mut src = safe_path(source).into_os_string().into_vec();
        if !src.ends_with(b"/") {
            src.push(b'/');
        }
        let args: Vec<OsString> = ["-aAX", "--numeric-ids", "--modify-window=-1", "--exclude=*"]
            .into_iter()
            .map(OsString::from)
            .chain([OsString::from_vec(src), safe_path(target).into_os_string()])
            .collect();
        let (mut child, stderr) = self.start(&args, Stdio::null(), None)?;
        let status = child.wait();
        let tail = stderr.join().unwrap_or_default();
        let status = status.map_err(|e| {
            SyncError::new(ErrorKind::Other, "waiting for rsync to finish").with_source(e)
        })?;
        map_status(status, &tail, target, &mut SyncReport::default())
    }
}

/// How rsync walks the source: the whole file list first (`--no-inc-recursive`: exact
/// progress from the start) or folder by folder (its default: memory for one folder's list).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recursion {
    WholeTree,
    Incremental,
}

/// The error kind a failed linking pass ends the sync with: the drive full, failing or
/// gone. `None` for anything else (the sync goes on with rsync `--link-dest`).
fn linking_failure(e: &std::io::Error) -> Option<ErrorKind> {
    use nix::libc;
    match e.raw_os_error()? {
        libc::ENOSPC | libc::EDQUOT => Some(ErrorKind::NoSpace),
        libc::EIO | libc::EROFS | libc::ENODEV | libc::ENOTCONN => Some(ErrorKind::Io),
        _ => None,
    }
}

/// A path as an rsync pattern matching exactly it: with a wildcard in it, `*`, `?`, `[` and
/// `\` are escaped (rsync reads a backslash as an escape only in a pattern with a
/// wildcard; without one the pattern is literal as it is).
fn escape_pattern(p: &[u8]) -> Vec<u8> {
    if !p.iter().any(|b| matches!(b, b'*' | b'?' | b'[')) {
        return p.to_vec();
    }
    let mut v = Vec::with_capacity(p.len() + 4);
    for &b in p {
        if matches!(b, b'*' | b'?' | b'[' | b'\\') {
            v.push(b'\\');
        }
        v.push(b);
    }
    v
}

/// A path that cannot be mistaken for an option (`-x` becomes `./-x`).
fn safe_path(p: &Path) -> PathBuf {
    if p.as_os_str().as_bytes().starts_with(b"-") {
        Path::new(".").join(p)
    } else {
        p.to_path_buf()
    }
}

fn handle_line(
    line: &[u8],
    stats: &mut Stats,
    last: &mut Progress,
    progress: &mut dyn FnMut(Progress),
) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    if let Some((bytes, pct)) = parse_progress2(text) {
        // Keep the figures monotonic, whatever rsync's rounding does.
        let p = Progress {
            bytes: bytes.max(last.bytes),
            fraction: Some((pct as f32 / 100.0).max(last.fraction.unwrap_or(0.0))),
        };
        if p != *last {
            *last = p;
            progress(p);
        }
    } else if !stats.parse_line(text) {
        tracing::debug!("rsync: {text}");
    }
}

fn number(s: &str) -> Option<u64> {
    let digits: String = s.chars().filter(|c| *c != ',').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `"  3,000,004  99%  943.26MB/s  0:00:00 (xfr#3, to-chk=0/6)"` -> `(3000004, 99)`.
pub(crate) fn parse_progress2(line: &str) -> Option<(u64, u8)> {
    let mut it = line.split_whitespace();
    let bytes = number(it.next()?)?;
    let pct: u8 = it.next()?.strip_suffix('%')?.parse().ok()?;
    // A rate and an elapsed/ETA time follow; require the rate to rule out stray lines.
    let rate = it.next()?;
    if !rate.ends_with("/s") || pct > 100 {
        return None;
    }
    Some((bytes, pct))
}

/// The figures of rsync's `--stats` output.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    files: Option<u64>,
    created: Option<u64>,
    created_reg: Option<u64>,
    deleted: Option<u64>,
    reg_transferred: Option<u64>,
    total_size: Option<u64>,
    transferred_size: Option<u64>,
}

/// `"6 (reg: 3, dir: 2, link: 1)"` -> (6, reg 3); `"3,000,011 bytes"` -> 3000011.
fn leading_number_and_reg(v: &str) -> (Option<u64>, Option<u64>) {
    let first = v.split_whitespace().next().and_then(number);
    let reg = v.find("reg: ").and_then(|i| {
        let rest = &v[i + 5..];
        // Thousands separators are commas too: the figure ends at ", " or ")".
        let end = rest
            .find(", ")
            .into_iter()
            .chain(rest.find(')'))
            .min()
            .unwrap_or(rest.len());
        number(rest[..end].trim())
    });
    (first, reg)
}

impl Stats {
    /// Takes a stats line; false when it is not one.
    pub(crate) fn parse_line(&mut self, line: &str) -> bool {
        let Some((key, value)) = line.split_once(": ") else {
            return false;
        };
        let (n, reg) = leading_number_and_reg(value);
        match key {
            "Number of files" => self.files = n,
            "Number of created files" => {
                self.created = n;
                self.created_reg = Some(reg.unwrap_or(0));
            }
            "Number of deleted files" => self.deleted = n,
            "Number of regular files transferred" => self.reg_transferred = n,
            "Total file size" => self.total_size = n,
            "Total transferred file size" => self.transferred_size = n,
            _ => return false,
        }
        true
    }

    /// Files copied = regular files transferred + new folders, links and devices.
    pub(crate) fn report(&self) -> SyncReport {
        let new_non_regular = self
            .created
            .unwrap_or(0)
            .saturating_sub(self.created_reg.unwrap_or(0));
        SyncReport {
            files_copied: self.reg_transferred.unwrap_or(0) + new_non_regular,
            bytes_copied: self.transferred_size.unwrap_or(0),
            files_deleted: self.deleted.unwrap_or(0),
            files_total: self.files.unwrap_or(0),
            bytes_total: self.total_size.unwrap_or(0),
            ..SyncReport::default()
        }
    }
}

/// Maps rsync's exit status to the result.
pub(crate) fn map_status(
    status: ExitStatus,
    stderr_tail: &[String],
    target: &Path,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let no_space = says_no_space(stderr_tail);
    let device_failed = says_device_failed(stderr_tail);
    let Some(code) = status.code() else {
        let sig = status.signal().unwrap_or(0);
        return Err(SyncError::new(
            ErrorKind::Interrupted,
            format!(
                "rsync was killed by signal {sig}; the drive's copy is incomplete until the \
                 next complete run"
            ),
        ));
    };
    let tail = tail_text(stderr_tail);
    match code {
        0 => Ok(()),
        24 => {
            report.warnings.push(
                "some source files vanished during the sync (rsync exit 24): they were being \
                 changed or deleted meanwhile; usually harmless"
                    .into(),
            );
            Ok(())
        }
        _ if no_space => Err(no_space_error("rsync", code, target, &tail)),
        _ if device_failed || code == 11 || (code != 20 && target_gone(target)) => {
            Err(io_error("rsync", code, device_failed, target, &tail))
        }
        23 => Err(SyncError::new(
            ErrorKind::PartialTransfer,
            format!(
                "rsync could not transfer some files (exit 23, partial transfer); the log \
                 names them. rsync said:\n{tail}"
            ),
        )),
        20 => Err(SyncError::new(
            ErrorKind::Interrupted,
            "rsync was interrupted (exit 20: it received SIGINT, SIGTERM or SIGHUP); the \
             drive's copy is incomplete until the next complete run",
        )),
        _ => Err(SyncError::new(
            ErrorKind::Other,
            format!(
                "rsync failed with exit code {code} ({}). rsync said:\n{tail}",
                exit_meaning(code)
            ),
        )),
    }
}

fn exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files or folders",
        4 => "requested action not supported, e.g. ACLs or xattrs on the target filesystem",
        5 => "error starting client-server protocol",
        10 => "error in socket I/O",
        12 => "error in the rsync protocol data stream",
        13 => "errors with program diagnostics",
        14 => "error in IPC code",
        21 => "some error returned by waitpid()",
        22 => "error allocating core memory buffers",
        25 => "the --max-delete limit stopped deletions",
        30 | 35 => "timeout",
        _ => "see man rsync, EXIT VALUES",
    }
}

impl Syncer for RsyncSyncer {
    fn mirror(
        &self,
        source: &Path,
        target: &Path,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SyncReport, SyncError> {
        if let Some(cp) = self.first_copy_engine(target, opts) {
            if let Some(plan) = first_copy::plan(source, target) {
                match first_copy::copy(cp, source, target, &plan, progress) {
                    Ok(Outcome::Copied(report)) => {
                        self.copy_root_metadata(source, target)?;
                        return Ok(report);
                    }
                    Ok(Outcome::Stopped(why)) => {
                        tracing::warn!("{why}");
                        let mut report = self.run(source, target, opts, progress)?;
                        report.warnings.push(format!(
                            "{why}\n(the figures copied are rsync's: what cp had not copied)"
                        ));
                        return Ok(report);
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        tracing::warn!("{e}; rsync makes the first copy");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.run(source, target, opts, progress)
    }

    fn describe(&self) -> String {
        match &self.cp {
            Some(cp) => format!(
                "rsync ({}), the first copy onto an empty target with {}",
                self.program.display(),
                cp.display()
            ),
            None => format!("rsync ({})", self.program.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_progress2_lines() {
        assert_eq!(
            parse_progress2("3,000,004  99%  943.26MB/s    0:00:00 (xfr#3, to-chk=0/6)"),
            Some((3_000_004, 99))
        );
        assert_eq!(
            parse_progress2("0   0%    0.00kB/s    0:00:00 (xfr#0, to-chk=0/6)"),
            Some((0, 0))
        );
        assert_eq!(parse_progress2("Number of files: 6 (reg: 3)"), None);
        assert_eq!(parse_progress2("sent 144 bytes  received 11 bytes"), None);
        assert_eq!(parse_progress2("12 100% oops"), None);
    }

    #[test]
    fn parses_stats_into_a_report() {
        let text = "Number of files: 1,206 (reg: 1,000, dir: 205, link: 1)\n\
                    Number of created files: 12 (reg: 9, dir: 2, link: 1)\n\
                    Number of deleted files: 3 (reg: 3)\n\
                    Number of regular files transferred: 10\n\
                    Total file size: 3,000,011 bytes\n\
                    Total transferred file size: 2,004 bytes\n\
                    Literal data: 2,004 bytes\n";
        let mut s = Stats::default();
        for l in text.lines() {
            s.parse_line(l);
        }
        let r = s.report();
        assert_eq!(r.files_total, 1206);
        assert_eq!(r.files_copied, 10 + 3);
        assert_eq!(r.files_deleted, 3);
        assert_eq!(r.bytes_total, 3_000_011);
        assert_eq!(r.bytes_copied, 2004);
        // Thousands separators inside the parenthesis (2,011 regular files, not 2).
        let mut s = Stats::default();
        for l in [
            "Number of created files: 2,238 (reg: 2,011, dir: 227)",
            "Number of regular files transferred: 2,011",
        ] {
            assert!(s.parse_line(l), "{l}");
        }
        assert_eq!(s.report().files_copied, 2011 + 227);
        let mut s = Stats::default();
        assert!(s.parse_line("Number of created files: 0"));
        assert!(!s.parse_line("sent 144 bytes  received 11 bytes"));
        assert_eq!(s.report().files_copied, 0);
    }

    #[test]
    fn exit_codes_map_to_kinds() {
        let st = |code: i32| ExitStatus::from_raw(code << 8);
        // A target that exists: a vanished one is an I/O failure whatever the exit code.
        let t = Path::new("/");
        let mut r = SyncReport::default();
        assert!(map_status(st(0), &[], t, &mut r).is_ok());
        assert!(map_status(st(24), &[], t, &mut r).is_ok());
        assert_eq!(r.warnings.len(), 1);
        let kind = |code, tail: &[String]| {
            map_status(st(code), tail, t, &mut SyncReport::default())
                .unwrap_err()
                .kind()
        };
        // Exit 11 is any file I/O error: full only when rsync says so.
        assert_eq!(kind(11, &[]), ErrorKind::Io);
        let eio = ["rsync: [receiver] write failed on \"/t/x\": Input/output error (5)".into()];
        assert_eq!(kind(11, &eio), ErrorKind::Io);
        let e = map_status(st(11), &eio, t, &mut SyncReport::default()).unwrap_err();
        assert!(!e.to_string().contains("larger drive"), "{e}");
        assert!(e.to_string().contains("not a full drive"), "{e}");
        let nospc = ["rsync: write failed on \"/t/x\": No space left on device (28)".into()];
        assert_eq!(kind(11, &nospc), ErrorKind::NoSpace);
        assert_eq!(kind(23, &[]), ErrorKind::PartialTransfer);
        let full = ["rsync: write failed on \"/t/x\": No space left on device (28)".into()];
        assert_eq!(kind(23, &full), ErrorKind::NoSpace);
        assert_eq!(kind(20, &[]), ErrorKind::Interrupted);
        assert_eq!(kind(3, &[]), ErrorKind::Other);
        let e = map_status(st(12), &["boom".into()], t, &mut r).unwrap_err();
        assert!(e.to_string().contains("exit code 12") && e.to_string().contains("boom"));
        // Killed by SIGKILL: no exit code.
        let killed = map_status(ExitStatus::from_raw(9), &[], t, &mut r).unwrap_err();
        assert_eq!(killed.kind(), ErrorKind::Interrupted);
        // The drive pulled mid-copy: its mount point's folder is gone.
        let gone = Path::new("/nonexistent-extbackup-target");
        let e = map_status(st(23), &[], gone, &mut r).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains("is gone"), "{e}");
    }

    #[test]
    fn args_copy_contents_and_protect_dash_paths() {
        let a = RsyncSyncer::new()
            .with_extra_args(["--bwlimit=1M"])
            .args(Path::new("-src"), Path::new("/t"));
        let n = a.len();
        assert_eq!(a[n - 2], "./-src/");
        assert_eq!(a[n - 1], "/t");
        assert_eq!(a[n - 3], "--bwlimit=1M");
        assert!(a.contains(&"-aHAX".into()) && a.contains(&"--numeric-ids".into()));
        let a = RsyncSyncer::new().args(Path::new("/s/"), Path::new("/t"));
        assert_eq!(a[a.len() - 2], "/s/");
        let ex = Excludes::new(&["-delete", "--rsh=x", "+ y".trim_start_matches("+ ")]).unwrap();
        assert_eq!(
            RsyncSyncer::exclude_args(&ex),
            [
                "--filter=-s -delete",
                "--filter=-s --rsh=x",
                "--filter=-s y"
            ]
        );
    }

    #[test]
    fn patterns_match_names_with_wildcards_literally() {
        assert_eq!(escape_pattern(b"a/b c"), b"a/b c");
        assert_eq!(escape_pattern(b"a\\b"), b"a\\b");
        assert_eq!(escape_pattern(b"x*[1]?\\"), b"x\\*\\[1]\\?\\\\");
    }
}
