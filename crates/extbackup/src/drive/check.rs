//! The drive check, right after mounting: what lies at the top of the drive must be what a
//! run put there. `data`, `generations` and each generation, each named source's folder in
//! them, `.extbackup`, `.extbackup/headers` and `.extbackup/manifests` must be real folders;
//! the records (`last-run.json`, `runs.jsonl`, `scrub.json`), each header backup and each
//! manifest regular files. A symbolic link or an
//! entry of the wrong type is moved aside into `.extbackup/quarantine/` (a warning for the log
//! and the mail) and never followed; one that cannot be moved fails the run, naming it.
//! Everything here goes through the drive's handle ([`crate::drive::handle`]).

use std::path::{Path, PathBuf};

use crate::drive::handle::{Drive, Kind};
use crate::drive::layout::{
    DATA_DIR, GENERATIONS_DIR, HEADERS_DIR, LAST_RUN, MANIFESTS_DIR, META_DIR, RUNS_LOG,
    SCRUB_POSITION,
};
use crate::Failure;

/// Where entries of the wrong kind are moved, below the drive's root.
pub const QUARANTINE_DIR: &str = ".extbackup/quarantine";

/// Checks the drive mounted at `mount_point` (see the module); `sources` are the named
/// sources' folder names (empty with the single `source`). Returns one warning per entry
/// moved aside.
pub fn check(mount_point: &Path, sources: &[String]) -> Result<Vec<String>, Failure> {
    let drive = crate::drive::handle::open(mount_point)?;
    let mut c = Check {
        drive: &drive,
        moved: vec![],
        n: 0,
    };
    let meta = Path::new(META_DIR);
    c.expect(meta, Kind::Dir)?;
    c.expect(Path::new(QUARANTINE_DIR), Kind::Dir)?;
    c.expect(&meta.join(LAST_RUN), Kind::File)?;
    c.expect(&meta.join(RUNS_LOG), Kind::File)?;
    if c.expect(Path::new(HEADERS_DIR), Kind::Dir)? {
        c.each(Path::new(HEADERS_DIR), Kind::File, &[])?;
    }
    if c.expect(Path::new(MANIFESTS_DIR), Kind::Dir)? {
        c.each(Path::new(MANIFESTS_DIR), Kind::File, &[])?;
    }
    c.expect(Path::new(SCRUB_POSITION), Kind::File)?;
    if c.expect(Path::new(DATA_DIR), Kind::Dir)? {
        for s in sources {
            c.expect(&Path::new(DATA_DIR).join(s), Kind::Dir)?;
        }
    }
    if c.expect(Path::new(GENERATIONS_DIR), Kind::Dir)? {
        c.each(Path::new(GENERATIONS_DIR), Kind::Dir, sources)?;
    }
    Ok(c.moved)
}

struct Check<'a> {
    drive: &'a Drive,
    moved: Vec<String>,
    n: u32,
}

impl Check<'_> {
    /// `rel` is `want` or absent (`true` when it is there and right); otherwise moved aside.
    fn expect(&mut self, rel: &Path, want: Kind) -> Result<bool, Failure> {
        let kind = self
            .drive
            .kind(rel)
            .map_err(|e| Failure::with(format!("drive check: reading {}", self.show(rel)), e))?;
        match kind {
            None => Ok(false),
            Some(k) if k == want => Ok(true),
            Some(k) => {
                self.move_aside(rel, k, want)?;
                Ok(false)
            }
        }
    }

    /// Each entry of the folder `rel` must be `want`; in each, the `inner` folders too.
    fn each(&mut self, rel: &Path, want: Kind, inner: &[String]) -> Result<(), Failure> {
        let entries = self
            .drive
            .read_dir(rel)
            .map_err(|e| Failure::with(format!("drive check: listing {}", self.show(rel)), e))?;
        for (name, _) in entries {
            let p = rel.join(&name);
            if self.expect(&p, want)? {
                for s in inner {
                    self.expect(&p.join(s), Kind::Dir)?;
                }
            }
        }
        Ok(())
    }

    fn show(&self, rel: &Path) -> String {
        self.drive.root().join(rel).display().to_string()
    }

    /// Moves `rel` (of kind `is`, not `want`) into the quarantine: first to a free name at
    /// the drive's root (so `.extbackup` itself can go too), then into the folder.
    fn move_aside(&mut self, rel: &Path, is: Kind, want: Kind) -> Result<(), Failure> {
        let target = match is {
            Kind::Symlink => std::fs::read_link(self.drive.root().join(rel))
                .map(|t| format!(" pointing to {}", t.display()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let what = format!(
            "the drive held {} as {}{target} where {} belongs",
            self.show(rel),
            is.words(),
            want.words()
        );
        let fail = |e: std::io::Error| {
            Failure::with(
                format!(
                    "drive check: {what}, and it cannot be moved aside into {QUARANTINE_DIR}: \
                     the run stops here without following it; remove it by hand"
                ),
                e,
            )
        };
        self.n += 1;
        let stamp = syncer::generations::Stamp(crate::fmt::now() as i64).name();
        let flat = rel.to_string_lossy().replace('/', "_");
        let tmp = PathBuf::from(format!(
            ".extbackup-aside-{}-{}",
            std::process::id(),
            self.n
        ));
        self.drive.rename(rel, &tmp).map_err(fail)?;
        let q = Path::new(QUARANTINE_DIR);
        let dest = q.join(format!("{stamp}-{}-{flat}", self.n));
        self.drive
            .create_dir_all(q, 0o700)
            .and_then(|_| self.drive.rename(&tmp, &dest))
            .map_err(fail)?;
        let line = format!(
            "{what}: moved aside to {} (never followed)",
            self.show(&dest)
        );
        tracing::warn!("{line}");
        self.moved.push(line);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn nas_and_drive() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let (mp, nas) = (d.path().join("drive"), d.path().join("nas"));
        std::fs::create_dir_all(&mp).unwrap();
        std::fs::create_dir_all(nas.join("2020-01-01T000000Z")).unwrap();
        std::fs::write(nas.join("2020-01-01T000000Z/precious.txt"), "keep").unwrap();
        std::fs::write(nas.join("runs.jsonl"), "nas\n").unwrap();
        (d, mp, nas)
    }

    #[test]
    fn a_clean_drive_passes_untouched() {
        let (_d, mp, _) = nas_and_drive();
        std::fs::create_dir_all(mp.join("generations/2025-01-01T000000Z/docs")).unwrap();
        std::fs::create_dir_all(mp.join(".extbackup/headers")).unwrap();
        std::fs::write(mp.join(".extbackup/runs.jsonl"), "").unwrap();
        assert!(check(&mp, &["docs".into()]).unwrap().is_empty());
        assert!(!mp.join(QUARANTINE_DIR).exists());
        assert!(check(Path::new("/nonexistent-drive"), &[]).is_err());
    }

    #[test]
    fn symlinks_and_wrong_kinds_are_moved_aside_never_followed() {
        let (_d, mp, nas) = nas_and_drive();
        symlink(&nas, mp.join(".extbackup")).unwrap();
        symlink(&nas, mp.join("generations")).unwrap();
        std::fs::create_dir(mp.join("data")).unwrap();
        symlink(&nas, mp.join("data/docs")).unwrap();
        let moved = check(&mp, &["docs".into()]).unwrap();
        assert_eq!(moved.len(), 3, "{moved:?}");
        assert!(moved[0].contains("symbolic link pointing to"), "{moved:?}");
        let q: Vec<_> = std::fs::read_dir(mp.join(QUARANTINE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(q.len(), 3, "{q:?}");
        assert!(std::fs::symlink_metadata(mp.join(".extbackup"))
            .unwrap()
            .is_dir());
        assert!(!mp.join("generations").exists() && !mp.join("data/docs").exists());
        // The NAS folder is as it was.
        assert_eq!(std::fs::read_dir(&nas).unwrap().count(), 2);
        assert_eq!(
            std::fs::read(nas.join("2020-01-01T000000Z/precious.txt")).unwrap(),
            b"keep"
        );
        // Inside .extbackup, and inside generations.
        symlink(nas.join("runs.jsonl"), mp.join(".extbackup/runs.jsonl")).unwrap();
        std::fs::create_dir(mp.join(".extbackup/last-run.json")).unwrap();
        symlink(&nas, mp.join(".extbackup/headers")).unwrap();
        std::fs::create_dir_all(mp.join("generations/2025-01-01T000000Z")).unwrap();
        symlink(&nas, mp.join("generations/2024-01-01T000000Z")).unwrap();
        std::fs::write(mp.join("generations/2023-01-01T000000Z"), "x").unwrap();
        symlink(&nas, mp.join("generations/2025-01-01T000000Z/docs")).unwrap();
        let moved = check(&mp, &["docs".into()]).unwrap();
        assert_eq!(moved.len(), 6, "{moved:#?}");
        assert_eq!(std::fs::read(nas.join("runs.jsonl")).unwrap(), b"nas\n");
        assert_eq!(
            std::fs::read_dir(mp.join("generations")).unwrap().count(),
            1
        );
        assert!(check(&mp, &["docs".into()]).unwrap().is_empty());
    }

    #[test]
    fn manifests_of_the_wrong_kind_are_moved_aside() {
        let (_d, mp, nas) = nas_and_drive();
        std::fs::create_dir_all(mp.join(".extbackup")).unwrap();
        symlink(&nas, mp.join(MANIFESTS_DIR)).unwrap();
        symlink(nas.join("runs.jsonl"), mp.join(SCRUB_POSITION)).unwrap();
        let moved = check(&mp, &[]).unwrap();
        assert_eq!(moved.len(), 2, "{moved:#?}");
        std::fs::create_dir_all(mp.join(MANIFESTS_DIR)).unwrap();
        std::fs::write(mp.join(MANIFESTS_DIR).join("a.sha256"), "").unwrap();
        symlink(
            nas.join("runs.jsonl"),
            mp.join(MANIFESTS_DIR).join("b.files"),
        )
        .unwrap();
        std::fs::create_dir(mp.join(MANIFESTS_DIR).join("c.files")).unwrap();
        let moved = check(&mp, &[]).unwrap();
        assert_eq!(moved.len(), 2, "{moved:#?}");
        assert!(mp.join(MANIFESTS_DIR).join("a.sha256").is_file());
        assert_eq!(std::fs::read(nas.join("runs.jsonl")).unwrap(), b"nas\n");
        assert!(check(&mp, &[]).unwrap().is_empty());
    }

    #[test]
    fn what_cannot_be_moved_aside_fails_naming_it() {
        if !testkit::root_or_skip_here() {
            return;
        }
        let (_d, mp, nas) = nas_and_drive();
        symlink(&nas, mp.join("generations")).unwrap();
        // A read-only bind of the drive: nothing can be renamed.
        let ro = mp.with_file_name("ro");
        std::fs::create_dir(&ro).unwrap();
        let sh = |c: &str| {
            assert!(std::process::Command::new("sh")
                .args(["-c", c])
                .status()
                .unwrap()
                .success())
        };
        sh(&format!(
            "mount --bind {0} {1} && mount -o remount,bind,ro {1}",
            mp.display(),
            ro.display()
        ));
        let e = check(&ro, &[]).unwrap_err();
        sh(&format!("umount {}", ro.display()));
        let e = crate::chain(&e);
        assert!(e.contains("generations as a symbolic link"), "{e}");
        assert!(e.contains("cannot be moved aside"), "{e}");
    }
}
