//! The libusb transport (rusb): HID class requests with **device** recipient
//! (bmRequestType 0x20 set / 0xA0 get, bRequest 0x09 / 0x01, wValue = 0x03nn), which
//! reach the stick without detaching the kernel's `usbhid` driver.

use std::time::Duration;

use rusb::{Context, DeviceHandle, UsbContext};

use crate::error::{Error, ErrorKind, Result};
use crate::transport::{read_report, send_report, Backend, DeviceInfo, Transport};
use crate::variant::{PRODUCT_ID, VENDOR_ID};

const TIMEOUT: Duration = Duration::from_secs(1);

/// Discovery and opening through libusb.
pub struct RusbBackend {
    ctx: Context,
}

impl RusbBackend {
    /// Initialises libusb.
    pub fn new() -> Result<Self> {
        let ctx = Context::new().map_err(|e| convert(e, "initialising libusb"))?;
        Ok(RusbBackend { ctx })
    }

    fn find(&self) -> Result<Vec<(rusb::Device<Context>, String)>> {
        let devs = self
            .ctx
            .devices()
            .map_err(|e| convert(e, "enumerating USB devices"))?;
        let mut out = Vec::new();
        for d in devs.iter() {
            let Ok(desc) = d.device_descriptor() else {
                continue;
            };
            if desc.vendor_id() == VENDOR_ID && desc.product_id() == PRODUCT_ID {
                let path = format!("usb:{:03}:{:03}", d.bus_number(), d.address());
                out.push((d, path));
            }
        }
        Ok(out)
    }
}

fn info_of(d: &rusb::Device<Context>, h: &DeviceHandle<Context>, path: &str) -> DeviceInfo {
    let desc = d.device_descriptor().ok();
    let s = |i: Option<u8>| {
        i.and_then(|i| h.read_string_descriptor_ascii(i).ok())
            .unwrap_or_default()
    };
    DeviceInfo {
        path: path.to_owned(),
        serial: s(desc.as_ref().and_then(|d| d.serial_number_string_index())),
        manufacturer: s(desc.as_ref().and_then(|d| d.manufacturer_string_index())),
        product: s(desc.as_ref().and_then(|d| d.product_string_index())),
        release: desc
            .map(|d| {
                // back to bcdDevice (rusb decodes the major's two BCD digits to decimal)
                let v = d.device_version();
                let major = u16::from(v.major());
                (major / 10) << 12
                    | (major % 10) << 8
                    | u16::from(v.minor()) << 4
                    | u16::from(v.sub_minor())
            })
            .unwrap_or(0),
    }
}

impl Backend for RusbBackend {
    fn list(&self) -> Result<Vec<DeviceInfo>> {
        let mut out = Vec::new();
        for (d, path) in self.find()? {
            match d.open() {
                Ok(h) => out.push(info_of(&d, &h, &path)),
                // listed without strings when we may not open it; opening reports why
                Err(_) => out.push(DeviceInfo {
                    path,
                    ..DeviceInfo::default()
                }),
            }
        }
        Ok(out)
    }

    fn open(&self, path: &str) -> Result<Box<dyn Transport>> {
        let (d, path) = self
            .find()?
            .into_iter()
            .find(|(_, p)| p == path)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no BlinkStick at {path}: list them with `blinkstick --list`"),
                )
            })?;
        let h = d
            .open()
            .map_err(|e| convert(e, &format!("opening {path}")))?;
        let info = info_of(&d, &h, &path);
        Ok(Box::new(RusbTransport { h, info }))
    }
}

/// An open stick through libusb.
pub struct RusbTransport {
    h: DeviceHandle<Context>,
    info: DeviceInfo,
}

impl Transport for RusbTransport {
    fn set_feature_report(&mut self, data: &[u8]) -> Result<()> {
        let send = |id| {
            let value = 0x0300 | u16::from(id);
            self.h
                .write_control(0x20, 0x09, value, 0, data, TIMEOUT)
                .map(drop)
        };
        send_report(data, &self.info.path, send, convert)
    }

    fn get_feature_report(&mut self, report_id: u8, len: usize) -> Result<Vec<u8>> {
        let value = 0x0300 | u16::from(report_id);
        let read = |buf: &mut [u8]| self.h.read_control(0xA0, 0x01, value, 0, buf, TIMEOUT);
        read_report(report_id, len, &self.info.path, read, convert)
    }

    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }
}

fn convert(e: rusb::Error, doing: &str) -> Error {
    use crate::error::libc_errno::*;
    let errno = match e {
        rusb::Error::Access => EACCES,
        rusb::Error::NoDevice | rusb::Error::NotFound => ENODEV,
        rusb::Error::Pipe => EPIPE,
        rusb::Error::Timeout => ETIMEDOUT,
        rusb::Error::Busy => EBUSY,
        rusb::Error::Io => EIO,
        _ => 0,
    };
    if errno == 0 {
        Error::with_source(ErrorKind::Io, format!("{doing} failed"), e)
    } else {
        Error::from_errno(errno, doing, e)
    }
}
