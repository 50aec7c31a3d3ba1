//! Emulated sticks whose state lives in files (`BLINKSTICK_EMULATE_DIR`), so several
//! processes see one stick, as they would a real one: each request locks
//! `DIR/<serial>.lock`, loads `DIR/<serial>.state` (factory state when missing), asks
//! the library's firmware model, and saves. With `BLINKSTICK_EMULATE_LOG=FILE` every
//! request is appended to FILE as `<unix ns> set|get <hex>` (the differential test
//! against the Python CLI compares these logs).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use blinkstick::emulator::{EmulatedDevice, Firmware};
use blinkstick::transport::hex;
use blinkstick::{Backend, DeviceInfo, Error, ErrorKind, Transport, Variant};

/// A bus of file-backed emulated sticks.
pub struct FileBus {
    sticks: Vec<(Variant, String)>,
    dir: PathBuf,
    log: Option<PathBuf>,
}

impl FileBus {
    /// `spec` as in `BLINKSTICK_EMULATE` (`variant:serial,...`), states under `dir`.
    pub fn new(spec: &str, dir: &Path, log: Option<PathBuf>) -> blinkstick::Result<Self> {
        let mut sticks = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (v, serial) = item.split_once(':').ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("`{item}` is not `variant:serial` (e.g. square:BS000001-3.0)"),
                )
            })?;
            sticks.push((v.parse()?, serial.to_owned()));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("creating the emulator directory {}", dir.display()),
                e,
            )
        })?;
        Ok(FileBus {
            sticks,
            dir: dir.to_owned(),
            log,
        })
    }
}

fn info(variant: Variant, serial: &str) -> DeviceInfo {
    DeviceInfo {
        path: format!("emu:{serial}"),
        ..EmulatedDevice::new(variant, serial).info()
    }
}

impl Backend for FileBus {
    fn list(&self) -> blinkstick::Result<Vec<DeviceInfo>> {
        Ok(self.sticks.iter().map(|(v, s)| info(*v, s)).collect())
    }

    fn open(&self, path: &str) -> blinkstick::Result<Box<dyn Transport>> {
        let (variant, serial) = self
            .sticks
            .iter()
            .find(|(v, s)| info(*v, s).path == path)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no emulated BlinkStick at `{path}`"),
                )
            })?;
        Ok(Box::new(FileTransport {
            info: info(*variant, serial),
            variant: *variant,
            dir: self.dir.clone(),
            log: self.log.clone(),
        }))
    }
}

struct FileTransport {
    info: DeviceInfo,
    variant: Variant,
    dir: PathBuf,
    log: Option<PathBuf>,
}

fn io(what: String, e: std::io::Error) -> Error {
    Error::with_source(ErrorKind::Io, what, e)
}

impl FileTransport {
    /// Runs `f` on the stick's firmware under its lock, saving the state afterwards.
    fn with_firmware<R>(&self, f: impl FnOnce(&mut Firmware) -> R) -> blinkstick::Result<R> {
        let serial = &self.info.serial;
        let lock_path = self.dir.join(format!("{serial}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(format!("opening {}", lock_path.display()), e))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is closed
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(
                format!("locking {}", lock_path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        let state_path = self.dir.join(format!("{serial}.state"));
        let mut fw = Firmware::new(self.variant, serial);
        if let Ok(bytes) = std::fs::read(&state_path) {
            fw.restore(&bytes);
        }
        let r = f(&mut fw);
        let tmp = self.dir.join(format!("{serial}.state.tmp"));
        std::fs::write(&tmp, fw.snapshot())
            .and_then(|()| std::fs::rename(&tmp, &state_path))
            .map_err(|e| io(format!("saving {}", state_path.display()), e))?;
        drop(lock);
        Ok(r)
    }

    fn record(&self, what: &str, data: &[u8]) -> blinkstick::Result<()> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| io(format!("opening {}", log.display()), e))?;
        writeln!(f, "{ns} {what} {}", hex(data).replace(' ', ""))
            .map_err(|e| io(format!("writing {}", log.display()), e))
    }
}

impl Transport for FileTransport {
    fn set_feature_report(&mut self, data: &[u8]) -> blinkstick::Result<()> {
        self.record("set", data)?;
        self.with_firmware(|fw| fw.handle_set_feature(data))?
            .map_err(|e| Error::with_source(ErrorKind::Io, "sending a report failed", e))
    }

    fn get_feature_report(&mut self, report_id: u8, len: usize) -> blinkstick::Result<Vec<u8>> {
        let mut r = self.with_firmware(|fw| fw.handle_get_feature(report_id))?;
        self.record("get", &[report_id])?;
        if r.is_empty() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("reading report {report_id} failed: the emulated stick stalls it"),
            ));
        }
        r.truncate(len);
        Ok(r)
    }

    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }
}
