//! How the orchestrator writes ages and times for people, and the clock it reads (sizes:
//! `oskit::human`, the workspace's one formatter).
//! The bottom layer: it imports nothing from this crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that sets the clock the orchestrator reads, in seconds since
/// the Unix epoch: for tests of a wrong clock (a run ten years ahead) with the real binary.
/// Nothing else sets it; `extbackup` warns when it is in effect.
pub const TEST_NOW_ENV: &str = "EXTBACKUP_TEST_NOW";

/// Seconds since the Unix epoch, now (or [`TEST_NOW_ENV`]'s when set).
pub fn now() -> u64 {
    if let Some(t) = std::env::var(TEST_NOW_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return t;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-27 00:27:22 UTC` for `secs` since the epoch.
pub fn fmt_utc(secs: u64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| format!("{secs} s after 1970"))
}

/// `3 days`, `5 hours`, `12 minutes`, `40 seconds`.
pub fn fmt_age(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s >= 2 * 86_400 => (s / 86_400, "days"),
        s if s >= 2 * 3600 => (s / 3600, "hours"),
        s if s >= 2 * 60 => (s / 60, "minutes"),
        1 => (1, "second"),
        s => (s, "seconds"),
    };
    format!("{n} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_dates() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_utc(1_795_739_242), "2026-11-27 00:27:22 UTC");
    }

    #[test]
    fn ages_pick_a_readable_unit() {
        assert_eq!(fmt_age(40), "40 seconds");
        assert_eq!(fmt_age(1), "1 second");
        assert_eq!(fmt_age(0), "0 seconds");
        assert_eq!(fmt_age(3 * 3600), "3 hours");
        assert_eq!(fmt_age(40 * 86_400), "40 days");
    }
}
