//! `indicator` benchmark: the BlinkStick indicator on the emulated Square. How long `show`
//! takes to switch from a breathing "working" to a steady colour (it cancels and joins the
//! animation thread; target: under one frame interval), against the breathing frame rate
//! it keeps up (the baseline: the nominal 50 frames per breath).

use std::path::Path;

use anyhow::Result;

/// Builds and runs `crates/indicator/examples/indicator_bench.rs`, printing its figures.
pub fn run(root: &Path) -> Result<()> {
    let example = super::release_example(root, "indicator", "indicator_bench")?;
    super::run_printing(
        &example,
        "",
        "indicator bench: a target was missed (see above)",
    )
}
