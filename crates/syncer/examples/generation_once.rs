//! Adds one generation of SOURCE on the drive mounted at MOUNT, as a history run does: the
//! free-space estimate against the newest generation, a new generation under its
//! `.incomplete` name (a btrfs snapshot of the newest on btrfs, else hard links with
//! `--link-dest`), `RsyncSyncer` with the guard, and the rename. Or, with `--prune-oldest`,
//! removes the oldest generation. Prints the time taken. Used by `cargo xtask bench history`.
//!
//! `--mirror SOURCE TARGET` is today's mirror run for comparison: the free-space check's
//! two walks (the source and the mirror, every entry stat'ed, as the pipeline's
//! `tree_size` does) and the same `RsyncSyncer` onto the mirror.
//!
//! `--link-dest SOURCE MOUNT` builds the generation as before issue 22, by rsync
//! `--link-dest` alone (`RsyncSyncer::without_linking_pass`), for comparison.
//!
//! usage: generation_once SOURCE MOUNT | generation_once --link-dest SOURCE MOUNT |
//!        generation_once --prune-oldest MOUNT | generation_once --mirror SOURCE TARGET

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use syncer::generations::{self, Generations, Stamp};
use syncer::{GuardedSync, RsyncSyncer, SyncOptions};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let t0 = Instant::now();
    let result = match args.as_slice() {
        [flag, mount] if flag.as_os_str() == "--prune-oldest" => prune(mount),
        [flag, source, target] if flag.as_os_str() == "--mirror" => mirror(source, target),
        [source, mount] => add(source, mount, RsyncSyncer::new()),
        [flag, source, mount] if flag.as_os_str() == "--link-dest" => {
            add(source, mount, RsyncSyncer::new().without_linking_pass())
        }
        _ => {
            eprintln!("usage: generation_once SOURCE MOUNT | generation_once --prune-oldest MOUNT");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(what) => {
            println!("{what} in {:.3} s", t0.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generation_once: {e}");
            ExitCode::FAILURE
        }
    }
}

fn add(
    source: &std::path::Path,
    mount: &std::path::Path,
    syncer: RsyncSyncer,
) -> Result<String, String> {
    let gens = Generations::at(mount);
    let t = Instant::now();
    let prev = gens.newest().map_err(|e| e.to_string())?.map(|g| g.path);
    let need = match &prev {
        Some(p) => {
            generations::new_bytes(source, p, &Default::default()).map_err(|e| e.to_string())?
        }
        None => 0,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t_estimate = t.elapsed();
    let t = Instant::now();
    let g = gens.start(Stamp(now)).map_err(|e| e.to_string())?;
    let t_start = t.elapsed();
    let t = Instant::now();
    let opts = SyncOptions {
        drive: "bench".into(),
        max_delete_fraction: Some(0.5),
        link_dest: if g.snapshot { None } else { prev },
        ..Default::default()
    };
    let r = syncer
        .sync(source, &g.path, &opts, &mut |_| {})
        .map_err(|e| format!("{e:#}"))?;
    let t_sync = t.elapsed();
    let t = Instant::now();
    let done = gens.commit(&g).map_err(|e| e.to_string())?;
    Ok(format!(
        "generation {} ({} files copied, estimate {need} bytes new, snapshot {}; estimate \
         {:.3} s, start {:.3} s, sync {:.3} s, commit {:.3} s)",
        done.stamp.name(),
        r.files_copied,
        g.snapshot,
        t_estimate.as_secs_f64(),
        t_start.as_secs_f64(),
        t_sync.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ))
}

fn mirror(source: &std::path::Path, target: &std::path::Path) -> Result<String, String> {
    let t = Instant::now();
    let none = Default::default();
    let src = generations::figures(source, &none).map_err(|e| e.to_string())?;
    let have = generations::figures(target, &none).map_err(|e| e.to_string())?;
    let t_estimate = t.elapsed();
    let opts = SyncOptions {
        drive: "bench".into(),
        max_delete_fraction: Some(0.5),
        ..Default::default()
    };
    let r = RsyncSyncer::new()
        .sync(source, target, &opts, &mut |_| {})
        .map_err(|e| format!("{e:#}"))?;
    Ok(format!(
        "mirror ({} files copied; free-space walks {:.3} s for {} + {} bytes)",
        r.files_copied,
        t_estimate.as_secs_f64(),
        src.bytes,
        have.bytes
    ))
}

fn prune(mount: &std::path::Path) -> Result<String, String> {
    let gens = Generations::at(mount);
    let list = gens.list().map_err(|e| e.to_string())?;
    let Some(oldest) = list.first().filter(|_| list.len() > 1) else {
        return Err("fewer than two generations: nothing to prune".into());
    };
    gens.remove(oldest).map_err(|e| e.to_string())?;
    Ok(format!("pruned {}", oldest.stamp.name()))
}
