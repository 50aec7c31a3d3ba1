//! The run: identify the drive, unlock, check, mount, copy, record, unmount, close; on a
//! failure, undo in reverse as far as possible, show red and send one mail.
//!
//! The pipeline talks to the world only through the backend traits and [`Host`]; green is
//! shown only after the volume is closed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crypt::Crypt;
use indicator::{Indicator, State};
use mounter::Mounter;
use notifier::Notifier;
use syncer::{Progress, SyncReport, Syncer};

use crate::config::{Config, DriveConfig};
pub use crate::drive::identify::Target;
use crate::drive::identify::{identify, Identified};
use crate::drive::layout::{mapping_name, DATA_DIR};
use crate::drive::state::{CurrentRun, StateDir};
use crate::run::host::Host;
use crate::run::logcapture::LogCapture;

mod finish;
mod generations;
mod manifest;
mod steps;
mod sync;

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
    /// Run the `before` hooks.
    Hooks,
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
    pub const ALL: [Step; 12] = [
        Step::Identify,
        Step::RunLock,
        Step::Unlock,
        Step::Fsck,
        Step::Mount,
        Step::SourceLock,
        Step::Hooks,
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
            Step::Hooks => "before hooks",
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
    /// The drive's write-back started after the copy ([`Done::start_writeback`]).
    writeback: Option<std::thread::JoinHandle<()>>,
}

impl Done {
    /// Starts writing the copy back to the disk (`syncfs`) on a thread of its own, so that
    /// it overlaps the work after the copy (the manifest, the record, pruning) instead of
    /// all of it waiting in the unmount. Joined before any unmount ([`Done::wait_writeback`]:
    /// the thread holds a descriptor on the mount).
    fn start_writeback(&mut self, mount_point: &std::path::Path) {
        if let Ok(drive) = crate::drive::handle::open(mount_point) {
            self.writeback = std::thread::Builder::new()
                .name("writeback".into())
                .spawn(move || {
                    // A failed write-back is the unmount's to report: it writes back again.
                    let _ = drive.sync_filesystem();
                })
                .ok();
        }
    }

    fn wait_writeback(&mut self) {
        if let Some(w) = self.writeback.take() {
            let _ = w.join();
        }
    }
}

/// One run: the drive, where it is opened and mounted, what has been done (to undo on a
/// failure), and the copy's report.
struct Run {
    /// The drive's name (or the device's path when it is not known).
    name: String,
    /// Its LUKS UUID ("" when not known).
    uuid: String,
    started: u64,
    t0: Instant,
    mapping: String,
    mount_point: PathBuf,
    /// The opened volume, once unlocked.
    mapped: Option<PathBuf>,
    report: SyncReport,
    done: Done,
    /// Failures of the `after` hooks, for the mail.
    hook_warnings: Vec<String>,
    /// The drive's retention when it keeps dated generations; `None` for a plain mirror.
    history: Option<syncer::generations::Retention>,
    /// What the run did with the generations, for the log and the mail.
    notes: Vec<String>,
    /// What the run found wrong on the drive (what the drive check moved aside,
    /// future-dated generations, foreign entries under `generations/`), for the mail (which
    /// it makes go out), the record and `status`.
    drive_warnings: Vec<String>,
    /// What the new generation is expected to take on the drive (new and changed files,
    /// folders), when the free-space step measured it: the link-dest alarm's yardstick.
    expected_new: Option<u64>,
}

impl Run {
    fn new(name: String, uuid: String, mount_point: PathBuf, started: u64, t0: Instant) -> Self {
        Self {
            mapping: mapping_name(&name),
            name,
            uuid,
            started,
            t0,
            mount_point,
            mapped: None,
            report: SyncReport::default(),
            done: Done::default(),
            hook_warnings: vec![],
            history: None,
            notes: vec![],
            drive_warnings: vec![],
            expected_new: None,
        }
    }

    /// The opened volume; only asked for by the steps after unlock.
    fn mapped(&self) -> &Path {
        self.mapped.as_deref().expect("unlocked before this step")
    }

    fn data_dir(&self) -> PathBuf {
        self.mount_point.join(DATA_DIR)
    }
}

/// A run of the pipeline.
pub struct Pipeline<'a> {
    cfg: &'a Config,
    b: Backends,
    state: StateDir,
    log: LogCapture,
    opts: RunOptions,
    on_progress: Option<Box<dyn FnMut(Progress) + Send + 'a>>,
    on_step: Option<Box<dyn FnMut(Step) + Send + 'a>>,
    indicator_failed: bool,
    pinger: Option<crate::run::monitor::Pinger>,
    /// The record of this run once made, for the textfile.
    recorded: Option<crate::drive::state::RunRecord>,
}

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
            on_step: None,
            indicator_failed: false,
            pinger: None,
            recorded: None,
        }
    }

    /// Also reports sync progress to `f` (the terminal's progress bar).
    pub fn on_progress(mut self, f: impl FnMut(Progress) + Send + 'a) -> Self {
        self.on_progress = Some(Box::new(f));
        self
    }

    /// Also tells `f` of each step as it begins (`run --json`).
    pub fn on_step(mut self, f: impl FnMut(Step) + Send + 'a) -> Self {
        self.on_step = Some(Box::new(f));
        self
    }

    /// Gives the backends back (tests look at their fakes).
    pub fn into_backends(self) -> Backends {
        self.b
    }

    /// Runs the pipeline for `target`: identify, then every other step in order; then one
    /// `finish` for success and failure alike.
    pub fn run(&mut self, target: &Target) -> RunOutcome {
        let (t0, started) = (Instant::now(), crate::fmt::now());
        tracing::info!("step 1/{}: {}", Step::ALL.len(), Step::Identify);
        if let Some(f) = self.on_step.as_mut() {
            f(Step::Identify);
        }
        let identified = identify(self.cfg, &*self.b.crypt, &self.opts.by_uuid_dir, target);
        let (drive, device) = match identified {
            Ok(Identified::Ours { drive, device }) => (drive, device),
            Ok(Identified::NotOurs(why)) => {
                tracing::info!("{why}: left untouched");
                if self.cfg.policy.attention_on_unknown_drive {
                    self.show(State::Attention);
                }
                return RunOutcome::NotOurs(why);
            }
            Err(e) => {
                if self.cfg.drive_by_name(&e.name).is_some() {
                    self.pinger = crate::run::monitor::Pinger::new(&self.cfg.monitor, &e.name);
                }
                let mut run = Run::new(e.name, e.uuid, PathBuf::new(), started, t0);
                return self.finish(&mut run, Err((Step::Identify, e.error)));
            }
        };
        tracing::info!(
            "drive {} (UUID {}) on {}: ours, key file verified",
            drive.name,
            drive.uuid,
            device.display()
        );
        self.show(State::Working { progress: None });
        self.pinger = crate::run::monitor::Pinger::new(&self.cfg.monitor, drive.name.as_str());
        if let Some(p) = &self.pinger {
            p.send(crate::run::monitor::PingKind::Start, String::new());
        }
        let mp = self.cfg.mount_point(&drive);
        let mut run = Run::new(
            drive.name.to_string(),
            drive.uuid.to_string(),
            mp,
            started,
            t0,
        );
        run.history = self.cfg.retention(&drive);
        let result = Step::ALL[1..].iter().try_for_each(|&step| {
            self.begin(&run, step)?;
            self.step(step, &drive, &device, &mut run)
                .map_err(|e| (step, e))
        });
        self.finish(&mut run, result)
    }

    /// Does one step (after identify).
    fn step(
        &mut self,
        step: Step,
        drive: &DriveConfig,
        device: &Path,
        run: &mut Run,
    ) -> Result<(), StepError> {
        match step {
            Step::Identify => unreachable!("identify comes before the run"),
            Step::RunLock => self.run_lock(run),
            Step::Unlock => self.unlock(drive, device, run),
            Step::Fsck => self.fsck(run),
            Step::Mount => self.mount(run),
            Step::SourceLock => self.source_lock(run),
            Step::Hooks => self.before_hooks(run),
            // The steps that work on the drive run confined by Landlock (run::confine).
            Step::FreeSpace | Step::Sync | Step::Record => {
                let paths = crate::run::confine::writable(self.cfg, &run.mount_point);
                crate::run::confine::confined(&paths, || match step {
                    Step::FreeSpace => self.free_space(run),
                    Step::Sync => self.sync(run),
                    _ => self.record_on_drive(run),
                })
            }
            Step::Unmount => self.unmount(run),
            Step::Close => self.close(run),
        }
    }

    /// Notes `step` as the current one; up to the sync, a stop signal ends the run first.
    fn begin(&mut self, run: &Run, step: Step) -> Result<(), (Step, StepError)> {
        let cancelled = self.opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
        if cancelled && step <= Step::Sync {
            return Err((
                step,
                StepError::new("stopped by a signal (SIGTERM or Ctrl-C) before this step"),
            ));
        }
        let n = Step::ALL.iter().position(|s| *s == step).unwrap_or(0) + 1;
        tracing::info!("step {n}/{}: {step}", Step::ALL.len());
        if let Some(f) = self.on_step.as_mut() {
            f(step);
        }
        if let Some(mp) = run.done.mounted.as_ref().filter(|_| step <= Step::Record) {
            // The drive must still be mounted where the run mounted it (not lazily
            // unmounted, `umount -l`, leaving a bare folder of the NAS there).
            oskit::beneath::check_pin(mp).map_err(|e| {
                (
                    step,
                    StepError::with(
                        format!(
                            "the drive's filesystem is gone from {} before this step: it was \
                             unmounted under the run (umount -l?) or pulled; nothing is \
                             written there, plug the drive in again",
                            mp.display()
                        ),
                        e,
                    ),
                )
            })?;
        }
        if step <= Step::RunLock {
            // Not the current run yet: another one may hold the lock (and `current.json`).
            return Ok(());
        }
        let cur = CurrentRun {
            drive: run.name.clone(),
            pid: std::process::id(),
            started: run.started,
            step: step.name().into(),
        };
        if let Err(e) = self.state.set_current(&cur) {
            tracing::debug!("noting the current run: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
