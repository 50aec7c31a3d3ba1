//! After the copy: the manifest of the tree just completed (the new generation, or the
//! plain mirror), hashes carried over from the previous manifest where files did not
//! change; then, with `[policy] scrub_share`, the rotating scrub. Neither ever fails the
//! run: what goes wrong is a warning in the mail and the run's record.

use std::time::Instant;

use manifest::follow::{Follower, Seen};

use crate::drive::manifests::{self, Tree};
use crate::drive::{handle, layout};

use super::{Pipeline, Run};

/// The tree the manifest is made of and the tree whose manifest it carries hashes over from.
fn trees(run: &Run, generation: Option<&str>) -> (Tree, Option<String>) {
    let mp = &run.mount_point;
    match generation {
        Some(name) => {
            let path = crate::drive::history::generations_at(mp).dir().join(name);
            let previous = previous_with_manifest(mp, name);
            (
                Tree {
                    name: name.to_string(),
                    path,
                },
                previous,
            )
        }
        None => {
            let previous = handle::open(mp).ok().and_then(|d| {
                let side = layout::manifest_sidecar(layout::DATA_DIR);
                (d.kind(&side).ok().flatten() == Some(handle::Kind::File))
                    .then(|| layout::DATA_DIR.to_string())
            });
            (
                Tree {
                    name: layout::DATA_DIR.to_string(),
                    path: run.data_dir(),
                },
                previous,
            )
        }
    }
}

impl Pipeline<'_> {
    /// With no previous manifest to carry hashes over from (a first copy), every file the
    /// copy writes is hashed as it is closed, while the copy goes on ([`Follower`]); `None`
    /// otherwise, or when that cannot be (said in the log: the files are read after).
    pub(super) fn follow_copy(run: &mut Run, generation: Option<&str>) -> Option<Follower> {
        if trees(run, generation).1.is_some() {
            return None;
        }
        match Follower::start(&run.mount_point) {
            Ok(f) => Some(f),
            Err(e) => {
                Self::note(
                    run,
                    format!(
                        "manifest: the first copy's files are read after the copy, not while it \
                         writes them (fanotify: {e})"
                    ),
                );
                None
            }
        }
    }

    /// The manifest of the generation `generation` (its name), or of `data/` when `None`;
    /// `seen`: the files hashed while the copy wrote them.
    pub(super) fn manifest(&self, run: &mut Run, generation: Option<String>, seen: Option<Seen>) {
        let mp = run.mount_point.clone();
        let (tree, previous) = trees(run, generation.as_deref());
        let t0 = Instant::now();
        match manifests::write(&mp, &tree, previous.as_deref(), seen.as_ref()) {
            Ok(s) => {
                Self::note(
                    run,
                    format!(
                        "manifest: {} lists {} file(s): {} read ({}), {} carried over{}{}, in {}",
                        layout::manifest_listing(&tree.name).display(),
                        s.files,
                        s.read,
                        oskit::human::bytes(s.bytes_read),
                        s.carried,
                        previous.map(|p| format!(" from {p}")).unwrap_or_default(),
                        match s.alongside {
                            0 => String::new(),
                            n => format!(", {n} hashed while the copy wrote them"),
                        },
                        oskit::human::duration(t0.elapsed()),
                    ),
                );
                let n = s.problem_count as usize;
                for p in s.problems.into_iter().take(20) {
                    run.drive_warnings
                        .push(format!("manifest: left out, cannot be read: {p}"));
                }
                if n > 20 {
                    run.drive_warnings
                        .push(format!("manifest: {} more file(s) left out", n - 20));
                }
            }
            Err(e) => {
                let line = format!(
                    "manifest: the manifest of {} could not be written (the copy itself is \
                     complete; scrub and versions will not cover it): {}",
                    tree.name,
                    e.chain().join(": ")
                );
                tracing::warn!("{line}");
                run.drive_warnings.push(line);
            }
        }
        let share = self.cfg.policy.scrub_share;
        if share > 0 {
            let (line, warnings) =
                crate::drive::scrub::after_sync(&self.cfg.state_dir, &run.name, &mp, share);
            if !line.is_empty() {
                Self::note(run, line);
            }
            for w in &warnings {
                tracing::warn!("{w}");
            }
            run.drive_warnings.extend(warnings);
        }
    }
}

/// The newest generation before `name` (listed or still being made) that has a manifest to
/// carry hashes over from.
fn previous_with_manifest(mp: &std::path::Path, name: &str) -> Option<String> {
    let trees = manifests::trees(mp).ok()?;
    let drive = handle::open(mp).ok()?;
    // A generation still being made (`.incomplete`) is not listed yet: every one is before it.
    let before = trees
        .iter()
        .position(|t| t.name == name)
        .unwrap_or(trees.len());
    trees[..before]
        .iter()
        .filter(|t| t.name != layout::DATA_DIR)
        .rev()
        .find(|t| {
            drive
                .kind(&layout::manifest_sidecar(&t.name))
                .ok()
                .flatten()
                == Some(handle::Kind::File)
        })
        .map(|t| t.name.clone())
}
