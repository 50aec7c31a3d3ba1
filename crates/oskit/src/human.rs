//! Sizes and durations as people read them, the one formatter of the workspace (logs, mail,
//! prompts, the status): `1.5 GiB`, `1 h 2 min`.
//!
//! ```
//! use std::time::Duration;
//! assert_eq!(oskit::human::bytes(1536), "1.5 KiB");
//! assert_eq!(oskit::human::duration(Duration::from_secs(3725)), "1 h 2 min");
//! ```

use std::time::Duration;

/// Binary units, one decimal: `512 B`, `1.5 KiB`, `3.0 MiB`, ... up to PiB (anything larger
/// is still said in PiB).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Tenths of a second under a minute (`2.5 s`), then minutes and seconds (`1 min 1 s`),
/// from an hour on hours and minutes (`1 h 2 min`).
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{}.{:01} s", s, d.subsec_millis() / 100),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_binary_units_with_one_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(bytes(1024 * 1024 * 1024 / 2), "512.0 MiB");
        assert_eq!(bytes(15 << 30), "15.0 GiB");
        assert_eq!(bytes(2 << 40), "2.0 TiB");
        assert_eq!(bytes(5 << 50), "5.0 PiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn durations_by_size() {
        assert_eq!(duration(Duration::ZERO), "0.0 s");
        assert_eq!(duration(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(duration(Duration::from_millis(59_990)), "59.9 s");
        assert_eq!(duration(Duration::from_secs(60)), "1 min 0 s");
        assert_eq!(duration(Duration::from_secs(61)), "1 min 1 s");
        assert_eq!(duration(Duration::from_secs(3599)), "59 min 59 s");
        assert_eq!(duration(Duration::from_secs(3725)), "1 h 2 min");
        assert_eq!(duration(Duration::from_secs(50 * 3600)), "50 h 0 min");
    }
}
