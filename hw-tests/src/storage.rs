//! A USB drive made by the kernel: configfs `mass_storage` on dummy_hcd, backed by an
//! image file. The host side of the same kernel sees a real SCSI disk on a USB bus
//! (`/dev/sdX` through usb-storage), so the drive path can be tested as with a real stick.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::configfs::{first_udc, mkdir, write, CONFIGFS};

/// A USB mass-storage gadget; unbound and removed on drop.
#[derive(Debug)]
pub struct UsbDisk {
    dir: PathBuf,
    disk: PathBuf,
}

impl UsbDisk {
    /// Exposes `image` as a USB disk whose SCSI model is `model` (up to 16 characters)
    /// and waits (up to 20 s) for its `/dev/sdX`.
    pub fn create(name: &str, image: &Path, model: &str) -> io::Result<UsbDisk> {
        let udc = first_udc()?;
        let before = disks();
        let dir = Path::new(CONFIGFS).join(name);
        mkdir(&dir)?;
        let mut me = UsbDisk {
            dir: dir.clone(),
            disk: PathBuf::new(),
        };
        write(&dir.join("idVendor"), "0x1d6b")?;
        write(&dir.join("idProduct"), "0x0104")?;
        write(&dir.join("bcdUSB"), "0x0200")?;
        let strings = dir.join("strings/0x409");
        mkdir(&strings)?;
        write(&strings.join("manufacturer"), "extbackup tests")?;
        write(&strings.join("product"), "USB disk")?;
        write(&strings.join("serialnumber"), format!("EXTBK{name}"))?;
        let func = dir.join("functions/mass_storage.usb0");
        mkdir(&func)?;
        let lun = func.join("lun.0");
        write(&lun.join("removable"), "1")?;
        // vendor (8) + model (16) + revision (4)
        write(
            &lun.join("inquiry_string"),
            format!("{:<8}{:<16}{:<4}", "extbkp", model, "1.0"),
        )?;
        write(&lun.join("file"), image.as_os_str().as_encoded_bytes())?;
        let config = dir.join("configs/c.1");
        mkdir(&config)?;
        write(&config.join("MaxPower"), "100")?;
        std::os::unix::fs::symlink(&func, config.join("mass_storage.usb0"))?;
        write(&dir.join("UDC"), &udc)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let new: Vec<String> = disks()
                .into_iter()
                .filter(|d| !before.contains(d))
                .collect();
            if let Some(d) = new.into_iter().find(|d| {
                fs::read_to_string(format!("/sys/class/block/{d}/size"))
                    .is_ok_and(|s| s.trim() != "0")
            }) {
                me.disk = Path::new("/dev").join(d);
                if me.disk.exists() {
                    return Ok(me);
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no new /dev/sdX within 20 s of binding the mass-storage gadget \
                     (usb-storage and sd_mod loaded?)",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The disk, e.g. `/dev/sda`.
    pub fn disk(&self) -> &Path {
        &self.disk
    }
}

/// Whole SCSI disks (`sd*` without a partition number).
fn disks() -> Vec<String> {
    fs::read_dir("/sys/class/block")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("sd") && !n.ends_with(|c: char| c.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for UsbDisk {
    fn drop(&mut self) {
        let d = &self.dir;
        let _ = fs::write(d.join("UDC"), "\n");
        let _ = fs::remove_file(d.join("configs/c.1/mass_storage.usb0"));
        let _ = fs::remove_dir(d.join("configs/c.1"));
        let _ = fs::remove_dir(d.join("functions/mass_storage.usb0"));
        let _ = fs::remove_dir(d.join("strings/0x409"));
        let _ = fs::remove_dir(d);
    }
}
