//! From the configuration to the real backends (`Box<dyn Trait>`): the one place that
//! names concrete types.

use crypt::{AllowTestBackend, Crypt, LibcryptsetupCrypt, LoopbackTestCrypt};
use indicator::Indicator;
use mounter::Mounter;
use notifier::{MailNotifier, Notifier};
use syncer::{CommandSyncer, RsyncSyncer, Syncer};

use crate::config::{Config, CryptBackend, SyncerConfig};
use crate::drive::state::StateDir;
use crate::run::host::SystemHost;
use crate::run::pipeline::Backends;

/// A backend that could not be built from the configuration.
pub type BackendError = crate::Failure;

fn err(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> BackendError {
    crate::Failure::with(message, source)
}

/// The LUKS backend.
pub fn crypt(cfg: &Config) -> Result<Box<dyn Crypt>, BackendError> {
    Ok(match cfg.crypt.backend {
        CryptBackend::Libcryptsetup => Box::new(LibcryptsetupCrypt::new()),
        CryptBackend::LoopbackTest => {
            tracing::warn!("crypt backend loopback-test: NO ENCRYPTION (tests and demos only)");
            Box::new(
                LoopbackTestCrypt::with_state_dir(
                    AllowTestBackend::Yes,
                    cfg.state_dir.join("loopback-crypt"),
                )
                .map_err(|e| err("the loopback-test crypt backend", e))?,
            )
        }
    })
}

/// The filesystem backend.
pub fn mounter(_cfg: &Config) -> Result<Box<dyn Mounter>, BackendError> {
    Ok(disks())
}

/// The disks and filesystems backend, without a configuration (`prepare` may run before
/// there is one).
pub fn disks() -> Box<dyn Mounter> {
    Box::new(mounter::NixMounter::new())
}

/// The syncer.
pub fn syncer(cfg: &Config) -> Box<dyn Syncer> {
    match &cfg.syncer {
        SyncerConfig::Rsync { extra_args } => Box::new(
            RsyncSyncer::new()
                .with_extra_args(extra_args.iter())
                .with_extra_args(crate::run::quiet::rsync_args(&cfg.quiet)),
        ),
        SyncerConfig::Command { command } => {
            let (prog, args) = command.split_first().expect("validated: not empty");
            Box::new(CommandSyncer::new(prog).with_args(args.iter()))
        }
    }
}

/// The mail backend, if mail is configured.
pub fn notifier(cfg: &Config) -> Result<Option<Box<dyn Notifier>>, BackendError> {
    let (Some(mc), Some(m)) = (cfg.notify_config(), &cfg.mail) else {
        return Ok(None);
    };
    let n = MailNotifier::new(mc)
        .map_err(|e| err("the mail settings", e))?
        .with_deadline(std::time::Duration::from_secs(m.timeout_secs));
    Ok(Some(Box::new(n)))
}

/// The indicator; one that cannot be built is logged and replaced by none (an indicator
/// never stops a backup).
pub fn indicator(cfg: &Config) -> Box<dyn Indicator> {
    match indicator::from_config(&cfg.indicator) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("indicator: {}; going on without one", crate::chain(&e));
            Box::new(indicator::NoIndicator)
        }
    }
}

/// For `run --json`, whose standard output carries only JSON: the console indicator's
/// lines on standard error instead (`None` for the other backends).
pub fn console_on_stderr(cfg: &Config) -> Option<Box<dyn Indicator>> {
    if cfg.indicator.backend != indicator::BackendKind::Console {
        return None;
    }
    let palette = indicator::Palette::parse(&cfg.indicator.colors).ok()?;
    Some(Box::new(indicator::console::ConsoleIndicator::new(
        std::io::stderr(),
        false,
        palette,
    )))
}

/// The indicator of one drive's run: on a shared LED (the default for a BlinkStick) it
/// owns the slot named `job` (the drive's name); see `indicator::for_job`.
pub fn indicator_for(cfg: &Config, job: &str) -> Box<dyn Indicator> {
    use std::io::IsTerminal;
    // On a terminal the console's state line shares the bottom line with the copy's
    // progress, below the log (crate::run::progress).
    if cfg.indicator.backend == indicator::BackendKind::Console
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
    {
        if let Ok(palette) = indicator::Palette::parse(&cfg.indicator.colors) {
            return Box::new(indicator::console::ConsoleIndicator::new(
                crate::run::progress::IndicatorLine::default(),
                true,
                palette,
            ));
        }
    }
    match indicator::for_job(&cfg.indicator, job) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("indicator: {}; going on without one", crate::chain(&e));
            Box::new(indicator::NoIndicator)
        }
    }
}

/// `extbackup ack NAME`: acknowledges slot NAME's failure on the shared LED and redraws
/// it; returns whether there was a failure to acknowledge.
pub fn ack(cfg: &Config, name: &str) -> Result<bool, indicator::IndicatorError> {
    indicator::shared::ack(&cfg.indicator, name)
}

/// Every backend of a run for the drive named `job` (its slot on a shared LED).
pub fn build_for_job(
    cfg: &Config,
    job: &str,
    cancel: Option<&'static std::sync::atomic::AtomicBool>,
) -> Result<Backends, BackendError> {
    let mut b = build(cfg)?;
    b.indicator = indicator_for(cfg, job);
    if let Some(flag) = cancel {
        // Waits for the run lock and the source lock end on a stop signal too.
        b.host = Box::new(host(cfg).with_cancel(flag));
    }
    Ok(b)
}

fn host(cfg: &Config) -> SystemHost {
    SystemHost::new(StateDir::new(&cfg.state_dir).run_lock_path())
        .with_header_backups(crate::drive::recovery::header_backups(cfg))
}

/// Every backend of a run.
pub fn build(cfg: &Config) -> Result<Backends, BackendError> {
    Ok(Backends {
        indicator: indicator(cfg),
        crypt: crypt(cfg)?,
        mounter: mounter(cfg)?,
        syncer: syncer(cfg),
        notifier: notifier(cfg)?,
        host: Box::new(host(cfg)),
    })
}

/// A run whose backends could not be built (the loopback-test store under a `state_dir`
/// that is a file, a crypt library that does not load...) still reaches the owner: red on
/// the LED (the slot `job`), one failure mail for `drive` and a `/fail` ping, like any
/// failed run; it is reported as failed at `identify`, the step that needs them first.
/// The state directory cannot record it when it is the cause, so the textfile is left as
/// it was.
pub fn report_unbuilt(
    cfg: &Config,
    job: &str,
    drive: &str,
    error: BackendError,
    log: &crate::run::logcapture::LogCapture,
) -> crate::run::pipeline::RunOutcome {
    use crate::run::monitor::{failure_body, PingKind, Pinger};
    use crate::run::pipeline::Step;
    let step = Step::Identify;
    let chain = error.chain();
    tracing::error!("step {step} failed: {}", chain.join(": "));
    let mut ind = indicator_for(cfg, job);
    if let Err(e) = ind.show(indicator::State::Failure) {
        tracing::warn!("indicator {}: {}", ind.describe(), crate::chain(&e));
    }
    let tail = log.tail(60);
    match notifier(cfg) {
        Ok(Some(n)) => {
            let ev = notifier::Event {
                drive: drive.to_string(),
                host: cfg.host_name(),
                outcome: notifier::Outcome::Failure,
                failed_step: Some(step.name().to_string()),
                error_chain: chain,
                log_tail: tail.clone(),
                duration: std::time::Duration::ZERO,
                files: 0,
                bytes: 0,
                details: vec![],
            };
            if let Err(e) = n.notify(&ev) {
                tracing::error!("mail {:?}: {}", ev.subject(), crate::chain(&e));
            }
        }
        Ok(None) => tracing::info!("no mail configured: the red LED is the only report"),
        Err(e) => tracing::error!("no failure mail: {}", crate::chain(&e)),
    }
    if cfg.drive_by_name(drive).is_some() {
        if let Some(p) = Pinger::new(&cfg.monitor, drive) {
            p.finish(PingKind::Failure, failure_body(&tail));
        }
    }
    crate::run::pipeline::RunOutcome::Failed {
        drive: drive.to_string(),
        step,
        error,
    }
}
