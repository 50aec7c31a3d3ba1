//! Variant detection from serial, bcdDevice and product string.

use std::sync::Arc;

use blinkstick::emulator::{EmulatedBus, EmulatedDevice};
use blinkstick::{BlinkStick, Selector, Variant};

#[test]
fn every_variant_detected_from_its_enumeration() {
    let serials = [
        (Variant::BlinkStick, "BS000001-1.2"),
        (Variant::Pro, "BS000002-2.0"),
        (Variant::Square, "BS000003-3.0"),
        (Variant::Strip, "BS000004-3.0"),
        (Variant::Nano, "BS000005-3.0"),
        (Variant::Flex, "BS000006-3.0"),
    ];
    let bus = EmulatedBus::new();
    for (v, s) in serials {
        bus.plug(EmulatedDevice::new(v, s));
    }
    let bus = Arc::new(bus);
    for (v, s) in serials {
        let stick = BlinkStick::open_with(bus.clone(), &Selector::Serial(s.into())).unwrap();
        assert_eq!(stick.variant(), v, "{s}");
    }
}

#[test]
fn uhid_style_info_falls_back_to_product_string() {
    // over uhid: release 0, no manufacturer
    for v in Variant::ALL {
        let major = match v {
            Variant::BlinkStick => 1,
            Variant::Pro => 2,
            _ => 3,
        };
        let serial = format!("BS000009-{major}.0");
        assert_eq!(
            Variant::detect(&serial, 0, v.product_string()),
            Some(v),
            "{v}"
        );
    }
    assert_eq!(
        Variant::detect("BS000009-3.0", 0x0202, "BlinkStick"),
        Some(Variant::Nano)
    );
    assert_eq!(
        Variant::detect("BS000009-3.0", 0x0203, ""),
        Some(Variant::Flex)
    );
    assert_eq!(Variant::detect("junk", 0, ""), None);
}

#[test]
fn caller_can_override() {
    let dev = EmulatedDevice::new(Variant::Square, "garbage-serial");
    let mut s = BlinkStick::from_transport(Box::new(dev.transport()));
    // nothing fits (no version in the serial, plain product string): the v1 default
    assert_eq!(s.variant(), Variant::BlinkStick);
    s.set_variant(Variant::Strip);
    assert_eq!(s.variant(), Variant::Strip);
    assert_eq!("nano".parse::<Variant>().unwrap(), Variant::Nano);
    assert!("nanoo".parse::<Variant>().is_err());
}
