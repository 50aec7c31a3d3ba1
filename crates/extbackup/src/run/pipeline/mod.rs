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
use mounter::{MountOptions, Mounter};
use notifier::{Event, Notifier, Outcome as MailOutcome};
use syncer::{GuardedSync, Progress, SyncOptions, SyncReport, Syncer};

use crate::config::{Config, DriveConfig};
pub use crate::drive::identify::Target;
use crate::drive::identify::{identify, Identified};
use crate::drive::layout::{mapping_name, DATA_DIR};
use crate::drive::state::{CurrentRun, RunRecord, RunResult, StateDir};
use crate::fmt::human;
use crate::run::host::Host;
use crate::run::logcapture::LogCapture;

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
    on_progress: Option<Box<dyn FnMut(Progress) + 'a>>,
    on_step: Option<Box<dyn FnMut(Step) + 'a>>,
    indicator_failed: bool,
    pinger: Option<crate::run::monitor::Pinger>,
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
        }
    }

    /// Also reports sync progress to `f` (the terminal's progress bar).
    pub fn on_progress(mut self, f: impl FnMut(Progress) + 'a) -> Self {
        self.on_progress = Some(Box::new(f));
        self
    }

    /// Also tells `f` of each step as it begins (`run --json`).
    pub fn on_step(mut self, f: impl FnMut(Step) + 'a) -> Self {
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
            Step::FreeSpace => self.free_space(run),
            Step::Sync => self.sync(run),
            Step::Record => self.record_on_drive(run),
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

    fn run_lock(&mut self, run: &mut Run) -> Result<(), StepError> {
        if !self.b.host.try_lock_run()? {
            tracing::warn!("another drive is being backed up: waiting for it to finish");
            self.show(State::Attention);
            self.b.host.wait_lock_run()?;
            self.show(State::Working { progress: None });
        }
        run.done.run_locked = true;
        Ok(())
    }

    fn unlock(
        &mut self,
        drive: &DriveConfig,
        device: &Path,
        run: &mut Run,
    ) -> Result<(), StepError> {
        self.close_stale(&run.mapping, &run.mount_point)?;
        let mapped = self
            .b
            .crypt
            .unlock(device, &drive.key_file, &run.mapping)
            .map_err(|e| {
                StepError::with(
                    format!("unlocking {} as {}", device.display(), run.mapping),
                    e,
                )
            })?;
        run.done.mapping = Some(run.mapping.clone());
        tracing::info!("unlocked as {}", mapped.display());
        run.mapped = Some(mapped);
        Ok(())
    }

    fn fsck(&mut self, run: &mut Run) -> Result<(), StepError> {
        let fsck = self
            .b
            .mounter
            .fsck(run.mapped())
            .map_err(|e| StepError::with(format!("checking {}", run.mapped().display()), e))?;
        if fsck.fixed {
            tracing::warn!("fsck fixed errors: {}", fsck.output.trim());
        }
        Ok(())
    }

    fn mount(&mut self, run: &mut Run) -> Result<(), StepError> {
        let mp = &run.mount_point;
        self.b
            .mounter
            .mount(run.mapped(), mp, &MountOptions::default())
            .map_err(|e| {
                StepError::with(
                    format!("mounting {} at {}", run.mapped().display(), mp.display()),
                    e,
                )
            })?;
        run.done.mounted = Some(mp.clone());
        tracing::info!("mounted at {}", mp.display());
        Ok(())
    }

    fn source_lock(&mut self, run: &mut Run) -> Result<(), StepError> {
        let Some(l) = &self.cfg.source_lock else {
            if self.cfg.sources.is_empty() {
                tracing::info!("no source lock configured");
            } else {
                tracing::info!("named sources: each one's lock is taken just before its copy");
            }
            return Ok(());
        };
        self.b.host.lock_source(&l.path, l.timeout())?;
        run.done.source_locked = true;
        tracing::info!("holding the source lock {}", l.path.display());
        Ok(())
    }

    fn before_hooks(&mut self, run: &mut Run) -> Result<(), StepError> {
        let env = self.hook_env(run, None);
        for h in &self.cfg.hooks.before {
            crate::run::hooks::run(h, crate::run::hooks::Phase::Before, &env, self.opts.cancel)
                .map_err(|e| StepError::new(e.to_string()))?;
        }
        Ok(())
    }

    /// What a hook is told: the drive, where it is mounted, the source; after the run, the
    /// outcome (and the failed step).
    fn hook_env(
        &self,
        run: &Run,
        outcome: Option<(&str, Option<Step>)>,
    ) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("EXTBACKUP_DRIVE", run.name.clone()),
            ("EXTBACKUP_UUID", run.uuid.clone()),
            (
                "EXTBACKUP_MOUNT_POINT",
                run.mount_point.display().to_string(),
            ),
            ("EXTBACKUP_TARGET", run.data_dir().display().to_string()),
        ];
        match &self.cfg.source {
            Some(p) => env.push(("EXTBACKUP_SOURCE", p.display().to_string())),
            None => env.push(("EXTBACKUP_SOURCES", self.sources_env())),
        }
        if let Some((o, step)) = outcome {
            env.push(("EXTBACKUP_OUTCOME", o.to_string()));
            env.push((
                "EXTBACKUP_FAILED_STEP",
                step.map(|s| s.name().to_string()).unwrap_or_default(),
            ));
        }
        env
    }

    /// The named sources for a hook: one `NAME PATH` line each.
    fn sources_env(&self) -> String {
        let lines: Vec<String> = self
            .cfg
            .sources()
            .iter()
            .map(|s| {
                let name = s.name.as_ref().map_or("", |n| n.as_str());
                format!("{name} {}", s.path.display())
            })
            .collect();
        lines.join("\n")
    }

    /// Runs the `after` hooks of a run that took the run lock; their failures come back as
    /// warnings for the log and the mail, never as the run's outcome.
    fn after_hooks(&self, run: &Run, step: Option<Step>) -> Vec<String> {
        if !run.done.run_locked || self.cfg.hooks.after.is_empty() {
            return vec![];
        }
        let outcome = if step.is_some() { "failure" } else { "success" };
        let env = self.hook_env(run, Some((outcome, step)));
        let mut warnings = vec![];
        for h in &self.cfg.hooks.after {
            if let Err(e) = crate::run::hooks::run(h, crate::run::hooks::Phase::After, &env, None) {
                tracing::warn!("{e} (the backup's own outcome stands: {outcome})");
                warnings.push(e.to_string());
            }
        }
        warnings
    }

    fn free_space(&mut self, run: &mut Run) -> Result<(), StepError> {
        if !self.cfg.policy.check_free_space {
            return Ok(());
        }
        let base = Self::history_base(run)?;
        if run.history.is_some() && base != run.data_dir() {
            return self.generation_space(run, &base);
        }
        let (mut src, mut have, mut need) = (0, 0, 0u64);
        for s in self.cfg.sources() {
            let size = self.b.host.tree_size(&s.path, &s.exclude)?;
            let there = self.b.host.tree_size(&s.copy_in(&base), &s.exclude)?;
            (src, have) = (src + size, have + there);
            need += size.saturating_sub(there);
        }
        let free = self.b.host.free_space(&run.mount_point)?;
        tracing::info!(
            "to copy {} (excluded files left out), already on the drive {}, free on the drive {}",
            human(src),
            human(have),
            human(free)
        );
        if need > free && run.history.is_some() {
            return self.make_room(run, need, free);
        }
        if need > free {
            return Err(StepError::new(format!(
                "no space on the drive for the copy: the source needs about {} more on it, and it has {} free; use a bigger drive or free space on it",
                human(need),
                human(free)
            )));
        }
        Ok(())
    }

    fn sync(&mut self, run: &mut Run) -> Result<(), StepError> {
        let (base, generation, link_base) = match run.history {
            Some(_) => self.start_generation(run)?,
            None => (run.data_dir(), None, None),
        };
        let sources = self.cfg.sources();
        if generation.is_some() {
            for gone in drop_strays(&base, &sources)? {
                Self::note(
                    run,
                    format!("history: the new generation drops {gone}, not a configured source"),
                );
            }
        } else {
            warn_strays(&base, &sources);
        }
        let _quiet = crate::run::quiet::apply(&self.cfg.quiet);
        let mut report = SyncReport::default();
        let mut share = Share {
            count: sources.len(),
            ..Share::default()
        };
        for (i, src) in sources.iter().enumerate() {
            share.index = i;
            let r = self.sync_source(run, src, &base, link_base.as_deref(), &mut share)?;
            add_report(&mut report, r, src);
        }
        crate::drive::verify::after_sync(self.cfg, &run.name, &base, &mut report);
        run.report = report;
        if run.done.source_locked {
            self.b.host.unlock_source();
            run.done.source_locked = false;
        }
        if let Some(g) = generation {
            self.end_generation(run, &g)?;
        }
        Ok(())
    }

    /// Copies one source into its folder under `base` (with its own lock, and the previous
    /// generation's folder of it to link to); `share` places it in the progress.
    fn sync_source(
        &mut self,
        run: &mut Run,
        src: &crate::config::Source,
        base: &Path,
        link_base: Option<&Path>,
        share: &mut Share,
    ) -> Result<SyncReport, StepError> {
        let target = src.copy_in(base);
        std::fs::create_dir_all(&target)
            .map_err(|e| StepError::with(format!("creating {}", target.display()), e))?;
        let opts = SyncOptions {
            drive: run.name.clone(),
            require_source_mount_point: self.cfg.policy.require_source_mount_point,
            max_delete_fraction: Some(self.cfg.policy.max_delete_fraction.get()),
            force: self.opts.force,
            link_dest: link_base.map(|p| src.copy_in(p)).filter(|p| p.is_dir()),
            exclude: src.exclude.clone(),
        };
        if let Some(l) = &src.lock {
            self.b
                .host
                .lock_source(&l.path, l.timeout())
                .map_err(|e| StepError::with(format!("{}: taking its lock", src.label()), e))?;
            run.done.source_locked = true;
            tracing::info!("holding the lock {} of {}", l.path.display(), src.label());
        }
        tracing::info!(
            "syncing {} {} to {} with {}",
            src.label(),
            src.path.display(),
            target.display(),
            self.b.syncer.describe()
        );
        let result = self.copy(src, &target, &opts, share);
        if src.lock.is_some() {
            self.b.host.unlock_source();
            run.done.source_locked = false;
        }
        result
    }

    /// The guarded copy of one source, its progress shown as its share of the whole.
    fn copy(
        &mut self,
        src: &crate::config::Source,
        target: &Path,
        opts: &SyncOptions,
        share: &mut Share,
    ) -> Result<SyncReport, StepError> {
        let (indicator, on_progress) = (&mut self.b.indicator, &mut self.on_progress);
        let mut seen = 0;
        let result = self
            .b
            .syncer
            .sync(&src.path, target, opts, &mut |p: Progress| {
                seen = seen.max(p.bytes);
                let p = share.of(p);
                if let Some(f) = on_progress.as_mut() {
                    f(p);
                }
                share.shown.update(&mut **indicator, p);
            });
        share.bytes_before += seen;
        let report = result.map_err(|e| {
            StepError::with(
                format!(
                    "copying {} {} to {}",
                    src.label(),
                    src.path.display(),
                    target.display()
                ),
                e,
            )
        })?;
        for w in &report.warnings {
            tracing::warn!("sync of {}: {w}", src.label());
        }
        Ok(report)
    }

    /// The note of a run's history work: logged now, and listed in the mail.
    fn note(run: &mut Run, line: String) {
        tracing::info!("{line}");
        run.notes.push(line);
    }

    /// History: a plain mirror left by the layout before generations becomes the first
    /// generation (renamed, not copied); the tree a new generation builds on, whose size
    /// counts as already on the drive (the newest generation, else `data/`).
    fn history_base(run: &mut Run) -> Result<PathBuf, StepError> {
        if run.history.is_none() {
            return Ok(run.data_dir());
        }
        if let Some(line) = crate::drive::history::migrate(&run.mount_point, &run.data_dir())? {
            Self::note(run, line);
        }
        let newest = syncer::generations::Generations::at(&run.mount_point)
            .newest()
            .map_err(|e| StepError::with("reading the generations on the drive", e))?;
        Ok(newest.map_or_else(|| run.data_dir(), |g| g.path))
    }

    /// History, with a generation to build on: what the new one needs (new and changed
    /// files, its folders) against the free space; pruning the oldest when short.
    fn generation_space(&mut self, run: &mut Run, newest: &Path) -> Result<(), StepError> {
        let mut need = 0;
        for s in self.cfg.sources() {
            let prev = s.copy_in(newest);
            need += syncer::generations::new_bytes(&s.path, &prev, &s.exclude).map_err(|e| {
                StepError::with(
                    format!(
                        "comparing {} {} with the newest generation's {}",
                        s.label(),
                        s.path.display(),
                        prev.display()
                    ),
                    e,
                )
            })?;
        }
        let free = self.b.host.free_space(&run.mount_point)?;
        tracing::info!(
            "a new generation needs about {} (new and changed files, folders; excluded files left out); free on the drive {}",
            human(need),
            human(free)
        );
        if need > free {
            return self.make_room(run, need, free);
        }
        Ok(())
    }

    /// History, space short: the oldest generations go (never the newest), or the run fails
    /// before deleting anything when even that would not make room.
    fn make_room(&mut self, run: &mut Run, need: u64, free: u64) -> Result<(), StepError> {
        let host = &self.b.host;
        let mp = run.mount_point.clone();
        let removed =
            crate::drive::history::make_room(&mp, need, free, &mut || host.free_space(&mp))?;
        Self::note(
            run,
            format!(
                "history: space was short: pruned the oldest generation(s) {}",
                removed.join(", ")
            ),
        );
        Ok(())
    }

    /// History: the new generation, under its `.incomplete` name (an interrupted one is
    /// resumed), and the newest complete one it links unchanged files to.
    fn start_generation(
        &mut self,
        run: &mut Run,
    ) -> Result<
        (
            PathBuf,
            Option<syncer::generations::Started>,
            Option<PathBuf>,
        ),
        StepError,
    > {
        use syncer::generations::{Generations, Stamp};
        let previous = Self::history_base(run)?;
        let previous = previous.is_dir().then_some(previous);
        let gens = Generations::at(&run.mount_point);
        let g = gens.start(Stamp(run.started as i64)).map_err(|e| {
            StepError::with(
                format!("starting a new generation in {}", gens.dir().display()),
                e,
            )
        })?;
        for r in &g.removed {
            Self::note(
                run,
                format!("history: removed {r}, left by an interrupted run"),
            );
        }
        if let Some(r) = &g.resumed {
            Self::note(
                run,
                format!(
                    "history: resuming the generation {r} left incomplete by an interrupted run, as {}",
                    g.stamp.name()
                ),
            );
        }
        if g.snapshot {
            Self::note(
                run,
                format!(
                    "history: {} starts as a btrfs snapshot of the newest generation",
                    g.stamp.name()
                ),
            );
        }
        let link_dest = if g.snapshot { None } else { previous };
        Ok((g.path.clone(), Some(g), link_dest))
    }

    /// History: the copy succeeded: the generation gets its final name, then the retention
    /// policy prunes (a failed removal is a warning).
    fn end_generation(
        &mut self,
        run: &mut Run,
        g: &syncer::generations::Started,
    ) -> Result<(), StepError> {
        use syncer::generations::{Generations, Stamp};
        let gens = Generations::at(&run.mount_point);
        let done = gens.commit(g).map_err(|e| {
            StepError::with(
                format!("naming the new generation {} complete", g.stamp.name()),
                e,
            )
        })?;
        Self::note(
            run,
            format!("history: generation {} is complete", done.stamp.name()),
        );
        let policy = run.history.expect("history is on");
        let now = Stamp(crate::fmt::now() as i64);
        let pruned =
            crate::drive::history::prune(&run.mount_point, &policy, now, &mut run.report.warnings);
        if !pruned.is_empty() {
            Self::note(
                run,
                format!(
                    "history: pruned by the retention policy: {}",
                    pruned.join(", ")
                ),
            );
        }
        Ok(())
    }

    fn record_on_drive(&mut self, run: &mut Run) -> Result<(), StepError> {
        self.check_still_mounted(run.mapped(), &run.mount_point)?;
        let rec = self.record(run, RunResult::Success, None, &[]);
        self.b.host.record_on_drive(&run.mount_point, &rec)?;
        Ok(())
    }

    fn unmount(&mut self, run: &mut Run) -> Result<(), StepError> {
        let mp = &run.mount_point;
        let u = self.b.mounter.unmount(mp);
        run.done.mounted = None;
        let u = u.map_err(|e| {
            run.done.still_mounted = true;
            StepError::with(format!("unmounting {}", mp.display()), e)
        })?;
        if u.lazy {
            tracing::warn!("unmount needed a lazy unmount after {} tries", u.attempts);
        }
        Ok(())
    }

    fn close(&mut self, run: &mut Run) -> Result<(), StepError> {
        self.b
            .crypt
            .lock(&run.mapping, LockMode::Normal)
            .map_err(|e| StepError::with(format!("closing {}", run.mapping), e))?;
        run.done.mapping = None;
        tracing::info!("closed {}", run.mapping);
        Ok(())
    }

    /// The end of every run that identified its drive (or failed to): undo what a failure
    /// left, record the run (a success whose record cannot be written becomes a failure),
    /// show green or red, one mail, the spool, then release the run lock.
    fn finish(&mut self, run: &mut Run, result: Result<(), (Step, StepError)>) -> RunOutcome {
        let result = result.and_then(|()| {
            let rec = self.record(run, RunResult::Success, None, &[]);
            self.state.record(&rec).map_err(|e| {
                (
                    Step::Record,
                    StepError::with(
                        format!(
                            "the backup itself is complete and the drive is closed, but its \
                             record could not be written in the state directory {}; fix it \
                             (status and the reminders depend on it) and plug the drive in again",
                            self.state.path().display()
                        ),
                        e,
                    ),
                )
            })
        });
        let outcome = match result {
            Ok(()) => self.succeeded(run),
            Err((step, e)) => self.failed(run, step, e),
        };
        self.flush_spool();
        self.monitor_end(&outcome);
        self.state.clear_current();
        if run.done.run_locked {
            self.b.host.unlock_run();
        }
        outcome
    }

    /// The textfile and the last ping, after the outcome is shown, recorded and mailed;
    /// bounded by the monitor's deadline, never changing the outcome.
    fn monitor_end(&mut self, outcome: &RunOutcome) {
        crate::run::monitor::write_textfile(self.cfg, &self.state);
        if let Some(p) = self.pinger.take() {
            match outcome {
                RunOutcome::Failed { .. } => p.finish(
                    crate::run::monitor::PingKind::Failure,
                    crate::run::monitor::failure_body(&self.log.tail(self.opts.mail_log_lines)),
                ),
                _ => p.finish(crate::run::monitor::PingKind::Success, String::new()),
            }
        }
    }

    fn succeeded(&mut self, run: &mut Run) -> RunOutcome {
        self.show(State::Success);
        run.hook_warnings = self.after_hooks(run, None);
        let r = &run.report;
        tracing::info!(
            "done: {} files ({} bytes) copied, {} deleted in {:.1} s; drive {} is closed and safe to remove",
            r.files_copied,
            r.bytes_copied,
            r.files_deleted,
            run.t0.elapsed().as_secs_f64(),
            run.name
        );
        // A failed `after` hook is told even when successes are not mailed.
        if self.cfg.mail.as_ref().is_some_and(|m| m.on_success) || !run.hook_warnings.is_empty() {
            let ev = self.event(run, MailOutcome::Success, None, vec![]);
            self.send(&ev);
        }
        RunOutcome::Done(run.report.clone())
    }

    fn failed(&mut self, run: &mut Run, step: Step, e: StepError) -> RunOutcome {
        tracing::error!("step {step} failed: {}", e.chain().join(": "));
        self.cleanup(&mut run.done);
        self.show(State::Failure);
        run.hook_warnings = self.after_hooks(run, Some(step));
        let chain = e.chain();
        let rec = self.record(run, RunResult::Failure, Some(step), &chain);
        if let Err(e) = self.state.record(&rec) {
            tracing::error!(
                "recording the failure in the state directory {}: {e}",
                self.state.path().display()
            );
        }
        let ev = self.event(run, MailOutcome::Failure, Some(step), chain);
        self.send(&ev);
        RunOutcome::Failed {
            drive: run.name.clone(),
            step,
            error: e,
        }
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

    fn send(&self, ev: &Event) {
        let Some(n) = &self.b.notifier else {
            tracing::info!("no mail configured: not sending {:?}", ev.subject());
            return;
        };
        match n.notify(ev) {
            Ok(()) => tracing::debug!("mail sent: {}", ev.subject()),
            Err(e) if e.kind() == notifier::ErrorKind::Spooled => {
                tracing::warn!("mail spooled for the next run: {}", crate::chain(&e))
            }
            Err(e) => tracing::error!("mail {:?} lost: {}", ev.subject(), crate::chain(&e)),
        }
    }

    /// Sends what earlier runs spooled; after the backup, so a slow or dead mail server
    /// never delays it (the notifier bounds its own time).
    fn flush_spool(&self) {
        if let Some(n) = &self.b.notifier {
            match n.flush_spool() {
                Ok(0) => {}
                Ok(k) => tracing::info!("sent {k} mail(s) spooled by earlier runs"),
                Err(e) => tracing::warn!("sending spooled mail: {}", crate::chain(&e)),
            }
        }
    }

    fn event(
        &self,
        run: &Run,
        outcome: MailOutcome,
        step: Option<Step>,
        chain: Vec<String>,
    ) -> Event {
        let report = match outcome {
            MailOutcome::Success => &run.report,
            _ => &SyncReport::default(),
        };
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
        details.extend(
            run.hook_warnings
                .iter()
                .map(|w| format!("warning: {w} (this does not change the backup's outcome)")),
        );
        details.extend(run.notes.iter().cloned());
        Event {
            drive: run.name.clone(),
            host: self.cfg.host_name(),
            outcome,
            failed_step: step.map(|s| s.name().to_string()),
            error_chain: chain,
            log_tail: self.log.tail(self.opts.mail_log_lines),
            duration: run.t0.elapsed(),
            files: report.files_copied,
            bytes: report.bytes_copied,
            details,
        }
    }

    /// The record of `run` as it stands.
    fn record(
        &self,
        run: &Run,
        result: RunResult,
        step: Option<Step>,
        error: &[String],
    ) -> RunRecord {
        // A failed run copied nothing that counts.
        let zero = SyncReport::default();
        let r = match result {
            RunResult::Success => &run.report,
            RunResult::Failure => &zero,
        };
        RunRecord {
            drive: run.name.clone(),
            uuid: run.uuid.clone(),
            host: self.cfg.host_name(),
            started: run.started,
            finished: crate::fmt::now(),
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
        let busy = |what: String| {
            format!(
                "{what}, left by an interrupted run, is still in use: a process of that run \
                 (rsync, a sync command) may still be writing to the drive; `fuser -vm {}` \
                 names it. End it (or wait for it), then plug the drive in again",
                mp.display()
            )
        };
        if let Ok(Some(m)) = self.b.mounter.mounted_at(mp) {
            tracing::warn!("{} is still mounted: unmounting it", m.target.display());
            self.b.mounter.unmount(mp).map_err(|e| {
                let what = if e.kind() == mounter::ErrorKind::Busy {
                    busy(format!("the filesystem mounted at {}", mp.display()))
                } else {
                    format!("unmounting {} left by an interrupted run", mp.display())
                };
                StepError::with(what, e)
            })?;
        }
        self.b.crypt.lock(mapping, LockMode::Normal).map_err(|e| {
            let what = if e.kind() == crypt::ErrorKind::Busy {
                busy(format!("the LUKS mapping {mapping}"))
            } else {
                format!("closing {mapping} left by an interrupted run")
            };
            StepError::with(what, e)
        })?;
        Ok(())
    }

    /// The record goes onto the drive only while it is mounted where we mounted it: after
    /// a lazy unmount (or a pull) the mount point is a bare folder on the NAS's own disk.
    fn check_still_mounted(&self, mapped: &Path, mp: &Path) -> Result<(), StepError> {
        let m = self.b.mounter.mounted_at(mp).map_err(|e| {
            StepError::with(format!("reading what is mounted at {}", mp.display()), e)
        })?;
        match m {
            Some(m) if same_file(&m.source, mapped) => Ok(()),
            Some(m) => Err(StepError::new(format!(
                "{} now holds {}, not the drive ({}): it was unmounted or replaced during the \
                 copy; the run record is not written there",
                mp.display(),
                m.source.display(),
                mapped.display()
            ))),
            None => Err(StepError::new(format!(
                "the drive is no longer mounted at {} (unmounted or pulled during the copy): \
                 the copy is incomplete, and the run record is not written into the bare \
                 folder on this machine's disk",
                mp.display()
            ))),
        }
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

/// One source's place in the sync's progress: the sources before it count as done (their
/// share of the fraction, their bytes).
#[derive(Default)]
struct Share {
    index: usize,
    count: usize,
    bytes_before: u64,
    shown: ShownProgress,
}

impl Share {
    /// A source's own progress as progress of the whole sync.
    fn of(&self, p: Progress) -> Progress {
        Progress {
            bytes: self.bytes_before + p.bytes,
            fraction: p
                .fraction
                .map(|f| (self.index as f32 + f) / self.count.max(1) as f32),
        }
    }
}

/// The entries of `dir` that are no configured source's folder; none with the single
/// source (its tree is the whole folder) or when `dir` does not exist yet.
fn strays(dir: &Path, sources: &[crate::config::Source]) -> std::io::Result<Vec<PathBuf>> {
    if sources.iter().any(|s| s.name.is_none()) || !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut out = vec![];
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        if !sources
            .iter()
            .any(|s| s.name.as_ref().is_some_and(|n| name == n.as_str()))
        {
            out.push(dir.join(name));
        }
    }
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// A plain mirror's data folder with named sources: entries that are no configured source
/// (the single-source layout's tree, a source since removed) are left alone, and said.
fn warn_strays(data: &Path, sources: &[crate::config::Source]) {
    let strays: Vec<String> = strays(data, sources)
        .unwrap_or_default()
        .iter()
        .map(|p| file_name(p))
        .collect();
    if !strays.is_empty() {
        tracing::warn!(
            "{} also holds {}: not configured sources (an earlier configuration's copy?); \
             left as they are, delete them by hand if they are no longer wanted",
            data.display(),
            strays.join(", ")
        );
    }
}

/// What the indicator and the log show of the sync's progress: the indicator at each new
/// percent, the log every 10%.
#[derive(Default)]
struct ShownProgress {
    pct: Option<u32>,
    logged: u32,
    warned: bool,
}

impl ShownProgress {
    fn update(&mut self, indicator: &mut dyn Indicator, p: Progress) {
        let pct = p.fraction.map(|f| (f.clamp(0.0, 1.0) * 100.0) as u32);
        if pct.is_none() || pct == self.pct {
            return;
        }
        self.pct = pct;
        if let Err(e) = indicator.show(State::Working {
            progress: p.fraction,
        }) {
            if !self.warned {
                tracing::warn!("indicator: showing progress failed: {}", crate::chain(&e));
                self.warned = true;
            }
        }
        let pct = pct.unwrap_or(0);
        if pct >= self.logged + 10 {
            self.logged = pct - pct % 10;
            tracing::info!("sync {pct}% ({} bytes)", p.bytes);
        }
    }
}

/// With named sources, a new generation holds only their folders: what a btrfs snapshot of
/// the previous generation or a resumed one carries besides them (a source since removed from
/// the configuration, the single-source layout's tree) is removed from it (the older
/// generations keep it). Returns the names removed.
fn drop_strays(
    generation: &Path,
    sources: &[crate::config::Source],
) -> Result<Vec<String>, StepError> {
    let strays = strays(generation, sources).map_err(|e| {
        StepError::with(
            format!("listing the new generation {}", generation.display()),
            e,
        )
    })?;
    for p in &strays {
        let removed = if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        removed.map_err(|e| {
            StepError::with(
                format!("removing {} from the new generation", p.display()),
                e,
            )
        })?;
    }
    Ok(strays.iter().map(|p| file_name(p)).collect())
}

/// Adds one source's report to the run's (its warnings named after it, when named).
fn add_report(total: &mut SyncReport, r: SyncReport, src: &crate::config::Source) {
    total.files_copied += r.files_copied;
    total.bytes_copied += r.bytes_copied;
    total.files_deleted += r.files_deleted;
    total.files_total += r.files_total;
    total.bytes_total += r.bytes_total;
    total.duration += r.duration;
    let named = src.name.is_some();
    total.warnings.extend(r.warnings.into_iter().map(|w| {
        if named {
            format!("{}: {w}", src.label())
        } else {
            w
        }
    }));
}

/// The same path, or two names of the same file (`/dev/mapper/x` and `/dev/dm-0`).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

#[cfg(test)]
mod tests;
