//! The mountinfo lookup for the tests; loop devices and commands come from `testkit`.

use std::path::Path;

pub use testkit::{root_or_skip_here, sh, LoopImage};

/// The mountinfo entry for `target`, if mounted.
pub fn entry(target: &Path) -> Option<mounter::mountinfo::MountEntry> {
    let target = std::fs::canonicalize(target).ok()?;
    mounter::mountinfo::read()
        .unwrap()
        .into_iter()
        .rev()
        .find(|e| e.target == target)
}
