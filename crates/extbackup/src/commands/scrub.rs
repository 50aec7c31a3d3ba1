//! `extbackup scrub`: re-read a drive and check it against its own manifests.

use anyhow::Result;
use clap::Args as ClapArgs;
use std::path::PathBuf;

use extbackup::drive::scrub;

use crate::commands::util::{failure, load_or_default, opener_with_key, with_drive_view_by};
use crate::commands::verify::parse_percent;
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's name (configured, or as `extbackup mount` names it: the LUKS label).
    name: String,
    /// Read about PERCENT % of the files, picked at random (all by default).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    sample: Option<f64>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// The drive's LUKS device (needed without a configuration).
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// Open with the recovery passphrase instead of the key file.
    #[arg(long, conflicts_with = "key_file")]
    passphrase: bool,
    /// Open with this key file (a drive the configuration does not know, or no
    /// configuration at all: a bare machine; default: the configured key file).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (cfg, has_config) = load_or_default(cli)?;
    let sel = match a.sample {
        Some(p) => scrub::Selection::Sample(p),
        None => scrub::Selection::All,
    };
    let r = with_drive_view_by(
        &cfg,
        &a.name,
        a.device.as_deref(),
        &opener_with_key(a.passphrase, a.key_file.as_deref()),
        |view| scrub::scrub(view.mount_point(), &a.name, sel).map_err(failure),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for f in &r.faults {
            println!("{f}");
        }
        println!("scrub {}: {}", a.name, r.summary());
    }
    if has_config {
        if let Err(e) = scrub::record(&cfg.state_dir, &r) {
            tracing::warn!("recording the scrub in {}: {e}", cfg.state_dir.display());
        }
    }
    Ok(if r.clean() { 0 } else { 1 })
}
