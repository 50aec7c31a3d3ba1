//! The `history` setting (global and per drive): on by default, off for a plain mirror,
//! or a retention table; resolved to a [`Retention`] per drive.

use serde::{Deserialize, Serialize};
use syncer::generations::Retention;

/// `history = true | false`, or a table with the retention policy.
///
/// ```toml
/// [history]            # global; a drive may say `history = false` or have its own table
/// keep_within_days = 14
/// daily = 30
/// weekly = 12
/// monthly = 24
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HistorySetting {
    /// On (with the global or default retention) or off (a plain mirror in `data/`).
    Flag(bool),
    /// On, with this retention.
    Policy(RetentionConfig),
}

impl Default for HistorySetting {
    /// On: see docs/configuration.md for why.
    fn default() -> Self {
        Self::Flag(true)
    }
}

/// The retention table; absent keys take the defaults (14 days, 30, 12, 24).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// `false` turns history off (the same as `history = false`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Keep every generation younger than this many days.
    #[serde(default = "d_within")]
    pub keep_within_days: u32,
    /// Keep the newest generation of this many days that have one.
    #[serde(default = "d_daily")]
    pub daily: u32,
    /// ... of this many ISO weeks.
    #[serde(default = "d_weekly")]
    pub weekly: u32,
    /// ... of this many months.
    #[serde(default = "d_monthly")]
    pub monthly: u32,
}

fn yes() -> bool {
    true
}
fn d_within() -> u32 {
    Retention::default().keep_within_days
}
fn d_daily() -> u32 {
    Retention::default().daily
}
fn d_weekly() -> u32 {
    Retention::default().weekly
}
fn d_monthly() -> u32 {
    Retention::default().monthly
}

impl From<RetentionConfig> for Retention {
    fn from(r: RetentionConfig) -> Self {
        Retention {
            keep_within_days: r.keep_within_days,
            daily: r.daily,
            weekly: r.weekly,
            monthly: r.monthly,
        }
    }
}

/// The retention for a drive, `None` for a plain mirror: the drive's own setting, else the
/// global one (`history = true` on a drive takes the global table, or the defaults).
pub fn resolve(global: &HistorySetting, drive: Option<&HistorySetting>) -> Option<Retention> {
    let global_policy = match global {
        HistorySetting::Policy(r) => Retention::from(*r),
        HistorySetting::Flag(_) => Retention::default(),
    };
    match drive.unwrap_or(global) {
        HistorySetting::Flag(false) => None,
        HistorySetting::Flag(true) => Some(global_policy),
        HistorySetting::Policy(r) if !r.enabled => None,
        HistorySetting::Policy(r) => Some((*r).into()),
    }
}

/// One line of the policy for `config check` and the log.
pub fn describe(r: Option<Retention>) -> String {
    match r {
        None => "a plain mirror in data/ (history = false)".into(),
        Some(r) => format!(
            "dated generations: keep all for {} days, then the newest of {} days, {} weeks, {} months",
            r.keep_within_days, r.daily, r.weekly, r.monthly
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drive_setting_wins_and_history_is_on_by_default() {
        let on = HistorySetting::default();
        assert_eq!(resolve(&on, None), Some(Retention::default()));
        assert_eq!(resolve(&on, Some(&HistorySetting::Flag(false))), None);
        let mine = RetentionConfig {
            enabled: true,
            keep_within_days: 1,
            daily: 2,
            weekly: 3,
            monthly: 4,
        };
        let global = HistorySetting::Policy(mine);
        assert_eq!(resolve(&global, None), Some(mine.into()));
        assert_eq!(
            resolve(&global, Some(&HistorySetting::Flag(true))),
            Some(mine.into())
        );
        let off = HistorySetting::Policy(RetentionConfig {
            enabled: false,
            ..mine
        });
        assert_eq!(resolve(&off, None), None);
        assert_eq!(resolve(&HistorySetting::Flag(false), None), None);
    }

    #[test]
    fn the_configuration_takes_a_flag_or_a_table_globally_and_per_drive() {
        use crate::config::Config;
        let drive = |name: &str, extra: &str| {
            format!(
                "[[drive]]\nname = \"{name}\"\nuuid = \"0b1c2d3e-aaaa-4bbb-8ccc-0123456789a{}\"\nkey_file = \"/k/{name}\"\n{extra}\n",
                name.len()
            )
        };
        let text = format!(
            "source = \"/srv\"\n[history]\nkeep_within_days = 3\nmonthly = 6\n{}{}{}",
            drive("a", ""),
            drive("bb", "history = false"),
            drive("ccc", "[drive.history]\ndaily = 2")
        );
        let c = Config::parse(&text).unwrap();
        let r = |n: &str| c.retention(c.drive_by_name(n).unwrap());
        let global = Retention {
            keep_within_days: 3,
            monthly: 6,
            ..Retention::default()
        };
        assert_eq!(r("a"), Some(global));
        assert_eq!(r("bb"), None);
        assert_eq!(
            r("ccc"),
            Some(Retention {
                daily: 2,
                ..Retention::default()
            })
        );
        assert!(c.summary().contains("drive bb: "), "{}", c.summary());
        assert!(c.summary().contains("plain mirror"));
        // Off globally; a typo in the table is refused.
        let c = Config::parse(&format!(
            "source = \"/srv\"\nhistory = false\n{}",
            drive("a", "")
        ))
        .unwrap();
        assert_eq!(c.retention(&c.drives[0]), None);
        assert!(Config::parse("source = \"/srv\"\n[history]\ndailly = 3\n").is_err());
        // No setting: on, with the defaults.
        let c = Config::parse(&format!("source = \"/srv\"\n{}", drive("a", ""))).unwrap();
        assert_eq!(c.retention(&c.drives[0]), Some(Retention::default()));
    }
}
