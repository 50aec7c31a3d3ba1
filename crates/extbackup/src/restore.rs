//! `extbackup restore NAME PATH... --to DIR`: copies files or folders from a drive's copy
//! back, with the backup's fidelity (`rsync -aHAX --numeric-ids`: owners, modes, times,
//! hard links, ACLs, xattrs). Nothing in DIR is overwritten without `--overwrite`: without
//! it, any file that would be replaced is listed and nothing is copied. DIR may not lie
//! inside the source, the drive's mount or on the drive's filesystem.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::Failure;

/// What to restore.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// Paths as in the source (relative, or absolute under the configured source); `/`
    /// or `.` is everything.
    pub paths: Vec<PathBuf>,
    /// The folder they go into (created if missing).
    pub to: PathBuf,
    /// Replace files that exist in `to`.
    pub overwrite: bool,
}

/// The item `rel` (relative to the copy's root) restored to `dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Item {
    rel: PathBuf,
    dest: PathBuf,
}

/// The path inside the copy for a user's `p`: relative to `source` when absolute under it.
fn relative_in_copy(p: &Path, source: Option<&Path>) -> Result<PathBuf, Failure> {
    let stripped = match source {
        Some(s) if p.is_absolute() && p.starts_with(s) => p.strip_prefix(s).expect("checked"),
        _ => p,
    };
    let mut rel = PathBuf::new();
    for c in stripped.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Failure::new(format!(
                    "{}: `..` is not allowed in a path to restore",
                    p.display()
                )))
            }
        }
    }
    Ok(rel)
}

/// The nearest existing ancestor of `p` (itself if it exists), canonical.
fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    let mut cur = std::path::absolute(p).ok()?;
    loop {
        if let Ok(c) = cur.canonicalize() {
            return Some(c);
        }
        if !cur.pop() {
            return None;
        }
    }
}

/// Refuses a destination inside the source, the drive's mount point, or on the drive.
pub fn check_destination(
    to: &Path,
    source: Option<&Path>,
    mount_point: &Path,
) -> Result<(), Failure> {
    let dest = existing_ancestor(to)
        .ok_or_else(|| Failure::new(format!("{}: cannot resolve the path", to.display())))?;
    // The part of `to` that does not exist yet, appended to its canonical ancestor.
    let abs = std::path::absolute(to).unwrap_or_else(|_| to.to_path_buf());
    let mut full = dest.clone();
    if let Ok(rest) = abs.strip_prefix(existing_ancestor_raw(&abs)) {
        full.push(rest);
    }
    for (what, root) in [
        ("the source", source),
        ("the drive's mount", Some(mount_point)),
    ] {
        let Some(root) = root else { continue };
        let Ok(root) = root.canonicalize() else {
            continue;
        };
        if full.starts_with(&root) {
            return Err(Failure::new(format!(
                "refusing to restore into {}: it is inside {what} ({}); choose a folder \
                 elsewhere (then move the files where they belong)",
                to.display(),
                root.display()
            )));
        }
    }
    // The drive's filesystem: the mount point's device, when it is a mount point.
    let dev_of = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let drive_dev =
        dev_of(mount_point).filter(|d| Some(*d) != mount_point.parent().and_then(dev_of));
    if drive_dev.is_some() && std::fs::metadata(&dest).map(|m| m.dev()).ok() == drive_dev {
        return Err(Failure::new(format!(
            "refusing to restore into {}: it is on the drive's own filesystem",
            to.display()
        )));
    }
    Ok(())
}

/// The nearest existing ancestor of `abs`, not canonicalized.
fn existing_ancestor_raw(abs: &Path) -> PathBuf {
    let mut cur = abs.to_path_buf();
    while !cur.exists() && cur.pop() {}
    cur
}

/// The files under `copy/rel` that would replace something in `dest` (a non-folder
/// entry, or a folder where a file is).
fn conflicts(copy: &Path, item: &Item) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![];
    let mut stack = vec![(copy.join(&item.rel), item.dest.clone())];
    while let Some((src, dst)) = stack.pop() {
        let smd = std::fs::symlink_metadata(&src)?;
        match std::fs::symlink_metadata(&dst) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
            Ok(dmd) => {
                if smd.is_dir() && dmd.is_dir() {
                    for e in std::fs::read_dir(&src)? {
                        let e = e?;
                        stack.push((e.path(), dst.join(e.file_name())));
                    }
                } else {
                    out.push(dst);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Each restored path and where it went.
    pub items: Vec<(PathBuf, PathBuf)>,
}

/// Restores `req.paths` from the copy at `copy` (the drive's `data/`) into `req.to`.
/// `source` is the configured source (to accept absolute paths and refuse `to` inside it);
/// `mount_point` is the drive's mount.
pub fn restore(
    copy: &Path,
    mount_point: &Path,
    source: Option<&Path>,
    req: &RestoreRequest,
) -> Result<Restored, Failure> {
    if req.paths.is_empty() {
        return Err(Failure::new(
            "name at least one path to restore (`/` for everything)",
        ));
    }
    check_destination(&req.to, source, mount_point)?;
    let items = req
        .paths
        .iter()
        .map(|p| item(copy, source, p, &req.to))
        .collect::<Result<Vec<_>, _>>()?;
    if !req.overwrite {
        refuse_conflicts(copy, &items, &req.to)?;
    }
    std::fs::create_dir_all(&req.to)
        .map_err(|e| Failure::with(format!("creating {}", req.to.display()), e))?;
    let mut done = vec![];
    for it in &items {
        copy_back(copy, it, req.overwrite)?;
        done.push((it.rel.clone(), it.dest.clone()));
    }
    Ok(Restored { items: done })
}

/// What restoring `p` into `to` copies, and where; an error when the copy lacks it.
fn item(copy: &Path, source: Option<&Path>, p: &Path, to: &Path) -> Result<Item, Failure> {
    let rel = relative_in_copy(p, source)?;
    let src = copy.join(&rel);
    if std::fs::symlink_metadata(&src).is_err() {
        return Err(Failure::new(format!(
            "{} is not in the drive's copy (looked for {})",
            p.display(),
            src.display()
        )));
    }
    let dest = match rel.file_name() {
        Some(n) => to.join(n),
        None => to.to_path_buf(),
    };
    Ok(Item { rel, dest })
}

/// Refuses (naming up to 20 of them) when restoring `items` would replace files in `to`.
fn refuse_conflicts(copy: &Path, items: &[Item], to: &Path) -> Result<(), Failure> {
    let mut all = vec![];
    for it in items {
        all.extend(
            conflicts(copy, it)
                .map_err(|e| Failure::with(format!("comparing with {}", it.dest.display()), e))?,
        );
    }
    if all.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = all
        .iter()
        .take(20)
        .map(|p| format!("  {}", p.display()))
        .collect();
    let more = if all.len() > 20 {
        format!("\n  ... and {} more", all.len() - 20)
    } else {
        String::new()
    };
    Err(Failure::new(format!(
        "refusing to restore: {} file(s) in {} would be replaced; nothing was copied. \
         Restore into an empty folder, or pass --overwrite to replace them:\n{}{more}",
        all.len(),
        to.display(),
        shown.join("\n")
    )))
}

/// Copies one item back with rsync, keeping owners, modes, times, links, ACLs and xattrs.
fn copy_back(copy: &Path, it: &Item, overwrite: bool) -> Result<(), Failure> {
    let src = copy.join(&it.rel);
    let is_dir = std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir());
    let mut cmd = Command::new("rsync");
    cmd.env("LC_ALL", "C")
        .args(["-aHAX", "--numeric-ids", "--no-inc-recursive"])
        // Exact times: with rsync's whole-second default, an item made in the same
        // second as its original keeps the time of its making (symlinks showed it).
        .arg("--modify-window=-1");
    if !overwrite {
        cmd.arg("--ignore-existing");
    }
    // A folder: its contents into dest/ (made by rsync); a file: onto dest.
    let (s, d) = if is_dir {
        (with_slash(&src), with_slash(&it.dest))
    } else {
        (src.into_os_string(), it.dest.clone().into_os_string())
    };
    cmd.arg("--").arg(s).arg(d);
    tracing::info!("restoring {} to {}", it.rel.display(), it.dest.display());
    let out = cmd
        .output()
        .map_err(|e| Failure::with("starting rsync (apt-get install rsync)", e))?;
    if !out.status.success() {
        return Err(Failure::new(format!(
            "rsync failed ({}) restoring {} to {}: {}",
            out.status,
            it.rel.display(),
            it.dest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn with_slash(p: &Path) -> std::ffi::OsString {
    let mut s = p.as_os_str().to_os_string();
    s.push("/");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_relative_to_the_copy() {
        let src = Path::new("/srv/backup");
        let r =
            |p: &str| relative_in_copy(Path::new(p), Some(src)).map(|p| p.display().to_string());
        assert_eq!(r("/srv/backup/sub/x").unwrap(), "sub/x");
        assert_eq!(r("sub/x").unwrap(), "sub/x");
        assert_eq!(r("/sub").unwrap(), "sub");
        assert_eq!(r("/").unwrap(), "");
        assert_eq!(r(".").unwrap(), "");
        assert!(r("sub/../../etc").is_err());
    }

    #[test]
    fn a_destination_inside_the_source_or_the_mount_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mp = dir.path().join("mnt");
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::create_dir_all(&mp).unwrap();
        for bad in [src.join("a/new/deeper"), src.clone(), mp.join("x")] {
            let e = check_destination(&bad, Some(&src), &mp)
                .unwrap_err()
                .chain()
                .join(": ");
            assert!(e.contains("refusing to restore into"), "{e}");
        }
        // A symlink into the source is seen through.
        std::os::unix::fs::symlink(src.join("a"), dir.path().join("link")).unwrap();
        assert!(check_destination(&dir.path().join("link/x"), Some(&src), &mp).is_err());
        // Beside them is fine (the plain-folder mount point is no filesystem of its own).
        check_destination(&dir.path().join("restored"), Some(&src), &mp).unwrap();
    }

    #[test]
    fn conflicts_list_files_that_exist_and_merge_folders() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        std::fs::create_dir_all(copy.join("sub/deep")).unwrap();
        std::fs::write(copy.join("sub/a"), "a").unwrap();
        std::fs::write(copy.join("sub/deep/b"), "b").unwrap();
        let to = dir.path().join("to");
        let it = Item {
            rel: "sub".into(),
            dest: to.join("sub"),
        };
        assert!(conflicts(&copy, &it).unwrap().is_empty());
        std::fs::create_dir_all(to.join("sub/deep")).unwrap();
        assert!(conflicts(&copy, &it).unwrap().is_empty(), "folders merge");
        std::fs::write(to.join("sub/deep/b"), "old").unwrap();
        assert_eq!(conflicts(&copy, &it).unwrap(), vec![to.join("sub/deep/b")]);
    }
}
