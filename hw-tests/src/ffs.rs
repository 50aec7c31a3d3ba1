//! A BlinkStick on a real USB bus that answers like the firmware: a FunctionFS gadget on
//! dummy_hcd whose endpoint-0 requests are served in userspace by the blinkstick crate's
//! firmware model ([`blinkstick::emulator::EmulatedDevice`]).
//!
//! Unlike configfs `f_hid` (which stalls class requests addressed to the device, and
//! answers GET_REPORT with zeros on Debian's 6.1 kernel), this gadget sees every control
//! request (`FUNCTIONFS_ALL_CTRL_RECIP`), so both hidapi (interface recipient, through
//! usbhid) and libusb with the device recipient the real firmware accepts get real
//! replies: colours can be read back.
//!
//! Needs the modules `dummy_hcd`, `libcomposite`, `usb_f_fs` and configfs (the vm-test
//! guest has them).

use blinkstick::emulator::EmulatedDevice;
use blinkstick::{Variant, PRODUCT_ID, VENDOR_ID};
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::configfs::{err, first_udc, mkdir, write, CONFIGFS};

// FunctionFS ABI (include/uapi/linux/usb/functionfs.h).
const DESCRIPTORS_MAGIC_V2: u32 = 3;
const STRINGS_MAGIC: u32 = 2;
const HAS_FS_DESC: u32 = 1;
const HAS_HS_DESC: u32 = 2;
const ALL_CTRL_RECIP: u32 = 64;
const EVENT_SETUP: u8 = 4;
const EVENT_SIZE: usize = 12;

/// A running FunctionFS BlinkStick; unbound and removed on drop.
pub struct FfsBlinkStick {
    dir: PathBuf,
    mountpoint: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    device: EmulatedDevice,
}

impl std::fmt::Debug for FfsBlinkStick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FfsBlinkStick({})", self.dir.display())
    }
}

/// The descriptors for full and high speed: one HID interface with its HID class
/// descriptor and an interrupt IN endpoint (unused, as on the real stick).
fn descriptors(report_desc_len: u16) -> Vec<u8> {
    let [lo, hi] = report_desc_len.to_le_bytes();
    let one_speed = |interval: u8| {
        let mut d = vec![9, 4, 0, 0, 1, 3, 0, 0, 0]; // interface: HID, 1 endpoint
        d.extend_from_slice(&[9, 0x21, 0x11, 0x01, 0, 1, 0x22, lo, hi]); // HID 1.11
        d.extend_from_slice(&[7, 5, 0x81, 3, 8, 0, interval]); // EP1 IN, interrupt, 8 bytes
        d
    };
    let fs_d = one_speed(10);
    let hs_d = one_speed(7);
    let mut out = Vec::new();
    let len = 20 + fs_d.len() + hs_d.len();
    for v in [
        DESCRIPTORS_MAGIC_V2,
        len as u32,
        HAS_FS_DESC | HAS_HS_DESC | ALL_CTRL_RECIP,
        3,
        3,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&fs_d);
    out.extend_from_slice(&hs_d);
    out
}

fn strings() -> Vec<u8> {
    let mut out = Vec::new();
    for v in [STRINGS_MAGIC, 16, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

impl FfsBlinkStick {
    /// Builds gadget `name` for `device` (its variant and serial give the product string
    /// and bcdDevice; `bcd_device` overrides the latter) and binds it to the first UDC.
    pub fn create(name: &str, device: EmulatedDevice, bcd_device: Option<u16>) -> io::Result<Self> {
        let info = device.info();
        let variant = device.with_firmware(|f| f.variant());
        let root = Path::new(CONFIGFS);
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{CONFIGFS} is missing: load libcomposite and mount configfs"),
            ));
        }
        let udc = first_udc()?;
        let dir = root.join(name);
        let mountpoint = std::env::temp_dir().join(format!("ffs-{name}"));
        mkdir(&dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut me = FfsBlinkStick {
            dir: dir.clone(),
            mountpoint: mountpoint.clone(),
            stop: stop.clone(),
            thread: None,
            device: device.clone(),
        };
        write(&dir.join("idVendor"), format!("0x{VENDOR_ID:04x}"))?;
        write(&dir.join("idProduct"), format!("0x{PRODUCT_ID:04x}"))?;
        let bcd = bcd_device.unwrap_or_else(|| variant.release());
        write(&dir.join("bcdDevice"), format!("0x{bcd:04x}"))?;
        write(&dir.join("bcdUSB"), "0x0200")?;
        let strings_dir = dir.join("strings/0x409");
        mkdir(&strings_dir)?;
        write(&strings_dir.join("manufacturer"), "Agile Innovative Ltd")?;
        write(&strings_dir.join("product"), variant.product_string())?;
        write(&strings_dir.join("serialnumber"), &info.serial)?;
        let func = dir.join(format!("functions/ffs.{name}"));
        mkdir(&func)?;
        let config = dir.join("configs/c.1");
        mkdir(&config)?;
        write(&config.join("MaxPower"), "100")?;
        std::os::unix::fs::symlink(&func, config.join(format!("ffs.{name}")))?;

        let _ = fs::create_dir_all(&mountpoint);
        let src = CString::new(name).map_err(|_| io::Error::other("NUL in name"))?;
        let target = CString::new(mountpoint.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("NUL in path"))?;
        let fstype = CString::new("functionfs").expect("no NUL");
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(err(
                format!(
                    "mounting functionfs on {} (is usb_f_fs loaded?)",
                    mountpoint.display()
                ),
                io::Error::last_os_error(),
            ));
        }
        let mut ep0 = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(mountpoint.join("ep0"))
            .map_err(|e| err("opening ep0".into(), e))?;
        let report_desc = variant.report_descriptor();
        ep0.write_all(&descriptors(report_desc.len() as u16))
            .map_err(|e| err("writing the FunctionFS descriptors".into(), e))?;
        ep0.write_all(&strings())
            .map_err(|e| err("writing the FunctionFS strings".into(), e))?;
        let dev = device.clone();
        me.thread = Some(std::thread::spawn(move || {
            serve(ep0, dev, variant, report_desc, stop)
        }));
        write(&dir.join("UDC"), &udc)?;
        Ok(me)
    }

    /// The emulated stick behind the gadget (its LEDs, mode, info blocks).
    pub fn device(&self) -> &EmulatedDevice {
        &self.device
    }
}

/// Waits up to 100 ms for ep0 to become readable.
fn readable(f: &fs::File) -> bool {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 100) > 0 }
}

/// The endpoint-0 loop: answers HID requests from the firmware model until `stop`.
fn serve(
    mut ep0: fs::File,
    dev: EmulatedDevice,
    variant: Variant,
    report_desc: Vec<u8>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = [0u8; EVENT_SIZE * 4];
    while !stop.load(Ordering::SeqCst) {
        if !readable(&ep0) {
            continue;
        }
        let n = match ep0.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        for ev in buf[..n].chunks_exact(EVENT_SIZE) {
            if ev[8] != EVENT_SETUP {
                continue;
            }
            let (rt, req) = (ev[0], ev[1]);
            let value = u16::from_le_bytes([ev[2], ev[3]]);
            let length = usize::from(u16::from_le_bytes([ev[6], ev[7]]));
            let _ = answer(
                &mut ep0,
                &dev,
                variant,
                &report_desc,
                rt,
                req,
                value,
                length,
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn answer(
    ep0: &mut fs::File,
    dev: &EmulatedDevice,
    variant: Variant,
    report_desc: &[u8],
    rt: u8,
    req: u8,
    value: u16,
    length: usize,
) -> io::Result<()> {
    let input = rt & 0x80 != 0;
    let reply = |ep0: &mut fs::File, mut data: Vec<u8>| {
        data.truncate(length);
        ep0.write_all(&data)
    };
    // A read on an IN request / a write on an OUT request stalls it.
    let stall = |ep0: &mut fs::File| {
        if input {
            let _ = ep0.read(&mut [0u8; 0]);
        } else {
            let _ = ep0.write(&[]);
        }
        Ok(())
    };
    match (rt & 0x60, req) {
        // Standard GET_DESCRIPTOR for the interface: HID (0x21) or report (0x22) descriptor.
        (0x00, 0x06) if input => match value >> 8 {
            0x22 => reply(ep0, report_desc.to_vec()),
            0x21 => {
                let [lo, hi] = (report_desc.len() as u16).to_le_bytes();
                reply(ep0, vec![9, 0x21, 0x11, 0x01, 0, 1, 0x22, lo, hi])
            }
            _ => stall(ep0),
        },
        // Class GET_REPORT (any recipient, as the V-USB firmware): the report id is the
        // low byte of wValue.
        (0x20, 0x01) if input => {
            let id = (value & 0xff) as u8;
            let data = dev.with_firmware(|f| f.handle_get_feature(id));
            if data.is_empty() {
                stall(ep0)
            } else {
                reply(ep0, data)
            }
        }
        // Class SET_REPORT: the data stage carries the report, id first.
        (0x20, 0x09) if !input => {
            let mut data = vec![0u8; length];
            ep0.read_exact(&mut data)?;
            let _ = dev.with_firmware(|f| f.handle_set_feature(&data));
            Ok(())
        }
        // SET_IDLE and other no-data OUT requests: acknowledge.
        (0x20, 0x0a) if !input => {
            let _ = ep0.read(&mut [0u8; 0])?;
            Ok(())
        }
        _ => {
            let _ = variant;
            stall(ep0)
        }
    }
}

impl Drop for FfsBlinkStick {
    fn drop(&mut self) {
        let d = &self.dir;
        let _ = fs::write(d.join("UDC"), "\n");
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(target) = CString::new(self.mountpoint.as_os_str().as_bytes()) {
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir(&self.mountpoint);
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = fs::remove_file(d.join(format!("configs/c.1/ffs.{name}")));
        let _ = fs::remove_dir(d.join("configs/c.1"));
        let _ = fs::remove_dir(d.join(format!("functions/ffs.{name}")));
        let _ = fs::remove_dir(d.join("strings/0x409"));
        let _ = fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_have_the_v2_header_and_two_speeds() {
        let d = descriptors(96);
        assert_eq!(u32::from_le_bytes(d[0..4].try_into().unwrap()), 3);
        assert_eq!(
            u32::from_le_bytes(d[4..8].try_into().unwrap()) as usize,
            d.len()
        );
        assert_eq!(u32::from_le_bytes(d[8..12].try_into().unwrap()), 1 | 2 | 64);
        // 9 + 9 + 7 bytes per speed
        assert_eq!(d.len(), 20 + 2 * 25);
        // the HID descriptor names a 96-byte report descriptor
        assert_eq!(
            &d[20 + 9..20 + 18],
            &[9, 0x21, 0x11, 0x01, 0, 1, 0x22, 96, 0]
        );
    }
}
