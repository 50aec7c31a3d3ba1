//! What a person (or a program) sees of a run's progress.
//!
//! On a terminal: one line with bytes, share, rate and ETA at the bottom of the screen; log
//! lines go above it. The log writer ([`LogWriter`]) clears the line, writes the log line
//! and draws the line again, so the two never run together. With `run --json`: one JSON
//! object per line on stdout ([`JsonEvents`]).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use syncer::Progress;

/// Clear the terminal's current line: back to its start, erase it.
const CLEAR: &str = "\r\x1b[2K";

/// Which part of the bottom line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The console indicator's state (`working (30%)`).
    Indicator = 0,
    /// The copy's progress (bytes, rate, ETA).
    Progress = 1,
}

/// A terminal: the bottom line now shown (the indicator's state and the copy's progress)
/// and the output it is drawn on. Log lines go above it.
pub struct Screen<W: Write> {
    parts: [Option<String>; 2],
    out: W,
}

impl<W: Write> Screen<W> {
    /// A screen over `out`, no bottom line shown.
    pub const fn new(out: W) -> Self {
        Self {
            parts: [None, None],
            out,
        }
    }

    fn line(&self) -> Option<String> {
        let shown: Vec<&str> = self.parts.iter().flatten().map(String::as_str).collect();
        (!shown.is_empty()).then(|| shown.join("  "))
    }

    /// Writes a log line (ending in `\n`) above the bottom line.
    pub fn log(&mut self, text: &[u8]) {
        let line = self.line();
        if line.is_some() {
            let _ = self.out.write_all(CLEAR.as_bytes());
        }
        let _ = self.out.write_all(text);
        if let Some(l) = &line {
            let _ = self.out.write_all(l.as_bytes());
        }
        let _ = self.out.flush();
    }

    /// Shows `text` as `part` of the bottom line (`None` removes that part).
    pub fn set(&mut self, part: Part, text: Option<String>) {
        let had = self.line().is_some();
        self.parts[part as usize] = text;
        match self.line() {
            Some(l) => {
                let _ = write!(self.out, "{CLEAR}{l}");
            }
            None if had => {
                let _ = self.out.write_all(CLEAR.as_bytes());
            }
            None => {}
        }
        let _ = self.out.flush();
    }

    /// Shows `line` as the progress part.
    pub fn show(&mut self, line: String) {
        self.set(Part::Progress, Some(line));
    }

    /// Leaves the bottom line as it is on its own line, and stops drawing it.
    pub fn finish(&mut self) {
        if self.line().is_some() {
            let _ = self.out.write_all(b"\n");
            let _ = self.out.flush();
        }
        self.parts = [None, None];
    }

    /// The output (tests look at it).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The console indicator's output on a terminal, drawn as the indicator part of the
/// bottom line of [`STDERR`] (so its `working (30%)` and the log never run together): a
/// write ending without a newline is the current state, one ending with a newline (green,
/// red) a line of its own.
#[derive(Default)]
pub struct IndicatorLine(Vec<u8>);

impl Write for IndicatorLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let buf = std::mem::take(&mut self.0);
        let text = String::from_utf8_lossy(&buf);
        let text = text.rsplit(CLEAR).next().unwrap_or_default();
        let mut screen = stderr_screen();
        match text.strip_suffix('\n') {
            Some("") => screen.set(Part::Indicator, None),
            Some(done) => {
                screen.set(Part::Indicator, None);
                screen.log(format!("{done}\n").as_bytes());
            }
            None if text.is_empty() => {}
            None => screen.set(Part::Indicator, Some(text.to_string())),
        }
        Ok(())
    }
}

/// The process's standard error as a [`Screen`]: the log writer and the progress line share
/// it.
pub static STDERR: Mutex<Screen<Stderr>> = Mutex::new(Screen::new(Stderr));

/// Standard error, as a value a `static` can hold.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::stderr().write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn stderr_screen() -> std::sync::MutexGuard<'static, Screen<Stderr>> {
    STDERR.lock().unwrap_or_else(|e| e.into_inner())
}

/// The log's writer on standard error (`tracing_subscriber::fmt().with_writer(LogWriter::new)`):
/// one formatted event is buffered and written through [`STDERR`] when dropped, so it
/// never lands in the middle of the progress line.
#[derive(Default)]
pub struct LogWriter(Vec<u8>);

impl LogWriter {
    /// A writer for one log event.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            stderr_screen().log(&self.0);
        }
    }
}

/// Rate and ETA from the bytes seen over the last seconds.
#[derive(Debug)]
pub struct Rate {
    samples: VecDeque<(Instant, u64)>,
    window: Duration,
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            samples: VecDeque::new(),
            window: Duration::from_secs(10),
        }
    }
}

/// One progress reading with what follows from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Bytes copied.
    pub bytes: u64,
    /// Share done, when known.
    pub fraction: Option<f32>,
    /// The whole copy's bytes, from the share (when known and above 0).
    pub total: Option<u64>,
    /// Bytes per second over the last seconds (when measurable).
    pub rate: Option<f64>,
    /// Seconds left at that rate.
    pub eta_secs: Option<u64>,
}

impl Rate {
    /// Notes `p` seen at `now`.
    pub fn update(&mut self, p: Progress, now: Instant) -> Reading {
        self.samples.push_back((now, p.bytes));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > self.window {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let dt = now.duration_since(t0).as_secs_f64();
        let rate = (dt >= 0.5 && p.bytes >= b0).then(|| (p.bytes - b0) as f64 / dt);
        let f = p.fraction.map(|f| f.clamp(0.0, 1.0));
        let total = f
            .filter(|f| *f > 0.0)
            .map(|f| (p.bytes as f64 / f as f64) as u64);
        let eta_secs = match (total, rate) {
            (Some(t), Some(r)) if r > 0.0 => Some((t.saturating_sub(p.bytes) as f64 / r) as u64),
            _ => None,
        };
        Reading {
            bytes: p.bytes,
            fraction: f,
            total,
            rate,
            eta_secs,
        }
    }
}

/// `sync 1.2 GiB of 4.0 GiB  30%  45.3 MiB/s  ETA 1:02`.
pub fn render(r: &Reading) -> String {
    let mut s = format!("sync {}", oskit::human::bytes(r.bytes));
    if let Some(t) = r.total {
        s.push_str(&format!(" of {}", oskit::human::bytes(t)));
    }
    if let Some(f) = r.fraction {
        s.push_str(&format!("  {:3}%", (f * 100.0) as u32));
    }
    match r.rate {
        Some(rate) => s.push_str(&format!("  {}/s", oskit::human::bytes(rate as u64))),
        None => s.push_str("  -/s"),
    }
    if let Some(e) = r.eta_secs {
        s.push_str(&format!("  ETA {}", clock(e)));
    }
    s
}

/// `1:02`, `1:02:03`.
fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Whether an update at `now` is shown: the last one (`done`) always, others at most one
/// per `every`; `last` is when the previous one was.
fn due(last: &mut Option<Instant>, now: Instant, done: bool, every: Duration) -> bool {
    if !done && last.is_some_and(|l| now.duration_since(l) < every) {
        return false;
    }
    *last = Some(now);
    true
}

/// The progress line on a terminal's standard error, redrawn at most 5 times a second.
#[derive(Default)]
pub struct TerminalProgress {
    rate: Rate,
    last: Option<Instant>,
}

impl TerminalProgress {
    /// Shows `p`.
    pub fn update(&mut self, p: Progress) {
        let now = Instant::now();
        let r = self.rate.update(p, now);
        let done = r.fraction == Some(1.0);
        if !due(&mut self.last, now, done, Duration::from_millis(200)) {
            return;
        }
        let mut screen = stderr_screen();
        screen.show(render(&r));
        if done {
            screen.finish();
        }
    }
}

/// Ends the progress line, if one is shown (the run is over, whatever happened).
pub fn finish_terminal() {
    stderr_screen().finish();
}

/// `run --json`: progress and steps as JSON objects, one per line, on `out`.
pub struct JsonEvents<W: Write> {
    out: W,
    rate: Rate,
    last: Option<Instant>,
}

impl<W: Write> JsonEvents<W> {
    /// Events on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            rate: Rate::default(),
            last: None,
        }
    }

    /// Writes one event.
    pub fn emit(&mut self, v: serde_json::Value) {
        let _ = writeln!(self.out, "{v}");
        let _ = self.out.flush();
    }

    /// A step begins: `{"event":"step","step":"sync","n":9,"of":12}`.
    pub fn step(&mut self, step: crate::run::pipeline::Step) {
        let all = crate::run::pipeline::Step::ALL;
        let n = all.iter().position(|s| *s == step).unwrap_or(0) + 1;
        self.emit(serde_json::json!({
            "event": "step", "step": step.name(), "n": n, "of": all.len()
        }));
    }

    /// Copy progress, at most 2 a second (and always the last):
    /// `{"event":"progress","bytes":..,"fraction":..,"total":..,"bytes_per_sec":..,"eta_secs":..}`.
    pub fn progress(&mut self, p: Progress) {
        let now = Instant::now();
        let r = self.rate.update(p, now);
        let done = r.fraction == Some(1.0);
        if !due(&mut self.last, now, done, Duration::from_millis(500)) {
            return;
        }
        self.emit(serde_json::json!({
            "event": "progress",
            "bytes": r.bytes,
            "fraction": r.fraction,
            "total": r.total,
            "bytes_per_sec": r.rate.map(|x| x.round() as u64),
            "eta_secs": r.eta_secs,
        }));
    }

    /// The output (tests look at it).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_go_above_the_progress_line_which_is_redrawn() {
        let mut s = Screen::new(Vec::new());
        s.log(b"before\n");
        s.show("sync 1.0 MiB  10%".into());
        s.log(b"INFO a log line\n");
        s.show("sync 2.0 MiB  20%".into());
        s.finish();
        s.log(b"after\n");
        let out = String::from_utf8(s.into_inner()).unwrap();
        assert_eq!(
            out,
            "before\n\
             \r\x1b[2Ksync 1.0 MiB  10%\
             \r\x1b[2KINFO a log line\nsync 1.0 MiB  10%\
             \r\x1b[2Ksync 2.0 MiB  20%\n\
             after\n"
        );
        // What a terminal shows: each log line whole, on its own line.
        let shown: Vec<&str> = out
            .split('\n')
            .map(|l| l.rsplit("\r\x1b[2K").next().unwrap())
            .collect();
        assert_eq!(
            shown,
            [
                "before",
                "INFO a log line",
                "sync 2.0 MiB  20%",
                "after",
                ""
            ]
        );
    }

    #[test]
    fn the_indicator_and_the_progress_share_the_bottom_line() {
        let mut s = Screen::new(Vec::new());
        s.set(Part::Indicator, Some("working".into()));
        s.show("sync 1 MiB".into());
        s.log(b"log\n");
        s.set(Part::Indicator, None);
        s.log(b"success\n");
        let out = String::from_utf8(s.into_inner()).unwrap();
        assert_eq!(
            out,
            "\r\x1b[2Kworking\
             \r\x1b[2Kworking  sync 1 MiB\
             \r\x1b[2Klog\nworking  sync 1 MiB\
             \r\x1b[2Ksync 1 MiB\
             \r\x1b[2Ksuccess\nsync 1 MiB"
        );
    }

    #[test]
    fn rate_total_and_eta_follow_from_the_readings() {
        let mut r = Rate::default();
        let t0 = Instant::now();
        let p = |bytes, f| Progress {
            bytes,
            fraction: Some(f),
        };
        let first = r.update(p(0, 0.0), t0);
        assert_eq!(
            (first.rate, first.total, first.eta_secs),
            (None, None, None)
        );
        let x = r.update(p(100 << 20, 0.25), t0 + Duration::from_secs(2));
        assert_eq!(x.total, Some(400 << 20));
        assert_eq!(x.rate, Some((50 << 20) as f64));
        assert_eq!(x.eta_secs, Some(6));
        assert_eq!(
            render(&x),
            "sync 100.0 MiB of 400.0 MiB   25%  50.0 MiB/s  ETA 0:06"
        );
        assert_eq!(clock(3723), "1:02:03");
    }

    #[test]
    fn json_events_are_one_object_per_line() {
        let mut j = JsonEvents::new(Vec::new());
        j.step(crate::run::pipeline::Step::Sync);
        j.progress(Progress {
            bytes: 10,
            fraction: Some(0.5),
        });
        // Throttled: a reading right after is dropped, the last one is not.
        j.progress(Progress {
            bytes: 12,
            fraction: Some(0.6),
        });
        j.progress(Progress {
            bytes: 20,
            fraction: Some(1.0),
        });
        let out = String::from_utf8(j.into_inner()).unwrap();
        let v: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v.len(), 3, "{out}");
        assert_eq!(v[0]["event"], "step");
        assert_eq!(v[0]["step"], "sync");
        assert_eq!(v[0]["of"], 12);
        assert_eq!(v[1]["bytes"], 10);
        assert_eq!(v[1]["total"], 20);
        assert_eq!(v[2]["fraction"], 1.0);
    }
}
