//! `extbackup uninstall`: remove what `install` wrote (the same as `install --uninstall`).

use anyhow::Result;

use crate::commands::Cli;

pub(crate) fn exec(cli: &Cli) -> Result<u8> {
    super::install::exec(
        cli,
        &super::install::Args {
            print: false,
            uninstall: true,
            root: None,
            binary: None,
        },
    )
}
