//! `extbackup config check`: validate the configuration and say what it contains.

use anyhow::Result;
use clap::Subcommand;

use crate::commands::util::{load, UsageError};
use crate::commands::Cli;

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Validate the configuration (key files and their permissions, and that the folders,
    /// files and programs it names exist) and say what it contains.
    Check,
}

pub(crate) fn check(cli: &Cli) -> Result<u8> {
    let cfg = load(cli)?;
    cfg.check_key_files()
        .map_err(|e| UsageError(extbackup::chain(&e)))?;
    let missing = cfg.missing_named_paths();
    if !missing.is_empty() {
        return Err(UsageError(format!(
            "{}: names what is not on this machine:\n  - {}",
            cli.config.display(),
            missing.join("\n  - ")
        ))
        .into());
    }
    println!("{}: valid", cli.config.display());
    print!("{}", cfg.summary());
    Ok(0)
}

pub(crate) fn exec(cli: &Cli, command: &ConfigCommand) -> Result<u8> {
    match command {
        ConfigCommand::Check => check(cli),
    }
}
