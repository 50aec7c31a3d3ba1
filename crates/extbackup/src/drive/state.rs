//! What runs leave behind: a record per run on the drive (`.extbackup/last-run.json` and
//! `.extbackup/runs.jsonl` on its filesystem) and in the state directory
//! (`drives/NAME.json` with the last success and the last failure, `runs.jsonl`, and
//! `current.json` while a run is going on).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::drive::layout;

/// How a recorded run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    /// Copied, unmounted and closed.
    Success,
    /// Stopped at `failed_step`.
    Failure,
}

/// One run, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The drive's name.
    pub drive: String,
    /// Its LUKS UUID.
    pub uuid: String,
    /// The host that ran it.
    pub host: String,
    /// Start, seconds since the Unix epoch (written as `2026-12-03T12:00:00Z`; records
    /// with seconds, as written before, are read too).
    #[serde(with = "crate::fmt::iso_time")]
    pub started: u64,
    /// End, seconds since the Unix epoch (written like `started`).
    #[serde(with = "crate::fmt::iso_time")]
    pub finished: u64,
    /// How it ended.
    pub result: RunResult,
    /// The step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// The error chain, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error: Vec<String>,
    /// Files created or updated.
    pub files_copied: u64,
    /// Bytes transferred.
    pub bytes_copied: u64,
    /// Files deleted from the drive.
    pub files_deleted: u64,
    /// Files in the source.
    pub files_total: u64,
    /// Bytes in the source.
    pub bytes_total: u64,
    /// What the run found wrong on the drive that did not fail it (a future-dated
    /// generation, entries under `generations/` that are no generation): `status` shows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The last success and failure of one drive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriveState {
    /// The newest successful run.
    pub last_success: Option<RunRecord>,
    /// The newest failed run.
    pub last_failure: Option<RunRecord>,
}

/// The run going on now (`current.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentRun {
    /// The drive.
    pub drive: String,
    /// Process id of the run.
    pub pid: u32,
    /// Start, seconds since the epoch.
    pub started: u64,
    /// The step it is at.
    pub step: String,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The run lock file.
    pub fn run_lock_path(&self) -> PathBuf {
        self.root.join("run.lock")
    }

    /// `drives/NAME.json`, for a valid drive name only: a run that failed before its drive
    /// was known is recorded under the device's path (`/dev/sdb1`), which must not become
    /// a file name outside the state directory.
    fn drive_path(&self, drive: &str) -> Option<PathBuf> {
        crate::config::DriveName::try_from(drive.to_string())
            .ok()
            .map(|n| self.root.join("drives").join(format!("{n}.json")))
    }

    /// The recorded state of `drive` (empty if never run). A `drives/NAME.json` that cannot
    /// be parsed is an `InvalidData` error naming the file; [`drive_or_log`](Self::drive_or_log)
    /// falls back to the run log instead.
    pub fn drive(&self, drive: &str) -> std::io::Result<DriveState> {
        let Some(path) = self.drive_path(drive) else {
            return Ok(DriveState::default());
        };
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is damaged: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DriveState::default()),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("reading {}: {e}", path.display()),
            )),
        }
    }

    /// The state of `drive`, and what was wrong with its file if it had to be rebuilt from
    /// `runs.jsonl` (the log every run appends to). A drive with no state file (lost, or
    /// never written) is shown from the log too.
    pub fn drive_or_log(&self, drive: &str) -> (DriveState, Option<String>) {
        match self.drive(drive) {
            Ok(st) if st == DriveState::default() => (self.rebuild_from_log(drive), None),
            Ok(st) => (st, None),
            Err(e) => (self.rebuild_from_log(drive), Some(e.to_string())),
        }
    }

    /// The last success and failure of `drive` as `runs.jsonl` has them (damaged lines
    /// skipped).
    pub fn rebuild_from_log(&self, drive: &str) -> DriveState {
        let mut st = DriveState::default();
        let Ok(text) = std::fs::read_to_string(self.root.join(layout::RUNS_LOG)) else {
            return st;
        };
        for rec in text
            .lines()
            .filter_map(parse_log_line)
            .filter(|r| r.drive == drive)
        {
            let slot = match rec.result {
                RunResult::Success => &mut st.last_success,
                RunResult::Failure => &mut st.last_failure,
            };
            if !matches!(slot, Some(r) if r.finished > rec.finished) {
                *slot = Some(rec);
            }
        }
        st
    }

    /// Records `run` as the drive's last success or failure, and appends it to `runs.jsonl`
    /// (only there when `run.drive` is not a drive name, e.g. an unknown device's path).
    /// A damaged `drives/NAME.json` is kept aside (`NAME.json.damaged-TIME`) and rebuilt
    /// from `runs.jsonl` first, so no history is silently lost.
    pub fn record(&self, run: &RunRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join("drives"))?;
        if let Some(path) = self.drive_path(&run.drive) {
            let mut st = match self.drive(&run.drive) {
                Ok(st) => st,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let aside = path.with_extension(format!("json.damaged-{}", crate::fmt::now()));
                    std::fs::rename(&path, &aside)?;
                    tracing::warn!(
                        "{e}: kept aside as {}; rebuilt from {}",
                        aside.display(),
                        self.root.join(layout::RUNS_LOG).display()
                    );
                    self.rebuild_from_log(&run.drive)
                }
                Err(e) => return Err(e),
            };
            match run.result {
                RunResult::Success => st.last_success = Some(run.clone()),
                RunResult::Failure => st.last_failure = Some(run.clone()),
            }
            write_atomic(
                &path,
                &serde_json::to_vec_pretty(&st).map_err(std::io::Error::other)?,
            )?;
        }
        append_line(&self.root.join(layout::RUNS_LOG), run)
    }

    /// Notes the run going on now.
    pub fn set_current(&self, cur: &CurrentRun) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        write_atomic(
            &self.root.join("current.json"),
            &serde_json::to_vec(cur).map_err(std::io::Error::other)?,
        )
    }

    /// Forgets the current run, unless `current.json` names another live process: a run
    /// that failed before taking the run lock must not erase the status of the run that
    /// holds it.
    pub fn clear_current(&self) {
        if self.current().is_some_and(|c| c.pid != std::process::id()) {
            return;
        }
        let _ = std::fs::remove_file(self.root.join("current.json"));
    }

    /// The run `current.json` notes, alive or not. A noted run whose process is gone while
    /// the run lock is free was killed (SIGKILL, a crash, the power): see
    /// `run::ending::take_interrupted`.
    pub fn noted_current(&self) -> Option<CurrentRun> {
        let b = std::fs::read(self.root.join("current.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Forgets the noted run whatever its process (the caller holds the run lock, so it is
    /// no run going on).
    pub fn forget_current(&self) {
        let _ = std::fs::remove_file(self.root.join("current.json"));
    }

    /// The current run, if one is noted and its process is alive.
    pub fn current(&self) -> Option<CurrentRun> {
        let b = std::fs::read(self.root.join("current.json")).ok()?;
        let cur: CurrentRun = serde_json::from_slice(&b).ok()?;
        Path::new(&format!("/proc/{}", cur.pid))
            .exists()
            .then_some(cur)
    }
}

/// The record on one line of `runs.jsonl`; a record that an older version appended onto a
/// damaged line (garbage, then the record) is still found, from the last `{` it parses at.
fn parse_log_line(line: &str) -> Option<RunRecord> {
    serde_json::from_str(line).ok().or_else(|| {
        line.match_indices('{')
            .find_map(|(i, _)| serde_json::from_str(&line[i..]).ok())
    })
}

/// Writes the run record onto the mounted drive.
pub fn record_on_drive(mountpoint: &Path, run: &RunRecord) -> std::io::Result<()> {
    // Through the drive's handle: a symlink at `.extbackup` or at a record is an error,
    // never a write on the NAS (the drive check moves such a link aside before this).
    let drive = oskit::beneath::Beneath::open(mountpoint)?;
    let meta = Path::new(layout::META_DIR);
    drive.create_dir_all(meta, 0o755)?;
    let json = serde_json::to_vec_pretty(run).map_err(std::io::Error::other)?;
    drive.write_atomic(&meta.join(layout::LAST_RUN), &json, 0o644)?;
    let mut line = serde_json::to_vec(run).map_err(std::io::Error::other)?;
    line.push(b'\n');
    drive.append(&meta.join(layout::RUNS_LOG), &line, 0o644)?;
    // The record must survive a pull right after green.
    drive.sync_dir(meta)
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    oskit::write_atomic(path, data, None)
}

/// Appends `run` as one line. A log whose last line was cut short (a crash, a full disk,
/// a hand edit: no newline at the end) gets its newline first, so the damaged line stays
/// alone, skipped by readers, and never swallows the new record.
fn append_line(path: &Path, run: &RunRecord) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut line = vec![];
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8];
        f.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            line.push(b'\n');
        }
    }
    line.extend(serde_json::to_vec(run).map_err(std::io::Error::other)?);
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(result: RunResult, finished: u64) -> RunRecord {
        RunRecord {
            drive: "a".into(),
            uuid: "u".into(),
            host: "h".into(),
            started: finished - 5,
            finished,
            result,
            failed_step: None,
            error: vec![],
            files_copied: 1,
            bytes_copied: 2,
            files_deleted: 0,
            files_total: 3,
            bytes_total: 4,
            warnings: vec![],
        }
    }

    #[test]
    fn success_and_failure_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        assert_eq!(s.drive("a").unwrap(), DriveState::default());
        s.record(&rec(RunResult::Success, 100)).unwrap();
        s.record(&rec(RunResult::Failure, 200)).unwrap();
        let st = s.drive("a").unwrap();
        assert_eq!(st.last_success.unwrap().finished, 100);
        assert_eq!(st.last_failure.unwrap().finished, 200);
        let lines = std::fs::read_to_string(dir.path().join("runs.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 2);
    }

    #[test]
    fn records_write_iso_times_and_old_records_with_seconds_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("mnt");
        std::fs::create_dir_all(&mp).unwrap();
        let r = rec(RunResult::Success, 1_796_299_200);
        record_on_drive(&mp, &r).unwrap();
        let last = std::fs::read_to_string(mp.join(".extbackup/last-run.json")).unwrap();
        assert!(
            last.contains(r#""started": "2026-12-03T11:59:55Z""#)
                && last.contains(r#""finished": "2026-12-03T12:00:00Z""#),
            "{last}"
        );
        let line = std::fs::read_to_string(mp.join(".extbackup/runs.jsonl")).unwrap();
        assert!(
            line.contains(r#""finished":"2026-12-03T12:00:00Z""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<RunRecord>(&last).unwrap(), r);
        // A record as written before (seconds since 1970), as an older drive or state
        // directory holds it.
        let old = serde_json::to_string(&r)
            .unwrap()
            .replace(r#""2026-12-03T11:59:55Z""#, "1796299195")
            .replace(r#""2026-12-03T12:00:00Z""#, "1796299200");
        assert!(old.contains(r#""finished":1796299200"#), "{old}");
        assert_eq!(serde_json::from_str::<RunRecord>(&old).unwrap(), r);
        let s = StateDir::new(dir.path().join("state"));
        std::fs::create_dir_all(s.path().join("drives")).unwrap();
        std::fs::write(
            s.path().join("drives/a.json"),
            format!(r#"{{"last_success":{old},"last_failure":null}}"#),
        )
        .unwrap();
        assert_eq!(s.drive("a").unwrap().last_success, Some(r));
    }

    #[test]
    fn a_run_log_ending_in_a_cut_line_keeps_the_next_record_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        s.record(&rec(RunResult::Success, 100)).unwrap();
        let log = dir.path().join("runs.jsonl");
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("{\"drive\":\"a\",\"garb"); // cut short, no newline
        std::fs::write(&log, &text).unwrap();
        s.record(&rec(RunResult::Success, 300)).unwrap();
        let after = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = after.lines().collect();
        assert_eq!(lines.len(), 3, "{after}");
        assert_eq!(
            lines[1], "{\"drive\":\"a\",\"garb",
            "the damaged line alone"
        );
        let last: RunRecord = serde_json::from_str(lines[2]).expect("the new record whole");
        assert_eq!(last.finished, 300);
        assert_eq!(
            s.rebuild_from_log("a").last_success.unwrap().finished,
            300,
            "found as the last success"
        );
    }

    #[test]
    fn a_record_glued_onto_a_damaged_line_is_still_read() {
        let glued = format!(
            "garbage{{not json{}",
            serde_json::to_string(&rec(RunResult::Success, 400)).unwrap()
        );
        assert_eq!(parse_log_line(&glued).unwrap().finished, 400);
        assert!(parse_log_line("garbage").is_none());
    }

    #[test]
    fn a_device_path_as_drive_name_stays_inside_the_state_dir() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path().join("state"));
        // A run that failed before its drive was known is named after the device.
        let dev = outside.path().join("sdb1");
        let mut r = rec(RunResult::Failure, 100);
        r.drive = dev.display().to_string();
        s.record(&r).unwrap();
        r.drive = "../escaped".into();
        s.record(&r).unwrap();
        assert!(!outside.path().join("sdb1.json").exists());
        assert!(!outside.path().join("sdb1.tmp").exists());
        assert!(!dir.path().join("escaped.json").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("state/drives"))
                .unwrap()
                .count(),
            0
        );
        let lines = std::fs::read_to_string(dir.path().join("state/runs.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 2, "still in the run log: {lines}");
        assert_eq!(
            s.drive(&dev.display().to_string()).unwrap(),
            DriveState::default()
        );
    }

    #[test]
    fn a_damaged_drive_file_is_kept_aside_and_rebuilt_from_the_run_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        s.record(&rec(RunResult::Success, 100)).unwrap();
        s.record(&rec(RunResult::Failure, 200)).unwrap();
        let file = dir.path().join("drives/a.json");
        let text = std::fs::read(&file).unwrap();
        std::fs::write(&file, &text[..text.len() / 2]).unwrap(); // truncated
        let e = s.drive("a").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("drives/a.json"), "{e}");
        let (st, why) = s.drive_or_log("a");
        assert!(why.is_some());
        assert_eq!(st.last_success.unwrap().finished, 100);
        // The next run keeps the damaged file and loses no history.
        s.record(&rec(RunResult::Failure, 300)).unwrap();
        let st = s.drive("a").unwrap();
        assert_eq!(st.last_success.unwrap().finished, 100, "success kept");
        assert_eq!(st.last_failure.unwrap().finished, 300);
        let aside: Vec<_> = std::fs::read_dir(dir.path().join("drives"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "the damaged file is kept aside");
    }

    #[test]
    fn current_run_needs_a_live_process() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        let mut cur = CurrentRun {
            drive: "a".into(),
            pid: std::process::id(),
            started: 1,
            step: "sync".into(),
        };
        s.set_current(&cur).unwrap();
        assert_eq!(s.current(), Some(cur.clone()));
        cur.pid = u32::MAX;
        s.set_current(&cur).unwrap();
        assert_eq!(s.current(), None);
        s.clear_current();
        assert!(!dir.path().join("current.json").exists());
        // Another live process's run (pid 1) is not ours to forget.
        cur.pid = 1;
        s.set_current(&cur).unwrap();
        s.clear_current();
        assert_eq!(s.current(), Some(cur));
    }
}
