//! `extbackup restore NAME PATH... --to DIR`: copies files or folders from a drive's copy
//! back, with the backup's fidelity (`rsync -aHAXS --numeric-ids`: owners, modes, times,
//! hard links, ACLs, xattrs, and sparse files kept sparse). Each PATH lands in
//! `DIR/basename`; `/` (everything) puts the copy's contents into DIR itself. Nothing in DIR is overwritten without `--overwrite`: without
//! it, any file that would be replaced is listed and nothing is copied. DIR may not lie
//! inside the source, the drive's mount or on the drive's filesystem.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::config::Source;
use crate::Failure;

/// What to restore.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// Paths in the copy (relative; with named sources they start with the source's
    /// name), or absolute under a configured source; `/` or `.` is everything.
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

/// The path inside the copy for a user's `p`: when absolute under a source, its place in
/// that source's folder (`NAME/...` for a named source); otherwise `p` as written (a path
/// in the copy, `NAME/...` for named sources).
pub fn relative_in_copy(p: &Path, sources: &[Source]) -> Result<PathBuf, Failure> {
    let under = sources
        .iter()
        .find(|s| p.is_absolute() && p.starts_with(&s.path));
    let (mut rel, stripped) = match under {
        Some(s) => (
            s.copy_in(Path::new("")),
            p.strip_prefix(&s.path).expect("checked"),
        ),
        None => (PathBuf::new(), p),
    };
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
pub fn check_destination(to: &Path, sources: &[Source], mount_point: &Path) -> Result<(), Failure> {
    let dest = existing_ancestor(to)
        .ok_or_else(|| Failure::new(format!("{}: cannot resolve the path", to.display())))?;
    // The part of `to` that does not exist yet, appended to its canonical ancestor.
    let abs = std::path::absolute(to).unwrap_or_else(|_| to.to_path_buf());
    let mut full = dest.clone();
    if let Ok(rest) = abs.strip_prefix(existing_ancestor_raw(&abs)) {
        full.push(rest);
    }
    let roots = sources
        .iter()
        .map(|s| ("the source", s.path.as_path()))
        .chain([("the drive's mount", mount_point)]);
    for (what, root) in roots {
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

/// What can be refused before the drive is opened (a usage error): no path, a path with
/// `..`, a destination inside a source or under `mount_root` (where runs and `mount` put
/// drives: restoring there would write onto another drive or be hidden by its mount).
pub fn check_request(
    req: &RestoreRequest,
    sources: &[Source],
    mount_root: &Path,
) -> Result<(), Failure> {
    if req.paths.is_empty() {
        return Err(Failure::new(
            "name at least one path to restore (`/` for everything)",
        ));
    }
    for p in &req.paths {
        relative_in_copy(p, sources)?;
    }
    check_destination(&req.to, sources, mount_root)
}

/// Refuses, naming the first, requested paths that the copy at `copy` does not hold (a
/// usage error: nothing was copied).
pub fn check_paths_in_copy(
    copy: &Path,
    sources: &[Source],
    req: &RestoreRequest,
) -> Result<(), Failure> {
    items(copy, sources, req).map(|_| ())
}

/// Restores `req.paths` from the copy at `copy` (a generation, or the plain mirror `data/`) into `req.to`.
/// `sources` are the configured sources (to accept absolute paths and refuse `to` inside
/// them); `mount_point` is the drive's mount.
pub fn restore(
    copy: &Path,
    mount_point: &Path,
    sources: &[Source],
    req: &RestoreRequest,
) -> Result<Restored, Failure> {
    if req.paths.is_empty() {
        return Err(Failure::new(
            "name at least one path to restore (`/` for everything)",
        ));
    }
    check_destination(&req.to, sources, mount_point)?;
    let items = items(copy, sources, req)?;
    if !req.overwrite {
        refuse_conflicts(copy, &items, &req.to)?;
    }
    std::fs::create_dir_all(&req.to)
        .map_err(|e| Failure::with(format!("creating {}", req.to.display()), e))?;
    let mut done = vec![];
    for it in &items {
        copy_item(copy, it, req.overwrite)?;
        done.push((it.rel.clone(), it.dest.clone()));
    }
    Ok(Restored { items: done })
}

/// What each requested path is in the copy and where it goes; a path not in the copy is an
/// error.
fn items(copy: &Path, sources: &[Source], req: &RestoreRequest) -> Result<Vec<Item>, Failure> {
    let mut items = vec![];
    for p in &req.paths {
        let rel = relative_in_copy(p, sources)?;
        let src = copy.join(&rel);
        if std::fs::symlink_metadata(&src).is_err() {
            return Err(Failure::new(format!(
                "{} is not in the drive's copy (looked for {})",
                p.display(),
                src.display()
            )));
        }
        let dest = match rel.file_name() {
            Some(n) => req.to.join(n),
            None => req.to.clone(),
        };
        items.push(Item { rel, dest });
    }
    Ok(items)
}

/// Refuses, listing them, when files in `to` would be replaced.
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

/// Copies one item with rsync's fidelity.
fn copy_item(copy: &Path, it: &Item, overwrite: bool) -> Result<(), Failure> {
    let src = copy.join(&it.rel);
    let is_dir = std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir());
    let mut cmd = Command::new("rsync");
    // A killed restore must not leave rsync writing into the destination.
    oskit::process::tie_to_parent(&mut cmd)
        .env("LC_ALL", "C")
        // -S: runs of zeros become holes, so a sparse file (a VM image) comes back sparse
        // instead of as its full size of zeros.
        .args(["-aHAXS", "--numeric-ids", "--no-inc-recursive"])
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
        (
            src.clone().into_os_string(),
            it.dest.clone().into_os_string(),
        )
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

    fn source(name: Option<&str>, path: &Path) -> Source {
        Source {
            name: name.map(|n| crate::config::SourceName::try_from(n.to_string()).unwrap()),
            path: path.into(),
            exclude: Default::default(),
            lock: None,
        }
    }

    #[test]
    fn absolute_paths_under_a_named_source_land_in_its_folder() {
        let s = [
            source(Some("photos"), Path::new("/srv/photos")),
            source(Some("docs"), Path::new("/home/docs")),
        ];
        let r = |p: &str| relative_in_copy(Path::new(p), &s).unwrap();
        assert_eq!(r("/srv/photos/2024/a.jpg"), Path::new("photos/2024/a.jpg"));
        assert_eq!(r("/home/docs"), Path::new("docs"));
        assert_eq!(r("docs/x"), Path::new("docs/x"));
    }

    #[test]
    fn paths_are_taken_relative_to_the_copy() {
        let src = [source(None, Path::new("/srv/backup"))];
        let r = |p: &str| relative_in_copy(Path::new(p), &src).map(|p| p.display().to_string());
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
        let srcs = [source(None, &src)];
        for bad in [src.join("a/new/deeper"), src.clone(), mp.join("x")] {
            let e = check_destination(&bad, &srcs, &mp)
                .unwrap_err()
                .chain()
                .join(": ");
            assert!(e.contains("refusing to restore into"), "{e}");
        }
        // A symlink into the source is seen through.
        std::os::unix::fs::symlink(src.join("a"), dir.path().join("link")).unwrap();
        assert!(check_destination(&dir.path().join("link/x"), &srcs, &mp).is_err());
        // Beside them is fine (the plain-folder mount point is no filesystem of its own).
        check_destination(&dir.path().join("restored"), &srcs, &mp).unwrap();
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
