//! Benchmark (run by `cargo xtask bench`): how quickly `show` switches from a breathing
//! "working" to a steady state (it cancels and joins the animation thread), and how many
//! breathing frames reach the stick per second, on the in-memory emulated Square.
//!
//! Prints one line per figure; exits 1 when a target is missed.

use blinkstick::emulator::{EmulatedBus, EmulatedDevice};
use blinkstick::Variant;
use indicator::stick::BlinkStickIndicator;
use indicator::{Indicator, IndicatorConfig, State};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SWITCHES: usize = 40;

fn main() -> std::process::ExitCode {
    let dev = EmulatedDevice::new(Variant::Square, "BS000001-3.0");
    let bus = EmulatedBus::new();
    bus.plug(dev.clone());
    let cfg = IndicatorConfig {
        breathe_period_ms: 1000,
        ..IndicatorConfig::default()
    };
    let mut ind = BlinkStickIndicator::with_backend(Arc::new(bus), &cfg).expect("config");

    // Breathing rate: frames sent in 2 s at a 1 s period (nominal 50 frames per breath).
    ind.show(State::Working { progress: None })
        .expect("working");
    dev.clear_log();
    std::thread::sleep(Duration::from_secs(2));
    let frames = dev.sent_reports().len();
    let fps = frames as f64 / 2.0;
    println!("indicator: breathing at a 1 s period sent {fps:.0} frames/s (nominal 50)");

    // Switch latency, at varying phases of the breath.
    let mut times = Vec::with_capacity(SWITCHES);
    for i in 0..SWITCHES {
        ind.show(State::Working { progress: None })
            .expect("working");
        std::thread::sleep(Duration::from_millis(5 + (i as u64 * 7) % 40));
        let t = Instant::now();
        ind.show(State::Success).expect("success");
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[SWITCHES / 2];
    let max = times[SWITCHES - 1];
    let target = Duration::from_millis(20); // one frame interval at a 1 s period
    println!(
        "indicator: working -> success switch, {SWITCHES} runs: median {:.3} ms, max {:.3} ms \
         (target: max < {} ms, one frame interval): {}",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        target.as_millis(),
        if max < target { "met" } else { "NOT met" }
    );
    let fps_ok = (40.0..=60.0).contains(&fps);
    println!(
        "indicator: frame rate within 40-60 frames/s: {}",
        if fps_ok { "met" } else { "NOT met" }
    );
    if max < target && fps_ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
