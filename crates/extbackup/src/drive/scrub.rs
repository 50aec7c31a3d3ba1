//! `extbackup scrub`: re-read a drive and check every file (or a share of them) against the
//! drive's own manifests ([`crate::drive::manifests`]), without the source and without a
//! configuration. A file hard-linked across generations is read once and, when it is
//! wrong, named with every generation that shares it. `[policy] scrub_share = N` makes
//! every run scrub a rotating 1/N of the drive's files ([`after_sync`]), so every file is
//! re-read every N runs; where the rotation is lives on the drive
//! ([`layout::SCRUB_POSITION`]).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::drive::manifests::{self, Tree};
use crate::drive::{handle, layout};
use crate::Failure;

/// Which files a scrub reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Selection {
    /// Every file.
    All,
    /// About this percentage of the files, picked at random (by file, a hard-link group
    /// being one file).
    Sample(f64),
    /// The files whose inode number is `part` modulo `of` (the rotating share).
    Share {
        /// How many shares the drive is cut into.
        of: u32,
        /// Which share.
        part: u32,
    },
}

impl Selection {
    fn words(self) -> String {
        match self {
            Selection::All => "all".into(),
            Selection::Sample(p) => format!("sample {p}%"),
            Selection::Share { of, part } => format!("share {} of {of}", part + 1),
        }
    }
}

/// What a scrub found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// The drive.
    pub drive: String,
    /// When it finished, seconds since the epoch.
    pub finished: u64,
    /// `all`, `sample N%` or `share K of N`.
    pub selection: String,
    /// Trees (generations, the mirror) with a manifest that were checked.
    pub trees: u64,
    /// Trees without a manifest (made before manifests existed): not checked.
    pub without_manifest: Vec<String>,
    /// Manifest entries (paths) covered.
    pub files: u64,
    /// Files read (a file shared by several generations once).
    pub read: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Every file that differs, one line each, naming the generations sharing it.
    pub faults: Vec<String>,
}

impl ScrubReport {
    /// Whether nothing differs.
    pub fn clean(&self) -> bool {
        self.faults.is_empty()
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} ({}): {} file(s) in {} tree(s) checked, {} read ({}), ",
            if self.clean() { "clean" } else { "DIFFERENCES" },
            self.selection,
            self.files,
            self.trees,
            self.read,
            oskit::human::bytes(self.bytes),
        );
        s.push_str(&format!("{} differ", self.faults.len()));
        if !self.without_manifest.is_empty() {
            s.push_str(&format!(
                "; {} tree(s) without a manifest not checked ({})",
                self.without_manifest.len(),
                self.without_manifest.join(", ")
            ));
        }
        s
    }
}

/// One manifest entry to check: its tree, its path and what it should hold.
struct Item {
    tree: usize,
    rel: PathBuf,
    sha256: manifest::Digest,
}

/// A stable pseudo-random number for `x` (splitmix64), for the sample.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Scrubs the drive `drive` mounted at `mount_point`: every selected file of every tree
/// with a manifest is read (once per inode) and compared with its manifest.
pub fn scrub(mount_point: &Path, drive: &str, sel: Selection) -> Result<ScrubReport, Failure> {
    let trees: Vec<Tree> = manifests::trees(mount_point)?;
    let mut report = ScrubReport {
        drive: drive.to_string(),
        selection: sel.words(),
        ..ScrubReport::default()
    };
    let seed = mix(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0));
    let selected = |ino: u64| match sel {
        Selection::All => true,
        Selection::Sample(p) => (mix(ino ^ seed) as f64) < p / 100.0 * u64::MAX as f64,
        Selection::Share { of, part } => ino % u64::from(of.max(1)) == u64::from(part),
    };
    let mut roots = vec![];
    let mut items = vec![];
    for (ti, t) in trees.iter().enumerate() {
        let m = match manifests::load(mount_point, &t.name) {
            Ok(Some(m)) => m,
            Ok(None) => {
                report.without_manifest.push(t.name.clone());
                roots.push(None);
                continue;
            }
            Err(e) => {
                report.faults.push(format!(
                    "{}: the manifest: {}",
                    t.name,
                    e.chain().join(": ")
                ));
                roots.push(None);
                continue;
            }
        };
        let root = handle::real_dir(mount_point, &t.path).and_then(|p| handle::open(&p));
        match root {
            Ok(r) => roots.push(Some(r)),
            Err(e) => {
                report
                    .faults
                    .push(format!("{}: {}", t.name, e.chain().join(": ")));
                roots.push(None);
                continue;
            }
        }
        report.trees += 1;
        for e in m.entries.into_iter().filter(|e| selected(e.ino)) {
            items.push(Item {
                tree: ti,
                rel: e.rel().to_path_buf(),
                sha256: e.sha256,
            });
        }
    }
    report.files = items.len() as u64;
    // Named from the drive's root (`generations/DATE/PATH`): the mount point of a scrub is
    // often a temporary one.
    let shown = |it: &Item| {
        let t = &trees[it.tree].path;
        t.strip_prefix(mount_point)
            .unwrap_or(t)
            .join(&it.rel)
            .display()
            .to_string()
    };
    // Which file each path is now (opened, not read: cheap), so each is read once.
    let threads = manifest::threads();
    let stats = manifest::parallel(&items, threads, |it| {
        let root = roots[it.tree].as_ref().expect("only trees with a root");
        root.open_file(&it.rel).map(|(_, m)| (m.dev(), m.ino()))
    });
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let mut order = vec![];
    for (i, s) in stats.into_iter().enumerate() {
        match s {
            Ok(k) => {
                let g = groups.entry(k).or_default();
                if g.is_empty() {
                    order.push(k);
                }
                g.push(i);
            }
            Err(e) => {
                let f = match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput => {
                        manifest::Fault::Missing
                    }
                    _ => manifest::Fault::Unreadable(e.to_string()),
                };
                report.faults.push(format!("{}: {f}", shown(&items[i])));
            }
        }
    }
    let read = manifest::parallel(&order, threads, |k| {
        let first = &items[groups[k][0]];
        let root = roots[first.tree].as_ref().expect("only trees with a root");
        manifest::hash_file(root, &first.rel)
    });
    for (k, r) in order.iter().zip(read) {
        let members = &groups[k];
        let sharing = || {
            let names: Vec<&str> = members
                .iter()
                .map(|&i| trees[items[i].tree].name.as_str())
                .collect();
            if names.len() > 1 {
                format!("; the same file (inode {}) is in {}", k.1, names.join(", "))
            } else {
                String::new()
            }
        };
        match r {
            Ok((d, m)) => {
                report.read += 1;
                report.bytes += m.size();
                for &i in members {
                    if items[i].sha256 != d {
                        report.faults.push(format!(
                            "{}: {}{}",
                            shown(&items[i]),
                            manifest::Fault::Changed { found: d },
                            sharing()
                        ));
                    }
                }
            }
            Err(e) => {
                let f = manifest::Fault::Unreadable(e.to_string());
                report
                    .faults
                    .push(format!("{}: {f}{}", shown(&items[members[0]]), sharing()));
            }
        }
    }
    report.finished = crate::fmt::now();
    Ok(report)
}

fn record_path(state_dir: &Path, drive: &str) -> PathBuf {
    state_dir.join("scrub").join(format!("{drive}.json"))
}

/// Records `r` as the drive's last scrub (the first 100 faults kept).
pub fn record(state_dir: &Path, r: &ScrubReport) -> std::io::Result<()> {
    let p = record_path(state_dir, &r.drive);
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    let mut kept = r.clone();
    kept.faults.truncate(100);
    oskit::write_atomic(&p, &serde_json::to_vec_pretty(&kept)?, Some(0o644))
}

/// The last recorded scrub of `drive`.
pub fn last(state_dir: &Path, drive: &str) -> Option<ScrubReport> {
    serde_json::from_slice(&std::fs::read(record_path(state_dir, drive)).ok()?).ok()
}

/// The line `status` shows about the last scrub.
pub fn status_note(state_dir: &Path, drive: &str, now: u64) -> String {
    match last(state_dir, drive) {
        None => format!("last scrub: never (`extbackup scrub {drive}`)"),
        Some(r) => format!(
            "last scrub: {} ({} ago), {}",
            crate::fmt::fmt_utc(r.finished),
            crate::fmt::fmt_age(now.saturating_sub(r.finished)),
            r.summary()
        ),
    }
}

/// Where the rotating scrub is, on the drive.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    /// The number of shares it was cut into.
    share: u32,
    /// The share the next run reads.
    next: u32,
}

/// `[policy] scrub_share = N` in a run: scrubs the next of N shares of the drive at
/// `mount_point` (the position kept on the drive, a new N starting over), records it for
/// `status` and the monitoring textfile, and returns the lines for the mail: the summary,
/// and each fault as a warning. Never fails the run.
pub fn after_sync(
    state_dir: &Path,
    drive: &str,
    mount_point: &Path,
    share: u32,
) -> (String, Vec<String>) {
    let Ok(h) = handle::open(mount_point) else {
        return (String::new(), vec!["scrub: cannot open the drive".into()]);
    };
    let rel = Path::new(layout::SCRUB_POSITION);
    let pos: Position = h
        .read(rel)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .filter(|p: &Position| p.share == share && p.next < share)
        .unwrap_or(Position { share, next: 0 });
    let sel = Selection::Share {
        of: share,
        part: pos.next,
    };
    match scrub(mount_point, drive, sel) {
        Ok(r) => {
            let next = Position {
                share,
                next: (pos.next + 1) % share,
            };
            if let Err(e) = serde_json::to_vec(&next)
                .map_err(std::io::Error::other)
                .and_then(|d| h.write_atomic(rel, &d, 0o644))
            {
                tracing::warn!("scrub: writing {}: {e}", rel.display());
            }
            if let Err(e) = record(state_dir, &r) {
                tracing::warn!("scrub: recording it: {e}");
            }
            let mut warnings = vec![];
            if !r.clean() {
                warnings.push(format!("scrub: {}", r.summary()));
                warnings.extend(r.faults.iter().take(20).map(|f| format!("scrub: {f}")));
            }
            (format!("scrub: {}", r.summary()), warnings)
        }
        Err(e) => (
            String::new(),
            vec![format!("scrub could not run: {}", e.chain().join(": "))],
        ),
    }
}
