//! The guard: refuse a sync that would wipe or gut the backup on the drive.
//!
//! A mirror (`--delete`) from a source that is missing, empty, or an unmounted mount point
//! (the bare folder underneath) would delete the drive's copy. Both backends call
//! [`guard`] before touching the target.

use crate::{ErrorKind, Excludes, SyncError, SyncOptions};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::Path;

/// Names at the top of a filesystem that are not backup data: never copied, never deleted.
pub(crate) const IGNORED_AT_ROOT: &[&str] = &["lost+found"];

fn unusable(msg: impl Into<String>) -> SyncError {
    SyncError::new(ErrorKind::SourceUnusable, msg)
}

/// Checks the source: it must exist and be a folder; unless `opts.force`, it must not be
/// empty (a `lost+found` alone counts as empty) and, when `opts.require_source_mount_point`,
/// it must be a mount point.
pub fn check_source(source: &Path, opts: &SyncOptions) -> Result<(), SyncError> {
    let meta = fs::metadata(source).map_err(|e| {
        unusable(format!(
            "the source {} cannot be read: check that the NAS's backup repository is there \
             (and mounted)",
            source.display()
        ))
        .with_source(e)
    })?;
    if !meta.is_dir() {
        return Err(unusable(format!(
            "the source {} is not a folder",
            source.display()
        )));
    }
    if opts.force {
        return Ok(());
    }
    if opts.require_source_mount_point && !is_mount_point(source)? {
        return Err(unusable(format!(
            "the source {} is not a mount point: its filesystem is probably not mounted, and \
             mirroring the bare folder would wipe the drive's copy; mount it, or run with \
             --force (or set require_source_mount_point = false) if that is really intended",
            source.display()
        )));
    }
    let mut entries = fs::read_dir(source)
        .map_err(|e| unusable(format!("listing the source {}", source.display())).with_source(e))?;
    // Entries the excludes leave out do not count: mirroring only them empties the drive.
    let has_data = entries.any(|e| {
        e.map(|e| {
            let dir = e.file_type().is_ok_and(|t| t.is_dir());
            !IGNORED_AT_ROOT.iter().any(|n| e.file_name() == **n)
                && !opts.exclude.excludes(Path::new(&e.file_name()), dir)
        })
        .unwrap_or(true)
    });
    if !has_data {
        return Err(unusable(format!(
            "the source {} is empty: mirroring it would delete everything on the drive; \
             check that the backup repository is mounted, or run with --force to really \
             empty the drive's copy",
            source.display()
        )));
    }
    Ok(())
}

/// Whether `path` is a mount point, from `/proc/self/mountinfo`.
pub fn is_mount_point(path: &Path) -> Result<bool, SyncError> {
    let canon = fs::canonicalize(path)
        .map_err(|e| unusable(format!("resolving the source {}", path.display())).with_source(e))?;
    let mounts = oskit::mountinfo::read().map_err(|e| {
        SyncError::new(
            ErrorKind::Other,
            "reading /proc/self/mountinfo to check the source is a mount point (is /proc mounted?)",
        )
        .with_source(e)
    })?;
    Ok(mounts.iter().any(|m| m.target == canon))
}

/// What a mirror would delete from the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeletionCount {
    /// Entries (files, folders, links...) of the target absent from the source.
    pub deleted: u64,
    /// All entries of the target (its top-level `lost+found` excluded).
    pub total: u64,
}

impl DeletionCount {
    /// `deleted / total`, 0 for an empty target.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.deleted as f64 / self.total as f64
        }
    }
}

/// Counts what mirroring `source` onto `target` would delete, by comparing the two trees'
/// names and types folder by folder (no `stat` per file: only directory listings, so it
/// costs little next to the sync). What `exclude` leaves out of the source counts as not
/// there (the mirror deletes it from the target). A missing target deletes nothing.
pub fn count_deletions(
    source: &Path,
    target: &Path,
    exclude: &Excludes,
) -> io::Result<DeletionCount> {
    let mut c = DeletionCount::default();
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            let mut w = Walk { exclude, c: &mut c };
            w.compare(source, target, Path::new(""))?
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(c)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Other,
}

fn list(dir: &Path, top: bool) -> io::Result<Vec<(OsString, Kind)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if top && IGNORED_AT_ROOT.iter().any(|n| name == **n) {
            continue;
        }
        let kind = if e.file_type()?.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        };
        v.push((name, kind));
    }
    Ok(v)
}

struct Walk<'a> {
    exclude: &'a Excludes,
    c: &'a mut DeletionCount,
}

impl Walk<'_> {
    /// Compares the folder `rel` of both trees.
    fn compare(&mut self, source: &Path, target: &Path, rel: &Path) -> io::Result<()> {
        let top = rel.as_os_str().is_empty();
        let tgt = list(target, top)?;
        let mut src = match list(source, top) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(e),
        };
        src.retain(|(n, k)| !self.exclude.excludes(&rel.join(n), *k == Kind::Dir));
        // Only the source side is searched: sort it, scan the target in directory order.
        src.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in tgt {
            self.c.total += 1;
            let in_src = src
                .binary_search_by(|(n, _)| n.as_os_str().cmp(&name))
                .ok()
                .map(|i| src[i].1);
            match (kind, in_src) {
                (Kind::Dir, Some(Kind::Dir)) => {
                    self.compare(&source.join(&name), &target.join(&name), &rel.join(&name))?
                }
                (Kind::Dir, _) => {
                    // Replaced by a non-folder, or gone: the whole subtree goes.
                    self.c.deleted += 1;
                    let sub = count_all(&target.join(&name))?;
                    self.c.deleted += sub;
                    self.c.total += sub;
                }
                (Kind::Other, None) => self.c.deleted += 1,
                (Kind::Other, Some(_)) => {}
            }
        }
        Ok(())
    }
}

/// The entries below `dir`, at any depth (readdir types only: walkdir takes an entry's type
/// from the listing, without a `stat`; symbolic links are not followed).
fn count_all(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        e?;
        n += 1;
    }
    Ok(n)
}

/// Refuses (unless `opts.force`) when mirroring would delete more than
/// `opts.max_delete_fraction` of the target's entries. Returns the count it made (zero
/// when the check is off or forced).
pub fn check_deletions(
    source: &Path,
    target: &Path,
    opts: &SyncOptions,
) -> Result<DeletionCount, SyncError> {
    let Some(max) = opts.max_delete_fraction else {
        return Ok(DeletionCount::default());
    };
    if opts.force {
        return Ok(DeletionCount::default());
    }
    let c = count_deletions(source, target, &opts.exclude).map_err(|e| {
        SyncError::new(
            ErrorKind::Other,
            format!(
                "comparing {} with {} to count deletions",
                source.display(),
                target.display()
            ),
        )
        .with_source(e)
    })?;
    if c.fraction() > max {
        return Err(SyncError::new(
            ErrorKind::TooManyDeletions,
            format!(
                "the sync would delete {} of the {} entries on the drive ({:.0}%, more than the \
                 allowed {:.0}%): the source {} may be incomplete or the wrong folder; check it, \
                 then run with --force (or raise max_delete_fraction) if these deletions are \
                 intended",
                c.deleted,
                c.total,
                c.fraction() * 100.0,
                max * 100.0,
                source.display()
            ),
        ));
    }
    Ok(c)
}

/// Both checks, in order: [`check_source`] then [`check_deletions`] (against
/// `opts.link_dest` when set: the newest generation is what a wipe would lose).
pub fn guard(source: &Path, target: &Path, opts: &SyncOptions) -> Result<DeletionCount, SyncError> {
    check_source(source, opts)?;
    // A new generation starts empty (or half built): what the copy takes away is measured
    // against the previous, complete one.
    let c = check_deletions(source, opts.link_dest.as_deref().unwrap_or(target), opts)?;
    if c.deleted > 0 {
        tracing::info!(
            "the sync will delete {} of {} entries on the target",
            c.deleted,
            c.total
        );
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::opts;
    use std::path::PathBuf;

    fn touch(p: PathBuf) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "x").unwrap();
    }

    #[test]
    fn mount_points_are_recognised() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        let t = tempfile::tempdir().unwrap();
        let sub = t.path().join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(!is_mount_point(&sub).unwrap());
    }

    #[test]
    fn missing_file_empty_and_unmounted_sources_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let e = check_source(&t.path().join("nope"), &opts()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SourceUnusable);

        let file = t.path().join("file");
        fs::write(&file, "x").unwrap();
        assert_eq!(
            check_source(&file, &opts()).unwrap_err().kind(),
            ErrorKind::SourceUnusable
        );

        let empty = t.path().join("empty");
        fs::create_dir_all(empty.join("lost+found")).unwrap();
        let e = check_source(&empty, &opts()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SourceUnusable);
        assert!(e.to_string().contains("--force"), "{e}");
        check_source(
            &empty,
            &SyncOptions {
                force: true,
                ..opts()
            },
        )
        .expect("force overrides emptiness");

        touch(empty.join("data"));
        check_source(&empty, &opts()).expect("has data");
        let must_mount = SyncOptions {
            require_source_mount_point: true,
            ..opts()
        };
        let e = check_source(&empty, &must_mount).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SourceUnusable);
        assert!(e.to_string().contains("not a mount point"), "{e}");
        check_source(
            &empty,
            &SyncOptions {
                force: true,
                ..must_mount
            },
        )
        .expect("force overrides the mount point check");
    }

    #[test]
    fn counts_deleted_entries_including_subtrees_and_type_changes() {
        let t = tempfile::tempdir().unwrap();
        let (s, d) = (t.path().join("s"), t.path().join("d"));
        for p in [
            "keep",
            "a/keep",
            "a/gone",
            "tree/x",
            "tree/y/z",
            "swap/inner",
        ] {
            touch(d.join(p));
        }
        fs::create_dir_all(d.join("lost+found")).unwrap();
        touch(d.join("lost+found/ignored"));
        for p in ["keep", "a/keep", "new"] {
            touch(s.join(p));
        }
        touch(s.join("swap")); // a file where the target has a folder
        let c = count_deletions(&s, &d, &Excludes::default()).unwrap();
        // target: keep, a, a/keep, a/gone, tree, tree/x, tree/y, tree/y/z, swap, swap/inner
        assert_eq!(c.total, 10);
        // deleted: a/gone, tree + 3 below it, swap's folder + inner
        assert_eq!(c.deleted, 1 + 4 + 2);
        assert_eq!(
            count_deletions(&s, &t.path().join("missing"), &Excludes::default()).unwrap(),
            DeletionCount::default()
        );
    }

    #[test]
    fn excluded_entries_count_as_deleted_and_a_source_of_only_them_is_empty() {
        let t = tempfile::tempdir().unwrap();
        let (s, d) = (t.path().join("s"), t.path().join("d"));
        for p in ["keep", "a.tmp", "cache/x", "cache/y"] {
            touch(s.join(p));
            touch(d.join(p));
        }
        let ex = Excludes::new(&["*.tmp", "/cache/"]).unwrap();
        let c = count_deletions(&s, &d, &ex).unwrap();
        assert_eq!(
            (c.deleted, c.total),
            (4, 5),
            "a.tmp, cache and its two files"
        );
        let only_tmp = t.path().join("only-tmp");
        touch(only_tmp.join("b.tmp"));
        let o = SyncOptions {
            exclude: ex,
            ..opts()
        };
        let e = check_source(&only_tmp, &o).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }

    #[test]
    fn too_many_deletions_refused_unless_forced_or_disabled() {
        let t = tempfile::tempdir().unwrap();
        let (s, d) = (t.path().join("s"), t.path().join("d"));
        for i in 0..10 {
            touch(d.join(format!("f{i}")));
        }
        touch(s.join("f0"));
        touch(s.join("f1"));
        let e = check_deletions(&s, &d, &opts()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooManyDeletions);
        assert!(e.to_string().contains("8 of the 10"), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        let forced = SyncOptions {
            force: true,
            ..opts()
        };
        check_deletions(&s, &d, &forced).unwrap();
        let off = SyncOptions {
            max_delete_fraction: None,
            ..opts()
        };
        check_deletions(&s, &d, &off).unwrap();
        let lax = SyncOptions {
            max_delete_fraction: Some(0.9),
            ..opts()
        };
        assert_eq!(check_deletions(&s, &d, &lax).unwrap().deleted, 8);
    }

    #[test]
    fn a_new_generation_is_guarded_against_the_previous_one_not_its_empty_folder() {
        let t = tempfile::tempdir().unwrap();
        let (s, prev, new) = (
            t.path().join("s"),
            t.path().join("prev"),
            t.path().join("new"),
        );
        for i in 0..10 {
            touch(prev.join(format!("f{i}")));
        }
        touch(s.join("f0"));
        fs::create_dir_all(&new).unwrap();
        // Against the empty new folder nothing would go; against the newest generation 9 of
        // 10 entries would: refused.
        guard(&s, &new, &opts()).unwrap();
        let gen = SyncOptions {
            link_dest: Some(prev.clone()),
            ..opts()
        };
        let e = guard(&s, &new, &gen).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooManyDeletions);
        assert!(e.to_string().contains("9 of the 10"), "{e}");
    }
}
