//! Integration tests of the sync crate with the real rsync, real `flock(1)`, and (as
//! root) loop-mounted ext4 filesystems.

mod command;
mod conformance;
mod exclude;
mod first_copy;
mod generation;
mod lock;
mod rsync;
mod util;

use syncer::SyncOptions;

pub fn opts() -> SyncOptions {
    SyncOptions {
        drive: "offsite-a".into(),
        max_delete_fraction: Some(0.5),
        ..Default::default()
    }
}
