//! `history` benchmark: a no-change run that adds a generation against today's no-change
//! mirror run, on the same filesystem, in the same run, on a tree of 30,000 files (300
//! folders of 100): ext4 (hard-link trees: report, aim <= 4x) and btrfs (snapshots: target
//! <= 1.3x); and pruning one generation. Release builds of the syncer's example
//! `generation_once`: a generation = the free-space estimate against the newest
//! generation, the new generation, `RsyncSyncer` with the guard, the rename; the mirror
//! (`--mirror`) = the free-space check's two walks and `RsyncSyncer`, as a mirror run does;
//! `--prune-oldest`. The bare mirror sync (`sync_once`, no free-space walks) is shown too.
//! As root (loop devices).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const REPS: usize = 5;
const TREE: super::Tree = super::Tree {
    dirs: 300,
    files_per_dir: 100,
    big_files: 0,
    big_size: 0,
};

/// Builds the examples, generates the tree, measures ext4 then btrfs, cleans up.
pub fn run(root: &Path) -> Result<()> {
    if !crate::util::is_root() {
        bail!("bench history: needs root (loop devices, mounts)");
    }
    let mirror = super::release_example(root, "syncer", "sync_once")?;
    let generation = super::release_example(root, "syncer", "generation_once")?;
    super::in_work_dir("history", |work| {
        let src = work.join("src");
        TREE.generate("history", &src)?;
        for fs_kind in ["ext4", "btrfs"] {
            measure(fs_kind, &mirror, &generation, &src, work)?;
        }
        Ok(())
    })
}

fn measure(kind: &str, mirror: &Path, generation: &Path, src: &Path, work: &Path) -> Result<()> {
    let mkfs: &[&str] = match kind {
        "ext4" => &["mkfs.ext4", "-q", "-F", "-m", "0"],
        _ => &["mkfs.btrfs", "-q", "-f"],
    };
    let m = super::LoopFs::new(work, kind, mkfs)?;
    let data = m.mnt.join("data");
    let mirror_run = || timed(Command::new(generation).arg("--mirror").arg(src).arg(&data));
    // The first copies, not timed.
    mirror_run()?;
    timed(Command::new(generation).arg(src).arg(&m.mnt))?;
    let (mut mirrors, mut gens, mut prunes, mut bare) = (vec![], vec![], vec![], vec![]);
    for rep in 0..REPS {
        // Alternate which goes first.
        if rep % 2 == 0 {
            mirrors.push(mirror_run()?);
            gens.push(timed(Command::new(generation).arg(src).arg(&m.mnt))?);
        } else {
            gens.push(timed(Command::new(generation).arg(src).arg(&m.mnt))?);
            mirrors.push(mirror_run()?);
        }
        bare.push(timed(Command::new(mirror).arg(src).arg(&data))?);
        prunes.push(timed(
            Command::new(generation).arg("--prune-oldest").arg(&m.mnt),
        )?);
    }
    drop(m);
    let s = |d: Duration| d.as_secs_f64();
    let (mm, gm, pm) = (
        super::median(&mirrors),
        super::median(&gens),
        super::median(&prunes),
    );
    let (mmin, gmin) = (
        mirrors.iter().min().copied().unwrap_or_default(),
        gens.iter().min().copied().unwrap_or_default(),
    );
    let (target, what) = match kind {
        "btrfs" => ("target <= 1.3x", "snapshot"),
        _ => ("report; aim <= 4x", "hard-link tree"),
    };
    println!(
        "bench history {kind}: {REPS} runs each on {} files; median (min)",
        TREE.small_files()
    );
    println!(
        "  no-change mirror run              {:>8.3} s ({:.3} s)",
        s(mm),
        s(mmin)
    );
    let bm = super::median(&bare);
    println!(
        "    its sync alone (sync_once)      {:>8.3} s; generation / that: {:.2}x",
        s(bm),
        s(gm) / s(bm)
    );
    println!(
        "  no-change run adding a generation {:>8.3} s ({:.3} s)  [{what}]",
        s(gm),
        s(gmin)
    );
    println!(
        "  generation / mirror: {:.2}x (min {:.2}x) ({target})",
        s(gm) / s(mm),
        s(gmin) / s(mmin)
    );
    println!(
        "  pruning one generation            {:>8.3} s ({:.2}x the mirror run)",
        s(pm),
        s(pm) / s(mm)
    );
    Ok(())
}

fn timed(cmd: &mut Command) -> Result<Duration> {
    let t0 = Instant::now();
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}
