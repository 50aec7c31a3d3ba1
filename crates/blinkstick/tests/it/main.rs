//! Integration tests of the blinkstick crate: against the emulated device on the host,
//! and (`vm_*`, feature `uhid`) against a uhid device in the QEMU guest.

mod animations;
mod cli;
mod colors;
mod reports;
mod robustness;
mod slots;
mod variants;
#[cfg(all(feature = "uhid", feature = "hidapi", target_os = "linux"))]
mod vm_uhid;

use std::sync::Arc;
use std::time::Duration;

use blinkstick::emulator::{EmulatedBus, EmulatedDevice};
use blinkstick::{BlinkStick, RetryPolicy, Selector, Variant};

/// An emulated stick on a bus, opened through the bus (so reopening works), with
/// retries that do not really sleep.
pub fn open(variant: Variant, serial: &str) -> (EmulatedDevice, BlinkStick) {
    let dev = EmulatedDevice::new(variant, serial);
    let bus = EmulatedBus::new();
    bus.plug(dev.clone());
    let mut stick = BlinkStick::open_with(Arc::new(bus), &Selector::Serial(serial.into()))
        .expect("opening the emulated stick");
    stick.set_retry_policy(RetryPolicy {
        tries: 5,
        delay: Duration::ZERO,
    });
    (dev, stick)
}
