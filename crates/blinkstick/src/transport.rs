//! The transport trait (feature reports on endpoint 0) and discovery of devices.
//!
//! Backends: `hidapi_backend::HidapiBackend` (feature `hidapi`, default),
//! `rusb_backend::RusbBackend` (feature `rusb`) and the in-memory
//! [`EmulatedBus`](crate::emulator::EmulatedBus). (No links to the first two: they exist
//! only with their features, and the docs must build with any set of features.)

use crate::error::Result;

/// What identifies a device, as enumeration reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// Backend-specific path (`/dev/hidraw3`, `usb:1-4`, `emu:BS000001-3.0`).
    pub path: String,
    /// Serial number, `BSnnnnnn-M.m`.
    pub serial: String,
    /// Manufacturer string (empty over uhid).
    pub manufacturer: String,
    /// Product string ("BlinkStick", "BlinkStick Nano", ...).
    pub product: String,
    /// `bcdDevice` (0 when the backend cannot know it, e.g. hidraw over uhid).
    pub release: u16,
}

/// One open device: HID feature reports in both directions. Object safe.
///
/// Reports are passed with their report-id byte first, as on the wire.
pub trait Transport: Send {
    /// Sends a feature report; `data[0]` is the report id.
    fn set_feature_report(&mut self, data: &[u8]) -> Result<()>;
    /// Reads feature report `report_id` of `len` bytes (id included); the reply starts
    /// with the report id.
    fn get_feature_report(&mut self, report_id: u8, len: usize) -> Result<Vec<u8>>;
    /// What the device said about itself when it was opened.
    fn device_info(&self) -> &DeviceInfo;
}

/// Finds and opens devices. Object safe; shared by a [`BlinkStick`](crate::BlinkStick)
/// so it can reopen its stick by serial after a replug.
pub trait Backend: Send + Sync {
    /// Every BlinkStick currently attached.
    fn list(&self) -> Result<Vec<DeviceInfo>>;
    /// Opens the device at `path` (as listed).
    fn open(&self, path: &str) -> Result<Box<dyn Transport>>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn set_feature_report(&mut self, data: &[u8]) -> Result<()> {
        (**self).set_feature_report(data)
    }
    fn get_feature_report(&mut self, report_id: u8, len: usize) -> Result<Vec<u8>> {
        (**self).get_feature_report(report_id, len)
    }
    fn device_info(&self) -> &DeviceInfo {
        (**self).device_info()
    }
}

/// The report id of an outgoing report (`data[0]`); an empty report is an
/// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) error, not a panic, for backends
/// that format the id into messages or request fields.
#[cfg_attr(not(any(feature = "hidapi", feature = "rusb")), allow(dead_code))]
pub(crate) fn report_id(data: &[u8], path: &str) -> Result<u8> {
    data.first().copied().ok_or_else(|| {
        crate::Error::invalid(format!(
            "an empty report for {path} has no report id: start it with the id (1 for a colour)"
        ))
    })
}

/// A hardware backend's SET_REPORT: `send` puts `data` on the wire (given its report id),
/// and `convert` maps its error, with what was being done, to ours.
#[cfg_attr(not(any(feature = "hidapi", feature = "rusb")), allow(dead_code))]
pub(crate) fn send_report<E>(
    data: &[u8],
    path: &str,
    send: impl FnOnce(u8) -> std::result::Result<(), E>,
    convert: impl FnOnce(E, &str) -> crate::Error,
) -> Result<()> {
    let id = report_id(data, path)?;
    send(id).map_err(|e| convert(e, &format!("sending report {id} to {path}")))
}

/// A hardware backend's GET_REPORT of `len` bytes: `read` fills the buffer and says how
/// many bytes came (the reply is cut to that), and `convert` maps its error to ours.
#[cfg_attr(not(any(feature = "hidapi", feature = "rusb")), allow(dead_code))]
pub(crate) fn read_report<E>(
    report_id: u8,
    len: usize,
    path: &str,
    read: impl FnOnce(&mut [u8]) -> std::result::Result<usize, E>,
    convert: impl FnOnce(E, &str) -> crate::Error,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = read(&mut buf)
        .map_err(|e| convert(e, &format!("reading report {report_id} from {path}")))?;
    buf.truncate(n);
    Ok(buf)
}

/// Direction of a traced report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host to device (SET_REPORT).
    Sent,
    /// Device to host (GET_REPORT reply).
    Received,
}

/// Formats a report as lower-case hex bytes separated by spaces.
pub fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 3);
    for (i, b) in data.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A transport that hands every report sent and received to a callback (the CLI's
/// `--trace`), then passes it on.
pub struct Traced<T> {
    inner: T,
    hook: TraceFn,
}

type TraceFn = Box<dyn FnMut(Direction, &[u8]) + Send>;

impl<T: Transport> Traced<T> {
    /// Wraps `inner`, calling `hook` for each report.
    pub fn new(inner: T, hook: impl FnMut(Direction, &[u8]) + Send + 'static) -> Self {
        Traced {
            inner,
            hook: Box::new(hook),
        }
    }
}

impl<T: Transport> Transport for Traced<T> {
    fn set_feature_report(&mut self, data: &[u8]) -> Result<()> {
        (self.hook)(Direction::Sent, data);
        self.inner.set_feature_report(data)
    }
    fn get_feature_report(&mut self, report_id: u8, len: usize) -> Result<Vec<u8>> {
        let r = self.inner.get_feature_report(report_id, len)?;
        (self.hook)(Direction::Received, &r);
        Ok(r)
    }
    fn device_info(&self) -> &DeviceInfo {
        self.inner.device_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::EmulatedDevice;
    use crate::Variant;
    use std::sync::{Arc, Mutex};

    #[test]
    fn empty_report_has_no_id() {
        assert_eq!(report_id(&[6, 0], "p").unwrap(), 6);
        let e = report_id(&[], "/dev/hidraw3").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("/dev/hidraw3"), "{e}");
    }

    #[test]
    fn traced_sees_both_directions_and_passes_on() {
        let dev = EmulatedDevice::new(Variant::Square, "BS000001-3.0");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut t = Traced::new(dev.transport(), move |d, r| {
            s2.lock().unwrap().push(format!("{d:?} {}", hex(r)))
        });
        t.set_feature_report(&[1, 0xab, 2, 3]).unwrap();
        assert_eq!(t.get_feature_report(1, 4).unwrap(), vec![1, 0xab, 2, 3]);
        assert_eq!(t.device_info().serial, "BS000001-3.0");
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["Sent 01 ab 02 03", "Received 01 ab 02 03"]
        );
        assert_eq!(dev.sent_reports(), vec![vec![1, 0xab, 2, 3]]);
    }
}
