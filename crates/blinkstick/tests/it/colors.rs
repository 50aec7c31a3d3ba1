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
