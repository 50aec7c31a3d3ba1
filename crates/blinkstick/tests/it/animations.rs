//! Frame sequences, pacing and cancellation of the animations, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use blinkstick::anim::{morph_timeline, MIN_FRAME_INTERVAL};
use blinkstick::{CancelToken, Clock, ManualClock, Outcome, Player, Rgb, SystemClock, Variant};

use crate::open;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// (time, index, colour) of every report 5 the device received.
fn frames(dev: &blinkstick::emulator::EmulatedDevice) -> Vec<(Duration, u8, Rgb)> {
    dev.log()
        .into_iter()
        .filter(|e| e.direction == blinkstick::Direction::Sent && e.data[0] == 5)
        .map(|e| {
            (
                e.at.unwrap(),
                e.data[2],
                Rgb::new(e.data[3], e.data[4], e.data[5]),
            )
        })
        .collect()
}

fn setup() -> (
    blinkstick::emulator::EmulatedDevice,
    blinkstick::BlinkStick,
    Arc<ManualClock>,
) {
    let (dev, s) = open(Variant::Square, "BS000001-3.0");
    let clock = Arc::new(ManualClock::new());
    dev.set_clock(clock.clone());
    (dev, s, clock)
}

#[test]
fn blink_at_index_3() {
    let (dev, mut s, clock) = setup();
    let red = Rgb::new(255, 0, 0);
    let out = Player::new(0, 3)
        .with_clock(clock)
        .blink(&mut s, red, 3, ms(500))
        .unwrap();
    assert_eq!(out, Outcome::Completed);
    let f = frames(&dev);
    let expect: Vec<(Duration, u8, Rgb)> = (0..6)
        .map(|i| (ms(500 * i), 3, if i % 2 == 0 { red } else { Rgb::OFF }))
        .collect();
    assert_eq!(f, expect);
    assert_eq!(dev.leds(0)[3], Rgb::OFF);
    assert_eq!(dev.leds(0)[0], Rgb::OFF, "LED 0 untouched");
}

#[test]
fn morph_at_index_2_from_current_colour() {
    let (dev, mut s, clock) = setup();
    s.set_led(0, 2, Rgb::new(0, 0, 200)).unwrap();
    dev.clear_log();
    let target = Rgb::new(200, 100, 0);
    Player::new(0, 2)
        .with_clock(clock)
        .morph(&mut s, target, ms(1000), 50)
        .unwrap();
    let f = frames(&dev);
    assert_eq!(f.len(), 52, "start, 50 steps, end");
    assert_eq!(f[0].2, Rgb::new(0, 0, 200));
    assert_eq!(f[51].2, target);
    assert_eq!(f[51].0, ms(1000));
    assert!(f.iter().all(|x| x.1 == 2));
    assert!(f.windows(2).all(|w| w[1].0 - w[0].0 >= MIN_FRAME_INTERVAL));
    // red rises, blue falls monotonically
    assert!(f
        .windows(2)
        .all(|w| w[1].2.r >= w[0].2.r && w[1].2.b <= w[0].2.b));
    assert_eq!(dev.leds(0)[2], target);
    // the read-back of the start colour came first (frame report 6)
    assert_eq!(dev.log()[0].data[0], 6);
}

#[test]
fn pulse_at_index_1_ends_off_and_spares_led_0() {
    let (dev, mut s, clock) = setup();
    s.set_color(Rgb::new(9, 9, 9)).unwrap();
    let c = Rgb::new(0, 255, 0);
    Player::new(0, 1)
        .with_clock(clock)
        .pulse(&mut s, c, 2, ms(1000), 50)
        .unwrap();
    let f = frames(&dev);
    assert_eq!(f.len(), 1 + 2 * 2 * 51);
    assert_eq!(f[0].2, Rgb::OFF);
    assert_eq!(f[51].2, c, "peak of the first pulse");
    assert_eq!(f[102].2, Rgb::OFF);
    assert_eq!(f.last().unwrap().2, Rgb::OFF);
    assert_eq!(f.last().unwrap().0, ms(4000));
    assert!(f.iter().all(|x| x.1 == 1));
    assert_eq!(
        dev.leds(0)[0],
        Rgb::new(9, 9, 9),
        "Python's pulse turned LED 0 off"
    );
}

#[test]
fn pacing_never_exceeds_100_frames_per_second() {
    let (dev, mut s, clock) = setup();
    Player::new(0, 1)
        .with_clock(clock)
        .morph(&mut s, Rgb::new(255, 255, 255), ms(100), 50)
        .unwrap();
    let f = frames(&dev);
    assert!(f.len() <= 11);
    assert!(f.windows(2).all(|w| w[1].0 - w[0].0 >= MIN_FRAME_INTERVAL));
    assert_eq!(f.last().unwrap().2, Rgb::new(255, 255, 255));
}

#[test]
fn slow_sends_do_not_make_the_schedule_drift() {
    let (_dev, mut s, clock) = setup();
    let c2 = clock.clone();
    // each sleep costs 3 ms extra (a slow device): deadlines stay absolute
    clock.on_sleep(move |_| c2.advance(ms(3)));
    let frames = morph_timeline(Rgb::OFF, Rgb::new(255, 0, 0), ms(5000), 99);
    Player::new(0, 1)
        .with_clock(clock.clone())
        .play(&mut s, &frames)
        .unwrap();
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), frames.len());
    for (d, f) in sleeps.iter().zip(&frames) {
        assert_eq!(
            *d, f.at,
            "deadline = start + offset, not previous + interval"
        );
    }
}

#[test]
fn breathe_runs_until_cancelled_on_manual_clock() {
    let (dev, mut s, clock) = setup();
    let cancel = CancelToken::new();
    let (c2, t2) = (clock.clone(), cancel.clone());
    clock.on_sleep(move |now| {
        if now >= ms(10_000) {
            t2.cancel();
        }
        let _ = &c2;
    });
    let out = Player::new(0, 4)
        .with_clock(clock)
        .with_cancel(cancel)
        .breathe(&mut s, Rgb::new(100, 0, 200), ms(2000))
        .unwrap();
    assert_eq!(out, Outcome::Cancelled);
    let f = frames(&dev);
    // one frame per 40 ms (2 s / 50) from 0 to just before 10 s
    assert_eq!(f.len(), 250);
    assert_eq!(f[25].2, Rgb::new(100, 0, 200), "peak at half a period");
    assert_eq!(f[50].2, Rgb::OFF);
    assert!(f.windows(2).all(|w| w[1].0 - w[0].0 == ms(40)));
}

#[test]
fn breathe_cancelled_from_another_thread() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    let cancel = CancelToken::new();
    let player = Player::new(0, 1)
        .with_clock(Arc::new(SystemClock::new()))
        .with_cancel(cancel.clone());
    let h = std::thread::spawn(move || player.breathe(&mut s, Rgb::new(0, 0, 255), ms(500)));
    while dev.sent_reports().len() < 3 {
        std::thread::sleep(ms(5));
    }
    cancel.cancel();
    let out = h.join().unwrap().unwrap();
    assert_eq!(out, Outcome::Cancelled);
    let n = dev.sent_reports().len();
    std::thread::sleep(ms(50));
    assert_eq!(dev.sent_reports().len(), n, "no frames after cancellation");
}

#[test]
fn cancelled_before_start_sends_nothing() {
    let (dev, mut s, clock) = setup();
    let cancel = CancelToken::new();
    cancel.cancel();
    let out = Player::new(0, 1)
        .with_clock(clock)
        .with_cancel(cancel)
        .blink(&mut s, Rgb::new(1, 1, 1), 3, ms(100))
        .unwrap();
    assert_eq!(out, Outcome::Cancelled);
    assert!(dev.sent_reports().is_empty());
}

#[test]
fn huge_times_saturate_instead_of_panicking() {
    use blinkstick::anim::{blink_timeline, effective_steps, pulse_timeline};
    let c = Rgb::new(1, 2, 3);
    let t = blink_timeline(c, 3, Duration::MAX);
    assert_eq!(t.len(), 6);
    assert!(t.windows(2).all(|w| w[1].at >= w[0].at));
    let p = pulse_timeline(c, 2, Duration::MAX, 50);
    assert_eq!(
        p.len(),
        1 + 2 * 2 * 51,
        "50 steps: a long pulse needs no fewer"
    );
    assert!(p.windows(2).all(|w| w[1].at >= w[0].at));
    // more 10 ms slots than a u32 holds: the steps asked for, not a wrapped count
    let long = Duration::from_millis(10 * ((1u64 << 32) + 5));
    assert_eq!(effective_steps(long, 50), 50);
    // played on a clock that is past zero: the deadlines saturate as well
    let (dev, mut s, clock) = setup();
    clock.advance(ms(5));
    let out = Player::new(0, 1)
        .with_clock(clock)
        .play(&mut s, &t)
        .unwrap();
    assert_eq!(out, Outcome::Completed);
    assert_eq!(frames(&dev).len(), 6);
}

#[test]
fn system_clock_far_deadline_waits_for_cancel_without_panicking() {
    let cancel = CancelToken::new();
    cancel.cancel();
    assert!(!SystemClock::new().sleep_until(Duration::MAX, &cancel));
}

#[test]
fn breathe_color_with_zero_frames_per_cycle_is_off() {
    use blinkstick::anim::breathe_color;
    assert_eq!(breathe_color(Rgb::new(9, 9, 9), 7, 0), Rgb::OFF);
}

#[test]
fn endless_repeats_are_lazy_and_cancellable() {
    use blinkstick::anim::{blink_frames, blink_timeline, pulse_frames, pulse_timeline};
    let c = Rgb::new(0, 0, 255);
    // the lazy sequences are the timelines, frame for frame
    assert!(blink_frames(c, 3, ms(100)).eq(blink_timeline(c, 3, ms(100))));
    assert!(pulse_frames(c, 2, ms(300), 50).eq(pulse_timeline(c, 2, ms(300), 50)));
    // u32::MAX repeats would be ~100 GB of frames as a Vec: played lazily until cancelled
    let (dev, mut s, clock) = setup();
    let cancel = CancelToken::new();
    let t2 = cancel.clone();
    clock.on_sleep(move |now| {
        if now >= ms(1000) {
            t2.cancel();
        }
    });
    let out = Player::new(0, 1)
        .with_clock(clock)
        .with_cancel(cancel)
        .play(&mut s, pulse_frames(c, u32::MAX, ms(1000), 50))
        .unwrap();
    assert_eq!(out, Outcome::Cancelled);
    let f = frames(&dev);
    assert_eq!(f.len(), 51, "off, then 50 steps before the peak at 1 s");
    assert_eq!(f[0].2, Rgb::OFF);
}
