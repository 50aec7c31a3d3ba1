//! `extbackup history`: list a drive's generations.

use anyhow::Result;
use clap::Args as ClapArgs;
use std::path::PathBuf;

use crate::commands::util::{failure, load_or_default, with_drive_view};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's name.
    name: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The drive's LUKS device.
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// Open with the recovery passphrase instead of the key file.
    #[arg(long)]
    passphrase: bool,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (cfg, _) = load_or_default(cli)?;
    let list = with_drive_view(&cfg, &a.name, a.device.as_deref(), a.passphrase, |view| {
        extbackup::drive::history::list(view.mount_point()).map_err(failure)
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", extbackup::drive::history::render(&a.name, &list));
    }
    Ok(0)
}
