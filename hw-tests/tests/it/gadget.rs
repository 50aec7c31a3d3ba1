//! A BlinkStick made by the kernel's USB gadget framework (configfs `f_hid` on dummy_hcd):
//! it enumerates as a real USB device, so the blinkstick crate's libusb transport and
//! variant detection meet a real USB stack. SET_REPORT data is read back from /dev/hidg0.
//! (On Debian's 6.1 kernel the gadget answers GET_REPORT with zeros: read-back of colours
//! is covered by the blinkstick crate's uhid tests.)

use blinkstick::emulator::EmulatedDevice;
use blinkstick::hidapi_backend::HidapiBackend;
use blinkstick::rusb_backend::RusbBackend;
use blinkstick::{Backend, BlinkStick, DeviceInfo, Rgb, Selector, Variant};
use hw_tests::ffs::FfsBlinkStick;
use hw_tests::gadget::{GadgetSpec, UsbGadget};
use hw_tests::sysfs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One gadget at a time (there is one dummy UDC).
static UDC: Mutex<()> = Mutex::new(());

const WHY: &str =
    "needs dummy_hcd + USB gadget configfs: run in the QEMU guest by cargo xtask vm-test";

/// Waits until libusb lists a BlinkStick with `serial`.
fn wait_for(serial: &str) -> DeviceInfo {
    let backend = RusbBackend::new().expect("libusb initialises");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = backend.list().expect("libusb lists devices");
        if let Some(d) = list.into_iter().find(|d| d.serial == serial) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "the gadget {serial} did not enumerate within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_gone(serial: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sysfs::blinksticks().iter().any(|d| d.serial == serial) {
        assert!(Instant::now() < deadline, "{serial} did not go away");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nano_spec(serial: &str) -> GadgetSpec {
    GadgetSpec::blinkstick(
        serial,
        Variant::Nano.release(),
        Variant::Nano.product_string(),
        &Variant::Nano.report_descriptor(),
    )
}

#[test]
#[ignore = "needs dummy_hcd + USB gadget configfs: run in the QEMU guest by cargo xtask vm-test"]
fn vm_gadget_enumerates_with_manufacturer_and_bcd_device() {
    let _udc = UDC.lock().unwrap_or_else(|e| e.into_inner());
    let serial = "BS000042-3.0";
    let g = UsbGadget::create("bs_enum", &nano_spec(serial)).expect(WHY);

    let info = wait_for(serial);
    assert_eq!(info.manufacturer, "Agile Innovative Ltd");
    assert_eq!(info.product, "BlinkStick Nano");
    assert_eq!(info.release, 0x0202, "bcdDevice as libusb reads it");

    let sys = sysfs::blinksticks();
    let dev = sys
        .iter()
        .find(|d| d.serial == serial)
        .expect("sysfs shows the gadget too");
    assert_eq!(dev.manufacturer, "Agile Innovative Ltd");
    assert_eq!(dev.bcd_device, 0x0202);
    drop(g);
    wait_gone(serial);
}

/// Opens the gadget `serial` through `backend` and checks that reports 1, 5 and 6 arrive
/// at /dev/hidgN byte for byte.
fn colours_reach_the_gadget(backend: Arc<dyn Backend>, gadget_name: &str, serial: &str) {
    let _udc = UDC.lock().unwrap_or_else(|e| e.into_inner());
    let g = UsbGadget::create(gadget_name, &nano_spec(serial)).expect(WHY);
    wait_for(serial);
    let mut stick = open_retrying(backend, serial);
    assert_eq!(
        stick.variant(),
        Variant::Nano,
        "detected from bcdDevice 0x0202"
    );
    assert_eq!(stick.info().manufacturer, "Agile Innovative Ltd");
    // Whatever enumeration sent, start from an empty queue.
    g.drain_hidg().expect("reading /dev/hidg");

    // The seed's colour at limit 10: (5, 19, 12); report 1 carries R,G,B.
    stick.set_color(Rgb::new(5, 19, 12)).expect("set_color");
    let got = g
        .read_hidg(Duration::from_secs(5))
        .expect("reading /dev/hidg")
        .expect("the gadget received report 1");
    assert_eq!(got, vec![1, 5, 19, 12]);

    // Report 5: one indexed LED, R,G,B.
    stick
        .set_led(0, 1, Rgb::new(200, 100, 50))
        .expect("set_led");
    let got = g
        .read_hidg(Duration::from_secs(5))
        .expect("reading /dev/hidg")
        .expect("the gadget received report 5");
    assert_eq!(got, vec![5, 0, 1, 200, 100, 50]);

    // Report 6: a frame, G,R,B order, zero-padded to 8 LEDs.
    stick
        .set_frame(0, &[Rgb::new(1, 2, 3), Rgb::new(4, 5, 6)])
        .expect("set_frame");
    let got = g
        .read_hidg(Duration::from_secs(5))
        .expect("reading /dev/hidg")
        .expect("the gadget received report 6");
    let mut want = vec![6, 0, 2, 1, 3, 5, 4, 6];
    want.resize(26, 0);
    assert_eq!(got, want);
    drop(stick);
    drop(g);
    wait_gone(serial);
}

/// hidraw appears a little after libusb sees the device: retry opening for a while.
fn open_retrying(backend: Arc<dyn Backend>, serial: &str) -> BlinkStick {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match BlinkStick::open_with(backend.clone(), &Selector::Serial(serial.into())) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("opening the gadget {serial}: {e:#}"),
        }
    }
}

#[test]
#[ignore = "needs dummy_hcd + USB gadget configfs: run in the QEMU guest by cargo xtask vm-test"]
fn vm_gadget_hidapi_transport_sets_colours_seen_on_hidg() {
    let backend: Arc<dyn Backend> = Arc::new(HidapiBackend::new().expect("hidapi"));
    colours_reach_the_gadget(backend, "bs_hidapi", "BS000044-3.0");
}

/// Opens the FunctionFS stick `serial` through `backend`; sets and reads back colours
/// (report 1, report 5 + frame read, frame 6) and checks the firmware model agrees.
fn colours_round_trip_over_ffs(backend: Arc<dyn Backend>, name: &str, serial: &str) {
    let _udc = UDC.lock().unwrap_or_else(|e| e.into_inner());
    let dev = EmulatedDevice::new(Variant::Square, serial);
    let g = FfsBlinkStick::create(name, dev, None).expect(WHY);
    let info = wait_for(serial);
    assert_eq!(info.manufacturer, "Agile Innovative Ltd");
    assert_eq!(info.release, 0x0200);
    let mut stick = open_retrying(backend, serial);
    assert_eq!(stick.variant(), Variant::Square);

    let c = Rgb::new(5, 19, 12);
    stick.set_color(c).expect("set_color");
    assert_eq!(stick.color().expect("color read back"), c);
    assert_eq!(g.device().leds(0)[0], c, "the firmware model got report 1");

    let c5 = Rgb::new(200, 100, 50);
    stick.set_led(0, 3, c5).expect("set_led (report 5)");
    assert_eq!(stick.led(0, 3).expect("LED 3 read back (frame)"), c5);

    let frame: Vec<Rgb> = (0..8u8).map(|i| Rgb::new(i, 2 * i, 3 * i)).collect();
    stick.set_frame(0, &frame).expect("set_frame (report 6)");
    assert_eq!(stick.frame(8).expect("frame read back"), frame);
    assert_eq!(g.device().leds(0), frame);
    drop(stick);
    drop(g);
    wait_gone(serial);
}

#[test]
#[ignore = "needs dummy_hcd + USB gadget configfs: run in the QEMU guest by cargo xtask vm-test"]
fn vm_ffs_rusb_transport_round_trips_colours_with_device_recipient() {
    let backend: Arc<dyn Backend> = Arc::new(RusbBackend::new().expect("libusb"));
    colours_round_trip_over_ffs(backend, "bs_ffs_rusb", "BS000045-3.0");
}

#[test]
#[ignore = "needs dummy_hcd + USB gadget configfs: run in the QEMU guest by cargo xtask vm-test"]
fn vm_ffs_hidapi_transport_round_trips_colours() {
    let backend: Arc<dyn Backend> = Arc::new(HidapiBackend::new().expect("hidapi"));
    colours_round_trip_over_ffs(backend, "bs_ffs_hidapi", "BS000046-3.0");
}

#[test]
#[ignore = "needs dummy_hcd + USB gadget configfs: run in the QEMU guest by cargo xtask vm-test"]
fn vm_gadget_variant_detection_by_bcd_device() {
    let _udc = UDC.lock().unwrap_or_else(|e| e.into_inner());
    let cases = [
        ("BS000050-3.0", 0x0200, "BlinkStick", Variant::Square),
        ("BS000051-3.0", 0x0201, "BlinkStick", Variant::Strip),
        ("BS000052-3.0", 0x0202, "BlinkStick Nano", Variant::Nano),
        ("BS000053-3.0", 0x0203, "BlinkStick", Variant::Flex),
        // Major digit 2: a Pro whatever bcdDevice says.
        ("BS000054-2.0", 0x0200, "BlinkStick", Variant::Pro),
        ("BS000055-1.3", 0x0200, "BlinkStick", Variant::BlinkStick),
    ];
    for (serial, bcd, product, want) in cases {
        let spec = GadgetSpec::blinkstick(serial, bcd, product, &want.report_descriptor());
        let g = UsbGadget::create("bs_variant", &spec).expect(WHY);
        let info = wait_for(serial);
        assert_eq!(info.release, bcd, "{serial}: bcdDevice through libusb");
        assert_eq!(
            Variant::detect(&info.serial, info.release, &info.product),
            Some(want),
            "{serial} with bcdDevice {bcd:#06x}"
        );
        let backend: Arc<dyn Backend> = Arc::new(RusbBackend::new().expect("libusb"));
        let stick = BlinkStick::open_with(backend, &Selector::Serial(serial.into()))
            .expect("open the gadget");
        assert_eq!(stick.variant(), want, "{serial}: BlinkStick::variant()");
        drop(stick);
        drop(g);
        wait_gone(serial);
    }
}
