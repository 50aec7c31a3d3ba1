//! `scale` benchmark (issue 22): the whole `extbackup run` at many files, against the plain
//! tools on the same kind of filesystems, in one run. `cargo xtask bench scale [--files N]`
//! (default 200,000; 1,000,000 is the reference the issue's targets name: about 1.4 GB of
//! small files, 20 GB of sparse images, an hour on two shared cores).
//!
//! Source and drive are ext4 images on loop devices (the drive prepared by `extbackup
//! prepare` with the loopback-test crypt backend, history on, the source a filesystem of
//! its own and a mount point); the baselines run on a plain ext4 image made the way
//! `prepare` makes one. Caches are dropped (`echo 3 > /proc/sys/vm/drop_caches`) before
//! every timed step. Figures:
//! - first run: `extbackup run` onto the empty drive / `cp -a` of the tree (up to `sync -f`),
//!   three rounds in alternating order (one above 300,000 files), the median of each
//!   round's ratio (target <= 1.1x);
//! - generation run: `extbackup run` with nothing changed, adding a generation / (`cp -al`
//!   of the newest generation + bare `rsync -aHAX --delete` with nothing changed onto that
//!   copy), three rounds in alternating order, the median of each round's ratio
//!   (target <= 1.2x); the same generation built the way it was before issue 22 (rsync
//!   `--link-dest` alone, the syncer's `generation_once --link-dest`) for comparison;
//! - prune: removing the oldest generation (`generation_once --prune-oldest`, the syncer's
//!   `Generations::remove`) / `rm -rf` of the `cp -al` copy;
//! - peak memory: the largest sum of the proportional set sizes (`Pss`: a page shared by
//!   rsync's forked processes counted once) of the run's whole process tree (extbackup,
//!   rsync's three processes, cp), sampled every 50 ms (target <= 100 MB at a million
//!   files);
//! - where the runs' time goes: each pipeline step's time and the largest gaps between log
//!   lines (each gap belongs to the line that opened it), from the runs' timestamped logs.
//!
//! Needs root (loop devices, mounts, drop_caches).

use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{output, LoopDev};

/// `--files N`, set by [`super::run`] before the area runs.
pub static FILES: OnceLock<usize> = OnceLock::new();
/// The default number of files.
pub const DEFAULT_FILES: usize = 200_000;
/// Where the loopback-test backend's data starts (crypt::HEADER_AREA).
const LOOPBACK_HEADER: u64 = 1 << 20;
/// Files per folder.
const PER_DIR: usize = 1000;
/// Rounds of the generation run and its baseline.
const ROUNDS: usize = 3;
/// Rounds of the first run and `cp -a` (one at more than 300,000 files).
const FIRST_ROUNDS: usize = 3;

pub fn run(root: &Path) -> Result<()> {
    ensure!(
        crate::util::is_root(),
        "bench scale needs root (loop devices, mounts, drop_caches)"
    );
    let files = *FILES.get().unwrap_or(&DEFAULT_FILES);
    let release = super::build_release(root, "extbackup", &[])?;
    let exe = release.join("extbackup");
    let gen_once = super::release_example(root, "syncer", "generation_once")?;
    super::in_work_dir("scale", |work| measure(&exe, &gen_once, work, files))
}

/// An ext4 image of `bytes` (sparse) made as `prepare` makes one.
fn ext4_image(work: &Path, name: &str, bytes: u64) -> Result<PathBuf> {
    let img = work.join(format!("{name}.img"));
    fs::File::create(&img)?.set_len(bytes)?;
    output(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
    Ok(img)
}

/// A mounted filesystem on a loop device: unmounted, then detached, on drop.
struct Mounted {
    mnt: PathBuf,
    _dev: LoopDev,
}

impl Mounted {
    fn new(image: &Path, args: &[&str], mnt: PathBuf) -> Result<Self> {
        let dev = LoopDev::attach(args, image)?;
        fs::create_dir_all(&mnt)?;
        output(Command::new("mount").arg(&dev.0).arg(&mnt))?;
        Ok(Mounted { mnt, _dev: dev })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn drop_caches() -> Result<()> {
    output(&mut Command::new("sync"))?;
    fs::write("/proc/sys/vm/drop_caches", "3\n").context("dropping the caches")
}

/// What a timed command did.
struct Timed {
    took: Duration,
    /// Peak of the summed proportional set sizes of its process tree, bytes.
    peak_rss: u64,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` after dropping the caches, timing it and sampling its process tree's memory.
fn timed(cmd: &mut Command) -> Result<Timed> {
    drop_caches()?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().context("stdout piped")?));
    let reader = read_all(Box::new(child.stderr.take().context("stderr piped")?));
    let mut peak = 0;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        peak = peak.max(tree_rss(child.id()));
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t0.elapsed();
    let stderr = reader.join().unwrap_or_default();
    let stdout = out.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {stderr}");
    }
    Ok(Timed {
        took,
        peak_rss: peak,
        stdout,
        stderr,
    })
}

/// The summed proportional set size (`Pss`, else `VmRSS`) of `pid` and its descendants.
fn tree_rss(pid: u32) -> u64 {
    let mut procs = vec![]; // (pid, ppid, rss)
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        let ppid = field("PPid:").and_then(|v| u32::try_from(v).ok());
        // The proportional set size: pages shared by rsync's forked processes counted
        // once in all, not once per process.
        let pss = fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            });
        procs.push((p, ppid.unwrap_or(0), pss.or(field("VmRSS:")).unwrap_or(0)));
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|q| q.1 == parent).map(|q| q.0));
        i += 1;
    }
    procs
        .iter()
        .filter(|q| tree.contains(&q.0))
        .map(|q| q.2 * 1024)
        .sum()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Writes `files` small files (200..4000 bytes, 1000 a folder) under `src`.
fn generate(src: &Path, files: usize) -> Result<()> {
    let shape = super::Tree {
        dirs: files.div_ceil(PER_DIR),
        files_per_dir: PER_DIR.min(files),
        big_files: 0,
        big_size: 0,
    };
    shape.generate("scale", src)
}

fn measure(exe: &Path, gen_once: &Path, work: &Path, files: usize) -> Result<()> {
    // ext4 gives an inode per 16 KiB: room for every file, twice over, and 1 GiB spare.
    let size = (files as u64) * (32 << 10) + (1 << 30);
    let src_img = ext4_image(work, "source", size)?;
    let src = Mounted::new(&src_img, &[], work.join("source"))?;
    generate(&src.mnt, files)?;
    let plain_img = ext4_image(work, "plain", size)?;
    let plain = Mounted::new(&plain_img, &[], work.join("plain"))?;

    // The drive: prepared by extbackup on a loop device over an image.
    let drive_img = work.join("drive.img");
    fs::File::create(&drive_img)?.set_len(size + LOOPBACK_HEADER)?;
    let drive = LoopDev::attach(&[], &drive_img)?;
    let config = work.join("config.toml");
    let d = work.display();
    fs::create_dir_all(work.join("mail"))?;
    fs::write(
        &config,
        format!(
            r#"source = "{d}/source"
state_dir = "{d}/state"
mount_root = "{d}/mnt"
[source_lock]
path = "{d}/source.lock"
[indicator]
backend = "none"
[mail]
to = ["bench@localhost"]
on_success = false
transport = {{ kind = "file", dir = "{d}/mail" }}
[crypt]
backend = "loopback-test"
[policy]
require_source_mount_point = true
"#
        ),
    )?;
    let eb = |args: &[&str]| {
        let mut c = Command::new(exe);
        c.arg("--config")
            .arg(&config)
            .args(args)
            .env("EXTBACKUP_ALLOW_LOOPBACK_CRYPT", "1");
        c
    };
    output(&mut eb(&[
        "-q",
        "prepare",
        &drive.0,
        "--name",
        "scale",
        "--yes",
        "--no-recovery-passphrase",
        "--keys-dir",
        &work.join("keys").display().to_string(),
    ]))?;

    // The drive's filesystem mounted directly (the loopback backend's data starts after
    // its header), between runs.
    let mount_data = || {
        Mounted::new(
            &drive_img,
            &["--offset", &LOOPBACK_HEADER.to_string()],
            work.join("drive"),
        )
    };
    // First runs against `cp -a`, in pairs, the order alternating, the drive emptied of
    // what the run wrote between (its generations and manifests: the next run is a first
    // copy again). One pair at a million files (seven minutes each).
    let first_rounds = if files <= 300_000 { FIRST_ROUNDS } else { 1 };
    let cpa_dst = plain.mnt.join("cpa");
    let cp_a = || -> Result<Timed> {
        eprintln!("bench scale: cp -a of {files} files");
        let mut cp = Command::new("sh");
        cp.arg("-c")
            .arg(r#"cp -a "$1" "$2" && sync -f "$2""#)
            .arg("sh")
            .arg(&src.mnt)
            .arg(&cpa_dst);
        let t = timed(&mut cp)?;
        output(Command::new("rm").arg("-rf").arg(&cpa_dst))?;
        Ok(t)
    };
    let first_run = |round: usize| -> Result<Timed> {
        if round > 0 {
            let data = mount_data()?;
            for p in ["generations", ".extbackup/manifests"] {
                output(Command::new("rm").arg("-rf").arg(data.mnt.join(p)))?;
            }
        }
        eprintln!("bench scale: the first run (extbackup run onto the empty drive)");
        timed(&mut eb(&["run", "--device", &drive.0]))
    };
    let (mut first_ratios, mut firsts, mut cpas) = (vec![], vec![], vec![]);
    let mut first: Option<Timed> = None;
    for round in 0..first_rounds {
        let (f, c) = if round % 2 == 0 {
            let c = cp_a()?;
            (first_run(round)?, c)
        } else {
            let f = first_run(round)?;
            (f, cp_a()?)
        };
        println!(
            "  first run round {}: extbackup run {:.2} s, cp -a {:.2} s: {:.2}x; Pss {:.1} MB",
            round + 1,
            secs(f.took),
            secs(c.took),
            secs(f.took) / secs(c.took),
            mb(f.peak_rss)
        );
        first_ratios.push(secs(f.took) / secs(c.took));
        firsts.push(f.took);
        cpas.push(c.took);
        let peak = first.as_ref().map_or(0, |t| t.peak_rss);
        first = Some(Timed {
            peak_rss: peak.max(f.peak_rss),
            ..f
        });
    }
    let first = first.context("no first run")?;
    first_ratios.sort_by(f64::total_cmp);
    let first_ratio = first_ratios[first_ratios.len() / 2];
    let mut src_slash = src.mnt.clone().into_os_string();
    src_slash.push("/");
    // Rounds of (a no-change run adding a generation; cp -al of the newest generation +
    // bare rsync onto it; rm -rf of that copy), the order alternating; each round's ratio
    // against its own baseline (a slow spell of the shared machine slows both).
    let (mut gens_t, mut ratios, mut rms) = (vec![], vec![], vec![]);
    let mut last_gen = None;
    for round in 0..ROUNDS {
        eprintln!(
            "bench scale: round {}/{ROUNDS}: a run with nothing changed, cp -al + rsync, rm -rf",
            round + 1
        );
        let run = || timed(&mut eb(&["run", "--device", &drive.0]));
        let baseline = || -> Result<(Duration, Duration, Duration)> {
            let data = mount_data()?;
            let newest = newest_generation(&data.mnt.join("generations"))?;
            let cpal_dst = data.mnt.join("cpal");
            let cpal = timed(Command::new("cp").arg("-al").arg(&newest).arg(&cpal_dst))?;
            let rsync = timed(
                Command::new("rsync")
                    .args(["-aHAX", "--delete"])
                    .arg(&src_slash)
                    .arg(&cpal_dst),
            )?;
            let rm = timed(Command::new("rm").arg("-rf").arg(&cpal_dst))?;
            Ok((cpal.took, rsync.took, rm.took))
        };
        let (gen, base) = if round % 2 == 0 {
            let g = run()?;
            (g, baseline()?)
        } else {
            let b = baseline()?;
            (run()?, b)
        };
        let limit = base.0 + base.1;
        println!(
            "  round {}: generation run {:.2} s, cp -al {:.2} s + rsync {:.2} s: {:.2}x; rm -rf {:.2} s; Pss {:.1} MB",
            round + 1,
            secs(gen.took),
            secs(base.0),
            secs(base.1),
            secs(gen.took) / secs(limit),
            secs(base.2),
            mb(gen.peak_rss)
        );
        ratios.push(secs(gen.took) / secs(limit));
        gens_t.push(gen.took);
        rms.push(base.2);
        last_gen = Some(gen);
    }
    let gen = last_gen.context("no round")?;
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];

    let data = mount_data()?;
    eprintln!("bench scale: the same generation by rsync --link-dest alone (before issue 22)");
    let old = timed(
        Command::new(gen_once)
            .arg("--link-dest")
            .arg(&src.mnt)
            .arg(&data.mnt),
    )?;
    eprintln!("bench scale: the same generation by generation_once (the syncer alone)");
    let new = timed(Command::new(gen_once).arg(&src.mnt).arg(&data.mnt))?;
    eprintln!("bench scale: pruning the oldest generation");
    let prune = timed(Command::new(gen_once).arg("--prune-oldest").arg(&data.mnt))?;
    drop(data);
    let (gm, rm) = (super::median(&gens_t), super::median(&rms));
    // The syncer alone against the median round's baseline.
    let limit = Duration::from_secs_f64(secs(gm) / ratio);

    println!(
        "bench scale: {files} small files on loop-device ext4 (source and drive each a \
         filesystem of their own), caches dropped before each step; {first_rounds} round(s) \
         of the first run, {ROUNDS} of the generation run"
    );
    println!(
        "  first run      extbackup run {:>8.2} s (median)   cp -a {:>8.2} s (median)   \
         median of the rounds' ratios {first_ratio:.2}x (target <= 1.1x)",
        secs(super::median(&firsts)),
        secs(super::median(&cpas)),
    );
    println!(
        "  generation run extbackup run {:>8.2} s (median)   median of the rounds' ratios to \
         cp -al + rsync: {ratio:.2}x (target <= 1.2x)",
        secs(gm),
    );
    println!(
        "    the syncer alone: linking pass + rsync {:>8.2} s ({:.2}x); rsync --link-dest (before) {:.2} s ({:.2}x)",
        secs(new.took),
        secs(new.took) / secs(limit),
        secs(old.took),
        secs(old.took) / secs(limit)
    );
    println!("      now:    {}", new.stdout.trim());
    println!("      before: {}", old.stdout.trim());
    println!(
        "  prune          one generation {:>7.2} s   rm -rf {:>8.2} s (median)   {:.2}x",
        secs(prune.took),
        secs(rm),
        secs(prune.took) / secs(rm)
    );
    println!(
        "  peak memory (Pss of the process tree, rsync included): first run {:.1} MB, generation run \
         {:.1} MB (target <= 100 MB at 1,000,000 files: compare two --files figures)",
        mb(first.peak_rss),
        mb(gen.peak_rss),
    );
    for (what, t) in [("first", &first), ("generation", &gen)] {
        let (gaps, steps) = profile(&t.stderr);
        println!("  the {what} run's time by step:");
        for (took, line) in steps.iter().filter(|s| s.0 >= 0.01) {
            println!("    {took:>7.2} s  {line}");
        }
        println!("    largest gaps after a log line:");
        for (gap, line) in gaps.into_iter().take(5) {
            println!("    {gap:>7.2} s  {line}");
        }
    }
    Ok(())
}

/// The newest folder under `generations/`.
fn newest_generation(gens: &Path) -> Result<PathBuf> {
    let mut names: Vec<PathBuf> = fs::read_dir(gens)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().ends_with(".incomplete"))
        .collect();
    names.sort();
    names.pop().context("no generation on the drive")
}

/// Seconds, and the log line they are counted for.
type Span = (f64, String);

/// Where a run's time went, from its timestamped log lines: the time from each line to the
/// next non-progress line (progress lines, `sync NN% ...`, count for the line before
/// them), largest first; and the time of each pipeline step (`step N/M: NAME` to the next
/// step line).
fn profile(log: &str) -> (Vec<Span>, Vec<Span>) {
    let lines: Vec<(f64, &str)> = log
        .lines()
        .filter_map(|l| {
            let (stamp, rest) = l.split_once(char::is_whitespace)?;
            Some((seconds_of_day(stamp)?, rest.trim()))
        })
        .collect();
    let is_progress =
        |l: &str| l.split_whitespace().nth(1).is_some_and(|w| w == "sync") && l.contains('%');
    let kept: Vec<(f64, &str)> = lines.into_iter().filter(|l| !is_progress(l.1)).collect();
    let short = |l: &str| l.chars().take(110).collect::<String>();
    let mut gaps: Vec<Span> = kept
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, short(w[0].1)))
        .collect();
    gaps.sort_by(|a, b| b.0.total_cmp(&a.0));
    let steps: Vec<&(f64, &str)> = kept.iter().filter(|l| l.1.contains(" step ")).collect();
    let mut by_step: Vec<Span> = steps
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, short(w[0].1)))
        .collect();
    if let (Some(last), Some(end)) = (steps.last(), kept.last()) {
        by_step.push((end.0 - last.0, short(last.1)));
    }
    (gaps, by_step)
}

/// `2026-12-03T12:39:22.123456Z` -> seconds since midnight.
fn seconds_of_day(stamp: &str) -> Option<f64> {
    let t = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut it = t.split(':');
    let (h, m, s) = (it.next()?, it.next()?, it.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_gives_each_gap_to_the_line_that_opened_it_and_sums_steps() {
        let log = "2026-12-03T12:00:00.000000Z  INFO step 1/2: a\n\
                   2026-12-03T12:00:01.000000Z  INFO sync 50% (10 bytes)\n\
                   2026-12-03T12:00:01.500000Z  INFO b\n\
                   not a log line\n\
                   2026-12-03T12:00:01.750000Z  INFO step 2/2: c\n\
                   2026-12-03T12:00:02.000000Z  INFO d\n";
        let (gaps, steps) = profile(log);
        assert_eq!(gaps.len(), 3);
        assert_eq!(
            gaps[0].1, "INFO step 1/2: a",
            "the progress line counts for a"
        );
        assert!((gaps[0].0 - 1.5).abs() < 1e-9);
        assert!((gaps[1].0 - 0.25).abs() < 1e-9);
        assert_eq!(steps.len(), 2);
        assert!((steps[0].0 - 1.75).abs() < 1e-9 && (steps[1].0 - 0.25).abs() < 1e-9);
    }
}
