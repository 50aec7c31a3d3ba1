//! How the end of a run reaches every monitor: the state directory (and so `status` and the
//! reminders), the LED, the mail, the ping and the Prometheus textfile.
//!
//! A run ends in one of three places, and each goes through here: the pipeline's `finish`
//! (every step's failure, a refusal of the guard, a lock not given, a stop signal, success)
//! takes its textfile and last ping from [`monitors`]; a run whose backends cannot be built
//! (a `state_dir` that is a file...) and a run found killed by the next invocation
//! ([`take_interrupted`]) are told by [`failed_outside`]. The textfile is written from the
//! run's own record as well as from the state directory, so a state directory that cannot
//! keep the record hides no outcome.

use indicator::{Indicator, State};
use notifier::Notifier;

use crate::config::Config;
use crate::drive::state::{RunRecord, RunResult, StateDir};
use crate::run::monitor::{failure_body, write_textfile, PingKind, Pinger};

/// The textfile (with `rec`, the run that just ended, when it was ours) and the last ping
/// (`/fail` with the log's tail when `failed`).
pub fn monitors(
    cfg: &Config,
    state: &StateDir,
    rec: Option<&RunRecord>,
    pinger: Option<Pinger>,
    failed: bool,
    log_tail: &str,
) {
    write_textfile(cfg, state, rec);
    if let Some(p) = pinger {
        if failed {
            p.finish(PingKind::Failure, failure_body(log_tail));
        } else {
            p.finish(PingKind::Success, String::new());
        }
    }
}

/// A failed run that ended outside the pipeline's `finish`: recorded in the state directory
/// (an error there is logged), red on `indicator` (the LED slot of its drive) when given,
/// one failure mail with `details` and `log_tail`, then the textfile and a `/fail` ping
/// (for a configured drive).
pub fn failed_outside(
    cfg: &Config,
    rec: &RunRecord,
    indicator: Option<&mut dyn Indicator>,
    notifier: Option<&dyn Notifier>,
    details: Vec<String>,
    log_tail: &str,
) {
    let state = StateDir::new(&cfg.state_dir);
    if let Err(e) = state.record(rec) {
        tracing::error!(
            "recording the failure in the state directory {}: {e}",
            state.path().display()
        );
    }
    if let Some(ind) = indicator {
        if let Err(e) = ind.show(State::Failure) {
            tracing::warn!("indicator {}: {}", ind.describe(), crate::chain(&e));
        }
    }
    match notifier {
        Some(n) => {
            let ev = notifier::Event {
                drive: rec.drive.clone(),
                host: rec.host.clone(),
                outcome: notifier::Outcome::Failure,
                failed_step: rec.failed_step.clone(),
                error_chain: rec.error.clone(),
                log_tail: log_tail.to_string(),
                duration: std::time::Duration::from_secs(rec.finished.saturating_sub(rec.started)),
                files: 0,
                bytes: 0,
                details,
            };
            if let Err(e) = n.notify(&ev) {
                tracing::error!("mail {:?}: {}", ev.subject(), crate::chain(&e));
            }
        }
        None => tracing::info!(
            "no mail configured: not mailing the failure of {}",
            rec.drive
        ),
    }
    let pinger = cfg
        .drive_by_name(&rec.drive)
        .and_then(|_| Pinger::new(&cfg.monitor, &rec.drive));
    monitors(cfg, &state, Some(rec), pinger, true, log_tail);
}

/// The record of a run `current.json` notes that is not this process's, and forgets the
/// note. Called with the run lock held (by the next run, or by `status`/`watch` when no
/// run holds it): a noted run then is one that was killed (SIGKILL, a crash, the power)
/// before its end could be told. Its record is a failure at the step it was at.
pub fn take_interrupted(cfg: &Config, state: &StateDir) -> Option<RunRecord> {
    let cur = state.noted_current()?;
    if cur.pid == std::process::id() {
        return None;
    }
    state.forget_current();
    let now = crate::fmt::now();
    tracing::error!(
        "the run of drive {} (process {}, started {}) was interrupted during step {}: it ended \
         without finishing",
        cur.drive,
        cur.pid,
        crate::fmt::fmt_utc(cur.started),
        cur.step
    );
    Some(RunRecord {
        drive: cur.drive.clone(),
        uuid: cfg
            .drive_by_name(&cur.drive)
            .map(|d| d.uuid.to_string())
            .unwrap_or_default(),
        host: cfg.host_name(),
        started: cur.started,
        finished: now,
        result: RunResult::Failure,
        failed_step: Some(cur.step.clone()),
        error: vec![
            format!(
                "interrupted: the run (process {}, started {}) ended during this step without \
                 finishing (killed with SIGKILL, crashed, or the machine lost power); found at {}",
                cur.pid,
                crate::fmt::fmt_utc(cur.started),
                crate::fmt::fmt_utc(now)
            ),
            "the next run of this drive closes what it left open and resumes its copy".into(),
        ],
        files_copied: 0,
        bytes_copied: 0,
        files_deleted: 0,
        files_total: 0,
        bytes_total: 0,
        warnings: vec![],
    })
}
