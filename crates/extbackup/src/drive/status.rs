//! `extbackup status` (per drive: last success and its age, last failure, bytes; the
//! current run) and `extbackup check --max-age DAYS` (a reminder when the newest
//! successful backup is too old).

use serde::Serialize;

use crate::config::Config;
use crate::drive::state::{CurrentRun, RunRecord, StateDir};
use crate::fmt::{fmt_age, fmt_utc};

/// The status of one drive.
#[derive(Clone, Debug, Serialize)]
pub struct DriveStatus {
    /// Its name.
    pub name: String,
    /// Its LUKS UUID.
    pub uuid: String,
    /// The newest successful run.
    pub last_success: Option<RunRecord>,
    /// Seconds since it finished.
    pub last_success_age_secs: Option<u64>,
    /// The newest failed run.
    pub last_failure: Option<RunRecord>,
    /// Why the drive's state file could not be read, when its state was rebuilt from the
    /// run log instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
    /// Recovery notes: a missing recovery passphrase, the last verify, the last scrub.
    pub notes: Vec<String>,
}

/// The status of every configured drive.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// When this was read, seconds since the epoch.
    pub now: u64,
    /// Per drive, in configuration order.
    pub drives: Vec<DriveStatus>,
    /// The run going on now.
    pub current: Option<CurrentRun>,
}

/// Reads the state of the configured drives at time `now`. A drive whose state file is
/// damaged or unreadable is shown from the run log, with the reason; the others as usual.
pub fn status(cfg: &Config, now: u64) -> std::io::Result<Status> {
    let st = StateDir::new(&cfg.state_dir);
    let mut drives = vec![];
    for d in &cfg.drives {
        let (s, state_error) = st.drive_or_log(d.name.as_str());
        drives.push(DriveStatus {
            state_error,
            name: d.name.to_string(),
            uuid: d.uuid.to_string(),
            last_success_age_secs: s
                .last_success
                .as_ref()
                .map(|r| now.saturating_sub(r.finished)),
            last_success: s.last_success,
            last_failure: s.last_failure,
            notes: crate::drive::recovery::status_note(&cfg.state_dir, d.name.as_str())
                .into_iter()
                .chain([
                    crate::drive::verify::status_note(&cfg.state_dir, d.name.as_str(), now),
                    crate::drive::scrub::status_note(&cfg.state_dir, d.name.as_str(), now),
                ])
                .collect(),
        });
    }
    Ok(Status {
        now,
        drives,
        current: st.current(),
    })
}

impl Status {
    /// The human form.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.drives.is_empty() {
            s.push_str("no drives configured (add one with `extbackup prepare`)\n");
        }
        for d in &self.drives {
            s.push_str(&format!("{} (UUID {})\n", d.name, d.uuid));
            if let Some(e) = &d.state_error {
                s.push_str(&format!(
                    "  warning: {e}; shown from the run log (runs.jsonl) instead\n"
                ));
            }
            match (&d.last_success, d.last_success_age_secs) {
                (Some(r), Some(age)) => s.push_str(&format!(
                    "  last success: {} ({} ago), {} files / {} copied, source {} files / {}\n",
                    fmt_utc(r.finished),
                    fmt_age(age),
                    r.files_copied,
                    oskit::human::bytes(r.bytes_copied),
                    r.files_total,
                    oskit::human::bytes(r.bytes_total)
                )),
                _ => s.push_str("  last success: never\n"),
            }
            match &d.last_failure {
                Some(r) => s.push_str(&format!(
                    "  last failure: {} at step {}: {}\n",
                    fmt_utc(r.finished),
                    r.failed_step.as_deref().unwrap_or("?"),
                    r.error.join(": ")
                )),
                None => s.push_str("  last failure: none\n"),
            }
            let last = [&d.last_success, &d.last_failure]
                .into_iter()
                .flatten()
                .max_by_key(|r| r.finished);
            for w in last.map_or(&[][..], |r| &r.warnings[..]) {
                s.push_str(&format!("  warning (last run): {w}\n"));
            }
            for n in &d.notes {
                s.push_str(&format!("  {n}\n"));
            }
        }
        if let Some(d) = self.due_next() {
            s.push_str(&format!("due next: {}\n", Self::age_line(d)));
        }
        match &self.current {
            Some(c) => s.push_str(&format!(
                "running now: {} since {} (pid {}), at step {}\n",
                c.drive,
                fmt_utc(c.started),
                c.pid,
                c.step
            )),
            None => s.push_str("running now: nothing\n"),
        }
        s
    }

    /// The newest success over all drives: (drive, finished).
    pub fn newest_success(&self) -> Option<(&str, u64)> {
        self.drives
            .iter()
            .filter_map(|d| {
                d.last_success
                    .as_ref()
                    .map(|r| (d.name.as_str(), r.finished))
            })
            .max_by_key(|(_, t)| *t)
    }

    /// The drives whose last good backup is older than `max_age_secs` (or who never had
    /// one), oldest first.
    pub fn stale(&self, max_age_secs: u64) -> Vec<&DriveStatus> {
        let mut v: Vec<&DriveStatus> = self
            .drives
            .iter()
            .filter(|d| d.last_success_age_secs.is_none_or(|a| a > max_age_secs))
            .collect();
        v.sort_by_key(|d| std::cmp::Reverse(d.last_success_age_secs.unwrap_or(u64::MAX)));
        v
    }

    /// The drive due next: the one whose last good backup is oldest (never first; on a
    /// tie, the first in the configuration).
    pub fn due_next(&self) -> Option<&DriveStatus> {
        self.drives
            .iter()
            .rev()
            .max_by_key(|d| d.last_success_age_secs.unwrap_or(u64::MAX))
    }

    /// One line per drive: "drive offsite-b: last good backup 47 days ago".
    pub fn age_line(d: &DriveStatus) -> String {
        match d.last_success_age_secs {
            Some(a) => format!("drive {}: last good backup {} ago", d.name, fmt_age(a)),
            None => format!("drive {}: never backed up", d.name),
        }
    }

    /// The reminder to send when any configured drive's last good backup is older than
    /// `max_age_secs` (or it has none): each rotated drive must come back in time, not
    /// only the newest one. `None` when every drive is recent enough.
    pub fn reminder(&self, cfg: &Config, max_age_secs: u64) -> Option<notifier::Event> {
        let stale = self.stale(max_age_secs);
        if stale.is_empty() {
            return None;
        }
        let mut details: Vec<String> = stale.iter().map(|d| Self::age_line(d)).collect();
        details.push(format!(
            "The limit is {}. Plug in {} to bring it up to date.",
            fmt_age(max_age_secs),
            if stale.len() == 1 {
                format!("drive {}", stale[0].name)
            } else {
                "those drives".to_string()
            }
        ));
        for d in self
            .drives
            .iter()
            .filter(|d| !stale.iter().any(|s| s.name == d.name))
        {
            details.push(format!("{} (within the limit)", Self::age_line(d)));
        }
        let names: Vec<&str> = stale.iter().map(|d| d.name.as_str()).collect();
        Some(notifier::Event {
            drive: names.join("/"),
            host: cfg.host_name(),
            outcome: notifier::Outcome::Reminder,
            failed_step: None,
            error_chain: vec![],
            log_tail: String::new(),
            duration: std::time::Duration::ZERO,
            files: 0,
            bytes: 0,
            details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::state::RunResult;

    fn cfg(dir: &std::path::Path) -> Config {
        Config::parse(&format!(
            r#"
source = "/srv"
state_dir = "{}"
host = "nas"
[[drive]]
name = "a"
uuid = "11111111-2222-4333-8444-555555555555"
key_file = "/k/a"
[[drive]]
name = "b"
uuid = "21111111-2222-4333-8444-555555555555"
key_file = "/k/b"
"#,
            dir.display()
        ))
        .unwrap()
    }

    fn rec(drive: &str, result: RunResult, finished: u64) -> RunRecord {
        RunRecord {
            drive: drive.into(),
            uuid: String::new(),
            host: "nas".into(),
            started: finished - 10,
            finished,
            result,
            failed_step: (result == RunResult::Failure).then(|| "mount".into()),
            error: vec![],
            files_copied: 2,
            bytes_copied: 2048,
            files_deleted: 0,
            files_total: 5,
            bytes_total: 4096,
            warnings: vec![],
        }
    }

    #[test]
    fn status_shows_age_and_failure_per_drive() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let st = StateDir::new(dir.path());
        st.record(&rec("a", RunResult::Success, 1000)).unwrap();
        st.record(&rec("b", RunResult::Failure, 2000)).unwrap();
        let s = status(&c, 1000 + 3 * 86_400).unwrap();
        assert_eq!(s.drives[0].last_success_age_secs, Some(3 * 86_400));
        assert!(s.drives[1].last_success.is_none());
        let text = s.render();
        assert!(text.contains("(3 days ago)"), "{text}");
        assert!(text.contains("last success: never"), "{text}");
        assert!(text.contains("at step mount"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["drives"][0]["last_success"]["bytes_copied"], 2048);
    }

    #[test]
    fn a_damaged_state_file_names_itself_and_hides_neither_drive_nor_history() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let st = StateDir::new(dir.path());
        st.record(&rec("a", RunResult::Success, 1000)).unwrap();
        st.record(&rec("b", RunResult::Success, 2000)).unwrap();
        std::fs::write(dir.path().join("drives/b.json"), "{\"last_succ").unwrap();
        let s = status(&c, 3000).expect("status works with one damaged file");
        assert_eq!(s.drives[0].last_success.as_ref().unwrap().finished, 1000);
        assert!(s.drives[0].state_error.is_none());
        assert_eq!(s.drives[1].last_success.as_ref().unwrap().finished, 2000);
        let text = s.render();
        assert!(text.contains("drives/b.json is damaged"), "{text}");
        assert!(!text.contains("last success: never"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["drives"][1]["state_error"].is_string(), "{json}");
        // A reminder names the recorded successes, never "never".
        let ev = s.reminder(&c, 1).expect("old enough to remind");
        assert!(
            ev.details.iter().all(|d| !d.contains("never")),
            "{:?}",
            ev.details
        );
    }

    #[test]
    fn reminder_names_each_drive_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let st = StateDir::new(dir.path());
        let day = 86_400;
        let s = status(&c, 100 * day).unwrap();
        let ev = s.reminder(&c, 30 * day).expect("never backed up: remind");
        assert!(
            ev.details[0].contains("never backed up"),
            "{:?}",
            ev.details
        );
        st.record(&rec("a", RunResult::Success, 53 * day)).unwrap();
        st.record(&rec("b", RunResult::Success, 95 * day)).unwrap();
        let s = status(&c, 100 * day).unwrap();
        // b is fresh, but a (never rotated) is 47 days old: that alone reminds.
        let ev = s.reminder(&c, 30 * day).expect("a is 47 days old");
        assert_eq!(ev.outcome, notifier::Outcome::Reminder);
        assert_eq!(ev.drive, "a");
        assert_eq!(ev.details[0], "drive a: last good backup 47 days ago");
        assert!(s
            .render()
            .contains("due next: drive a: last good backup 47 days ago"));
        assert!(s.reminder(&c, 50 * day).is_none(), "both within 50 days");
        let ev = s.reminder(&c, 2 * day).expect("both too old");
        assert_eq!(ev.drive, "a/b", "oldest first");
    }
}
