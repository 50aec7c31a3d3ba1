//! An in-memory BlinkStick: a model of the firmware ([`Firmware`]), a shared device
//! handle ([`EmulatedDevice`]) with LED inspection, a report log and fault injection,
//! and a bus ([`EmulatedBus`]) that implements [`Backend`] so a [`BlinkStick`](crate::BlinkStick)
//! can be opened, unplugged and reopened against it.
//!
//! ```
//! use std::sync::Arc;
//! use blinkstick::{emulator::{EmulatedBus, EmulatedDevice}, BlinkStick, Rgb, Selector, Variant};
//!
//! let dev = EmulatedDevice::new(Variant::Square, "BS000001-3.0");
//! let bus = EmulatedBus::new();
//! bus.plug(dev.clone());
//! let mut stick = BlinkStick::open_with(Arc::new(bus), &Selector::First)?;
//! stick.set_led(0, 1, Rgb::parse("green")?)?;
//! assert_eq!(dev.leds(0)[1], Rgb::new(0, 128, 0));
//! # Ok::<(), blinkstick::Error>(())
//! ```
//!
//! The firmware core is independent of any transport: feed it with
//! [`Firmware::handle_set_feature`] / [`Firmware::handle_get_feature`] from any kernel
//! interface (the `uhid` feature does so through `/dev/uhid`).

#[cfg(all(feature = "uhid", target_os = "linux"))]
pub mod uhid;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::anim::Clock;
use crate::color::Rgb;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Backend, DeviceInfo, Direction, Transport};
use crate::variant::{report_len, serial_version, Variant};

/// Length of a [`Firmware::snapshot`].
const STATE_LEN: usize = 3 + 192 + 3 * 64 * 3 + 64;

/// Why the firmware model refused a request (a USB STALL on the real device).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the emulated firmware stalls report {report_id:#04x}: {reason}")]
pub struct Stall {
    /// The report id.
    pub report_id: u8,
    /// Why.
    pub reason: &'static str,
}

/// The firmware state of one stick.
#[derive(Debug, Clone)]
pub struct Firmware {
    variant: Variant,
    serial: String,
    mode: u8,
    /// The shared 64-LED GRB buffer of frames.
    buffer: [u8; 192],
    leds: [[Rgb; 64]; 3],
    info: [[u8; 32]; 2],
    led_count: u8,
    swap_bug: bool,
    dark: bool,
}

impl Firmware {
    /// Factory state: all LEDs off, v3 devices in mode 2 (others 0), empty info blocks,
    /// a Flex with 32 LEDs. Serials `-1.1` to `-1.3` have the R/G-swap bug.
    pub fn new(variant: Variant, serial: &str) -> Self {
        let v3 = matches!(
            variant,
            Variant::Square | Variant::Strip | Variant::Nano | Variant::Flex
        );
        Firmware {
            variant,
            serial: serial.to_owned(),
            mode: if v3 { 2 } else { 0 },
            buffer: [0; 192],
            leds: [[Rgb::OFF; 64]; 3],
            info: [[0; 32]; 2],
            led_count: if variant == Variant::Flex { 32 } else { 0 },
            swap_bug: matches!(serial_version(serial), Some((1, 1..=3))),
            dark: false,
        }
    }

    /// The variant modelled.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The serial.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The HID report descriptor this device declares (for a kernel interface such as
    /// uhid or a USB gadget).
    pub fn report_descriptor(&self) -> Vec<u8> {
        self.variant.report_descriptor()
    }

    /// The current mode byte.
    pub fn mode(&self) -> u8 {
        self.mode
    }

    /// Whether the LEDs are dark until replug (a Nano set to mode 1).
    pub fn is_dark(&self) -> bool {
        self.dark
    }

    /// The colour of LED `index` on `channel` as the firmware drives it.
    pub fn led(&self, channel: u8, index: usize) -> Rgb {
        if self.dark {
            return Rgb::OFF;
        }
        self.leds[usize::from(channel.min(2))][index.min(63)]
    }

    /// The LEDs of `channel` (as many as the variant has; the Flex's configured count).
    pub fn leds(&self, channel: u8) -> Vec<Rgb> {
        let n = if self.variant == Variant::Flex {
            usize::from(self.led_count).min(32)
        } else {
            self.variant.max_leds()
        };
        (0..n).map(|i| self.led(channel, i)).collect()
    }

    /// An info block (1 or 2) as raw bytes.
    pub fn info_block(&self, n: u8) -> [u8; 32] {
        self.info[usize::from(n.clamp(1, 2) - 1)]
    }

    /// The configured LED count (Flex).
    pub fn led_count(&self) -> u8 {
        self.led_count
    }

    /// The whole state as bytes (for an emulated stick that outlives a process, such
    /// as the CLI's `BLINKSTICK_EMULATE_DIR`); [`restore`](Self::restore) reads it back.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(STATE_LEN);
        v.extend_from_slice(&[self.mode, self.led_count, u8::from(self.dark)]);
        v.extend_from_slice(&self.buffer);
        for ch in &self.leds {
            for c in ch {
                v.extend_from_slice(&[c.r, c.g, c.b]);
            }
        }
        v.extend_from_slice(&self.info[0]);
        v.extend_from_slice(&self.info[1]);
        v
    }

    /// Restores a [`snapshot`](Self::snapshot); `false` (state unchanged) when `bytes`
    /// is not one.
    pub fn restore(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() != STATE_LEN {
            return false;
        }
        self.mode = bytes[0];
        self.led_count = bytes[1];
        self.dark = bytes[2] != 0;
        let (buf, rest) = bytes[3..].split_at(192);
        self.buffer.copy_from_slice(buf);
        let (leds, info) = rest.split_at(3 * 64 * 3);
        for (i, c) in leds.chunks_exact(3).enumerate() {
            self.leds[i / 64][i % 64] = Rgb::new(c[0], c[1], c[2]);
        }
        self.info[0].copy_from_slice(&info[..32]);
        self.info[1].copy_from_slice(&info[32..]);
        true
    }

    /// What a replug does: the Nano's dark state ends; RAM (LEDs, frame buffer) clears.
    pub fn power_cycle(&mut self) {
        self.dark = false;
        self.buffer = [0; 192];
        self.leds = [[Rgb::OFF; 64]; 3];
    }

    fn single_channel(&self) -> bool {
        self.variant != Variant::Pro
    }

    fn frames_ignored(&self) -> bool {
        self.variant == Variant::Pro && self.mode != 2
    }

    /// Handles a SET_REPORT (feature) whose first byte is the report id.
    pub fn handle_set_feature(&mut self, data: &[u8]) -> Result<(), Stall> {
        let Some(&id) = data.first() else {
            return Err(Stall {
                report_id: 0,
                reason: "empty report",
            });
        };
        if !self.variant.supports_report(id) {
            return Err(Stall {
                report_id: id,
                reason: "not in this variant's report descriptor",
            });
        }
        let len = report_len(id).expect("supported ids have lengths");
        let mut d = data.to_vec();
        d.resize(len, 0);
        match id {
            1 => {
                let c = Rgb::new(d[1], d[2], d[3]);
                let cur = self.leds[0][0];
                if self.swap_bug && c != cur && c == Rgb::new(cur.g, cur.r, cur.b) {
                    return Ok(()); // the v1.1-1.3 bug: silently ignored
                }
                if self.mode == 3 && self.variant.has_frames() {
                    for i in 0..self.variant.max_leds() {
                        self.set_one(0, i, c);
                    }
                } else {
                    self.set_one(0, 0, c);
                }
            }
            2 | 3 => self.info[usize::from(id - 2)].copy_from_slice(&d[1..33]),
            4 => {
                self.mode = d[1];
                if self.variant == Variant::Nano && d[1] == 1 {
                    self.dark = true;
                }
            }
            5 => {
                if self.frames_ignored() {
                    return Ok(());
                }
                let ch = if self.single_channel() { 0 } else { d[1] };
                let idx = usize::from(d[2]);
                if ch < 3 && idx < self.variant.max_leds() {
                    self.set_one(ch, idx, Rgb::new(d[3], d[4], d[5]));
                }
            }
            6..=9 => {
                if self.frames_ignored() || (self.single_channel() && d[1] != 0) || d[1] > 2 {
                    return Ok(());
                }
                let n = (len - 2) / 3;
                self.buffer[..n * 3].copy_from_slice(&d[2..]);
                for i in 0..n.min(self.variant.max_leds()) {
                    let g = &self.buffer[3 * i..3 * i + 3];
                    self.leds[usize::from(d[1])][i] = Rgb::new(g[1], g[0], g[2]);
                }
            }
            0x81 => self.led_count = d[1],
            _ => unreachable!("filtered by supports_report"),
        }
        Ok(())
    }

    fn set_one(&mut self, ch: u8, i: usize, c: Rgb) {
        self.leds[usize::from(ch)][i] = c;
        self.buffer[3 * i..3 * i + 3].copy_from_slice(&[c.g, c.r, c.b]);
    }

    /// Handles a GET_REPORT (feature): the reply starts with the report id; empty when the
    /// report cannot be read (a stall).
    pub fn handle_get_feature(&mut self, report_id: u8) -> Vec<u8> {
        if !self.variant.supports_report(report_id) || report_id == 5 {
            return Vec::new();
        }
        let len = report_len(report_id).expect("supported");
        let mut r = vec![0u8; len];
        r[0] = report_id;
        match report_id {
            1 => {
                let c = self.leds[0][0];
                r[1..4].copy_from_slice(&[c.r, c.g, c.b]);
            }
            2 | 3 => r[1..].copy_from_slice(&self.info[usize::from(report_id - 2)]),
            4 => r[1] = self.mode,
            6..=9 => {
                let n = len - 2;
                r[2..].copy_from_slice(&self.buffer[..n]);
            }
            0x81 => r[1] = self.led_count,
            _ => {}
        }
        r
    }
}

/// One report in an [`EmulatedDevice`]'s log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Set (received by the device) or get (sent back).
    pub direction: Direction,
    /// The report, id first.
    pub data: Vec<u8>,
    /// The time on the device's clock, if one was set with [`EmulatedDevice::set_clock`].
    pub at: Option<Duration>,
}

struct State {
    fw: Firmware,
    log: Vec<LogEntry>,
    fail_next: u32,
    connected: bool,
    generation: u64,
    clock: Option<Arc<dyn Clock>>,
}

/// A shared handle to one emulated stick (clone it freely).
#[derive(Clone)]
pub struct EmulatedDevice {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for EmulatedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        write!(f, "EmulatedDevice({} {})", s.fw.variant, s.fw.serial)
    }
}

impl EmulatedDevice {
    /// A plugged-in emulated stick in factory state.
    pub fn new(variant: Variant, serial: &str) -> Self {
        EmulatedDevice {
            state: Arc::new(Mutex::new(State {
                fw: Firmware::new(variant, serial),
                log: Vec::new(),
                fail_next: 0,
                connected: true,
                generation: 0,
                clock: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the firmware state (to inspect or preset it).
    pub fn with_firmware<R>(&self, f: impl FnOnce(&mut Firmware) -> R) -> R {
        f(&mut self.lock().fw)
    }

    /// The device info it enumerates with (path `emu:<serial>`).
    pub fn info(&self) -> DeviceInfo {
        let s = self.lock();
        DeviceInfo {
            path: format!("emu:{}", s.fw.serial),
            serial: s.fw.serial.clone(),
            manufacturer: "Agile Innovative Ltd".into(),
            product: s.fw.variant.product_string().into(),
            release: s.fw.variant.release(),
        }
    }

    /// The LEDs of `channel` as the firmware drives them.
    pub fn leds(&self, channel: u8) -> Vec<Rgb> {
        self.lock().fw.leds(channel)
    }

    /// Every report received and answered, in order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.lock().log.clone()
    }

    /// Only the reports received (SET_REPORT), in order.
    pub fn sent_reports(&self) -> Vec<Vec<u8>> {
        self.lock()
            .log
            .iter()
            .filter(|e| e.direction == Direction::Sent)
            .map(|e| e.data.clone())
            .collect()
    }

    /// Empties the log.
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Timestamps log entries with `clock`.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.lock().clock = Some(clock);
    }

    /// The next `n` requests fail with [`ErrorKind::Busy`] (as a Pro does while it drives
    /// its LEDs) without reaching the firmware.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Unplugs: open transports fail with [`ErrorKind::Disconnected`] from now on, for good.
    pub fn unplug(&self) {
        self.lock().connected = false;
    }

    /// Plugs back in (a new enumeration: old transports stay dead; RAM state is lost).
    pub fn replug(&self) {
        let mut s = self.lock();
        s.connected = true;
        s.generation += 1;
        s.fw.power_cycle();
    }

    /// Whether it is plugged in.
    pub fn is_connected(&self) -> bool {
        self.lock().connected
    }

    /// Opens a transport to it directly (without a bus).
    pub fn transport(&self) -> EmulatedTransport {
        let generation = self.lock().generation;
        EmulatedTransport {
            info: self.info(),
            dev: self.clone(),
            generation,
        }
    }

    /// The SET_REPORT path shared by transports and the uhid bridge: logs, then asks the
    /// firmware.
    pub fn handle_set_feature(&self, data: &[u8]) -> Result<(), Stall> {
        let mut s = self.lock();
        let at = s.clock.as_ref().map(|c| c.now());
        s.log.push(LogEntry {
            direction: Direction::Sent,
            data: data.to_vec(),
            at,
        });
        s.fw.handle_set_feature(data)
    }

    /// The GET_REPORT path shared by transports and the uhid bridge.
    pub fn handle_get_feature(&self, report_id: u8) -> Vec<u8> {
        let mut s = self.lock();
        let r = s.fw.handle_get_feature(report_id);
        let at = s.clock.as_ref().map(|c| c.now());
        s.log.push(LogEntry {
            direction: Direction::Received,
            data: r.clone(),
            at,
        });
        r
    }

    fn gate(&self, generation: u64, what: &str) -> Result<()> {
        let mut s = self.lock();
        if !s.connected || s.generation != generation {
            return Err(Error::new(
                ErrorKind::Disconnected,
                format!(
                    "{what}: emulated BlinkStick {} was unplugged: plug it in again",
                    s.fw.serial
                ),
            ));
        }
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{what}: emulated BlinkStick {} is busy; retry shortly",
                    s.fw.serial
                ),
            ));
        }
        Ok(())
    }
}

/// A [`Transport`] to an [`EmulatedDevice`].
pub struct EmulatedTransport {
    dev: EmulatedDevice,
    info: DeviceInfo,
    generation: u64,
}

impl Transport for EmulatedTransport {
    fn set_feature_report(&mut self, data: &[u8]) -> Result<()> {
        let what = format!("sending report {}", data.first().copied().unwrap_or(0));
        self.dev.gate(self.generation, &what)?;
        self.dev
            .handle_set_feature(data)
            .map_err(|e| Error::with_source(ErrorKind::Io, format!("{what} failed"), e))
    }

    fn get_feature_report(&mut self, report_id: u8, len: usize) -> Result<Vec<u8>> {
        let what = format!("reading report {report_id}");
        self.dev.gate(self.generation, &what)?;
        let mut r = self.dev.handle_get_feature(report_id);
        if r.is_empty() {
            return Err(Error::with_source(
                ErrorKind::Io,
                format!("{what} failed"),
                Stall {
                    report_id,
                    reason: "not readable on this variant",
                },
            ));
        }
        r.truncate(len);
        Ok(r)
    }

    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }
}

/// A set of emulated sticks that implements [`Backend`].
#[derive(Clone, Default)]
pub struct EmulatedBus {
    devices: Arc<Mutex<Vec<EmulatedDevice>>>,
}

impl EmulatedBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a device (listed while it is connected).
    pub fn plug(&self, dev: EmulatedDevice) {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dev);
    }

    /// Parses `variant:serial[,variant:serial...]` (the CLI's `BLINKSTICK_EMULATE`),
    /// e.g. `square:BS000001-3.0,pro:BS000002-2.0`.
    pub fn from_spec(spec: &str) -> Result<Self> {
        let bus = EmulatedBus::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (v, serial) = item.split_once(':').ok_or_else(|| {
                Error::invalid(format!(
                    "`{item}` is not `variant:serial` (e.g. square:BS000001-3.0)"
                ))
            })?;
            bus.plug(EmulatedDevice::new(v.parse()?, serial));
        }
        Ok(bus)
    }

    /// The devices on the bus (connected or not).
    pub fn devices(&self) -> Vec<EmulatedDevice> {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Backend for EmulatedBus {
    fn list(&self) -> Result<Vec<DeviceInfo>> {
        Ok(self
            .devices()
            .iter()
            .filter(|d| d.is_connected())
            .map(|d| d.info())
            .collect())
    }

    fn open(&self, path: &str) -> Result<Box<dyn Transport>> {
        self.devices()
            .into_iter()
            .find(|d| d.is_connected() && d.info().path == path)
            .map(|d| Box::new(d.transport()) as Box<dyn Transport>)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no emulated BlinkStick at `{path}`"),
                )
            })
    }
}
