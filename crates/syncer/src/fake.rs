//! A `Syncer` for tests of other crates: mirrors with plain file copies (no metadata beyond
//! the permission bits), records calls, and fails when told to. It keeps the trait's
//! promise, the target equals the source afterwards (the crate's conformance suite runs on
//! it and on the real backends).

use crate::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<(PathBuf, PathBuf)>,
    fail: Option<ErrorKind>,
}

/// Mirrors folders, files and symbolic links with `std::fs`; records `(source, target)` of
/// each call; clones share state.
#[derive(Clone, Debug, Default)]
pub struct FakeSyncer {
    inner: Arc<Mutex<Inner>>,
}

impl FakeSyncer {
    /// A fake that succeeds.
    pub fn new() -> Self {
        Self::default()
    }
    /// Makes later calls fail with `kind` (or succeed again with `None`).
    pub fn fail_with(&self, kind: Option<ErrorKind>) {
        self.inner.lock().unwrap().fail = kind;
    }
    /// Every `(source, target)` synced so far.
    pub fn calls(&self) -> Vec<(PathBuf, PathBuf)> {
        self.inner.lock().unwrap().calls.clone()
    }
}

impl Syncer for FakeSyncer {
    fn mirror(
        &self,
        source: &Path,
        target: &Path,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SyncReport, SyncError> {
        let fail = {
            let mut i = self.inner.lock().unwrap();
            i.calls.push((source.into(), target.into()));
            i.fail
        };
        progress(Progress {
            bytes: 0,
            fraction: Some(0.5),
        });
        if let Some(kind) = fail {
            return Err(SyncError::new(kind, "fake syncer told to fail"));
        }
        let mut report = SyncReport::default();
        mirror_tree(source, target, Path::new(""), &opts.exclude, &mut report).map_err(|e| {
            SyncError::new(
                ErrorKind::Other,
                format!("fake mirror of {}", source.display()),
            )
            .with_source(e)
        })?;
        progress(Progress {
            bytes: report.bytes_copied,
            fraction: Some(1.0),
        });
        Ok(report)
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}

/// Makes `target` (a folder) hold what `source` holds but what `exclude` leaves out (`rel`
/// is the folder's path from the source's root): copies what differs, deletes what the
/// source lacks. Counts into `r`.
fn mirror_tree(
    source: &Path,
    target: &Path,
    rel: &Path,
    exclude: &Excludes,
    r: &mut SyncReport,
) -> std::io::Result<()> {
    use std::collections::BTreeSet;
    use std::fs;
    fs::create_dir_all(target)?;
    let names = |d: &Path| -> std::io::Result<BTreeSet<std::ffi::OsString>> {
        fs::read_dir(d)?.map(|e| e.map(|e| e.file_name())).collect()
    };
    let (mut src_names, dst_names) = (names(source)?, names(target)?);
    src_names.retain(|n| {
        let dir = fs::symlink_metadata(source.join(n)).is_ok_and(|m| m.is_dir());
        !exclude.excludes(&rel.join(n), dir)
    });
    for gone in dst_names.difference(&src_names) {
        let p = target.join(gone);
        if fs::symlink_metadata(&p)?.is_dir() {
            fs::remove_dir_all(&p)?;
        } else {
            fs::remove_file(&p)?;
        }
        r.files_deleted += 1;
    }
    for name in &src_names {
        let (s, t) = (source.join(name), target.join(name));
        let md = fs::symlink_metadata(&s)?;
        let old = fs::symlink_metadata(&t).ok();
        r.files_total += 1;
        if md.is_dir() {
            if old.as_ref().is_some_and(|o| !o.is_dir()) {
                fs::remove_file(&t)?;
            }
            mirror_tree(&s, &t, &rel.join(name), exclude, r)?;
        } else if md.file_type().is_symlink() {
            let link = fs::read_link(&s)?;
            if fs::read_link(&t).ok().as_ref() != Some(&link) {
                if old.is_some() {
                    fs::remove_file(&t)?;
                }
                std::os::unix::fs::symlink(&link, &t)?;
                r.files_copied += 1;
            }
        } else {
            r.bytes_total += md.len();
            let same = old.is_some_and(|o| o.is_file()) && fs::read(&s)? == fs::read(&t)?;
            if !same {
                if fs::symlink_metadata(&t).is_ok_and(|o| o.is_dir()) {
                    fs::remove_dir_all(&t)?;
                }
                r.bytes_copied += fs::copy(&s, &t)?;
                r.files_copied += 1;
            }
        }
    }
    Ok(())
}
