//! `extbackup recovery add|kit`: the recovery passphrase and kit (opening a drive without
//! the NAS).

use anyhow::Result;
use clap::Subcommand;

use crate::commands::Cli;

pub(crate) mod add;
pub(crate) mod kit;

#[derive(Subcommand, Debug)]
pub(crate) enum RecoveryCommand {
    /// Add a recovery passphrase keyslot to a prepared drive (plugged in; opened with its key file).
    Add(add::Args),
    /// Write a drive's recovery kit: LUKS header backup, UUID and labels, RESTORE.txt.
    #[command(
        long_about = "Writes into DIR what opens the drive on any Linux machine without the NAS: \
the LUKS header backup (NAME.luks-header), and RESTORE-NAME.txt with the UUID, the labels and \
the exact cryptsetup and mount commands. Keep it away from the NAS (a USB stick in a drawer, \
a printout of RESTORE.txt). --with-key-file adds the key file: the kit then opens the drive \
by itself."
    )]
    Kit(kit::Args),
}

pub(crate) fn exec(cli: &Cli, command: &RecoveryCommand) -> Result<u8> {
    match command {
        RecoveryCommand::Add(a) => add::exec(cli, a),
        RecoveryCommand::Kit(a) => kit::exec(cli, a),
    }
}
