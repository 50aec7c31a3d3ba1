//! Serves an [`EmulatedDevice`] as a kernel HID device through `/dev/uhid`, so hidapi
//! (and anything else) sees a real `/dev/hidrawN` (Linux, feature `uhid`).
//!
//! `UHID_CREATE2` carries the variant's report descriptor, bus USB, VID 0x20A0,
//! PID 0x41E5, name = product string and uniq = serial; a thread answers
//! `UHID_GET_REPORT` and `UHID_SET_REPORT` from the emulator. Dropping the
//! [`UhidDevice`] destroys the kernel device.
//!
//! ```no_run
//! # #[cfg(feature = "hidapi")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use blinkstick::emulator::{uhid::UhidDevice, EmulatedDevice};
//! use blinkstick::{BlinkStick, Rgb, Variant};
//!
//! let dev = EmulatedDevice::new(Variant::Square, "BS000001-3.0");
//! let _uhid = UhidDevice::create(dev.clone())?;      // needs root and the uhid module
//! let mut stick = BlinkStick::open_serial("BS000001-3.0")?;
//! stick.set_color(Rgb::new(1, 2, 3))?;
//! assert_eq!(dev.leds(0)[0], Rgb::new(1, 2, 3));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "hidapi"))]
//! # fn main() {}
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::EmulatedDevice;
use crate::error::{Error, ErrorKind, Result};
use crate::variant::{PRODUCT_ID, VENDOR_ID};

// linux/uhid.h
const UHID_DESTROY: u32 = 1;
const UHID_GET_REPORT: u32 = 9;
const UHID_GET_REPORT_REPLY: u32 = 10;
const UHID_CREATE2: u32 = 11;
const UHID_SET_REPORT: u32 = 13;
const UHID_SET_REPORT_REPLY: u32 = 14;
const UHID_FEATURE_REPORT: u8 = 0;
const BUS_USB: u16 = 3;
const UHID_DATA_MAX: usize = 4096;
/// sizeof(struct uhid_event): u32 type + the largest member, uhid_create2_req
/// (128 + 64 + 64 + 2 + 2 + 4 * 4 + 4096 = 4372).
const EVENT_SIZE: usize = 4 + 4372;
const EIO: u16 = 5;

/// A live uhid device backed by an emulator; destroyed on drop.
pub struct UhidDevice {
    file: Arc<File>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The `UHID_CREATE2` event for `dev`.
fn create2_event(dev: &EmulatedDevice) -> Vec<u8> {
    let info = dev.info();
    let rd = dev.with_firmware(|f| f.variant().report_descriptor());
    let mut ev = vec![0u8; EVENT_SIZE];
    put_u32(&mut ev, 0, UHID_CREATE2);
    let name = info.product.as_bytes();
    ev[4..4 + name.len().min(127)].copy_from_slice(&name[..name.len().min(127)]);
    let phys = b"blinkstick-emulator";
    ev[132..132 + phys.len()].copy_from_slice(phys);
    let uniq = info.serial.as_bytes();
    ev[196..196 + uniq.len().min(63)].copy_from_slice(&uniq[..uniq.len().min(63)]);
    put_u16(&mut ev, 260, rd.len() as u16);
    put_u16(&mut ev, 262, BUS_USB);
    put_u32(&mut ev, 264, u32::from(VENDOR_ID));
    put_u32(&mut ev, 268, u32::from(PRODUCT_ID));
    put_u32(&mut ev, 272, u32::from(info.release));
    put_u32(&mut ev, 276, 0);
    ev[280..280 + rd.len()].copy_from_slice(&rd);
    ev
}

/// The reply to one event from the kernel, if it needs one.
fn answer(dev: &EmulatedDevice, ev: &[u8]) -> Option<Vec<u8>> {
    let kind = get_u32(ev, 0);
    let id = get_u32(ev, 4);
    let rnum = ev[8];
    let rtype = ev[9];
    let mut out = vec![0u8; EVENT_SIZE];
    put_u32(&mut out, 4, id);
    match kind {
        UHID_GET_REPORT => {
            put_u32(&mut out, 0, UHID_GET_REPORT_REPLY);
            let data = if rtype == UHID_FEATURE_REPORT {
                dev.handle_get_feature(rnum)
            } else {
                Vec::new()
            };
            if data.is_empty() {
                put_u16(&mut out, 8, EIO);
            } else {
                let n = data.len().min(UHID_DATA_MAX);
                put_u16(&mut out, 10, n as u16);
                out[12..12 + n].copy_from_slice(&data[..n]);
            }
            Some(out)
        }
        UHID_SET_REPORT => {
            put_u32(&mut out, 0, UHID_SET_REPORT_REPLY);
            let size = usize::from(get_u16(ev, 10)).min(UHID_DATA_MAX);
            let data = &ev[12..12 + size];
            let ok = rtype == UHID_FEATURE_REPORT && dev.handle_set_feature(data).is_ok();
            if !ok {
                put_u16(&mut out, 8, EIO);
            }
            Some(out)
        }
        _ => None, // START, STOP, OPEN, CLOSE, OUTPUT: nothing to answer
    }
}

fn io_err(doing: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(n) => Error::from_errno(n, doing, e),
        None => Error::with_source(ErrorKind::Io, format!("{doing} failed"), e),
    }
}

impl UhidDevice {
    /// Creates the kernel device for `dev` and starts serving it. Needs write access to
    /// `/dev/uhid` (root) and the `uhid` kernel module.
    pub fn create(dev: EmulatedDevice) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/uhid")
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::with_source(
                    ErrorKind::NotFound,
                    "/dev/uhid does not exist: load the uhid module (`modprobe uhid`)",
                    e,
                ),
                _ => io_err("opening /dev/uhid", e),
            })?;
        file.write_all(&create2_event(&dev))
            .map_err(|e| io_err("creating the uhid device (UHID_CREATE2)", e))?;
        let file = Arc::new(file);
        let stop = Arc::new(AtomicBool::new(false));
        let (f2, s2) = (file.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("blinkstick-uhid".into())
            .spawn(move || serve(&f2, &s2, &dev))
            .map_err(|e| io_err("starting the uhid thread", e))?;
        Ok(UhidDevice {
            file,
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(file: &File, stop: &AtomicBool, dev: &EmulatedDevice) {
    let mut buf = vec![0u8; EVENT_SIZE];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n <= 0 {
            continue;
        }
        let mut f = file;
        match f.read(&mut buf) {
            Ok(len) if len >= 4 => {
                if let Some(reply) = answer(dev, &buf[..len.max(12)]) {
                    if f.write_all(&reply).is_err() {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Drop for UhidDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut ev = vec![0u8; EVENT_SIZE];
        put_u32(&mut ev, 0, UHID_DESTROY);
        let _ = (&*self.file).write_all(&ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Variant;

    #[test]
    fn create2_layout() {
        let dev = EmulatedDevice::new(Variant::Pro, "BS000002-2.0");
        let ev = create2_event(&dev);
        assert_eq!(ev.len(), EVENT_SIZE);
        assert_eq!(get_u32(&ev, 0), UHID_CREATE2);
        assert_eq!(&ev[4..18], b"BlinkStick Pro");
        assert_eq!(ev[18], 0);
        assert_eq!(&ev[196..208], b"BS000002-2.0");
        assert_eq!(get_u16(&ev, 260), 96);
        assert_eq!(get_u16(&ev, 262), BUS_USB);
        assert_eq!(get_u32(&ev, 264), 0x20A0);
        assert_eq!(get_u32(&ev, 268), 0x41E5);
        assert_eq!(&ev[280..376], &Variant::Pro.report_descriptor()[..]);
    }

    #[test]
    fn answers_set_and_get() {
        let dev = EmulatedDevice::new(Variant::Square, "BS000001-3.0");
        let mut ev = vec![0u8; EVENT_SIZE];
        put_u32(&mut ev, 0, UHID_SET_REPORT);
        put_u32(&mut ev, 4, 77);
        ev[8] = 1;
        ev[9] = UHID_FEATURE_REPORT;
        put_u16(&mut ev, 10, 4);
        ev[12..16].copy_from_slice(&[1, 9, 8, 7]);
        let r = answer(&dev, &ev).unwrap();
        assert_eq!(get_u32(&r, 0), UHID_SET_REPORT_REPLY);
        assert_eq!(get_u32(&r, 4), 77);
        assert_eq!(get_u16(&r, 8), 0);

        let mut ev = vec![0u8; EVENT_SIZE];
        put_u32(&mut ev, 0, UHID_GET_REPORT);
        put_u32(&mut ev, 4, 78);
        ev[8] = 1;
        let r = answer(&dev, &ev).unwrap();
        assert_eq!(get_u32(&r, 0), UHID_GET_REPORT_REPLY);
        assert_eq!(get_u32(&r, 4), 78);
        assert_eq!(get_u16(&r, 8), 0);
        assert_eq!(get_u16(&r, 10), 4);
        assert_eq!(&r[12..16], &[1, 9, 8, 7]);

        // report 5 cannot be read: an error reply
        ev[8] = 5;
        let r = answer(&dev, &ev).unwrap();
        assert_eq!(get_u16(&r, 8), EIO);
    }
}
