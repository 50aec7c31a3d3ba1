//! Integration tests of the indicator backends against the blinkstick crate's emulator.

mod blinkstick_emulated;
mod config;
mod conformance;
mod console;
mod shared;
mod vm_uhid;
