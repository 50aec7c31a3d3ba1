//! `extbackup generate-assets DIR` (hidden): man pages, completions and units for the package.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

use extbackup::config::{self};

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// Where: DIR/man, DIR/completions, DIR/systemd.
    dir: PathBuf,
}

/// The man pages (one per command, from the clap definition), the completions and the
/// units that `extbackup install` writes that do not depend on the configuration.
pub(crate) fn exec(a: &Args) -> Result<u8> {
    let dir = a.dir.as_path();
    use clap::CommandFactory;
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    let cmd = super::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man).context("writing the man pages")?;
    let comp = dir.join("completions");
    std::fs::create_dir_all(&comp)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "extbackup", &comp)
            .context("writing the completions")?;
    }
    let sd = dir.join("systemd");
    let paths = extbackup::system::install::InstallPaths {
        udev_dir: dir.join("unused"),
        systemd_dir: sd.clone(),
        binary: extbackup::system::install::PACKAGED_BINARY.into(),
        config: config::DEFAULT_PATH.into(),
        packaged: true,
        shared: vec![extbackup::system::install::DEFAULT_SLOTS_DIR.into()],
        // The default state folder and mount root; `extbackup install` adds drop-ins for
        // other ones.
        ..extbackup::system::install::InstallPaths::default()
    };
    // The rule names the drives (from the configuration): `extbackup install` writes it.
    let placeholder = [("placeholder", "00000000-0000-4000-8000-000000000000")];
    let files = extbackup::system::install::render(&placeholder, &paths)?;
    let units: Vec<_> = files
        .into_iter()
        .filter(|(p, _)| p.starts_with(&sd))
        .collect();
    extbackup::system::install::write(&units)?;
    Ok(0)
}
