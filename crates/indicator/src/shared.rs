//! [`SharedIndicator`]: one LED shared by many jobs (every drive's run, the NAS's own
//! backup script through `blinkstick --slot NAME --state STATE`), through the
//! `blinkstick` crate's slots ([`blinkstick::slots`]).
//!
//! Each run owns the slot named after its drive. A state change writes the slot, then,
//! under the slots' lock, draws the most severe state of all slots (failure, then
//! attention, working, success; none: off) as a steady colour, so two runs never fight
//! over the LED. A failure stays until the drive's next good run or [`ack`] (`extbackup ack
//! NAME`). The way the LED is drawn (channel, LED, limit, colours) is saved beside the
//! slots, so `blinkstick --slot` draws it the same way.
//!
//! A run that dies leaves a `working` slot whose owner is gone: it is dropped at the
//! next slot change by anyone, and at once when a `blinkstick` binary is on `PATH`
//! (its `--slot-watch` watcher redraws the LED when the run's process exits). Not in a
//! systemd unit (`INVOCATION_ID` set): there systemd watches the run (extbackup's
//! `OnFailure=` unit turns a dead run's slot red), and a helper left in the unit's
//! cgroup would be killed with SIGKILL when the unit ends (`KillMode=mixed`).

use std::path::PathBuf;
use std::sync::Arc;

use blinkstick::slots::{self, Display, Owner, SlotState, Slots};
use blinkstick::Backend;

use crate::config::{IndicatorConfig, Palette};
use crate::stick::BlinkStickIndicator;
use crate::{ErrorKind, Indicator, IndicatorError, State};

/// A BlinkStick LED shared through slots. See the [module docs](self).
pub struct SharedIndicator {
    slots: Slots,
    job: String,
    owner: Owner,
    display: Display,
    inner: BlinkStickIndicator,
    watcher: Option<PathBuf>,
    watching: bool,
    last: Option<SlotState>,
}

fn slot_err(what: &str, e: blinkstick::Error) -> IndicatorError {
    let kind = match e.kind() {
        blinkstick::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        blinkstick::ErrorKind::InvalidArgument => ErrorKind::InvalidConfig,
        _ => ErrorKind::Other,
    };
    IndicatorError::new(kind, what.to_owned()).with_source(e)
}

/// The slots `config` names (or `$BLINKSTICK_SLOTS_DIR`, else the default folder).
pub fn slots_of(config: &IndicatorConfig) -> Slots {
    match &config.slots_dir {
        Some(d) => Slots::new(d),
        None => Slots::from_env(),
    }
}

fn display_of(config: &IndicatorConfig) -> Result<Display, IndicatorError> {
    let p = Palette::parse(&config.colors)?;
    Ok(Display {
        channel: config.channel,
        index: config.index,
        limit: config.limit,
        working: p.working,
        success: p.success,
        attention: p.attention,
        failure: p.failure,
    })
}

/// The indicator state that shows `shown` (a slot state, or none: off).
fn state_of(shown: Option<SlotState>) -> State {
    match shown {
        None => State::Off,
        Some(SlotState::Success) => State::Success,
        Some(SlotState::Working) => State::Working { progress: None },
        Some(SlotState::Attention) => State::Attention,
        Some(SlotState::Failure) => State::Failure,
    }
}

/// The watcher of a dying run: the `blinkstick` command on `path` (`PATH`), unless this
/// process runs in a systemd unit (`invocation_id`, systemd's `INVOCATION_ID`): see the
/// [module docs](self).
fn watcher_command(
    invocation_id: Option<&std::ffi::OsStr>,
    path: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    if invocation_id.is_some_and(|v| !v.is_empty()) {
        return None;
    }
    std::env::split_paths(path?)
        .map(|d| d.join("blinkstick"))
        .find(|p| p.is_file())
}

impl SharedIndicator {
    /// The shared indicator of job `job` (a drive name) through hidapi.
    pub fn new(config: &IndicatorConfig, job: &str) -> Result<Self, IndicatorError> {
        let inner = BlinkStickIndicator::new(config)?;
        Ok(
            Self::with_parts(inner, config, job, slots_of(config))?.with_watcher(watcher_command(
                std::env::var_os("INVOCATION_ID").as_deref(),
                std::env::var_os("PATH").as_deref(),
            )),
        )
    }

    /// On any backend and slots folder (tests).
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: &IndicatorConfig,
        job: &str,
        slots: Slots,
    ) -> Result<Self, IndicatorError> {
        let inner = BlinkStickIndicator::with_backend(backend, config)?;
        Self::with_parts(inner, config, job, slots)
    }

    fn with_parts(
        inner: BlinkStickIndicator,
        config: &IndicatorConfig,
        job: &str,
        slots: Slots,
    ) -> Result<Self, IndicatorError> {
        slots::check_name(job).map_err(|e| slot_err("the indicator's slot name", e))?;
        let owner = Owner::current().map_err(|e| slot_err("this process's start time", e))?;
        Ok(SharedIndicator {
            slots,
            job: job.to_owned(),
            owner,
            display: display_of(config)?,
            inner,
            watcher: None,
            watching: false,
            last: None,
        })
    }

    /// Uses `blinkstick` (a path to the command) to watch for this process's death;
    /// `None`: no watcher (a dead run's slot goes at the next slot change).
    pub fn with_watcher(mut self, blinkstick: Option<PathBuf>) -> Self {
        self.watcher = blinkstick;
        self
    }

    /// The underlying BlinkStick indicator (its stick, its background errors).
    pub fn inner(&self) -> &BlinkStickIndicator {
        &self.inner
    }

    fn spawn_watcher(&mut self) {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let Some(bin) = &self.watcher else { return };
        let r = Command::new(bin)
            .args(["--slot", &self.job, "--slot-watch", "--owner-pid"])
            .arg(self.owner.pid.to_string())
            .env(slots::DIR_ENV, self.slots.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        self.watching = r.is_ok();
    }
}

impl Indicator for SharedIndicator {
    fn show(&mut self, state: State) -> Result<(), IndicatorError> {
        let new = match state {
            State::Off => None,
            State::Working { .. } => Some(SlotState::Working),
            State::Success => Some(SlotState::Success),
            State::Failure => Some(SlotState::Failure),
            State::Attention => Some(SlotState::Attention),
        };
        // progress updates change nothing shared
        if new == Some(SlotState::Working) && self.last == new {
            return Ok(());
        }
        let mut g = self
            .slots
            .lock()
            .map_err(|e| slot_err("locking the shared LED's slots", e))?;
        let what = "updating the shared LED's slots";
        match new {
            None => g.clear(&self.job),
            Some(s) => g.set(&self.job, s, self.owner),
        }
        .map_err(|e| slot_err(what, e))?;
        g.set_display(&self.display)
            .map_err(|e| slot_err(what, e))?;
        let shown = g.shown().map_err(|e| slot_err(what, e))?;
        self.last = new;
        // drawn while the lock is held: nobody else draws in between
        let r = self.inner.show_steady(state_of(shown));
        drop(g);
        if new == Some(SlotState::Working) && !self.watching {
            self.spawn_watcher();
        }
        r
    }

    fn describe(&self) -> String {
        format!("{} (shared: slot {})", self.inner.describe(), self.job)
    }
}

/// Acknowledges slot `name`'s failure (`extbackup ack NAME`) and redraws the LED with
/// `config`'s stick. Returns whether there was a failure to acknowledge.
pub fn ack(config: &IndicatorConfig, name: &str) -> Result<bool, IndicatorError> {
    if config.backend != crate::BackendKind::Blinkstick {
        // no LED of ours to redraw: only the slot (a script's LED may show it)
        let what = "acknowledging a failure on the shared LED";
        slots::check_name(name).map_err(|e| slot_err(what, e))?;
        let mut g = slots_of(config).lock().map_err(|e| slot_err(what, e))?;
        return g.ack(name).map_err(|e| slot_err(what, e));
    }
    let mut inner = BlinkStickIndicator::new(config)?;
    ack_with(&mut inner, &slots_of(config), name)
}

/// [`ack`] with a given indicator and slots (tests).
pub fn ack_with(
    inner: &mut BlinkStickIndicator,
    slots: &Slots,
    name: &str,
) -> Result<bool, IndicatorError> {
    let what = "acknowledging a failure on the shared LED";
    slots::check_name(name).map_err(|e| slot_err(what, e))?;
    let mut g = slots.lock().map_err(|e| slot_err(what, e))?;
    let had = g.ack(name).map_err(|e| slot_err(what, e))?;
    let shown = g.shown().map_err(|e| slot_err(what, e))?;
    inner.show_steady(state_of(shown))?;
    Ok(had)
}

#[cfg(test)]
mod tests {
    use super::watcher_command;
    use std::ffi::OsStr;

    #[test]
    fn the_watcher_is_blinkstick_on_path_but_never_inside_a_systemd_unit() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("blinkstick");
        std::fs::write(&bin, "").unwrap();
        let path =
            std::env::join_paths([dir.path().join("none"), dir.path().to_path_buf()]).unwrap();
        assert_eq!(watcher_command(None, Some(&path)), Some(bin.clone()));
        assert_eq!(
            watcher_command(Some(OsStr::new("")), Some(&path)),
            Some(bin)
        );
        assert_eq!(
            watcher_command(
                Some(OsStr::new("2d7a5c0b9f1e4a60b6b1d7a3e0c4f5a1")),
                Some(&path)
            ),
            None,
            "systemd supervises the unit's run"
        );
        assert_eq!(
            watcher_command(None, Some(OsStr::new("/nonexistent"))),
            None
        );
        assert_eq!(watcher_command(None, None), None);
    }
}
