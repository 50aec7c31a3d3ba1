//! An in-memory `Mounter` for tests of other crates: records calls, keeps a mount table.

use crate::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Inner {
    mounts: BTreeMap<PathBuf, MountInfo>,
    calls: Vec<String>,
    busy: bool,
    fsck_fails: bool,
}

/// In-memory `Mounter`; clones share state. Mount points must exist as folders.
#[derive(Clone, Debug, Default)]
pub struct FakeMounter {
    inner: Arc<Mutex<Inner>>,
}

impl FakeMounter {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every call so far, as `op path`.
    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }
    /// Makes unmount fail with `Busy`.
    pub fn set_busy(&self, busy: bool) {
        self.inner.lock().unwrap().busy = busy;
    }
    /// Makes fsck report unfixable errors.
    pub fn set_fsck_fails(&self, fails: bool) {
        self.inner.lock().unwrap().fsck_fails = fails;
    }
    fn record(&self, op: &str, p: &Path) {
        self.inner
            .lock()
            .unwrap()
            .calls
            .push(format!("{op} {}", p.display()));
    }
}

impl Mounter for FakeMounter {
    fn fsck(&self, device: &Path) -> Result<FsckReport, MountError> {
        self.record("fsck", device);
        if self.inner.lock().unwrap().fsck_fails {
            return Err(MountError::new(
                ErrorKind::FsckFailed,
                format!("fsck found errors on {} it could not fix", device.display()),
            ));
        }
        Ok(FsckReport {
            exit_code: 0,
            fixed: false,
            output: String::new(),
        })
    }
    fn mount(
        &self,
        device: &Path,
        mountpoint: &Path,
        _opts: &MountOptions,
    ) -> Result<MountInfo, MountError> {
        self.record("mount", device);
        let mut i = self.inner.lock().unwrap();
        if i.mounts.contains_key(mountpoint) {
            return Err(MountError::new(
                ErrorKind::AlreadyMounted,
                format!("{} is already a mount point", mountpoint.display()),
            ));
        }
        // Like the real one: a device is mounted in one place at a time.
        if let Some(m) = i.mounts.values().find(|m| m.source == device) {
            return Err(MountError::new(
                ErrorKind::AlreadyMounted,
                format!(
                    "{} is already mounted at {}",
                    device.display(),
                    m.target.display()
                ),
            ));
        }
        let info = MountInfo {
            source: device.into(),
            target: mountpoint.into(),
            fstype: "ext4".into(),
        };
        i.mounts.insert(mountpoint.into(), info.clone());
        Ok(info)
    }
    fn unmount(&self, mountpoint: &Path) -> Result<UnmountReport, MountError> {
        self.record("unmount", mountpoint);
        let mut i = self.inner.lock().unwrap();
        // Like the real one: "not mounted" wins over "busy".
        if i.busy && i.mounts.contains_key(mountpoint) {
            return Err(MountError::new(
                ErrorKind::Busy,
                format!("{} is busy", mountpoint.display()),
            ));
        }
        match i.mounts.remove(mountpoint) {
            Some(_) => Ok(UnmountReport {
                attempts: 1,
                lazy: false,
            }),
            None => Err(MountError::new(
                ErrorKind::NotMounted,
                format!("{} is not mounted", mountpoint.display()),
            )),
        }
    }
    fn mounted_at(&self, mountpoint: &Path) -> Result<Option<MountInfo>, MountError> {
        Ok(self.inner.lock().unwrap().mounts.get(mountpoint).cloned())
    }
    fn describe_device(&self, device: &Path) -> String {
        format!("{} (fake)", device.display())
    }
    fn check_unused(&self, device: &Path) -> Result<(), MountError> {
        self.record("check_unused", device);
        match self
            .inner
            .lock()
            .unwrap()
            .mounts
            .values()
            .find(|m| m.source == device)
        {
            Some(m) => Err(MountError::new(
                ErrorKind::AlreadyMounted,
                format!("{} is mounted at {}", device.display(), m.target.display()),
            )),
            None => Ok(()),
        }
    }
    fn partition(&self, device: &Path) -> Result<PathBuf, MountError> {
        self.record("partition", device);
        Ok(PathBuf::from(format!("{}-part1", device.display())))
    }
    fn mkfs(&self, device: &Path, fstype: &str, _label: &str) -> Result<(), MountError> {
        self.record(&format!("mkfs.{fstype}"), device);
        Ok(())
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}
