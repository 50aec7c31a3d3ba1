//! An in-memory `Notifier` for tests of other crates: records every event.

use crate::*;
use std::sync::{Arc, Mutex};

/// Records each event; clones share the record.
#[derive(Clone, Debug, Default)]
pub struct RecordingNotifier {
    events: Arc<Mutex<Vec<Event>>>,
}

impl RecordingNotifier {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl Notifier for RecordingNotifier {
    fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }
    fn flush_spool(&self) -> Result<usize, NotifyError> {
        Ok(0)
    }
    fn describe(&self) -> String {
        "recording".into()
    }
}
