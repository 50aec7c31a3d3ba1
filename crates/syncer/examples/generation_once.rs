//! Adds one generation of SOURCE on the drive mounted at MOUNT, as a history run does: the
//! free-space estimate against the newest generation, a new generation under its
//! `.incomplete` name (a btrfs snapshot of the newest on btrfs, else hard links with
//! `--link-dest`), `RsyncSyncer` with the guard, and the rename. Or, with `--prune-oldest`,
//! removes the oldest generation. Prints the time taken. Used by `cargo xtask bench history`.
//!
//! usage: generation_once SOURCE MOUNT | generation_once --prune-oldest MOUNT

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
        [source, mount] => add(source, mount),
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

fn add(source: &std::path::Path, mount: &std::path::Path) -> Result<String, String> {
    let gens = Generations::at(mount);
    let prev = gens.newest().map_err(|e| e.to_string())?.map(|g| g.path);
    let need = match &prev {
        Some(p) => generations::new_bytes(source, p).map_err(|e| e.to_string())?,
        None => 0,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let g = gens.start(Stamp(now)).map_err(|e| e.to_string())?;
    let opts = SyncOptions {
        drive: "bench".into(),
        require_source_mount_point: false,
        max_delete_fraction: Some(0.5),
        force: false,
        link_dest: if g.snapshot { None } else { prev },
    };
    let r = RsyncSyncer::new()
        .sync(source, &g.path, &opts, &mut |_| {})
        .map_err(|e| format!("{e:#}"))?;
    let done = gens.commit(&g).map_err(|e| e.to_string())?;
    Ok(format!(
        "generation {} ({} files copied, estimate {need} bytes new, snapshot {})",
        done.stamp.name(),
        r.files_copied,
        g.snapshot
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
