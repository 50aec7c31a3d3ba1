//! `extbackup unmount`: unmount and close a drive opened by `extbackup mount`.

use anyhow::{bail, Result};
use clap::Args as ClapArgs;

use extbackup::drive::browse;
use extbackup::run::backends;

use crate::commands::util::{failure, load_or_default, UsageError};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's name, as `extbackup mount` printed it.
    name: String,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let name = &a.name;
    let (cfg, _) = load_or_default(cli)?;
    let crypt = backends::crypt(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let mounter = backends::mounter(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    if browse::unmount(crypt.as_ref(), mounter.as_ref(), name).map_err(failure)? {
        println!("drive {name}: unmounted and closed");
        Ok(0)
    } else if cfg.drive_by_name(name).is_none() {
        // Neither open nor configured: a mistyped name.
        bail!(UsageError(format!(
            "no drive named {name} is open for browsing, and none is configured"
        )))
    } else {
        eprintln!("extbackup: drive {name} is not open for browsing");
        Ok(1)
    }
}
