//! `manifest` benchmark (issue 19.2): what the manifests cost, in one run, on an ext4
//! filesystem on a loop device, with release builds of the syncer's `generation_once` and
//! `sync_once` and the manifest crate's `manifest_once` (crates/manifest/examples).
//!
//! 1. A no-change generation: `generation_once` (the free-space estimate, the linking
//!    pass, rsync, the rename) against the same followed by `manifest_once` on the new
//!    generation with the previous sidecar (every hash carried over: no file read), each
//!    timed up to `sync -f` (a run ends writing everything back in its unmount; the
//!    manifest's own fsync would otherwise be charged the generation's journal commit).
//!    Target <= 1.10x.
//! 2. A first copy onto an empty folder: `cp -a` against the product's first copy
//!    (`sync_once`: the guard, cp) run by `manifest_once -- sync_once ...`, which hashes
//!    each file as the copy closes it (`manifest::follow`, from the page cache, on the core
//!    cp leaves free) and then writes the manifest, each timed up to `sync -f` (data on the
//!    disk). Target <= 1.20x.
//!
//! Rounds alternate which goes first; the verdict is the median of the per-round ratios
//! (a slow spell of the shared machine slows both of a round). Needs root.

use anyhow::{ensure, Context, Result};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::output;

const REPS: usize = 7;
const TREE: super::Tree = super::Tree {
    dirs: 200,
    files_per_dir: 100,
    big_files: 4,
    big_size: 64 << 20,
};

pub fn run(root: &Path) -> Result<()> {
    ensure!(
        crate::util::is_root(),
        "bench manifest needs root (a loop device, a mount)"
    );
    let generation = super::release_example(root, "syncer", "generation_once")?;
    let sync_once = super::release_example(root, "syncer", "sync_once")?;
    let manifest = super::release_example(root, "manifest", "manifest_once")?;
    super::in_work_dir("manifest", |work| {
        let src = work.join("src");
        TREE.generate("manifest", &src)?;
        let lo = super::LoopFs::new(work, "disk", &["mkfs.ext4", "-q", "-F", "-m", "0"])?;
        println!(
            "bench manifest: ext4 on a loop device, {} small files + {} MiB; {REPS} rounds, median (min)",
            TREE.small_files(),
            TREE.big_mib()
        );
        no_change(&generation, &manifest, &src, &lo)?;
        first_copy(&sync_once, &manifest, &src, &lo)
    })
}

/// The newest folder in `dir` (generation names sort by time).
fn newest(dir: &Path) -> Result<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.sort();
    v.pop().context("no generation")
}

fn no_change(generation: &Path, manifest: &Path, src: &Path, lo: &super::LoopFs) -> Result<()> {
    let gens = lo.mnt.join("generations");
    let sidecars = lo.mnt.join("manifests");
    fs::create_dir_all(&sidecars)?;
    // The first generation and its manifest, not timed.
    output(Command::new(generation).arg(src).arg(&lo.mnt))?;
    let mut prev = sidecars.join("first.files");
    output(Command::new(manifest).arg(newest(&gens)?).arg(&prev))?;
    let (mut bare, mut with) = (vec![], vec![]);
    for rep in 0..REPS {
        for k in 0..2 {
            // Alternate which goes first.
            // Each up to `sync -f`, as a run ends with the unmount writing everything back:
            // the manifest's fsync commits the generation's links to the journal early,
            // which the run pays anyway.
            output(Command::new("sync").arg("-f").arg(&lo.mnt))?;
            if (k + rep) % 2 == 0 {
                let t0 = Instant::now();
                output(Command::new(generation).arg(src).arg(&lo.mnt))?;
                output(Command::new("sync").arg("-f").arg(&lo.mnt))?;
                bare.push(t0.elapsed());
            } else {
                let t0 = Instant::now();
                output(Command::new(generation).arg(src).arg(&lo.mnt))?;
                let out = sidecars.join(format!("r{rep}.files"));
                let said = output(
                    Command::new(manifest)
                        .arg(newest(&gens)?)
                        .arg(&out)
                        .arg(&prev),
                )?;
                output(Command::new("sync").arg("-f").arg(&lo.mnt))?;
                with.push(t0.elapsed());
                ensure!(
                    said.contains(" 0 read"),
                    "a no-change manifest read files: {said}"
                );
                prev = out;
            }
        }
        // Keep the drive from filling with generations: prune the oldest two.
        output(Command::new(generation).arg("--prune-oldest").arg(&lo.mnt))?;
        output(Command::new(generation).arg("--prune-oldest").arg(&lo.mnt))?;
    }
    report(
        "no-change generation",
        "generation_once",
        &bare,
        "+ manifest (carried over)",
        &with,
        1.10,
    )
}

fn first_copy(sync_once: &Path, manifest: &Path, src: &Path, lo: &super::LoopFs) -> Result<()> {
    let dst = lo.mnt.join("first");
    let out = lo.mnt.join("first.files");
    let (mut cp, mut ours) = (vec![], vec![]);
    for rep in 0..REPS {
        for k in 0..2 {
            if dst.exists() {
                fs::remove_dir_all(&dst)?;
            }
            output(Command::new("sync").arg("-f").arg(&lo.mnt))?;
            output(Command::new("sync").arg("-f").arg(&lo.image))?;
            let t0 = Instant::now();
            if (k + rep) % 2 == 0 {
                output(Command::new("cp").arg("-a").arg(src).arg(&dst))?;
                output(Command::new("sync").arg("-f").arg(&lo.mnt))?;
                cp.push(t0.elapsed());
            } else {
                // As a run's first copy: each file hashed as the copy closes it.
                let said = output(
                    Command::new(manifest)
                        .arg(&dst)
                        .arg(&out)
                        .arg("--")
                        .arg(sync_once)
                        .arg(src)
                        .arg(&dst),
                )?;
                output(Command::new("sync").arg("-f").arg(&lo.mnt))?;
                ours.push(t0.elapsed());
                ensure!(
                    said.contains(" 0 carried"),
                    "a first copy carried hashes: {said}"
                );
            }
        }
        eprintln!("bench manifest: first copy, round {}/{REPS} done", rep + 1);
    }
    report(
        "first copy",
        "cp -a",
        &cp,
        "first copy + manifest",
        &ours,
        1.20,
    )
}

fn report(
    what: &str,
    base_name: &str,
    base: &[Duration],
    ours_name: &str,
    ours: &[Duration],
    target: f64,
) -> Result<()> {
    let s = |d: Duration| d.as_secs_f64();
    let min = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let paired = super::first_copy::paired_ratio(base, ours);
    println!("  {what}:");
    println!(
        "    {base_name:<30} {:>7.3} s ({:.3} s)",
        s(super::median(base)),
        s(min(base))
    );
    println!(
        "    {ours_name:<30} {:>7.3} s ({:.3} s)",
        s(super::median(ours)),
        s(min(ours))
    );
    println!(
        "    target <= {target:.2}x: {} (median of the per-round ratios {paired:.2}x; ratio of the medians {:.2}x, of the minimums {:.2}x)",
        if paired <= target { "met" } else { "NOT met" },
        s(super::median(ours)) / s(super::median(base)),
        s(min(ours)) / s(min(base))
    );
    Ok(())
}
