//! Generations in a run: where the copy goes, room for it, the new generation started and
//! committed, and pruning by the retention.

use std::path::{Path, PathBuf};

use super::{Pipeline, Run, StepError};

impl Pipeline<'_> {
    /// History: a plain mirror left by the layout before generations becomes the first
    /// generation (renamed, not copied); the tree a new generation builds on, whose size
    /// counts as already on the drive (the newest generation, else `data/`).
    pub(super) fn history_base(run: &mut Run) -> Result<PathBuf, StepError> {
        if run.history.is_none() {
            return Ok(run.data_dir());
        }
        if let Some(line) = crate::drive::history::migrate(&run.mount_point, &run.data_dir())? {
            Self::note(run, line);
        }
        let newest = crate::drive::history::generations_at(&run.mount_point)
            .newest()
            .map_err(|e| StepError::with("reading the generations on the drive", e))?;
        Ok(newest.map_or_else(|| run.data_dir(), |g| g.path))
    }

    /// History, with a generation to build on: what the new one needs (new and changed
    /// files, its folders: bytes and inodes) against the free room, the space of an
    /// interrupted generation (resumed or removed by the sync) counted as free; pruning the
    /// oldest when short, only after the source passed the guard.
    pub(super) fn generation_space(
        &mut self,
        run: &mut Run,
        newest: &Path,
    ) -> Result<(), StepError> {
        use syncer::generations::{self as g, Cost};
        if let Some(bound) = self.sources_bound(&run.mount_point) {
            let free = self.room(&run.mount_point)?;
            if free.fits(&bound, &Cost::default()) {
                tracing::info!(
                    "a new generation needs at most {} and {} inodes (the source filesystems' \
                     used space and inodes, no walk); free on the drive {} and {} inodes",
                    oskit::human::bytes(bound.bytes),
                    bound.inodes,
                    oskit::human::bytes(free.bytes),
                    free.inodes.map_or("unlimited".into(), |i| i.to_string()),
                );
                return Ok(());
            }
        }
        let mut need = Cost::default();
        for s in self.cfg.sources() {
            let prev = s.copy_in(newest);
            let c = g::new_cost(&s.path, &prev, &s.exclude).map_err(|e| {
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
            need.bytes += c.bytes;
            need.inodes += c.inodes;
        }
        run.expected_new = Some(need.bytes);
        let free = self.room(&run.mount_point)?;
        let reusable = Self::reusable(run, newest);
        tracing::info!(
            "a new generation needs about {} and {} inodes (new and changed files, folders; excluded files left out); free on the drive {} and {} inodes{}",
            oskit::human::bytes(need.bytes),
            need.inodes,
            oskit::human::bytes(free.bytes),
            free.inodes.map_or("unlimited".into(), |i| i.to_string()),
            if reusable.bytes > 0 {
                format!(
                    ", plus {} and {} inodes held by an interrupted generation (reused)",
                    oskit::human::bytes(reusable.bytes),
                    reusable.inodes
                )
            } else {
                String::new()
            }
        );
        if !free.fits(&need, &reusable) {
            return self.make_room(run, need, free, reusable);
        }
        Ok(())
    }

    /// At most what a copy of every source takes on the drive mounted at `mp`, from
    /// `statvfs` alone, when every source is a filesystem of its own
    /// ([`syncer::generations::whole_filesystem_bound`]); `None` otherwise (then the
    /// sources are walked). Issue 22: at a million files a walk is 16 s, this nothing.
    pub(super) fn sources_bound(&self, mp: &Path) -> Option<syncer::generations::Cost> {
        use syncer::generations as g;
        let block = g::block_size(mp);
        let mut total = g::Cost::default();
        for s in self.cfg.sources() {
            let c = g::whole_filesystem_bound(&s.path, block)?;
            total.bytes += c.bytes;
            total.inodes += c.inodes;
        }
        Some(total)
    }

    /// Free bytes and inodes on the drive.
    fn room(&self, mp: &Path) -> Result<crate::drive::history::Room, StepError> {
        Ok(crate::drive::history::Room {
            bytes: self.b.host.free_space(mp)?,
            inodes: crate::drive::history::free_inodes(mp),
        })
    }

    /// What the interrupted generations hold that the newest does not: the sync resumes
    /// the newest of them (what it holds is not copied again) and removes the others, so
    /// their room counts as free.
    fn reusable(run: &Run, newest: &Path) -> syncer::generations::Cost {
        use syncer::generations::{self as g, Generation, Stamp};
        let gens = crate::drive::history::generations_at(&run.mount_point);
        let left: Vec<Generation> = match gens.incomplete() {
            Ok(v) => v
                .into_iter()
                .map(|path| Generation {
                    stamp: Stamp::MIN,
                    path,
                })
                .collect(),
            Err(_) => return g::Cost::default(),
        };
        if left.is_empty() {
            return g::Cost::default();
        }
        let kept = g::inodes(newest).unwrap_or_default();
        g::freeable_cost(&left, &kept).unwrap_or_default()
    }

    /// History, room short: first the guard's view of every source (a renamed, swapped,
    /// emptied or unmounted source is refused here, before anything on the drive is
    /// deleted); then the oldest generations go (never the newest), or the run fails
    /// before deleting anything when even that would not make room.
    pub(super) fn make_room(
        &mut self,
        run: &mut Run,
        need: syncer::generations::Cost,
        free: crate::drive::history::Room,
        reusable: syncer::generations::Cost,
    ) -> Result<(), StepError> {
        let newest = crate::drive::history::generations_at(&run.mount_point)
            .newest()
            .map_err(|e| StepError::with("reading the generations on the drive", e))?
            .map(|g| g.path);
        for src in self.cfg.sources() {
            let opts = self.sync_options(run, &src, newest.as_deref());
            let target = src.copy_in(&run.mount_point.join(".new-generation-not-made"));
            syncer::guard(&src.path, &target, &opts).map_err(|e| {
                StepError::with(
                    format!(
                        "the drive is short of room, but {} {} failed the sync guard, so no \
                         generation was pruned to make room",
                        src.label(),
                        src.path.display()
                    ),
                    e,
                )
            })?;
        }
        let mp = run.mount_point.clone();
        let removed = {
            let this = &*self;
            crate::drive::history::make_room(&mp, need, free, reusable, &mut || this.room(&mp))?
        };
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
    pub(super) fn start_generation(
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
        use syncer::generations::Stamp;
        let previous = Self::history_base(run)?;
        let previous = previous.is_dir().then_some(previous);
        let gens = crate::drive::history::generations_at(&run.mount_point);
        match gens.listing() {
            Ok(l) => {
                for line in l.report() {
                    tracing::warn!("{line}");
                    run.notes.push(line.clone());
                    run.drive_warnings.push(line);
                }
            }
            Err(e) => tracing::warn!("listing {}: {e}", gens.dir().display()),
        }
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

    /// The link-dest alarm's start, for a generation built with hard links to `previous`:
    /// the drive's free bytes now, and what the generation is expected to take when the
    /// free-space step measured it. `None` when the free bytes cannot be had (logged).
    pub(super) fn link_watch(&self, run: &Run, previous: &Path) -> Option<LinkWatch> {
        let expected = run.expected_new;
        match self.b.host.free_space(&run.mount_point) {
            Ok(free_before) => Some(LinkWatch {
                free_before,
                expected,
                previous: previous.to_path_buf(),
            }),
            Err(e) => {
                tracing::debug!("link-dest alarm off for this run: {}", crate::chain(&e));
                None
            }
        }
    }

    /// The link-dest alarm's end, after the copy into `new` (generation `name`): what it
    /// took on the drive against what was expected; far more ([`linkcheck::alarming`]) is
    /// a warning naming the likely cause, in the mail and the run's record.
    ///
    /// [`linkcheck::alarming`]: crate::drive::linkcheck::alarming
    pub(super) fn link_alarm(&mut self, run: &mut Run, w: &LinkWatch, new: &Path, name: &str) {
        use crate::drive::linkcheck;
        let Ok(free_after) = self.b.host.free_space(&run.mount_point) else {
            return;
        };
        let allocated = w.free_before.saturating_sub(free_after);
        // Expected: the free-space step's figure, else the linking pass's (measured on its
        // way through the source), else a walk of the source against the previous
        // generation (only when rsync --link-dest built the generation on its own).
        let expected = match w.expected.or(run.report.new_bytes) {
            Some(e) => e,
            None => {
                let mut sum = 0;
                for s in self.cfg.sources() {
                    match syncer::generations::new_cost(
                        &s.path,
                        &s.copy_in(&w.previous),
                        &s.exclude,
                    ) {
                        Ok(c) => sum += c.bytes,
                        Err(e) => {
                            tracing::debug!("link-dest alarm off for this run: {e}");
                            return;
                        }
                    }
                }
                sum
            }
        };
        tracing::info!(
            "history: generation {name} took {} on the drive (new and changed files: about {})",
            oskit::human::bytes(allocated),
            oskit::human::bytes(expected)
        );
        if !linkcheck::alarming(allocated, expected) {
            return;
        }
        let found = match linkcheck::unlinked(new, &w.previous) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::warn!(
                    "comparing {} with {}: {e}",
                    new.display(),
                    w.previous.display()
                );
                None
            }
        };
        let line = linkcheck::alarm_message(
            name,
            allocated,
            expected,
            new,
            &w.previous,
            found.as_ref(),
            run.report.copied_not_linked,
        );
        tracing::warn!("{line}");
        run.drive_warnings.push(line);
    }

    /// History: the copy succeeded: the generation gets its final name, then the retention
    /// policy prunes (a failed removal is a warning).
    pub(super) fn end_generation(
        &mut self,
        run: &mut Run,
        g: &syncer::generations::Started,
    ) -> Result<(), StepError> {
        use syncer::generations::Stamp;
        let gens = crate::drive::history::generations_at(&run.mount_point);
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
}

/// What the link-dest alarm measured before the copy ([`Pipeline::link_watch`]).
pub(super) struct LinkWatch {
    free_before: u64,
    /// The free-space step's figure, when it walked the source.
    expected: Option<u64>,
    previous: PathBuf,
}
