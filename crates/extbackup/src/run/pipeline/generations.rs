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
        let newest = syncer::generations::Generations::at(&run.mount_point)
            .newest()
            .map_err(|e| StepError::with("reading the generations on the drive", e))?;
        Ok(newest.map_or_else(|| run.data_dir(), |g| g.path))
    }

    /// History, with a generation to build on: what the new one needs (new and changed
    /// files, its folders) against the free space; pruning the oldest when short.
    pub(super) fn generation_space(
        &mut self,
        run: &mut Run,
        newest: &Path,
    ) -> Result<(), StepError> {
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
            oskit::human::bytes(need),
            oskit::human::bytes(free)
        );
        if need > free {
            return self.make_room(run, need, free);
        }
        Ok(())
    }

    /// History, space short: the oldest generations go (never the newest), or the run fails
    /// before deleting anything when even that would not make room.
    pub(super) fn make_room(
        &mut self,
        run: &mut Run,
        need: u64,
        free: u64,
    ) -> Result<(), StepError> {
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
    pub(super) fn end_generation(
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
}
