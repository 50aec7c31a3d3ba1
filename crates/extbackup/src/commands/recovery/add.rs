//! `extbackup recovery add`: add a recovery passphrase keyslot to a prepared drive.

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use std::io::IsTerminal;
use std::path::PathBuf;

use extbackup::drive::{browse, recovery};
use extbackup::run::backends;

use crate::commands::util::{failure, load, UsageError};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's name.
    name: String,
    /// The drive's LUKS device (default: /dev/disk/by-uuid/UUID).
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// Take the passphrase from the first line of FILE instead of generating one.
    #[arg(long, value_name = "FILE")]
    recovery_passphrase_file: Option<PathBuf>,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (name, device, file) = (
        a.name.as_str(),
        a.device.as_deref(),
        a.recovery_passphrase_file.as_deref(),
    );
    let cfg = load(cli)?;
    let crypt = backends::crypt(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    if cfg.drive_by_name(name).is_none() {
        bail!(UsageError(format!(
            "no drive named {name} in {}",
            cli.config.display()
        )));
    }
    let drive = browse::resolve(&cfg, crypt.as_ref(), Some(name), device).map_err(failure)?;
    let key_file = drive.config.as_ref().expect("configured").key_file.clone();
    let pass = match file {
        Some(f) => {
            recovery::read_passphrase_file(f).map_err(|e| UsageError(e.chain().join(": ")))?
        }
        None if !std::io::stdin().is_terminal() => bail!(UsageError(
            "no terminal to show a generated recovery passphrase on: pass \
             --recovery-passphrase-file FILE"
                .into()
        )),
        None => {
            let pass = recovery::generate_passphrase().map_err(failure)?;
            if !recovery::show_and_confirm(name, &pass).map_err(failure)? {
                eprintln!("extbackup: the recovery passphrase was not confirmed: nothing done");
                return Ok(1);
            }
            pass
        }
    };
    let slot = recovery::add(
        crypt.as_ref(),
        &drive.device,
        &key_file,
        &pass,
        recovery::kdf_from_env(),
    )
    .map_err(failure)?;
    if let Err(e) = recovery::note(&cfg.state_dir, name, true) {
        tracing::warn!("noting the recovery passphrase in the state directory: {e}");
    }
    println!("drive {name}: recovery passphrase added in keyslot {slot}");
    // The header backup on this machine lacks the new slot: refresh it.
    let hb = recovery::header_backup_path(drive.config.as_ref().expect("configured"));
    if hb.exists() {
        recovery::refresh_header_backup(crypt.as_ref(), &drive.device, &hb).map_err(failure)?;
        println!("refreshed the LUKS header backup {}", hb.display());
    }
    Ok(0)
}
