//! Animations (blink, morph, pulse as the Python library defines them, and a continuous
//! breathe), paced against absolute deadlines of an injectable [`Clock`] and cancellable
//! from another thread through a [`CancelToken`].

use std::borrow::Borrow;
use std::f64::consts::PI;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::color::Rgb;
use crate::device::BlinkStick;
use crate::error::Result;

/// The shortest gap between two frames: at most 100 frames/s (a Pro needs >= 2 ms).
pub const MIN_FRAME_INTERVAL: Duration = Duration::from_millis(10);

/// The gap a Pro needs between two frames (its WS2812 output blocks USB meanwhile): the
/// floor the CLI uses so its animations keep the Python tool's pacing.
pub const PRO_FRAME_INTERVAL: Duration = Duration::from_millis(2);

/// A cancellation flag shared between threads; cancelling wakes a sleeping animation.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: every animation using this token stops at its next frame boundary
    /// (a sleeping one wakes at once).
    pub fn cancel(&self) {
        let (m, cv) = &*self.inner;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `until` or cancellation; returns `false` if cancelled.
    pub fn wait_until(&self, until: Instant) -> bool {
        let (m, cv) = &*self.inner;
        let mut c = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if *c {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            c = cv
                .wait_timeout(c, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A monotonic clock the animations schedule against. Tests use [`ManualClock`].
pub trait Clock: Send + Sync {
    /// Time since this clock's epoch.
    fn now(&self) -> Duration;
    /// Sleeps until `deadline` (same epoch as [`now`](Self::now)) unless cancelled first;
    /// returns `false` when cancelled.
    fn sleep_until(&self, deadline: Duration, cancel: &CancelToken) -> bool;
}

/// The real clock ([`Instant`]).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    epoch: Instant,
}

impl SystemClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        SystemClock {
            epoch: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
    fn sleep_until(&self, deadline: Duration, cancel: &CancelToken) -> bool {
        // A deadline beyond what `Instant` can hold: wait a year at a time until cancelled.
        let mut until = self.epoch.checked_add(deadline);
        while until.is_none() {
            let year = Instant::now() + Duration::from_secs(365 * 24 * 3600);
            if !cancel.wait_until(year) {
                return false;
            }
            until = self.epoch.checked_add(deadline);
        }
        cancel.wait_until(until.expect("checked above"))
    }
}

type SleepHook = Box<dyn Fn(Duration) + Send + Sync>;

/// A clock that never really sleeps: `sleep_until` jumps to the deadline and records it.
/// For tests of frame sequences and pacing.
#[derive(Default)]
pub struct ManualClock {
    now: Mutex<Duration>,
    sleeps: Mutex<Vec<Duration>>,
    hook: Mutex<Option<SleepHook>>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward (simulates time spent elsewhere, e.g. a slow device).
    pub fn advance(&self, d: Duration) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) += d;
    }

    /// Every deadline slept until, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls `hook(now)` after each sleep (e.g. to cancel at some time).
    pub fn on_sleep(&self, hook: impl Fn(Duration) + Send + Sync + 'static) {
        *self.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn sleep_until(&self, deadline: Duration, cancel: &CancelToken) -> bool {
        if cancel.is_cancelled() {
            return false;
        }
        let now = {
            let mut n = self.now.lock().unwrap_or_else(|p| p.into_inner());
            *n = (*n).max(deadline);
            *n
        };
        self.sleeps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(deadline);
        if let Some(h) = &*self.hook.lock().unwrap_or_else(|p| p.into_inner()) {
            h(now);
        }
        !cancel.is_cancelled()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
    fn sleep_until(&self, deadline: Duration, cancel: &CancelToken) -> bool {
        (**self).sleep_until(deadline, cancel)
    }
}

/// One frame of an animation: a colour due at an offset from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// When, from the start of the animation.
    pub at: Duration,
    /// The colour to show.
    pub color: Rgb,
}

/// How an animation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every frame was shown.
    Completed,
    /// The cancel token stopped it.
    Cancelled,
}

/// Python's `blink(repeats, delay)`: per repeat (after `delay` if not the first) the
/// colour, then after `delay` off. A delay under [`MIN_FRAME_INTERVAL`] is raised to it.
/// [`blink_frames`] gives the same frames lazily (for very many repeats).
pub fn blink_timeline(color: Rgb, repeats: u32, delay: Duration) -> Vec<Frame> {
    blink_frames(color, repeats, delay).collect()
}

/// The frames of [`blink_timeline`], made one at a time: any number of repeats in
/// constant memory.
pub fn blink_frames(color: Rgb, repeats: u32, delay: Duration) -> impl Iterator<Item = Frame> {
    let delay = delay.max(MIN_FRAME_INTERVAL);
    (0..repeats).flat_map(move |i| {
        let on = delay.saturating_mul(i).saturating_mul(2);
        [
            Frame { at: on, color },
            Frame {
                at: on.saturating_add(delay),
                color: Rgb::OFF,
            },
        ]
    })
}

/// The steps actually used so frames are at least [`MIN_FRAME_INTERVAL`] apart.
pub fn effective_steps(duration: Duration, steps: u32) -> u32 {
    let fit =
        u32::try_from(duration.as_nanos() / MIN_FRAME_INTERVAL.as_nanos()).unwrap_or(u32::MAX);
    steps.min(fit.saturating_sub(1))
}

/// Python's `morph(duration, steps)`: the start colour at 0, `steps` intermediate colours
/// `start*(1-d) + end*d` with `d = n/(steps+1)`, then the end colour at `duration`; evenly
/// spaced `duration/(steps+1)` apart. `steps` is lowered so frames stay
/// [`MIN_FRAME_INTERVAL`] apart.
pub fn morph_timeline(from: Rgb, to: Rgb, duration: Duration, steps: u32) -> Vec<Frame> {
    let mut v = vec![Frame {
        at: Duration::ZERO,
        color: from,
    }];
    v.extend(morph_tail(from, to, Duration::ZERO, duration, steps));
    v
}

fn morph_tail(from: Rgb, to: Rgb, base: Duration, duration: Duration, steps: u32) -> Vec<Frame> {
    let steps = effective_steps(duration, steps);
    let n_total = steps + 1;
    let dt = duration / n_total;
    (1..=n_total)
        .map(|n| Frame {
            at: base.saturating_add(if n == n_total { duration } else { dt * n }),
            color: if n == n_total {
                to
            } else {
                from.lerp(to, f64::from(n) / f64::from(n_total))
            },
        })
        .collect()
}

/// Python's `_remap(v, 0, 255, 0, 255)`: `int(v / 255 * 255)` in `f64`, as CPython
/// evaluates it (so 5.0 may come out as 4: `5/255*255` is 4.999...).
fn py_remap255(v: f64) -> u8 {
    (v / 255.0 * 255.0) as u8
}

/// The frames the Python library's `morph(duration, steps)` sends, exactly: the start
/// colour, then the first of `steps` intermediate colours at once (Python sleeps only
/// after each intermediate frame), the others `duration/(steps+1)` apart, and the end
/// colour `steps * duration/(steps+1)` after the start. Colours go through Python's
/// arithmetic (`start*(1-d) + end*d` with `d = n/(steps+1)`, then `int(v/255*255)`),
/// so they match byte for byte. The frames are not spread out for
/// [`MIN_FRAME_INTERVAL`]: play them with a [`Player`] whose
/// [`min_interval`](Player::min_interval) is what the device needs.
pub fn python_morph_frames(from: Rgb, to: Rgb, duration: Duration, steps: u32) -> Vec<Frame> {
    let n_total = steps.saturating_add(1);
    let dt = duration / n_total;
    let start = [from.r, from.g, from.b].map(|v| f64::from(py_remap255(f64::from(v))));
    let end = [to.r, to.g, to.b].map(f64::from);
    let color = |f: [f64; 3]| Rgb::new(py_remap255(f[0]), py_remap255(f[1]), py_remap255(f[2]));
    let mut v = Vec::with_capacity(steps as usize + 2);
    v.push(Frame {
        at: Duration::ZERO,
        color: color(start),
    });
    for n in 1..n_total {
        let d = f64::from(n) / f64::from(n_total);
        let mix = |i: usize| start[i] * (1.0 - d) + end[i] * d;
        v.push(Frame {
            at: dt.saturating_mul(n - 1),
            color: color([mix(0), mix(1), mix(2)]),
        });
    }
    v.push(Frame {
        at: dt.saturating_mul(steps),
        color: color(end),
    });
    v
}

/// Python's `pulse(repeats, duration, steps)` at the requested LED: off, then per repeat
/// a morph to the colour and one back to black, each taking `duration` (the repeated
/// start frames of each morph are left out: they equal the frame before).
/// [`pulse_frames`] gives the same frames lazily (for very many repeats).
pub fn pulse_timeline(color: Rgb, repeats: u32, duration: Duration, steps: u32) -> Vec<Frame> {
    pulse_frames(color, repeats, duration, steps).collect()
}

/// The frames of [`pulse_timeline`], made one pulse at a time: any number of repeats in
/// memory for one pulse.
pub fn pulse_frames(
    color: Rgb,
    repeats: u32,
    duration: Duration,
    steps: u32,
) -> impl Iterator<Item = Frame> {
    let off = Frame {
        at: Duration::ZERO,
        color: Rgb::OFF,
    };
    std::iter::once(off).chain((0..repeats).flat_map(move |i| {
        let up = duration.saturating_mul(i).saturating_mul(2);
        let down = up.saturating_add(duration);
        morph_tail(Rgb::OFF, color, up, duration, steps)
            .into_iter()
            .chain(morph_tail(color, Rgb::OFF, down, duration, steps))
    }))
}

/// Where an animation draws and how it is timed.
#[derive(Clone)]
pub struct Player {
    /// Channel of the LED.
    pub channel: u8,
    /// Index of the LED.
    pub index: u8,
    /// The clock frames are scheduled against.
    pub clock: Arc<dyn Clock>,
    /// Stops the animation when cancelled.
    pub cancel: CancelToken,
    /// The shortest gap between two frames sent ([`MIN_FRAME_INTERVAL`] unless changed).
    pub min_interval: Duration,
}

impl Player {
    /// Plays on LED `index` of `channel` with the system clock and a fresh token.
    pub fn new(channel: u8, index: u8) -> Self {
        Player {
            channel,
            index,
            clock: Arc::new(SystemClock::new()),
            cancel: CancelToken::new(),
            min_interval: MIN_FRAME_INTERVAL,
        }
    }

    /// The same player with another shortest gap between frames.
    pub fn with_min_interval(mut self, min_interval: Duration) -> Self {
        self.min_interval = min_interval;
        self
    }

    /// The same player with another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same player with another cancel token.
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Sends each frame at `start + frame.at` (absolute deadlines, so no drift), never
    /// sooner than [`min_interval`](Self::min_interval) after the previous one; stops
    /// when cancelled.
    /// `frames` is a slice or `Vec` (`&frames`) or a lazy iterator such as
    /// [`pulse_frames`], taken one frame at a time.
    pub fn play<I>(&self, stick: &mut BlinkStick, frames: I) -> Result<Outcome>
    where
        I: IntoIterator,
        I::Item: Borrow<Frame>,
    {
        let start = self.clock.now();
        let mut last: Option<Duration> = None;
        for f in frames {
            let f: &Frame = f.borrow();
            let mut due = start.saturating_add(f.at);
            if let Some(l) = last {
                due = due.max(l.saturating_add(self.min_interval));
            }
            if self.cancel.is_cancelled() || !self.clock.sleep_until(due, &self.cancel) {
                return Ok(Outcome::Cancelled);
            }
            last = Some(self.clock.now().max(due));
            stick.set_led(self.channel, self.index, f.color)?;
        }
        Ok(Outcome::Completed)
    }

    /// Python's blink.
    pub fn blink(
        &self,
        stick: &mut BlinkStick,
        color: Rgb,
        repeats: u32,
        delay: Duration,
    ) -> Result<Outcome> {
        self.play(stick, blink_frames(color, repeats, delay))
    }

    /// Python's morph from the LED's current colour (read back) to `color`.
    pub fn morph(
        &self,
        stick: &mut BlinkStick,
        color: Rgb,
        duration: Duration,
        steps: u32,
    ) -> Result<Outcome> {
        let from = stick.led(self.channel, self.index)?;
        self.play(stick, morph_timeline(from, color, duration, steps))
    }

    /// Python's pulse, on the requested LED.
    pub fn pulse(
        &self,
        stick: &mut BlinkStick,
        color: Rgb,
        repeats: u32,
        duration: Duration,
        steps: u32,
    ) -> Result<Outcome> {
        self.play(stick, pulse_frames(color, repeats, duration, steps))
    }

    /// Breathes until cancelled: brightness follows `(1 - cos)/2` from off to `color`
    /// and back every `period`, one frame every `max(period/50, MIN_FRAME_INTERVAL)`,
    /// deadlines counted from the start so long runs do not drift. Always returns
    /// [`Outcome::Cancelled`] (or an error); the LED keeps its last colour.
    pub fn breathe(&self, stick: &mut BlinkStick, color: Rgb, period: Duration) -> Result<Outcome> {
        let interval = (period / 50).max(MIN_FRAME_INTERVAL);
        let per_cycle = (period.as_nanos() / interval.as_nanos()).max(2) as u64;
        let start = self.clock.now();
        let mut last: Option<Duration> = None;
        for k in 0u64.. {
            let at = Duration::from_nanos(
                (u128::from(k) * interval.as_nanos()).min(u128::from(u64::MAX)) as u64,
            );
            let mut due = start.saturating_add(at);
            if let Some(l) = last {
                due = due.max(l.saturating_add(self.min_interval));
            }
            if self.cancel.is_cancelled() || !self.clock.sleep_until(due, &self.cancel) {
                break;
            }
            last = Some(self.clock.now().max(due));
            stick.set_led(self.channel, self.index, breathe_color(color, k, per_cycle))?;
        }
        Ok(Outcome::Cancelled)
    }
}

/// Colour of breathe frame `k` of `per_cycle` (0 counts as 1: always off).
pub fn breathe_color(color: Rgb, k: u64, per_cycle: u64) -> Rgb {
    let per_cycle = per_cycle.max(1);
    let phase = (k % per_cycle) as f64 / per_cycle as f64;
    color.scaled((1.0 - (2.0 * PI * phase).cos()) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blink_shape() {
        let t = blink_timeline(Rgb::new(1, 2, 3), 2, Duration::from_millis(500));
        let at: Vec<u64> = t.iter().map(|f| f.at.as_millis() as u64).collect();
        assert_eq!(at, [0, 500, 1000, 1500]);
        assert_eq!(t[0].color, Rgb::new(1, 2, 3));
        assert_eq!(t[1].color, Rgb::OFF);
    }

    #[test]
    fn morph_shape() {
        let t = morph_timeline(
            Rgb::OFF,
            Rgb::new(255, 0, 51),
            Duration::from_millis(1000),
            50,
        );
        assert_eq!(t.len(), 52);
        assert_eq!(t[0].color, Rgb::OFF);
        assert_eq!(t[51].color, Rgb::new(255, 0, 51));
        assert_eq!(t[51].at, Duration::from_millis(1000));
        // d = 1/51: 255/51 = 5.0, 51/51 = 1.0 (truncated as Python's int())
        assert_eq!(t[1].color, Rgb::new(5, 0, 1));
        assert!(t
            .windows(2)
            .all(|w| w[1].at - w[0].at >= MIN_FRAME_INTERVAL));
    }

    #[test]
    fn python_morph_matches_python() {
        // python: morph from (0,0,0) to (255,0,51), duration 1000, steps 50, limit 100
        let t = python_morph_frames(
            Rgb::OFF,
            Rgb::new(255, 0, 51),
            Duration::from_millis(1000),
            50,
        );
        assert_eq!(t.len(), 52);
        assert_eq!((t[0].at, t[1].at), (Duration::ZERO, Duration::ZERO));
        assert_eq!(t[2].at, Duration::from_millis(1000) / 51);
        assert_eq!(t[51].at, Duration::from_millis(1000) / 51 * 50);
        // d = 1/51: 255*d = 5.0 and 51*d = 1.0, through int(v/255*255)
        assert_eq!(t[1].color, Rgb::new(5, 0, 1));
        assert_eq!(t[51].color, Rgb::new(255, 0, 51));
    }

    #[test]
    fn fast_morph_has_fewer_steps() {
        let t = morph_timeline(
            Rgb::OFF,
            Rgb::new(255, 255, 255),
            Duration::from_millis(100),
            50,
        );
        assert_eq!(t.len(), 11); // 9 steps + start + end at 10 ms spacing
        assert!(t
            .windows(2)
            .all(|w| w[1].at - w[0].at >= MIN_FRAME_INTERVAL));
    }

    #[test]
    fn manual_clock_cancel_hook() {
        let c = Arc::new(ManualClock::new());
        let tok = CancelToken::new();
        let t2 = tok.clone();
        c.on_sleep(move |now| {
            if now >= Duration::from_millis(30) {
                t2.cancel()
            }
        });
        assert!(c.sleep_until(Duration::from_millis(10), &tok));
        assert!(!c.sleep_until(Duration::from_millis(30), &tok));
        assert!(!c.sleep_until(Duration::from_millis(40), &tok));
        assert_eq!(c.sleeps().len(), 2);
    }

    #[test]
    fn breathe_levels() {
        let c = Rgb::new(200, 100, 0);
        assert_eq!(breathe_color(c, 0, 50), Rgb::OFF);
        assert_eq!(breathe_color(c, 25, 50), c);
        assert_eq!(breathe_color(c, 50, 50), Rgb::OFF);
    }
}
