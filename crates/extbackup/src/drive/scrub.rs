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

/// A stable pseudo-random number for `x` (splitmix64), for the sample.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Manifest entries checked at a time (one chunk's paths in memory).
const CHUNK: usize = 4096;

/// A file (device, inode) as opened now.
type FileKey = (u64, u64);

/// A difference found: the file when it could be opened, its tree, the line (the
/// generations sharing the file are added at the end).
struct Found {
    key: Option<FileKey>,
    line: String,
}

/// The scrub as it goes: each file read once, what differs.
struct Scrubbing<'a> {
    mount_point: &'a Path,
    /// Each file read so far: what it holds now, or why it could not be read (one entry a
    /// file, not a path: memory follows the drive's distinct files, not its generations).
    read: HashMap<FileKey, Result<manifest::Digest, String>>,
    found: Vec<Found>,
    report: ScrubReport,
}

impl Scrubbing<'_> {
    /// Checks one chunk of the tree `t`'s entries (all selected).
    fn chunk(&mut self, t: &Tree, root: &handle::Drive, chunk: &mut Vec<manifest::Entry>) {
        let threads = manifest::threads();
        let shown = |e: &manifest::Entry| {
            t.path
                .strip_prefix(self.mount_point)
                .unwrap_or(&t.path)
                .join(e.rel())
                .display()
                .to_string()
        };
        // Which file each path is now (opened, not read: cheap), so each is read once.
        let keys = manifest::parallel(chunk, threads, |e| {
            root.open_file(e.rel()).map(|(_, m)| (m.dev(), m.ino()))
        });
        let mut to_read: Vec<(FileKey, usize)> = vec![];
        let mut queued = std::collections::HashSet::new();
        for (i, k) in keys.iter().enumerate() {
            if let Ok(k) = k {
                if !self.read.contains_key(k) && queued.insert(*k) {
                    to_read.push((*k, i));
                }
            }
        }
        let hashed = manifest::parallel(&to_read, threads, |&(_, i)| {
            manifest::hash_file(root, chunk[i].rel())
        });
        for (&(k, _), r) in to_read.iter().zip(hashed) {
            let v = match r {
                Ok((d, m)) => {
                    self.report.read += 1;
                    self.report.bytes += m.size();
                    Ok(d)
                }
                Err(e) => Err(e.to_string()),
            };
            self.read.insert(k, v);
        }
        // An unreadable file is said once, at its first path.
        let mut said_unreadable = std::collections::HashSet::new();
        for (e, k) in chunk.iter().zip(keys) {
            self.report.files += 1;
            let (key, fault) = match k {
                Err(err) => (
                    None,
                    match err.kind() {
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput => {
                            manifest::Fault::Missing
                        }
                        _ => manifest::Fault::Unreadable(err.to_string()),
                    },
                ),
                Ok(k) => match &self.read[&k] {
                    Ok(d) if *d == e.sha256 => continue,
                    Ok(d) => (Some(k), manifest::Fault::Changed { found: *d }),
                    Err(msg) => {
                        if self.found.iter().any(|f| f.key == Some(k)) || !said_unreadable.insert(k)
                        {
                            continue;
                        }
                        (Some(k), manifest::Fault::Unreadable(msg.clone()))
                    }
                },
            };
            self.found.push(Found {
                key,
                line: format!("{}: {fault}", shown(e)),
            });
        }
        chunk.clear();
    }
}

/// The tree `t`'s manifest, read line by line; `None` (said in `report`) when it has none
/// or it cannot be opened.
fn sidecar_of(
    drive: &handle::Drive,
    mount_point: &Path,
    t: &Tree,
    report: &mut ScrubReport,
) -> Option<manifest::format::SidecarReader<std::io::BufReader<std::fs::File>>> {
    let rel = layout::manifest_sidecar(&t.name);
    let file = match drive.open_file(&rel) {
        Ok((f, _)) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.without_manifest.push(t.name.clone());
            return None;
        }
        Err(e) => {
            report.faults.push(format!(
                "{}: the manifest: reading {}: {}",
                t.name,
                mount_point.join(&rel).display(),
                drive.explain(&rel, e)
            ));
            return None;
        }
    };
    match manifest::format::SidecarReader::new(std::io::BufReader::new(file)) {
        Ok(r) => Some(r.unordered()),
        Err(e) => {
            report.faults.push(format!(
                "{}: the manifest: reading {}: {e}",
                t.name,
                mount_point.join(&rel).display()
            ));
            None
        }
    }
}

/// Scrubs the drive `drive` mounted at `mount_point`: every selected file of every tree
/// with a manifest is read (once per file: a file shared by several generations once) and
/// compared with its manifest. The manifests are read line by line, a chunk of paths at a
/// time; what is held for the whole drive is one digest per distinct file read. A file
/// that differs is named in every tree holding it (a second pass over the manifests, only
/// when something differs).
pub fn scrub(mount_point: &Path, drive: &str, sel: Selection) -> Result<ScrubReport, Failure> {
    let trees: Vec<Tree> = manifests::trees(mount_point)?;
    let seed = mix(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0));
    let selected = |ino: u64| match sel {
        Selection::All => true,
        Selection::Sample(p) => (mix(ino ^ seed) as f64) < p / 100.0 * u64::MAX as f64,
        Selection::Share { of, part } => ino % u64::from(of.max(1)) == u64::from(part),
    };
    let handle = handle::open(mount_point)?;
    let mut s = Scrubbing {
        mount_point,
        read: HashMap::new(),
        found: vec![],
        report: ScrubReport {
            drive: drive.to_string(),
            selection: sel.words(),
            ..ScrubReport::default()
        },
    };
    // The trees checked, with their roots (for the second pass).
    let mut checked: Vec<(&Tree, handle::Drive)> = vec![];
    for t in &trees {
        let Some(entries) = sidecar_of(&handle, mount_point, t, &mut s.report) else {
            continue;
        };
        let root = match handle::real_dir(mount_point, &t.path).and_then(|p| handle::open(&p)) {
            Ok(r) => r,
            Err(e) => {
                s.report
                    .faults
                    .push(format!("{}: {}", t.name, e.chain().join(": ")));
                continue;
            }
        };
        s.report.trees += 1;
        let mut chunk = vec![];
        for e in entries {
            match e {
                Ok(e) if selected(e.ino) => chunk.push(e),
                Ok(_) => {}
                Err(e) => {
                    s.report
                        .faults
                        .push(format!("{}: the manifest: {e}", t.name));
                    break;
                }
            }
            if chunk.len() >= CHUNK {
                s.chunk(t, &root, &mut chunk);
            }
        }
        s.chunk(t, &root, &mut chunk);
        checked.push((t, root));
    }
    // Every tree holding a file that differs, for its lines.
    let faulty: std::collections::HashSet<FileKey> = s.found.iter().filter_map(|f| f.key).collect();
    let mut holders: HashMap<FileKey, Vec<&str>> = HashMap::new();
    if !faulty.is_empty() {
        let inos: std::collections::HashSet<u64> = faulty.iter().map(|k| k.1).collect();
        for (t, root) in &checked {
            let mut scratch = ScrubReport::default();
            let Some(entries) = sidecar_of(&handle, mount_point, t, &mut scratch) else {
                continue;
            };
            for e in entries.map_while(Result::ok) {
                // The manifest's inode number first (no open for the rest).
                if !inos.contains(&e.ino) || !selected(e.ino) {
                    continue;
                }
                if let Ok((_, m)) = root.open_file(e.rel()) {
                    let k = (m.dev(), m.ino());
                    if faulty.contains(&k) {
                        let h = holders.entry(k).or_default();
                        if h.last() != Some(&t.name.as_str()) {
                            h.push(&t.name);
                        }
                    }
                }
            }
        }
    }
    let mut report = s.report;
    for f in s.found {
        let sharing = match f.key.and_then(|k| holders.get(&k).map(|h| (k, h))) {
            Some((k, h)) if h.len() > 1 => {
                format!("; the same file (inode {}) is in {}", k.1, h.join(", "))
            }
            _ => String::new(),
        };
        report.faults.push(format!("{}{sharing}", f.line));
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
