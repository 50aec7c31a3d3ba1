//! `extbackup restore`: copy files or folders from a drive back, with full metadata.

use anyhow::Result;
use clap::Args as ClapArgs;
use std::path::PathBuf;

use extbackup::drive::restore;

use crate::commands::util::{failure, load_or_default, usage, with_drive_view};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's name.
    name: String,
    /// What to restore, as paths in the source (`/` for everything).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The folder to restore into (created if missing).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Replace files that exist in DIR.
    #[arg(long)]
    overwrite: bool,
    /// Restore from the generation made at or before DATE (UTC: 2026-11-27,
    /// 2026-11-27T15:30, or a name from `extbackup history`); the newest by default.
    #[arg(long, value_name = "DATE")]
    at: Option<String>,
    /// The drive's LUKS device.
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// Open with the recovery passphrase instead of the key file.
    #[arg(long)]
    passphrase: bool,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (cfg, has_config) = load_or_default(cli)?;
    let sources = if has_config { cfg.sources() } else { vec![] };
    let req = restore::RestoreRequest {
        paths: a.paths.clone(),
        to: a.to.clone(),
        overwrite: a.overwrite,
    };
    // Path errors are usage errors (exit 2), found before the drive is opened when they can be.
    restore::check_request(&req, &sources, &cfg.mount_root).map_err(usage)?;
    with_drive_view(&cfg, &a.name, a.device.as_deref(), a.passphrase, |view| {
        let from = view.data_at(a.at.as_deref()).map_err(failure)?;
        restore::check_paths_in_copy(&from, &sources, &req).map_err(usage)?;
        let r = restore::restore(&from, view.mount_point(), &sources, &req).map_err(failure)?;
        let generation = from.file_name().unwrap_or_default().to_string_lossy();
        for (rel, dest) in &r.items {
            if rel.as_os_str().is_empty() {
                println!(
                    "restored everything (the whole copy, {generation}) into {}",
                    dest.display()
                );
            } else {
                println!(
                    "restored {} ({generation}) to {}",
                    rel.display(),
                    dest.display()
                );
            }
        }
        let check =
            extbackup::drive::manifests::check_restored(view.mount_point(), &from, &r.items);
        Ok(report_check(&check))
    })
}

/// Says how the restored files compare with the drive's manifest; exit 1 when any differs.
fn report_check(c: &extbackup::drive::manifests::RestoreCheck) -> u8 {
    for m in &c.mismatched {
        eprintln!("extbackup: error: restored file {m}");
    }
    if !c.has_manifest && c.mismatched.is_empty() {
        println!(
            "not checked: the generation restored from has no manifest (made before manifests)"
        );
        return 0;
    }
    println!(
        "checked against the drive's manifest: {} file(s) verified, {} mismatched{}",
        c.verified,
        c.mismatched.len(),
        if c.unlisted > 0 {
            format!(", {} not in the manifest", c.unlisted)
        } else {
            String::new()
        }
    );
    if c.mismatched.is_empty() {
        0
    } else {
        1
    }
}
