//! What every `Mounter` promises, as one suite run on the fake and on `NixMounter` alike:
//! a mount is seen at its mount point; a mount point or a device is never mounted twice;
//! an unmount ends it, and a second one says it is not mounted.

use crate::support::{root_or_skip_here, LoopImage};
use mounter::fake::FakeMounter;
use mounter::{ErrorKind, MountOptions, Mounter, NixMounter};
use std::path::Path;

fn keeps_the_mounter_promises(m: &dyn Mounter, dev: &Path, other_dev: &Path, dir: &Path) {
    let name = m.describe();
    let (mp, mp2) = (dir.join("mp"), dir.join("mp2"));
    let o = MountOptions::default();
    assert_eq!(m.mounted_at(&mp).unwrap(), None, "{name}");
    assert!(
        !m.fsck(dev).expect("fsck of a clean filesystem").fixed,
        "{name}"
    );
    let info = m.mount(dev, &mp, &o).expect("mount");
    assert_eq!(info.target, mp, "{name}");
    let seen = m.mounted_at(&mp).unwrap().expect("seen at its mount point");
    assert_eq!(seen.source, dev, "{name}");
    let kind = |r: Result<mounter::MountInfo, mounter::MountError>| r.unwrap_err().kind();
    assert_eq!(
        kind(m.mount(dev, &mp, &o)),
        ErrorKind::AlreadyMounted,
        "{name}"
    );
    assert_eq!(
        kind(m.mount(other_dev, &mp, &o)),
        ErrorKind::AlreadyMounted,
        "{name}"
    );
    assert_eq!(
        kind(m.mount(dev, &mp2, &o)),
        ErrorKind::AlreadyMounted,
        "{name}: the device"
    );
    m.unmount(&mp).expect("unmount");
    assert_eq!(m.mounted_at(&mp).unwrap(), None, "{name}");
    let e = m.unmount(&mp).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotMounted, "{name}: {e}");
}

#[test]
fn the_fake_keeps_the_mounter_promises() {
    let dir = tempfile::tempdir().unwrap();
    let m = FakeMounter::new();
    keeps_the_mounter_promises(
        &m,
        Path::new("/dev/fake-a"),
        Path::new("/dev/fake-b"),
        dir.path(),
    );
}

#[test]
fn nix_mounter_keeps_the_mounter_promises() {
    if !root_or_skip_here() {
        return;
    }
    let (a, b) = (LoopImage::ext4(16), LoopImage::ext4(16));
    keeps_the_mounter_promises(&NixMounter::new(), &a.dev, &b.dev, &a.path(""));
}
