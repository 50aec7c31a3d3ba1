//! Small helpers for building USB gadgets in configfs (`/sys/kernel/config/usb_gadget`),
//! shared by the HID, FunctionFS and mass-storage gadgets.

use std::fs;
use std::io;
use std::path::Path;

/// Where configfs keeps USB gadgets.
pub(crate) const CONFIGFS: &str = "/sys/kernel/config/usb_gadget";

/// `e` with what was being done in front of it.
pub(crate) fn err(what: String, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Writes a configfs attribute, naming it in the error.
pub(crate) fn write(p: &Path, v: impl AsRef<[u8]>) -> io::Result<()> {
    fs::write(p, v).map_err(|e| err(format!("writing {}", p.display()), e))
}

/// Creates a configfs folder, naming it in the error.
pub(crate) fn mkdir(p: &Path) -> io::Result<()> {
    fs::create_dir(p).map_err(|e| err(format!("mkdir {}", p.display()), e))
}

/// The first USB device controller no gadget is bound to (dummy_hcd's `dummy_udc.0`, then
/// `dummy_udc.1`... in the guest, which loads it with `num=2`): its `function` attribute
/// names the bound gadget's driver and is empty while free.
pub(crate) fn first_udc() -> io::Result<String> {
    let mut udcs: Vec<String> = fs::read_dir("/sys/class/udc")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    udcs.sort();
    let free = |u: &String| {
        fs::read_to_string(Path::new("/sys/class/udc").join(u).join("function"))
            .map_or(true, |f| f.trim().is_empty())
    };
    udcs.iter()
        .find(|u| free(u))
        .or_else(|| udcs.first())
        .cloned()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no USB device controller in /sys/class/udc: load dummy_hcd",
            )
        })
}
