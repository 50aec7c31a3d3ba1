//! The manifests on a drive (`.extbackup/manifests/`, docs/manifests.md): one per
//! generation (`GENERATION.sha256` + `GENERATION.files`) and one for the plain mirror
//! (`data.sha256` + `data.files`), made by [`write()`] when a tree is complete, read by
//! `scrub` ([`crate::drive::scrub`]), `versions` ([`versions`]) and `restore`
//! ([`check_restored`]). Everything is read and written through the drive handle: no
//! symbolic link is followed.

use std::path::{Path, PathBuf};

use manifest::{Entry, Manifest, Stats};
use serde::Serialize;

use crate::drive::{handle, history, layout};
use crate::Failure;

/// A tree on the drive that has (or gets) a manifest: a generation or the plain mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// The manifest's name: the generation's name, or `data` for the mirror.
    pub name: String,
    /// The tree's folder.
    pub path: PathBuf,
}

/// The trees of the drive mounted at `mount_point`, oldest generation first, the plain
/// mirror `data/` last (when it is there).
pub fn trees(mount_point: &Path) -> Result<Vec<Tree>, Failure> {
    let gens = history::generations_at(mount_point);
    let list = gens.list().map_err(|e| {
        Failure::with(
            format!("listing the generations in {}", gens.dir().display()),
            e,
        )
    })?;
    let mut out: Vec<Tree> = list
        .into_iter()
        .map(|g| Tree {
            name: g.stamp.name(),
            path: g.path,
        })
        .collect();
    let drive = handle::open(mount_point)?;
    if drive.kind(Path::new(layout::DATA_DIR)).ok().flatten() == Some(handle::Kind::Dir) {
        out.push(Tree {
            name: layout::DATA_DIR.to_string(),
            path: mount_point.join(layout::DATA_DIR),
        });
    }
    Ok(out)
}

/// The tree whose folder is `copy` (a generation's or `data/`), if it is one.
pub fn tree_of(mount_point: &Path, copy: &Path) -> Option<Tree> {
    trees(mount_point)
        .ok()?
        .into_iter()
        .find(|t| t.path == copy)
}

/// The manifest of the tree `name` from its sidecar; `None` when it has none (made before
/// manifests, or one could not be written). A sidecar that is not one is an error.
pub fn load(mount_point: &Path, name: &str) -> Result<Option<Manifest>, Failure> {
    let drive = handle::open(mount_point)?;
    let rel = layout::manifest_sidecar(name);
    let data = match drive.read(&rel) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Failure::with(
                format!("reading {}", mount_point.join(&rel).display()),
                drive.explain(&rel, e),
            ))
        }
    };
    Manifest::parse_sidecar(&data)
        .map(Some)
        .map_err(|e| Failure::with(format!("reading {}", mount_point.join(&rel).display()), e))
}

/// Makes the manifest of the tree `tree` (complete now): entries carried over from the
/// manifest of the tree `previous` (for a generation, a file whose inode it lists; for the
/// mirror, inode, size and mtime must match: [`manifest::Carry`]), the rest read; both
/// files written atomically; manifests of trees no longer on the drive removed. A failure
/// is the caller's warning, never a failed run.
pub fn write(
    mount_point: &Path,
    tree: &Tree,
    previous: Option<&str>,
    seen: Option<&manifest::follow::Seen>,
) -> Result<Stats, Failure> {
    let drive = handle::open(mount_point)?;
    // The previous sidecar, read along the walk (never whole: a million files' sidecar is
    // 150 MB).
    let prev = previous.and_then(|p| {
        let rel = layout::manifest_sidecar(p);
        let unusable = |why: String| {
            tracing::warn!(
                "manifest: the previous manifest {} cannot be used ({why}); every file is read",
                mount_point.join(&rel).display()
            );
        };
        match drive.open_file(&rel) {
            Ok((f, _)) => manifest::format::SidecarReader::new(std::io::BufReader::new(f))
                .map_err(|e| unusable(e.to_string()))
                .ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                unusable(drive.explain(&rel, e).to_string());
                None
            }
        }
    });
    let root = handle::real_dir(mount_point, &tree.path)?;
    // A generation on ext4 is new: what it shares with the previous one is the same inode,
    // which rsync never changes (a linked inode is an older generation's too). The mirror is
    // updated in place, and so is a btrfs generation (a snapshot of the previous one: its
    // files keep their inode numbers while rsync changes their mode, owner or times in
    // place): there size and mtime must match too, and the rest is taken fresh.
    let how = if tree.name == layout::DATA_DIR || syncer::generations::is_btrfs(&root) {
        manifest::Carry::SameInodeSizeMtime
    } else {
        manifest::Carry::SameInode
    };
    let io = |rel: &Path, e: std::io::Error| {
        Failure::with(
            format!("writing {}", mount_point.join(rel).display()),
            drive.explain(rel, e),
        )
    };
    let dir = Path::new(layout::MANIFESTS_DIR);
    drive.create_dir_all(dir, 0o755).map_err(|e| io(dir, e))?;
    let sidecar = layout::manifest_sidecar(&tree.name);
    let listing = layout::manifest_listing(&tree.name);
    // Both written as the walk goes, then put in place together.
    let mut staged = drive
        .stage(&[&sidecar, &listing], 0o644)
        .map_err(|e| io(&sidecar, e))?;
    let mut side =
        std::io::BufWriter::new(staged.file(0).try_clone().map_err(|e| io(&sidecar, e))?);
    let mut list =
        std::io::BufWriter::new(staged.file(1).try_clone().map_err(|e| io(&listing, e))?);
    let stats = manifest::write(
        &root,
        prev.into_iter().flatten(),
        how,
        seen,
        &mut side,
        &mut list,
    )
    .map_err(|e| Failure::with(format!("making the manifest of {}", root.display()), e))?;
    std::io::Write::flush(&mut side).map_err(|e| io(&sidecar, e))?;
    std::io::Write::flush(&mut list).map_err(|e| io(&listing, e))?;
    drop((side, list));
    staged.commit().map_err(|e| io(&sidecar, e))?;
    if let Some(why) = &stats.previous_unusable {
        tracing::warn!(
            "manifest: the previous manifest could not be used from {why} on; the files after it \
             were read"
        );
    }
    remove_orphans(mount_point);
    Ok(stats)
}

/// Removes the manifests of trees that are no longer on the drive (pruned generations, a
/// mirror migrated into the first generation).
fn remove_orphans(mount_point: &Path) {
    let Ok(trees) = trees(mount_point) else {
        return;
    };
    let Ok(drive) = handle::open(mount_point) else {
        return;
    };
    let Ok(entries) = drive.read_dir(Path::new(layout::MANIFESTS_DIR)) else {
        return;
    };
    for (name, kind) in entries {
        let name = name.to_string_lossy().into_owned();
        let Some(tree) = name
            .strip_suffix(layout::MANIFEST_LISTING_EXT)
            .or_else(|| name.strip_suffix(layout::MANIFEST_SIDECAR_EXT))
        else {
            continue;
        };
        if kind == handle::Kind::File && !trees.iter().any(|t| t.name == tree) {
            let rel = Path::new(layout::MANIFESTS_DIR).join(&name);
            match drive.remove_file(&rel) {
                Ok(()) => tracing::info!("manifest: removed {name}, its tree is gone"),
                Err(e) => tracing::warn!("manifest: removing {}: {e}", rel.display()),
            }
        }
    }
}

/// How the files a restore wrote compare with the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreCheck {
    /// Whether the tree restored from has a manifest at all.
    pub has_manifest: bool,
    /// Files whose restored content matches the manifest.
    pub verified: u64,
    /// Files whose restored content differs, or could not be read back.
    pub mismatched: Vec<String>,
    /// Regular files restored that the manifest does not list.
    pub unlisted: u64,
}

/// Reads back every regular file a restore wrote (`items`: each path in the copy and where
/// it went) and compares it with the manifest of the tree `copy`.
pub fn check_restored(
    mount_point: &Path,
    copy: &Path,
    items: &[(PathBuf, PathBuf)],
) -> RestoreCheck {
    let mut out = RestoreCheck::default();
    let m = match tree_of(mount_point, copy).map(|t| load(mount_point, &t.name)) {
        Some(Ok(Some(m))) => m,
        Some(Err(e)) => {
            out.mismatched
                .push(format!("the manifest: {}", e.chain().join(": ")));
            return out;
        }
        _ => return out,
    };
    out.has_manifest = true;
    let mut work: Vec<(PathBuf, Entry)> = vec![];
    for (rel, dest) in items {
        let walk = walkdir::WalkDir::new(dest).follow_links(false);
        for f in walk.into_iter().filter_map(Result::ok) {
            if !f.file_type().is_file() {
                continue;
            }
            let sub = f.path().strip_prefix(dest).expect("below dest");
            let in_copy = if sub.as_os_str().is_empty() {
                rel.clone()
            } else {
                rel.join(sub)
            };
            use std::os::unix::ffi::OsStrExt;
            match m.get(in_copy.as_os_str().as_bytes()) {
                Some(e) => work.push((f.path().to_path_buf(), e.clone())),
                None => out.unlisted += 1,
            }
        }
    }
    let results = manifest::parallel(&work, manifest::threads(), |(p, e)| {
        let r = std::fs::File::open(p).and_then(manifest::hash_reader);
        match r {
            Ok((d, _)) if d == e.sha256 => None,
            Ok(_) => Some(format!("{}: differs from the manifest", p.display())),
            Err(err) => Some(format!("{}: cannot be read back: {err}", p.display())),
        }
    });
    for r in results {
        match r {
            None => out.verified += 1,
            Some(m) => out.mismatched.push(m),
        }
    }
    out
}

/// One version of a file: where it is and what it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Version {
    /// The generation (`data` for the plain mirror).
    pub generation: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since 1970.
    pub mtime: i64,
    /// Modification time in UTC (`2026-11-27 15:30:00 UTC`).
    pub mtime_utc: String,
    /// The SHA-256 of the content.
    pub sha256: String,
    /// The inode on the drive: generations with the same one share the file.
    pub inode: u64,
    /// Every generation holding this very file (same inode), this one included.
    pub shared_with: Vec<String>,
}

/// Every version of `rel` (a path in the copy) across the drive's trees, from their
/// manifests (no tree is walked), oldest first; trees without a manifest are named in the
/// second list.
pub fn versions(mount_point: &Path, rel: &Path) -> Result<(Vec<Version>, Vec<String>), Failure> {
    use std::os::unix::ffi::OsStrExt;
    let key = rel.as_os_str().as_bytes();
    let mut out: Vec<Version> = vec![];
    let mut without = vec![];
    for t in trees(mount_point)? {
        let Some(m) = load(mount_point, &t.name)? else {
            without.push(t.name);
            continue;
        };
        if let Some(e) = m.get(key) {
            out.push(Version {
                generation: t.name,
                size: e.size,
                mtime: e.mtime,
                mtime_utc: crate::fmt::fmt_utc(e.mtime.max(0) as u64),
                sha256: manifest::format::hex(&e.sha256),
                inode: e.ino,
                shared_with: vec![],
            });
        }
    }
    let keys: Vec<(u64, String, String)> = out
        .iter()
        .map(|v| (v.inode, v.sha256.clone(), v.generation.clone()))
        .collect();
    for v in &mut out {
        v.shared_with = keys
            .iter()
            .filter(|(ino, sha, _)| *ino == v.inode && *sha == v.sha256)
            .map(|(_, _, g)| g.clone())
            .collect();
    }
    Ok((out, without))
}
