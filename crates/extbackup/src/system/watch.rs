//! `extbackup watch`: a udev monitor for configured drives, for systems without systemd
//! (where `extbackup install`'s `SYSTEMD_WANTS` has nobody to act on it).
//!
//! [`Watcher::run`] first listens, then enumerates the LUKS block devices already
//! present and calls back for each configured one, then calls back for each `add` event
//! of a block device whose `ID_FS_TYPE` is `crypto_LUKS` and whose `ID_FS_UUID` is
//! configured. It also calls back for a `change` event that shows a configured UUID on
//! a device not seen with it since its `add`: udevd may probe a new device before its
//! content is readable (measured in the QEMU guest: a new loop node's `add` sometimes
//! lacks `ID_FS_*`, the `change` that follows has them). Later `change` events of a known
//! device (udev sends one whenever a writer closes it) do not call back again, nor does
//! a `change` that transiently lacks the UUID forget the device: only `remove` does.
//! Before calling back for an event it lets the device settle: it waits (up
//! to [`Watcher::settle_timeout`]) until udevd's event queue is empty, so partitions
//! and `/dev/disk/by-uuid` links of the new drive are in place; no fixed sleep. The stop
//! flag is checked at least every 200 ms, also while settling.
//!
//! The callback runs on the watching thread (a backup run blocks further callbacks;
//! events that arrive meanwhile wait in the socket).
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use extbackup::system::watch::Watcher;
//! let stop = AtomicBool::new(false);
//! Watcher::new(["0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"])
//!     .run(&stop, |found| println!("{} at {}", found.uuid, found.devnode.display()))?;
//! # Ok::<(), extbackup::system::watch::WatchError>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the stop flag is looked at, at most.
pub const STOP_CHECK: Duration = Duration::from_millis(200);
/// udevd keeps this file while events are queued (systemd's `udev_queue_is_empty`).
const UDEV_QUEUE: &str = "/run/udev/queue";

/// A configured drive that is present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its LUKS UUID, as configured.
    pub uuid: String,
    /// The block device (`/dev/sdb1`).
    pub devnode: PathBuf,
    /// Its sysfs path.
    pub syspath: PathBuf,
    /// `true` when it was already there when watching started; `false` for an event.
    pub at_start: bool,
}

/// A watcher error (the orchestrator's one error, [`crate::Failure`]): udev could not be
/// set up, or waiting on it failed; the OS error is the source.
pub type WatchError = crate::Failure;

fn udev_err(what: &str) -> impl FnOnce(std::io::Error) -> WatchError + '_ {
    move |source| {
        WatchError::with(
            format!(
                "{what}: is systemd-udevd running? (`extbackup watch` needs udev's device \
                 database and events; install and start the `udev` package)"
            ),
            source,
        )
    }
}

/// Watches for configured LUKS drives. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Watcher {
    uuids: HashSet<String>,
    settle_timeout: Duration,
}

/// The configured UUID a device's properties name, if it is a LUKS device we want.
/// `prop` looks a udev property up.
pub fn wanted_uuid<'a>(
    uuids: &HashSet<String>,
    prop: impl Fn(&str) -> Option<&'a OsStr>,
) -> Option<String> {
    if prop("ID_FS_TYPE")? != "crypto_LUKS" {
        return None;
    }
    let uuid = prop("ID_FS_UUID")?.to_str()?.to_ascii_lowercase();
    uuids.contains(&uuid).then_some(uuid)
}

impl Watcher {
    /// Watches for these LUKS UUIDs (compared without regard to case).
    pub fn new<S: AsRef<str>>(uuids: impl IntoIterator<Item = S>) -> Self {
        Watcher {
            uuids: uuids
                .into_iter()
                .map(|u| u.as_ref().trim().to_ascii_lowercase())
                .collect(),
            settle_timeout: Duration::from_secs(30),
        }
    }

    /// How long to wait for udev to settle after an `add` before calling back anyway
    /// (default 30 s).
    pub fn settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    fn found(&self, dev: &udev::Device, at_start: bool) -> Option<Found> {
        let uuid = wanted_uuid(&self.uuids, |k| dev.property_value(k))?;
        Some(Found {
            uuid,
            devnode: dev.devnode()?.to_path_buf(),
            syspath: dev.syspath().to_path_buf(),
            at_start,
        })
    }

    /// Waits until udevd's queue is empty and `devnode` exists, or the timeout, or stop.
    /// Returns `false` when stopped.
    fn settle(&self, devnode: &Path, stop: &AtomicBool) -> bool {
        let until = Instant::now() + self.settle_timeout;
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let settled = !Path::new(UDEV_QUEUE).exists() && devnode.exists();
            if settled || Instant::now() >= until {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Watches until `stop` is set: calls `on_found` for each configured drive present at
    /// the start, then for each one plugged in. Returns `Ok` when stopped.
    pub fn run(&self, stop: &AtomicBool, on_found: impl FnMut(Found)) -> Result<(), WatchError> {
        self.run_notify(stop, || {}, on_found)
    }

    /// [`run`](Self::run), calling `on_ready` once the monitor listens (before the
    /// initial enumeration): a device added after that is not missed.
    pub fn run_notify(
        &self,
        stop: &AtomicBool,
        on_ready: impl FnOnce(),
        mut on_found: impl FnMut(Found),
    ) -> Result<(), WatchError> {
        // Listen first, then enumerate: a drive plugged in between is seen by both at
        // worst, never by neither.
        let socket = udev::MonitorBuilder::new()
            .and_then(|b| b.match_subsystem("block"))
            .and_then(|b| b.listen())
            .map_err(udev_err("opening a udev monitor for block devices"))?;
        on_ready();

        let mut en = udev::Enumerator::new().map_err(udev_err("enumerating block devices"))?;
        en.match_subsystem("block")
            .and_then(|()| en.match_property("ID_FS_TYPE", "crypto_LUKS"))
            .map_err(udev_err("enumerating block devices"))?;
        let present = en
            .scan_devices()
            .map_err(udev_err("enumerating block devices"))?;
        // Configured devices seen, by syspath, until their `remove`.
        let mut known: HashMap<PathBuf, String> = HashMap::new();
        for dev in present {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if let Some(f) = self.found(&dev, true) {
                known.insert(f.syspath.clone(), f.uuid.clone());
                on_found(f);
            }
        }

        while !stop.load(Ordering::Relaxed) {
            if !wait_readable(&socket, STOP_CHECK)? {
                continue;
            }
            for event in socket.iter() {
                let dev = event.device();
                let found = self.found(&dev, false);
                let uuid = found.as_ref().map(|f| f.uuid.as_str());
                if !decide(&mut known, event.event_type(), dev.syspath(), uuid) {
                    continue;
                }
                let Some(f) = found else { continue };
                if !self.settle(&f.devnode, stop) {
                    return Ok(());
                }
                on_found(f);
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Whether an event calls back, updating `known` (configured devices seen, by syspath):
/// every `add` of a configured device does; a `change` only when it shows a configured
/// UUID not known for that device; `remove` forgets the device.
fn decide(
    known: &mut HashMap<PathBuf, String>,
    event: udev::EventType,
    syspath: &Path,
    uuid: Option<&str>,
) -> bool {
    match (event, uuid) {
        (udev::EventType::Remove, _) => {
            known.remove(syspath);
            false
        }
        (udev::EventType::Add, Some(u)) => {
            known.insert(syspath.to_path_buf(), u.to_string());
            true
        }
        (udev::EventType::Change, Some(u)) => {
            known
                .insert(syspath.to_path_buf(), u.to_string())
                .as_deref()
                != Some(u)
        }
        _ => false,
    }
}

/// Polls `fd` for input for up to `timeout`; `Ok(true)` when readable.
fn wait_readable(fd: &impl AsFd, timeout: Duration) -> Result<bool, WatchError> {
    oskit::wait_readable(fd.as_fd(), timeout)
        .map_err(|e| WatchError::with("waiting for udev events", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, std::ffi::OsString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect()
    }

    #[test]
    fn wants_only_configured_luks_devices() {
        let w = Watcher::new(["0B1C-AA"]);
        let check = |p: &HashMap<String, std::ffi::OsString>| {
            wanted_uuid(&w.uuids, |k| p.get(k).map(|v| v.as_os_str()))
        };
        let luks = props(&[("ID_FS_TYPE", "crypto_LUKS"), ("ID_FS_UUID", "0b1c-aa")]);
        assert_eq!(check(&luks).as_deref(), Some("0b1c-aa"));
        let other = props(&[("ID_FS_TYPE", "crypto_LUKS"), ("ID_FS_UUID", "ffff")]);
        assert_eq!(check(&other), None);
        let ext4 = props(&[("ID_FS_TYPE", "ext4"), ("ID_FS_UUID", "0b1c-aa")]);
        assert_eq!(check(&ext4), None);
        assert_eq!(check(&props(&[("ID_FS_TYPE", "crypto_LUKS")])), None);
    }

    #[test]
    fn add_always_calls_back_change_only_when_new_remove_forgets() {
        use udev::EventType::{Add, Change, Remove};
        let mut known = HashMap::new();
        let sda1 = Path::new("/sys/block/sda/sda1");
        // add without the UUID (probed too early), then the change that shows it
        assert!(!decide(&mut known, Add, sda1, None));
        assert!(decide(&mut known, Change, sda1, Some("u1")));
        // writers closing the device: change events with the same UUID, or a transient
        // probe failure without it, do not call back again
        assert!(!decide(&mut known, Change, sda1, Some("u1")));
        assert!(!decide(&mut known, Change, sda1, None));
        assert!(!decide(&mut known, Change, sda1, Some("u1")));
        // unplug and plug in again: a new add calls back
        assert!(!decide(&mut known, Remove, sda1, None));
        assert!(decide(&mut known, Add, sda1, Some("u1")));
        // every add calls back (e.g. `udevadm trigger --action=add`)
        assert!(decide(&mut known, Add, sda1, Some("u1")));
        // reformatted with another configured UUID
        assert!(decide(&mut known, Change, sda1, Some("u2")));
        // a device that is not configured never calls back
        let sdb1 = Path::new("/sys/block/sdb/sdb1");
        assert!(!decide(&mut known, Add, sdb1, None));
        assert!(!decide(&mut known, Change, sdb1, None));
    }

    #[test]
    fn stops_when_asked_even_with_no_events() {
        // Netlink sockets work without udevd; with nothing configured nothing is found.
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            Watcher::new(["not-a-real-uuid"]).run_notify(
                &s2,
                || tx.send(()).unwrap(),
                |f| panic!("nothing is configured that exists, yet found {f:?}"),
            )
        });
        rx.recv().expect("the watcher became ready");
        stop.store(true, Ordering::Relaxed);
        t.join().expect("no panic").expect("stopped cleanly");
    }
}
