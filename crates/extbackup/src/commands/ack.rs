//! `extbackup ack`: acknowledge a failure shown on the shared LED.

use anyhow::{bail, Result};
use clap::Args as ClapArgs;

use extbackup::run::backends;

use crate::commands::util::{load, UsageError};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive (slot) whose failure to acknowledge.
    name: String,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let name = &a.name;
    let cfg = load(cli)?;
    if backends::ack(&cfg, name).map_err(|e| anyhow::anyhow!(extbackup::chain(&e)))? {
        println!("{name}: failure acknowledged");
    } else if cfg.drive_by_name(name).is_none() && name != "extbackup" {
        // No failure in that slot, and no drive (or the shared `extbackup` slot) of that
        // name: a mistyped name must not look acknowledged.
        bail!(UsageError(format!(
            "no configured drive and no failed LED slot named {name}"
        )));
    } else {
        println!("{name}: no failure to acknowledge");
    }
    Ok(0)
}
