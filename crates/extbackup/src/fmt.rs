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

/// `2026-12-03T12:00:00Z`: a time as the run records write it (ISO 8601, UTC, whole
/// seconds). A time past year 9999 (no four-digit year) falls back to the seconds.
pub fn fmt_iso(secs: u64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|t| t.year() <= 9999)
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// The seconds since the epoch of exactly `YYYY-MM-DDTHH:MM:SSZ` (what [`fmt_iso`] writes);
/// `None` for anything else, or a time before 1970.
pub fn parse_iso(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[19] != b'Z' || b[10] != b'T' {
        return None;
    }
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = &s[r];
        d.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| d.parse().ok())
            .flatten()
    };
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
    )
    .ok()?;
    u64::try_from(date.with_time(t).assume_utc().unix_timestamp()).ok()
}

/// Serde for a time kept as seconds since the epoch and written as ISO 8601 ([`fmt_iso`]):
/// reads that, or the plain number of seconds that records written before had (a drive
/// that sat in a drawer still carries those).
pub mod iso_time {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Writes `secs` as `2026-12-03T12:00:00Z`.
    pub fn serialize<S: Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_iso(*secs))
    }

    /// Reads `2026-12-03T12:00:00Z` or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(n),
            Raw::Text(t) => super::parse_iso(&t)
                .or_else(|| t.parse().ok())
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "{t:?} is not a time (YYYY-MM-DDTHH:MM:SSZ, or seconds since 1970)"
                    ))
                }),
        }
    }
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
    fn iso_times_round_trip_and_only_that_form_is_read() {
        for secs in [0, 951_782_400, 1_795_739_242, 253_402_300_799] {
            assert_eq!(parse_iso(&fmt_iso(secs)), Some(secs), "{secs}");
        }
        assert_eq!(fmt_iso(1_795_739_242), "2026-11-27T00:27:22Z");
        assert_eq!(fmt_iso(1_796_299_200), "2026-12-03T12:00:00Z");
        for bad in [
            "2026-11-27 00:27:22Z",
            "2026-11-27T00:27:22",
            "2026-11-27T00:27:22+01:00",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "+026-11-27T00:27:22Z",
            "1969-12-31T23:59:59Z",
            "2026-11-27T00:27:22.5Z",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super::iso_time")]
        at: u64,
    }

    #[test]
    fn iso_time_fields_write_iso_and_read_it_or_old_seconds() {
        let t = T { at: 1_796_299_200 };
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, r#"{"at":"2026-12-03T12:00:00Z"}"#);
        assert_eq!(serde_json::from_str::<T>(&j).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<T>(r#"{"at":1796299200}"#).unwrap(),
            t
        );
        for bad in [r#"{"at":"yesterday"}"#, r#"{"at":-5}"#, r#"{"at":1.5}"#] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
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
