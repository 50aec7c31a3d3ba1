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

/// The notifier for a failure told outside a run: none (said in the log) when it cannot be
/// built.
fn failure_notifier(cfg: &Config) -> Option<Box<dyn Notifier>> {
    notifier(cfg).unwrap_or_else(|e| {
        tracing::error!("no failure mail: {}", crate::chain(&e));
        None
    })
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
/// that is a file, a crypt library that does not load...) still reaches the owner like any
/// failed run ([`crate::run::ending::failed_outside`]): red on the LED (the slot `job`), one
/// failure mail for `drive`, its record where the state directory can take it, the textfile
/// and a `/fail` ping; it is reported as failed at `identify`, the step that needs them
/// first.
pub fn report_unbuilt(
    cfg: &Config,
    job: &str,
    drive: &str,
    error: BackendError,
    log: &crate::run::logcapture::LogCapture,
) -> crate::run::pipeline::RunOutcome {
    use crate::run::pipeline::Step;
    let step = Step::Identify;
    let chain = error.chain();
    tracing::error!("step {step} failed: {}", chain.join(": "));
    let now = crate::fmt::now();
    let rec = crate::drive::state::RunRecord {
        drive: drive.to_string(),
        uuid: cfg
            .drive_by_name(drive)
            .map(|d| d.uuid.to_string())
            .unwrap_or_default(),
        host: cfg.host_name(),
        started: now,
        finished: now,
        result: crate::drive::state::RunResult::Failure,
        failed_step: Some(step.name().to_string()),
        error: chain,
        files_copied: 0,
        bytes_copied: 0,
        files_deleted: 0,
        files_total: 0,
        bytes_total: 0,
        warnings: vec![],
    };
    let notifier = failure_notifier(cfg);
    let mut ind = indicator_for(cfg, job);
    crate::run::ending::failed_outside(
        cfg,
        &rec,
        Some(ind.as_mut()),
        notifier.as_deref(),
        vec![],
        &log.tail(60),
    );
    crate::run::pipeline::RunOutcome::Failed {
        drive: drive.to_string(),
        step,
        error,
    }
}

/// For `status`, `check` and `watch`: when no run holds the run lock and `current.json` still notes
/// one, that run was killed before it could tell its end; tells it now like any failed run
/// (record, red on its drive's LED slot, mail, textfile, `/fail` ping). Nothing to do, or
/// the lock not available (a run going on, or no right to take it), does nothing.
pub fn report_interrupted_if_idle(cfg: &Config) {
    let state = StateDir::new(&cfg.state_dir);
    if state.noted_current().is_none() {
        return;
    }
    let Ok(Some(_lock)) = oskit::FileLock::try_lock(&state.run_lock_path()) else {
        return;
    };
    if let Some(rec) = crate::run::ending::take_interrupted(cfg, &state) {
        let notifier = failure_notifier(cfg);
        // A console indicator writes on stderr: `status --json`'s stdout is JSON only.
        let mut ind = console_on_stderr(cfg).unwrap_or_else(|| indicator_for(cfg, &rec.drive));
        crate::run::ending::failed_outside(
            cfg,
            &rec,
            Some(ind.as_mut()),
            notifier.as_deref(),
            vec![],
            "",
        );
    }
}
