//! The real Python BlinkStick CLI (PyPI `BlinkStick` 1.2.0 + pyusb) in a venv under
//! target/: the baseline of `cargo xtask bench` and the reference of `cargo xtask parity`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The pinned Python package.
pub const PACKAGE: &str = "BlinkStick==1.2.0";

/// The venv (created on first use; `python3-venv` comes from deps.rs):
/// returns `(python, script)` to run as `python script ARGS`.
pub fn blinkstick_cli(target: &Path) -> Result<(PathBuf, PathBuf)> {
    let venv = target.join("python-blinkstick");
    let python = venv.join("bin/python");
    let script = venv.join("bin/blinkstick");
    if !script.exists() {
        eprintln!(
            "xtask: installing {PACKAGE} + pyusb into {}",
            venv.display()
        );
        crate::util::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("creating the venv (Debian: apt-get install python3-venv)")?;
        crate::util::run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PACKAGE,
            "pyusb",
        ]))
        .with_context(|| format!("pip install {PACKAGE} pyusb (needs network access to PyPI)"))?;
    }
    if !script.exists() {
        bail!("pip installed no `blinkstick` script in {}", venv.display());
    }
    // the package installs its script without the executable bit: run it with the venv's python
    Ok((python, script))
}
