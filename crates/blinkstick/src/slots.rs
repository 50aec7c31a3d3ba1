//! One LED, many jobs: named slots in a shared folder, the LED showing the most severe.
//!
//! Each job (a backup run, a script through `blinkstick --slot NAME --state STATE`) owns
//! a slot: a small file `<dir>/<name>.slot` with its state and its owner (pid and the
//! process's start time, so a reused pid is not mistaken for the owner). The LED shows
//! the most severe state of all slots: failure > attention > working > success; no slot
//! at all turns it off.
//!
//! - A failure stays until acknowledged: the same slot's next success, or
//!   [`SlotsGuard::ack`] (`blinkstick --slot NAME --ack`, `extbackup ack NAME`). A new
//!   `working` on a failed slot keeps the failure showing.
//! - A `working` or `attention` slot whose owner has died is removed the next time
//!   anyone reads the slots, so a killed job does not stay "working" forever;
//!   [`wait_for_exit`] lets a small watcher process re-render the LED as soon as the
//!   owner dies. A success stays until replaced (it is the last word on that job).
//! - Whoever changes a slot recomputes the LED and renders it while holding the folder's
//!   lock ([`Slots::lock`], an `flock` on `<dir>/.lock`), so two jobs never interleave;
//!   no daemon is involved.
//! - How the state is shown (channel, LED, limit, a colour per state) is kept beside the
//!   slots ([`SlotsGuard::set_display`]), so every writer renders it the same way.
//!
//! ```
//! use blinkstick::slots::{Owner, SlotState, Slots};
//! let dir = std::env::temp_dir().join(format!("slots-doc-{}", std::process::id()));
//! let slots = Slots::new(&dir);
//! let mut g = slots.lock()?;
//! g.set("nas-backup", SlotState::Working, Owner::current()?)?;
//! g.set("offsite-a", SlotState::Failure, Owner::current()?)?;
//! assert_eq!(g.shown()?, Some(SlotState::Failure));
//! g.set("offsite-a", SlotState::Working, Owner::current()?)?; // a rerun: still red
//! assert_eq!(g.shown()?, Some(SlotState::Failure));
//! assert!(g.ack("offsite-a")?);
//! assert_eq!(g.shown()?, Some(SlotState::Working));
//! # drop(g); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), blinkstick::Error>(())
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::color::Rgb;
use crate::device::BlinkStick;
use crate::error::{Error, ErrorKind, Result};

/// Where slots live unless `BLINKSTICK_SLOTS_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/run/blinkstick/slots";

/// The environment variable that moves the slots folder (tests, non-root users).
pub const DIR_ENV: &str = "BLINKSTICK_SLOTS_DIR";

/// A job's state, in order of severity (`Ord`: success < working < attention < failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotState {
    /// Done and fine.
    Success,
    /// Running.
    Working,
    /// Needs a look.
    Attention,
    /// Failed: stays until acknowledged.
    Failure,
}

impl SlotState {
    /// The word used in slot files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Success => "success",
            SlotState::Working => "working",
            SlotState::Attention => "attention",
            SlotState::Failure => "failure",
        }
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SlotState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "success" => SlotState::Success,
            "working" => SlotState::Working,
            "attention" => SlotState::Attention,
            "failure" => SlotState::Failure,
            _ => {
                return Err(Error::invalid(format!(
                    "`{s}` is not a slot state: use working, success, attention or failure"
                )))
            }
        })
    }
}

/// The process that owns a slot: its pid and start time (clock ticks after boot, field
/// 22 of `/proc/PID/stat`), so a pid reused by another process does not count as alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time of that process.
    pub start: u64,
}

fn io_err(what: String, e: std::io::Error) -> Error {
    let kind = match e.kind() {
        std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Io,
    };
    Error::with_source(kind, what, e)
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) may hold spaces and parentheses: count after the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Owner {
    /// This process.
    pub fn current() -> Result<Owner> {
        Owner::of(std::process::id())
    }

    /// The process `pid` (as it is now).
    pub fn of(pid: u32) -> Result<Owner> {
        let start = start_time(pid).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("process {pid} does not exist (no /proc/{pid}/stat)"),
            )
        })?;
        Ok(Owner { pid, start })
    }

    /// The parent of this process (a script calling the `blinkstick` command).
    pub fn parent() -> Result<Owner> {
        // SAFETY: getppid has no preconditions
        let ppid = unsafe { libc::getppid() };
        Owner::of(ppid as u32)
    }

    /// Whether the process still runs (same pid, same start time, not a zombie).
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next();
        let start = f.nth(18).and_then(|s| s.parse::<u64>().ok());
        state != Some("Z") && start == Some(self.start)
    }
}

/// One slot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Its name (a job, a drive).
    pub name: String,
    /// The last state set.
    pub state: SlotState,
    /// A failure not yet acknowledged (kept through later `working` states).
    pub unacked_failure: bool,
    /// Who set it.
    pub owner: Owner,
    /// When, in seconds since the Unix epoch.
    pub updated: u64,
}

impl Slot {
    /// What the slot shows: failure while one is unacknowledged, else its state.
    pub fn shown(&self) -> SlotState {
        if self.unacked_failure {
            SlotState::Failure
        } else {
            self.state
        }
    }

    fn to_text(&self) -> String {
        format!(
            "state={}\nunacked_failure={}\npid={}\nstart={}\nupdated={}\n",
            self.state,
            u8::from(self.unacked_failure),
            self.owner.pid,
            self.owner.start,
            self.updated
        )
    }

    fn parse(name: &str, text: &str) -> Option<Slot> {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
        };
        Some(Slot {
            name: name.to_owned(),
            state: get("state")?.parse().ok()?,
            unacked_failure: get("unacked_failure")? == "1",
            owner: Owner {
                pid: get("pid")?.parse().ok()?,
                start: get("start")?.parse().ok()?,
            },
            updated: get("updated")?.parse().ok()?,
        })
    }
}

/// Checks a slot name: 1-64 of letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{name}` is not a slot name: use 1-64 letters, digits, `.`, `_` or `-` \
             (e.g. nas-backup)"
        )))
    }
}

/// How the shown state is drawn: which LED, the brightness limit, a colour per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Display {
    /// Channel of the LED.
    pub channel: u8,
    /// Index of the LED (LED 0 on a stick that has fewer).
    pub index: u8,
    /// Brightness limit in percent, as `--limit`.
    pub limit: u8,
    /// Colour while working (the seed's `33c280`).
    pub working: Rgb,
    /// Colour on success.
    pub success: Rgb,
    /// Colour for attention.
    pub attention: Rgb,
    /// Colour on failure.
    pub failure: Rgb,
}

impl Default for Display {
    /// The seed's setup: LED 1 of channel 0, limit 10 %, `33c280` working, green, orange,
    /// red (as extbackup's indicator defaults).
    fn default() -> Self {
        Display {
            channel: 0,
            index: 1,
            limit: 10,
            working: Rgb::from_u32(0x33c280),
            success: Rgb::from_u32(0x008000),
            attention: Rgb::from_u32(0xffa500),
            failure: Rgb::from_u32(0xff0000),
        }
    }
}

impl Display {
    /// The colour for `shown` (off when no slot is set), limit applied.
    pub fn color(&self, shown: Option<SlotState>) -> Rgb {
        let c = match shown {
            None => return Rgb::OFF,
            Some(SlotState::Success) => self.success,
            Some(SlotState::Working) => self.working,
            Some(SlotState::Attention) => self.attention,
            Some(SlotState::Failure) => self.failure,
        };
        c.limited(self.limit)
    }

    /// Draws `shown` on `stick` (LED 0 if the stick has no LED `index`).
    pub fn render(&self, stick: &mut BlinkStick, shown: Option<SlotState>) -> Result<()> {
        let leds = stick.variant().max_leds();
        let index = if usize::from(self.index) >= leds {
            0
        } else {
            self.index
        };
        stick.set_led(self.channel, index, self.color(shown))
    }

    fn to_text(self) -> String {
        format!(
            "channel={}\nindex={}\nlimit={}\nworking={}\nsuccess={}\nattention={}\nfailure={}\n",
            self.channel,
            self.index,
            self.limit,
            self.working,
            self.success,
            self.attention,
            self.failure
        )
    }

    fn parse(text: &str) -> Option<Display> {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
        };
        Some(Display {
            channel: get("channel")?.parse().ok()?,
            index: get("index")?.parse().ok()?,
            limit: get("limit")?.parse().ok()?,
            working: Rgb::parse(get("working")?).ok()?,
            success: Rgb::parse(get("success")?).ok()?,
            attention: Rgb::parse(get("attention")?).ok()?,
            failure: Rgb::parse(get("failure")?).ok()?,
        })
    }
}

/// The slots folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    dir: PathBuf,
}

impl Slots {
    /// Slots in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Slots { dir: dir.into() }
    }

    /// `$BLINKSTICK_SLOTS_DIR`, else [`DEFAULT_DIR`].
    pub fn from_env() -> Self {
        Slots::new(
            std::env::var_os(DIR_ENV).map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from),
        )
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the folder's lock (waits for it): while the guard lives, nobody else changes
    /// a slot or renders the LED.
    pub fn lock(&self) -> Result<SlotsGuard> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            io_err(
                format!("creating the slots folder {}", self.dir.display()),
                e,
            )
        })?;
        let path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own; the lock goes with the file
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(
                format!("locking {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(SlotsGuard {
            dir: self.dir.clone(),
            _lock: file,
        })
    }
}

/// The slots folder, locked. Dropping it releases the lock.
#[derive(Debug)]
pub struct SlotsGuard {
    dir: PathBuf,
    _lock: File,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl SlotsGuard {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.slot"))
    }

    fn write(&self, slot: &Slot) -> Result<()> {
        let path = self.path(&slot.name);
        let tmp = self.dir.join(format!(".{}.tmp", slot.name));
        std::fs::write(&tmp, slot.to_text())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| io_err(format!("writing {}", path.display()), e))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(format!("removing {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// One slot, if set.
    pub fn get(&self, name: &str) -> Result<Option<Slot>> {
        check_name(name)?;
        let path = self.path(name);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Slot::parse(name, &t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("reading {}", path.display()), e)),
        }
    }

    /// Sets slot `name` to `state`, owned by `owner`. A failure stays (unacknowledged)
    /// through later `working` and `attention` states; `success` clears it.
    pub fn set(&mut self, name: &str, state: SlotState, owner: Owner) -> Result<()> {
        let old = self.get(name)?;
        let unacked_failure = match state {
            SlotState::Failure => true,
            SlotState::Success => false,
            _ => old.is_some_and(|s| s.unacked_failure),
        };
        self.write(&Slot {
            name: name.to_owned(),
            state,
            unacked_failure,
            owner,
            updated: now_secs(),
        })
    }

    /// Acknowledges slot `name`'s failure: the slot goes (or, if its job is still working,
    /// shows working again). Returns whether there was a failure to acknowledge.
    pub fn ack(&mut self, name: &str) -> Result<bool> {
        let Some(mut s) = self.get(name)? else {
            return Ok(false);
        };
        let had = s.shown() == SlotState::Failure;
        if s.state == SlotState::Failure || (s.state == SlotState::Working && !s.owner.is_alive()) {
            self.remove(name)?;
        } else {
            s.unacked_failure = false;
            self.write(&s)?;
        }
        Ok(had)
    }

    /// The job is done with slot `name`: it goes, unless it holds an unacknowledged
    /// failure (which stays until acknowledged).
    pub fn clear(&mut self, name: &str) -> Result<()> {
        match self.get(name)? {
            Some(mut s) if s.unacked_failure => {
                s.state = SlotState::Failure;
                self.write(&s)
            }
            _ => self.remove(name),
        }
    }

    /// Every slot, by name. `working` and `attention` slots whose owner died are removed
    /// on the way (their job will never report again); a failure stays until
    /// acknowledged, a success until replaced.
    pub fn slots(&mut self) -> Result<Vec<Slot>> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| io_err(format!("reading {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".slot")) else {
                continue;
            };
            if check_name(name).is_err() {
                continue;
            }
            let Some(s) = self.get(name)? else { continue };
            if matches!(s.state, SlotState::Working | SlotState::Attention) && !s.owner.is_alive() {
                if s.unacked_failure {
                    let mut f = s.clone();
                    f.state = SlotState::Failure;
                    self.write(&f)?;
                    out.push(f);
                } else {
                    self.remove(name)?;
                }
                continue;
            }
            out.push(s);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The most severe state shown by any slot; `None` when no slot is set (LED off).
    pub fn shown(&mut self) -> Result<Option<SlotState>> {
        Ok(self.slots()?.iter().map(Slot::shown).max())
    }

    /// How the LED is drawn, as last saved (else the default).
    pub fn display(&self) -> Display {
        std::fs::read_to_string(self.dir.join("display"))
            .ok()
            .and_then(|t| Display::parse(&t))
            .unwrap_or_default()
    }

    /// Saves how the LED is drawn, for every later writer.
    pub fn set_display(&mut self, d: &Display) -> Result<()> {
        let path = self.dir.join("display");
        let tmp = self.dir.join(".display.tmp");
        std::fs::write(&tmp, d.to_text())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| io_err(format!("writing {}", path.display()), e))
    }

    /// Computes the shown state and draws it on `stick` with the saved display; returns
    /// what was shown.
    pub fn render(&mut self, stick: &mut BlinkStick) -> Result<Option<SlotState>> {
        let shown = self.shown()?;
        self.display().render(stick, shown)?;
        Ok(shown)
    }
}

/// Waits until `owner` has exited (a pidfd when the kernel has them, else polling every
/// `poll`). For a watcher process that re-renders the LED when a job dies.
pub fn wait_for_exit(owner: &Owner, poll: Duration) {
    if !owner.is_alive() {
        return;
    }
    // SAFETY: pidfd_open(pid, 0) returns a new descriptor or -1; closed below
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, owner.pid as libc::c_int, 0) };
    if fd >= 0 {
        let fd = fd as libc::c_int;
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // the start time was checked above: this pidfd refers to the owner
        if owner.is_alive() {
            // SAFETY: one valid pollfd; -1 waits until the process exits
            while unsafe { libc::poll(&mut p, 1, -1) } < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
            }
        }
        // SAFETY: we own fd
        unsafe { libc::close(fd) };
    }
    while owner.is_alive() {
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> Slots {
        let d = std::env::temp_dir().join(format!("slots-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Slots::new(d)
    }

    #[test]
    fn severity_order_and_ack() {
        let s = tmp("order");
        let me = Owner::current().unwrap();
        let mut g = s.lock().unwrap();
        assert_eq!(g.shown().unwrap(), None);
        g.set("a", SlotState::Success, me).unwrap();
        g.set("b", SlotState::Working, me).unwrap();
        assert_eq!(g.shown().unwrap(), Some(SlotState::Working));
        g.set("c", SlotState::Attention, me).unwrap();
        assert_eq!(g.shown().unwrap(), Some(SlotState::Attention));
        g.set("a", SlotState::Failure, me).unwrap();
        assert_eq!(g.shown().unwrap(), Some(SlotState::Failure));
        // a rerun of `a` keeps the failure showing; its success clears it
        g.set("a", SlotState::Working, me).unwrap();
        assert_eq!(g.get("a").unwrap().unwrap().shown(), SlotState::Failure);
        g.set("a", SlotState::Success, me).unwrap();
        assert_eq!(g.shown().unwrap(), Some(SlotState::Attention));
        g.set("b", SlotState::Failure, me).unwrap();
        assert!(g.ack("b").unwrap());
        assert!(!g.ack("b").unwrap());
        assert_eq!(g.get("b").unwrap(), None);
        drop(g);
        std::fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn dead_owner_working_slot_goes_failure_stays() {
        let s = tmp("dead");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let owner = Owner::of(child.id()).unwrap_or(Owner {
            pid: child.id(),
            start: 1,
        });
        child.wait().unwrap();
        assert!(!owner.is_alive());
        let mut g = s.lock().unwrap();
        g.set("gone", SlotState::Working, owner).unwrap();
        g.set("failed", SlotState::Failure, owner).unwrap();
        assert_eq!(
            g.slots()
                .unwrap()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["failed"]
        );
        assert_eq!(g.get("gone").unwrap(), None);
        drop(g);
        std::fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("nas-backup").is_ok());
        assert!(check_name("offsite_a.2").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        let d = Display {
            channel: 1,
            index: 3,
            limit: 50,
            ..Display::default()
        };
        assert_eq!(Display::parse(&d.to_text()), Some(d));
        assert_eq!(d.color(None), Rgb::OFF);
        assert_eq!(
            d.color(Some(SlotState::Failure)),
            Rgb::new(255, 0, 0).limited(50)
        );
    }
}
