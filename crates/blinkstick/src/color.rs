//! Colours: parsing of colour words (CSS3 names, hex forms, `random`, `off`) and the
//! Python CLI's brightness-limit and inverse arithmetic.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A colour as red, green, blue bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rgb {
    /// Red, 0..=255.
    pub r: u8,
    /// Green, 0..=255.
    pub g: u8,
    /// Blue, 0..=255.
    pub b: u8,
}

impl Rgb {
    /// Black: the LED off.
    pub const OFF: Rgb = Rgb { r: 0, g: 0, b: 0 };

    /// A colour from its three components.
    pub const fn new(r: u8, g: u8, b: u8) -> Self {
        Rgb { r, g, b }
    }

    /// Parses a colour word: one of the 147 CSS3 names (any case), `#rgb`, `#rrggbb`,
    /// six bare hex digits, `random` or `off`.
    ///
    /// An unknown word is an [`InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// error that names it (the Python library silently turns it into black).
    pub fn parse(word: &str) -> Result<Self> {
        let w = word.trim();
        let lower = w.to_ascii_lowercase();
        if lower == "off" {
            return Ok(Rgb::OFF);
        }
        if lower == "random" {
            return Ok(Rgb::random());
        }
        if let Some(hex) = lower.strip_prefix('#') {
            return parse_hex(hex).ok_or_else(|| {
                Error::invalid(format!(
                    "`{w}` is not a colour: after `#` give 3 or 6 hex digits (e.g. #0f0, #33c280)"
                ))
            });
        }
        if let Some(&(_, v)) = CSS3_COLORS.iter().find(|(n, _)| *n == lower) {
            return Ok(Rgb::from_u32(v));
        }
        if lower.len() == 6 {
            if let Some(c) = parse_hex(&lower) {
                return Ok(c);
            }
        }
        Err(Error::invalid(format!(
            "unknown colour `{w}`: use a CSS3 colour name (e.g. green), #rgb, #rrggbb, \
             six hex digits (e.g. 33c280), `random` or `off`"
        )))
    }

    /// A random colour (seeded from the clock and the process id; not cryptographic).
    pub fn random() -> Self {
        use std::time::{SystemTime, UNIX_EPOCH};
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        // splitmix64
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        Rgb::from_u32((x & 0xFF_FFFF) as u32)
    }

    /// From `0xRRGGBB`.
    pub const fn from_u32(v: u32) -> Self {
        Rgb::new((v >> 16) as u8, (v >> 8) as u8, v as u8)
    }

    /// As `0xRRGGBB`.
    pub const fn to_u32(self) -> u32 {
        (self.r as u32) << 16 | (self.g as u32) << 8 | self.b as u32
    }

    /// Applies the Python CLI's `--limit`/`--brightness` arithmetic:
    /// `max = int(limit/100*255)`, then each channel `int(v/255*max)`, in `f64` exactly
    /// as CPython evaluates it (so e.g. 155 at limit 20 gives 30, where exact integer
    /// arithmetic would give 31). A limit above 100 counts as 100.
    ///
    /// ```
    /// use blinkstick::Rgb;
    /// // the seed's `--limit 10 --set-color 33c280`
    /// assert_eq!(Rgb::from_u32(0x33c280).limited(10), Rgb::new(5, 19, 12));
    /// ```
    pub fn limited(self, limit_percent: u8) -> Self {
        let max = max_rgb_value(limit_percent);
        let remap = |v: u8| (f64::from(v) / 255.0 * f64::from(max)) as u8;
        Rgb::new(remap(self.r), remap(self.g), remap(self.b))
    }

    /// `255 - v` on each channel (the Python CLI's `--inverse`, applied after the limit).
    pub fn inverted(self) -> Self {
        Rgb::new(255 - self.r, 255 - self.g, 255 - self.b)
    }

    /// Linear interpolation as Python's `morph` does it: `start*(1-d) + end*d`, truncated.
    pub fn lerp(self, to: Rgb, d: f64) -> Self {
        let f = |a: u8, b: u8| (f64::from(a) * (1.0 - d) + f64::from(b) * d) as u8;
        Rgb::new(f(self.r, to.r), f(self.g, to.g), f(self.b, to.b))
    }

    /// Each channel scaled by `level` in 0.0..=1.0 (truncated).
    pub fn scaled(self, level: f64) -> Self {
        Rgb::OFF.lerp(self, level.clamp(0.0, 1.0))
    }
}

/// The Python CLI's `max_rgb_value` for a limit in percent: `int(limit/100*255)`.
/// Limits above 100 count as 100.
pub fn max_rgb_value(limit_percent: u8) -> u8 {
    let l = f64::from(limit_percent.min(100));
    (l / 100.0 * 255.0) as u8
}

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

impl FromStr for Rgb {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Rgb::parse(s)
    }
}

fn parse_hex(hex: &str) -> Option<Rgb> {
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        6 => u32::from_str_radix(hex, 16).ok().map(Rgb::from_u32),
        3 => {
            let v = u32::from_str_radix(hex, 16).ok()?;
            let d = |s: u32| ((v >> s) & 0xF) as u8 * 17;
            Some(Rgb::new(d(8), d(4), d(0)))
        }
        _ => None,
    }
}

/// The 147 colour keywords of CSS Color Module Level 3 (§4.3 "Extended color keywords"),
/// with the specification's values (`0xRRGGBB`).
pub const CSS3_COLORS: [(&str, u32); 147] = [
    ("aliceblue", 0xf0f8ff),
    ("antiquewhite", 0xfaebd7),
    ("aqua", 0x00ffff),
    ("aquamarine", 0x7fffd4),
    ("azure", 0xf0ffff),
    ("beige", 0xf5f5dc),
    ("bisque", 0xffe4c4),
    ("black", 0x000000),
    ("blanchedalmond", 0xffebcd),
    ("blue", 0x0000ff),
    ("blueviolet", 0x8a2be2),
    ("brown", 0xa52a2a),
    ("burlywood", 0xdeb887),
    ("cadetblue", 0x5f9ea0),
    ("chartreuse", 0x7fff00),
    ("chocolate", 0xd2691e),
    ("coral", 0xff7f50),
    ("cornflowerblue", 0x6495ed),
    ("cornsilk", 0xfff8dc),
    ("crimson", 0xdc143c),
    ("cyan", 0x00ffff),
    ("darkblue", 0x00008b),
    ("darkcyan", 0x008b8b),
    ("darkgoldenrod", 0xb8860b),
    ("darkgray", 0xa9a9a9),
    ("darkgreen", 0x006400),
    ("darkgrey", 0xa9a9a9),
    ("darkkhaki", 0xbdb76b),
    ("darkmagenta", 0x8b008b),
    ("darkolivegreen", 0x556b2f),
    ("darkorange", 0xff8c00),
    ("darkorchid", 0x9932cc),
    ("darkred", 0x8b0000),
    ("darksalmon", 0xe9967a),
    ("darkseagreen", 0x8fbc8f),
    ("darkslateblue", 0x483d8b),
    ("darkslategray", 0x2f4f4f),
    ("darkslategrey", 0x2f4f4f),
    ("darkturquoise", 0x00ced1),
    ("darkviolet", 0x9400d3),
    ("deeppink", 0xff1493),
    ("deepskyblue", 0x00bfff),
    ("dimgray", 0x696969),
    ("dimgrey", 0x696969),
    ("dodgerblue", 0x1e90ff),
    ("firebrick", 0xb22222),
    ("floralwhite", 0xfffaf0),
    ("forestgreen", 0x228b22),
    ("fuchsia", 0xff00ff),
    ("gainsboro", 0xdcdcdc),
    ("ghostwhite", 0xf8f8ff),
    ("gold", 0xffd700),
    ("goldenrod", 0xdaa520),
    ("gray", 0x808080),
    ("green", 0x008000),
    ("greenyellow", 0xadff2f),
    ("grey", 0x808080),
    ("honeydew", 0xf0fff0),
    ("hotpink", 0xff69b4),
    ("indianred", 0xcd5c5c),
    ("indigo", 0x4b0082),
    ("ivory", 0xfffff0),
    ("khaki", 0xf0e68c),
    ("lavender", 0xe6e6fa),
    ("lavenderblush", 0xfff0f5),
    ("lawngreen", 0x7cfc00),
    ("lemonchiffon", 0xfffacd),
    ("lightblue", 0xadd8e6),
    ("lightcoral", 0xf08080),
    ("lightcyan", 0xe0ffff),
    ("lightgoldenrodyellow", 0xfafad2),
    ("lightgray", 0xd3d3d3),
    ("lightgreen", 0x90ee90),
    ("lightgrey", 0xd3d3d3),
    ("lightpink", 0xffb6c1),
    ("lightsalmon", 0xffa07a),
    ("lightseagreen", 0x20b2aa),
    ("lightskyblue", 0x87cefa),
    ("lightslategray", 0x778899),
    ("lightslategrey", 0x778899),
    ("lightsteelblue", 0xb0c4de),
    ("lightyellow", 0xffffe0),
    ("lime", 0x00ff00),
    ("limegreen", 0x32cd32),
    ("linen", 0xfaf0e6),
    ("magenta", 0xff00ff),
    ("maroon", 0x800000),
    ("mediumaquamarine", 0x66cdaa),
    ("mediumblue", 0x0000cd),
    ("mediumorchid", 0xba55d3),
    ("mediumpurple", 0x9370db),
    ("mediumseagreen", 0x3cb371),
    ("mediumslateblue", 0x7b68ee),
    ("mediumspringgreen", 0x00fa9a),
    ("mediumturquoise", 0x48d1cc),
    ("mediumvioletred", 0xc71585),
    ("midnightblue", 0x191970),
    ("mintcream", 0xf5fffa),
    ("mistyrose", 0xffe4e1),
    ("moccasin", 0xffe4b5),
    ("navajowhite", 0xffdead),
    ("navy", 0x000080),
    ("oldlace", 0xfdf5e6),
    ("olive", 0x808000),
    ("olivedrab", 0x6b8e23),
    ("orange", 0xffa500),
    ("orangered", 0xff4500),
    ("orchid", 0xda70d6),
    ("palegoldenrod", 0xeee8aa),
    ("palegreen", 0x98fb98),
    ("paleturquoise", 0xafeeee),
    ("palevioletred", 0xdb7093),
    ("papayawhip", 0xffefd5),
    ("peachpuff", 0xffdab9),
    ("peru", 0xcd853f),
    ("pink", 0xffc0cb),
    ("plum", 0xdda0dd),
    ("powderblue", 0xb0e0e6),
    ("purple", 0x800080),
    ("red", 0xff0000),
    ("rosybrown", 0xbc8f8f),
    ("royalblue", 0x4169e1),
    ("saddlebrown", 0x8b4513),
    ("salmon", 0xfa8072),
    ("sandybrown", 0xf4a460),
    ("seagreen", 0x2e8b57),
    ("seashell", 0xfff5ee),
    ("sienna", 0xa0522d),
    ("silver", 0xc0c0c0),
    ("skyblue", 0x87ceeb),
    ("slateblue", 0x6a5acd),
    ("slategray", 0x708090),
    ("slategrey", 0x708090),
    ("snow", 0xfffafa),
    ("springgreen", 0x00ff7f),
    ("steelblue", 0x4682b4),
    ("tan", 0xd2b48c),
    ("teal", 0x008080),
    ("thistle", 0xd8bfd8),
    ("tomato", 0xff6347),
    ("turquoise", 0x40e0d0),
    ("violet", 0xee82ee),
    ("wheat", 0xf5deb3),
    ("white", 0xffffff),
    ("whitesmoke", 0xf5f5f5),
    ("yellow", 0xffff00),
    ("yellowgreen", 0x9acd32),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(Rgb::parse("33c280").unwrap(), Rgb::new(0x33, 0xc2, 0x80));
        assert_eq!(Rgb::parse("#33C280").unwrap(), Rgb::new(0x33, 0xc2, 0x80));
        assert_eq!(Rgb::parse("#0f8").unwrap(), Rgb::new(0, 0xff, 0x88));
        assert!(Rgb::parse("#12345").is_err());
        assert!(Rgb::parse("#gggggg").is_err());
        assert_eq!(Rgb::parse("off").unwrap(), Rgb::OFF);
        assert_eq!(Rgb::parse("OFF").unwrap(), Rgb::OFF);
    }

    #[test]
    fn unknown_word_names_it() {
        let e = Rgb::parse("greenish").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("`greenish`"), "{e}");
    }

    #[test]
    fn names_are_unique_sorted_lowercase() {
        for w in CSS3_COLORS.windows(2) {
            assert!(w[0].0 < w[1].0, "{} !< {}", w[0].0, w[1].0);
        }
        assert!(CSS3_COLORS
            .iter()
            .all(|(n, _)| n.bytes().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn limit_arithmetic_matches_python() {
        assert_eq!(max_rgb_value(10), 25);
        assert_eq!(max_rgb_value(100), 255);
        assert_eq!(max_rgb_value(0), 0);
        assert_eq!(max_rgb_value(50), 127);
        assert_eq!(max_rgb_value(33), 84);
        // (51,194,128) at max 25: 51/255*25 = 5.0, 194/255*25 = 19.02, 128/255*25 = 12.55
        assert_eq!(Rgb::from_u32(0x33c280).limited(10), Rgb::new(5, 19, 12));
        assert_eq!(
            Rgb::new(255, 255, 255).limited(100),
            Rgb::new(255, 255, 255)
        );
        assert_eq!(Rgb::new(1, 2, 3).limited(0), Rgb::OFF);
        assert_eq!(
            Rgb::from_u32(0x33c280).limited(10).inverted(),
            Rgb::new(250, 236, 243)
        );
    }

    #[test]
    fn random_varies() {
        let a: Vec<_> = (0..20)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_micros(50));
                Rgb::random()
            })
            .collect();
        assert!(a.iter().any(|c| *c != a[0]));
    }
}
