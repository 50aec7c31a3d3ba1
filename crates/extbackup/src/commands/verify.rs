//! `extbackup verify`: compare a drive's copy with the source.

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

use extbackup::drive::verify;

use crate::commands::util::{failure, load, with_drive_view, UsageError};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's name.
    name: String,
    /// Compare the content of every file.
    #[arg(long, conflicts_with = "sample")]
    full: bool,
    /// Compare the content of about PERCENT % of the files, picked at random (default 10).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    sample: Option<f64>,
    /// The drive's LUKS device.
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// Open with the recovery passphrase instead of the key file.
    #[arg(long)]
    passphrase: bool,
}

pub(crate) fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let cfg = load(cli)?;
    if cfg.drive_by_name(&a.name).is_none() {
        bail!(UsageError(format!(
            "no drive named {} in {}",
            a.name,
            cli.config.display()
        )));
    }
    let depth = if a.full {
        verify::Depth::Full
    } else {
        verify::Depth::Sample(a.sample.unwrap_or(verify::DEFAULT_SAMPLE_PERCENT))
    };
    let r = with_drive_view(&cfg, &a.name, a.device.as_deref(), a.passphrase, |view| {
        verify::verify(&a.name, &cfg.sources(), &view.data(), depth).map_err(failure)
    })?;
    for d in &r.differences {
        println!("{d}");
    }
    println!("verify {}: {}", a.name, r.summary());
    if let Err(e) = verify::record(&cfg.state_dir, &r) {
        tracing::warn!("recording the verify in {}: {e}", cfg.state_dir.display());
    }
    Ok(if r.clean() { 0 } else { 1 })
}
