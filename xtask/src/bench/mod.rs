//! `cargo xtask bench`: every benchmark of the workspace, in one run.
//!
//! Each area has a module with `pub fn run(root: &Path) -> anyhow::Result<()>` that
//! measures its subject and a baseline in the same run and prints the ratio.

pub mod blinkstick;
pub mod crypt;
pub mod extbackup;
pub mod first_copy;
pub mod history;
pub mod indicator;
pub mod sync;
pub mod verify;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One area's benchmark: `run(root)`.
type Bench = fn(&Path) -> Result<()>;

/// The benchmark areas, in the order `cargo xtask bench` runs them.
const AREAS: &[(&str, Bench)] = &[
    ("blinkstick", blinkstick::run),
    ("crypt", crypt::run),
    ("extbackup", extbackup::run),
    ("first-copy", first_copy::run),
    ("history", history::run),
    ("indicator", indicator::run),
    ("sync", sync::run),
    ("verify", verify::run),
];

/// Runs every benchmark in turn (or only the areas named, e.g. `cargo xtask bench verify`);
/// stops at the first that fails.
pub fn run(args: &[String]) -> Result<()> {
    for a in args {
        if !AREAS.iter().any(|(n, _)| n == a) {
            let names: Vec<&str> = AREAS.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown benchmark `{a}` for `cargo xtask bench` (areas: {})",
                names.join(", ")
            );
        }
    }
    let root = crate::util::root();
    for (name, f) in AREAS {
        if args.is_empty() || args.iter().any(|a| a == name) {
            f(&root)?;
        }
    }
    Ok(())
}

/// Cargo's target folder: `$CARGO_TARGET_DIR`, or `target/` under the workspace root.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// `cargo build --release --quiet -p PKG [TARGETS...]` (e.g. `["--bin", "x"]`); returns
/// the folder the release artifacts land in (`<target>/release`).
pub fn build_release(root: &Path, pkg: &str, targets: &[&str]) -> Result<PathBuf> {
    eprintln!("bench {pkg}: building the release build");
    let mut args = vec!["build", "--release", "--quiet", "-p", pkg];
    args.extend_from_slice(targets);
    crate::util::cargo(root, &args, &[])?;
    Ok(target_dir(root).join("release"))
}

/// Builds the example `example` of `pkg` in release mode and returns its path.
pub fn release_example(root: &Path, pkg: &str, example: &str) -> Result<PathBuf> {
    Ok(build_release(root, pkg, &["--example", example])?
        .join("examples")
        .join(example))
}

/// Runs a built benchmark program, prints its stdout after `prefix`, and fails with
/// `failure` followed by its stderr when it exits non-zero (a target was missed).
pub fn run_printing(exe: &Path, prefix: &str, failure: &str) -> Result<()> {
    let name = exe.file_name().unwrap_or_default().to_string_lossy();
    let out = Command::new(exe)
        .output()
        .with_context(|| format!("running the {name} example"))?;
    print!("{prefix}{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("{failure}{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The median of `times` (the upper one of the middle two for an even count).
///
/// Panics on an empty slice.
pub fn median(times: &[Duration]) -> Duration {
    let mut v = times.to_vec();
    v.sort();
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(&[ms(4), ms(1), ms(3), ms(2)]), ms(3));
        assert_eq!(median(&[ms(7)]), ms(7));
    }
}
