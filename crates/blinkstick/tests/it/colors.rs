//! Colour words against the CSS3 specification's values.

use blinkstick::color::CSS3_COLORS;
use blinkstick::{ErrorKind, Rgb};

#[test]
fn css3_names_have_the_specification_values() {
    assert_eq!(CSS3_COLORS.len(), 147);
    // values from CSS Color Module Level 3, 4.3 (the Python table gets the first two wrong)
    let spec = [
        ("mediumpurple", (147, 112, 219)),
        ("palevioletred", (219, 112, 147)),
        ("green", (0, 128, 0)),
        ("lime", (0, 255, 0)),
        ("grey", (128, 128, 128)),
        ("darkgrey", (169, 169, 169)),
        ("rebeccapurple", (0, 0, 0)), // CSS4 only: must be unknown
        ("lightgoldenrodyellow", (250, 250, 210)),
        ("navajowhite", (255, 222, 173)),
        ("yellowgreen", (154, 205, 50)),
    ];
    for (name, (r, g, b)) in spec {
        if name == "rebeccapurple" {
            assert!(Rgb::parse(name).is_err());
            continue;
        }
        assert_eq!(Rgb::parse(name).unwrap(), Rgb::new(r, g, b), "{name}");
    }
}

#[test]
fn every_name_parses_case_insensitively() {
    for (name, v) in CSS3_COLORS {
        assert_eq!(Rgb::parse(name).unwrap(), Rgb::from_u32(v));
        assert_eq!(
            Rgb::parse(&name.to_ascii_uppercase()).unwrap(),
            Rgb::from_u32(v)
        );
    }
}

#[test]
fn hex_and_words() {
    assert_eq!(Rgb::parse("33c280").unwrap(), Rgb::new(51, 194, 128));
    assert_eq!(Rgb::parse("#fff").unwrap(), Rgb::new(255, 255, 255));
    assert_eq!(
        Rgb::parse("#00ff7f").unwrap(),
        Rgb::parse("springgreen").unwrap()
    );
    assert_eq!(Rgb::parse("off").unwrap(), Rgb::OFF);
    let e = Rgb::parse("blurple").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("blurple"));
}

#[test]
fn limit_and_inverse_match_python_arithmetic() {
    // int(int(N/100*255) ...) computed independently here with integer-exact cases
    let c = Rgb::parse("33c280").unwrap();
    assert_eq!(c.limited(10), Rgb::new(5, 19, 12));
    assert_eq!(c.limited(10).inverted(), Rgb::new(250, 236, 243));
    assert_eq!(Rgb::parse("green").unwrap().limited(10), Rgb::new(0, 12, 0));
    assert_eq!(Rgb::new(255, 255, 255).limited(50), Rgb::new(127, 127, 127));
    assert_eq!(c.limited(100), c);
}

/// Python 1.2.0's arithmetic, step by step in f64 as CPython evaluates it:
/// the CLI's `max_rgb_value = int(float(N) / 100 * 255)`, then `_remap(v, 0, 255, 0, max)`
/// = `int(0 + (float(v - 0) / float(255 - 0)) * (max - 0))`. `int()` of a float truncates.
fn python_max(n: u8) -> f64 {
    (f64::from(n) / 100.0 * 255.0).trunc()
}

fn python_limit(v: u8, n: u8) -> u8 {
    let max = python_max(n);
    let scaled = (f64::from(v) - 0.0) / (255.0 - 0.0);
    (0.0 + scaled * (max - 0.0)).trunc() as u8
}

#[test]
fn limit_matches_python_float_arithmetic_for_every_value_and_percent() {
    for n in 0..=100u8 {
        assert_eq!(
            f64::from(blinkstick::color::max_rgb_value(n)),
            python_max(n),
            "max for N={n}"
        );
        for v in 0..=255u8 {
            let want = python_limit(v, n);
            let got = Rgb::new(v, 0, 255 - v).limited(n);
            assert_eq!(
                got,
                Rgb::new(want, 0, python_limit(255 - v, n)),
                "v={v} N={n}"
            );
            // --inverse: 255 - v after the limit
            assert_eq!(
                got.inverted(),
                Rgb::new(255 - want, 255, 255 - python_limit(255 - v, n))
            );
        }
    }
}

#[test]
fn limit_keeps_pythons_float_truncation_where_integer_arithmetic_differs() {
    // Where float arithmetic lands just below an integer, Python sends one less than
    // exact integer arithmetic would (values printed by CPython 3 for
    // `int(v/255*int(N/100*255))`). These are the only such cases in 0..=255 x 0..=100.
    let cpython = [
        ((155u8, 20u8), 30u8),
        ((155, 40), 61),
        ((187, 59), 109),
        ((155, 60), 92),
        ((195, 60), 116),
        ((187, 65), 120),
        ((147, 67), 97),
        ((171, 67), 113),
        ((155, 80), 123),
    ];
    for ((v, n), want) in cpython {
        assert_eq!(Rgb::new(v, v, v).limited(n), Rgb::new(want, want, want));
    }
    let mut differ = Vec::new();
    for n in 0..=100u32 {
        let max = n * 255 / 100;
        for v in 0..=255u32 {
            let exact = (v * max / 255) as u8;
            if Rgb::new(v as u8, 0, 0).limited(n as u8).r != exact {
                differ.push((v as u8, n as u8));
            }
        }
    }
    let expected: Vec<(u8, u8)> = {
        let mut e: Vec<_> = cpython.iter().map(|&(k, _)| k).collect();
        e.sort_by_key(|&(v, n)| (n, v));
        e
    };
    assert_eq!(differ, expected);
}
