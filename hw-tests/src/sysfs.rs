//! Finding USB devices and block devices through sysfs (no libusb needed).

use std::fs;
use std::path::{Path, PathBuf};

/// A USB device as `/sys/bus/usb/devices/*` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDevice {
    /// The sysfs folder, e.g. `/sys/bus/usb/devices/1-1`.
    pub sysfs: PathBuf,
    /// idVendor.
    pub vendor: u16,
    /// idProduct.
    pub product_id: u16,
    /// bcdDevice.
    pub bcd_device: u16,
    /// The manufacturer string ("" if none).
    pub manufacturer: String,
    /// The product string ("" if none).
    pub product: String,
    /// The serial string ("" if none).
    pub serial: String,
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn read_hex(p: &Path) -> Option<u16> {
    u16::from_str_radix(&read_trim(p), 16).ok()
}

/// Every USB device (not interfaces) under `root` (normally `/sys/bus/usb/devices`).
pub fn usb_devices_in(root: &Path) -> Vec<UsbDevice> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<UsbDevice> = rd
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            Some(UsbDevice {
                vendor: read_hex(&p.join("idVendor"))?,
                product_id: read_hex(&p.join("idProduct"))?,
                bcd_device: read_hex(&p.join("bcdDevice")).unwrap_or(0),
                manufacturer: read_trim(&p.join("manufacturer")),
                product: read_trim(&p.join("product")),
                serial: read_trim(&p.join("serial")),
                sysfs: p,
            })
        })
        .collect();
    out.sort_by(|a, b| a.sysfs.cmp(&b.sysfs));
    out
}

/// Every attached BlinkStick (VID 0x20A0, PID 0x41E5).
pub fn blinksticks() -> Vec<UsbDevice> {
    usb_devices_in(Path::new("/sys/bus/usb/devices"))
        .into_iter()
        .filter(|d| d.vendor == blinkstick::VENDOR_ID && d.product_id == blinkstick::PRODUCT_ID)
        .collect()
}

/// What sysfs says about a whole-disk block device such as `/dev/sdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// `sdb`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether the kernel marks it removable.
    pub removable: bool,
    /// Whether it hangs off a USB bus.
    pub usb: bool,
    /// Vendor and model strings.
    pub model: String,
}

/// Looks up `/dev/NAME` (a whole disk, not a partition) in `/sys/class/block`.
pub fn block_device(dev: &Path) -> Option<BlockDevice> {
    let name = dev.file_name()?.to_str()?.to_string();
    let sys = Path::new("/sys/class/block").join(&name);
    if !sys.join("device").exists() {
        return None; // a partition or a virtual device
    }
    let real = fs::canonicalize(&sys).ok()?;
    Some(BlockDevice {
        size: read_trim(&sys.join("size")).parse::<u64>().ok()? * 512,
        removable: read_trim(&sys.join("removable")) == "1",
        usb: real
            .components()
            .any(|c| c.as_os_str().to_str().is_some_and(|s| s.starts_with("usb"))),
        model: format!(
            "{} {}",
            read_trim(&sys.join("device/vendor")),
            read_trim(&sys.join("device/model"))
        )
        .trim()
        .to_string(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_devices_in_reads_ids_strings_and_skips_interfaces() {
        let d = tempfile::tempdir().expect("tempdir");
        let dev = d.path().join("1-1");
        fs::create_dir(&dev).expect("mkdir");
        for (f, v) in [
            ("idVendor", "20a0\n"),
            ("idProduct", "41e5\n"),
            ("bcdDevice", "0202\n"),
            ("manufacturer", "Agile Innovative Ltd\n"),
            ("product", "BlinkStick Nano\n"),
            ("serial", "BS000042-3.0\n"),
        ] {
            fs::write(dev.join(f), v).expect("write");
        }
        fs::create_dir(d.path().join("1-1:1.0")).expect("interface dir");
        let devs = usb_devices_in(d.path());
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0].vendor, 0x20a0);
        assert_eq!(devs[0].bcd_device, 0x0202);
        assert_eq!(devs[0].manufacturer, "Agile Innovative Ltd");
        assert_eq!(devs[0].serial, "BS000042-3.0");
    }
}
