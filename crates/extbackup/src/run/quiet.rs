//! A quiet NAS while the copy runs: the `[quiet]` table's nice value and I/O class, set on
//! the thread that starts the copy (Linux keeps both per thread, and rsync or the sync
//! command inherit them) for the copy only and put back after it. The bandwidth limit is
//! rsync's `--bwlimit` ([`rsync_args`], used by `backends`).

use crate::config::{IoClassName, QuietConfig};

/// Puts the priority back when dropped.
pub struct Quiet(Option<oskit::ThreadPriority>);

impl Drop for Quiet {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = oskit::restore_thread_priority(p) {
                tracing::warn!("putting the priority back after the copy: {e}");
            }
        }
    }
}

/// Applies `cfg` to the calling thread until the returned guard is dropped. A failure is a
/// warning: a loud copy is better than none.
pub fn apply(cfg: &QuietConfig) -> Quiet {
    let io = cfg.io_class.map(|c| match c {
        IoClassName::Idle => oskit::IoClass::Idle,
        IoClassName::BestEffort => {
            oskit::IoClass::BestEffort(cfg.io_priority.map_or(4, |l| l.get()))
        }
    });
    let nice = cfg.nice.map(|n| n.get());
    if nice.is_none() && io.is_none() {
        return Quiet(None);
    }
    match oskit::set_thread_priority(nice, io) {
        Ok(saved) => {
            tracing::info!(
                "copy priority: nice {}, I/O class {}",
                nice.map_or("unchanged".into(), |n| n.to_string()),
                io.map_or("unchanged".into(), |c| format!("{c:?}").to_lowercase())
            );
            Quiet(Some(saved))
        }
        Err(e) => {
            tracing::warn!(
                "setting the copy's priority ([quiet]): {e}; copying at normal priority"
            );
            Quiet(None)
        }
    }
}

/// rsync's extra arguments for `cfg`: `--bwlimit=N` (KiB/s).
pub fn rsync_args(cfg: &QuietConfig) -> Vec<String> {
    cfg.bwlimit_kib
        .map(|b| format!("--bwlimit={}", b.get()))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn quiet(t: &str) -> QuietConfig {
        Config::parse(&format!("source = \"/srv\"\n[quiet]\n{t}"))
            .unwrap()
            .quiet
    }

    #[test]
    fn the_copy_runs_quiet_and_the_priority_comes_back() {
        // On a thread of its own: the priority is the thread's.
        std::thread::spawn(|| {
            let before = oskit::thread_priority().unwrap();
            let q = apply(&quiet("nice = 15\nio_class = \"idle\"\n"));
            assert_eq!(oskit::thread_priority().unwrap(), (15, (3, 0)));
            // What the copy inherits: a child started now sees both.
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", "cut -d' ' -f19 /proc/self/stat; ionice"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.starts_with("15\n") && text.contains("idle"), "{text}");
            drop(q);
            if oskit::is_root() {
                assert_eq!(oskit::thread_priority().unwrap(), before);
            }
            let _q = apply(&quiet("io_class = \"best-effort\"\nio_priority = 6\n"));
            assert_eq!(oskit::thread_priority().unwrap().1, (2, 6));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn bwlimit_goes_to_rsync_and_bad_values_name_line_and_column() {
        assert_eq!(
            rsync_args(&quiet("bwlimit_kib = 20000\n")),
            ["--bwlimit=20000"]
        );
        assert!(rsync_args(&quiet("")).is_empty());
        for (bad, at, needle) in [
            ("nice = 20\n", "line 3, column 8", "-20 (first) to 19"),
            (
                "io_class = \"low\"\n",
                "line 3, column 12",
                "unknown variant",
            ),
            (
                "io_class = \"best-effort\"\nio_priority = 8\n",
                "line 4, column 15",
                "0 (first) to 7",
            ),
            (
                "io_class = \"idle\"\nio_priority = 3\n",
                "line 2, column 1",
                "best-effort",
            ),
            ("bwlimit_kib = 0\n", "line 3, column 15", "at least 1"),
        ] {
            let e = Config::parse(&format!("source = \"/srv\"\n[quiet]\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(at) && e.contains(needle), "{bad}: {e}");
        }
    }
}
