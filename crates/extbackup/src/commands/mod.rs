//! The command line: [`Cli`] and one module per subcommand, each with its own arguments
//! (`Args`) and an `exec` that does the work through the library (cargo's and jj's
//! `commands/` shape). What several commands share is in [`util`]. `main.rs` only
//! dispatches.
//!
//! May use everything in the library; nothing in the library uses this.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub(crate) mod ack;
pub(crate) mod check;
pub(crate) mod config;
pub(crate) mod generate_assets;
pub(crate) mod history;
pub(crate) mod install;
pub(crate) mod mount;
pub(crate) mod notify_failure;
pub(crate) mod prepare;
pub(crate) mod recovery;
pub(crate) mod restore;
pub(crate) mod run;
pub(crate) mod scrub;
pub(crate) mod status;
pub(crate) mod uninstall;
pub(crate) mod unmount;
pub(crate) mod util;
pub(crate) mod verify;
pub(crate) mod versions;
pub(crate) mod watch;

#[derive(Parser, Debug)]
#[command(
    name = "extbackup",
    version,
    about = "Off-site backups onto rotating LUKS USB drives, with a status LED",
    long_about = "Plug in a prepared backup drive; extbackup identifies it (configured UUID, \
matching LUKS header and a key file that opens it), unlocks it, checks and mounts the \
filesystem, copies the source onto it under the source lock, records the run, unmounts and \
closes it. The LED shows working, then green (safe to remove) or red (a mail says why).\n\n\
Start with `extbackup prepare /dev/sdX --name offsite-a`, then `extbackup install` so that \
plugging the drive in starts `extbackup run`.",
    after_help = "Exit codes: 0 done; 75 not a configured drive, skipped; 1 failure; 2 usage or configuration error.\n\
Configuration: see docs/configuration.md. Operations (LED states, mail): docs/operations.md."
)]
pub(crate) struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = extbackup::config::DEFAULT_PATH, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Less log output (warnings and errors only).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Write the man pages, shell completions and the config-independent systemd units
    /// into DIR (what `cargo xtask deb` packages).
    #[command(hide = true)]
    GenerateAssets(generate_assets::Args),
    /// Back up onto one drive now (what the udev rule starts on plug-in).
    #[command(
        long_about = "Runs the pipeline for one drive: identify, run lock, unlock, fsck, mount, \
source lock, free-space check, sync, record, unmount, close. On a failure everything done so \
far is undone in reverse, the LED turns red and one mail names the failed step.\n\n\
A drive that is not configured is left untouched and the exit code is 75."
    )]
    Run(run::Args),
    /// Wait for configured drives and back each up as it appears (systems without systemd).
    Watch,
    /// Erase a new disk and make it a backup drive (LUKS2, key file, ext4, config entry).
    #[command(
        long_about = "Prepares a new backup drive in one go, after a confirmation naming the \
device: optional GPT with one partition (--partition), LUKS2 with a new random 4096-byte key \
file stored 0400 in the keys folder, the LUKS header backup beside it, ext4 with a label, and \
a [[drive]] table appended to the configuration file (your comments are kept).\n\n\
A mounted device, or one with mounted partitions, is refused."
    )]
    Prepare(prepare::Args),
    /// Install (or print, or remove) the udev rule, the systemd unit and the check timer.
    Install(install::Args),
    /// Remove what `install` wrote (the same as `install --uninstall`).
    Uninstall,
    /// Show the last success, its age and the last failure of every drive (a run killed
    /// before it could tell its end is recorded and told first).
    Status(status::Args),
    /// Mail a reminder when any drive's last good backup is too old (run by a timer).
    Check(check::Args),
    /// Acknowledge a failure shown on the shared LED (it stays red until then, or until
    /// that drive's next good run).
    #[command(
        long_about = "Acknowledges the failure of the slot NAME (a drive's name, or a job's \
from `blinkstick --slot NAME`) on the shared LED and redraws it: the LED then shows the \
most severe remaining state of all jobs (failure > attention > working > success), or goes \
off."
    )]
    Ack(ack::Args),
    /// Report a backup unit that failed without reporting itself (run by
    /// extbackup-failed@UUID.service through OnFailure=): red LED, mail, stale mapping closed.
    #[command(hide = true)]
    NotifyFailure(notify_failure::Args),
    /// Configuration file commands.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// The recovery passphrase and kit (opening a drive without the NAS).
    Recovery {
        #[command(subcommand)]
        command: recovery::RecoveryCommand,
    },
    /// Open a drive READ-ONLY and mount it for browsing (key file, or --passphrase).
    #[command(
        long_about = "Unlocks a backup drive read-only, with its key file or (--passphrase) \
the recovery passphrase, and mounts it read-only (at MOUNT_ROOT/browse-NAME unless --at). \
The copy of the source is under generations/DATE/, one full copy per run (a drive with \
history = false: under data/). Works without a configuration when given --device and \
--passphrase (the NAS is gone: see docs/restore.md). A filesystem whose journal needs \
replaying (the drive was unplugged while mounted) is mounted with noload, which writes \
nothing, and said so. While a drive is mounted this way a plug-in run of it does not start. \
`extbackup unmount NAME` closes it."
    )]
    Mount(mount::Args),
    /// Unmount and close a drive opened by `extbackup mount`.
    Unmount(unmount::Args),
    /// Copy files or folders from a drive back, with full metadata.
    #[command(
        long_about = "Copies PATHs (as in the source: relative, or absolute under it; `/` for \
everything) from the drive's copy (the newest generation, or the one --at names) into DIR \
with rsync -aHAXS --numeric-ids (owners, modes, times, hard links, ACLs, xattrs, sparse \
files). Each PATH lands in DIR/BASENAME; `/` puts the whole copy's contents into DIR itself. \
Prints where each PATH went. Nothing in DIR is replaced without --overwrite: without it \
a restore that would replace a file copies nothing and lists the files. DIR may not be inside \
the source or the drive. Uses the drive's `extbackup mount` when there is one, else opens it \
read-only for the copy.\n\n\
Then every restored file is read back and compared with the SHA-256 in the drive's manifest \
of that generation: it says how many were verified and how many mismatched; a mismatch is an \
error (exit 1)."
    )]
    Restore(restore::Args),
    /// Compare a drive's copy with the source (metadata, and content by SHA-256).
    #[command(
        long_about = "Compares every entry's metadata (type, mode, owner, size, mtime, symlink \
target) and the content of regular files by SHA-256: all files with --full, a random share \
with --sample PERCENT (10% by default). Lists what differs, what is missing on the drive and \
what is extra on it. It needs the NAS's source and configuration. Exit 0 when clean, 1 on \
differences. The result is recorded and shown by `status`. Run it right after a backup: what \
changed in the source since shows as a difference."
    )]
    Verify(verify::Args),
    /// Re-read a drive and check every file against the drive's own manifests (no NAS, no
    /// configuration needed).
    #[command(
        long_about = "Opens the drive read-only (or uses its `extbackup mount`) with the configured \
key file, --key-file FILE or --passphrase; on a bare machine, with no configuration at all, \
name its device with --device DEV. It re-reads its files and \
compares each with the SHA-256 that the drive's manifest (.extbackup/manifests/, written by \
every run) recorded for it. Names every file that is missing, changed or unreadable, and for a \
file shared by several generations (hard-linked) every generation that holds it. A shared \
file is read once. --sample PERCENT reads a random share. Exit 0 when clean, 1 on \
differences. `verify` compares the drive with the NAS's source; `scrub` needs neither the \
source nor the NAS. `[policy] scrub_share = N` scrubs a rotating 1/N of the drive at every run."
    )]
    Scrub(scrub::Args),
    /// List every version of a file across a drive's generations (from the manifests).
    #[command(
        long_about = "Reads the drive's manifests (no tree is walked) and lists every \
generation holding PATH: its size, modification time, SHA-256, and which generations share \
that very file (hard-linked: unchanged between them). `extbackup restore NAME PATH --at \
GENERATION --to DIR` fetches one. On a bare machine, with no configuration: --device DEV \
and --key-file FILE or --passphrase."
    )]
    Versions(versions::Args),
    /// List a drive's generations (date, files, size, bytes new in each).
    #[command(
        long_about = "Opens the drive read-only (or uses its `extbackup mount`) and lists its \
dated generations, oldest first: the date (UTC), the entries, the size, and the bytes new in \
that generation (not shared with the one before). `restore --at DATE` copies from one."
    )]
    History(history::Args),
}
