//! `extbackup ack`: acknowledge a failure shown on the shared LED.

use anyhow::Result;
use clap::Args as ClapArgs;

use extbackup::run::backends;

use crate::commands::util::load;
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
    } else {
        println!("{name}: no failure to acknowledge");
    }
    Ok(0)
}
