//! `extbackup mount`: open a drive read-only and mount it for browsing.

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

use extbackup::drive::browse;
use extbackup::run::backends;

use crate::commands::util::{
    ask_passphrase, failure, known_drive, load_or_default, opener, UsageError,
};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct DriveSelect {
    /// The drive's name (configured, or as `extbackup mount` printed it).
    name: Option<String>,
    /// The drive's LUKS device (default for a configured drive: /dev/disk/by-uuid/UUID).
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// Open with the recovery passphrase (from the terminal, 3 tries; or one line on stdin)
    /// instead of the key file.
    #[arg(long)]
    passphrase: bool,
}

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    drive: DriveSelect,
    /// Mount here instead of MOUNT_ROOT/browse-NAME.
    #[arg(long, value_name = "DIR")]
    at: Option<PathBuf>,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (cfg, _) = load_or_default(cli)?;
    let crypt = backends::crypt(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let mounter = backends::mounter(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let d = &a.drive;
    if d.name.is_none() && d.device.is_none() {
        bail!(UsageError("name a drive or give --device DEV".into()));
    }
    if let Some(name) = d.name.as_deref() {
        known_drive(&cfg, name, d.device.as_deref())?;
    }
    let drive = browse::resolve(&cfg, crypt.as_ref(), d.name.as_deref(), d.device.as_deref())
        .map_err(failure)?;
    let at =
        a.at.clone()
            .unwrap_or_else(|| browse::default_mount_point(&cfg, &drive.name));
    let at = std::path::absolute(&at).with_context(|| format!("resolving {}", at.display()))?;
    let name = drive.name.clone();
    let mounted = browse::mount(
        crypt.as_ref(),
        mounter.as_ref(),
        &drive,
        &at,
        &opener(d.passphrase),
        &mut ask_passphrase(&name),
    )
    .map_err(failure)?;
    println!(
        "drive {name} ({}) is mounted READ-ONLY at {}; the backup is under {}\n\
         `extbackup unmount {name}` closes it",
        drive.device.display(),
        at.display(),
        extbackup::drive::history::copy_root(&at, None)
            .unwrap_or_else(|_| at.join(extbackup::drive::layout::DATA_DIR))
            .display()
    );
    if mounted.journal_not_replayed {
        println!("NOTE: {}", browse::NOLOAD_NOTE);
    }
    let gens = extbackup::drive::history::generations_at(&at);
    if let Ok(list) = gens.list() {
        if list.len() > 1 {
            println!(
                "{} generations, every one a full copy: {}/<date>/ (`extbackup history {name}` lists them)",
                list.len(),
                gens.dir().display()
            );
        }
    }
    Ok(0)
}
