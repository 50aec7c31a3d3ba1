//! Device variants, their detection from the serial/bcdDevice/product string, and
//! the HID report descriptors they declare.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// USB vendor id of every BlinkStick.
pub const VENDOR_ID: u16 = 0x20A0;
/// USB product id of every BlinkStick.
pub const PRODUCT_ID: u16 = 0x41E5;

/// The BlinkStick models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The original BlinkStick (v1.0 PWM, v1.1-1.4 one WS2812): one LED, reports 1-3.
    BlinkStick,
    /// BlinkStick Pro: three channels of up to 64 WS2812 each (or one analog strip).
    Pro,
    /// BlinkStick Square: 8 LEDs.
    Square,
    /// BlinkStick Strip: 8 LEDs.
    Strip,
    /// BlinkStick Nano: 2 LEDs.
    Nano,
    /// BlinkStick Flex: up to 32 LEDs, LED count set by report 0x81.
    Flex,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 6] = [
        Variant::BlinkStick,
        Variant::Pro,
        Variant::Square,
        Variant::Strip,
        Variant::Nano,
        Variant::Flex,
    ];

    /// Detects the variant: the serial's major digit (`BSnnnnnn-M.m`), then for major 3
    /// the `bcdDevice` (`release`), falling back to the product string when the release is
    /// unknown (0, as hidapi reports for uhid devices). `None` if nothing fits.
    pub fn detect(serial: &str, release: u16, product: &str) -> Option<Variant> {
        let major = serial_version(serial).map(|(m, _)| m);
        match major {
            Some(1) => return Some(Variant::BlinkStick),
            Some(2) => return Some(Variant::Pro),
            Some(3) => match release {
                0x0200 => return Some(Variant::Square),
                0x0201 => return Some(Variant::Strip),
                0x0202 => return Some(Variant::Nano),
                0x0203 => return Some(Variant::Flex),
                _ => {}
            },
            _ => {}
        }
        let p = product.to_ascii_lowercase();
        let by_product = if p.contains("nano") {
            Some(Variant::Nano)
        } else if p.contains("flex") {
            Some(Variant::Flex)
        } else if p.contains("strip") {
            Some(Variant::Strip)
        } else if p.contains("square") {
            Some(Variant::Square)
        } else if p.contains("pro") {
            Some(Variant::Pro)
        } else {
            None
        };
        match (major, by_product) {
            (_, Some(v)) => Some(v),
            // plain "BlinkStick" with a v3 serial: Squares report that product string
            (Some(3), None) if p.contains("blinkstick") => Some(Variant::Square),
            _ => None,
        }
    }

    /// Lower-case name used on the command line and in `BLINKSTICK_EMULATE`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::BlinkStick => "blinkstick",
            Variant::Pro => "pro",
            Variant::Square => "square",
            Variant::Strip => "strip",
            Variant::Nano => "nano",
            Variant::Flex => "flex",
        }
    }

    /// Human description, as `--info` prints it.
    pub fn description(self) -> &'static str {
        match self {
            Variant::BlinkStick => "BlinkStick",
            Variant::Pro => "BlinkStick Pro",
            Variant::Square => "BlinkStick Square",
            Variant::Strip => "BlinkStick Strip",
            Variant::Nano => "BlinkStick Nano",
            Variant::Flex => "BlinkStick Flex",
        }
    }

    /// The USB product string such a device reports (Squares report plain "BlinkStick").
    pub fn product_string(self) -> &'static str {
        match self {
            Variant::Square => "BlinkStick",
            v => v.description(),
        }
    }

    /// The `bcdDevice` such a device reports.
    pub fn release(self) -> u16 {
        match self {
            Variant::BlinkStick | Variant::Pro | Variant::Square => 0x0200,
            Variant::Strip => 0x0201,
            Variant::Nano => 0x0202,
            Variant::Flex => 0x0203,
        }
    }

    /// Number of channels addressable by reports 5-9.
    pub fn channels(self) -> u8 {
        match self {
            Variant::Pro => 3,
            _ => 1,
        }
    }

    /// The most LEDs one channel can have (the Flex's current count may be lower).
    pub fn max_leds(self) -> usize {
        match self {
            Variant::BlinkStick => 1,
            Variant::Pro => 64,
            Variant::Square | Variant::Strip => 8,
            Variant::Nano => 2,
            Variant::Flex => 32,
        }
    }

    /// Whether the device has frame reports (5-9); only the v1 BlinkStick lacks them.
    pub fn has_frames(self) -> bool {
        self != Variant::BlinkStick
    }

    /// Whether the device has the LED-count report 0x81.
    pub fn has_led_count(self) -> bool {
        self == Variant::Flex
    }

    /// Whether `report_id` is declared in this variant's descriptor.
    pub fn supports_report(self, report_id: u8) -> bool {
        match report_id {
            1..=3 => true,
            4..=9 => self.has_frames(),
            0x81 => self.has_led_count(),
            _ => false,
        }
    }

    /// The HID report descriptor this variant declares (96 bytes on a Pro).
    pub fn report_descriptor(self) -> Vec<u8> {
        let mut d = vec![
            0x06, 0x00, 0xFF, // usage page 0xFF00 (vendor)
            0x09, 0x01, // usage 1
            0xA1, 0x01, // collection (application)
            0x15, 0x00, // logical minimum 0
            0x26, 0xFF, 0x00, // logical maximum 255
            0x75, 0x08, // report size 8
        ];
        for &id in ALL_REPORTS.iter().filter(|&&id| self.supports_report(id)) {
            let count = report_len(id).expect("known report") - 1;
            d.extend_from_slice(&[
                0x85,
                id, // report id
                0x95,
                count as u8, // report count
                0x09,
                0x00, // usage (undefined)
                0xB2,
                0x02,
                0x01, // feature (data, var, abs, buffered bytes)
            ]);
        }
        d.push(0xC0); // end collection
        d
    }
}

/// Every report id the protocol knows.
pub const ALL_REPORTS: [u8; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 0x81];

/// The length of a report, report-id byte included; `None` for unknown ids.
pub fn report_len(report_id: u8) -> Option<usize> {
    Some(match report_id {
        1 => 4,
        2 | 3 => 33,
        4 => 2,
        5 => 6,
        6 => 26,
        7 => 50,
        8 => 98,
        9 => 194,
        0x81 => 2,
        _ => return None,
    })
}

/// `(major, minor)` from a serial `BSnnnnnn-M.m`.
pub fn serial_version(serial: &str) -> Option<(u8, u8)> {
    let (_, ver) = serial.rsplit_once('-')?;
    let (maj, min) = ver.split_once('.')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let l = s.to_ascii_lowercase();
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == l || (l == "stick" && *v == Variant::BlinkStick))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown variant `{s}`: use blinkstick, pro, square, strip, nano or flex"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pro_descriptor_is_96_bytes() {
        assert_eq!(Variant::Pro.report_descriptor().len(), 96);
        assert_eq!(Variant::BlinkStick.report_descriptor().len(), 42);
        assert_eq!(Variant::Flex.report_descriptor().len(), 105);
    }

    #[test]
    fn serial_versions() {
        assert_eq!(serial_version("BS012345-3.0"), Some((3, 0)));
        assert_eq!(serial_version("BS000001-1.2"), Some((1, 2)));
        assert_eq!(serial_version("garbage"), None);
    }
}
