#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
// examples are code users copy: no ignored `Result`s, no unused imports
#![doc(test(attr(deny(warnings))))]

pub mod anim;
pub mod color;
mod device;
pub mod emulator;
mod error;
#[cfg(feature = "hidapi")]
pub mod hidapi_backend;
#[cfg(feature = "rusb")]
pub mod rusb_backend;
#[cfg(all(feature = "slots", target_os = "linux"))]
pub mod slots;
pub mod transport;
pub mod variant;

pub use anim::{CancelToken, Clock, ManualClock, Outcome, Player, SystemClock};
pub use color::Rgb;
pub use device::{BlinkStick, Mode, RetryPolicy, Selector};
pub use error::{Error, ErrorKind, Result};
pub use transport::{Backend, DeviceInfo, Direction, Transport};
pub use variant::{Variant, PRODUCT_ID, VENDOR_ID};
