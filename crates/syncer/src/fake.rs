//! A `Syncer` for tests of other crates: records calls and returns a configured result.

use crate::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<(PathBuf, PathBuf)>,
    fail: Option<ErrorKind>,
}

/// Copies nothing; records `(source, target)` of each call; clones share state.
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
        _opts: &SyncOptions,
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
        progress(Progress {
            bytes: 0,
            fraction: Some(1.0),
        });
        Ok(SyncReport::default())
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}
