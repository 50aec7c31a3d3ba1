//! `extbackup versions`: every version of a file across a drive's generations.

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

use extbackup::drive::{manifests, restore};

use crate::commands::util::{failure, load_or_default, BareDrive, UsageError};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's name.
    name: String,
    /// The file, as in the source (relative, or absolute under a configured source; with
    /// named sources relative paths start with the source's name), as for `restore`.
    path: PathBuf,
    /// Print a JSON list of objects (generation, size, mtime, mtime_utc, sha256, inode,
    /// shared_with).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: BareDrive,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (cfg, has_config) = load_or_default(cli)?;
    let sources = if has_config { cfg.sources() } else { vec![] };
    let rel = restore::relative_in_copy(&a.path, &sources)
        .map_err(|e| UsageError(extbackup::chain(&e)))?;
    if rel.as_os_str().is_empty() {
        bail!(UsageError("name a file, not the whole copy".into()));
    }
    let (list, without) = a.open.view(&cfg, &a.name, |view| {
        manifests::versions(view.mount_point(), &rel).map_err(failure)
    })?;
    if !without.is_empty() {
        tracing::warn!(
            "{} tree(s) have no manifest and are not searched: {}",
            without.len(),
            without.join(", ")
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if list.is_empty() {
        println!("{} is in no manifest of drive {}", rel.display(), a.name);
        return Ok(1);
    }
    println!(
        "{}: {} version(s) on drive {} (`restore --at GENERATION` fetches one)",
        rel.display(),
        distinct(&list),
        a.name
    );
    println!(
        "{:<20} {:>12} {:<24} {:<16} shared with",
        "generation", "size", "modified (UTC)", "sha256"
    );
    for v in &list {
        let others: Vec<&str> = v
            .shared_with
            .iter()
            .filter(|g| **g != v.generation)
            .map(String::as_str)
            .collect();
        println!(
            "{:<20} {:>12} {:<24} {:<16} {}",
            v.generation,
            v.size,
            v.mtime_utc,
            &v.sha256[..16],
            if others.is_empty() {
                "-".to_string()
            } else {
                others.join(", ")
            }
        );
    }
    Ok(0)
}

/// How many different contents the versions hold.
fn distinct(list: &[manifests::Version]) -> usize {
    let mut seen: Vec<&str> = list.iter().map(|v| v.sha256.as_str()).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}
