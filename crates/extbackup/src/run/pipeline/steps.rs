//! The steps between identify and sync, and after it: locks, unlock, fsck, mount, hooks,
//! the free-space check, the record on the drive, unmount and close.

use std::path::Path;

use crypt::LockMode;
use indicator::State;
use mounter::MountOptions;

use crate::config::DriveConfig;
use crate::drive::state::RunResult;

use super::{Pipeline, Run, Step, StepError};

impl Pipeline<'_> {
    pub(super) fn run_lock(&mut self, run: &mut Run) -> Result<(), StepError> {
        if !self.b.host.try_lock_run()? {
            tracing::warn!("another drive is being backed up: waiting for it to finish");
            self.show(State::Attention);
            self.b.host.wait_lock_run()?;
            self.show(State::Working { progress: None });
        }
        run.done.run_locked = true;
        self.report_interrupted();
        Ok(())
    }

    pub(super) fn unlock(
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

    pub(super) fn fsck(&mut self, run: &mut Run) -> Result<(), StepError> {
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

    pub(super) fn mount(&mut self, run: &mut Run) -> Result<(), StepError> {
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
        // From now on every handle on the drive checks that this mount is still there: a
        // drive unmounted under the run (`umount -l`) leaves a bare folder of the NAS here.
        if let Err(e) = oskit::beneath::pin(mp) {
            tracing::warn!("noting the drive's mount at {}: {e}", mp.display());
        }
        // What the drive holds is untrusted: nothing at its top may lead the run out of it.
        let names: Vec<String> = self
            .cfg
            .sources()
            .iter()
            .filter_map(|s| s.name.as_ref().map(|n| n.as_str().to_string()))
            .collect();
        let paths = crate::run::confine::writable(self.cfg, mp);
        let host = &mut self.b.host;
        let moved = crate::run::confine::confined(&paths, || host.check_drive(mp, &names))?;
        run.drive_warnings.extend(moved);
        Ok(())
    }

    pub(super) fn source_lock(&mut self, run: &mut Run) -> Result<(), StepError> {
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

    pub(super) fn before_hooks(&mut self, run: &mut Run) -> Result<(), StepError> {
        let env = self.hook_env(run, None);
        for h in &self.cfg.hooks.before {
            crate::run::hooks::run(h, crate::run::hooks::Phase::Before, &env, self.opts.cancel)
                .map_err(|e| StepError::new(e.to_string()))?;
        }
        Ok(())
    }

    /// What a hook is told: the drive, where it is mounted, the source; after the run, the
    /// outcome (and the failed step).
    pub(super) fn hook_env(
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
    pub(super) fn sources_env(&self) -> String {
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
    pub(super) fn after_hooks(&self, run: &Run, step: Option<Step>) -> Vec<String> {
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

    pub(super) fn free_space(&mut self, run: &mut Run) -> Result<(), StepError> {
        if !self.cfg.policy.check_free_space {
            return Ok(());
        }
        let base = Self::history_base(run)?;
        if run.history.is_some() && base != run.data_dir() {
            return self.generation_space(run, &base);
        }
        if let Some(bound) = self.sources_bound(&run.mount_point) {
            let free = self.b.host.free_space(&run.mount_point)?;
            if bound.bytes <= free {
                tracing::info!(
                    "to copy at most {} (the source filesystems' used space, no walk), free on \
                     the drive {}",
                    oskit::human::bytes(bound.bytes),
                    oskit::human::bytes(free)
                );
                return Ok(());
            }
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
            oskit::human::bytes(src),
            oskit::human::bytes(have),
            oskit::human::bytes(free)
        );
        if need > free && run.history.is_some() {
            let need = syncer::generations::Cost {
                bytes: need,
                inodes: 0,
            };
            let free = crate::drive::history::Room {
                bytes: free,
                inodes: None,
            };
            return self.make_room(run, need, free, Default::default());
        }
        if need > free {
            return Err(StepError::new(format!(
                "no space on the drive for the copy: the source needs about {} more on it, and it has {} free; use a bigger drive or free space on it",
                oskit::human::bytes(need),
                oskit::human::bytes(free)
            )));
        }
        Ok(())
    }

    pub(super) fn record_on_drive(&mut self, run: &mut Run) -> Result<(), StepError> {
        self.check_still_mounted(run.mapped(), &run.mount_point)?;
        let rec = self.record(run, RunResult::Success, None, &[]);
        self.b.host.record_on_drive(&run.mount_point, &rec)?;
        Ok(())
    }

    pub(super) fn unmount(&mut self, run: &mut Run) -> Result<(), StepError> {
        run.done.wait_writeback();
        let mp = &run.mount_point;
        let u = self.b.mounter.unmount(mp);
        oskit::beneath::unpin(mp);
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

    pub(super) fn close(&mut self, run: &mut Run) -> Result<(), StepError> {
        self.b
            .crypt
            .lock(&run.mapping, LockMode::Normal)
            .map_err(|e| StepError::with(format!("closing {}", run.mapping), e))?;
        run.done.mapping = None;
        tracing::info!("closed {}", run.mapping);
        Ok(())
    }

    /// A run that was killed (SIGKILL, a crash) leaves its mapping open and maybe mounted;
    /// we hold the run lock, so nobody else uses it: unmount and close it first.
    pub(super) fn close_stale(&self, mapping: &str, mp: &Path) -> Result<(), StepError> {
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
    pub(super) fn check_still_mounted(&self, mapped: &Path, mp: &Path) -> Result<(), StepError> {
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
}

/// The same path, or two names of the same file (`/dev/mapper/x` and `/dev/dm-0`).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}
