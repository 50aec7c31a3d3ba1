//! [`BlinkStick`]: an open stick, every report of the protocol, retries and reopening.

use std::sync::Arc;
use std::time::Duration;

use crate::color::Rgb;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Backend, DeviceInfo, Direction, Transport};
use crate::variant::{report_len, serial_version, Variant};

/// The firmware modes (report 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 0: normal (PWM = 255 - v on the v1/Pro analog outputs).
    Normal,
    /// 1: inverse, for common-anode strips (PWM = v). A Nano goes dark until replugged.
    Inverse,
    /// 2: WS2812 (the v3 default; the Pro needs it for reports 5-9).
    Ws2812,
    /// 3: WS2812 mirror: the report-1 colour goes to every LED.
    Ws2812Mirror,
}

impl Mode {
    /// The byte sent in report 4.
    pub fn as_byte(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::Inverse => 1,
            Mode::Ws2812 => 2,
            Mode::Ws2812Mirror => 3,
        }
    }

    /// The mode for a byte, `None` above 3.
    pub fn from_byte(b: u8) -> Option<Mode> {
        Some(match b {
            0 => Mode::Normal,
            1 => Mode::Inverse,
            2 => Mode::Ws2812,
            3 => Mode::Ws2812Mirror,
            _ => return None,
        })
    }

    /// A warning to show before setting this mode on `variant`, if it is a bad idea
    /// (mode 1 turns a Nano dark until it is replugged).
    pub fn warning_for(self, variant: Variant) -> Option<&'static str> {
        (self == Mode::Inverse && variant == Variant::Nano).then_some(
            "mode 1 (inverse) makes a BlinkStick Nano go dark until it is replugged; \
             set mode 2 to undo it",
        )
    }
}

/// How a [`BlinkStick`] retries transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first included); at least 1.
    pub tries: u32,
    /// Pause between attempts.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries, 20 ms apart, as the other drivers do.
    fn default() -> Self {
        RetryPolicy {
            tries: 5,
            delay: Duration::from_millis(20),
        }
    }
}

/// Which stick to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The first one listed.
    First,
    /// The one with this serial.
    Serial(String),
    /// The one at this backend path (`/dev/hidraw3`).
    Path(String),
}

type TraceHook = Arc<dyn Fn(&str, Direction, &[u8]) + Send + Sync>;

/// An open BlinkStick.
///
/// Every request goes through the retry policy: transient failures ([`ErrorKind::Busy`])
/// are retried; on [`ErrorKind::Disconnected`] the stick is reopened by serial (when it
/// was opened through a [`Backend`]) and the request repeated.
pub struct BlinkStick {
    transport: Box<dyn Transport>,
    info: DeviceInfo,
    variant: Variant,
    backend: Option<Arc<dyn Backend>>,
    retry: RetryPolicy,
    swap_workaround: bool,
    trace: Option<TraceHook>,
}

impl std::fmt::Debug for BlinkStick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlinkStick")
            .field("info", &self.info)
            .field("variant", &self.variant)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "hidapi")]
impl BlinkStick {
    fn hidapi() -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(crate::hidapi_backend::HidapiBackend::new()?))
    }

    /// Every BlinkStick attached (through hidapi).
    pub fn list() -> Result<Vec<DeviceInfo>> {
        Self::hidapi()?.list()
    }

    /// Opens the first BlinkStick found (through hidapi).
    pub fn open_first() -> Result<Self> {
        Self::open_with(Self::hidapi()?, &Selector::First)
    }

    /// Opens the BlinkStick with this serial (through hidapi).
    pub fn open_serial(serial: &str) -> Result<Self> {
        Self::open_with(Self::hidapi()?, &Selector::Serial(serial.to_owned()))
    }

    /// Opens the BlinkStick at this hidraw path (through hidapi).
    pub fn open_path(path: &str) -> Result<Self> {
        Self::open_with(Self::hidapi()?, &Selector::Path(path.to_owned()))
    }
}

impl BlinkStick {
    /// Opens the stick `selector` picks among those `backend` lists; the backend is kept
    /// to reopen the stick by serial after a replug.
    pub fn open_with(backend: Arc<dyn Backend>, selector: &Selector) -> Result<Self> {
        let list = backend.list()?;
        let found = match selector {
            Selector::First => list.first(),
            Selector::Serial(s) => list.iter().find(|d| &d.serial == s),
            Selector::Path(p) => list.iter().find(|d| &d.path == p),
        };
        let Some(info) = found else {
            let what = match selector {
                Selector::First => "no BlinkStick found: plug one in (`blinkstick --list` \
                                    shows what is attached)"
                    .to_owned(),
                Selector::Serial(s) => format!(
                    "no BlinkStick with serial `{s}` ({} attached: {}); check the serial with \
                     `blinkstick --list`",
                    list.len(),
                    list.iter()
                        .map(|d| d.serial.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Selector::Path(p) => {
                    format!("no BlinkStick at `{p}`: check the path with `blinkstick --list`")
                }
            };
            return Err(Error::new(ErrorKind::NotFound, what));
        };
        let transport = backend.open(&info.path)?;
        let mut stick = Self::from_transport(transport);
        // enumeration may know more than the open device (e.g. the release number)
        if stick.info.serial.is_empty() {
            stick.info = info.clone();
            stick.variant = detect_or_default(&stick.info);
        }
        stick.backend = Some(backend);
        Ok(stick)
    }

    /// Opens every stick `backend` lists, each with its own result.
    pub fn open_all_with(backend: Arc<dyn Backend>) -> Result<Vec<Result<Self>>> {
        let list = backend.list()?;
        Ok(list
            .iter()
            .map(|d| Self::open_with(backend.clone(), &Selector::Path(d.path.clone())))
            .collect())
    }

    /// Wraps an already open transport (no reopening after a replug). The variant is
    /// detected from the device info (see [`Variant::detect`]); if nothing fits it is
    /// [`Variant::BlinkStick`] (reports 1-3 only): override with [`set_variant`](Self::set_variant).
    pub fn from_transport(transport: Box<dyn Transport>) -> Self {
        let info = transport.device_info().clone();
        let variant = detect_or_default(&info);
        let swap_workaround = matches!(serial_version(&info.serial), Some((1, 1..=3)));
        BlinkStick {
            transport,
            info,
            variant,
            backend: None,
            retry: RetryPolicy::default(),
            swap_workaround,
            trace: None,
        }
    }

    /// What the device said about itself.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Its serial number.
    pub fn serial(&self) -> &str {
        &self.info.serial
    }

    /// The variant (detected, or as set by [`set_variant`](Self::set_variant)).
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Overrides the detected variant.
    pub fn set_variant(&mut self, variant: Variant) {
        self.variant = variant;
    }

    /// Sets the retry policy (tests use zero delay).
    pub fn set_retry_policy(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// Whether the v1.1-1.3 R/G-swap workaround is on (it is for serials `-1.1` to `-1.3`).
    pub fn swap_workaround(&self) -> bool {
        self.swap_workaround
    }

    /// Turns the R/G-swap workaround on or off.
    pub fn set_swap_workaround(&mut self, on: bool) {
        self.swap_workaround = on;
    }

    /// Calls `hook(serial, direction, report)` for every report sent and received
    /// (the CLI's `--trace`); survives reopening.
    pub fn set_trace(&mut self, hook: impl Fn(&str, Direction, &[u8]) + Send + Sync + 'static) {
        self.trace = Some(Arc::new(hook));
    }

    /// Reopens the stick by serial through its backend (after a replug).
    pub fn reopen(&mut self) -> Result<()> {
        let Some(backend) = self.backend.clone() else {
            return Err(Error::new(
                ErrorKind::Disconnected,
                format!(
                    "BlinkStick {} is gone and cannot be reopened (it was not opened through \
                     a backend): open it again",
                    self.info.serial
                ),
            ));
        };
        let serial = self.info.serial.clone();
        let info = backend
            .list()?
            .into_iter()
            .find(|d| d.serial == serial)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Disconnected,
                    format!("BlinkStick {serial} was unplugged: plug it in again"),
                )
            })?;
        self.transport = backend.open(&info.path)?;
        self.info.path = info.path;
        Ok(())
    }

    fn with_retry<R>(&mut self, mut op: impl FnMut(&mut dyn Transport) -> Result<R>) -> Result<R> {
        let tries = self.retry.tries.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match op(self.transport.as_mut()) {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            if attempt >= tries {
                return Err(err);
            }
            match err.kind() {
                ErrorKind::Busy => {}
                ErrorKind::Disconnected => {
                    if self.backend.is_none() {
                        return Err(err);
                    }
                    if let Err(e) = self.reopen() {
                        if e.kind() != ErrorKind::Disconnected {
                            return Err(e);
                        }
                    }
                }
                _ => return Err(err),
            }
            std::thread::sleep(self.retry.delay);
        }
    }

    fn require(&self, report_id: u8, what: &str) -> Result<()> {
        if self.variant.supports_report(report_id) {
            Ok(())
        } else {
            Err(Error::unsupported(format!(
                "{what} is not supported by a {} (no report {report_id:#04x})",
                self.variant.description()
            )))
        }
    }

    /// Sends a raw feature report (`data[0]` = report id), with retries.
    pub fn send_report(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Err(Error::invalid("an empty report has no report id"));
        }
        if let Some(t) = &self.trace {
            t(&self.info.serial, Direction::Sent, data);
        }
        self.with_retry(|t| t.set_feature_report(data))
    }

    /// Reads a raw feature report, with retries; checks the id and length of the reply.
    pub fn read_report(&mut self, report_id: u8) -> Result<Vec<u8>> {
        let len = report_len(report_id)
            .ok_or_else(|| Error::invalid(format!("unknown report id {report_id:#04x}")))?;
        let r = self.with_retry(|t| t.get_feature_report(report_id, len))?;
        if let Some(t) = &self.trace {
            t(&self.info.serial, Direction::Received, &r);
        }
        if r.len() < len || r[0] != report_id {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "report {report_id} from {} came back malformed ({} bytes, id {:?}): \
                     is this really a BlinkStick?",
                    self.info.path,
                    r.len(),
                    r.first()
                ),
            ));
        }
        Ok(r)
    }

    // ---- report 1 -----------------------------------------------------------------

    /// Sets LED 0 of channel 0 (report 1), with the v1.1-1.3 R/G-swap workaround when on.
    pub fn set_color(&mut self, c: Rgb) -> Result<()> {
        if self.swap_workaround && c.r != c.g {
            let cur = self.color()?;
            if cur.r == c.g && cur.g == c.r && cur.b == c.b {
                let step = if cur.r > 0 {
                    Rgb::new(cur.r - 1, cur.g, cur.b)
                } else {
                    Rgb::new(cur.r, cur.g - 1, cur.b)
                };
                self.send_report(&[1, step.r, step.g, step.b])?;
            }
        }
        self.send_report(&[1, c.r, c.g, c.b])
    }

    /// Reads LED 0 of channel 0 (report 1).
    pub fn color(&mut self) -> Result<Rgb> {
        let r = self.read_report(1)?;
        Ok(Rgb::new(r[1], r[2], r[3]))
    }

    // ---- indexed LEDs -------------------------------------------------------------

    fn check_led(&self, channel: u8, index: u8) -> Result<()> {
        if channel >= self.variant.channels() {
            return Err(Error::invalid(format!(
                "channel {channel} does not exist on a {} (it has {})",
                self.variant.description(),
                self.variant.channels()
            )));
        }
        if usize::from(index) >= self.variant.max_leds() {
            return Err(Error::invalid(format!(
                "LED index {index} does not exist on a {} (indexes 0..{})",
                self.variant.description(),
                self.variant.max_leds()
            )));
        }
        Ok(())
    }

    /// Sets one LED: report 1 for channel 0 index 0 (as the Python library does),
    /// report 5 otherwise. A Pro ignores report 5 unless it is in [`Mode::Ws2812`]
    /// (the request succeeds, the LED does not change): set that mode once.
    pub fn set_led(&mut self, channel: u8, index: u8, c: Rgb) -> Result<()> {
        self.check_led(channel, index)?;
        if channel == 0 && index == 0 {
            return self.set_color(c);
        }
        self.require(5, "setting an indexed LED")?;
        self.send_report(&[5, channel, index, c.r, c.g, c.b])
    }

    /// Reads one LED back: report 1 for index 0 of channel 0, else the smallest frame
    /// holding `index` (frames carry GRB; this returns RGB).
    pub fn led(&mut self, channel: u8, index: u8) -> Result<Rgb> {
        self.check_led(channel, index)?;
        if channel == 0 && index == 0 {
            return self.color();
        }
        let f = self.frame(usize::from(index) + 1)?;
        Ok(f[usize::from(index)])
    }

    // ---- frames -------------------------------------------------------------------

    /// The frame report id for `leds` LEDs (smallest that holds them), `None` above 64.
    pub fn frame_report_for(leds: usize) -> Option<u8> {
        // by LED count, not `leds * 3` bytes: that product overflows for absurd counts
        Some(match leds {
            0..=8 => 6,
            9..=16 => 7,
            17..=32 => 8,
            33..=64 => 9,
            _ => return None,
        })
    }

    /// Sets LEDs `0..colors.len()` of `channel` in one frame report (6-9, the smallest
    /// that fits, zero-padded; GRB order on the wire), so the rest of that report's LEDs
    /// turn off. A Pro ignores frames unless it is in [`Mode::Ws2812`].
    pub fn set_frame(&mut self, channel: u8, colors: &[Rgb]) -> Result<()> {
        let id = Self::frame_report_for(colors.len()).ok_or_else(|| {
            Error::invalid(format!(
                "a frame holds at most 64 LEDs, not {}",
                colors.len()
            ))
        })?;
        self.require(id, "a frame of LEDs")?;
        if channel >= self.variant.channels() {
            return Err(Error::invalid(format!(
                "channel {channel} does not exist on a {}",
                self.variant.description()
            )));
        }
        let mut data = vec![0u8; report_len(id).expect("frame id")];
        data[0] = id;
        data[1] = channel;
        for (i, c) in colors.iter().enumerate() {
            data[2 + 3 * i..5 + 3 * i].copy_from_slice(&[c.g, c.r, c.b]);
        }
        self.send_report(&data)
    }

    /// Reads back the first `leds` LEDs of the shared frame buffer (RGB order).
    pub fn frame(&mut self, leds: usize) -> Result<Vec<Rgb>> {
        let id = Self::frame_report_for(leds)
            .ok_or_else(|| Error::invalid(format!("a frame holds at most 64 LEDs, not {leds}")))?;
        self.require(id, "reading a frame")?;
        let r = self.read_report(id)?;
        Ok(r[2..]
            .chunks_exact(3)
            .take(leds)
            .map(|g| Rgb::new(g[1], g[0], g[2]))
            .collect())
    }

    /// How many LEDs a channel drives: the Flex's configured count, else the variant's.
    pub fn leds_per_channel(&mut self) -> Result<usize> {
        if self.variant.has_led_count() {
            Ok(usize::from(self.led_count()?).min(self.variant.max_leds()))
        } else {
            Ok(self.variant.max_leds())
        }
    }

    /// Sets every LED of `channel` to `c` in one frame report (report 1 on a v1 stick).
    pub fn set_channel(&mut self, channel: u8, c: Rgb) -> Result<()> {
        if !self.variant.has_frames() {
            return self.set_color(c);
        }
        let n = self.leds_per_channel()?.max(1);
        self.set_frame(channel, &vec![c; n])
    }

    /// Turns off every LED of the stick: report 1, then one frame per channel.
    pub fn all_off(&mut self) -> Result<()> {
        self.send_report(&[1, 0, 0, 0])?;
        if self.variant.has_frames() {
            let n = self.leds_per_channel()?.max(1);
            for ch in 0..self.variant.channels() {
                self.set_frame(ch, &vec![Rgb::OFF; n])?;
            }
        }
        Ok(())
    }

    // ---- mode, info blocks, LED count ---------------------------------------------

    /// Reads the mode (report 4). A byte above 3 is reported as an I/O error.
    pub fn mode(&mut self) -> Result<Mode> {
        self.require(4, "the mode")?;
        let b = self.read_report(4)?[1];
        Mode::from_byte(b).ok_or_else(|| {
            Error::new(
                ErrorKind::Io,
                format!("the stick reports an unknown mode {b}"),
            )
        })
    }

    /// Sets the mode (report 4; persisted in EEPROM on a Pro). Check
    /// [`Mode::warning_for`] first: mode 1 turns a Nano dark.
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        self.require(4, "setting the mode")?;
        self.send_report(&[4, mode.as_byte()])
    }

    fn info_block(&mut self, id: u8) -> Result<String> {
        let r = self.read_report(id)?;
        let text = &r[1..];
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        // Latin-1, one byte per character, as the Python library reads it (`chr(b)`)
        Ok(text[..end].iter().map(|&b| char::from(b)).collect())
    }

    fn set_info_block(&mut self, id: u8, text: &str) -> Result<()> {
        // Latin-1, one byte per character, as the Python library writes it (`ord(c)`)
        let bytes = text
            .chars()
            .map(u8::try_from)
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| {
                Error::invalid(format!(
                    "info block {} holds Latin-1 text (one byte per character, as the \
                     Python tool writes it); `{text}` has a character beyond U+00FF",
                    id - 1
                ))
            })?;
        if bytes.len() > 32 {
            return Err(Error::invalid(format!(
                "info block {} holds 32 characters; `{text}` has {}",
                id - 1,
                bytes.len()
            )));
        }
        let mut data = [0u8; 33];
        data[0] = id;
        data[1..1 + bytes.len()].copy_from_slice(&bytes);
        self.send_report(&data)
    }

    /// Reads info block 1 ("name", report 2) as text up to the first NUL, one
    /// character per byte (Latin-1, as the Python library reads it).
    pub fn info_block1(&mut self) -> Result<String> {
        self.info_block(2)
    }

    /// Writes info block 1 (at most 32 Latin-1 characters, one byte each, NUL-padded;
    /// stored in EEPROM). A character beyond U+00FF is an error.
    pub fn set_info_block1(&mut self, text: &str) -> Result<()> {
        self.set_info_block(2, text)
    }

    /// Reads info block 2 ("data", report 3).
    pub fn info_block2(&mut self) -> Result<String> {
        self.info_block(3)
    }

    /// Writes info block 2 (at most 32 Latin-1 characters, as block 1).
    pub fn set_info_block2(&mut self, text: &str) -> Result<()> {
        self.set_info_block(3, text)
    }

    /// Reads the LED count (report 0x81, Flex only).
    pub fn led_count(&mut self) -> Result<u8> {
        self.require(0x81, "the LED count")?;
        Ok(self.read_report(0x81)?[1])
    }

    /// Sets the LED count (report 0x81, Flex only; 1..=32).
    pub fn set_led_count(&mut self, count: u8) -> Result<()> {
        self.require(0x81, "setting the LED count")?;
        if count == 0 || usize::from(count) > self.variant.max_leds() {
            return Err(Error::invalid(format!(
                "LED count {count} is out of range 1..={}",
                self.variant.max_leds()
            )));
        }
        self.send_report(&[0x81, count])
    }
}

fn detect_or_default(info: &DeviceInfo) -> Variant {
    Variant::detect(&info.serial, info.release, &info.product).unwrap_or(Variant::BlinkStick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes() {
        assert_eq!(BlinkStick::frame_report_for(1), Some(6));
        assert_eq!(BlinkStick::frame_report_for(8), Some(6));
        assert_eq!(BlinkStick::frame_report_for(9), Some(7));
        assert_eq!(BlinkStick::frame_report_for(16), Some(7));
        assert_eq!(BlinkStick::frame_report_for(17), Some(8));
        assert_eq!(BlinkStick::frame_report_for(32), Some(8));
        assert_eq!(BlinkStick::frame_report_for(33), Some(9));
        assert_eq!(BlinkStick::frame_report_for(64), Some(9));
        assert_eq!(BlinkStick::frame_report_for(65), None);
    }

    #[test]
    fn nano_inverse_warns() {
        assert!(Mode::Inverse.warning_for(Variant::Nano).is_some());
        assert!(Mode::Inverse.warning_for(Variant::Square).is_none());
        assert!(Mode::Ws2812.warning_for(Variant::Nano).is_none());
    }
}
