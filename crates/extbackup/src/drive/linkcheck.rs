//! The link-dest alarm: a generation built with hard links to the one before should take
//! on the drive about what changed in the source. Hard links can stop working silently (a
//! previous generation made immutable, a metadata change on every file, the link limit, a
//! file system without hard links): rsync then copies every file, exits 0, and the drive
//! fills in a few runs (rsync's issue #915, "after 2 backup cycles my backup disks are
//! full"). After each such generation the run compares what it allocated on the drive with
//! what it expected, and when it is far more ([`alarming`]) it looks for the cause
//! ([`unlinked`]) and warns ([`alarm_message`]).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Allocation beyond the expected that never raises the alarm by itself (filesystem
/// metadata, folders, extended-attribute blocks, rounding).
pub const SLACK: u64 = 64 << 20;

/// Whether a generation that allocated `allocated` bytes on the drive, where the new and
/// changed files of the source (and its folders) account for `expected`, copied far more
/// than changed: more than twice the expected and more than the expected plus [`SLACK`].
pub fn alarming(allocated: u64, expected: u64) -> bool {
    allocated
        > expected
            .saturating_mul(2)
            .max(expected.saturating_add(SLACK))
}

/// How many at most [`Unlinked`] names as examples.
const EXAMPLES: usize = 3;

/// The files of a new generation that are copies of the previous generation's (same path,
/// size and modification time, another inode): what the hard links should have shared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unlinked {
    /// Copied although unchanged, whose mode or owner differ from the previous copy's (a
    /// `chmod`/`chown` in the source: rsync does not link a file whose metadata changed).
    pub metadata: u64,
    /// Their bytes (allocated on the drive).
    pub metadata_bytes: u64,
    /// Copied although the mode and owner are the previous copy's as well.
    pub same: u64,
    /// Their bytes (allocated on the drive).
    pub same_bytes: u64,
    /// A few of each kind, relative to the generation: (metadata, same).
    pub examples: (Vec<PathBuf>, Vec<PathBuf>),
}

/// Compares every regular file of the generation `new` with the file at its path in
/// `previous`: see [`Unlinked`]. Files with several names are counted once.
pub fn unlinked(new: &Path, previous: &Path) -> std::io::Result<Unlinked> {
    let mut u = Unlinked::default();
    let mut seen = HashSet::new();
    for e in walkdir::WalkDir::new(new) {
        let e = e?;
        if !e.file_type().is_file() {
            continue;
        }
        let md = e.metadata()?;
        if md.nlink() > 1 && !seen.insert(md.ino()) {
            continue;
        }
        let rel = e.path().strip_prefix(new).unwrap_or(e.path());
        let Ok(old) = std::fs::symlink_metadata(previous.join(rel)) else {
            continue;
        };
        let same_content = old.is_file()
            && old.size() == md.size()
            && (old.mtime(), old.mtime_nsec()) == (md.mtime(), md.mtime_nsec());
        if !same_content || (old.dev(), old.ino()) == (md.dev(), md.ino()) {
            continue;
        }
        let bytes = md.blocks() * 512;
        if (old.mode(), old.uid(), old.gid()) != (md.mode(), md.uid(), md.gid()) {
            u.metadata += 1;
            u.metadata_bytes += bytes;
            if u.examples.0.len() < EXAMPLES {
                u.examples.0.push(rel.to_path_buf());
            }
        } else {
            u.same += 1;
            u.same_bytes += bytes;
            if u.examples.1.len() < EXAMPLES {
                u.examples.1.push(rel.to_path_buf());
            }
        }
    }
    Ok(u)
}

fn examples(v: &[PathBuf]) -> String {
    v.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The warning for a generation `name` (built in `new`, linked to `previous`) that
/// allocated `allocated` bytes where `expected` were expected: the numbers, and the likely
/// cause from what [`unlinked`] found (`None`: it could not look), `copied_not_linked`
/// (files the sync copied because their copy had reached the link limit) and whether the
/// previous generation is on another filesystem.
pub fn alarm_message(
    name: &str,
    allocated: u64,
    expected: u64,
    new: &Path,
    previous: &Path,
    found: Option<&Unlinked>,
    copied_not_linked: u64,
) -> String {
    let b = oskit::human::bytes;
    let head = format!(
        "link-dest alarm: generation {name} took {} on the drive, where the new and changed \
         files of the source account for about {}: unchanged files were copied instead of \
         hard-linked to the previous generation, and the drive fills up far faster than the \
         source changes",
        b(allocated),
        b(expected)
    );
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let mut causes = vec![];
    if dev(new).is_some() && dev(new) != dev(previous) {
        causes.push(format!(
            "the previous generation {} is on another filesystem than the new one (hard links \
             cannot cross filesystems)",
            previous.display()
        ));
    }
    if let Some(u) = found {
        if u.metadata > 0 {
            causes.push(format!(
                "{} unchanged file(s) ({}) had their mode or owner changed in the source \
                 (a chmod or chown, e.g. {}): rsync copies such a file instead of linking it; \
                 if the change was meant, the next generation links to this one again",
                u.metadata,
                b(u.metadata_bytes),
                examples(&u.examples.0)
            ));
        }
        if u.same > 0 {
            causes.push(format!(
                "{} file(s) ({}) with the previous generation's content, mode and owner were \
                 copied, not linked (e.g. {}): hard links to the previous generation failed \
                 (its files immutable or unreadable, a filesystem without hard links) or \
                 their ACLs or extended attributes changed",
                u.same,
                b(u.same_bytes),
                examples(&u.examples.1)
            ));
        }
    }
    if copied_not_linked > 0 {
        causes.push(format!(
            "{copied_not_linked} file(s) had reached the filesystem's limit of hard links per \
             file and were copied"
        ));
    }
    if causes.is_empty() {
        causes.push(match found {
            Some(_) => "no unchanged file was copied instead of linked: the extra room went \
                        elsewhere (sparse files written in full? something else writing to \
                        the drive during the run?)"
                .to_string(),
            None => "the files were not compared with the previous generation's".to_string(),
        });
    }
    format!("{head}. Likely cause: {}", causes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_alarm_needs_twice_the_expected_and_the_slack_beyond_it() {
        assert!(!alarming(0, 0));
        assert!(!alarming(SLACK, 0), "the slack alone");
        assert!(alarming(SLACK + 1, 0));
        assert!(!alarming(SLACK + 1000, 1000));
        assert!(alarming(SLACK + 1001, 1000));
        // Large changes: twice the expected.
        let g = 10 << 30;
        assert!(!alarming(2 * g, g));
        assert!(alarming(2 * g + 1, g));
        assert!(!alarming(u64::MAX, u64::MAX / 2 + 1), "no overflow");
    }

    #[test]
    fn copies_of_unchanged_files_are_told_apart_by_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (prev, new) = (dir.path().join("prev"), dir.path().join("new"));
        std::fs::create_dir_all(prev.join("d")).unwrap();
        std::fs::create_dir_all(new.join("d")).unwrap();
        for n in ["linked", "copied", "chmodded", "changed", "d/copied2"] {
            std::fs::write(prev.join(n), vec![1u8; 10_000]).unwrap();
        }
        // The new generation: one link, two plain copies (times kept), one copy whose
        // mode changed, one changed file, one new file.
        std::fs::hard_link(prev.join("linked"), new.join("linked")).unwrap();
        let copy = |n: &str| {
            std::fs::copy(prev.join(n), new.join(n)).unwrap();
            let t = std::fs::metadata(prev.join(n)).unwrap().modified().unwrap();
            std::fs::File::options()
                .write(true)
                .open(new.join(n))
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        copy("copied");
        copy("d/copied2");
        copy("chmodded");
        std::fs::set_permissions(new.join("chmodded"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::set_permissions(
            prev.join("chmodded"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::write(new.join("changed"), vec![2u8; 20_000]).unwrap();
        std::fs::write(new.join("brand-new"), "x").unwrap();
        let u = unlinked(&new, &prev).unwrap();
        assert_eq!((u.metadata, u.same), (1, 2), "{u:?}");
        assert_eq!(u.examples.0, vec![PathBuf::from("chmodded")]);
        let mut same = u.examples.1.clone();
        same.sort();
        assert_eq!(
            same,
            vec![PathBuf::from("copied"), PathBuf::from("d/copied2")]
        );
        assert!(u.same_bytes >= 20_000, "{u:?}");

        let m = alarm_message("G", 100 << 20, 1 << 20, &new, &prev, Some(&u), 0);
        assert!(
            m.starts_with("link-dest alarm: generation G took 100.0 MiB"),
            "{m}"
        );
        assert!(
            m.contains("1 unchanged file(s)") && m.contains("e.g. chmodded"),
            "{m}"
        );
        assert!(m.contains("2 file(s)") && m.contains("hard links"), "{m}");
        assert!(
            !m.contains("another filesystem") && !m.contains("limit"),
            "{m}"
        );
        let m = alarm_message("G", 100 << 20, 0, &new, &prev, None, 7);
        assert!(
            m.contains("7 file(s) had reached the filesystem's limit"),
            "{m}"
        );
    }
}
