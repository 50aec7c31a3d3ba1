//! `BlinkStickIndicator` through the kernel: an emulated stick served over /dev/uhid,
//! opened by the production hidapi backend. Needs the uhid module: run in the QEMU guest
//! by `cargo xtask vm-test`.

use blinkstick::emulator::{uhid::UhidDevice, EmulatedDevice};
use blinkstick::{BlinkStick, Rgb, Variant};
use indicator::stick::BlinkStickIndicator;
use indicator::{ErrorKind, Indicator, IndicatorConfig, State};
use std::time::{Duration, Instant};

const SERIAL: &str = "BS000201-3.0";

/// Polls `cond` every 50 ms for up to 10 s (uhid devices appear and vanish
/// asynchronously; a wait, not a speed target).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listed() -> bool {
    BlinkStick::list()
        .map(|l| l.iter().any(|d| d.serial == SERIAL))
        .unwrap_or(false)
}

fn serve() -> (EmulatedDevice, UhidDevice) {
    let dev = EmulatedDevice::new(Variant::Square, SERIAL);
    let uhid = UhidDevice::create(dev.clone()).expect("creating the uhid device");
    wait_for("hidapi to list the stick", listed);
    (dev, uhid)
}

#[test]
#[ignore = "needs uhid: run in the QEMU guest by cargo xtask vm-test"]
fn vm_uhid_indicator_shows_states_and_survives_a_replug() {
    let (dev, uhid) = serve();
    let cfg = IndicatorConfig {
        serial: Some(SERIAL.into()),
        breathe_period_ms: 400,
        ..IndicatorConfig::default()
    };
    let mut ind = BlinkStickIndicator::new(&cfg).expect("hidapi backend");
    let green = Rgb::parse("green").unwrap().limited(10);
    let red = Rgb::parse("red").unwrap().limited(10);

    ind.show(State::Success).unwrap();
    assert_eq!(dev.leds(0)[1], green);

    let w = ind.palette().working;
    ind.show(State::Working {
        progress: Some(0.5),
    })
    .unwrap();
    assert_eq!(&dev.leds(0)[..3], &[w, w, w], "the bar's steady part");
    assert!(dev.leds(0)[4..].iter().all(|c| *c == Rgb::OFF));
    dev.clear_log();
    wait_for("the bar's head to breathe", || {
        dev.sent_reports()
            .iter()
            .filter(|r| r[0] == 5 && r[2] == 3)
            .count()
            >= 3
    });
    ind.show(State::Failure).unwrap();
    let mut want = vec![Rgb::OFF; 8];
    want[1] = red;
    assert_eq!(dev.leds(0), want);

    // Unplugged: an error the caller can log, not a panic or a hang.
    drop(uhid);
    wait_for("hidapi to drop the stick", || !listed());
    let e = ind.show(State::Attention).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Other),
        "{e:?}"
    );
    let e = ind.show(State::Attention).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");

    // Plugged in again (a fresh stick: the LEDs start dark): the next show reopens it.
    let (dev2, _uhid2) = serve();
    ind.show(State::Success).unwrap();
    assert_eq!(dev2.leds(0)[1], green);
}
