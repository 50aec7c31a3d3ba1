//! History on the drive: what a run does with generations (migration of a plain mirror,
//! pruning by the retention policy and under space pressure), and `extbackup history`.
//! The setting is [`crate::config::history`]; the tree work itself is in
//! [`syncer::generations`].

use std::path::{Path, PathBuf};

use serde::Serialize;
use syncer::generations::{self, Generation, Generations, Retention, Stamp};

use crate::drive::layout;
use crate::Failure;

/// The generations of the drive mounted at `mount_point`, judged at the orchestrator's
/// clock ([`crate::fmt::now`]): a generation dated more than a day after it is
/// future-dated, never taken as the newest.
pub fn generations_at(mount_point: &Path) -> Generations {
    Generations::at(mount_point).judged_at(Stamp(crate::fmt::now() as i64))
}

/// Free inodes on the filesystem holding `p` (for root, the reserved ones too); `None`
/// when the filesystem has no fixed number of them (btrfs says 0 of 0).
pub fn free_inodes(p: &Path) -> Option<u64> {
    oskit::free_inodes(p).ok().flatten()
}

/// Makes the plain mirror `data/` of a drive the first generation, without copying; dated
/// by the drive's last run record (else the folder's modification time). Returns a line
/// for the log and mail, or `None` when there was nothing to migrate.
pub fn migrate(mount_point: &Path, legacy: &Path) -> Result<Option<String>, Failure> {
    if !legacy.is_dir() {
        return Ok(None);
    }
    let gens = generations_at(mount_point);
    let record = layout::meta_dir(mount_point).join(layout::LAST_RUN);
    let mtime = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
    };
    let stamp = Stamp(mtime(&record).or_else(|| mtime(legacy)).unwrap_or(0));
    let g = gens.migrate(legacy, stamp).map_err(|e| {
        Failure::with(
            format!(
                "making the mirror {} the first generation under {}",
                legacy.display(),
                gens.dir().display()
            ),
            e,
        )
    })?;
    Ok(g.map(|g| {
        format!(
            "history: the mirror {} became the first generation {} (renamed, nothing copied)",
            legacy.display(),
            g.stamp.name()
        )
    }))
}

/// Prunes what `policy` does not keep (at `now`), oldest first; never the newest. Returns
/// the pruned generations' names; a removal that fails is a warning in `warnings`.
pub fn prune(
    mount_point: &Path,
    policy: &Retention,
    now: Stamp,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let gens = generations_at(mount_point);
    let list = match gens.list() {
        Ok(l) => l,
        Err(e) => {
            warnings.push(format!("history: listing the generations to prune: {e}"));
            return vec![];
        }
    };
    let stamps: Vec<Stamp> = list.iter().map(|g| g.stamp).collect();
    let keep = policy.keep(&stamps, now);
    let mut pruned = vec![];
    for (g, keep) in list.iter().zip(keep) {
        if keep {
            continue;
        }
        match gens.remove(g) {
            Ok(()) => pruned.push(g.stamp.name()),
            Err(e) => warnings.push(format!(
                "history: removing the generation {}: {e}",
                g.stamp.name()
            )),
        }
    }
    pruned
}

/// Room on the drive: free bytes and free inodes (`None`: not limited, btrfs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    /// Free bytes.
    pub bytes: u64,
    /// Free inodes.
    pub inodes: Option<u64>,
}

impl Room {
    /// Whether `need` fits, with `extra` given back besides.
    pub fn fits(&self, need: &generations::Cost, extra: &generations::Cost) -> bool {
        let inodes = match self.inodes {
            Some(i) => need.inodes <= i.saturating_add(extra.inodes),
            None => true,
        };
        need.bytes <= self.bytes.saturating_add(extra.bytes) && inodes
    }
}

/// Makes room for a new generation needing `need` (bytes and inodes) when `free` is free
/// and `reusable` is held by interrupted generations it resumes or removes: removes the
/// oldest generations (never the newest complete one, never a future-dated one) until it
/// fits, re-reading the free room with `free_now` after each. When even removing every
/// older generation would not make room, fails before deleting anything, naming what is
/// short (bytes or inodes). Returns the names removed.
///
/// Called only after this run's source passed the wipe guard.
pub fn make_room(
    mount_point: &Path,
    need: generations::Cost,
    free: Room,
    reusable: generations::Cost,
    free_now: &mut dyn FnMut() -> Result<Room, Failure>,
) -> Result<Vec<String>, Failure> {
    let gens = generations_at(mount_point);
    let io = |what: &str, e: std::io::Error| Failure::with(what.to_string(), e);
    let list = gens
        .list()
        .map_err(|e| io("listing the generations on the drive", e))?;
    let human = oskit::human::bytes;
    let inodes_short = |free: &Room, back: u64| {
        free.inodes
            .is_some_and(|i| need.inodes > i.saturating_add(back))
    };
    let Some((newest, older)) = list.split_last() else {
        if inodes_short(&free, reusable.inodes) {
            return Err(Failure::new(format!(
                "too few free inodes on the drive for the copy: the source needs about {} \
                 inodes (files and folders) on it, and it has {} free; use a drive made with \
                 more inodes (mkfs.ext4 -i or -N) or fewer files",
                need.inodes,
                free.inodes.unwrap_or(0)
            )));
        }
        return Err(Failure::new(format!(
            "no space on the drive for the copy: the source needs about {} more on it, and it has {} free; use a bigger drive or free space on it",
            human(need.bytes),
            human(free.bytes)
        )));
    };
    let kept =
        generations::inodes(&newest.path).map_err(|e| io("reading the newest generation", e))?;
    let can_free = generations::freeable_cost(older, &kept)
        .map_err(|e| io("measuring the older generations", e))?;
    let back = generations::Cost {
        bytes: can_free.bytes + reusable.bytes,
        inodes: can_free.inodes + reusable.inodes,
    };
    if inodes_short(&free, back.inodes) {
        return Err(Failure::new(format!(
            "the drive cannot hold even one more generation: it is short of inodes (files), \
             not bytes: the new one needs about {} inodes, the drive has {} free, and \
             removing all {} older generation(s) would give back only about {}; nothing was \
             deleted. Use a drive made with more inodes (mkfs.ext4 -i or -N), or \
             `history = false` for a plain mirror",
            need.inodes,
            free.inodes.unwrap_or(0),
            older.len(),
            can_free.inodes
        )));
    }
    if need.bytes > free.bytes.saturating_add(back.bytes) {
        return Err(Failure::new(format!(
            "the drive cannot hold even one more generation: the new one needs about {}, the drive has {} free, and removing all {} older generation(s) would give back only about {}; nothing was deleted. Use a bigger drive, or `history = false` for a plain mirror",
            human(need.bytes),
            human(free.bytes),
            older.len(),
            human(can_free.bytes)
        )));
    }
    let mut removed = vec![];
    let mut free = free;
    for g in older {
        if free.fits(&need, &reusable) {
            break;
        }
        gens.remove(g)
            .map_err(|e| io(&format!("removing the generation {}", g.stamp.name()), e))?;
        tracing::warn!(
            "history: room is short (need {} and {} inodes, {} and {} inodes free): removed the oldest generation {}",
            human(need.bytes),
            need.inodes,
            human(free.bytes),
            free.inodes.map_or("unlimited".into(), |i| i.to_string()),
            g.stamp.name()
        );
        removed.push(g.stamp.name());
        free = free_now()?;
    }
    Ok(removed)
}

/// The folder a reader (restore, verify, mount) works on: the generation at or before `at`,
/// else the newest generation, else the plain mirror `data/`; a real folder on the drive (a
/// symlink there, or on the way, is refused: what is restored comes from the drive only).
pub fn copy_root(mount_point: &Path, at: Option<&str>) -> Result<PathBuf, Failure> {
    let root = copy_root_unchecked(mount_point, at)?;
    if std::fs::symlink_metadata(&root).is_err() {
        return Ok(root);
    }
    crate::drive::handle::real_dir(mount_point, &root)
}

fn copy_root_unchecked(mount_point: &Path, at: Option<&str>) -> Result<PathBuf, Failure> {
    let gens = generations_at(mount_point);
    let io = |e: std::io::Error| {
        Failure::with(
            format!("reading the generations in {}", gens.dir().display()),
            e,
        )
    };
    match at {
        None => Ok(match gens.newest().map_err(io)? {
            Some(g) => g.path,
            None => mount_point.join(layout::DATA_DIR),
        }),
        Some(s) => {
            let stamp = Stamp::parse(s).ok_or_else(|| {
                Failure::new(format!(
                    "{s:?} is not a date: write 2026-11-27, 2026-11-27T15:30 or a generation's name (UTC)"
                ))
            })?;
            let g = gens.at_or_before(stamp).map_err(io)?;
            let g = g.ok_or_else(|| {
                let first = gens
                    .list()
                    .ok()
                    .and_then(|l| l.first().map(|g| g.stamp.iso()));
                Failure::new(match first {
                    Some(f) => format!("no generation at or before {s}: the oldest is {f}"),
                    None => "the drive holds no generations (a plain mirror, or never written)"
                        .to_string(),
                })
            })?;
            tracing::info!("using the generation {}", g.stamp.name());
            Ok(g.path)
        }
    }
}

/// A line of `extbackup history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The generation's name (`2026-11-27T153000Z`).
    pub name: String,
    /// Its time, ISO 8601 UTC.
    pub date: String,
    /// Entries in it.
    pub files: u64,
    /// Allocated bytes of the whole tree.
    pub bytes: u64,
    /// Bytes not shared with the generation before (what this run added).
    pub bytes_new: u64,
    /// Its folder (where the drive was mounted for the listing).
    #[serde(skip)]
    pub path: PathBuf,
}

/// The generations under `mount_point`, oldest first, with their figures.
pub fn list(mount_point: &Path) -> Result<Vec<HistoryEntry>, Failure> {
    let gens = generations_at(mount_point);
    let io = |what: String, e: std::io::Error| Failure::with(what, e);
    let list: Vec<Generation> = gens
        .list()
        .map_err(|e| io(format!("listing {}", gens.dir().display()), e))?;
    let mut prev = std::collections::HashSet::new();
    let mut out = vec![];
    for g in list {
        let f = generations::figures(&g.path, &prev)
            .map_err(|e| io(format!("reading {}", g.path.display()), e))?;
        prev = generations::inodes(&g.path)
            .map_err(|e| io(format!("reading {}", g.path.display()), e))?;
        out.push(HistoryEntry {
            name: g.stamp.name(),
            date: g.stamp.iso(),
            files: f.files,
            bytes: f.bytes,
            bytes_new: f.bytes_new,
            path: g.path,
        });
    }
    Ok(out)
}

/// `extbackup history`'s table.
pub fn render(drive: &str, entries: &[HistoryEntry]) -> String {
    let mut s = format!("drive {drive}: {} generation(s)\n", entries.len());
    s.push_str(&format!(
        "{:<22} {:>10} {:>12} {:>12}\n",
        "date (UTC)", "files", "size", "new"
    ));
    for e in entries {
        s.push_str(&format!(
            "{:<22} {:>10} {:>12} {:>12}\n",
            e.date,
            e.files,
            oskit::human::bytes(e.bytes),
            oskit::human::bytes(e.bytes_new)
        ));
    }
    s
}
