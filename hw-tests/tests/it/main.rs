//! hw-tests' one integration-test binary.
//!
//! - `gadget`, `dm_crypt`: `vm_*` tests for the QEMU guest (`cargo xtask vm-test`); on the
//!   host they are ignored (no dummy_hcd, no device-mapper).
//! - `systemd`: `vm_systemd_*` tests, run by `cargo xtask vm-test` in a second guest boot
//!   with systemd as PID 1 (the plug-in journey: udev → PID 1 → extbackup@UUID → LED, mail).
//! - `blinkstick_hw`, `drive_hw`: real hardware, ignored unless the `hardware` feature is
//!   on and the device is named (`cargo xtask hw-test`, docs/hardware-testing.md).

mod blinkstick_hw;
mod dm_crypt;
mod drive_hw;
mod gadget;
mod systemd;
