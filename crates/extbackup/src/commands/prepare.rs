//! `extbackup prepare`: erase a new disk and make it a backup drive.

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use std::io::IsTerminal;
use std::path::PathBuf;

use extbackup::config::Config;
use extbackup::drive::{prepare, recovery};
use extbackup::run::backends;

use crate::commands::util::{confirm, failure, UsageError};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The disk to erase, e.g. /dev/sdX.
    device: PathBuf,
    /// The drive's name (letters, digits, `-`, `_`), e.g. offsite-a.
    #[arg(long)]
    name: String,
    /// Make a GPT with one partition and put LUKS on it (otherwise LUKS on the whole device).
    #[arg(long)]
    partition: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Where the key file and the LUKS header backup go.
    #[arg(long, default_value = prepare::DEFAULT_KEYS_DIR, value_name = "DIR")]
    keys_dir: PathBuf,
    /// Mount the drive here during runs instead of MOUNT_ROOT/NAME.
    #[arg(long, value_name = "DIR")]
    mount_point: Option<PathBuf>,
    /// Take the recovery passphrase from the first line of FILE (by default one is
    /// generated and shown once on the terminal).
    #[arg(long, value_name = "FILE", conflicts_with = "no_recovery_passphrase")]
    recovery_passphrase_file: Option<PathBuf>,
    /// No recovery passphrase: the drive then opens ONLY with the key file on this machine.
    #[arg(long)]
    no_recovery_passphrase: bool,
    /// The filesystem: ext4 (generations as hard-link trees) or btrfs (generations as
    /// read-only snapshots; needs btrfs-progs).
    #[arg(long, value_name = "FS", default_value = "ext4", value_parser = ["ext4", "btrfs"])]
    fs: String,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    // The crypt backend and the state folder come from the configuration when it exists.
    let cfg_text = extbackup::config::read_file(&cli.config).ok();
    let cfg = match &cfg_text {
        Some(t) => Config::parse(t).map_err(|e| {
            UsageError(format!(
                "{}: {}",
                cli.config.display(),
                extbackup::chain(&e)
            ))
        })?,
        None => Config::without_source(),
    };
    let given = given_recovery(a)?;
    let disks = backends::disks();
    disks
        .check_unused(&a.device)
        .map_err(|e| UsageError(extbackup::chain(&e)))?;
    if !a.yes && !confirm_erase(a, &disks.describe_device(&a.device))? {
        eprintln!("extbackup: nothing done");
        return Ok(1);
    }
    let Some(recovery) = recovery_choice(a, given)? else {
        eprintln!("extbackup: the recovery passphrase was not confirmed: nothing done");
        return Ok(1);
    };
    let crypt = backends::crypt(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let p = prepare::prepare(
        crypt.as_ref(),
        disks.as_ref(),
        &prepare::PrepareOptions {
            device: a.device.clone(),
            name: a.name.clone(),
            partition: a.partition,
            keys_dir: a.keys_dir.clone(),
            config_path: cli.config.clone(),
            mount_point: a.mount_point.clone(),
            recovery,
            fs: if a.fs == "btrfs" {
                prepare::Filesystem::Btrfs
            } else {
                prepare::Filesystem::Ext4
            },
        },
    )
    .with_context(|| format!("preparing {}", a.device.display()))?;
    if let Err(e) = recovery::note(&cfg.state_dir, &a.name, p.recovery_passphrase) {
        tracing::warn!("noting the recovery passphrase in the state directory: {e}");
    }
    print_prepared(cli, a, &p, cfg_text.is_none());
    Ok(0)
}

/// The recovery passphrase decision given on the command line, if any.
pub(crate) fn given_recovery(a: &Args) -> Result<Option<recovery::RecoveryChoice>> {
    Ok(
        match (&a.recovery_passphrase_file, a.no_recovery_passphrase) {
            (Some(f), _) => Some(recovery::RecoveryChoice::Passphrase(
                recovery::read_passphrase_file(f).map_err(|e| UsageError(e.chain().join(": ")))?,
                recovery::kdf_from_env(),
            )),
            (None, true) => Some(recovery::RecoveryChoice::None),
            (None, false) => None,
        },
    )
}

/// Asks on the terminal before `prepare` erases `what`; refuses without a terminal.
pub(crate) fn confirm_erase(a: &Args, what: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(format!(
            "refusing to erase {what} without confirmation: run on a terminal or pass --yes"
        )));
    }
    confirm(&format!(
        "This ERASES everything on {what} and makes it backup drive {:?}. Type `yes` to go on:",
        a.name
    ))
}

/// The recovery passphrase: the one given, else a generated one shown on the terminal
/// and confirmed (`None`: not confirmed).
pub(crate) fn recovery_choice(
    a: &Args,
    given: Option<recovery::RecoveryChoice>,
) -> Result<Option<recovery::RecoveryChoice>> {
    if given.is_some() {
        return Ok(given);
    }
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(
            "refusing to prepare without a recovery passphrase decision: there is no \
             terminal to show a generated one on; pass --recovery-passphrase-file FILE \
             (the passphrase on its first line) or --no-recovery-passphrase (the drive then \
             opens only with the key file on this machine)"
                .into()
        ));
    }
    let pass = recovery::generate_passphrase().map_err(failure)?;
    if !recovery::show_and_confirm(&a.name, &pass).map_err(failure)? {
        return Ok(None);
    }
    Ok(Some(recovery::RecoveryChoice::Passphrase(
        pass,
        recovery::kdf_from_env(),
    )))
}

pub(crate) fn print_prepared(cli: &Cli, a: &Args, p: &prepare::Prepared, new_config: bool) {
    println!(
        "prepared {} as backup drive {}:\n  LUKS UUID {}\n  key file {}\n  LUKS header backup {} (keep a copy off this machine too)\n  LUKS label {}, filesystem label {}\n  added to {}",
        p.luks_device.display(),
        a.name,
        p.uuid,
        p.key_file.display(),
        p.header_backup.display(),
        p.label,
        a.name.chars().take(16).collect::<String>(),
        cli.config.display()
    );
    if p.recovery_passphrase {
        println!("  recovery passphrase: in a second keyslot (argon2id); see docs/restore.md");
    } else {
        println!(
            "  WARNING: no recovery passphrase: without the key file {} this drive cannot be \
             opened (e.g. when the NAS is lost); `extbackup recovery add {}` adds one",
            p.key_file.display(),
            a.name
        );
    }
    if new_config {
        println!(
            "{} is new: set `source = ...` in it before the first run",
            cli.config.display()
        );
    }
    println!("next: {}", prepare_next_step(cli, a));
}

/// What to do after `prepare`: with the rule installed, nothing but plugging in (the rule
/// matches every LUKS drive; `run` decides from the configuration), unless the drive's own
/// mount point is one the installed unit may not write.
pub(crate) fn prepare_next_step(cli: &Cli, a: &Args) -> String {
    use extbackup::system::install;
    let rule = std::path::Path::new("/etc/udev/rules.d").join(install::RULE_FILE);
    let unit = std::path::Path::new("/etc/systemd/system").join(install::SERVICE_TEMPLATE);
    if !rule.exists() {
        return format!(
            "run `extbackup --config {} install` so that plugging the drive in starts the \
             backup (or `extbackup run --device DEVICE` now)",
            cli.config.display()
        );
    }
    let unit_text = std::fs::read_to_string(&unit).unwrap_or_default();
    if let Some(mp) = &a.mount_point {
        let covered = unit_text.lines().any(|l| {
            l.strip_prefix("ReadWritePaths=-")
                .is_some_and(|p| mp.starts_with(p.trim_matches('"')))
        });
        if !covered {
            return format!(
                "run `extbackup --config {} install` again: the backup unit may not write \
                 the new mount point {} yet",
                cli.config.display(),
                mp.display()
            );
        }
    }
    "unplug the drive and plug it in again: the installed rule starts the backup by itself \
     (no new `install` needed)"
        .into()
}
