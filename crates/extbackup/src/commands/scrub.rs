//! `extbackup scrub`: re-read a drive and check it against its own manifests.

use anyhow::Result;
use clap::Args as ClapArgs;

use extbackup::drive::scrub;

use crate::commands::util::{failure, load_or_default, BareDrive};
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
    #[command(flatten)]
    open: BareDrive,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (cfg, has_config) = load_or_default(cli)?;
    let sel = match a.sample {
        Some(p) => scrub::Selection::Sample(p),
        None => scrub::Selection::All,
    };
    let r = a.open.view(&cfg, &a.name, |view| {
        scrub::scrub(view.mount_point(), &a.name, sel).map_err(failure)
    })?;
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
