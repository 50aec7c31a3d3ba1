//! `extbackup verify NAME [--full | --sample PERCENT]`: compares a drive's copy with the
//! source. Every entry's metadata (type, permissions, owner, group, size, modification
//! time, symlink target, device number) is compared; the content of regular files is
//! compared by SHA-256 for all files (`--full`) or a random share (`--sample`, 10% by
//! default). Both sides of a file are read by one worker; several workers run at once.
//!
//! The result is recorded in the state directory (`verify/NAME.json`) and shown by
//! `status`. A difference is expected for what changed in the source since the last run:
//! verify right after a run (`verify_every` does).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::Source;
use crate::Failure;

/// How much content to compare.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Depth {
    /// Every regular file.
    Full,
    /// About this percentage of the regular files, picked at random.
    Sample(f64),
}

impl Depth {
    /// `full` or `sample 10%`.
    pub fn describe(self) -> String {
        match self {
            Depth::Full => "full".into(),
            Depth::Sample(p) => format!("sample {p}%"),
        }
    }
}

/// The default share of files whose content `verify` compares.
pub const DEFAULT_SAMPLE_PERCENT: f64 = 10.0;

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The path, relative to the source.
    pub path: String,
    /// What differs, in words.
    pub what: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.path)
    }
}

/// The result of a verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The drive.
    pub drive: String,
    /// When it finished, seconds since the epoch.
    pub finished: u64,
    /// `full` or `sample N%`.
    pub depth: String,
    /// Entries compared (both sides together counted once).
    pub entries: u64,
    /// Regular files whose content was compared.
    pub checksummed: u64,
    /// Bytes of content compared (one side).
    pub bytes_checksummed: u64,
    /// Every difference found.
    pub differences: Vec<Difference>,
}

impl VerifyReport {
    /// Whether the copy equals the source (as far as compared).
    pub fn clean(&self) -> bool {
        self.differences.is_empty()
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        format!(
            "{} entries compared, {} files ({}) compared by SHA-256 ({}): {}",
            self.entries,
            self.checksummed,
            oskit::human::bytes(self.bytes_checksummed),
            self.depth,
            if self.clean() {
                "no differences".to_string()
            } else {
                format!("{} difference(s)", self.differences.len())
            }
        )
    }
}

/// What is compared of an entry besides its content.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    kind: &'static str,
    perm: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    link: Option<PathBuf>,
    rdev: u64,
}

fn meta_of(path: &Path, md: &std::fs::Metadata) -> std::io::Result<Meta> {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "folder"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    Ok(Meta {
        kind,
        perm: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if ft.is_file() || ft.is_symlink() {
            md.size()
        } else {
            0
        },
        mtime: (md.mtime(), md.mtime_nsec()),
        link: if ft.is_symlink() {
            Some(std::fs::read_link(path)?)
        } else {
            None
        },
        rdev: if ft.is_block_device() || ft.is_char_device() {
            md.rdev()
        } else {
            0
        },
    })
}

/// Every entry under `root` (root itself as ``), not following symlinks; the top-level
/// `lost+found` is left out (the sync leaves it out too), and what `exclude` leaves out.
fn walk(root: &Path, exclude: &syncer::Excludes) -> std::io::Result<BTreeMap<PathBuf, Meta>> {
    let mut out = BTreeMap::new();
    let mut it = walkdir::WalkDir::new(root).into_iter();
    while let Some(e) = it.next() {
        let e = e?;
        let md = e.metadata()?;
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap_or(e.path())
            .to_path_buf();
        let left_out = e.depth() > 0
            && ((e.depth() == 1 && e.file_name() == "lost+found")
                || exclude.excludes(&rel, md.is_dir()));
        if left_out {
            if md.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        out.insert(rel, meta_of(e.path(), &md)?);
    }
    Ok(out)
}

fn show(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    }
}

fn meta_differences(a: &Meta, b: &Meta) -> Vec<String> {
    let mut v = vec![];
    if a.kind != b.kind {
        v.push(format!(
            "type ({} on the source, {} on the drive)",
            a.kind, b.kind
        ));
        return v;
    }
    if a.perm != b.perm && a.kind != "symlink" {
        v.push(format!(
            "mode ({:04o} on the source, {:04o} on the drive)",
            a.perm, b.perm
        ));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        v.push(format!(
            "owner ({}:{} on the source, {}:{} on the drive)",
            a.uid, a.gid, b.uid, b.gid
        ));
    }
    if a.size != b.size {
        v.push(format!(
            "size ({} on the source, {} on the drive)",
            a.size, b.size
        ));
    }
    if a.mtime != b.mtime && a.kind != "folder" {
        v.push(format!(
            "modification time ({} on the source, {} on the drive)",
            crate::fmt::fmt_utc(a.mtime.0.max(0) as u64),
            crate::fmt::fmt_utc(b.mtime.0.max(0) as u64)
        ));
    }
    if a.link != b.link {
        v.push("symlink target".into());
    }
    if a.rdev != b.rdev {
        v.push("device number".into());
    }
    v
}

/// A small random generator (xorshift64*), seeded from the system.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
        Rng(u64::from_le_bytes(seed) | 1)
    }
    /// A number in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SHA-256 of a file.
pub fn sha256_file(path: &Path, buf: &mut [u8]) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Compares the copy at `copy` (the drive's data folder or a generation) with the sources:
/// each with its folder in it ([`Source::copy_in`]); what a source's excludes leave out is
/// not looked for. The paths of named sources' differences start with the source's name.
pub fn verify(
    drive: &str,
    sources: &[Source],
    copy: &Path,
    depth: Depth,
) -> Result<VerifyReport, Failure> {
    let mut r = VerifyReport {
        drive: drive.into(),
        finished: 0,
        depth: depth.describe(),
        entries: 0,
        checksummed: 0,
        bytes_checksummed: 0,
        differences: vec![],
    };
    for s in sources {
        let t = verify_tree(&s.path, &s.exclude, &s.copy_in(copy), depth)?;
        r.entries += t.entries;
        r.checksummed += t.checksummed;
        r.bytes_checksummed += t.bytes_checksummed;
        r.differences.extend(t.differences.into_iter().map(|mut d| {
            if let Some(n) = &s.name {
                d.path = match d.path.as_str() {
                    "." => n.as_str().to_string(),
                    p => format!("{}/{p}", n.as_str()),
                };
            }
            d
        }));
    }
    r.differences.sort_by(|a, b| a.path.cmp(&b.path));
    r.finished = crate::fmt::now();
    Ok(r)
}

/// Compares one source tree with its copy.
fn verify_tree(
    source: &Path,
    exclude: &syncer::Excludes,
    copy: &Path,
    depth: Depth,
) -> Result<VerifyReport, Failure> {
    let src = walk(source, exclude)
        .map_err(|e| Failure::with(format!("reading the source {}", source.display()), e))?;
    let dst = walk(copy, &syncer::Excludes::default())
        .map_err(|e| Failure::with(format!("reading the drive's copy {}", copy.display()), e))?;
    let mut differences = vec![];
    let mut to_hash: Vec<(PathBuf, u64)> = vec![];
    let mut rng = Rng::new();
    let mut entries = 0u64;
    for (rel, a) in &src {
        entries += 1;
        let Some(b) = dst.get(rel) else {
            differences.push(Difference {
                path: show(rel),
                what: "missing on the drive".into(),
            });
            continue;
        };
        let d = meta_differences(a, b);
        if !d.is_empty() {
            differences.push(Difference {
                path: show(rel),
                what: format!("differs in {}", d.join(", ")),
            });
            continue;
        }
        if a.kind == "file" {
            let pick = match depth {
                Depth::Full => true,
                Depth::Sample(p) => rng.next_f64() * 100.0 < p,
            };
            if pick {
                to_hash.push((rel.clone(), a.size));
            }
        }
    }
    for rel in dst.keys().filter(|r| !src.contains_key(*r)) {
        entries += 1;
        differences.push(Difference {
            path: show(rel),
            what: "extra on the drive (not in the source)".into(),
        });
    }
    let bytes: u64 = to_hash.iter().map(|(_, s)| s).sum();
    let checksummed = to_hash.len() as u64;
    differences.extend(compare_contents(source, copy, &to_hash)?);
    differences.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(VerifyReport {
        drive: String::new(),
        finished: crate::fmt::now(),
        depth: depth.describe(),
        entries,
        checksummed,
        bytes_checksummed: bytes,
        differences,
    })
}

/// SHA-256 of both sides of each file, by several workers; the files whose sums differ.
fn compare_contents(
    source: &Path,
    copy: &Path,
    files: &[(PathBuf, u64)],
) -> Result<Vec<Difference>, Failure> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let next = AtomicUsize::new(0);
    let found = Mutex::new(vec![]);
    let failed: Mutex<Option<Failure>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, _)) = files.get(i) else { return };
                    let a = sha256_file(&source.join(rel), &mut buf);
                    let b = sha256_file(&copy.join(rel), &mut buf);
                    match (a, b) {
                        (Ok(a), Ok(b)) if a == b => {}
                        (Ok(_), Ok(_)) => found.lock().unwrap().push(Difference {
                            path: show(rel),
                            what: "differs in content (SHA-256)".into(),
                        }),
                        (Err(e), _) | (_, Err(e)) => {
                            *failed.lock().unwrap() = Some(Failure::with(
                                format!("reading {} for its checksum", show(rel)),
                                e,
                            ));
                            next.store(files.len(), Ordering::Relaxed);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(f) = failed.into_inner().unwrap() {
        return Err(f);
    }
    Ok(found.into_inner().unwrap())
}

fn record_path(state_dir: &Path, drive: &str) -> PathBuf {
    state_dir.join("verify").join(format!("{drive}.json"))
}

/// Records `r` as the drive's last verify (the first 100 differences kept).
pub fn record(state_dir: &Path, r: &VerifyReport) -> std::io::Result<()> {
    let p = record_path(state_dir, &r.drive);
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    let mut kept = r.clone();
    kept.differences.truncate(100);
    oskit::write_atomic(&p, &serde_json::to_vec_pretty(&kept)?, Some(0o644))
}

/// The last recorded verify of `drive`.
pub fn last(state_dir: &Path, drive: &str) -> Option<VerifyReport> {
    serde_json::from_slice(&std::fs::read(record_path(state_dir, drive)).ok()?).ok()
}

/// The line `status` shows about the last verify.
pub fn status_note(state_dir: &Path, drive: &str, now: u64) -> String {
    match last(state_dir, drive) {
        None => format!("last verify: never (`extbackup verify {drive}`)"),
        Some(r) => format!(
            "last verify: {} ({} ago), {}",
            crate::fmt::fmt_utc(r.finished),
            crate::fmt::fmt_age(now.saturating_sub(r.finished)),
            r.summary()
        ),
    }
}

/// `policy.verify_every = N`: on every Nth sync of `drive` (counted in the state directory,
/// `verify/NAME.count`), compares a 10% sample of the copy at `target` with the source,
/// records the result and adds any differences to the run's warnings (shown in the log and
/// the success mail). Never fails the run: a problem is a warning.
pub fn after_sync(
    cfg: &crate::config::Config,
    drive: &str,
    target: &Path,
    report: &mut syncer::SyncReport,
) {
    let every = cfg.policy.verify_every;
    if every == 0 {
        return;
    }
    let counter = cfg.state_dir.join("verify").join(format!("{drive}.count"));
    let n = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let _ = std::fs::create_dir_all(counter.parent().expect("has a parent"))
        .and_then(|_| std::fs::write(&counter, n.to_string()));
    if !n.is_multiple_of(u64::from(every)) {
        tracing::info!(
            "verify: sync {n} of {drive}; a sampled verify runs every {every} (policy.verify_every)"
        );
        return;
    }
    tracing::info!(
        "verify: comparing a {DEFAULT_SAMPLE_PERCENT}% sample of {drive}'s copy with the source"
    );
    match verify(
        drive,
        &cfg.sources(),
        target,
        Depth::Sample(DEFAULT_SAMPLE_PERCENT),
    ) {
        Ok(r) => {
            tracing::info!("verify: {}", r.summary());
            if let Err(e) = record(&cfg.state_dir, &r) {
                tracing::warn!("recording the verify: {e}");
            }
            if !r.clean() {
                report.warnings.push(format!("verify: {}", r.summary()));
                for d in r.differences.iter().take(20) {
                    report.warnings.push(format!("verify: {d}"));
                }
            }
        }
        Err(e) => report
            .warnings
            .push(format!("verify could not run: {}", e.chain().join(": "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single-source form over `path`.
    fn single(path: &Path) -> Vec<Source> {
        vec![Source {
            name: None,
            path: path.into(),
            exclude: Default::default(),
            lock: None,
        }]
    }
    use std::os::unix::fs::PermissionsExt;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "alpha").unwrap();
        std::fs::write(root.join("sub/b.bin"), vec![7u8; 5000]).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        std::fs::create_dir_all(root.join("lost+found")).unwrap();
    }

    fn copy(from: &Path, to: &Path) {
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    #[test]
    fn named_sources_are_compared_with_their_folders_without_their_excluded_files() {
        let dir = tempfile::tempdir().unwrap();
        let (docs, photos, d) = (
            dir.path().join("docs"),
            dir.path().join("photos"),
            dir.path().join("d"),
        );
        tree(&docs);
        tree(&photos);
        std::fs::create_dir_all(&d).unwrap();
        copy(&docs, &d.join("docs"));
        copy(&photos, &d.join("photos"));
        for s in ["docs", "photos"] {
            std::fs::remove_dir(d.join(s).join("lost+found")).unwrap();
        }
        // Only in the source, and excluded: not looked for.
        std::fs::write(photos.join("sub/x.tmp"), "scratch").unwrap();
        let name = |n: &str| Some(crate::config::SourceName::try_from(n.to_string()).unwrap());
        let sources = [
            Source {
                name: name("docs"),
                path: docs.clone(),
                exclude: Default::default(),
                lock: None,
            },
            Source {
                name: name("photos"),
                path: photos.clone(),
                exclude: syncer::Excludes::new(&["*.tmp"]).unwrap(),
                lock: None,
            },
        ];
        let r = verify("x", &sources, &d, Depth::Full).unwrap();
        assert!(r.clean(), "{:?}", r.differences);
        assert_eq!(r.checksummed, 4);
        // A difference is named by its source's folder.
        std::fs::remove_file(d.join("photos/a.txt")).unwrap();
        std::fs::write(docs.join("sub/x.tmp"), "not excluded in docs").unwrap();
        let r = verify("x", &sources, &d, Depth::Full).unwrap();
        let got: Vec<String> = r.differences.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            got,
            [
                "missing on the drive: docs/sub/x.tmp",
                "missing on the drive: photos/a.txt"
            ]
        );
    }

    #[test]
    fn a_faithful_copy_is_clean_and_each_kind_of_change_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (s, d) = (dir.path().join("s"), dir.path().join("d"));
        tree(&s);
        copy(&s, &d);
        std::fs::remove_dir(d.join("lost+found")).unwrap();
        let r = verify("x", &single(&s), &d, Depth::Full).unwrap();
        assert!(r.clean(), "{:?}", r.differences);
        assert_eq!(r.checksummed, 2);
        assert_eq!(r.bytes_checksummed, 5005);

        // One byte changed, size and mtime kept: only the content comparison sees it.
        let b = d.join("sub/b.bin");
        let mtime = std::fs::metadata(&b).unwrap().modified().unwrap();
        let mut data = std::fs::read(&b).unwrap();
        data[2500] ^= 1;
        std::fs::write(&b, data).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::set_permissions(d.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(d.join("extra"), "").unwrap();
        std::fs::remove_file(d.join("link")).unwrap();
        let r = verify("x", &single(&s), &d, Depth::Full).unwrap();
        let shown: Vec<String> = r.differences.iter().map(|d| d.to_string()).collect();
        assert_eq!(r.differences.len(), 4, "{shown:?}");
        assert!(
            shown.contains(&"differs in content (SHA-256): sub/b.bin".to_string()),
            "{shown:?}"
        );
        assert!(shown
            .iter()
            .any(|l| l.starts_with("differs in mode") && l.ends_with("a.txt")));
        assert!(shown.contains(&"extra on the drive (not in the source): extra".to_string()));
        assert!(shown.contains(&"missing on the drive: link".to_string()));
        // A 0% sample compares no content: the byte goes unseen, the rest is still found.
        let r = verify("x", &single(&s), &d, Depth::Sample(0.0)).unwrap();
        assert_eq!(r.checksummed, 0);
        assert_eq!(r.differences.len(), 3);
    }

    #[test]
    fn the_result_is_recorded_for_status() {
        let dir = tempfile::tempdir().unwrap();
        assert!(status_note(dir.path(), "x", 0).contains("never"));
        let r = VerifyReport {
            drive: "x".into(),
            finished: 1000,
            depth: "full".into(),
            entries: 3,
            checksummed: 2,
            bytes_checksummed: 10,
            differences: vec![Difference {
                path: "a".into(),
                what: "missing on the drive".into(),
            }],
        };
        record(dir.path(), &r).unwrap();
        assert_eq!(last(dir.path(), "x").unwrap(), r);
        let n = status_note(dir.path(), "x", 1000 + 3 * 86_400);
        assert!(
            n.contains("3 days ago") && n.contains("1 difference(s)"),
            "{n}"
        );
    }

    #[test]
    fn verify_every_n_runs_on_the_nth_sync_and_warns_about_differences() {
        let dir = tempfile::tempdir().unwrap();
        let (s, d) = (dir.path().join("s"), dir.path().join("d"));
        tree(&s);
        copy(&s, &d);
        std::fs::write(d.join("extra"), "").unwrap();
        let cfg = crate::config::Config::parse(&format!(
            "source = {:?}\nstate_dir = {:?}\n[policy]\nverify_every = 2\n",
            s.display().to_string(),
            dir.path().join("state").display().to_string()
        ))
        .unwrap();
        let mut report = syncer::SyncReport::default();
        after_sync(&cfg, "x", &d, &mut report);
        assert!(report.warnings.is_empty(), "first sync: no verify");
        assert!(last(&cfg.state_dir, "x").is_none());
        after_sync(&cfg, "x", &d, &mut report);
        let r = last(&cfg.state_dir, "x").expect("second sync: verified");
        assert_eq!(r.depth, "sample 10%");
        assert!(
            report.warnings[0].contains("1 difference(s)"),
            "{:?}",
            report.warnings
        );
        assert!(report
            .warnings
            .iter()
            .any(|w| w.contains("extra on the drive")));
        // Off by default.
        let off = crate::config::Config::parse("source = \"/srv\"").unwrap();
        assert_eq!(off.policy.verify_every, 0);
    }

    #[test]
    fn samples_pick_about_their_share() {
        let mut rng = Rng::new();
        let n = (0..10_000)
            .filter(|_| rng.next_f64() * 100.0 < 10.0)
            .count();
        assert!((700..1300).contains(&n), "{n}");
    }
}
