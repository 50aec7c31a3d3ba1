//! Through the kernel: an emulated stick served over /dev/uhid, driven by the hidapi
//! transport and by the `blinkstick` binary. Need the uhid module: run in the QEMU
//! guest by `cargo xtask vm-test`.

use std::process::Command;
use std::time::{Duration, Instant};

use blinkstick::emulator::{uhid::UhidDevice, EmulatedDevice};
use blinkstick::{BlinkStick, Mode, RetryPolicy, Rgb, Variant};

/// Creates the uhid device and waits until hidapi lists it (up to 10 s).
fn serve(variant: Variant, serial: &str) -> (EmulatedDevice, UhidDevice) {
    let dev = EmulatedDevice::new(variant, serial);
    let uhid = UhidDevice::create(dev.clone()).expect("creating the uhid device");
    let t0 = Instant::now();
    loop {
        let list = BlinkStick::list().expect("listing through hidapi");
        if list.iter().any(|d| d.serial == serial) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "hidapi never listed {serial}: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (dev, uhid)
}

/// Waits (up to 10 s) until `serial` is the only stick hidapi lists: devices of earlier
/// tests are destroyed asynchronously, and the binary acts on every stick it finds.
fn wait_alone(serial: &str) {
    let t0 = Instant::now();
    loop {
        let list = BlinkStick::list().expect("listing through hidapi");
        if list.len() == 1 && list[0].serial == serial {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "other sticks still listed besides {serial}: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open(serial: &str) -> BlinkStick {
    let mut s = BlinkStick::open_serial(serial).expect("opening through hidapi");
    s.set_retry_policy(RetryPolicy::default());
    s
}

#[test]
#[ignore = "needs uhid: run in the QEMU guest by cargo xtask vm-test"]
fn vm_uhid_every_report_round_trips_through_hidapi() {
    let (dev, _u) = serve(Variant::Flex, "BS000101-3.0");
    let mut s = open("BS000101-3.0");
    assert_eq!(s.variant(), Variant::Flex);

    s.set_color(Rgb::new(1, 2, 3)).unwrap();
    assert_eq!(dev.leds(0)[0], Rgb::new(1, 2, 3));
    assert_eq!(s.color().unwrap(), Rgb::new(1, 2, 3));

    s.set_led(0, 5, Rgb::new(4, 5, 6)).unwrap();
    assert_eq!(dev.leds(0)[5], Rgb::new(4, 5, 6));
    assert_eq!(s.led(0, 5).unwrap(), Rgb::new(4, 5, 6));

    for n in [8usize, 16, 32] {
        let c: Vec<Rgb> = (0..n)
            .map(|i| Rgb::new(i as u8, 7, 200 - i as u8))
            .collect();
        s.set_frame(0, &c).unwrap();
        assert_eq!(&dev.leds(0)[..n], &c[..], "{n} LEDs");
        assert_eq!(s.frame(n).unwrap(), c);
    }

    s.set_mode(Mode::Ws2812Mirror).unwrap();
    assert_eq!(s.mode().unwrap(), Mode::Ws2812Mirror);
    s.set_mode(Mode::Ws2812).unwrap();

    s.set_info_block1("name here").unwrap();
    s.set_info_block2("data here").unwrap();
    assert_eq!(s.info_block1().unwrap(), "name here");
    assert_eq!(s.info_block2().unwrap(), "data here");

    s.set_led_count(20).unwrap();
    assert_eq!(s.led_count().unwrap(), 20);

    // 64-LED frames: a Pro in mode 2
    let (pdev, _p) = serve(Variant::Pro, "BS000102-2.0");
    let mut p = open("BS000102-2.0");
    p.set_mode(Mode::Ws2812).unwrap();
    let c: Vec<Rgb> = (0..64).map(|i| Rgb::new(i as u8, 2 * i as u8, 3)).collect();
    p.set_frame(2, &c).unwrap();
    assert_eq!(pdev.leds(2), c);
    assert_eq!(p.frame(64).unwrap(), c);
}

#[test]
#[ignore = "needs uhid: run in the QEMU guest by cargo xtask vm-test"]
fn vm_uhid_seed_commands_through_the_binary() {
    let (dev, _u) = serve(Variant::Square, "BS000103-3.0");
    wait_alone("BS000103-3.0");
    let slots = std::env::temp_dir().join(format!("vm-slots-{}", std::process::id()));
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_blinkstick"))
            .env_remove("BLINKSTICK_EMULATE")
            .env("BLINKSTICK_SLOTS_DIR", &slots)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "blinkstick {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // the state read back through the kernel (GET_REPORT over uhid, hidapi, the binary)
    let shown = |index: &str| {
        let info = run(&["--index", index, "--info"]);
        info.lines()
            .find_map(|l| l.trim().strip_prefix("Current Color:"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_else(|| panic!("no colour in --info:\n{info}"))
    };
    // the seed's exact commands
    run(&["--index", "1", "--limit", "10", "--set-color", "33c280"]);
    assert_eq!(dev.leds(0)[1], Rgb::new(5, 19, 12));
    assert!(dev.sent_reports().contains(&vec![5, 0, 1, 5, 19, 12]));
    assert_eq!(shown("1"), "#05130c");
    run(&["--index", "1", "--limit", "10", "--set-color", "green"]);
    assert_eq!(dev.leds(0)[1], Rgb::new(0, 12, 0));
    assert_eq!(shown("1"), "#000c00");
    run(&["--set-color", "green"]);
    assert_eq!(dev.leds(0)[0], Rgb::new(0, 128, 0));
    assert_eq!(shown("0"), "#008000");
    // a shared LED through the kernel: a failure outranks another job's working
    let mut job = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = job.id().to_string();
    run(&["--slot", "nas", "--state", "working", "--owner-pid", &pid]);
    assert_eq!(shown("1"), "#05130c");
    run(&["--slot", "drive-a", "--state", "failure"]);
    assert_eq!(shown("1"), "#190000");
    run(&["--slot", "drive-a", "--ack"]);
    assert_eq!(shown("1"), "#05130c");
    // the job dies: its watcher redraws, the LED goes off
    job.kill().unwrap();
    job.wait().unwrap();
    let t0 = Instant::now();
    while shown("1") != "#000000" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the dead job's slot stayed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&slots);
}

#[test]
#[ignore = "needs uhid: run in the QEMU guest by cargo xtask vm-test"]
fn vm_uhid_variants_by_serial() {
    let cases = [
        (Variant::BlinkStick, "BS000111-1.2"),
        (Variant::Pro, "BS000112-2.0"),
        (Variant::Square, "BS000113-3.0"),
        (Variant::Strip, "BS000114-3.0"),
        (Variant::Nano, "BS000115-3.0"),
        (Variant::Flex, "BS000116-3.0"),
    ];
    let _served: Vec<_> = cases.iter().map(|&(v, s)| serve(v, s)).collect();
    for (v, s) in cases {
        assert_eq!(open(s).variant(), v, "{s}");
    }
}
