//! What several commands share: exit codes, loading the configuration, errors for the
//! command line, the log's set-up, confirmations, opening a drive for reading, and the stop
//! flag that SIGTERM and SIGINT set.

use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use extbackup::config::Config;
use extbackup::drive::{browse, recovery};
use extbackup::run::backends;
use extbackup::run::logcapture::LogCapture;

use crate::commands::Cli;

/// Exit code: the drive is not a configured one; skipped (borgmatic's "soft failure").
pub(crate) const EXIT_NOT_OURS: u8 = 75;

/// Exit code: a usage or configuration error.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Marks an error as a usage or configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

pub(crate) fn init_logging(cli: &Cli, capture: &LogCapture) {
    let level = if cli.quiet {
        LevelFilter::WARN
    } else {
        match cli.verbose {
            0 => LevelFilter::INFO,
            1 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        }
    };
    let journal = extbackup::system::journal::stderr_is_journal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(extbackup::run::progress::LogWriter::new)
        .with_target(false)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    let fmt = if journal {
        // Under systemd: one line per event, its priority as an sd-daemon `<N>` prefix,
        // so `journalctl -p err` finds the failures.
        fmt.event_format(extbackup::system::journal::SdPrefix)
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
pub(crate) fn error_line(msg: &str) {
    eprintln!("{}{msg}", extbackup::system::journal::prefix(3));
}

pub(crate) fn load(cli: &Cli) -> Result<Config> {
    Config::load(&cli.config).map_err(|e| UsageError(extbackup::chain(&e)).into())
}

/// A library failure as an anyhow error with its whole chain.
pub(crate) fn failure(e: extbackup::Failure) -> anyhow::Error {
    anyhow::anyhow!(e.chain().join(": "))
}

/// A library failure that is the caller's mistake (a bad path, an unknown name): exit 2.
pub(crate) fn usage(e: extbackup::Failure) -> anyhow::Error {
    UsageError(e.chain().join(": ")).into()
}

/// Refuses a drive name the configuration does not know when no `--device` names the
/// drive instead (a usage error, exit 2).
pub(crate) fn known_drive(
    cfg: &Config,
    name: &str,
    device: Option<&std::path::Path>,
) -> Result<()> {
    if device.is_none() && cfg.drive_by_name(name).is_none() {
        bail!(UsageError(format!(
            "no drive named {name} in the configuration: name its device with --device \
             (e.g. --device /dev/sdb, or /dev/sdb1 for a drive \
             prepared with --partition)"
        )));
    }
    Ok(())
}

/// The configuration, or (when the file does not exist: the NAS is gone) the defaults;
/// the flag says whether it was read.
pub(crate) fn load_or_default(cli: &Cli) -> Result<(Config, bool)> {
    if cli.config.exists() {
        return Ok((load(cli)?, true));
    }
    tracing::debug!(
        "{} does not exist: using the defaults",
        cli.config.display()
    );
    Ok((Config::without_source(), false))
}

pub(crate) fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(line.trim() == "yes")
}

pub(crate) fn opener(passphrase: bool) -> browse::Opener {
    if passphrase {
        browse::Opener::Passphrase {
            tries: if std::io::stdin().is_terminal() { 3 } else { 1 },
        }
    } else {
        browse::Opener::KeyFile
    }
}

pub(crate) fn ask_passphrase(
    name: &str,
) -> impl FnMut() -> std::result::Result<crypt::Secret, extbackup::Failure> + '_ {
    move || recovery::read_passphrase(&format!("Recovery passphrase for drive {name}: "))
}

/// Opens drive `name` (or the one on `device`) read-only, with the key file or, with
/// `passphrase`, the recovery passphrase, hands the view to `f`, and closes it again.
pub(crate) fn with_drive_view<T>(
    cfg: &Config,
    name: &str,
    device: Option<&std::path::Path>,
    passphrase: bool,
    f: impl FnOnce(&browse::DriveView<'_>) -> Result<T>,
) -> Result<T> {
    with_drive_view_by(cfg, name, device, &opener(passphrase), f)
}

/// How `scrub` and `versions` open a drive, on the NAS or on a bare machine: `--device`,
/// `--passphrase` or `--key-file FILE` (the configured key file otherwise).
#[derive(clap::Args, Debug)]
pub(crate) struct BareDrive {
    /// The drive's LUKS device (needed without a configuration).
    #[arg(long, value_name = "DEV")]
    device: Option<std::path::PathBuf>,
    /// Open with the recovery passphrase instead of the key file.
    #[arg(long, conflicts_with = "key_file")]
    passphrase: bool,
    /// Open with this key file (a drive the configuration does not know, or no
    /// configuration at all: a bare machine; default: the configured key file).
    #[arg(long, value_name = "FILE")]
    key_file: Option<std::path::PathBuf>,
}

impl BareDrive {
    /// [`with_drive_view_by`] with the drive opened as these options say.
    pub(crate) fn view<T>(
        &self,
        cfg: &Config,
        name: &str,
        f: impl FnOnce(&browse::DriveView<'_>) -> Result<T>,
    ) -> Result<T> {
        let opener = match &self.key_file {
            Some(k) if !self.passphrase => browse::Opener::KeyFileAt(k.clone()),
            _ => opener(self.passphrase),
        };
        with_drive_view_by(cfg, name, self.device.as_deref(), &opener, f)
    }
}

/// Like [`with_drive_view`], opening the drive with `opener`.
pub(crate) fn with_drive_view_by<T>(
    cfg: &Config,
    name: &str,
    device: Option<&std::path::Path>,
    opener: &browse::Opener,
    f: impl FnOnce(&browse::DriveView<'_>) -> Result<T>,
) -> Result<T> {
    let crypt = backends::crypt(cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    // A drive open for browsing (`extbackup mount --device ... --passphrase` on a machine
    // without the NAS's configuration) is known by its name alone.
    let browsing = matches!(
        crypt.status(&browse::browse_mapping(name)),
        Ok(crypt::MappingStatus::Active { .. })
    );
    if !browsing {
        known_drive(cfg, name, device)?;
    }
    let mounter = backends::mounter(cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let resolve = || browse::resolve(cfg, crypt.as_ref(), Some(name), device);
    let view = browse::DriveView::open(
        crypt.as_ref(),
        mounter.as_ref(),
        &resolve,
        name,
        opener,
        &mut ask_passphrase(name),
    )
    .map_err(failure)?;
    f(&view)
}

pub(crate) static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGTERM (systemd stopping the unit) and SIGINT set [`STOP`] (through `signal-hook`): the
/// run stops before its next step and undoes what it did. When this process leads its
/// process group (as under systemd or a shell), the first signal is also passed on to the
/// group, so that a running rsync (or sync command) ends now instead of at the final
/// SIGKILL.
pub(crate) fn install_stop_handler() -> Result<()> {
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
