//! `SharedIndicator`: two drive runs (two indicators, as two extbackup processes have)
//! share one emulated stick through slots; the `blinkstick` binary's tests run the same
//! rules across real processes.

use std::sync::Arc;

use blinkstick::emulator::{EmulatedBus, EmulatedDevice};
use blinkstick::slots::{Owner, SlotState, Slots};
use blinkstick::{Rgb, Variant};
use indicator::shared::{ack_with, SharedIndicator};
use indicator::stick::BlinkStickIndicator;
use indicator::{Indicator, IndicatorConfig, State};

struct Setup {
    dev: EmulatedDevice,
    bus: Arc<EmulatedBus>,
    slots: Slots,
    cfg: IndicatorConfig,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dev = EmulatedDevice::new(Variant::Square, "BS000001-3.0");
        let bus = EmulatedBus::new();
        bus.plug(dev.clone());
        let dir = std::env::temp_dir().join(format!("ind-shared-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Setup {
            dev,
            bus: Arc::new(bus),
            slots: Slots::new(dir),
            cfg: IndicatorConfig::default(),
        }
    }

    fn job(&self, name: &str) -> SharedIndicator {
        SharedIndicator::with_backend(self.bus.clone(), &self.cfg, name, self.slots.clone())
            .unwrap()
    }

    fn led(&self) -> Rgb {
        self.dev.leds(0)[1]
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.slots.dir());
    }
}

fn color(word: &str) -> Rgb {
    Rgb::parse(word).unwrap().limited(10)
}

#[test]
fn a_failure_stays_while_another_drive_works_until_its_next_good_run() {
    let s = Setup::new("rerun");
    let (mut a, mut b) = (s.job("offsite-a"), s.job("offsite-b"));
    b.show(State::Working { progress: None }).unwrap();
    assert_eq!(s.led(), color("33c280"));
    a.show(State::Working {
        progress: Some(0.1),
    })
    .unwrap();
    a.show(State::Failure).unwrap();
    assert_eq!(s.led(), color("red"));
    // B's progress and success do not hide A's failure
    b.show(State::Working {
        progress: Some(0.5),
    })
    .unwrap();
    b.show(State::Success).unwrap();
    assert_eq!(s.led(), color("red"));
    // A's next run: red while it works, green once it succeeds
    let mut a2 = s.job("offsite-a");
    a2.show(State::Working { progress: None }).unwrap();
    assert_eq!(s.led(), color("red"));
    a2.show(State::Success).unwrap();
    assert_eq!(s.led(), color("green"));
    assert!(
        a.describe().contains("shared: slot offsite-a"),
        "{}",
        a.describe()
    );
}

#[test]
fn ack_clears_a_failure_and_attention_outranks_working() {
    let s = Setup::new("ack");
    let (mut a, mut b) = (s.job("offsite-a"), s.job("offsite-b"));
    a.show(State::Failure).unwrap();
    b.show(State::Attention).unwrap();
    assert_eq!(s.led(), color("red"));
    let mut ind = BlinkStickIndicator::with_backend(s.bus.clone(), &s.cfg).unwrap();
    assert!(ack_with(&mut ind, &s.slots, "offsite-a").unwrap());
    assert_eq!(
        s.led(),
        color("orange"),
        "acknowledged: B's attention shows"
    );
    assert!(!ack_with(&mut ind, &s.slots, "offsite-a").unwrap());
    b.show(State::Working { progress: None }).unwrap();
    assert_eq!(s.led(), color("33c280"));
    b.show(State::Off).unwrap();
    assert_eq!(s.led(), Rgb::OFF, "no slot left: off");
}

#[test]
fn a_dead_runs_working_slot_is_dropped_at_the_next_change() {
    let s = Setup::new("dead");
    // a run that died while working (its process is gone)
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let owner = Owner::of(child.id()).unwrap();
    child.wait().unwrap();
    s.slots
        .lock()
        .unwrap()
        .set("offsite-b", SlotState::Working, owner)
        .unwrap();
    let mut a = s.job("offsite-a");
    a.show(State::Success).unwrap();
    assert_eq!(
        s.led(),
        color("green"),
        "the dead run no longer shows working"
    );
    assert!(s.slots.lock().unwrap().get("offsite-b").unwrap().is_none());
}
