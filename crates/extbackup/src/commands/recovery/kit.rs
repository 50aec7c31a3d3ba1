//! `extbackup recovery kit`: write a drive's recovery kit.

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

use extbackup::drive::{browse, recovery};
use extbackup::run::backends;

use crate::commands::util::{failure, load, UsageError};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's name.
    name: String,
    /// The folder to write the kit into (created 0700).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Also copy the key file into the kit (it then opens the drive without passphrase).
    #[arg(long)]
    with_key_file: bool,
    /// The drive's LUKS device (default: /dev/disk/by-uuid/UUID).
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (name, to, with_key_file, device) = (
        a.name.as_str(),
        a.to.as_path(),
        a.with_key_file,
        a.device.as_deref(),
    );
    let cfg = load(cli)?;
    let crypt = backends::crypt(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let Some(d) = cfg.drive_by_name(name) else {
        bail!(UsageError(format!(
            "no drive named {name} in {}",
            cli.config.display()
        )));
    };
    let drive = browse::resolve(&cfg, crypt.as_ref(), Some(name), device).map_err(failure)?;
    let kit = recovery::write_kit(
        crypt.as_ref(),
        &drive,
        to,
        with_key_file.then_some(d.key_file.as_path()),
    )
    .map_err(failure)?;
    for f in &kit.files {
        println!("wrote {}", f.display());
    }
    if with_key_file {
        println!(
            "WARNING: this kit holds the key file: it opens drive {name} by itself. Keep it as \
             safe as the backup's contents, and away from the drive."
        );
    }
    Ok(0)
}
