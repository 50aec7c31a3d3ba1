//! The names of what a run puts on a drive and on the host for it, in one place.
//!
//! On the drive's filesystem:
//!
//! ```text
//! data/                          the plain mirror (history = false)
//! generations/DATE/              dated generations (syncer::generations)
//! .extbackup/last-run.json       the last run's record
//! .extbackup/runs.jsonl          every run's record, one JSON object a line
//! .extbackup/headers/NAME.img    the other drives' LUKS header backups
//! .extbackup/manifests/TREE.sha256  a tree's GNU sha256sum listing (TREE: a generation's
//!                                name, or `data` for the plain mirror; docs/manifests.md)
//! .extbackup/manifests/TREE.files   its sidecar (size, mtime, mode, owner, inode a file)
//! .extbackup/scrub.json          where the rotating scrub of [policy] scrub_share is
//! ```

use std::path::{Path, PathBuf};

pub use syncer::generations::GENERATIONS_DIR;

/// The folder on the drive's filesystem that mirrors the source.
pub const DATA_DIR: &str = "data";

/// The folder on the drive that holds what extbackup records about it.
pub const META_DIR: &str = ".extbackup";

/// The last run's record, in [`META_DIR`].
pub const LAST_RUN: &str = "last-run.json";

/// Every run's record, one JSON object a line (in [`META_DIR`] and in the state directory).
pub const RUNS_LOG: &str = "runs.jsonl";

/// The other drives' LUKS header backups, below the drive's root.
pub const HEADERS_DIR: &str = ".extbackup/headers";

/// The manifests of the drive's trees, below the drive's root.
pub const MANIFESTS_DIR: &str = ".extbackup/manifests";

/// The ending of a tree's `sha256sum` listing in [`MANIFESTS_DIR`].
pub const MANIFEST_LISTING_EXT: &str = ".sha256";

/// The ending of a tree's sidecar in [`MANIFESTS_DIR`].
pub const MANIFEST_SIDECAR_EXT: &str = ".files";

/// Where the rotating scrub (`[policy] scrub_share`) goes on next, below the drive's root.
pub const SCRUB_POSITION: &str = ".extbackup/scrub.json";

/// The `sha256sum` listing of the tree `tree` (a generation's name, or `data`), below the
/// drive's root.
pub fn manifest_listing(tree: &str) -> PathBuf {
    Path::new(MANIFESTS_DIR).join(format!("{tree}{MANIFEST_LISTING_EXT}"))
}

/// The sidecar of the tree `tree`, below the drive's root.
pub fn manifest_sidecar(tree: &str) -> PathBuf {
    Path::new(MANIFESTS_DIR).join(format!("{tree}{MANIFEST_SIDECAR_EXT}"))
}

/// The name of the LUKS mapping of `drive`.
pub fn mapping_name(drive: &str) -> String {
    format!("extbackup-{drive}")
}

/// The folder of the drive mounted at `mount_point` that holds its records.
pub fn meta_dir(mount_point: &Path) -> PathBuf {
    mount_point.join(META_DIR)
}

/// The name of the mount point `extbackup mount` uses for `drive` below the mount root.
pub fn browse_name(drive: &str) -> String {
    format!("browse-{drive}")
}
