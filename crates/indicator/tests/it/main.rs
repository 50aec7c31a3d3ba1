//! Integration tests of the indicator backends against the blinkstick crate's emulator.

mod blinkstick_emulated;
mod config;
mod console;
mod shared;
mod vm_uhid;
