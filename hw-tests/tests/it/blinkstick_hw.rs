//! A real BlinkStick, named by `BLINKSTICK_SERIAL` (the hw-test task sets it from
//! `--blinkstick SERIAL`, or to the only stick attached). Ignored unless the `hardware`
//! feature is on; a run without the variable skips each test with the reason.
//!
//! The tests leave the stick as they found it where it matters: info blocks, mode and the
//! Flex LED count are written back; LEDs end off.

use blinkstick::{BlinkStick, Mode, Player, Rgb};
use hw_tests::gate;
use std::time::Duration;

fn open() -> Option<BlinkStick> {
    let Some(serial) = gate::env("BLINKSTICK_SERIAL") else {
        testkit::skip_here(
            "no BlinkStick named: set BLINKSTICK_SERIAL (cargo xtask hw-test does it)",
        );
        return None;
    };
    let stick = BlinkStick::open_serial(&serial).unwrap_or_else(|e| {
        panic!("BLINKSTICK_SERIAL={serial} names a stick that does not open: {e:#}")
    });
    eprintln!(
        "{}: {} {} ({:?}, bcdDevice {:#06x})",
        testkit::test_name(),
        stick.info().product,
        stick.serial(),
        stick.variant(),
        stick.info().release
    );
    Some(stick)
}

#[test]
#[cfg_attr(
    not(feature = "hardware"),
    ignore = "needs a BlinkStick: cargo xtask hw-test --blinkstick SERIAL"
)]
fn hw_blinkstick_every_report_round_trips() {
    let Some(mut s) = open() else {
        return;
    };
    let v = s.variant();
    // Report 1: colour of LED 0.
    let c = Rgb::new(12, 34, 56);
    s.set_color(c).expect("report 1 set");
    assert_eq!(s.color().expect("report 1 get"), c);
    // Reports 2 and 3: info blocks (EEPROM), restored afterwards.
    let (old1, old2) = (
        s.info_block1().expect("report 2 get"),
        s.info_block2().expect("report 3 get"),
    );
    s.set_info_block1("hw-test block 1").expect("report 2 set");
    s.set_info_block2("hw-test block 2").expect("report 3 set");
    assert_eq!(s.info_block1().expect("report 2 get"), "hw-test block 1");
    assert_eq!(s.info_block2().expect("report 3 get"), "hw-test block 2");
    s.set_info_block1(&old1).expect("restore block 1");
    s.set_info_block2(&old2).expect("restore block 2");
    if v.has_frames() {
        // Report 4: the mode, written back unchanged (mode 1 darkens a Nano).
        let mode = s.mode().expect("report 4 get");
        s.set_mode(mode).expect("report 4 set");
        assert_eq!(s.mode().expect("report 4 get"), mode);
        if mode == Mode::Ws2812 {
            // Report 5 and frames 6-9 (each read back through the frame).
            s.set_led(0, 1, Rgb::new(1, 2, 3)).expect("report 5");
            assert_eq!(s.led(0, 1).expect("frame read"), Rgb::new(1, 2, 3));
            for leds in [8usize, 16, 32, 64] {
                let n = leds.min(v.max_leds());
                let colours: Vec<Rgb> = (0..n)
                    .map(|i| Rgb::new(i as u8, 2 * i as u8, 3 * i as u8))
                    .collect();
                s.set_frame(0, &colours).expect("frame set");
                assert_eq!(s.frame(n).expect("frame get"), colours, "frame of {leds}");
            }
        } else {
            eprintln!("mode {mode:?}: reports 5-9 only act in WS2812 mode; not sent");
        }
    }
    if v.has_led_count() {
        let n = s.led_count().expect("report 0x81 get");
        s.set_led_count(n).expect("report 0x81 set");
        assert_eq!(s.led_count().expect("report 0x81 get"), n);
    }
    s.all_off().expect("all off");
}

#[test]
#[cfg_attr(
    not(feature = "hardware"),
    ignore = "needs a BlinkStick: cargo xtask hw-test --blinkstick SERIAL"
)]
fn hw_blinkstick_each_led_lights_in_turn() {
    let Some(mut s) = open() else {
        return;
    };
    let v = s.variant();
    let per_channel = s.leds_per_channel().expect("LED count");
    let channels = if v.has_frames() { v.channels() } else { 1 };
    for ch in 0..channels {
        for i in 0..per_channel.min(64) {
            let idx = u8::try_from(i).expect("index below 64");
            let c = Rgb::new(0, 40, 0);
            s.set_led(ch, idx, c).expect("set one LED");
            std::thread::sleep(Duration::from_millis(60));
            if ch == 0 {
                assert_eq!(s.led(ch, idx).expect("read one LED"), c, "LED {i}");
            }
            s.set_led(ch, idx, Rgb::OFF).expect("LED off");
        }
    }
    s.all_off().expect("all off");
}

#[test]
#[cfg_attr(
    not(feature = "hardware"),
    ignore = "needs a BlinkStick: cargo xtask hw-test --blinkstick SERIAL"
)]
fn hw_blinkstick_animations_end_where_they_should() {
    let Some(mut s) = open() else {
        return;
    };
    let p = Player::new(0, 0);
    let blue = Rgb::new(0, 0, 60);
    p.blink(&mut s, blue, 2, Duration::from_millis(150))
        .expect("blink");
    assert_eq!(s.color().expect("read"), Rgb::OFF, "blink ends off");
    p.morph(&mut s, blue, Duration::from_millis(500), 20)
        .expect("morph");
    assert_eq!(s.color().expect("read"), blue, "morph ends on the target");
    p.pulse(
        &mut s,
        Rgb::new(60, 0, 0),
        1,
        Duration::from_millis(500),
        20,
    )
    .expect("pulse");
    assert_eq!(s.color().expect("read"), Rgb::OFF, "pulse ends off");
    s.all_off().expect("all off");
}

#[test]
#[cfg_attr(
    not(feature = "hardware"),
    ignore = "needs a BlinkStick and a person to replug it: cargo xtask hw-test --blinkstick SERIAL --replug"
)]
fn hw_blinkstick_survives_replug() {
    if gate::env("BLINKSTICK_REPLUG").is_none() {
        testkit::skip_here("needs a person: set BLINKSTICK_REPLUG=1 (hw-test --replug)");
        return;
    }
    let Some(mut s) = open() else {
        return;
    };
    let serial = s.serial().to_string();
    s.set_color(Rgb::new(30, 0, 30)).expect("before replug");
    eprintln!(">>> unplug the BlinkStick {serial} now, then plug it back in (60 s) <<<");
    let present = || {
        hw_tests::sysfs::blinksticks()
            .iter()
            .any(|d| d.serial == serial)
    };
    let wait = |want: bool, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while present() != want {
            assert!(std::time::Instant::now() < deadline, "{what} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait(false, "the stick was unplugged");
    eprintln!("unplugged; now plug it back in");
    wait(true, "the stick came back");
    std::thread::sleep(Duration::from_millis(500));
    // The same handle reopens by serial and goes on working.
    let c = Rgb::new(0, 30, 30);
    s.set_color(c)
        .expect("set_color after replug (reopen by serial)");
    assert_eq!(s.color().expect("read after replug"), c);
    s.all_off().expect("all off");
}

/// Runs the hardware tests above, in a child process of this test binary, against a
/// FunctionFS BlinkStick served by the firmware model: proves the tests themselves (and
/// the hidapi path over real USB) before anyone plugs a stick in.
fn hw_tests_pass_against(variant: blinkstick::Variant, serial: &str, gadget: &str) {
    use blinkstick::emulator::EmulatedDevice;
    let dev = EmulatedDevice::new(variant, serial);
    let _g = hw_tests::ffs::FfsBlinkStick::create(gadget, dev, None)
        .expect("needs dummy_hcd + usb_f_fs: run in the QEMU guest by cargo xtask vm-test");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !std::path::Path::new("/dev")
        .read_dir()
        .expect("/dev")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("hidraw"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no hidraw node for the gadget"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let exe = std::env::current_exe().expect("this test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--include-ignored",
            "--exact",
            "--test-threads=1",
            "--nocapture",
            "blinkstick_hw::hw_blinkstick_every_report_round_trips",
            "blinkstick_hw::hw_blinkstick_each_led_lights_in_turn",
            "blinkstick_hw::hw_blinkstick_animations_end_where_they_should",
        ])
        .env("BLINKSTICK_SERIAL", serial)
        .env_remove("BLINKSTICK_REPLUG")
        .output()
        .expect("running the hardware tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the hardware tests failed:\n{text}");
    assert!(
        text.contains("3 passed"),
        "all three hardware tests ran:\n{text}"
    );
    assert!(!text.contains("SKIP"), "none skipped:\n{text}");
}

#[test]
#[ignore = "needs dummy_hcd + usb_f_fs: run in the QEMU guest by cargo xtask vm-test"]
fn vm_hw_blinkstick_tests_pass_on_an_emulated_square_over_usb() {
    hw_tests_pass_against(blinkstick::Variant::Square, "BS000060-3.0", "bs_hw_square");
}

#[test]
#[ignore = "needs dummy_hcd + usb_f_fs: run in the QEMU guest by cargo xtask vm-test"]
fn vm_hw_blinkstick_tests_pass_on_an_emulated_v1_stick_over_usb() {
    hw_tests_pass_against(blinkstick::Variant::BlinkStick, "BS000061-1.4", "bs_hw_v1");
}
