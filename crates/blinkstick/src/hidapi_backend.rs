//! The hidapi transport (hidraw on Linux): feature reports through `/dev/hidrawN`.

use std::ffi::CString;
use std::sync::Mutex;

use hidapi::{HidApi, HidDevice, HidError};

use crate::error::{Error, ErrorKind, Result};
use crate::transport::{read_report, send_report, Backend, DeviceInfo, Transport};
use crate::variant::{PRODUCT_ID, VENDOR_ID};

/// Discovery and opening through hidapi.
pub struct HidapiBackend {
    api: Mutex<HidApi>,
}

impl HidapiBackend {
    /// Initialises hidapi.
    pub fn new() -> Result<Self> {
        let api = HidApi::new().map_err(|e| convert(e, "initialising hidapi"))?;
        Ok(HidapiBackend {
            api: Mutex::new(api),
        })
    }
}

impl Backend for HidapiBackend {
    fn list(&self) -> Result<Vec<DeviceInfo>> {
        let mut api = self.api.lock().unwrap_or_else(|p| p.into_inner());
        api.refresh_devices()
            .map_err(|e| convert(e, "enumerating HID devices"))?;
        let mut out: Vec<DeviceInfo> = api
            .device_list()
            .filter(|d| d.vendor_id() == VENDOR_ID && d.product_id() == PRODUCT_ID)
            .map(|d| DeviceInfo {
                path: d.path().to_string_lossy().into_owned(),
                serial: d.serial_number().unwrap_or_default().to_owned(),
                manufacturer: d.manufacturer_string().unwrap_or_default().to_owned(),
                product: d.product_string().unwrap_or_default().to_owned(),
                release: d.release_number(),
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        Ok(out)
    }

    fn open(&self, path: &str) -> Result<Box<dyn Transport>> {
        let info = self
            .list()?
            .into_iter()
            .find(|d| d.path == path)
            .unwrap_or_else(|| DeviceInfo {
                path: path.to_owned(),
                ..DeviceInfo::default()
            });
        let c = CString::new(path)
            .map_err(|_| Error::invalid(format!("device path `{path}` contains a NUL byte")))?;
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner());
        let dev = api
            .open_path(&c)
            .map_err(|e| convert(e, &format!("opening {path}")))?;
        Ok(Box::new(HidapiTransport { dev, info }))
    }
}

/// An open stick through hidapi.
pub struct HidapiTransport {
    dev: HidDevice,
    info: DeviceInfo,
}

impl Transport for HidapiTransport {
    fn set_feature_report(&mut self, data: &[u8]) -> Result<()> {
        let send = |_| self.dev.send_feature_report(data);
        send_report(data, &self.info.path, send, convert)
    }

    fn get_feature_report(&mut self, report_id: u8, len: usize) -> Result<Vec<u8>> {
        let read = |buf: &mut [u8]| {
            // hidapi takes the report id in the buffer's first byte.
            buf[0] = report_id;
            self.dev.get_feature_report(buf)
        };
        read_report(report_id, len, &self.info.path, read, convert)
    }

    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }
}

/// Maps a hidapi error to ours, classifying by errno where one is known.
fn convert(e: HidError, doing: &str) -> Error {
    let errno = match &e {
        HidError::IoError { error } => error.raw_os_error(),
        HidError::HidApiError { message } => errno_in_message(message),
        _ => None,
    };
    match errno {
        Some(n) => Error::from_errno(n, doing, e),
        None => Error::with_source(ErrorKind::Io, format!("{doing} failed"), e),
    }
}

/// hidapi's C backend reports `strerror` text: map the usual ones back to errno values.
fn errno_in_message(m: &str) -> Option<i32> {
    use crate::error::libc_errno::*;
    let table = [
        ("Permission denied", EACCES),
        ("Operation not permitted", EPERM),
        ("No such device", ENODEV),
        ("No such file", ENOENT),
        ("Broken pipe", EPIPE),
        ("timed out", ETIMEDOUT),
        ("temporarily unavailable", EAGAIN),
        ("Input/output error", EIO),
        ("busy", EBUSY),
        ("Protocol error", EPROTO),
    ];
    table.iter().find(|(s, _)| m.contains(s)).map(|&(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidapi_messages_classified() {
        let e = convert(
            HidError::HidApiError {
                message: "Permission denied".into(),
            },
            "opening /dev/hidraw0",
        );
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        let e = convert(
            HidError::HidApiError {
                message: "ioctl (GFEATURE): Broken pipe".into(),
            },
            "x",
        );
        assert_eq!(e.kind(), ErrorKind::Busy);
        let e = convert(
            HidError::IoError {
                error: std::io::Error::from_raw_os_error(19),
            },
            "x",
        );
        assert_eq!(e.kind(), ErrorKind::Disconnected);
    }
}
