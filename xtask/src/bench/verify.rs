//! `verify` benchmark: `extbackup verify --full`'s comparison (the `verify_once` example of
//! the extbackup crate, built in release mode: metadata of every entry, SHA-256 of every file
//! on both sides, several workers) against `sha256sum` over the same files on both sides
//! (`find SRC DST -type f -print0 | xargs -0 sha256sum`), on one generated tree: 8 files of
//! 128 MiB (1 GiB) plus 30,000 small files (1-4 KiB) in 300 folders, copied with `cp -a`.
//! Both read from the page cache (a warm-up pass of each first); 3 repetitions each,
//! interleaved; medians. Target: verify <= 1.5 x sha256sum.
//!
//! Opening the drive (unlock, mount) is left out: a constant that does not grow with the
//! tree and needs root and a LUKS device.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REPS: usize = 3;
const TREE: super::Tree = super::Tree {
    dirs: 300,
    files_per_dir: 100,
    big_files: 8,
    big_size: 128 << 20,
};
const TARGET: f64 = 1.5;

/// Builds the example, generates the tree, measures, prints, cleans up.
pub fn run(root: &Path) -> Result<()> {
    let example = super::release_example(root, "extbackup", "verify_once")?;
    super::in_work_dir("verify", |work| measure(&example, work))
}

fn time_verify(example: &Path, src: &Path, dst: &Path) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new(example).arg(src).arg(dst).output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "verify_once failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(d)
}

fn time_sha256sum(src: &Path, dst: &Path) -> Result<Duration> {
    let t = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg("find \"$1\" \"$2\" -type f -print0 | xargs -0 sha256sum > /dev/null")
        .arg("sh")
        .arg(src)
        .arg(dst)
        .stdout(Stdio::null())
        .status()
        .context("running find | xargs sha256sum")?;
    let d = t.elapsed();
    if !st.success() {
        bail!("find | xargs sha256sum failed ({st})");
    }
    Ok(d)
}

fn measure(example: &Path, work: &Path) -> Result<()> {
    let (src, dst) = (work.join("source"), work.join("copy"));
    TREE.generate("verify", &src)?;
    crate::util::run(Command::new("cp").arg("-a").arg(&src).arg(&dst))?;
    // Warm-up: both read everything once into the page cache.
    time_sha256sum(&src, &dst)?;
    time_verify(example, &src, &dst)?;
    let (mut ours, mut base) = (vec![], vec![]);
    for i in 0..REPS {
        if i % 2 == 0 {
            ours.push(time_verify(example, &src, &dst)?);
            base.push(time_sha256sum(&src, &dst)?);
        } else {
            base.push(time_sha256sum(&src, &dst)?);
            ours.push(time_verify(example, &src, &dst)?);
        }
    }
    let (o, b) = (super::median(&ours), super::median(&base));
    let ratio = o.as_secs_f64() / b.as_secs_f64();
    println!(
        "verify --full over {} MiB + {} small files, both sides: {:.2} s; sha256sum over the \
         same files: {:.2} s; ratio {ratio:.2} (target <= {TARGET})",
        TREE.big_mib(),
        TREE.small_files(),
        o.as_secs_f64(),
        b.as_secs_f64()
    );
    if ratio > TARGET {
        bail!("verify --full is {ratio:.2} x sha256sum, above the target {TARGET}");
    }
    Ok(())
}
