//! A USB HID device made by the kernel's gadget framework through configfs, attached to
//! the `dummy_hcd` virtual host controller: the host side of the same kernel enumerates
//! it as a real USB device (libusb, usbhid, hidraw all see it).
//!
//! Needs the modules `dummy_hcd`, `libcomposite`, `usb_f_hid` and configfs mounted on
//! `/sys/kernel/config` (the QEMU guest of `cargo xtask vm-test` has all of them).

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::configfs::{first_udc, mkdir, write, CONFIGFS};

/// What the gadget says about itself.
#[derive(Debug, Clone)]
pub struct GadgetSpec {
    /// idVendor.
    pub vendor: u16,
    /// idProduct.
    pub product_id: u16,
    /// bcdDevice.
    pub bcd_device: u16,
    /// Manufacturer string.
    pub manufacturer: String,
    /// Product string.
    pub product: String,
    /// Serial string.
    pub serial: String,
    /// The HID report descriptor.
    pub report_desc: Vec<u8>,
}

impl GadgetSpec {
    /// A BlinkStick: VID 0x20A0, PID 0x41E5, manufacturer "Agile Innovative Ltd".
    pub fn blinkstick(serial: &str, bcd_device: u16, product: &str, report_desc: &[u8]) -> Self {
        GadgetSpec {
            vendor: blinkstick::VENDOR_ID,
            product_id: blinkstick::PRODUCT_ID,
            bcd_device,
            manufacturer: "Agile Innovative Ltd".into(),
            product: product.into(),
            serial: serial.into(),
            report_desc: report_desc.to_vec(),
        }
    }
}

/// A gadget bound to the first UDC; unbound and removed on drop.
#[derive(Debug)]
pub struct UsbGadget {
    dir: PathBuf,
    hidg: PathBuf,
}

impl UsbGadget {
    /// Builds gadget `name` (a configfs folder name) from `spec` with one HID function
    /// without OUT endpoint (so SET_REPORT on endpoint 0 lands in `/dev/hidgN`), and
    /// binds it to the first UDC (`dummy_udc.0`).
    pub fn create(name: &str, spec: &GadgetSpec) -> io::Result<UsbGadget> {
        let root = Path::new(CONFIGFS);
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{CONFIGFS} is missing: load libcomposite and mount configfs on \
                     /sys/kernel/config (the vm-test guest does both)"
                ),
            ));
        }
        let udc = first_udc()?;
        let dir = root.join(name);
        mkdir(&dir)?;
        let mut g = UsbGadget {
            dir: dir.clone(),
            hidg: PathBuf::new(),
        };
        write(&dir.join("idVendor"), format!("0x{:04x}", spec.vendor))?;
        write(&dir.join("idProduct"), format!("0x{:04x}", spec.product_id))?;
        write(&dir.join("bcdDevice"), format!("0x{:04x}", spec.bcd_device))?;
        write(&dir.join("bcdUSB"), "0x0110")?;
        let strings = dir.join("strings/0x409");
        mkdir(&strings)?;
        write(&strings.join("manufacturer"), &spec.manufacturer)?;
        write(&strings.join("product"), &spec.product)?;
        write(&strings.join("serialnumber"), &spec.serial)?;
        let func = dir.join("functions/hid.usb0");
        mkdir(&func)?;
        write(&func.join("protocol"), "0")?;
        write(&func.join("subclass"), "0")?;
        write(&func.join("report_length"), "8")?;
        let no_out = func.join("no_out_endpoint");
        if no_out.exists() {
            write(&no_out, "1")?;
        }
        write(&func.join("report_desc"), &spec.report_desc)?;
        let config = dir.join("configs/c.1");
        mkdir(&config)?;
        write(&config.join("MaxPower"), "100")?;
        std::os::unix::fs::symlink(&func, config.join("hid.usb0"))?;
        write(&dir.join("UDC"), &udc)?;
        // The char device exists once the function is bound; devtmpfs names it.
        let dev = fs::read_to_string(func.join("dev"))?;
        g.hidg = char_device_node(dev.trim())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !g.hidg.exists() {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} did not appear after binding the gadget",
                        g.hidg.display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(g)
    }

    /// `/dev/hidgN` of this gadget's HID function.
    pub fn hidg(&self) -> &Path {
        &self.hidg
    }

    /// Waits up to `timeout` for the next report the host sent (SET_REPORT data, report
    /// id first). `Ok(None)` if nothing came.
    pub fn read_hidg(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.hidg)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd, count 1.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(None);
            }
            let mut buf = [0u8; 256];
            match f.read(&mut buf) {
                Ok(len) => return Ok(Some(buf[..len].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads every report already queued (returns when none arrives within 200 ms).
    pub fn drain_hidg(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while let Some(r) = self.read_hidg(Duration::from_millis(200))? {
            out.push(r);
        }
        Ok(out)
    }
}

/// `/dev/...` of the char device `major:minor`, from its uevent (devtmpfs names it).
fn char_device_node(majmin: &str) -> io::Result<PathBuf> {
    let path = format!("/sys/dev/char/{majmin}/uevent");
    let uevent = fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(|n| Path::new("/dev").join(n))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no DEVNAME for char device {majmin}"),
            )
        })
}

impl Drop for UsbGadget {
    fn drop(&mut self) {
        let d = &self.dir;
        let _ = fs::write(d.join("UDC"), "\n");
        let _ = fs::remove_file(d.join("configs/c.1/hid.usb0"));
        let _ = fs::remove_dir(d.join("configs/c.1/strings/0x409"));
        let _ = fs::remove_dir(d.join("configs/c.1"));
        let _ = fs::remove_dir(d.join("functions/hid.usb0"));
        let _ = fs::remove_dir(d.join("strings/0x409"));
        let _ = fs::remove_dir(d);
    }
}
