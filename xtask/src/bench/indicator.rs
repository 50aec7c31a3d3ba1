//! `indicator` benchmark: the BlinkStick indicator on the emulated Square. How long `show`
//! takes to switch from a breathing "working" to a steady colour (it cancels and joins the
//! animation thread; target: under one frame interval), against the breathing frame rate
//! it keeps up (the baseline: the nominal 50 frames per breath).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Builds and runs `crates/indicator/examples/indicator_bench.rs`, printing its figures.
pub fn run(root: &Path) -> Result<()> {
    eprintln!("bench indicator: building the release example");
    crate::util::cargo(
        root,
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "indicator",
            "--example",
            "indicator_bench",
        ],
        &[],
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out = Command::new(target.join("release/examples/indicator_bench"))
        .output()
        .context("running the indicator_bench example")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!(
            "indicator bench: a target was missed (see above){}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
