//! The few Linux facts and writes that several crates share, written once: mountinfo
//! parsing ([`mountinfo`]), a durable atomic file write ([`write_atomic`]) and the root
//! check ([`is_root`]). It depends on nothing in the workspace, so the backend crates, the
//! orchestrator, `testkit`, `hw-tests` and `xtask` can all use it.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let p = dir.path().join("state.json");
//! oskit::write_atomic(&p, b"{}", None).unwrap();
//! assert_eq!(std::fs::read(&p).unwrap(), b"{}");
//! ```
#![warn(missing_docs)]

pub mod mountinfo;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Replaces `path` with `data` so that a crash or a power cut leaves either the old or the
/// new content, never a mix: a temporary file beside it, written and `fsync`ed, renamed
/// over it, then the folder `fsync`ed. With `mode` the file gets that mode; without it, it
/// keeps the mode of the file it replaces (a new one gets 0644 less the umask).
pub fn write_atomic(path: &Path, data: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mode = mode.or_else(|| {
        fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    });
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode.unwrap_or(0o644))
            .open(&tmp)?;
        if let Some(m) = mode {
            // The umask may have taken bits away: the mode asked for is the mode given.
            f.set_permissions(fs::Permissions::from_mode(m))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_and_keep_or_set_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", Some(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, b"two, longer", None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two, longer");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "kept"
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A folder that is missing is an error, not a panic.
        assert!(write_atomic(&dir.path().join("missing/f"), b"x", None).is_err());
    }
}
