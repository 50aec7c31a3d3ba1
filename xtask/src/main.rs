//! Project automation for the extbackup workspace.
//!
//! Run `cargo xtask help` for the list of tasks. Every task finds the repository root
//! from this crate's manifest directory, so it works from any folder of the checkout.

mod arch;
mod bench;
mod deb;
mod demo;
mod deps;
mod hw_test;
mod parity;
mod pyenv;
mod tidy;
mod util;
mod vm;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <TASK> [OPTIONS]

Tasks:
  test [--quick]   Install missing system packages (apt, as root), then run
                   cargo fmt --check, clippy -D warnings, the docs build and every
                   test (unit, host integration on loop devices, the blinkstick
                   parity table against the Python tool, the Debian package (deb --debug
                   --check: lintian, installed with dpkg), and the QEMU guest suites
                   (amd64, then the arm64 set) unless --quick).
  bench [AREA...] [--files N]
                   Benchmarks, each against a baseline measured in the same run
                   (areas: blinkstick crypt extbackup first-copy history indicator manifest
                   scale sync verify; default all but scale, which runs only when
                   named: a whole run at N files, default 200,000, minutes).
  parity           The blinkstick CLI against the real Python tool (PyPI BlinkStick
                   1.2.0 in a venv, its USB calls recorded by a fake device): a
                   table of cases, identical or deliberately different.
  demo [--vm | --host] [--keep]
                   Prepare a disk image on a loop device and back a sample tree up
                   onto it with `extbackup`; shows the LED states, the mail, status.
                   Real LUKS: here if the kernel has dm-crypt, else in the QEMU guest
                   (--host: stay here, loopback-test backend, no encryption).
  vm-test [--filter SUBSTR] [--keep-going] [--verbose] [--timeout SECS]
          [--test-timeout SECS] [-p PKG] [--arch amd64|arm64]
                   Build the test binaries, boot Debian's kernel in QEMU (tcg) and
                   run every `vm_` test there (dm-crypt, uhid, USB gadget).
                   --arch arm64: cross-build and run the arm64 set (docs/testing.md)
                   in qemu-system-aarch64 on Debian's arm64 kernel and userland.
                   Ends with `N passed, N failed`; see docs/testing.md.
  vm-run [--verbose] [--systemd] [--arch amd64|arm64] [--timeout SECS] -- CMD [ARGS...]
                   Run one command in the same QEMU guest (as root, chrooted into
                   the host's / (arm64: the cache's arm64 tree), cwd = repository
                   root) and print its output.
  hw-test [--blinkstick SERIAL] [--drive /dev/sdX --yes-destroy]
                   Tests against real hardware (a BlinkStick, a USB drive); lists
                   and skips what is absent. See docs/hardware-testing.md.
  tidy             Check the architecture's invariants: blinkstick-hid depends on
                   nothing here, hidapi/rusb/libcryptsetup-rs/lettre/nix only in
                   their crates, no unused dependencies, no module import cycle in
                   any crate, extbackup's layers import downwards only (every
                   folder read), the docs name every crate.
  deb [--arch amd64|arm64] [--debug] [--check] [--out DIR]
                   Build the Debian package (target/deb/extbackup_VERSION_ARCH.deb):
                   the binaries, man pages and completions generated from the CLI, the
                   systemd units, the BlinkStick udev rule, /etc/extbackup, the docs,
                   an example config and the maintainer scripts. --arch arm64
                   cross-builds for 64-bit ARM boards (default: this machine's, amd64);
                   it installs what it needs (deps --arch arm64). --check runs lintian
                   (no errors, no warnings), installs it with dpkg --root into an empty
                   folder and runs it there; --debug packages the debug binaries (no
                   release build; what `test` does).
  deps [--arch arm64]
                   Only install the system packages the workspace needs; with --arch
                   arm64 also the cross build's (dpkg --add-architecture arm64, Debian's
                   cross gcc, the :arm64 -dev packages, the Rust target).
  help             This text.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match task {
        "test" => test(rest),
        "deps" => deps_task(rest),
        "tidy" => tidy::run(),
        "bench" => bench::run(rest),
        "demo" => demo::run(rest),
        "deb" => deb::run(rest),
        "vm-test" => vm::vm_test(rest),
        "vm-run" => vm::vm_run(rest),
        "hw-test" => hw_test::run(rest),
        "parity" => parity::run(rest),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown task `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn deps_task(args: &[String]) -> anyhow::Result<()> {
    match args {
        [] => deps::ensure(deps::Set::All),
        [a, v] if a == "--arch" => match arch::Arch::parse(v)? {
            a if a.is_host() => deps::ensure(deps::Set::All),
            _ => deps::ensure(deps::Set::Arm64),
        },
        _ => anyhow::bail!("usage: cargo xtask deps [--arch amd64|arm64]"),
    }
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let mut quick = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            other => anyhow::bail!("unknown option `{other}` for `cargo xtask test`"),
        }
    }
    deps::ensure(deps::Set::All)?;
    let root = util::root();
    tidy::run()?;
    util::cargo(&root, &["fmt", "--all", "--", "--check"], &[])?;
    util::cargo(
        &root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    util::cargo(
        &root,
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // Every test must run its real part: a test that would skip fails instead
    // (testkit::skip), and the skips are counted (zero expected, as root).
    let skip_log = root.join("target/test-skips.log");
    let _ = std::fs::remove_file(&skip_log);
    let tests = util::cargo(
        &root,
        &["test", "--workspace", "--features", util::TEST_FEATURES],
        &[
            ("EXTBACKUP_REQUIRE_REAL", "1"),
            ("EXTBACKUP_SKIP_LOG", &skip_log.to_string_lossy()),
        ],
    );
    let skips = std::fs::read_to_string(&skip_log).unwrap_or_default();
    let n = skips.lines().count();
    eprintln!("xtask: tests that could not run their real part: {n}");
    for l in skips.lines() {
        eprintln!("xtask:   {l}");
    }
    tests?;
    anyhow::ensure!(
        n == 0,
        "{n} test(s) could not run their real part (see above)"
    );
    parity::run(&[])?;
    // The package from the debug binary the tests just built: no release build in CI.
    deb::run(&["--debug".into(), "--check".into()])?;
    if quick {
        eprintln!("xtask: --quick: skipping the QEMU guest suite (cargo xtask vm-test)");
    } else {
        vm::vm_test(&[])?;
        // The arm64 set in an arm64 guest (cross-built; deps --arch arm64 the first time).
        vm::vm_test(&["--arch".into(), "arm64".into()])?;
    }
    Ok(())
}
