//! Every report, both directions, against the emulated firmware.

use blinkstick::{BlinkStick, ErrorKind, Mode, Rgb, Variant};

use crate::open;

#[test]
fn report1_colour_round_trip() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    s.set_color(Rgb::new(10, 20, 30)).unwrap();
    assert_eq!(dev.sent_reports(), vec![vec![1, 10, 20, 30]]);
    assert_eq!(dev.leds(0)[0], Rgb::new(10, 20, 30));
    assert_eq!(s.color().unwrap(), Rgb::new(10, 20, 30));
}

#[test]
fn seed_command_sends_report5_bytes() {
    // `blinkstick --index 1 --limit 10 --set-color 33c280`
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    let c = Rgb::parse("33c280").unwrap().limited(10);
    s.set_led(0, 1, c).unwrap();
    assert_eq!(dev.sent_reports(), vec![vec![5, 0, 1, 5, 19, 12]]);
    assert_eq!(dev.leds(0)[1], Rgb::new(5, 19, 12));
}

#[test]
fn indexed_led_set_and_read_back() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    s.set_led(0, 5, Rgb::new(1, 2, 3)).unwrap();
    assert_eq!(dev.sent_reports(), vec![vec![5, 0, 5, 1, 2, 3]]);
    dev.clear_log();
    assert_eq!(s.led(0, 5).unwrap(), Rgb::new(1, 2, 3));
    // read back through frame report 6, which carries GRB
    let log = dev.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].data[0], 6);
    assert_eq!(&log[0].data[2 + 15..2 + 18], &[2, 1, 3]);
}

#[test]
fn frames_of_every_size_one_report_each() {
    for (n, id, len) in [
        (8usize, 6u8, 26usize),
        (16, 7, 50),
        (32, 8, 98),
        (64, 9, 194),
    ] {
        let (dev, mut s) = open(Variant::Pro, "BS000002-2.0");
        s.set_mode(Mode::Ws2812).unwrap();
        dev.clear_log();
        let colors: Vec<Rgb> = (0..n)
            .map(|i| Rgb::new(i as u8, 100 + i as u8, 200))
            .collect();
        s.set_frame(1, &colors).unwrap();
        let sent = dev.sent_reports();
        assert_eq!(sent.len(), 1, "{n} LEDs in one report");
        assert_eq!(sent[0][0], id);
        assert_eq!(sent[0].len(), len);
        assert_eq!(sent[0][1], 1, "channel byte");
        assert_eq!(&sent[0][2..5], &[100, 0, 200], "GRB order on the wire");
        assert_eq!(&dev.leds(1)[..n], &colors[..]);
        assert_eq!(s.frame(n).unwrap(), colors);
    }
}

#[test]
fn short_frame_uses_smallest_report_zero_padded() {
    let (dev, mut s) = open(Variant::Strip, "BS000004-3.0");
    s.set_frame(0, &[Rgb::new(9, 8, 7); 3]).unwrap();
    let sent = dev.sent_reports();
    assert_eq!(sent[0].len(), 26);
    assert_eq!(sent[0][0], 6);
    assert!(sent[0][11..].iter().all(|&b| b == 0));
    assert_eq!(
        dev.leds(0),
        [vec![Rgb::new(9, 8, 7); 3], vec![Rgb::OFF; 5]].concat()
    );
}

#[test]
fn too_many_leds_is_invalid() {
    let (dev, mut s) = open(Variant::Pro, "BS000002-2.0");
    let e = s.set_frame(0, &[Rgb::OFF; 65]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(dev.sent_reports().is_empty());
}

#[test]
fn mode_round_trip() {
    let (dev, mut s) = open(Variant::Pro, "BS000002-2.0");
    assert_eq!(s.mode().unwrap(), Mode::Normal);
    s.set_mode(Mode::Ws2812Mirror).unwrap();
    assert_eq!(dev.sent_reports(), vec![vec![4, 3]]);
    assert_eq!(s.mode().unwrap(), Mode::Ws2812Mirror);
}

#[test]
fn mirror_mode_copies_report1_to_every_led() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    s.set_mode(Mode::Ws2812Mirror).unwrap();
    s.set_color(Rgb::new(7, 7, 9)).unwrap();
    assert_eq!(dev.leds(0), vec![Rgb::new(7, 7, 9); 8]);
}

#[test]
fn info_blocks_round_trip_and_limit() {
    let (dev, mut s) = open(Variant::Nano, "BS000005-3.0");
    s.set_info_block1("backup LED").unwrap();
    s.set_info_block2(&"x".repeat(32)).unwrap();
    let sent = dev.sent_reports();
    assert_eq!(sent[0].len(), 33);
    assert_eq!(&sent[0][..11], b"\x02backup LED");
    assert!(sent[0][11..].iter().all(|&b| b == 0));
    assert_eq!(s.info_block1().unwrap(), "backup LED");
    assert_eq!(s.info_block2().unwrap(), "x".repeat(32));
    dev.clear_log();
    let e = s.set_info_block1(&"y".repeat(33)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        dev.sent_reports().is_empty(),
        "nothing sent for an over-long block"
    );
}

#[test]
fn led_count_on_flex_only() {
    let (dev, mut s) = open(Variant::Flex, "BS000006-3.0");
    assert_eq!(s.led_count().unwrap(), 32);
    s.set_led_count(12).unwrap();
    assert_eq!(dev.sent_reports(), vec![vec![0x81, 12]]);
    assert_eq!(s.led_count().unwrap(), 12);
    assert_eq!(dev.leds(0).len(), 12);
    assert_eq!(
        s.set_led_count(33).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    let (_, mut sq) = open(Variant::Square, "BS000001-3.0");
    assert_eq!(sq.led_count().unwrap_err().kind(), ErrorKind::Unsupported);
}

#[test]
fn v1_stick_has_no_frames() {
    let (dev, mut s) = open(Variant::BlinkStick, "BS000007-1.4");
    assert_eq!(
        s.set_frame(0, &[Rgb::OFF]).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(s.mode().unwrap_err().kind(), ErrorKind::Unsupported);
    assert_eq!(
        s.set_led(0, 1, Rgb::OFF).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert!(dev.sent_reports().is_empty());
    // its descriptor lacks the reports: the firmware model refuses them too
    assert!(dev.with_firmware(|f| f.handle_set_feature(&[6, 0]).is_err()));
}

#[test]
fn pro_ignores_indexed_and_frames_unless_mode_2() {
    let (dev, mut s) = open(Variant::Pro, "BS000002-2.0");
    s.set_led(0, 3, Rgb::new(1, 1, 1)).unwrap();
    s.set_frame(0, &[Rgb::new(2, 2, 2)]).unwrap();
    assert!(dev.leds(0).iter().all(|&c| c == Rgb::OFF));
    s.set_mode(Mode::Ws2812).unwrap();
    s.set_led(2, 3, Rgb::new(1, 1, 1)).unwrap();
    assert_eq!(dev.leds(2)[3], Rgb::new(1, 1, 1));
}

#[test]
fn pro_channels_share_one_buffer() {
    let (dev, mut s) = open(Variant::Pro, "BS000002-2.0");
    s.set_mode(Mode::Ws2812).unwrap();
    let (a, b) = (Rgb::new(4, 5, 6), Rgb::new(7, 8, 9));
    s.set_frame(2, &[a]).unwrap();
    // a frame read has no channel: it returns the one shared buffer
    assert_eq!(s.frame(1).unwrap(), vec![a]);
    s.set_frame(0, &[b]).unwrap();
    assert_eq!(s.frame(1).unwrap(), vec![b]);
    assert_eq!(dev.leds(2)[0], a, "channel 2 keeps what it was sent");
    assert_eq!(dev.leds(0)[0], b);
}

#[test]
fn set_channel_is_one_frame_report() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    s.set_channel(0, Rgb::new(0, 0, 255)).unwrap();
    let sent = dev.sent_reports();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][0], 6);
    assert_eq!(dev.leds(0), vec![Rgb::new(0, 0, 255); 8]);
}

#[test]
fn sixty_four_leds_take_one_report() {
    let (dev, mut s) = open(Variant::Pro, "BS000002-2.0");
    s.set_mode(Mode::Ws2812).unwrap();
    dev.clear_log();
    s.set_channel(0, Rgb::new(1, 2, 3)).unwrap();
    assert_eq!(dev.sent_reports().len(), 1);
    assert_eq!(dev.leds(0), vec![Rgb::new(1, 2, 3); 64]);
}

#[test]
fn all_off_turns_every_led_off() {
    let (dev, mut s) = open(Variant::Pro, "BS000002-2.0");
    s.set_mode(Mode::Ws2812).unwrap();
    for ch in 0..3 {
        s.set_channel(ch, Rgb::new(9, 9, 9)).unwrap();
    }
    s.all_off().unwrap();
    for ch in 0..3 {
        assert!(dev.leds(ch).iter().all(|&c| c == Rgb::OFF), "channel {ch}");
    }
    let (dev, mut sq) = open(Variant::Square, "BS000001-3.0");
    sq.set_channel(0, Rgb::new(9, 9, 9)).unwrap();
    sq.all_off().unwrap();
    assert!(dev.leds(0).iter().all(|&c| c == Rgb::OFF));
}

#[test]
fn square_ignores_other_channels() {
    let (dev, mut s) = open(Variant::Square, "BS000001-3.0");
    s.set_variant(Variant::Pro); // pretend, so the driver sends channel 1
    s.set_frame(1, &[Rgb::new(1, 1, 1)]).unwrap();
    assert_eq!(dev.leds(0)[0], Rgb::OFF);
    // report 5's channel byte is ignored by a Square
    s.set_led(1, 2, Rgb::new(3, 3, 3)).unwrap();
    assert_eq!(dev.leds(0)[2], Rgb::new(3, 3, 3));
}

#[test]
fn trace_hook_sees_both_directions() {
    use std::sync::{Arc, Mutex};
    let (_dev, mut s) = open(Variant::Square, "BS000001-3.0");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    s.set_trace(move |_, d, data| s2.lock().unwrap().push((d, data.to_vec())));
    s.set_color(Rgb::new(1, 2, 3)).unwrap();
    s.color().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], (blinkstick::Direction::Sent, vec![1, 1, 2, 3]));
    assert_eq!(seen[1], (blinkstick::Direction::Received, vec![1, 1, 2, 3]));
}

#[test]
fn frame_report_choice() {
    assert_eq!(BlinkStick::frame_report_for(24), Some(8));
}

#[test]
fn absurd_frame_sizes_are_errors_not_overflows() {
    assert_eq!(BlinkStick::frame_report_for(usize::MAX), None);
    // times 3 this wraps around to a small number
    assert_eq!(BlinkStick::frame_report_for(usize::MAX / 3 + 1), None);
    let (_dev, mut s) = open(Variant::Pro, "BS000002-2.0");
    assert_eq!(
        s.frame(usize::MAX / 3 + 1).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn public_types_can_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<BlinkStick>();
    send::<blinkstick::emulator::EmulatedTransport>();
    send_sync::<blinkstick::Error>();
    send_sync::<blinkstick::Player>();
    send_sync::<blinkstick::CancelToken>();
    send_sync::<blinkstick::SystemClock>();
    send_sync::<blinkstick::ManualClock>();
    send_sync::<blinkstick::emulator::EmulatedDevice>();
    send_sync::<blinkstick::emulator::EmulatedBus>();
    send_sync::<Rgb>();
    send_sync::<blinkstick::DeviceInfo>();
    #[cfg(feature = "hidapi")]
    send_sync::<blinkstick::hidapi_backend::HidapiBackend>();
    #[cfg(feature = "rusb")]
    send_sync::<blinkstick::rusb_backend::RusbBackend>();
}
