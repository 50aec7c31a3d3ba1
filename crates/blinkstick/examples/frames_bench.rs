//! Counts the reports needed to set 64 LEDs of a Pro channel: one frame report through
//! `set_channel` against 64 indexed reports one by one, on the emulated device.
//! `cargo xtask bench` runs it; `cargo run -p blinkstick-hid --example frames_bench` too.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use blinkstick::emulator::{EmulatedBus, EmulatedDevice};
use blinkstick::{BlinkStick, Mode, Rgb, Selector, Variant};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("frames_bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> blinkstick::Result<bool> {
    let dev = EmulatedDevice::new(Variant::Pro, "BS000002-2.0");
    let bus = EmulatedBus::new();
    bus.plug(dev.clone());
    let mut s = BlinkStick::open_with(Arc::new(bus), &Selector::First)?;
    s.set_mode(Mode::Ws2812)?;

    dev.clear_log();
    s.set_channel(0, Rgb::new(255, 0, 0))?;
    let frame = dev.sent_reports();
    let all_red = dev.leds(0).iter().all(|&c| c == Rgb::new(255, 0, 0));

    dev.clear_log();
    for i in 0..64 {
        s.set_led(0, i, Rgb::new(0, 255, 0))?;
    }
    let one_by_one = dev.sent_reports().len();

    const N: u32 = 2000;
    let t = Instant::now();
    for _ in 0..N {
        s.set_channel(0, Rgb::new(1, 2, 3))?;
    }
    let per_frame = t.elapsed() / N;
    println!(
        "64 LEDs: set_channel sent {} report(s) (id {}, {} bytes), all set: {all_red}; \
         one by one: {one_by_one} reports; emulated set_channel {per_frame:?} each",
        frame.len(),
        frame.first().map_or(0, |r| r[0]),
        frame.first().map_or(0, Vec::len),
    );
    Ok(frame.len() == 1 && all_red && one_by_one == 64)
}
