//! Helpers for the tests that need more than the host kernel gives: real hardware (a
//! BlinkStick, a USB drive; run with `cargo xtask hw-test`, see
//! `docs/hardware-testing.md`) and the QEMU guest's USB-gadget and dm-crypt cases (the
//! `vm_*` tests, run with `cargo xtask vm-test`, see `docs/testing.md`).
//!
//! [`gadget::UsbGadget`] builds a USB device in the kernel with configfs (`libcomposite`
//! and `usb_f_hid` on `dummy_hcd`): a "BlinkStick" that libusb and hidapi see as a real
//! USB device, whose SET_REPORT data can be read back from `/dev/hidgN`.
//!
//! ```no_run
//! use hw_tests::gadget::{GadgetSpec, UsbGadget};
//! use std::time::Duration;
//!
//! let spec = GadgetSpec::blinkstick("BS000042-3.0", 0x0202, "BlinkStick Nano", &[0xC0]);
//! let g = UsbGadget::create("example", &spec)?;
//! let report = g.read_hidg(Duration::from_secs(2))?;
//! println!("the host sent {report:?}");
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs)]

mod configfs;
pub mod ffs;
pub mod gadget;
pub mod gate;
pub mod storage;
pub mod sysfs;
