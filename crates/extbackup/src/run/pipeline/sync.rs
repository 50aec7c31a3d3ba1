//! The sync step: each source in turn under its lock, into the data folder or the new
//! generation, with progress on the LED.

use std::path::{Path, PathBuf};

use indicator::{Indicator, State};
use manifest::follow::Follower;
use syncer::{GuardedSync, Progress, SyncOptions, SyncReport};

use super::{Pipeline, Run, StepError};

impl Pipeline<'_> {
    pub(super) fn sync(&mut self, run: &mut Run) -> Result<(), StepError> {
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
        // The link-dest alarm: a generation built with hard links (not a btrfs snapshot).
        let watch = match (&generation, &link_base) {
            (Some(_), Some(prev)) => self.link_watch(run, prev),
            _ => None,
        };
        let _quiet = crate::run::quiet::apply(&self.cfg.quiet);
        let mut report = SyncReport::default();
        let mut share = Share {
            count: sources.len(),
            ..Share::default()
        };
        // What the new and changed files take, when every source's sync measured it.
        let mut new_bytes = Some(0);
        let name = generation.as_ref().map(|g| g.stamp.name());
        let follower = Self::follow_copy(run, name.as_deref());
        for (i, src) in sources.iter().enumerate() {
            share.index = i;
            let r = self.sync_source(run, src, &base, link_base.as_deref(), &mut share)?;
            new_bytes = new_bytes.zip(r.new_bytes).map(|(a, b)| a + b);
            add_report(&mut report, r, src);
        }
        let seen = follower.map(Follower::finish);
        run.done.start_writeback(&run.mount_point);
        report.new_bytes = new_bytes;
        crate::drive::verify::after_sync(self.cfg, &run.name, &base, &mut report);
        run.report = report;
        if run.done.source_locked {
            self.b.host.unlock_source();
            run.done.source_locked = false;
        }
        if let Some(g) = generation {
            if let Some(w) = &watch {
                self.link_alarm(run, w, &base, &g.stamp.name());
            }
            self.end_generation(run, &g)?;
        }
        self.manifest(run, name, seen);
        Ok(())
    }

    /// Copies one source into its folder under `base` (with its own lock, and the previous
    /// generation's folder of it to link to); `share` places it in the progress.
    pub(super) fn sync_source(
        &mut self,
        run: &mut Run,
        src: &crate::config::Source,
        base: &Path,
        link_base: Option<&Path>,
        share: &mut Share,
    ) -> Result<SyncReport, StepError> {
        let target = src.copy_in(base);
        let drive = crate::drive::handle::open(&run.mount_point)?;
        drive
            .relative(&target)
            .and_then(|rel| drive.create_dir_all(&rel, 0o755))
            .map_err(|e| {
                let e = drive.explain(&target, e);
                StepError::with(format!("creating {}", target.display()), e)
            })?;
        let opts = self.sync_options(run, src, link_base);
        if let Some(l) = &src.lock {
            self.b
                .host
                .lock_source(&l.path, l.timeout())
                .map_err(|e| StepError::with(format!("{}: taking its lock", src.label()), e))?;
            run.done.source_locked = true;
            tracing::info!("holding the lock {} of {}", l.path.display(), src.label());
        }
        // What rsync and cp are handed, checked just before they start: real folders on the
        // drive's filesystem, no symlink on the way (they would follow one off the drive).
        crate::drive::handle::real_dir(&run.mount_point, &target)?;
        if let Some(l) = &opts.link_dest {
            crate::drive::handle::real_dir(&run.mount_point, l)?;
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

    /// How `src` is synced (and guarded): the policy's guard, `--force`, its excludes, and
    /// its folder in the generation `link_base` to link to.
    pub(super) fn sync_options(
        &self,
        run: &Run,
        src: &crate::config::Source,
        link_base: Option<&Path>,
    ) -> SyncOptions {
        SyncOptions {
            drive: run.name.clone(),
            require_source_mount_point: self.cfg.policy.require_source_mount_point,
            max_delete_fraction: Some(self.cfg.policy.max_delete_fraction.get()),
            force: self.opts.force,
            link_dest: link_base.map(|p| src.copy_in(p)).filter(|p| p.is_dir()),
            exclude: src.exclude.clone(),
            // The guard counts them.
            expected_entries: None,
        }
    }

    /// The guarded copy of one source, its progress shown as its share of the whole.
    pub(super) fn copy(
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
    pub(super) fn note(run: &mut Run, line: String) {
        tracing::info!("{line}");
        run.notes.push(line);
    }
}

/// One source's place in the sync's progress: the sources before it count as done (their
/// share of the fraction, their bytes).
#[derive(Default)]
pub(super) struct Share {
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
pub(super) fn strays(
    dir: &Path,
    sources: &[crate::config::Source],
) -> std::io::Result<Vec<PathBuf>> {
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

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// A plain mirror's data folder with named sources: entries that are no configured source
/// (the single-source layout's tree, a source since removed) are left alone, and said.
pub(super) fn warn_strays(data: &Path, sources: &[crate::config::Source]) {
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
pub(super) struct ShownProgress {
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
pub(super) fn drop_strays(
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
pub(super) fn add_report(total: &mut SyncReport, r: SyncReport, src: &crate::config::Source) {
    total.files_copied += r.files_copied;
    total.bytes_copied += r.bytes_copied;
    total.files_deleted += r.files_deleted;
    total.files_total += r.files_total;
    total.bytes_total += r.bytes_total;
    total.duration += r.duration;
    total.copied_not_linked += r.copied_not_linked;
    let named = src.name.is_some();
    total.warnings.extend(r.warnings.into_iter().map(|w| {
        if named {
            format!("{}: {w}", src.label())
        } else {
            w
        }
    }));
}
