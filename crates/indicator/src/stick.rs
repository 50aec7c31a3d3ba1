//! [`BlinkStickIndicator`]: states as colours on one LED of a BlinkStick.
//!
//! - Success, failure and attention are steady colours; off turns the LED off.
//! - Working breathes smoothly in a background thread until the next [`Indicator::show`]
//!   (the `blinkstick` crate's cancellable [`Player::breathe`]), which stops it before it
//!   returns.
//! - On sticks with several LEDs (Square, Strip, Nano, Pro, Flex) known progress lights a
//!   proportional number of LEDs of the channel, the head of the bar breathing (turn this
//!   off with `progress_bar = false`).
//! - Every colour has the brightness limit applied (the Python tool's `--limit`).
//! - A Pro drives single LEDs and frames only in mode 2 (WS2812): in another mode any LED
//!   but LED 0 of channel 0 is an `InvalidConfig` error that says how to set the mode.
//! - Unplugged: `show` returns a `NotFound` error (the caller logs it); the next `show`
//!   reopens the stick (by serial when configured, else the first one), and a breathing
//!   thread keeps trying to reconnect on its own every half second.
//!
//! The LED keeps its last colour when the indicator is dropped: green must stay green
//! after extbackup exits.

use crate::config::{IndicatorConfig, Palette};
use crate::{ErrorKind, Indicator, IndicatorError, State};
use blinkstick::{
    Backend, BlinkStick, CancelToken, Clock, Mode, Player, RetryPolicy, Rgb, Selector, SystemClock,
    Variant,
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a breathing thread waits before trying to reconnect to an unplugged stick.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// A running animation and what it shows.
struct Animation {
    cancel: CancelToken,
    handle: JoinHandle<()>,
    /// LEDs lit by the progress bar (`None`: breathing the configured LED only).
    bar: Option<usize>,
    /// LEDs of the channel, when the stick was there at the start.
    leds: Option<usize>,
}

/// What the breathing thread and `show` share.
struct Shared {
    stick: Mutex<Option<BlinkStick>>,
    background_error: Mutex<Option<IndicatorError>>,
    /// "serial (variant)" of the open stick, readable while the thread holds `stick`.
    name: Mutex<Option<String>>,
}

/// Shows states on a BlinkStick. See the [module docs](self).
pub struct BlinkStickIndicator {
    link: Link,
    palette: Palette,
    period: Duration,
    progress_bar: bool,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    anim: Option<Animation>,
    /// Whether LEDs other than the configured one may be lit (a bar was drawn).
    bar_drawn: bool,
}

/// Which stick, through what, and where on it: what `show` and the breathing thread both
/// connect with.
#[derive(Clone)]
struct Link {
    backend: Arc<dyn Backend>,
    selector: Selector,
    /// The driver's retry policy for every stick opened (the driver's default if `None`).
    retry: Option<RetryPolicy>,
    channel: u8,
    index: u8,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Maps a driver error to the indicator's kinds.
fn map_err(e: blinkstick::Error) -> IndicatorError {
    use blinkstick::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound | K::Disconnected => ErrorKind::NotFound,
        K::PermissionDenied => ErrorKind::PermissionDenied,
        K::InvalidArgument | K::Unsupported => ErrorKind::InvalidConfig,
        _ => ErrorKind::Other,
    };
    IndicatorError::new(kind, "showing the backup state on the BlinkStick").with_source(e)
}

/// Whether the stick should be dropped and reopened after `e`.
fn is_gone(e: &blinkstick::Error) -> bool {
    use blinkstick::ErrorKind as K;
    matches!(e.kind(), K::NotFound | K::Disconnected | K::Io)
}

/// LEDs the progress bar lights for `progress` on a channel of `leds`: `None` without a
/// finite progress, with the bar turned off (`progress_bar`), or on a single LED; else at
/// least one, rounded up.
fn bar_len(progress: Option<f32>, progress_bar: bool, leds: usize) -> Option<usize> {
    let p = progress.filter(|p| p.is_finite())?;
    if !progress_bar || leds < 2 {
        return None;
    }
    let lit = (f64::from(p.clamp(0.0, 1.0)) * leds as f64).ceil() as usize;
    Some(lit.clamp(1, leds))
}

/// Where to draw on one particular stick.
#[derive(Clone, Copy)]
struct Target {
    channel: u8,
    index: u8,
    /// LEDs of the channel (1 on a plain stick).
    leds: usize,
}

impl Link {
    /// Opens the stick if needed and works out where to draw.
    fn connect(
        &self,
        shared: &Shared,
        slot: &mut Option<BlinkStick>,
    ) -> Result<Target, blinkstick::Error> {
        let (channel, index) = (self.channel, self.index);
        if slot.is_none() {
            let mut stick = BlinkStick::open_with(self.backend.clone(), &self.selector)?;
            if let Some(r) = self.retry {
                stick.set_retry_policy(r);
            }
            *lock(&shared.name) = Some(format!("{} ({})", stick.serial(), stick.variant().name()));
            *slot = Some(stick);
        }
        let stick = slot.as_mut().expect("opened above");
        let mut leds = stick.leds_per_channel()?.max(1);
        // A Pro ignores report 5 and frames unless in mode 2: say so instead of a dark LED.
        if stick.variant() == Variant::Pro {
            let mode = stick.mode()?;
            if mode != Mode::Ws2812 {
                if (channel, index) != (0, 0) {
                    let serial = stick.serial();
                    return Err(blinkstick::Error::new(
                        blinkstick::ErrorKind::Unsupported,
                        format!(
                            "BlinkStick Pro {serial} is in mode {}, where it ignores LED {index} \
                             of channel {channel} (only mode 2, WS2812, drives single LEDs): run \
                             `blinkstick -s {serial} --set-mode 2` once, or configure index = 0 \
                             and channel = 0 for an analog strip",
                            mode.as_byte()
                        ),
                    ));
                }
                leds = 1; // frames are ignored as well: no progress bar
            }
        }
        // A plain BlinkStick has only LED 0: the seed's `--index 1` means "the LED" there.
        let index = if usize::from(index) >= leds { 0 } else { index };
        Ok(Target {
            channel,
            index,
            leds,
        })
    }
}

impl BlinkStickIndicator {
    /// A BlinkStick indicator through hidapi. The stick need not be plugged in yet: the
    /// first `show` opens it.
    pub fn new(config: &IndicatorConfig) -> Result<Self, IndicatorError> {
        let backend = blinkstick::hidapi_backend::HidapiBackend::new().map_err(map_err)?;
        Self::with_backend(Arc::new(backend), config)
    }

    /// A BlinkStick indicator on any backend (tests use the crate's `EmulatedBus`).
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: &IndicatorConfig,
    ) -> Result<Self, IndicatorError> {
        config.check()?;
        let palette = Palette::parse(&config.colors)?.limited(config.limit);
        Ok(BlinkStickIndicator {
            link: Link {
                backend,
                selector: match &config.serial {
                    Some(s) => Selector::Serial(s.clone()),
                    None => Selector::First,
                },
                retry: None,
                channel: config.channel,
                index: config.index,
            },
            palette,
            period: Duration::from_millis(config.breathe_period_ms.max(100)),
            progress_bar: config.progress_bar,
            clock: Arc::new(SystemClock::new()),
            shared: Arc::new(Shared {
                stick: Mutex::new(None),
                background_error: Mutex::new(None),
                name: Mutex::new(None),
            }),
            anim: None,
            bar_drawn: false,
        })
    }

    /// Uses `clock` for animations (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the driver's retry policy on every stick opened (tests use zero delay).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.link.retry = Some(retry);
        self
    }

    /// The colours shown, with the limit applied.
    pub fn palette(&self) -> Palette {
        self.palette
    }

    /// An error the breathing thread met since the last call (e.g. the stick was
    /// unplugged while a backup ran), for the caller to log.
    pub fn take_background_error(&self) -> Option<IndicatorError> {
        lock(&self.shared.background_error).take()
    }

    fn stop_animation(&mut self) {
        if let Some(a) = self.anim.take() {
            a.cancel.cancel();
            // The thread checks the token at every frame and wakes from sleeps at once.
            let _ = a.handle.join();
        }
    }

    /// LEDs the progress bar lights for `progress` on a channel of `leds`, if a bar is shown.
    fn bar_len(&self, progress: Option<f32>, leds: usize) -> Option<usize> {
        bar_len(progress, self.progress_bar, leds)
    }

    fn draw_bar(stick: &mut BlinkStick, t: Target, lit: usize, c: Rgb) -> blinkstick::Result<()> {
        let frame: Vec<Rgb> = (0..t.leds)
            .map(|i| if i < lit { c } else { Rgb::OFF })
            .collect();
        stick.set_frame(t.channel, &frame)
    }

    /// Draws a steady state; clears a bar first.
    fn draw_steady(&mut self, state: State) -> Result<(), blinkstick::Error> {
        let mut slot = lock(&self.shared.stick);
        let t = self.link.connect(&self.shared, &mut slot)?;
        let stick = slot.as_mut().expect("connected");
        let color = self.palette.color(state);
        if self.bar_drawn {
            let mut frame = vec![Rgb::OFF; t.leds];
            frame[usize::from(t.index)] = color;
            stick.set_frame(t.channel, &frame)?;
            self.bar_drawn = false;
        }
        stick.set_led(t.channel, t.index, color)
    }

    /// Shows `state` as a steady colour (working too: no breathing, no bar), stopping
    /// any animation: what a shared LED shows.
    pub fn show_steady(&mut self, state: State) -> Result<(), IndicatorError> {
        self.stop_animation();
        self.draw_steady(state).map_err(|e| {
            if is_gone(&e) {
                *lock(&self.shared.stick) = None;
                *lock(&self.shared.name) = None;
                self.bar_drawn = false;
            }
            map_err(e)
        })
    }

    fn start_working(&mut self, progress: Option<f32>) -> Result<(), IndicatorError> {
        // Connect and draw the bar now, so that a missing stick is reported to the caller.
        let first = {
            let mut slot = lock(&self.shared.stick);
            self.link
                .connect(&self.shared, &mut slot)
                .and_then(|t| {
                    let bar = self.bar_len(progress, t.leds);
                    if let Some(lit) = bar {
                        let stick = slot.as_mut().expect("connected");
                        Self::draw_bar(stick, t, lit, self.palette.working)?;
                    } else if self.bar_drawn {
                        let stick = slot.as_mut().expect("connected");
                        stick.set_frame(t.channel, &vec![Rgb::OFF; t.leds])?;
                    }
                    Ok((bar, t.leds))
                })
                .inspect_err(|e| {
                    if is_gone(e) {
                        *slot = None;
                        *lock(&self.shared.name) = None;
                    }
                })
        };
        let (bar, leds) = match &first {
            Ok((bar, leds)) => (*bar, Some(*leds)),
            Err(_) => (None, None),
        };
        self.bar_drawn = bar.is_some();
        // The thread breathes, and reconnects on its own if the stick is gone.
        let cancel = CancelToken::new();
        let ctx = Breather {
            link: self.link.clone(),
            color: self.palette.working,
            period: self.period,
            progress,
            progress_bar: self.progress_bar,
            clock: self.clock.clone(),
            cancel: cancel.clone(),
            shared: self.shared.clone(),
            needs_redraw: first.is_err(),
        };
        let handle = std::thread::Builder::new()
            .name("indicator-breathe".into())
            .spawn(move || ctx.run())
            .map_err(|e| {
                IndicatorError::new(ErrorKind::Other, "starting the breathing thread")
                    .with_source(e)
            })?;
        self.anim = Some(Animation {
            cancel,
            handle,
            bar,
            leds,
        });
        first.map(|_| ()).map_err(map_err)
    }
}

/// The breathing thread's state.
struct Breather {
    link: Link,
    color: Rgb,
    period: Duration,
    progress: Option<f32>,
    progress_bar: bool,
    clock: Arc<dyn Clock>,
    cancel: CancelToken,
    shared: Arc<Shared>,
    /// The stick was not there when `show` ran: draw the bar after connecting.
    needs_redraw: bool,
}

impl Breather {
    fn run(mut self) {
        while !self.cancel.is_cancelled() {
            let shared = self.shared.clone();
            let mut slot = lock(&shared.stick);
            let result = self.breathe_once(&mut slot);
            match result {
                Ok(()) => return, // cancelled
                Err(e) => {
                    if is_gone(&e) {
                        *slot = None;
                        *lock(&self.shared.name) = None;
                        self.needs_redraw = true;
                    }
                    drop(slot);
                    *lock(&shared.background_error) = Some(map_err(e));
                    let until = std::time::Instant::now() + RECONNECT_INTERVAL;
                    if !self.cancel.wait_until(until) {
                        return;
                    }
                }
            }
        }
    }

    fn breathe_once(&mut self, slot: &mut Option<BlinkStick>) -> blinkstick::Result<()> {
        let t = self.link.connect(&self.shared, slot)?;
        let stick = slot.as_mut().expect("connected");
        let bar = bar_len(self.progress, self.progress_bar, t.leds);
        if self.needs_redraw {
            if let Some(lit) = bar {
                BlinkStickIndicator::draw_bar(stick, t, lit, self.color)?;
            }
            self.needs_redraw = false;
        }
        // The bar's head breathes; without a bar, the configured LED.
        let led = match bar {
            Some(lit) => (lit - 1) as u8,
            None => t.index,
        };
        Player::new(t.channel, led)
            .with_clock(self.clock.clone())
            .with_cancel(self.cancel.clone())
            .breathe(stick, self.color, self.period)
            .map(|_| ())
    }
}

impl Indicator for BlinkStickIndicator {
    fn show(&mut self, state: State) -> Result<(), IndicatorError> {
        if let State::Working { progress } = state {
            // A progress update that changes nothing visible keeps the animation going.
            if let Some(a) = &self.anim {
                // (`stick` is locked by the breathing thread: use what `show` saw.)
                if let Some(leds) = a.leds {
                    if a.bar == self.bar_len(progress, leds) && !a.handle.is_finished() {
                        return Ok(());
                    }
                }
            }
            self.stop_animation();
            return self.start_working(progress);
        }
        self.stop_animation();
        let r = self.draw_steady(state);
        r.map_err(|e| {
            if is_gone(&e) {
                *lock(&self.shared.stick) = None;
                *lock(&self.shared.name) = None;
                self.bar_drawn = false;
            }
            map_err(e)
        })
    }

    fn describe(&self) -> String {
        let who = match &*lock(&self.shared.name) {
            Some(s) => s.clone(),
            None => match &self.link.selector {
                Selector::Serial(s) => format!("{s} (not connected)"),
                _ => "first found (not connected)".into(),
            },
        };
        format!(
            "blinkstick {who}, channel {} LED {}",
            self.link.channel, self.link.index
        )
    }
}

impl Drop for BlinkStickIndicator {
    fn drop(&mut self) {
        // Stop breathing; the LED keeps its colour.
        self.stop_animation();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blinkstick::emulator::{EmulatedBus, EmulatedDevice};
    use blinkstick::Variant;

    fn indicator(variant: Variant) -> (BlinkStickIndicator, EmulatedDevice) {
        let dev = EmulatedDevice::new(variant, "BS000001-3.0");
        let bus = EmulatedBus::new();
        bus.plug(dev.clone());
        let ind =
            BlinkStickIndicator::with_backend(Arc::new(bus), &IndicatorConfig::default()).unwrap();
        (ind, dev)
    }

    #[test]
    fn bar_length_rounds_up_and_never_empties() {
        let (ind, _dev) = indicator(Variant::Square);
        assert_eq!(ind.bar_len(Some(0.0), 8), Some(1));
        assert_eq!(ind.bar_len(Some(0.5), 8), Some(4));
        assert_eq!(ind.bar_len(Some(0.51), 8), Some(5));
        assert_eq!(ind.bar_len(Some(1.0), 8), Some(8));
        assert_eq!(ind.bar_len(Some(f32::NAN), 8), None);
        assert_eq!(ind.bar_len(Some(0.5), 1), None);
        assert_eq!(ind.bar_len(None, 8), None);
    }

    #[test]
    fn describe_names_the_stick_once_open() {
        let (mut ind, _dev) = indicator(Variant::Square);
        assert!(ind.describe().contains("not connected"));
        ind.show(State::Success).unwrap();
        assert!(
            ind.describe().contains("BS000001-3.0"),
            "{}",
            ind.describe()
        );
    }
}
