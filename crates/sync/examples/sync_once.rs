//! Mirrors SOURCE onto TARGET once with `RsyncSyncer`, as the backup run does (guard on,
//! progress callback counting updates), and prints the report. Used by
//! `cargo xtask bench` to time the Rust backend against bare rsync.
//!
//! usage: sync_once SOURCE TARGET

use std::path::PathBuf;
use std::process::ExitCode;
use sync::{RsyncSyncer, SyncOptions, Syncer};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [source, target] = args.as_slice() else {
        eprintln!("usage: sync_once SOURCE TARGET");
        return ExitCode::from(2);
    };
    let opts = SyncOptions {
        drive: "bench".into(),
        require_source_mount_point: false,
        max_delete_fraction: Some(0.5),
        force: false,
    };
    let mut updates = 0u64;
    match RsyncSyncer::new().sync(source, target, &opts, &mut |_| updates += 1) {
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
