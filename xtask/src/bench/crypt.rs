//! `crypt` benchmark: `verify_key_file` on a keyslot as `format` makes it versus a default
//! argon2id keyslot on the same image (the `verify_bench` example of the crypt crate, built
//! in release mode). Target: ours < 0.2 s.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

/// Builds and runs the example; it prints both figures and the ratio, and fails when ours
/// misses the target.
pub fn run(root: &Path) -> Result<()> {
    let example = super::release_example(root, "crypt", "verify_bench")?;
    crate::util::run(&mut Command::new(example))
}
