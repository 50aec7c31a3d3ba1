//! The `Indicator` trait: the backup's state shown to a person standing at the NAS.
//!
//! States, not colours: the orchestrator says *what* is happening, each backend decides how
//! to show it (a BlinkStick colour, a line on a terminal, nothing). An indicator failure
//! (a stick unplugged mid-run) is logged by the caller and never fails a backup.
//!
//! Backends: [`stick::BlinkStickIndicator`] (a BlinkStick LED: steady colours, a breathing
//! "working", a progress bar on multi-LED sticks), [`console::ConsoleIndicator`] (a
//! coloured block and words on a terminal, plain lines elsewhere), [`NoIndicator`], and
//! [`fake::RecordingIndicator`] (in-memory, records every state; for tests). The
//! orchestrator builds one from its config with [`from_config`]:
//!
//! ```
//! use indicator::{from_config, BackendKind, IndicatorConfig, State};
//! let cfg = IndicatorConfig { backend: BackendKind::None, ..IndicatorConfig::default() };
//! let mut ind = from_config(&cfg).unwrap();
//! ind.show(State::Working { progress: Some(0.5) }).unwrap();
//! assert_eq!(ind.describe(), "none");
//! ```
//!
//! Defaults follow the seed's setup (`blinkstick --index 1 --limit 10 --set-color 33c280`
//! while working, green when done, red on failure; orange for attention).
#![warn(missing_docs)]

pub mod config;
pub mod console;
pub mod fake;
pub mod shared;
pub mod stick;

pub use config::{BackendKind, Colors, IndicatorConfig, Palette};

use std::fmt;

/// What the indicator shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum State {
    /// Nothing to show (LED off).
    Off,
    /// A backup is running; `progress` is 0.0..=1.0 when known.
    Working {
        /// Share of the work done, when known.
        progress: Option<f32>,
    },
    /// Done: the volume is unmounted and closed, the drive is safe to remove.
    Success,
    /// The run failed; a mail says why.
    Failure,
    /// Needs a look: e.g. a drive that is not ours, or a second drive waiting its turn.
    Attention,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Off => f.write_str("off"),
            State::Working { progress: None } => f.write_str("working"),
            State::Working { progress: Some(p) } => write!(f, "working ({:.0}%)", p * 100.0),
            State::Success => f.write_str("success: safe to remove"),
            State::Failure => f.write_str("failure"),
            State::Attention => f.write_str("attention"),
        }
    }
}

/// What went wrong, in broad terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The device is not there (unplugged, never plugged).
    NotFound,
    /// The device is there but we may not open it (udev rule missing).
    PermissionDenied,
    /// The configuration asks for something the backend cannot do.
    InvalidConfig,
    /// Any other failure of the backend.
    Other,
}

/// An indicator error: a kind plus the backend's own error as the source.
pub type IndicatorError = backend_error::Error<ErrorKind>;

/// Shows backup states. Object safe: backends are chosen at run time from the config.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Indicator: Send {
    /// Shows `state` until the next call. Must return promptly: animations run in the
    /// backend's own thread and stop at the next `show`.
    fn show(&mut self, state: State) -> Result<(), IndicatorError>;
    /// A short name of the backend for logs ("blinkstick BS012345-3.0", "console").
    fn describe(&self) -> String;
}

/// Shows nothing.
#[derive(Debug, Default)]
pub struct NoIndicator;

impl Indicator for NoIndicator {
    fn show(&mut self, _state: State) -> Result<(), IndicatorError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "none".into()
    }
}

/// Builds the indicator for one job (a drive's run): with a BlinkStick and `shared`
/// (the default), a [`shared::SharedIndicator`] on the job's slot, so several runs and
/// scripts share the LED; otherwise as [`from_config`].
pub fn for_job(config: &IndicatorConfig, job: &str) -> Result<Box<dyn Indicator>, IndicatorError> {
    if config.backend == BackendKind::Blinkstick && config.shared {
        return Ok(Box::new(shared::SharedIndicator::new(config, job)?));
    }
    from_config(config)
}

/// Builds the backend `config` names. A BlinkStick need not be plugged in yet (the first
/// `show` reports it missing); colour words and the limit are checked here.
pub fn from_config(config: &IndicatorConfig) -> Result<Box<dyn Indicator>, IndicatorError> {
    Ok(match config.backend {
        BackendKind::Blinkstick => Box::new(stick::BlinkStickIndicator::new(config)?),
        BackendKind::Console => Box::new(console::ConsoleIndicator::stdout(Palette::parse(
            &config.colors,
        )?)),
        BackendKind::None => Box::new(NoIndicator),
    })
}
