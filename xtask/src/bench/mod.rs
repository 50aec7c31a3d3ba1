//! `cargo xtask bench`: every benchmark of the workspace, in one run.
//!
//! Each area has a module with `pub fn run(root: &Path) -> anyhow::Result<()>` that
//! measures its subject and a baseline in the same run and prints the ratio.

pub mod blinkstick;
pub mod crypt;
pub mod extbackup;
pub mod indicator;
pub mod sync;

use anyhow::Result;

/// Runs every benchmark in turn; stops at the first that fails.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        anyhow::bail!("unknown option `{a}` for `cargo xtask bench`");
    }
    let root = crate::util::root();
    let _ = &root; // each area's `run(&root)` is called below
    blinkstick::run(&root)?;
    crypt::run(&root)?;
    extbackup::run(&root)?;
    indicator::run(&root)?;
    sync::run(&root)?;
    Ok(())
}
