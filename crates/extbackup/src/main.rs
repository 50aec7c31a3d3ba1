//! The `extbackup` command (thin: the work is in the library).
//!
//! Exit codes: 0 done; 75 the drive is not ours, skipped; 1 failure; 2 usage or
//! configuration error.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use extbackup::config::{self, Config};
use extbackup::logcapture::LogCapture;
use extbackup::pipeline::{Pipeline, RunOptions, RunOutcome, Target};
use extbackup::progress::JsonEvents;
use extbackup::{backends, browse, prepare, recovery, restore, state, status, verify};

/// Exit code: the drive is not a configured one; skipped (borgmatic's "soft failure").
const EXIT_NOT_OURS: u8 = 75;
/// Exit code: a usage or configuration error.
const EXIT_USAGE: u8 = 2;

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
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = config::DEFAULT_PATH, value_name = "FILE")]
    config: PathBuf,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log output (warnings and errors only).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the man pages, shell completions and the config-independent systemd units
    /// into DIR (what `cargo xtask deb` packages).
    #[command(hide = true)]
    GenerateAssets {
        /// Where: DIR/man, DIR/completions, DIR/systemd.
        dir: PathBuf,
    },
    /// Back up onto one drive now (what the udev rule starts on plug-in).
    #[command(
        long_about = "Runs the pipeline for one drive: identify, run lock, unlock, fsck, mount, \
source lock, free-space check, sync, record, unmount, close. On a failure everything done so \
far is undone in reverse, the LED turns red and one mail names the failed step.\n\n\
A drive that is not configured is left untouched and the exit code is 75."
    )]
    Run(RunArgs),
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
    Prepare(PrepareArgs),
    /// Install (or print, or remove) the udev rule, the systemd unit and the check timer.
    Install(InstallArgs),
    /// Remove what `install` wrote (the same as `install --uninstall`).
    Uninstall,
    /// Show the last success, its age and the last failure of every drive.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mail a reminder when any drive's last good backup is too old (run by a timer).
    Check {
        /// The limit in days; `policy.reminder_age_days` from the configuration by default.
        #[arg(long, value_name = "DAYS")]
        max_age: Option<u32>,
    },
    /// Acknowledge a failure shown on the shared LED (it stays red until then, or until
    /// that drive's next good run).
    #[command(
        long_about = "Acknowledges the failure of the slot NAME (a drive's name, or a job's \
from `blinkstick --slot NAME`) on the shared LED and redraws it: the LED then shows the \
most severe remaining state of all jobs (failure > attention > working > success), or goes \
off."
    )]
    Ack {
        /// The drive (slot) whose failure to acknowledge.
        name: String,
    },
    /// Report a backup unit that failed without reporting itself (run by
    /// extbackup-failed@UUID.service through OnFailure=): red LED, mail, stale mapping closed.
    #[command(hide = true)]
    NotifyFailure {
        /// The drive's LUKS UUID (the unit's instance).
        #[arg(long, value_name = "UUID")]
        uuid: String,
        /// The unit that failed.
        #[arg(long, value_name = "UNIT")]
        unit: Option<String>,
    },
    /// Configuration file commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The recovery passphrase and kit (opening a drive without the NAS).
    Recovery {
        #[command(subcommand)]
        command: RecoveryCommand,
    },
    /// Open a drive READ-ONLY and mount it for browsing (key file, or --passphrase).
    #[command(
        long_about = "Unlocks a backup drive read-only, with its key file or (--passphrase) \
the recovery passphrase, and mounts it read-only (at MOUNT_ROOT/browse-NAME unless --at). \
The copy of the source is under data/. Works without a configuration when given --device \
and --passphrase (the NAS is gone: see docs/restore.md). While a drive is mounted this way \
a plug-in run of it does not start. `extbackup unmount NAME` closes it."
    )]
    Mount(MountArgs),
    /// Unmount and close a drive opened by `extbackup mount`.
    Unmount {
        /// The drive's name, as `extbackup mount` printed it.
        name: String,
    },
    /// Copy files or folders from a drive back, with full metadata.
    #[command(
        long_about = "Copies PATHs (as in the source: relative, or absolute under it; `/` for \
everything) from the drive's copy into DIR with rsync -aHAX --numeric-ids (owners, modes, \
times, hard links, ACLs, xattrs). Nothing in DIR is replaced without --overwrite: without it \
a restore that would replace a file copies nothing and lists the files. DIR may not be inside \
the source or the drive. Uses the drive's `extbackup mount` when there is one, else opens it \
read-only for the copy."
    )]
    Restore(RestoreArgs),
    /// Compare a drive's copy with the source (metadata, and content by SHA-256).
    #[command(
        long_about = "Compares every entry's metadata (type, mode, owner, size, mtime, symlink \
target) and the content of regular files by SHA-256: all files with --full, a random share \
with --sample PERCENT (10% by default). Lists what differs, what is missing on the drive and \
what is extra on it. Exit 0 when clean, 1 on differences. The result is recorded and shown \
by `status`. Run it right after a backup: what changed in the source since shows as a \
difference."
    )]
    Verify(VerifyArgs),
    /// List a drive's generations (date, files, size, bytes new in each).
    #[command(
        long_about = "Opens the drive read-only (or uses its `extbackup mount`) and lists its \
dated generations, oldest first: the date (UTC), the entries, the size, and the bytes new in \
that generation (not shared with the one before). `restore --at DATE` copies from one."
    )]
    History(HistoryArgs),
}

#[derive(Args, Debug)]
struct HistoryArgs {
    /// The drive's name.
    name: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The drive's LUKS device.
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// Open with the recovery passphrase instead of the key file.
    #[arg(long)]
    passphrase: bool,
}

#[derive(Subcommand, Debug)]
enum RecoveryCommand {
    /// Add a recovery passphrase keyslot to a prepared drive (plugged in; opened with its key file).
    Add {
        /// The drive's name.
        name: String,
        /// The drive's LUKS device (default: /dev/disk/by-uuid/UUID).
        #[arg(long, value_name = "DEV")]
        device: Option<PathBuf>,
        /// Take the passphrase from the first line of FILE instead of generating one.
        #[arg(long, value_name = "FILE")]
        recovery_passphrase_file: Option<PathBuf>,
    },
    /// Write a drive's recovery kit: LUKS header backup, UUID and labels, RESTORE.txt.
    #[command(
        long_about = "Writes into DIR what opens the drive on any Linux machine without the NAS: \
the LUKS header backup (NAME.luks-header), and RESTORE-NAME.txt with the UUID, the labels and \
the exact cryptsetup and mount commands. Keep it away from the NAS (a USB stick in a drawer, \
a printout of RESTORE.txt). --with-key-file adds the key file: the kit then opens the drive \
by itself."
    )]
    Kit {
        /// The drive's name.
        name: String,
        /// The folder to write the kit into (created 0700).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Also copy the key file into the kit (it then opens the drive without passphrase).
        #[arg(long)]
        with_key_file: bool,
        /// The drive's LUKS device (default: /dev/disk/by-uuid/UUID).
        #[arg(long, value_name = "DEV")]
        device: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct DriveSelect {
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

#[derive(Args, Debug)]
struct MountArgs {
    #[command(flatten)]
    drive: DriveSelect,
    /// Mount here instead of MOUNT_ROOT/browse-NAME.
    #[arg(long, value_name = "DIR")]
    at: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RestoreArgs {
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

#[derive(Args, Debug)]
struct VerifyArgs {
    /// The drive's name.
    name: String,
    /// Compare the content of every file.
    #[arg(long, conflicts_with = "sample")]
    full: bool,
    /// Compare the content of about PERCENT % of the files, picked at random (default 10).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    sample: Option<f64>,
    /// The drive's LUKS device.
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// Open with the recovery passphrase instead of the key file.
    #[arg(long)]
    passphrase: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate the configuration (and key file permissions) and say what it contains.
    Check,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// The drive's LUKS UUID (as in /dev/disk/by-uuid; what the udev rule passes).
    #[arg(long, value_name = "UUID")]
    uuid: Option<String>,
    /// The drive's block device (its LUKS partition).
    #[arg(long, value_name = "PATH")]
    device: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Sync even when the guard refuses (e.g. more deletions than policy.max_delete_fraction).
    #[arg(long)]
    force: bool,
    /// Machine-readable progress: one JSON object per line on stdout (steps, copy
    /// progress, the result).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PrepareArgs {
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

#[derive(Args, Debug)]
struct InstallArgs {
    /// Print the files instead of writing them.
    #[arg(long, conflicts_with = "uninstall")]
    print: bool,
    /// Remove the installed files.
    #[arg(long)]
    uninstall: bool,
    /// Write everything below this staging folder instead of / (packagers, tests); runs
    /// no udevadm or systemctl.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The binary the units run. Default: this binary, or a copy of it at
    /// /usr/local/sbin/extbackup when it lies in a build or temporary folder.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let capture = LogCapture::default();
    init_logging(&cli, &capture);
    match dispatch(&cli, &capture) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.downcast_ref::<UsageError>().map_or(1, |_| EXIT_USAGE);
            error_line(&format!("extbackup: error: {e:#}"));
            ExitCode::from(code)
        }
    }
}

/// Marks an error as a usage or configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn init_logging(cli: &Cli, capture: &LogCapture) {
    let level = if cli.quiet {
        LevelFilter::WARN
    } else {
        match cli.verbose {
            0 => LevelFilter::INFO,
            1 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        }
    };
    let journal = extbackup::journal::stderr_is_journal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(extbackup::progress::LogWriter::new)
        .with_target(false)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    let fmt = if journal {
        // Under systemd: one line per event, its priority as an sd-daemon `<N>` prefix,
        // so `journalctl -p err` finds the failures.
        fmt.event_format(extbackup::journal::SdPrefix)
            .with_filter(level)
            .boxed()
    } else {
        fmt.with_filter(level).boxed()
    };
    let sub = tracing_subscriber::registry()
        .with(fmt)
        .with(capture.layer());
    let _ = tracing::subscriber::set_global_default(sub);
}

/// An error line on stderr (with the journal's error priority under systemd).
fn error_line(msg: &str) {
    eprintln!("{}{msg}", extbackup::journal::prefix(3));
}

fn load(cli: &Cli) -> Result<Config> {
    Config::load(&cli.config).map_err(|e| UsageError(extbackup::chain(&e)).into())
}

fn dispatch(cli: &Cli, capture: &LogCapture) -> Result<u8> {
    match &cli.command {
        Command::Run(a) => run_cmd(cli, a, capture),
        Command::Watch => watch(cli, capture),
        Command::Ack { name } => ack_cmd(cli, name),
        Command::Prepare(a) => prepare_cmd(cli, a),
        Command::Install(a) => install(cli, a),
        Command::GenerateAssets { dir } => generate_assets(dir),
        Command::Uninstall => install(
            cli,
            &InstallArgs {
                print: false,
                uninstall: true,
                root: None,
                binary: None,
            },
        ),
        Command::Status { json } => status_cmd(cli, *json),
        Command::Check { max_age } => check_cmd(cli, *max_age),
        Command::Recovery {
            command:
                RecoveryCommand::Add {
                    name,
                    device,
                    recovery_passphrase_file,
                },
        } => recovery_add(
            cli,
            name,
            device.as_deref(),
            recovery_passphrase_file.as_deref(),
        ),
        Command::Recovery {
            command:
                RecoveryCommand::Kit {
                    name,
                    to,
                    with_key_file,
                    device,
                },
        } => recovery_kit(cli, name, to, *with_key_file, device.as_deref()),
        Command::Mount(a) => mount_cmd(cli, a),
        Command::Unmount { name } => unmount_cmd(cli, name),
        Command::Restore(a) => restore_cmd(cli, a),
        Command::Verify(a) => verify_cmd(cli, a),
        Command::NotifyFailure { uuid, unit } => notify_failure(cli, uuid, unit.as_deref()),
        Command::History(a) => history_cmd(cli, a),
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check_cmd(cli),
    }
}

fn run_cmd(cli: &Cli, a: &RunArgs, capture: &LogCapture) -> Result<u8> {
    let cfg = load(cli)?;
    let target = match (&a.target.uuid, &a.target.device) {
        (Some(u), _) => Target::Uuid(u.clone()),
        (None, Some(d)) => Target::Device(d.clone()),
        (None, None) => bail!(UsageError("give --uuid or --device".into())),
    };
    run(
        &cfg,
        &target,
        a.target.uuid.as_deref(),
        (a.force, a.json),
        capture,
    )
}

fn ack_cmd(cli: &Cli, name: &str) -> Result<u8> {
    let cfg = load(cli)?;
    if backends::ack(&cfg, name).map_err(|e| anyhow::anyhow!(extbackup::chain(&e)))? {
        println!("{name}: failure acknowledged");
    } else {
        println!("{name}: no failure to acknowledge");
    }
    Ok(0)
}

fn status_cmd(cli: &Cli, json: bool) -> Result<u8> {
    let cfg = load(cli)?;
    let s = status::status(&cfg, state::now())
        .with_context(|| format!("reading {}", cfg.state_dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", s.render());
    }
    Ok(0)
}

fn check_cmd(cli: &Cli, max_age: Option<u32>) -> Result<u8> {
    let cfg = load(cli)?;
    let days = max_age.unwrap_or(cfg.policy.reminder_age_days);
    let s = status::status(&cfg, state::now())
        .with_context(|| format!("reading {}", cfg.state_dir.display()))?;
    match s.reminder(&cfg, u64::from(days) * 86_400) {
        None => {
            for d in &s.drives {
                println!("ok: {}", status::Status::age_line(d));
            }
            println!("every drive is within {days} days");
        }
        Some(ev) => {
            for line in ev.details.iter().take_while(|l| l.starts_with("drive ")) {
                tracing::warn!("{line}, over the {days}-day limit");
            }
            match backends::notifier(&cfg)? {
                Some(n) => {
                    let _ = n.flush_spool();
                    n.notify(&ev).context("sending the reminder mail")?;
                    println!("reminder mail sent");
                }
                None => {
                    // No mail: the log above and the LED are the reminder; the
                    // timer's unit must not fail every day for it.
                    tracing::warn!(
                        "no [mail] configured: showing the attention colour instead of \
                         mailing a reminder"
                    );
                    let mut ind = backends::indicator(&cfg);
                    if let Err(e) = ind.show(indicator::State::Attention) {
                        tracing::warn!("indicator: {}", extbackup::chain(&e));
                    }
                }
            }
        }
    }
    Ok(0)
}

fn unmount_cmd(cli: &Cli, name: &str) -> Result<u8> {
    let (cfg, _) = load_or_default(cli)?;
    let crypt = backends::crypt(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let mounter = backends::mounter(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    if browse::unmount(crypt.as_ref(), mounter.as_ref(), name).map_err(failure)? {
        println!("drive {name}: unmounted and closed");
        Ok(0)
    } else {
        eprintln!("extbackup: drive {name} is not open for browsing");
        Ok(1)
    }
}

fn config_check_cmd(cli: &Cli) -> Result<u8> {
    let cfg = load(cli)?;
    cfg.check_key_files()
        .map_err(|e| UsageError(extbackup::chain(&e)))?;
    println!("{}: valid", cli.config.display());
    print!("{}", cfg.summary());
    Ok(0)
}

fn run(
    cfg: &Config,
    target: &Target,
    uuid: Option<&str>,
    (force, json): (bool, bool),
    capture: &LogCapture,
) -> Result<u8> {
    // The mail's log tail is this run's (watch runs several in one process).
    capture.clear();
    // the run's slot on a shared LED: the drive's name (a drive not known by its UUID
    // here, e.g. `--device`, shares the slot `extbackup`)
    let job = uuid
        .and_then(|u| cfg.drive_by_uuid(u))
        .map_or_else(|| "extbackup".to_owned(), |d| d.name.to_string());
    let mut b = backends::build_for_job(cfg, &job, Some(&STOP))
        .map_err(|e| UsageError(extbackup::chain(&e)))?;
    if json {
        if let Some(i) = backends::console_on_stderr(cfg) {
            b.indicator = i;
        }
    }
    if let Some(why) = browse::refuse_run(cfg, b.crypt.as_ref(), target) {
        eprintln!("extbackup: {why}");
        return Ok(EXIT_NOT_OURS);
    }
    install_stop_handler()?;
    let opts = RunOptions {
        force,
        cancel: Some(&STOP),
        ..RunOptions::default()
    };
    let mut p = Pipeline::new(cfg, b, capture.clone(), opts);
    let json =
        json.then(|| std::rc::Rc::new(std::cell::RefCell::new(JsonEvents::new(std::io::stdout()))));
    if let Some(j) = &json {
        let (j1, j2) = (j.clone(), j.clone());
        p = p
            .on_progress(move |pr| j1.borrow_mut().progress(pr))
            .on_step(move |s| j2.borrow_mut().step(s));
    } else if std::io::stderr().is_terminal() {
        let mut bar = extbackup::progress::TerminalProgress::default();
        p = p.on_progress(move |pr| bar.update(pr));
    }
    let device = match target {
        Target::Uuid(u) => PathBuf::from("/dev/disk/by-uuid").join(u),
        Target::Device(d) => d.clone(),
    };
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_for_pull(device, finished.clone());
    let outcome = p.run(target);
    finished.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    drop(p);
    extbackup::progress::finish_terminal();
    if let Some(j) = &json {
        j.borrow_mut().emit(json_result(&outcome));
    }
    Ok(match outcome {
        RunOutcome::Done(_) => 0,
        RunOutcome::NotOurs(_) => EXIT_NOT_OURS,
        RunOutcome::Failed { drive, step, error } => {
            error_line(&format!(
                "extbackup: {drive}: FAILED at {step}: {}",
                error.chain().join(": ")
            ));
            1
        }
    })
}

/// The `--json` event that ends a run.
fn json_result(outcome: &RunOutcome) -> serde_json::Value {
    match outcome {
        RunOutcome::Done(r) => serde_json::json!({
            "event": "result", "result": "success", "files_copied": r.files_copied,
            "bytes_copied": r.bytes_copied, "files_deleted": r.files_deleted,
        }),
        RunOutcome::NotOurs(why) => {
            serde_json::json!({"event": "result", "result": "not-ours", "reason": why})
        }
        RunOutcome::Failed { drive, step, error } => serde_json::json!({
            "event": "result", "result": "failure", "drive": drive, "step": step.name(),
            "error": error.chain(),
        }),
    }
}

/// Watches the drive's device node while a run goes on. When it disappears (the drive was
/// pulled), the cause is logged at error priority and the run's child processes (rsync,
/// fsck) get SIGTERM, so the step fails now instead of when rsync gives up on a dead disk
/// (minutes); the pipeline then undoes what it did (unmount, close) and reports the step.
fn watch_for_pull(
    device: PathBuf,
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let mut seen = false;
        while !finished.load(Ordering::Relaxed) {
            let present = device.exists();
            if seen && !present {
                tracing::error!(
                    "the drive {} disappeared during the run (pulled?): stopping the copy",
                    device.display()
                );
                oskit::terminate_descendants();
                return;
            }
            seen |= present;
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    })
}

/// The man pages (one per command, from the clap definition), the completions and the
/// units that `extbackup install` writes that do not depend on the configuration.
fn generate_assets(dir: &std::path::Path) -> Result<u8> {
    use clap::CommandFactory;
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    let cmd = Cli::command();
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
    let paths = extbackup::install::InstallPaths {
        udev_dir: dir.join("unused"),
        systemd_dir: sd.clone(),
        binary: "/usr/bin/extbackup".into(),
        config: config::DEFAULT_PATH.into(),
        // The default state folder and mount root; `extbackup install` writes units for
        // other ones.
        ..extbackup::install::InstallPaths::default()
    };
    // The rule names the drives (from the configuration): `extbackup install` writes it.
    let placeholder = [("placeholder", "00000000-0000-4000-8000-000000000000")];
    let files = extbackup::install::render(&placeholder, &paths)?;
    let units: Vec<_> = files
        .into_iter()
        .filter(|(p, _)| p.starts_with(&sd))
        .collect();
    extbackup::install::write(&units)?;
    Ok(0)
}

fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(line.trim() == "yes")
}

fn prepare_cmd(cli: &Cli, a: &PrepareArgs) -> Result<u8> {
    // The crypt backend and the state folder come from the configuration when it exists.
    let cfg_text = std::fs::read_to_string(&cli.config).ok();
    let cfg = match &cfg_text {
        Some(t) => Config::parse(t).map_err(|e| {
            UsageError(format!(
                "{}: {}",
                cli.config.display(),
                extbackup::chain(&e)
            ))
        })?,
        None => Config::parse("source = \"/\"").expect("minimal config parses"),
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
fn given_recovery(a: &PrepareArgs) -> Result<Option<recovery::RecoveryChoice>> {
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
fn confirm_erase(a: &PrepareArgs, what: &str) -> Result<bool> {
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
fn recovery_choice(
    a: &PrepareArgs,
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

fn print_prepared(cli: &Cli, a: &PrepareArgs, p: &prepare::Prepared, new_config: bool) {
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

/// A library failure as an anyhow error with its whole chain.
fn failure(e: extbackup::Failure) -> anyhow::Error {
    anyhow::anyhow!(e.chain().join(": "))
}

/// The configuration, or (when the file does not exist: the NAS is gone) the defaults;
/// the flag says whether it was read.
fn load_or_default(cli: &Cli) -> Result<(Config, bool)> {
    if cli.config.exists() {
        return Ok((load(cli)?, true));
    }
    tracing::debug!(
        "{} does not exist: using the defaults",
        cli.config.display()
    );
    Ok((
        Config::parse("source = \"/\"").expect("minimal config parses"),
        false,
    ))
}

fn opener(passphrase: bool) -> browse::Opener {
    if passphrase {
        browse::Opener::Passphrase {
            tries: if std::io::stdin().is_terminal() { 3 } else { 1 },
        }
    } else {
        browse::Opener::KeyFile
    }
}

fn ask_passphrase(
    name: &str,
) -> impl FnMut() -> std::result::Result<crypt::Secret, extbackup::Failure> + '_ {
    move || recovery::read_passphrase(&format!("Recovery passphrase for drive {name}: "))
}

fn recovery_kit(
    cli: &Cli,
    name: &str,
    to: &std::path::Path,
    with_key_file: bool,
    device: Option<&std::path::Path>,
) -> Result<u8> {
    let cfg = load(cli)?;
    let crypt = backends::crypt(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let Some(d) = cfg.drive_by_name(name) else {
        bail!(UsageError(format!(
            "no drive named {name} in {}",
            cli.config.display()
        )));
    };
    let drive = browse::resolve(&cfg, crypt.as_ref(), Some(name), device).map_err(failure)?;
    let kit = recovery::write_kit(
        crypt.as_ref(),
        &drive,
        to,
        with_key_file.then_some(d.key_file.as_path()),
    )
    .map_err(failure)?;
    for f in &kit.files {
        println!("wrote {}", f.display());
    }
    if with_key_file {
        println!(
            "WARNING: this kit holds the key file: it opens drive {name} by itself. Keep it as \
             safe as the backup's contents, and away from the drive."
        );
    }
    Ok(0)
}

fn recovery_add(
    cli: &Cli,
    name: &str,
    device: Option<&std::path::Path>,
    file: Option<&std::path::Path>,
) -> Result<u8> {
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

fn mount_cmd(cli: &Cli, a: &MountArgs) -> Result<u8> {
    let (cfg, _) = load_or_default(cli)?;
    let crypt = backends::crypt(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let mounter = backends::mounter(&cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let d = &a.drive;
    if d.name.is_none() && d.device.is_none() {
        bail!(UsageError("name a drive or give --device DEV".into()));
    }
    let drive = browse::resolve(&cfg, crypt.as_ref(), d.name.as_deref(), d.device.as_deref())
        .map_err(failure)?;
    let at =
        a.at.clone()
            .unwrap_or_else(|| browse::default_mount_point(&cfg, &drive.name));
    let at = std::path::absolute(&at).with_context(|| format!("resolving {}", at.display()))?;
    let name = drive.name.clone();
    browse::mount(
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
        extbackup::history::copy_root(&at, None)
            .unwrap_or_else(|_| at.join(extbackup::pipeline::DATA_DIR))
            .display()
    );
    let gens = syncer::generations::Generations::at(&at);
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

/// Opens drive `name` (or the one on `device`) read-only, with the key file or, with
/// `passphrase`, the recovery passphrase, hands the view to `f`, and closes it again.
fn with_drive_view<T>(
    cfg: &Config,
    name: &str,
    device: Option<&std::path::Path>,
    passphrase: bool,
    f: impl FnOnce(&browse::DriveView<'_>) -> Result<T>,
) -> Result<T> {
    let crypt = backends::crypt(cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let mounter = backends::mounter(cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let resolve = || browse::resolve(cfg, crypt.as_ref(), Some(name), device);
    let view = browse::DriveView::open(
        crypt.as_ref(),
        mounter.as_ref(),
        &resolve,
        name,
        &opener(passphrase),
        &mut ask_passphrase(name),
    )
    .map_err(failure)?;
    f(&view)
}

fn restore_cmd(cli: &Cli, a: &RestoreArgs) -> Result<u8> {
    let (cfg, has_config) = load_or_default(cli)?;
    with_drive_view(&cfg, &a.name, a.device.as_deref(), a.passphrase, |view| {
        let sources = if has_config { cfg.sources() } else { vec![] };
        let from = view.data_at(a.at.as_deref()).map_err(failure)?;
        let r = restore::restore(
            &from,
            view.mount_point(),
            &sources,
            &restore::RestoreRequest {
                paths: a.paths.clone(),
                to: a.to.clone(),
                overwrite: a.overwrite,
            },
        )
        .map_err(failure)?;
        for (rel, dest) in &r.items {
            println!("restored {} to {}", rel.display(), dest.display());
        }
        Ok(0)
    })
}

fn verify_cmd(cli: &Cli, a: &VerifyArgs) -> Result<u8> {
    let cfg = load(cli)?;
    if cfg.drive_by_name(&a.name).is_none() {
        bail!(UsageError(format!(
            "no drive named {} in {}",
            a.name,
            cli.config.display()
        )));
    }
    let depth = if a.full {
        verify::Depth::Full
    } else {
        verify::Depth::Sample(a.sample.unwrap_or(verify::DEFAULT_SAMPLE_PERCENT))
    };
    let r = with_drive_view(&cfg, &a.name, a.device.as_deref(), a.passphrase, |view| {
        verify::verify(&a.name, &cfg.sources(), &view.data(), depth).map_err(failure)
    })?;
    for d in &r.differences {
        println!("{d}");
    }
    println!("verify {}: {}", a.name, r.summary());
    if let Err(e) = verify::record(&cfg.state_dir, &r) {
        tracing::warn!("recording the verify in {}: {e}", cfg.state_dir.display());
    }
    Ok(if r.clean() { 0 } else { 1 })
}

/// What to do after `prepare`: with the rule installed, nothing but plugging in (the rule
/// matches every LUKS drive; `run` decides from the configuration), unless the drive's own
/// mount point is one the installed unit may not write.
fn prepare_next_step(cli: &Cli, a: &PrepareArgs) -> String {
    use extbackup::install;
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

fn history_cmd(cli: &Cli, a: &HistoryArgs) -> Result<u8> {
    let (cfg, _) = load_or_default(cli)?;
    let list = with_drive_view(&cfg, &a.name, a.device.as_deref(), a.passphrase, |view| {
        extbackup::history::list(view.mount_point()).map_err(failure)
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", extbackup::history::render(&a.name, &list));
    }
    Ok(0)
}

fn install(cli: &Cli, a: &InstallArgs) -> Result<u8> {
    use extbackup::install;
    let config_path = std::path::absolute(&cli.config)
        .with_context(|| format!("resolving {}", cli.config.display()))?;
    let stage = |p: &std::path::Path| match &a.root {
        Some(r) => install::under(r, p),
        None => p.to_path_buf(),
    };
    let (binary, copy_from) = unit_binary(a, &stage)?;
    let mut paths = install::InstallPaths {
        binary: binary.clone(),
        config: config_path,
        ..install::InstallPaths::default()
    };
    if a.uninstall {
        return uninstall(a, &paths);
    }
    let cfg = load(cli)?;
    paths.writable = writable_dirs(&cfg);
    let drives: Vec<(&str, &str)> = cfg
        .drives
        .iter()
        .map(|d| (d.name.as_str(), d.uuid.as_str()))
        .collect();
    let files = install::render(&drives, &paths).map_err(|e| UsageError(extbackup::chain(&e)))?;
    if a.print {
        for (p, text) in &files {
            println!("# {}\n{text}", p.display());
        }
        return Ok(0);
    }
    if let Some(from) = &copy_from {
        let to = stage(&binary);
        copy_binary(from, &to)?;
        println!(
            "copied {} to {} (the units run that copy; run `extbackup install` again after \
             rebuilding)",
            from.display(),
            to.display()
        );
    }
    let staged: Vec<(PathBuf, String)> = files.iter().map(|(p, t)| (stage(p), t.clone())).collect();
    install::write(&staged)?;
    for (p, _) in &staged {
        println!("wrote {}", p.display());
    }
    if let Some(root) = &a.root {
        println!(
            "staged below {}: nothing reloaded. On the target: `udevadm control --reload`, \
             `systemctl daemon-reload`, `systemctl enable --now {}`",
            root.display(),
            install::CHECK_TIMER
        );
        return Ok(0);
    }
    for n in install::reload(true) {
        println!("{n}");
    }
    print_next_steps(cli, &cfg);
    Ok(0)
}

/// The binary the units run, and where to copy it from when it must be copied first: a
/// stable path, never a build or temporary folder.
fn unit_binary(
    a: &InstallArgs,
    stage: &dyn Fn(&std::path::Path) -> PathBuf,
) -> Result<(PathBuf, Option<PathBuf>)> {
    use extbackup::install;
    let exe = std::env::current_exe().context("finding the extbackup binary")?;
    let Some(b) = &a.binary else {
        return Ok(match install::transient_location(&exe) {
            Some(_) => (PathBuf::from(install::STABLE_BINARY), Some(exe)),
            None => (exe, None),
        });
    };
    let b = std::path::absolute(b).with_context(|| format!("resolving {}", b.display()))?;
    if let Some(why) = install::transient_location(&b) {
        bail!(UsageError(format!(
            "{why}: the units would break when it goes. Install the binary at a \
             stable path (e.g. `install -m 0755 {} {}`) and pass that, or leave out \
             --binary to have it copied there",
            b.display(),
            install::STABLE_BINARY
        )));
    }
    let copy = (b != exe).then_some(exe).filter(|_| !stage(&b).exists());
    Ok((b, copy))
}

/// `install --uninstall`: removes what `install` wrote (below `--root`, only the files).
fn uninstall(a: &InstallArgs, paths: &extbackup::install::InstallPaths) -> Result<u8> {
    use extbackup::install;
    let (removed, notes) = match &a.root {
        Some(root) => {
            let files = paths.files_under(root).into_iter();
            let removed = files.filter(|p| std::fs::remove_file(p).is_ok()).collect();
            (removed, Vec::new())
        }
        None => {
            let (removed, mut notes) = install::uninstall(paths)?;
            notes.extend(install::reload(false));
            (removed, notes)
        }
    };
    for p in &removed {
        println!("removed {}", p.display());
    }
    for n in &notes {
        println!("{n}");
    }
    Ok(0)
}

/// The folders a run writes to, which the unit's sandbox must leave writable.
fn writable_dirs(cfg: &Config) -> Vec<PathBuf> {
    let mut writable = vec![cfg.state_dir.clone(), cfg.mount_root.clone()];
    for d in &cfg.drives {
        let mp = cfg.mount_point(d);
        if !mp.starts_with(&cfg.mount_root) {
            writable.push(mp);
        }
    }
    if let Some(m) = cfg.mail.as_ref().and_then(|m| m.spool_dir.clone()) {
        writable.push(m);
    }
    let locks = cfg.sources().into_iter().filter_map(|s| s.lock);
    for l in cfg.source_lock.iter().cloned().chain(locks) {
        if let Some(dir) = l.path.parent() {
            if !writable.iter().any(|w| w == dir) {
                writable.push(dir.to_path_buf());
            }
        }
    }
    writable.dedup();
    writable
}

fn print_next_steps(cli: &Cli, cfg: &Config) {
    println!("\nnext steps:");
    if cfg.drives.is_empty() {
        println!(
            "  - prepare a drive: `extbackup prepare /dev/sdX --name offsite-a` (no second \
             `install` needed afterwards)"
        );
    } else {
        println!(
            "  - plug in a prepared drive: the backup starts by itself; follow it with \
             `journalctl -f -u 'extbackup@*'`"
        );
    }
    if cfg.mail.is_none() {
        println!(
            "  - add a [mail] section to {} to hear about failures and reminders",
            cli.config.display()
        );
    }
    println!("  - `extbackup status` shows each drive's last backup and which one is due next");
}

/// Copies the running binary to `to` atomically, mode 0755.
fn copy_binary(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = to.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".extbackup.install-tmp");
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, to))
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// `notify-failure`: the unit `unit` of drive `uuid` failed. A run that failed by itself
/// (exit 1) has already turned the LED red and mailed; anything else (killed, crashed,
/// exit 2, timeout) gets the red LED and a mail here, and a mapping it left open is closed.
fn notify_failure(cli: &Cli, uuid: &str, unit: Option<&str>) -> Result<u8> {
    let unit = unit
        .map(str::to_string)
        .unwrap_or_else(|| format!("extbackup@{uuid}.service"));
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (result, code, status) = (
        env("MONITOR_SERVICE_RESULT"),
        env("MONITOR_EXIT_CODE"),
        env("MONITOR_EXIT_STATUS"),
    );
    if code.as_deref() == Some("exited") && status.as_deref() == Some("1") {
        tracing::info!("{unit} failed and reported it itself (exit 1): nothing to add");
        return Ok(0);
    }
    let how = match (&result, &code, &status) {
        (Some(r), Some(c), Some(s)) => format!("result {r}, {c} {s}"),
        (Some(r), _, _) => format!("result {r}"),
        _ => "this systemd does not say how (MONITOR_* unset)".into(),
    };
    tracing::error!("{unit} failed ({how}): reporting it");
    let mut details = vec![format!("See `journalctl -u {unit}`.")];
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            // A configuration error (exit 2) must still reach the user: report with the
            // file's [indicator] and [mail] alone when they are sound.
            let why = format!("{e:#}");
            tracing::error!("{why}");
            details.insert(0, format!("The configuration is broken: {why}"));
            salvage_config(&cli.config).ok_or(e).context(
                "nothing to report with: the configuration's [indicator] and [mail] are unusable too",
            )?
        }
    };
    let name = cfg
        .drive_by_uuid(uuid)
        .map(|d| d.name.to_string())
        .unwrap_or_else(|| uuid.to_string());
    let mut ind = backends::indicator(&cfg);
    if let Err(e) = ind.show(indicator::State::Failure) {
        tracing::warn!("indicator: {}", extbackup::chain(&e));
    }
    if cfg.drive_by_uuid(uuid).is_some() {
        close_left_mapping(&cfg, &extbackup::pipeline::mapping_name(&name));
    }
    let log_tail = journal_tail(&unit);
    let ev = notifier::Event {
        drive: name,
        host: cfg.host_name(),
        outcome: notifier::Outcome::Failure,
        failed_step: Some("unit".into()),
        error_chain: vec![format!(
            "{unit} failed ({how}) without reporting it: killed, crashed or a configuration error"
        )],
        log_tail,
        duration: std::time::Duration::ZERO,
        files: 0,
        bytes: 0,
        details,
    };
    match backends::notifier(&cfg)? {
        Some(n) => {
            let _ = n.flush_spool();
            n.notify(&ev).context("sending the failure mail")?;
            tracing::info!("failure mail sent");
        }
        None => tracing::warn!("no [mail] configured: the red LED is the only report"),
    }
    Ok(0)
}

/// Closes `mapping` when a killed run left it open (its mount went with its namespace).
fn close_left_mapping(cfg: &Config, mapping: &str) {
    let Ok(crypt) = backends::crypt(cfg) else {
        return;
    };
    if crypt
        .status(mapping)
        .is_ok_and(|s| s != crypt::MappingStatus::Inactive)
    {
        match crypt.lock(mapping, crypt::LockMode::Deferred) {
            Ok(_) => tracing::info!("closed {mapping}, left open by the failed run"),
            Err(e) => tracing::warn!("closing {mapping}: {}", extbackup::chain(&e)),
        }
    }
}

/// The last lines `unit` logged, for the mail (empty when the journal cannot be read).
fn journal_tail(unit: &str) -> String {
    std::process::Command::new("journalctl")
        .args(["--no-pager", "-o", "short-iso", "-n", "30", "-u", unit])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// From a configuration that does not load (invalid paths, a bad drive entry...), a
/// minimal one with only its `host`, `state_dir`, `[indicator]` and `[mail]`, when those
/// parse and validate on their own.
fn salvage_config(path: &std::path::Path) -> Option<Config> {
    let text = std::fs::read_to_string(path).ok()?;
    let full: toml::Table = toml::from_str(&text).ok()?;
    let mut t = toml::Table::new();
    t.insert("source".into(), toml::Value::String("/".into()));
    for key in ["host", "state_dir", "indicator", "mail"] {
        if let Some(v) = full.get(key) {
            t.insert(key.into(), v.clone());
        }
    }
    Config::parse(&toml::to_string(&t).ok()?).ok()
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGTERM (systemd stopping the unit) and SIGINT set [`STOP`] (through `signal-hook`): the
/// run stops before its next step and undoes what it did. When this process leads its
/// process group (as under systemd or a shell), the first signal is also passed on to the
/// group, so that a running rsync (or sync command) ends now instead of at the final
/// SIGKILL.
fn install_stop_handler() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
            Ok(s) => s,
            Err(e) => {
                result = Err(anyhow::Error::from(e).context("installing the signal handler"));
                return;
            }
        };
        let leader = oskit::leads_process_group();
        std::thread::spawn(move || {
            let mut passed_on = false;
            for _ in signals.forever() {
                STOP.store(true, std::sync::atomic::Ordering::Relaxed);
                if leader && !passed_on {
                    passed_on = true;
                    tracing::warn!("stopping: passing SIGTERM on to the sync");
                    let _ = oskit::terminate_process_group();
                }
            }
        });
    });
    result
}

fn watch(cli: &Cli, capture: &LogCapture) -> Result<u8> {
    let cfg = load(cli)?;
    if cfg.drives.is_empty() {
        bail!(UsageError(
            "no drives configured: add one with `extbackup prepare`".into()
        ));
    }
    install_stop_handler()?;
    let uuids: Vec<String> = cfg.drives.iter().map(|d| d.uuid.to_string()).collect();
    tracing::info!(
        "watching for {} configured drive(s); SIGTERM or Ctrl-C stops",
        uuids.len()
    );
    extbackup::watch::Watcher::new(&uuids).run(&STOP, |found| {
        tracing::info!(
            "drive {} {} at {}",
            found.uuid,
            if found.at_start {
                "present"
            } else {
                "plugged in"
            },
            found.devnode.display()
        );
        // Re-read the configuration for each drive: it may have changed since the start.
        let cfg = match Config::load(&cli.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{}", extbackup::chain(&e));
                return;
            }
        };
        match run(
            &cfg,
            &Target::Device(found.devnode.clone()),
            Some(&found.uuid),
            (false, false),
            capture,
        ) {
            Ok(code) => tracing::info!("run for {} ended with exit code {code}", found.uuid),
            Err(e) => tracing::error!("run for {}: {e:#}", found.uuid),
        }
    })?;
    tracing::info!("watch stopped");
    Ok(0)
}
