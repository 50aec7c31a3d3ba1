//! `BlinkStickIndicator` against the blinkstick crate's in-memory emulated sticks.

use blinkstick::emulator::{EmulatedBus, EmulatedDevice};
use blinkstick::{RetryPolicy, Rgb, Variant};
use indicator::stick::BlinkStickIndicator;
use indicator::{ErrorKind, Indicator, IndicatorConfig, State};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERIAL: &str = "BS000001-3.0";

fn quick() -> RetryPolicy {
    RetryPolicy {
        tries: 2,
        delay: Duration::ZERO,
    }
}

fn setup(
    variant: Variant,
    serial: &str,
    cfg: &IndicatorConfig,
) -> (BlinkStickIndicator, EmulatedDevice) {
    let dev = EmulatedDevice::new(variant, serial);
    let bus = EmulatedBus::new();
    bus.plug(dev.clone());
    let ind = BlinkStickIndicator::with_backend(Arc::new(bus), cfg)
        .expect("valid config")
        .with_retry_policy(quick());
    (ind, dev)
}

/// Colour words through the blinkstick crate's parser, limited as the Python tool does.
fn limited(word: &str, limit: u8) -> Rgb {
    Rgb::parse(word).unwrap().limited(limit)
}

/// Report-5 colours sent to (channel 0, `index`), in order.
fn led_frames(dev: &EmulatedDevice, index: u8) -> Vec<Rgb> {
    dev.sent_reports()
        .iter()
        .filter(|r| r.len() == 6 && r[0] == 5 && r[1] == 0 && r[2] == index)
        .map(|r| Rgb::new(r[3], r[4], r[5]))
        .collect()
}

/// Polls `cond` every 10 ms for up to 5 s (a wait for a background thread, not a speed
/// target).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn steady_states_show_the_configured_colours_with_the_limit() {
    let (mut ind, dev) = setup(Variant::Square, SERIAL, &IndicatorConfig::default());
    for (state, word) in [
        (State::Success, "green"),
        (State::Failure, "red"),
        (State::Attention, "orange"),
    ] {
        ind.show(state).unwrap();
        let leds = dev.leds(0);
        assert_eq!(leds[1], limited(word, 10), "{state} on LED 1");
        assert_eq!(leds[0], Rgb::OFF, "{state}: LED 0 untouched");
    }
    // the seed's green at --limit 10: max 25, (0,128,0) -> (0,12,0), sent as report 5
    ind.show(State::Success).unwrap();
    assert_eq!(dev.sent_reports().last().unwrap(), &vec![5, 0, 1, 0, 12, 0]);
    ind.show(State::Off).unwrap();
    assert_eq!(dev.leds(0)[1], Rgb::OFF);
}

#[test]
fn custom_colours_serial_and_limit_are_used() {
    let mut cfg = IndicatorConfig {
        serial: Some("BS000002-3.0".into()),
        index: 3,
        limit: 50,
        ..IndicatorConfig::default()
    };
    cfg.colors.success = "#0000ff".into();
    let other = EmulatedDevice::new(Variant::Square, "BS000001-3.0");
    let ours = EmulatedDevice::new(Variant::Square, "BS000002-3.0");
    let bus = EmulatedBus::new();
    bus.plug(other.clone());
    bus.plug(ours.clone());
    let mut ind = BlinkStickIndicator::with_backend(Arc::new(bus), &cfg).unwrap();
    ind.show(State::Success).unwrap();
    // limit 50: max int(0.5*255) = 127
    assert_eq!(ours.leds(0)[3], Rgb::new(0, 0, 127));
    assert!(
        other.sent_reports().is_empty(),
        "the other stick was left alone"
    );
}

#[test]
fn one_led_stick_uses_led_zero_for_the_seed_index_1() {
    let (mut ind, dev) = setup(
        Variant::BlinkStick,
        "BS000009-1.4",
        &IndicatorConfig::default(),
    );
    ind.show(State::Failure).unwrap();
    assert_eq!(dev.leds(0)[0], limited("red", 10));
    assert_eq!(
        dev.sent_reports().last().unwrap()[0],
        1,
        "report 1 on a plain stick"
    );
}

#[test]
fn working_breathes_and_stops_at_the_next_state() {
    let cfg = IndicatorConfig {
        breathe_period_ms: 200,
        ..IndicatorConfig::default()
    };
    let (mut ind, dev) = setup(Variant::Square, SERIAL, &cfg);
    let working = Rgb::new(5, 19, 12); // 33c280 at limit 10, as the seed's tool sends it
    assert_eq!(ind.palette().working, working);
    ind.show(State::Working { progress: None }).unwrap();
    // One breath: from off up to the full working colour and back down.
    wait_for("a full breath", || {
        let f = led_frames(&dev, 1);
        let peak = f.iter().position(|c| *c == working);
        peak.is_some_and(|p| f[p..].contains(&Rgb::OFF)) && f[0] == Rgb::OFF
    });
    let frames = led_frames(&dev, 1);
    assert!(frames.len() >= 5, "breathing sends many frames: {frames:?}");
    assert!(frames
        .iter()
        .all(|c| c.r <= working.r && c.g <= working.g && c.b <= working.b));
    // A progress update that changes nothing visible does not restart the breath.
    ind.show(State::Working {
        progress: Some(0.3),
    })
    .unwrap();

    ind.show(State::Success).unwrap();
    let success = limited("green", 10);
    assert_eq!(dev.leds(0)[1], success);
    dev.clear_log();
    std::thread::sleep(Duration::from_millis(150)); // several frame intervals
    assert!(
        dev.sent_reports().is_empty(),
        "breathing went on after show() returned: {:?}",
        dev.sent_reports()
    );
    assert_eq!(dev.leds(0)[1], success);
}

#[test]
fn progress_on_a_square_lights_a_proportional_bar() {
    let (mut ind, dev) = setup(Variant::Square, SERIAL, &IndicatorConfig::default());
    let w = ind.palette().working;
    for (p, lit) in [(0.0f32, 1usize), (0.5, 4), (0.6, 5), (1.0, 8)] {
        ind.show(State::Working { progress: Some(p) }).unwrap();
        let leds = dev.leds(0);
        // LEDs before the head are steady; the head breathes; the rest are off.
        assert!(leds[..lit - 1].iter().all(|c| *c == w), "p={p}: {leds:?}");
        assert!(
            leds[lit..].iter().all(|c| *c == Rgb::OFF),
            "p={p}: {leds:?}"
        );
        let frame = dev
            .sent_reports()
            .into_iter()
            .rev()
            .find(|r| r[0] == 6)
            .expect("the bar is one frame report");
        let lit_in_frame = frame[2..].chunks(3).filter(|g| g != &[0, 0, 0]).count();
        assert_eq!(lit_in_frame, lit, "p={p}");
    }
    ind.show(State::Success).unwrap();
    let mut want = vec![Rgb::OFF; 8];
    want[1] = limited("green", 10);
    assert_eq!(dev.leds(0), want, "the bar is cleared for a steady state");
}

#[test]
fn progress_bar_off_uses_only_the_configured_led() {
    let cfg = IndicatorConfig {
        progress_bar: false,
        ..IndicatorConfig::default()
    };
    let (mut ind, dev) = setup(Variant::Square, SERIAL, &cfg);
    ind.show(State::Working {
        progress: Some(0.9),
    })
    .unwrap();
    wait_for("breathing frames", || led_frames(&dev, 1).len() >= 2);
    ind.show(State::Off).unwrap();
    assert!(
        dev.sent_reports().iter().all(|r| r[0] != 6),
        "no frame reports"
    );
}

#[test]
fn unplugged_stick_gives_not_found_and_replug_recovers() {
    let (mut ind, dev) = setup(Variant::Square, SERIAL, &IndicatorConfig::default());
    ind.show(State::Success).unwrap();
    dev.unplug();
    let e = ind.show(State::Failure).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
    let e = ind.show(State::Attention).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
    dev.replug();
    ind.show(State::Failure).unwrap();
    assert_eq!(dev.leds(0)[1], limited("red", 10));
}

#[test]
fn breathing_resumes_by_itself_after_a_replug() {
    let cfg = IndicatorConfig {
        breathe_period_ms: 200,
        ..IndicatorConfig::default()
    };
    let (mut ind, dev) = setup(Variant::Square, SERIAL, &cfg);
    dev.unplug();
    let e = ind.show(State::Working { progress: None }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    dev.replug();
    dev.clear_log();
    wait_for("breathing after the replug", || {
        led_frames(&dev, 1).len() >= 3
    });
    // Unplugged while breathing: the thread notes it and keeps trying.
    dev.unplug();
    wait_for("the background error", || {
        ind.take_background_error()
            .is_some_and(|e| e.kind() == ErrorKind::NotFound)
    });
    dev.replug();
    dev.clear_log();
    wait_for("breathing after the second replug", || {
        led_frames(&dev, 1).len() >= 3
    });
    ind.show(State::Success).unwrap();
}

#[test]
fn bad_config_is_invalid_config() {
    let bus: Arc<dyn blinkstick::Backend> = Arc::new(EmulatedBus::new());
    let mut cfg = IndicatorConfig::default();
    cfg.colors.failure = "reddish".into();
    let e = BlinkStickIndicator::with_backend(bus.clone(), &cfg)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(format!("{e:#}").contains("reddish"), "{e:#}");
    let cfg = IndicatorConfig {
        limit: 101,
        ..IndicatorConfig::default()
    };
    let e = BlinkStickIndicator::with_backend(bus, &cfg).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn no_stick_at_all_is_not_found() {
    let bus = Arc::new(EmulatedBus::new());
    let mut ind = BlinkStickIndicator::with_backend(bus, &IndicatorConfig::default()).unwrap();
    assert_eq!(
        ind.show(State::Success).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn pro_outside_ws2812_mode_is_a_config_error_not_a_dark_led() {
    // a factory Pro is in mode 0, where it ignores report 5 and frames: LED 1 stays dark
    let (mut ind, dev) = setup(Variant::Pro, "BS000002-2.0", &IndicatorConfig::default());
    let e = ind.show(State::Success).unwrap_err();
    assert_eq!(dev.leds(0)[1], Rgb::OFF);
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e:?}");
    assert!(format!("{e:?}").contains("--set-mode 2"), "{e:?}");
    let e = ind.show(State::Working { progress: None }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e:?}");
    drop(ind);
    // once in mode 2 the same configuration shows the colour
    let (mut ind, dev2) = setup(Variant::Pro, "BS000003-2.0", &IndicatorConfig::default());
    dev2.with_firmware(|f| f.handle_set_feature(&[4, 2]).unwrap());
    ind.show(State::Success).unwrap();
    assert_eq!(dev2.leds(0)[1], limited("green", 10));
    // LED 0 of channel 0 (report 1, an analog strip) works in mode 0
    let cfg = IndicatorConfig {
        index: 0,
        ..IndicatorConfig::default()
    };
    let (mut ind, dev3) = setup(Variant::Pro, "BS000004-2.0", &cfg);
    ind.show(State::Failure).unwrap();
    assert_eq!(dev3.leds(0)[0], limited("red", 10));
}
