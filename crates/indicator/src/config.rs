//! Configuration of the indicator, as it appears in the extbackup config file.
//!
//! ```
//! let cfg: indicator::IndicatorConfig = toml::from_str(r#"
//!     backend = "blinkstick"
//!     serial = "BS012345-3.0"
//!     index = 1
//!     limit = 10
//!     [colors]
//!     working = "33c280"
//! "#).unwrap();
//! assert_eq!(cfg.colors.success, "green");
//! ```

use crate::{ErrorKind, IndicatorError, State};
use blinkstick::Rgb;
use serde::Deserialize;

/// Which backend shows the states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A BlinkStick over hidapi (the default).
    #[default]
    Blinkstick,
    /// Lines on standard output (a coloured block on a terminal).
    Console,
    /// Nothing.
    None,
}

/// Colour words per state: CSS3 names, `#rgb`, `#rrggbb` or six hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Colors {
    /// While a backup runs (breathes). The seed's `33c280`.
    pub working: String,
    /// Done, safe to remove.
    pub success: String,
    /// The run failed.
    pub failure: String,
    /// Needs a look.
    pub attention: String,
}

impl Default for Colors {
    fn default() -> Self {
        Colors {
            working: "33c280".into(),
            success: "green".into(),
            failure: "red".into(),
            attention: "orange".into(),
        }
    }
}

/// The `[indicator]` section. Every field has a default (the seed's setup: LED 1 of
/// channel 0, brightness limit 10 %).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndicatorConfig {
    /// Which backend.
    pub backend: BackendKind,
    /// The stick's serial (`BS012345-3.0`); without it, the first stick found.
    pub serial: Option<String>,
    /// Channel of the LED (0 except on a BlinkStick Pro).
    pub channel: u8,
    /// Index of the LED. On a stick with fewer LEDs (a plain one-LED BlinkStick) LED 0 is
    /// used instead.
    pub index: u8,
    /// Brightness limit in percent (0..=100), as the Python tool's `--limit`.
    pub limit: u8,
    /// Colour per state.
    pub colors: Colors,
    /// One breath (off, up, down) takes this long, in milliseconds.
    pub breathe_period_ms: u64,
    /// On sticks with several LEDs, show known progress as a bar over the channel's LEDs
    /// (the indicator then owns the whole channel). Off: only the configured LED is used.
    /// Not with `shared` (other jobs share the LED).
    pub progress_bar: bool,
    /// Share the LED with other jobs (every drive, scripts through `blinkstick --slot`):
    /// each run owns the slot of its drive and the LED shows the most severe state of
    /// all slots (failure > attention > working > success), in steady colours. A failure
    /// stays until the drive's next good run or `extbackup ack NAME`. Off: this run owns
    /// the LED (breathing while working, progress bar).
    pub shared: bool,
    /// Where the shared slots live (default: `$BLINKSTICK_SLOTS_DIR`, else
    /// `/run/blinkstick/slots`, as the `blinkstick` command).
    pub slots_dir: Option<std::path::PathBuf>,
}

impl Default for IndicatorConfig {
    fn default() -> Self {
        IndicatorConfig {
            backend: BackendKind::default(),
            serial: None,
            channel: 0,
            index: 1,
            limit: 10,
            colors: Colors::default(),
            breathe_period_ms: 3000,
            progress_bar: true,
            shared: true,
            slots_dir: None,
        }
    }
}

impl IndicatorConfig {
    /// What every backend would refuse: a limit that is not a percentage, a colour word
    /// that is not a colour. The configuration check calls this, so it refuses exactly what
    /// building the indicator would.
    pub fn check(&self) -> Result<(), IndicatorError> {
        Palette::parse(&self.colors)?;
        if self.limit > 100 {
            return Err(IndicatorError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "limit = {} is not a percentage: use 0..=100 (10 is dim, 100 full)",
                    self.limit
                ),
            ));
        }
        Ok(())
    }
}

/// The colours of [`Colors`], parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Palette {
    /// While a backup runs.
    pub working: Rgb,
    /// Done, safe to remove.
    pub success: Rgb,
    /// The run failed.
    pub failure: Rgb,
    /// Needs a look.
    pub attention: Rgb,
}

impl Palette {
    /// Parses each colour word; an unknown word is an `InvalidConfig` error naming it.
    pub fn parse(colors: &Colors) -> Result<Self, IndicatorError> {
        let one = |state: &str, word: &str| {
            if word.trim().eq_ignore_ascii_case("random") {
                return Err(IndicatorError::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "indicator colour for {state}: `random` changes every time; pick a colour"
                    ),
                ));
            }
            Rgb::parse(word).map_err(|e| {
                IndicatorError::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "indicator colour for {state}: `{word}` is not a colour (use a CSS \
                         name such as `green`, or hex such as `33c280`)"
                    ),
                )
                .with_source(e)
            })
        };
        Ok(Palette {
            working: one("working", &colors.working)?,
            success: one("success", &colors.success)?,
            failure: one("failure", &colors.failure)?,
            attention: one("attention", &colors.attention)?,
        })
    }

    /// The colour of `state` (black for [`State::Off`]).
    pub fn color(&self, state: State) -> Rgb {
        match state {
            State::Off => Rgb::OFF,
            State::Working { .. } => self.working,
            State::Success => self.success,
            State::Failure => self.failure,
            State::Attention => self.attention,
        }
    }

    /// Every colour with the brightness `limit` (percent) applied, as the Python tool's
    /// `--limit`.
    pub fn limited(self, limit: u8) -> Self {
        Palette {
            working: self.working.limited(limit),
            success: self.success.limited(limit),
            failure: self.failure.limited(limit),
            attention: self.attention.limited(limit),
        }
    }
}
