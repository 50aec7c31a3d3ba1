//! An in-memory indicator that records every state, for tests of other crates.

use crate::{Indicator, IndicatorError, State};
use std::sync::{Arc, Mutex};

/// Records each state shown; clones share the record.
#[derive(Clone, Debug, Default)]
pub struct RecordingIndicator {
    states: Arc<Mutex<Vec<State>>>,
    fail: Arc<Mutex<Option<crate::ErrorKind>>>,
}

impl RecordingIndicator {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every state shown so far, oldest first.
    pub fn states(&self) -> Vec<State> {
        self.states.lock().unwrap().clone()
    }
    /// The last state shown.
    pub fn last(&self) -> Option<State> {
        self.states.lock().unwrap().last().copied()
    }
    /// Makes every later `show` fail with `kind` (still recording the state), or succeed again.
    pub fn fail_with(&self, kind: Option<crate::ErrorKind>) {
        *self.fail.lock().unwrap() = kind;
    }
}

impl Indicator for RecordingIndicator {
    fn show(&mut self, state: State) -> Result<(), IndicatorError> {
        self.states.lock().unwrap().push(state);
        match *self.fail.lock().unwrap() {
            Some(kind) => Err(IndicatorError::new(
                kind,
                "recording indicator told to fail",
            )),
            None => Ok(()),
        }
    }
    fn describe(&self) -> String {
        "recording".into()
    }
}
