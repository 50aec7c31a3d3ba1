//! `extbackup status`: the last success, its age and the last failure of every drive.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;

use extbackup::drive::status;

use crate::commands::util::load;
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let cfg = load(cli)?;
    // A run killed before it could tell its end is told now (when no run holds the lock).
    extbackup::run::backends::report_interrupted_if_idle(&cfg);
    let s = status::status(&cfg, extbackup::fmt::now())
        .with_context(|| format!("reading {}", cfg.state_dir.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", s.render());
    }
    Ok(0)
}
