//! Manual check against a real stick: prints what the stick says about itself, lights
//! each LED in turn, reads the colours back, and turns everything off.
//!
//! `cargo run -p blinkstick-hid --example hardware_check [SERIAL]`

use std::process::ExitCode;
use std::time::Duration;

use blinkstick::{BlinkStick, Rgb};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hardware_check: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> blinkstick::Result<()> {
    let mut s = match std::env::args().nth(1) {
        Some(serial) => BlinkStick::open_serial(&serial)?,
        None => BlinkStick::open_first()?,
    };
    let v = s.variant();
    println!("{} {} at {}", v.description(), s.serial(), s.info().path);
    let n = s.leds_per_channel()?;
    let mut ok = true;
    for ch in 0..v.channels() {
        for i in 0..n.min(64) as u8 {
            let c = Rgb::new(i.wrapping_mul(37), 64, 255 - i.wrapping_mul(3));
            s.set_led(ch, i, c)?;
            std::thread::sleep(Duration::from_millis(30));
            let back = s.led(ch, i)?;
            if back != c {
                println!("channel {ch} LED {i}: sent {c}, read back {back}");
                ok = false;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    s.all_off()?;
    println!(
        "{}",
        if ok {
            "all LEDs read back what was sent"
        } else {
            "mismatches above"
        }
    );
    Ok(())
}
