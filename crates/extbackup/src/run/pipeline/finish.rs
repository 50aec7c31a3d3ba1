//! How a run ends: success and failure alike through `finish` (record, LED, one mail, the
//! monitors), and the cleanup that undoes what was done, in reverse.

use crypt::{LockMode, LockOutcome};
use indicator::State;
use notifier::{Event, Outcome as MailOutcome};
use syncer::SyncReport;

use crate::drive::state::{RunRecord, RunResult};

use super::{Done, Pipeline, Run, RunOutcome, Step, StepError};

impl Pipeline<'_> {
    /// The end of every run that identified its drive (or failed to): undo what a failure
    /// left, record the run (a success whose record cannot be written becomes a failure),
    /// show green or red, one mail, the spool, then release the run lock.
    pub(super) fn finish(
        &mut self,
        run: &mut Run,
        result: Result<(), (Step, StepError)>,
    ) -> RunOutcome {
        let result = result.and_then(|()| {
            let rec = self.record(run, RunResult::Success, None, &[]);
            self.recorded = Some(rec.clone());
            self.state.record(&rec).map_err(|e| {
                (
                    Step::Record,
                    StepError::with(
                        format!(
                            "the backup itself is complete and the drive is closed, but its \
                             record could not be written in the state directory {}; fix it \
                             (status and the reminders depend on it) and plug the drive in again",
                            self.state.path().display()
                        ),
                        e,
                    ),
                )
            })
        });
        let outcome = match result {
            Ok(()) => self.succeeded(run),
            Err((step, e)) => self.failed(run, step, e),
        };
        self.flush_spool();
        self.monitor_end(&outcome);
        self.state.clear_current();
        if run.done.run_locked {
            self.b.host.unlock_run();
        }
        outcome
    }

    /// The textfile (with this run's record, whether or not the state directory took it)
    /// and the last ping, after the outcome is shown, recorded and mailed; bounded by the
    /// monitor's deadline, never changing the outcome (see [`crate::run::ending`]).
    pub(super) fn monitor_end(&mut self, outcome: &RunOutcome) {
        let failed = matches!(outcome, RunOutcome::Failed { .. });
        let tail = if failed && self.pinger.is_some() {
            self.log.tail(self.opts.mail_log_lines)
        } else {
            String::new()
        };
        crate::run::ending::monitors(
            self.cfg,
            &self.state,
            self.recorded.take().as_ref(),
            self.pinger.take(),
            failed,
            &tail,
        );
    }

    /// With the run lock held: a run `current.json` still notes was killed before it could
    /// tell its end (no run goes on without the lock); tells it now like any failed run:
    /// its record, a mail, the textfile and a `/fail` ping. The LED shows this run.
    pub(super) fn report_interrupted(&mut self) {
        if let Some(rec) = crate::run::ending::take_interrupted(self.cfg, &self.state) {
            crate::run::ending::failed_outside(
                self.cfg,
                &rec,
                None,
                self.b.notifier.as_deref(),
                vec![],
                "",
            );
        }
    }

    pub(super) fn succeeded(&mut self, run: &mut Run) -> RunOutcome {
        self.show(State::Success);
        run.hook_warnings = self.after_hooks(run, None);
        let r = &run.report;
        tracing::info!(
            "done: {} files ({} bytes) copied, {} deleted in {:.1} s; drive {} is closed and safe to remove",
            r.files_copied,
            r.bytes_copied,
            r.files_deleted,
            run.t0.elapsed().as_secs_f64(),
            run.name
        );
        // A failed `after` hook is told even when successes are not mailed.
        // So is what the drive check moved aside.
        if self.cfg.mail.as_ref().is_some_and(|m| m.on_success)
            || !run.hook_warnings.is_empty()
            || !run.drive_warnings.is_empty()
        {
            let ev = self.event(run, MailOutcome::Success, None, vec![]);
            self.send(&ev);
        }
        RunOutcome::Done(run.report.clone())
    }

    pub(super) fn failed(&mut self, run: &mut Run, step: Step, e: StepError) -> RunOutcome {
        tracing::error!("step {step} failed: {}", e.chain().join(": "));
        self.cleanup(&mut run.done);
        self.show(State::Failure);
        run.hook_warnings = self.after_hooks(run, Some(step));
        let chain = e.chain();
        let rec = self.record(run, RunResult::Failure, Some(step), &chain);
        self.recorded = Some(rec.clone());
        if let Err(e) = self.state.record(&rec) {
            tracing::error!(
                "recording the failure in the state directory {}: {e}",
                self.state.path().display()
            );
        }
        let ev = self.event(run, MailOutcome::Failure, Some(step), chain);
        self.send(&ev);
        RunOutcome::Failed {
            drive: run.name.clone(),
            step,
            error: e,
        }
    }

    pub(super) fn show(&mut self, s: State) {
        if let Err(e) = self.b.indicator.show(s) {
            if !self.indicator_failed {
                tracing::warn!(
                    "indicator {}: showing {s} failed (the backup goes on): {}",
                    self.b.indicator.describe(),
                    crate::chain(&e)
                );
            }
            self.indicator_failed = true;
        } else {
            self.indicator_failed = false;
        }
    }

    pub(super) fn send(&self, ev: &Event) {
        let Some(n) = &self.b.notifier else {
            tracing::info!("no mail configured: not sending {:?}", ev.subject());
            return;
        };
        match n.notify(ev) {
            Ok(()) => tracing::debug!("mail sent: {}", ev.subject()),
            Err(e) if e.kind() == notifier::ErrorKind::Spooled => {
                tracing::warn!("mail spooled for the next run: {}", crate::chain(&e))
            }
            Err(e) => tracing::error!("mail {:?} lost: {}", ev.subject(), crate::chain(&e)),
        }
    }

    /// Sends what earlier runs spooled; after the backup, so a slow or dead mail server
    /// never delays it (the notifier bounds its own time).
    pub(super) fn flush_spool(&self) {
        if let Some(n) = &self.b.notifier {
            match n.flush_spool() {
                Ok(0) => {}
                Ok(k) => tracing::info!("sent {k} mail(s) spooled by earlier runs"),
                Err(e) => tracing::warn!("sending spooled mail: {}", crate::chain(&e)),
            }
        }
    }

    pub(super) fn event(
        &self,
        run: &Run,
        outcome: MailOutcome,
        step: Option<Step>,
        chain: Vec<String>,
    ) -> Event {
        let report = match outcome {
            MailOutcome::Success => &run.report,
            _ => &SyncReport::default(),
        };
        let mut details = vec![];
        if outcome == MailOutcome::Success {
            details.push(format!(
                "{} files ({} bytes) copied, {} deleted; the source has {} files ({} bytes)",
                report.files_copied,
                report.bytes_copied,
                report.files_deleted,
                report.files_total,
                report.bytes_total
            ));
            details.extend(report.warnings.iter().map(|w| format!("warning: {w}")));
        }
        details.extend(run.drive_warnings.iter().map(|w| format!("warning: {w}")));
        details.extend(
            run.hook_warnings
                .iter()
                .map(|w| format!("warning: {w} (this does not change the backup's outcome)")),
        );
        details.extend(run.notes.iter().cloned());
        Event {
            drive: run.name.clone(),
            host: self.cfg.host_name(),
            outcome,
            failed_step: step.map(|s| s.name().to_string()),
            error_chain: chain,
            log_tail: self.log.tail(self.opts.mail_log_lines),
            duration: run.t0.elapsed(),
            files: report.files_copied,
            bytes: report.bytes_copied,
            details,
        }
    }

    /// The record of `run` as it stands.
    pub(super) fn record(
        &self,
        run: &Run,
        result: RunResult,
        step: Option<Step>,
        error: &[String],
    ) -> RunRecord {
        // A failed run copied nothing that counts.
        let zero = SyncReport::default();
        let r = match result {
            RunResult::Success => &run.report,
            RunResult::Failure => &zero,
        };
        RunRecord {
            drive: run.name.clone(),
            uuid: run.uuid.clone(),
            host: self.cfg.host_name(),
            started: run.started,
            finished: crate::fmt::now(),
            result,
            failed_step: step.map(|s| s.name().into()),
            error: error.to_vec(),
            files_copied: r.files_copied,
            bytes_copied: r.bytes_copied,
            files_deleted: r.files_deleted,
            files_total: r.files_total,
            bytes_total: r.bytes_total,
            warnings: run.drive_warnings.clone(),
        }
    }

    pub(super) fn cleanup(&mut self, done: &mut Done) {
        if done.source_locked {
            self.b.host.unlock_source();
            done.source_locked = false;
            tracing::info!("undo: released the source lock");
        }
        done.wait_writeback();
        let mut still_mounted = done.still_mounted;
        if let Some(mp) = done.mounted.take() {
            oskit::beneath::unpin(&mp);
            match self.b.mounter.unmount(&mp) {
                Ok(_) => tracing::info!("undo: unmounted {}", mp.display()),
                Err(e) => {
                    still_mounted = true;
                    tracing::error!("undo: unmounting {}: {}", mp.display(), crate::chain(&e))
                }
            }
        }
        if let Some(m) = done.mapping.take() {
            let mode = if still_mounted {
                LockMode::Deferred
            } else {
                LockMode::Normal
            };
            match self.b.crypt.lock(&m, mode) {
                Ok(LockOutcome::Deferred) => tracing::warn!(
                    "undo: {m} is still in use; the kernel closes it when its last user goes"
                ),
                Ok(_) => tracing::info!("undo: closed {m}"),
                Err(e) if e.kind() == crypt::ErrorKind::Busy && mode == LockMode::Normal => {
                    match self.b.crypt.lock(&m, LockMode::Deferred) {
                        Ok(_) => tracing::warn!("undo: {m} busy: deferred removal"),
                        Err(e) => tracing::error!("undo: closing {m}: {}", crate::chain(&e)),
                    }
                }
                Err(e) => tracing::error!("undo: closing {m}: {}", crate::chain(&e)),
            }
        }
    }
}
