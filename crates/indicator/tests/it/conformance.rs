//! The behavioural suite of the `Indicator` trait, run on every backend alike: the fake
//! (`RecordingIndicator`), the console (plain log lines and the terminal form), the
//! BlinkStick indicator (on the firmware model of a BlinkStick Square and of a one-LED
//! BlinkStick, with its breathing animation) and the shared indicator (slots on disk).
//! Each backend is read back the way a person would see it: the recorder's record, the
//! console's last line, the LED's colour in the stick's memory.
//!
//! The promises (the trait's documentation): after `show(s)` returns, `s` is what is shown,
//! and a steady state (off, success, failure, attention) stays exactly as shown (no
//! animation frame of an earlier state overwrites it); repeating a state is harmless; off
//! is dark; `describe` names the backend. The shared indicator keeps one documented
//! difference: a failure stays shown until a success (or `extbackup ack`), whatever else
//! the same job shows in between; the suite holds it to exactly that.

use blinkstick::emulator::{EmulatedBus, EmulatedDevice};
use blinkstick::slots::Slots;
use blinkstick::{Rgb, Variant};
use indicator::console::ConsoleIndicator;
use indicator::fake::RecordingIndicator;
use indicator::shared::SharedIndicator;
use indicator::stick::BlinkStickIndicator;
use indicator::{Indicator, IndicatorConfig, Palette, State};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a person sees.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    Dark,
    Working,
    Success,
    Failure,
    Attention,
    /// Something no state shows (a wrong colour, a garbled line).
    Other,
}

fn expected(s: State) -> Seen {
    match s {
        State::Off => Seen::Dark,
        State::Working { .. } => Seen::Working,
        State::Success => Seen::Success,
        State::Failure => Seen::Failure,
        State::Attention => Seen::Attention,
    }
}

/// A backend under test and how to read it back.
struct Subject {
    name: &'static str,
    indicator: Box<dyn Indicator>,
    seen: Box<dyn Fn() -> Seen>,
    /// How long an animation of the backend may take to show itself (a breath).
    settle: Duration,
    /// A failure stays shown until a success (the shared LED).
    sticky_failure: bool,
    /// A failure was shown and no success since.
    failed: bool,
    _keep: Option<tempfile::TempDir>,
}

/// A `Write` whose bytes the test can read while the console indicator owns it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The state named by the console's last line (after its last `\r`, without colour codes).
fn console_seen(out: &Shared) -> Seen {
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    let line = text.trim_end_matches('\n').rsplit(['\n', '\r']).next();
    let line = line.unwrap_or_default();
    // Strip ANSI sequences (ESC [ ... letter).
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    let words = plain.trim().trim_start_matches("extbackup: ");
    match words {
        "off" => Seen::Dark,
        "success: safe to remove" => Seen::Success,
        "failure" => Seen::Failure,
        "attention" => Seen::Attention,
        w if w == "working" || (w.starts_with("working (") && w.ends_with("%)")) => Seen::Working,
        _ => Seen::Other,
    }
}

/// The state a colour on the LED shows under `p`; a breath of the working colour (the same
/// hue, dimmer) is working.
fn led_seen(c: Rgb, p: &Palette) -> Seen {
    let w = p.working;
    let same_hue = |x: u8, y: u8| (x == 0) == (y == 0);
    match c {
        Rgb::OFF => Seen::Dark,
        c if c == p.success => Seen::Success,
        c if c == p.failure => Seen::Failure,
        c if c == p.attention => Seen::Attention,
        c if same_hue(c.r, w.r) && same_hue(c.g, w.g) && same_hue(c.b, w.b) => Seen::Working,
        _ => Seen::Other,
    }
}

fn cfg() -> IndicatorConfig {
    IndicatorConfig {
        breathe_period_ms: 100,
        ..IndicatorConfig::default()
    }
}

fn stick(name: &'static str, variant: Variant, shared: bool) -> Subject {
    // The serial's version suffix is how the driver tells a v1 stick from a v3 one.
    let serial = if variant == Variant::BlinkStick {
        "BS000042-1.4"
    } else {
        "BS000042-3.0"
    };
    let dev = EmulatedDevice::new(variant, serial);
    let bus = EmulatedBus::new();
    bus.plug(dev.clone());
    let cfg = IndicatorConfig { shared, ..cfg() };
    let palette = Palette::parse(&cfg.colors).unwrap().limited(cfg.limit);
    // The LED the indicator uses: the configured one, LED 0 on a one-LED stick.
    let index = if variant == Variant::BlinkStick {
        0
    } else {
        usize::from(cfg.index)
    };
    let seen = Box::new(move || led_seen(dev.leds(0)[index], &palette));
    let (indicator, keep): (Box<dyn Indicator>, _) = if shared {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::new(dir.path().join("slots"));
        let ind = SharedIndicator::with_backend(Arc::new(bus), &cfg, "offsite-a", slots).unwrap();
        (Box::new(ind), Some(dir))
    } else {
        let ind = BlinkStickIndicator::with_backend(Arc::new(bus), &cfg).unwrap();
        (Box::new(ind), None)
    };
    Subject {
        name,
        indicator,
        seen,
        settle: Duration::from_millis(3 * cfg.breathe_period_ms),
        sticky_failure: shared,
        failed: false,
        _keep: keep,
    }
}

fn subjects() -> Vec<Subject> {
    let rec = RecordingIndicator::new();
    let fake = Subject {
        name: "RecordingIndicator (fake)",
        indicator: Box::new(rec.clone()),
        seen: Box::new(move || rec.last().map_or(Seen::Dark, expected)),
        settle: Duration::ZERO,
        sticky_failure: false,
        failed: false,
        _keep: None,
    };
    let palette = Palette::parse(&cfg().colors).unwrap();
    let console = |name, ansi| {
        let out = Shared::default();
        let ind = ConsoleIndicator::new(out.clone(), ansi, palette);
        Subject {
            name,
            indicator: Box::new(ind),
            seen: Box::new(move || console_seen(&out)),
            settle: Duration::ZERO,
            sticky_failure: false,
            failed: false,
            _keep: None,
        }
    };
    vec![
        fake,
        console("console, log lines", false),
        console("console, terminal", true),
        stick("BlinkStick Square", Variant::Square, false),
        stick("one-LED BlinkStick", Variant::BlinkStick, false),
        stick("shared, on a BlinkStick Square", Variant::Square, true),
    ]
}

impl Subject {
    /// Shows `state` and returns what a person should then see.
    fn show(&mut self, state: State) -> Seen {
        let name = self.name;
        (self.indicator.show(state)).unwrap_or_else(|e| panic!("{name}: show({state}): {e}"));
        match state {
            State::Failure => self.failed = true,
            State::Success => self.failed = false,
            _ => {}
        }
        if self.sticky_failure && self.failed {
            Seen::Failure
        } else {
            expected(state)
        }
    }
}

/// Polls until `s` shows `want` or its settle time (plus a margin) has passed.
fn shows(s: &Subject, want: Seen) -> bool {
    let until = Instant::now() + s.settle + Duration::from_secs(2);
    loop {
        if (s.seen)() == want {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

const SEQUENCE: [State; 10] = [
    State::Working { progress: None },
    State::Working {
        progress: Some(0.25),
    },
    State::Working {
        progress: Some(0.75),
    },
    State::Success,
    State::Success,
    State::Working { progress: None },
    State::Failure,
    State::Attention,
    State::Working { progress: None },
    State::Off,
];

#[test]
fn every_backend_shows_each_state_after_show_returns() {
    for mut s in subjects() {
        for state in SEQUENCE {
            let want = s.show(state);
            assert!(
                shows(&s, want),
                "{}: after show({state}) it shows {:?}, not {want:?}",
                s.name,
                (s.seen)()
            );
        }
    }
}

#[test]
fn a_steady_state_after_working_stays_exactly_as_shown() {
    for mut s in subjects() {
        for end in [State::Success, State::Failure, State::Attention, State::Off] {
            s.show(State::Success);
            s.show(State::Working {
                progress: Some(0.5),
            });
            // Let the working animation run a while: its thread must not outlive `show`.
            std::thread::sleep(s.settle / 2);
            let want = s.show(end);
            assert_eq!((s.seen)(), want, "{}: right after show({end})", s.name);
            std::thread::sleep(s.settle);
            assert_eq!((s.seen)(), want, "{}: {end} changed by itself", s.name);
        }
    }
}

#[test]
fn every_backend_describes_itself() {
    for s in subjects() {
        let d = s.indicator.describe();
        assert!(!d.trim().is_empty(), "{}: empty describe()", s.name);
    }
}
