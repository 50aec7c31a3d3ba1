//! Retries, reopening after a replug, and the v1.1-1.3 R/G-swap workaround.

use blinkstick::{BlinkStick, ErrorKind, Rgb, Variant};

use crate::open;

#[test]
fn transient_failures_are_retried() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    dev.fail_next(4);
    s.set_color(Rgb::new(1, 2, 3)).unwrap();
    assert_eq!(dev.leds(0)[0], Rgb::new(1, 2, 3));
    assert_eq!(
        dev.sent_reports().len(),
        1,
        "four refused, the fifth got through"
    );
}

#[test]
fn five_failures_give_busy() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    dev.fail_next(5);
    let e = s.set_color(Rgb::new(1, 2, 3)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(dev.sent_reports().is_empty());
}

#[test]
fn reopens_by_serial_after_replug() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    s.set_color(Rgb::new(1, 1, 1)).unwrap();
    dev.unplug();
    dev.replug();
    s.set_led(0, 3, Rgb::new(4, 5, 6)).unwrap();
    assert_eq!(dev.leds(0)[3], Rgb::new(4, 5, 6));
}

#[test]
fn unplugged_for_good_is_disconnected() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    dev.unplug();
    let e = s.set_color(Rgb::new(1, 1, 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected);
    assert!(e.to_string().contains("BS000001-3.0"), "{e}");
}

#[test]
fn without_backend_disconnect_is_reported_at_once() {
    let dev = blinkstick::emulator::EmulatedDevice::new(Variant::Nano, "BS000005-3.0");
    let mut s = BlinkStick::from_transport(Box::new(dev.transport()));
    dev.unplug();
    dev.replug();
    assert_eq!(
        s.set_color(Rgb::OFF).unwrap_err().kind(),
        ErrorKind::Disconnected
    );
}

#[test]
fn swap_bug_is_worked_around() {
    let (dev, mut s) = open(Variant::BlinkStick, "BS000001-1.2");
    assert!(s.swap_workaround());
    s.set_color(Rgb::new(10, 20, 30)).unwrap();
    dev.clear_log();
    s.set_color(Rgb::new(20, 10, 30)).unwrap();
    assert_eq!(dev.leds(0)[0], Rgb::new(20, 10, 30));
    assert_eq!(
        dev.sent_reports(),
        vec![vec![1, 9, 20, 30], vec![1, 20, 10, 30]],
        "current colour with R-1 first, then the target"
    );
    // R = 0: G - 1 instead
    s.set_color(Rgb::new(0, 40, 5)).unwrap();
    dev.clear_log();
    s.set_color(Rgb::new(40, 0, 5)).unwrap();
    assert_eq!(dev.sent_reports()[0], vec![1, 0, 39, 5]);
    assert_eq!(dev.leds(0)[0], Rgb::new(40, 0, 5));
}

#[test]
fn emulator_models_the_swap_bug() {
    let (dev, mut s) = open(Variant::BlinkStick, "BS000001-1.3");
    s.set_swap_workaround(false);
    s.set_color(Rgb::new(10, 20, 30)).unwrap();
    s.set_color(Rgb::new(20, 10, 30)).unwrap();
    assert_eq!(
        dev.leds(0)[0],
        Rgb::new(10, 20, 30),
        "the buggy firmware ignores it"
    );
    // a v1.4 has no bug and no workaround
    let (dev, mut s) = open(Variant::BlinkStick, "BS000001-1.4");
    assert!(!s.swap_workaround());
    s.set_color(Rgb::new(10, 20, 30)).unwrap();
    s.set_color(Rgb::new(20, 10, 30)).unwrap();
    assert_eq!(dev.leds(0)[0], Rgb::new(20, 10, 30));
    assert_eq!(dev.sent_reports().len(), 2);
}

#[test]
fn not_found_names_the_serial() {
    use std::sync::Arc;
    let bus = blinkstick::emulator::EmulatedBus::from_spec("square:BS000001-3.0").unwrap();
    let e = BlinkStick::open_with(
        Arc::new(bus),
        &blinkstick::Selector::Serial("BS999999-3.0".into()),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("BS999999-3.0"));
}
