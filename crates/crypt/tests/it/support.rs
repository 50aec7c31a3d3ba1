//! Key files for the tests; loop devices, commands and mounts come from `testkit`.

use std::path::PathBuf;

pub use testkit::{detach, file_contains, mkfs_ext4, mount_at, root_or_skip_here, sh, LoopImage};

/// Key files in a [`LoopImage`]'s temp folder.
pub trait KeyFiles {
    /// A key file in the temp folder with `contents`.
    fn key(&self, name: &str, contents: &[u8]) -> PathBuf;
}

impl KeyFiles for LoopImage {
    fn key(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write key");
        p
    }
}

/// 4 KiB of random key material.
pub fn random_key() -> Vec<u8> {
    use rand::RngCore;
    let mut k = vec![0u8; 4096];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

/// Whether this kernel has device-mapper (the QEMU guest does, this host may not).
pub fn has_device_mapper() -> bool {
    std::fs::read_to_string("/proc/misc")
        .unwrap_or_default()
        .contains("device-mapper")
}
