//! A tracing layer that keeps the run's log lines in memory, so the failure mail can carry
//! the tail of the log.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The captured lines; clones share them. Keeps at most `capacity` lines.
#[derive(Clone, Debug)]
pub struct LogCapture {
    lines: Arc<Mutex<VecDeque<String>>>,
    capacity: usize,
}

impl Default for LogCapture {
    fn default() -> Self {
        Self::new(2000)
    }
}

impl LogCapture {
    /// Keeps the last `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: Arc::default(),
            capacity,
        }
    }

    /// The layer to add to the subscriber.
    pub fn layer(&self) -> CaptureLayer {
        CaptureLayer { cap: self.clone() }
    }

    /// Adds a line (the layer does this for each event).
    pub fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == self.capacity {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// Forgets every line (between runs of `extbackup watch`).
    pub fn clear(&self) {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The last `n` lines, joined with newlines.
    pub fn tail(&self, n: usize) -> String {
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let skip = l.len().saturating_sub(n);
        let mut s = String::new();
        for line in l.iter().skip(skip) {
            s.push_str(line);
            s.push('\n');
        }
        s
    }
}

/// The layer that feeds a [`LogCapture`].
#[derive(Debug)]
pub struct CaptureLayer {
    cap: LogCapture,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::INFO {
            return;
        }
        let mut f = Fields(String::new());
        event.record(&mut f);
        let secs = crate::fmt::now();
        let stamp = crate::fmt::fmt_utc(secs);
        let time = stamp.get(11..19).unwrap_or("");
        self.cap
            .push(format!("{time} {:>5} {}", meta.level(), f.0.trim_start()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_become_lines_and_debug_is_left_out() {
        let cap = LogCapture::new(3);
        let sub = tracing_subscriber::registry().with(cap.layer());
        tracing::subscriber::with_default(sub, || {
            tracing::info!(drive = "a", "step one");
            tracing::debug!("noise");
            tracing::warn!("step two");
            tracing::error!("three");
            tracing::info!("four");
        });
        let t = cap.tail(10);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(!t.contains("step one"), "oldest line dropped: {t}");
        assert!(t.contains(" WARN step two"), "{t}");
        assert!(t.ends_with("INFO four\n"), "{t}");
        assert_eq!(cap.tail(1).lines().count(), 1);
        cap.clear();
        assert_eq!(cap.tail(10), "");
    }
}
