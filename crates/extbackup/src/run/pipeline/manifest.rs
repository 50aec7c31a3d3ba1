//! After the copy: the manifest of the tree just completed (the new generation, or the
//! plain mirror), hashes carried over from the previous manifest where files did not
//! change; then, with `[policy] scrub_share`, the rotating scrub. Neither ever fails the
//! run: what goes wrong is a warning in the mail and the run's record.

use std::time::Instant;

use crate::drive::manifests::{self, Tree};
use crate::drive::{handle, layout};

use super::{Pipeline, Run};

impl Pipeline<'_> {
    /// The manifest of the generation `generation` (its name), or of `data/` when `None`.
    pub(super) fn manifest(&self, run: &mut Run, generation: Option<String>) {
        let mp = run.mount_point.clone();
        let (tree, previous) = match generation {
            Some(name) => {
                let path = crate::drive::history::generations_at(&mp).dir().join(&name);
                let previous = previous_with_manifest(&mp, &name);
                (Tree { name, path }, previous)
            }
            None => (
                Tree {
                    name: layout::DATA_DIR.to_string(),
                    path: run.data_dir(),
                },
                Some(layout::DATA_DIR.to_string()),
            ),
        };
        let t0 = Instant::now();
        match manifests::write(&mp, &tree, previous.as_deref()) {
            Ok(s) => {
                Self::note(
                    run,
                    format!(
                        "manifest: {} lists {} file(s): {} read ({}), {} carried over{}, in {}",
                        layout::manifest_listing(&tree.name).display(),
                        s.files,
                        s.read,
                        oskit::human::bytes(s.bytes_read),
                        s.carried,
                        previous.map(|p| format!(" from {p}")).unwrap_or_default(),
                        oskit::human::duration(t0.elapsed()),
                    ),
                );
                let n = s.problems.len();
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

/// The newest generation before `name` that has a manifest to carry hashes over from.
fn previous_with_manifest(mp: &std::path::Path, name: &str) -> Option<String> {
    let trees = manifests::trees(mp).ok()?;
    let drive = handle::open(mp).ok()?;
    let before = trees.iter().position(|t| t.name == name)?;
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
