//! `cargo xtask hw-test`: tests against real hardware.

use anyhow::Result;

/// `cargo xtask hw-test`.
pub fn run(_args: &[String]) -> Result<()> {
    Ok(())
}
