//! `crypt` benchmark: `verify_key_file` on a keyslot as `format` makes it versus a default
//! argon2id keyslot on the same image (the `verify_bench` example of the crypt crate, built
//! in release mode). Target: ours < 0.2 s.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

/// Builds and runs the example; it prints both figures and the ratio, and fails when ours
/// misses the target.
pub fn run(root: &Path) -> Result<()> {
    eprintln!("bench crypt: building the release example");
    crate::util::cargo(
        root,
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "crypt",
            "--example",
            "verify_bench",
        ],
        &[],
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    crate::util::run(&mut Command::new(
        target.join("release/examples/verify_bench"),
    ))
}
