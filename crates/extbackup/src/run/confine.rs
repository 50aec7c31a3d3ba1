//! Defense in depth, enforced by the kernel: the steps of a run that work on the drive (the
//! drive check, the free-space step that may prune, the copy with its rsync, cp and btrfs
//! children, the record) run on a thread that Landlock confines before they begin. That
//! thread, and every process it starts, may write (create, remove, rename, link, truncate,
//! write into) only beneath:
//!
//! - the drive's mount point (what the run is for);
//! - the state directory (`verify/NAME.json` from `policy.verify_every`, `scrub/NAME.json`
//!   from `policy.scrub_share`, the run's records);
//! - the mail spool (a notifier used from the confined steps spools there);
//! - the source-lock files themselves (a named source's lock is taken just before its copy;
//!   one that does not exist yet is created empty first, as taking it would: its folder,
//!   often a share's root, is not opened to writes);
//! - the LED's slot folder (`BLINKSTICK_SLOTS_DIR`, else `/run/blinkstick/slots`: the shared
//!   indicator rewrites its slot on each progress step) and `/dev/null` (children's stdio).
//!
//! Reading and executing are not restricted (the copy reads the source; the tools run from
//! anywhere). Mounting cannot happen under Landlock, so the steps that mount, unmount, open
//! and close the volume and take the run lock stay on the unconfined main thread; so do the
//! hooks, which are the owner's own commands from the root-owned configuration and may need
//! to write anywhere (a snapshot, a service's state): they run outside the restriction by
//! design. A kernel without Landlock (before 5.13, or not enabled at boot) runs the same
//! steps unconfined, said once in the log. A future bug that writes off the drive fails with
//! EACCES instead of touching the NAS.

use std::path::{Path, PathBuf};
use std::sync::Once;

use landlock::{
    path_beneath_rules, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};

use crate::config::Config;
use crate::Failure;

/// The newest Landlock ABI this code knows; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V5;

/// The folders (and files) a confined step may write beneath, for the drive mounted at
/// `mount_point`; those that do not exist are left out (nothing can be written there).
pub fn writable(cfg: &Config, mount_point: &Path) -> Vec<PathBuf> {
    let mut v = vec![mount_point.to_path_buf(), cfg.state_dir.clone()];
    if let Some(m) = cfg.notify_config() {
        v.push(m.spool_dir);
    }
    let locks = cfg
        .sources()
        .into_iter()
        .filter_map(|s| s.lock.map(|l| l.path));
    for lock in locks.chain(cfg.source_lock.as_ref().map(|l| l.path.clone())) {
        if !lock.exists() {
            // What taking the lock does first; the folder itself stays closed to writes.
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&lock);
        }
        v.push(lock);
    }
    v.push(
        std::env::var_os("BLINKSTICK_SLOTS_DIR")
            .map_or_else(|| PathBuf::from("/run/blinkstick/slots"), PathBuf::from),
    );
    v.push("/dev/null".into());
    v.retain(|p| p.exists());
    v.sort();
    v.dedup();
    v
}

/// How the calling thread ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confinement {
    /// Every write-type access is restricted.
    Full,
    /// Restricted, with what this kernel's Landlock ABI can restrict.
    Partial,
    /// The kernel has no Landlock: not restricted.
    None,
}

static UNSUPPORTED: Once = Once::new();

/// Restricts the calling thread (and the processes it starts from now on) to write only
/// beneath `paths`. Irreversible for the thread: call it on a thread of its own.
pub fn restrict_this_thread(paths: &[PathBuf]) -> Result<Confinement, Failure> {
    let fail = |e: landlock::RulesetError| Failure::with("confining the run with Landlock", e);
    let write = AccessFs::from_write(ABI_WANTED);
    let status = Ruleset::default()
        .handle_access(write)
        .map_err(fail)?
        .create()
        .map_err(fail)?
        .add_rules(path_beneath_rules(paths, write))
        .map_err(fail)?
        .restrict_self()
        .map_err(fail)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Confinement::Full,
        RulesetStatus::PartiallyEnforced => Confinement::Partial,
        RulesetStatus::NotEnforced => {
            UNSUPPORTED.call_once(|| {
                tracing::warn!(
                    "this kernel has no Landlock: the run's writes are not confined to the \
                     drive and its own folders (the drive handle still never leaves the drive)"
                )
            });
            Confinement::None
        }
    })
}

/// Runs `f` on a new thread confined to write beneath `paths` only, and gives back its
/// result (a panic in it goes on here).
pub fn confined<T: Send>(
    paths: &[PathBuf],
    f: impl FnOnce() -> Result<T, Failure> + Send,
) -> Result<T, Failure> {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            restrict_this_thread(paths)?;
            f()
        });
        match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confined_thread_writes_beneath_its_folders_only_and_its_children_too() {
        let d = tempfile::tempdir().unwrap();
        let (inside, outside) = (d.path().join("drive"), d.path().join("nas"));
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "keep").unwrap();
        let status = std::thread::scope(|s| {
            s.spawn(|| restrict_this_thread(std::slice::from_ref(&inside)).unwrap())
                .join()
                .unwrap()
        });
        if status == Confinement::None {
            // Fails under EXTBACKUP_REQUIRE_REAL: the fallback is not what this test names.
            testkit::skip_here("this kernel has no Landlock");
            return;
        }
        let (i, o) = (inside.clone(), outside.clone());
        let r = confined(std::slice::from_ref(&inside), move || {
            std::fs::write(i.join("ok"), "x").map_err(|e| Failure::with("inside", e))?;
            let own = std::fs::write(o.join("new"), "x");
            let rm = std::fs::remove_file(o.join("keep"));
            let child = std::process::Command::new("sh")
                .args(["-c", &format!("echo x > {}/child", o.display())])
                .status()
                .map_err(|e| Failure::with("sh", e))?;
            Ok((own, rm, child))
        })
        .unwrap();
        assert_eq!(
            r.0.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            r.1.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied
        );
        assert!(!r.2.success());
        assert!(inside.join("ok").exists());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        // The calling thread itself is not confined.
        std::fs::write(outside.join("main"), "x").unwrap();
    }
}
