//! `sync` benchmark: the Rust `RsyncSyncer` (guard + rsync + progress/stats parsing, the
//! `sync_once` example of the syncer crate built in release mode, with `--rsync-only`: the
//! first-copy engine has its own benchmark, `first-copy`) against bare
//! `rsync -aHAX`, against rsync with the same flags as ours without the wrapper, and ours
//! without the guard's deletion count (what the safety check costs), on one
//! generated tree (20,000 small files in 200 folders plus 4 files of 8 MiB): a first copy
//! and a re-sync with nothing changed, 7 repetitions each, interleaved in a rotating order.
//! Prints medians (and minimums, steadier on a busy machine) and the overhead ratios.
//! Target: ours <= 1.05 x bare rsync.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REPS: usize = 7;
const TREE: super::Tree = super::Tree {
    dirs: 200,
    files_per_dir: 100,
    big_files: 4,
    big_size: 8 << 20,
};

/// The flags `RsyncSyncer` passes (keep in step with crates/syncer/src/rsync.rs).
pub const OUR_FLAGS: &[&str] = &[
    "-aHAX",
    "--sparse",
    "--numeric-ids",
    "--delete-delay",
    "--no-inc-recursive",
    "--modify-window=-1",
    "--info=progress2,stats2",
    "--exclude=/lost+found",
];

#[derive(Clone, Copy)]
enum Tool {
    Ours,
    OursNoDeleteGuard,
    SameFlags,
    Bare,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ours => "RsyncSyncer (sync_once)",
            Tool::OursNoDeleteGuard => "  without deletion count",
            Tool::SameFlags => "rsync, same flags",
            Tool::Bare => "rsync -aHAX",
        }
    }
}

/// Builds the example, generates the tree, measures, prints, cleans up.
pub fn run(root: &Path) -> Result<()> {
    let example = super::release_example(root, "syncer", "sync_once")?;
    super::in_work_dir("sync", |work| measure(&example, work))
}

fn measure(example: &Path, work: &Path) -> Result<()> {
    let src = work.join("src");
    TREE.generate("sync", &src)?;
    let tools = [
        Tool::Ours,
        Tool::OursNoDeleteGuard,
        Tool::SameFlags,
        Tool::Bare,
    ];
    let mut first: Vec<Vec<Duration>> = vec![vec![]; tools.len()];
    let mut again: Vec<Vec<Duration>> = vec![vec![]; tools.len()];
    for rep in 0..REPS {
        for k in 0..tools.len() {
            let i = (k + rep) % tools.len();
            let tool = &tools[i];
            let dst = work.join(format!("dst-{i}"));
            if dst.exists() {
                fs::remove_dir_all(&dst)?;
            }
            first[i].push(time(*tool, example, &src, &dst)?);
            again[i].push(time(*tool, example, &src, &dst)?);
        }
        eprintln!("bench sync: repetition {}/{REPS} done", rep + 1);
    }
    let med = |v: &Vec<Duration>| (super::median(v), v.iter().copied().min().unwrap());
    let first: Vec<(Duration, Duration)> = first.iter().map(med).collect();
    let again: Vec<(Duration, Duration)> = again.iter().map(med).collect();
    println!(
        "bench sync: {REPS} runs each, tree of {} files + {} MiB; median (min)",
        TREE.small_files(),
        TREE.big_mib()
    );
    println!("  {:<26} {:>20} {:>20}", "", "first copy", "no-change sync");
    for (i, tool) in tools.iter().enumerate() {
        println!(
            "  {:<26} {:>9.3} s ({:.3} s) {:>9.3} s ({:.3} s)",
            tool.name(),
            first[i].0.as_secs_f64(),
            first[i].1.as_secs_f64(),
            again[i].0.as_secs_f64(),
            again[i].1.as_secs_f64()
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for (label, j, note) in [
        ("rsync -aHAX", 3, "target <= 1.05x"),
        ("same-flag rsync", 2, "the wrapper's own cost"),
    ] {
        println!(
            "  ours / {label:<16} first copy {:.3}x (min {:.3}x), no-change sync {:.3}x (min {:.3}x) ({note})",
            ratio(first[0].0, first[j].0),
            ratio(first[0].1, first[j].1),
            ratio(again[0].0, again[j].0),
            ratio(again[0].1, again[j].1),
        );
    }
    let ms = |a: Duration, b: Duration| (a.as_secs_f64() - b.as_secs_f64()) * 1000.0;
    println!(
        "  the deletion count costs {:.0} ms (min: {:.0} ms) on the no-change sync",
        ms(again[0].0, again[1].0),
        ms(again[0].1, again[1].1)
    );
    Ok(())
}

fn time(tool: Tool, example: &Path, src: &Path, dst: &Path) -> Result<Duration> {
    let mut cmd = match tool {
        Tool::Ours | Tool::OursNoDeleteGuard => {
            let mut c = Command::new(example);
            c.arg(src).arg(dst).arg("--rsync-only");
            if matches!(tool, Tool::OursNoDeleteGuard) {
                c.arg("--no-delete-guard");
            }
            c
        }
        Tool::SameFlags | Tool::Bare => {
            let mut c = Command::new("rsync");
            if matches!(tool, Tool::Bare) {
                c.arg("-aHAX");
            } else {
                c.args(OUR_FLAGS).env("LC_ALL", "C");
            }
            let mut s = src.as_os_str().to_owned();
            s.push("/");
            c.arg(s).arg(dst);
            c
        }
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running {}", tool.name()))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{} failed ({status})", tool.name());
    }
    Ok(elapsed)
}
