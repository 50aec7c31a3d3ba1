//! Mirrors SOURCE onto TARGET once with `RsyncSyncer`, as the backup run does (guard on,
//! progress callback counting updates), and prints the report. Used by
//! `cargo xtask bench` to time the Rust backend against bare rsync.
//!
//! usage: sync_once SOURCE TARGET [--no-delete-guard] [--rsync-only]
//!
//! `--no-delete-guard` sets `max_delete_fraction: None` (the source checks stay), to
//! measure what the deletion count costs. `--rsync-only` turns the first-copy engine off
//! (rsync makes the first copy onto an empty target too), to measure the rsync wrapper.

use std::path::PathBuf;
use std::process::ExitCode;
use syncer::{GuardedSync, RsyncSyncer, SyncOptions};

fn main() -> ExitCode {
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let mut flag = |name: &str| {
        let before = args.len();
        args.retain(|a| a.as_os_str() != name);
        args.len() != before
    };
    let guard = !flag("--no-delete-guard");
    let rsync_only = flag("--rsync-only");
    let [source, target] = args.as_slice() else {
        eprintln!("usage: sync_once SOURCE TARGET [--no-delete-guard] [--rsync-only]");
        return ExitCode::from(2);
    };
    let syncer = if rsync_only {
        RsyncSyncer::new().without_first_copy()
    } else {
        RsyncSyncer::new()
    };
    let opts = SyncOptions {
        drive: "bench".into(),
        max_delete_fraction: guard.then_some(0.5),
        ..Default::default()
    };
    let mut updates = 0u64;
    match syncer.sync(source, target, &opts, &mut |_| updates += 1) {
        Ok(r) => {
            println!(
                "copied {} files ({} bytes), deleted {}, {} files / {} bytes in the source, \
                 {updates} progress updates, {:.3} s",
                r.files_copied,
                r.bytes_copied,
                r.files_deleted,
                r.files_total,
                r.bytes_total,
                r.duration.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sync_once: {e:#}");
            ExitCode::FAILURE
        }
    }
}
