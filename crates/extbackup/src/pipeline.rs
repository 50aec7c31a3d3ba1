//! The run: identify the drive, unlock, check, mount, copy, record, unmount, close; on a
//! failure, undo in reverse as far as possible, show red and send one mail.
//!
//! The pipeline talks to the world only through the backend traits and [`Host`]; green is
//! shown only after the volume is closed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crypt::{Crypt, LockMode, LockOutcome};
use indicator::{Indicator, State};
use mount::{MountOptions, Mounter};
use notify::{Event, Notifier, Outcome as MailOutcome};
use sync::{Progress, SyncOptions, SyncReport, Syncer};

use crate::config::{Config, DriveConfig};
use crate::host::{Host, HostError};
use crate::logcapture::LogCapture;
use crate::state::{self, CurrentRun, RunRecord, RunResult, StateDir};

/// The steps of a run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Match the configured UUID, the LUKS header's UUID and the key file.
    Identify,
    /// One run at a time (a second drive waits).
    RunLock,
    /// Open the LUKS volume.
    Unlock,
    /// `fsck -p` the filesystem.
    Fsck,
    /// Mount it.
    Mount,
    /// Take the source lock.
    SourceLock,
    /// Check that the copy fits.
    FreeSpace,
    /// Copy.
    Sync,
    /// Write the run record onto the drive.
    Record,
    /// Unmount.
    Unmount,
    /// Close the LUKS volume.
    Close,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 11] = [
        Step::Identify,
        Step::RunLock,
        Step::Unlock,
        Step::Fsck,
        Step::Mount,
        Step::SourceLock,
        Step::FreeSpace,
        Step::Sync,
        Step::Record,
        Step::Unmount,
        Step::Close,
    ];

    /// The step's name in logs and mail.
    pub fn name(self) -> &'static str {
        match self {
            Step::Identify => "identify",
            Step::RunLock => "run lock",
            Step::Unlock => "unlock",
            Step::Fsck => "fsck",
            Step::Mount => "mount",
            Step::SourceLock => "source lock",
            Step::FreeSpace => "free space",
            Step::Sync => "sync",
            Step::Record => "record",
            Step::Unmount => "unmount",
            Step::Close => "close",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of a failed step: what the step was doing, with the backend's error as source.
pub type StepError = crate::Failure;

impl From<HostError> for StepError {
    fn from(e: HostError) -> Self {
        match std::error::Error::source(&e) {
            Some(s) => Self::with(e.to_string(), s.to_string()),
            None => Self::new(e.to_string()),
        }
    }
}

/// Which drive to back up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The LUKS UUID (`/dev/disk/by-uuid/UUID`), as udev passes it.
    Uuid(String),
    /// A block device.
    Device(PathBuf),
}

/// How a run ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// Copied, unmounted, closed: safe to remove.
    Done(SyncReport),
    /// Not a configured drive: left untouched.
    NotOurs(String),
    /// Failed at `step`; cleaned up as far as possible.
    Failed {
        /// The drive's name (or the UUID/device when unknown).
        drive: String,
        /// The failed step.
        step: Step,
        /// What went wrong.
        error: StepError,
    },
}

/// The backends a run uses.
pub struct Backends {
    /// The LED (or console).
    pub indicator: Box<dyn Indicator>,
    /// LUKS.
    pub crypt: Box<dyn Crypt>,
    /// fsck, mount, unmount.
    pub mounter: Box<dyn Mounter>,
    /// The copy.
    pub syncer: Box<dyn Syncer>,
    /// Mail; `None` when no mail is configured.
    pub notifier: Option<Box<dyn Notifier>>,
    /// Locks, space, records.
    pub host: Box<dyn Host>,
}

/// Options of one run besides the configuration.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Override the sync guard (deletion share, empty source).
    pub force: bool,
    /// Where `Target::Uuid` devices are found.
    pub by_uuid_dir: PathBuf,
    /// Lines of log in a failure mail.
    pub mail_log_lines: usize,
    /// Set (by a SIGTERM handler) to stop the run: checked before each step up to the
    /// sync; the steps done so far are undone as after any failure.
    pub cancel: Option<&'static AtomicBool>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            force: false,
            by_uuid_dir: "/dev/disk/by-uuid".into(),
            mail_log_lines: 60,
            cancel: None,
        }
    }
}

/// What has been done, to undo on failure.
#[derive(Debug, Default)]
struct Done {
    run_locked: bool,
    mapping: Option<String>,
    mounted: Option<PathBuf>,
    /// Unmount failed: the mapping can only be closed deferred.
    still_mounted: bool,
    source_locked: bool,
}

/// A run of the pipeline.
pub struct Pipeline<'a> {
    cfg: &'a Config,
    b: Backends,
    state: StateDir,
    log: LogCapture,
    opts: RunOptions,
    on_progress: Option<Box<dyn FnMut(Progress) + 'a>>,
    indicator_failed: bool,
}

/// The name of the LUKS mapping of `drive`.
pub fn mapping_name(drive: &str) -> String {
    format!("extbackup-{drive}")
}

/// The folder on the drive's filesystem that mirrors the source.
pub const DATA_DIR: &str = "data";

impl<'a> Pipeline<'a> {
    /// A pipeline over `cfg` with these backends; `log` is the capture the mail's log tail
    /// comes from.
    pub fn new(cfg: &'a Config, b: Backends, log: LogCapture, opts: RunOptions) -> Self {
        Self {
            cfg,
            b,
            state: StateDir::new(&cfg.state_dir),
            log,
            opts,
            on_progress: None,
            indicator_failed: false,
        }
    }

    /// Also reports sync progress to `f` (the terminal's progress bar).
    pub fn on_progress(mut self, f: impl FnMut(Progress) + 'a) -> Self {
        self.on_progress = Some(Box::new(f));
        self
    }

    /// Gives the backends back (tests look at their fakes).
    pub fn into_backends(self) -> Backends {
        self.b
    }

    fn show(&mut self, s: State) {
        if let Err(e) = self.b.indicator.show(s) {
            if !self.indicator_failed {
                tracing::warn!(
                    "indicator {}: showing {s} failed (the backup goes on): {}",
                    self.b.indicator.describe(),
                    crate::chain(&e)
                );
            }
            self.indicator_failed = true;
        } else {
            self.indicator_failed = false;
        }
    }

    fn enter(&self, drive: &str, step: Step, started: u64) {
        let n = Step::ALL.iter().position(|s| *s == step).unwrap_or(0) + 1;
        tracing::info!("step {n}/{}: {step}", Step::ALL.len());
        if step <= Step::RunLock {
            // Not the current run yet: another one may hold the lock (and `current.json`).
            return;
        }
        let cur = CurrentRun {
            drive: drive.into(),
            pid: std::process::id(),
            started,
            step: step.name().into(),
        };
        if let Err(e) = self.state.set_current(&cur) {
            tracing::debug!("noting the current run: {e}");
        }
    }

    /// [`enter`](Self::enter)s `step` unless the run was cancelled.
    fn begin(&self, drive: &str, step: Step, started: u64) -> Result<(), (Step, StepError)> {
        if self.opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err((
                step,
                StepError::new("stopped by a signal (SIGTERM or Ctrl-C) before this step"),
            ));
        }
        self.enter(drive, step, started);
        Ok(())
    }

    /// Runs the pipeline for `target`.
    pub fn run(&mut self, target: &Target) -> RunOutcome {
        let t0 = Instant::now();
        let started = state::now();
        if let Some(n) = &self.b.notifier {
            match n.flush_spool() {
                Ok(0) => {}
                Ok(k) => tracing::info!("sent {k} mail(s) spooled by earlier runs"),
                Err(e) => tracing::warn!("sending spooled mail: {}", crate::chain(&e)),
            }
        }
        tracing::info!("step 1/{}: {}", Step::ALL.len(), Step::Identify);
        let (drive, device) = match self.identify(target) {
            Ok(Identified::Ours(d, dev)) => (d, dev),
            Ok(Identified::NotOurs(why)) => {
                tracing::info!("{why}: left untouched");
                if self.cfg.policy.attention_on_unknown_drive {
                    self.show(State::Attention);
                }
                return RunOutcome::NotOurs(why);
            }
            Err((name, uuid, e)) => {
                return self.finish_failure(
                    &name,
                    &uuid,
                    Step::Identify,
                    e,
                    Done::default(),
                    started,
                    t0,
                )
            }
        };
        tracing::info!(
            "drive {} (UUID {}) on {}: ours, key file verified",
            drive.name,
            drive.uuid,
            device.display()
        );
        self.show(State::Working { progress: None });
        let mut done = Done::default();
        let name = drive.name.to_string();
        match self.steps(&drive, &device, &mut done, started) {
            Ok(report) => {
                self.show(State::Success);
                tracing::info!(
                    "done: {} files ({} bytes) copied, {} deleted in {:.1} s; drive {} is closed and safe to remove",
                    report.files_copied,
                    report.bytes_copied,
                    report.files_deleted,
                    t0.elapsed().as_secs_f64(),
                    name
                );
                let rec = self.record(&drive, started, RunResult::Success, None, &[], &report);
                if let Err(e) = self.state.record(&rec) {
                    tracing::warn!("recording the run in {}: {e}", self.state.path().display());
                }
                if self.cfg.mail.as_ref().is_some_and(|m| m.on_success) {
                    let ev = self.event(&name, MailOutcome::Success, None, vec![], &report, t0);
                    self.send(&ev);
                }
                self.state.clear_current();
                if done.run_locked {
                    self.b.host.unlock_run();
                }
                RunOutcome::Done(report)
            }
            Err((step, e)) => {
                self.finish_failure(&name, drive.uuid.as_str(), step, e, done, started, t0)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_failure(
        &mut self,
        name: &str,
        uuid: &str,
        step: Step,
        e: StepError,
        mut done: Done,
        started: u64,
        t0: Instant,
    ) -> RunOutcome {
        tracing::error!("step {step} failed: {}", e.chain().join(": "));
        self.cleanup(&mut done);
        self.show(State::Failure);
        let chain = e.chain();
        let rec = RunRecord {
            drive: name.into(),
            uuid: uuid.into(),
            host: self.cfg.host_name(),
            started,
            finished: state::now(),
            result: RunResult::Failure,
            failed_step: Some(step.name().into()),
            error: chain.clone(),
            files_copied: 0,
            bytes_copied: 0,
            files_deleted: 0,
            files_total: 0,
            bytes_total: 0,
        };
        if let Err(e) = self.state.record(&rec) {
            tracing::warn!(
                "recording the failure in {}: {e}",
                self.state.path().display()
            );
        }
        let ev = self.event(
            name,
            MailOutcome::Failure,
            Some(step),
            chain,
            &SyncReport::default(),
            t0,
        );
        self.send(&ev);
        self.state.clear_current();
        if done.run_locked {
            self.b.host.unlock_run();
        }
        RunOutcome::Failed {
            drive: name.into(),
            step,
            error: e,
        }
    }

    fn send(&self, ev: &Event) {
        let Some(n) = &self.b.notifier else {
            tracing::info!("no mail configured: not sending {:?}", ev.subject());
            return;
        };
        match n.notify(ev) {
            Ok(()) => tracing::debug!("mail sent: {}", ev.subject()),
            Err(e) if e.kind() == notify::ErrorKind::Spooled => {
                tracing::warn!("mail spooled for the next run: {}", crate::chain(&e))
            }
            Err(e) => tracing::error!("mail {:?} lost: {}", ev.subject(), crate::chain(&e)),
        }
    }

    fn event(
        &self,
        drive: &str,
        outcome: MailOutcome,
        step: Option<Step>,
        chain: Vec<String>,
        report: &SyncReport,
        t0: Instant,
    ) -> Event {
        let mut details = vec![];
        if outcome == MailOutcome::Success {
            details.push(format!(
                "{} files ({} bytes) copied, {} deleted; the source has {} files ({} bytes)",
                report.files_copied,
                report.bytes_copied,
                report.files_deleted,
                report.files_total,
                report.bytes_total
            ));
            details.extend(report.warnings.iter().map(|w| format!("warning: {w}")));
        }
        Event {
            drive: drive.into(),
            host: self.cfg.host_name(),
            outcome,
            failed_step: step.map(|s| s.name().to_string()),
            error_chain: chain,
            log_tail: self.log.tail(self.opts.mail_log_lines),
            duration: t0.elapsed(),
            files: report.files_copied,
            bytes: report.bytes_copied,
            details,
        }
    }

    fn record(
        &self,
        drive: &DriveConfig,
        started: u64,
        result: RunResult,
        step: Option<Step>,
        error: &[String],
        r: &SyncReport,
    ) -> RunRecord {
        RunRecord {
            drive: drive.name.to_string(),
            uuid: drive.uuid.to_string(),
            host: self.cfg.host_name(),
            started,
            finished: state::now(),
            result,
            failed_step: step.map(|s| s.name().into()),
            error: error.to_vec(),
            files_copied: r.files_copied,
            bytes_copied: r.bytes_copied,
            files_deleted: r.files_deleted,
            files_total: r.files_total,
            bytes_total: r.bytes_total,
        }
    }

    fn identify(&self, target: &Target) -> Result<Identified, (String, String, StepError)> {
        let (device, drive) = match target {
            Target::Uuid(u) => {
                let Some(d) = self.cfg.drive_by_uuid(u) else {
                    return Ok(Identified::NotOurs(format!(
                        "UUID {u} is not a configured drive"
                    )));
                };
                (self.opts.by_uuid_dir.join(d.uuid.as_str()), Some(d))
            }
            Target::Device(p) => (p.clone(), None),
        };
        let err = |d: Option<&DriveConfig>, e: StepError| {
            let (n, u) = match d {
                Some(d) => (d.name.to_string(), d.uuid.to_string()),
                None => (device.display().to_string(), String::new()),
            };
            (n, u, e)
        };
        let info = match self.b.crypt.inspect(&device) {
            Ok(i) => i,
            Err(e) if e.kind() == crypt::ErrorKind::NotLuks && drive.is_none() => {
                return Ok(Identified::NotOurs(format!(
                    "{} has no LUKS header",
                    device.display()
                )))
            }
            Err(e) => {
                return Err(err(
                    drive,
                    StepError::with(
                        format!("reading the LUKS header of {}", device.display()),
                        e,
                    ),
                ))
            }
        };
        let drive = match drive {
            Some(d) if d.uuid.as_str() != info.uuid.to_ascii_lowercase() => {
                return Err(err(
                    Some(d),
                    StepError::new(format!(
                        "{} has LUKS UUID {}, not the configured {}: refusing a drive that is not what it claims",
                        device.display(),
                        info.uuid,
                        d.uuid
                    )),
                ))
            }
            Some(d) => d,
            None => match self.cfg.drive_by_uuid(&info.uuid) {
                Some(d) => d,
                None => {
                    return Ok(Identified::NotOurs(format!(
                        "{} (LUKS UUID {}) is not a configured drive",
                        device.display(),
                        info.uuid
                    )))
                }
            },
        };
        if let Err(e) = crate::config::check_key_file(&drive.key_file) {
            return Err(err(Some(drive), StepError::with("the key file", e)));
        }
        match self.b.crypt.verify_key_file(&device, &drive.key_file) {
            Ok(slot) => tracing::debug!("key file opens keyslot {slot}"),
            Err(e) if e.kind() == crypt::ErrorKind::WrongKey => {
                return Err(err(
                    Some(drive),
                    StepError::with(
                        format!(
                            "the configured key file {} does not unlock {}: a different drive with a copied UUID, or the wrong key file",
                            drive.key_file.display(),
                            device.display()
                        ),
                        e,
                    ),
                ))
            }
            // Not a verdict on the key: the device could not be read (pulled, I/O error).
            Err(e) => {
                return Err(err(
                    Some(drive),
                    StepError::with(
                        format!(
                            "checking that the key file {} unlocks {}",
                            drive.key_file.display(),
                            device.display()
                        ),
                        e,
                    ),
                ))
            }
        }
        Ok(Identified::Ours(drive.clone(), device))
    }

    fn steps(
        &mut self,
        drive: &DriveConfig,
        device: &Path,
        done: &mut Done,
        started: u64,
    ) -> Result<SyncReport, (Step, StepError)> {
        let name = drive.name.to_string();
        let at = |s: Step| move |e: StepError| (s, e);

        self.begin(&name, Step::RunLock, started)?;
        if !self
            .b
            .host
            .try_lock_run()
            .map_err(|e| (Step::RunLock, e.into()))?
        {
            tracing::warn!("another drive is being backed up: waiting for it to finish");
            self.show(State::Attention);
            self.b
                .host
                .wait_lock_run()
                .map_err(|e| (Step::RunLock, e.into()))?;
            self.show(State::Working { progress: None });
        }
        done.run_locked = true;

        self.begin(&name, Step::Unlock, started)?;
        let mapping = mapping_name(&name);
        let mp = self.cfg.mount_point(drive);
        self.close_stale(&mapping, &mp).map_err(at(Step::Unlock))?;
        let mapped = self
            .b
            .crypt
            .unlock(device, &drive.key_file, &mapping)
            .map_err(|e| StepError::with(format!("unlocking {} as {mapping}", device.display()), e))
            .map_err(at(Step::Unlock))?;
        done.mapping = Some(mapping.clone());
        tracing::info!("unlocked as {}", mapped.display());

        self.begin(&name, Step::Fsck, started)?;
        let fsck = self
            .b
            .mounter
            .fsck(&mapped)
            .map_err(|e| StepError::with(format!("checking {}", mapped.display()), e))
            .map_err(at(Step::Fsck))?;
        if fsck.fixed {
            tracing::warn!("fsck fixed errors: {}", fsck.output.trim());
        }

        self.begin(&name, Step::Mount, started)?;
        self.b
            .mounter
            .mount(&mapped, &mp, &MountOptions::default())
            .map_err(|e| {
                StepError::with(
                    format!("mounting {} at {}", mapped.display(), mp.display()),
                    e,
                )
            })
            .map_err(at(Step::Mount))?;
        done.mounted = Some(mp.clone());
        tracing::info!("mounted at {}", mp.display());

        self.begin(&name, Step::SourceLock, started)?;
        if let Some(l) = &self.cfg.source_lock {
            self.b
                .host
                .lock_source(&l.path, l.timeout())
                .map_err(|e| (Step::SourceLock, e.into()))?;
            done.source_locked = true;
            tracing::info!("holding the source lock {}", l.path.display());
        } else {
            tracing::info!("no source lock configured");
        }

        let target = mp.join(DATA_DIR);
        self.begin(&name, Step::FreeSpace, started)?;
        if self.cfg.policy.check_free_space {
            self.check_space(&target, &mp)
                .map_err(at(Step::FreeSpace))?;
        }

        self.begin(&name, Step::Sync, started)?;
        let mut report = self.sync(&name, &target).map_err(at(Step::Sync))?;
        crate::verify::after_sync(self.cfg, &name, &target, &mut report);
        if done.source_locked {
            self.b.host.unlock_source();
            done.source_locked = false;
        }

        self.enter(&name, Step::Record, started);
        let rec = self.record(drive, started, RunResult::Success, None, &[], &report);
        self.b
            .host
            .record_on_drive(&mp, &rec)
            .map_err(|e| (Step::Record, e.into()))?;

        self.enter(&name, Step::Unmount, started);
        let u = self.b.mounter.unmount(&mp);
        done.mounted = None;
        let u = u
            .map_err(|e| {
                done.still_mounted = true;
                StepError::with(format!("unmounting {}", mp.display()), e)
            })
            .map_err(at(Step::Unmount))?;
        if u.lazy {
            tracing::warn!("unmount needed a lazy unmount after {} tries", u.attempts);
        }

        self.enter(&name, Step::Close, started);
        self.b
            .crypt
            .lock(&mapping, LockMode::Normal)
            .map_err(|e| StepError::with(format!("closing {mapping}"), e))
            .map_err(at(Step::Close))?;
        done.mapping = None;
        tracing::info!("closed {mapping}");
        Ok(report)
    }

    /// A run that was killed (SIGKILL, a crash) leaves its mapping open and maybe mounted;
    /// we hold the run lock, so nobody else uses it: unmount and close it first.
    fn close_stale(&self, mapping: &str, mp: &Path) -> Result<(), StepError> {
        let active = matches!(
            self.b.crypt.status(mapping),
            Ok(crypt::MappingStatus::Active { .. })
        );
        if !active {
            return Ok(());
        }
        tracing::warn!("{mapping} is still open from an interrupted run: closing it first");
        if let Ok(Some(m)) = self.b.mounter.mounted_at(mp) {
            tracing::warn!("{} is still mounted: unmounting it", m.target.display());
            self.b.mounter.unmount(mp).map_err(|e| {
                StepError::with(
                    format!("unmounting {} left by an interrupted run", mp.display()),
                    e,
                )
            })?;
        }
        self.b.crypt.lock(mapping, LockMode::Normal).map_err(|e| {
            StepError::with(format!("closing {mapping} left by an interrupted run"), e)
        })?;
        Ok(())
    }

    fn check_space(&self, target: &Path, mp: &Path) -> Result<(), StepError> {
        let src = self.b.host.tree_size(&self.cfg.source)?;
        let have = self.b.host.tree_size(target)?;
        let free = self.b.host.free_space(mp)?;
        let need = src.saturating_sub(have);
        tracing::info!(
            "source {}, already on the drive {}, free on the drive {}",
            human(src),
            human(have),
            human(free)
        );
        if need > free {
            return Err(StepError::new(format!(
                "no space on the drive for the copy: the source needs about {} more on it, and it has {} free; use a bigger drive or free space on it",
                human(need),
                human(free)
            )));
        }
        Ok(())
    }

    fn sync(&mut self, name: &str, target: &Path) -> Result<SyncReport, StepError> {
        std::fs::create_dir_all(target)
            .map_err(|e| StepError::with(format!("creating {}", target.display()), e))?;
        let opts = SyncOptions {
            drive: name.into(),
            require_source_mount_point: self.cfg.policy.require_source_mount_point,
            max_delete_fraction: Some(self.cfg.policy.max_delete_fraction.get()),
            force: self.opts.force,
        };
        tracing::info!(
            "syncing {} to {} with {}",
            self.cfg.source.display(),
            target.display(),
            self.b.syncer.describe()
        );
        let mut last_pct: Option<u32> = None;
        let mut last_logged = 0u32;
        let indicator = &mut self.b.indicator;
        let on_progress = &mut self.on_progress;
        let mut warned = false;
        let result = self
            .b
            .syncer
            .sync(&self.cfg.source, target, &opts, &mut |p: Progress| {
                if let Some(f) = on_progress.as_mut() {
                    f(p);
                }
                let pct = p.fraction.map(|f| (f.clamp(0.0, 1.0) * 100.0) as u32);
                if pct.is_some() && pct != last_pct {
                    last_pct = pct;
                    if let Err(e) = indicator.show(State::Working {
                        progress: p.fraction,
                    }) {
                        if !warned {
                            tracing::warn!(
                                "indicator: showing progress failed: {}",
                                crate::chain(&e)
                            );
                            warned = true;
                        }
                    }
                    let pct = pct.unwrap_or(0);
                    if pct >= last_logged + 10 {
                        last_logged = pct - pct % 10;
                        tracing::info!("sync {pct}% ({} bytes)", p.bytes);
                    }
                }
            });
        let report = result.map_err(|e| {
            StepError::with(
                format!(
                    "copying {} to {}",
                    self.cfg.source.display(),
                    target.display()
                ),
                e,
            )
        })?;
        for w in &report.warnings {
            tracing::warn!("sync: {w}");
        }
        Ok(report)
    }

    fn cleanup(&mut self, done: &mut Done) {
        if done.source_locked {
            self.b.host.unlock_source();
            done.source_locked = false;
            tracing::info!("undo: released the source lock");
        }
        let mut still_mounted = done.still_mounted;
        if let Some(mp) = done.mounted.take() {
            match self.b.mounter.unmount(&mp) {
                Ok(_) => tracing::info!("undo: unmounted {}", mp.display()),
                Err(e) => {
                    still_mounted = true;
                    tracing::error!("undo: unmounting {}: {}", mp.display(), crate::chain(&e))
                }
            }
        }
        if let Some(m) = done.mapping.take() {
            let mode = if still_mounted {
                LockMode::Deferred
            } else {
                LockMode::Normal
            };
            match self.b.crypt.lock(&m, mode) {
                Ok(LockOutcome::Deferred) => tracing::warn!(
                    "undo: {m} is still in use; the kernel closes it when its last user goes"
                ),
                Ok(_) => tracing::info!("undo: closed {m}"),
                Err(e) if e.kind() == crypt::ErrorKind::Busy && mode == LockMode::Normal => {
                    match self.b.crypt.lock(&m, LockMode::Deferred) {
                        Ok(_) => tracing::warn!("undo: {m} busy: deferred removal"),
                        Err(e) => tracing::error!("undo: closing {m}: {}", crate::chain(&e)),
                    }
                }
                Err(e) => tracing::error!("undo: closing {m}: {}", crate::chain(&e)),
            }
        }
    }
}

enum Identified {
    Ours(DriveConfig, PathBuf),
    NotOurs(String),
}

/// `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
