//! `extbackup::system::install` output checked by systemd's own tools.

use extbackup::system::install::{self, InstallPaths};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const UUID_A: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
const UUID_B: &str = "11111111-2222-3333-4444-555555555555";

/// Installs into a temporary directory, with an executable stub as the binary (verify
/// checks that ExecStart= is executable).
fn installed(dir: &Path) -> InstallPaths {
    let bin = dir.join("bin/extbackup");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let paths = InstallPaths {
        udev_dir: dir.join("udev/rules.d"),
        systemd_dir: dir.join("systemd/system"),
        binary: bin,
        config: dir.join("etc/config.toml"),
        writable: vec![dir.join("state"), dir.join("mnt")],
        ..InstallPaths::default()
    };
    let files = install::render(&[("offsite-a", UUID_A), ("offsite-b", UUID_B)], &paths).unwrap();
    install::write(&files).unwrap();
    paths
}

/// `systemd-analyze verify` with the unit directory first in the search path; it must
/// succeed and say nothing (it only warns, exit 0, about unknown keys or bad values).
fn verify(unit_dir: &Path, unit: &str) {
    let out = Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_dir.display()))
        .args(["verify", "--man=no"])
        .arg(unit_dir.join(unit))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): install Debian's `systemd` package \
                 (cargo xtask deps) to check the units"
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {unit}: {}\n{stderr}",
        out.status
    );
}

#[test]
fn rendered_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let paths = installed(dir.path());
    // The template is verified through an instance, named as udev's SYSTEMD_WANTS does:
    // the raw UUID.
    let instance = format!("extbackup@{UUID_A}.service");
    std::fs::copy(
        paths.systemd_dir.join(install::SERVICE_TEMPLATE),
        paths.systemd_dir.join(&instance),
    )
    .unwrap();
    verify(&paths.systemd_dir, &instance);
    let failed = format!("extbackup-failed@{UUID_A}.service");
    std::fs::copy(
        paths.systemd_dir.join(install::FAILURE_TEMPLATE),
        paths.systemd_dir.join(&failed),
    )
    .unwrap();
    verify(&paths.systemd_dir, &failed);
    verify(&paths.systemd_dir, install::CHECK_SERVICE);
    verify(&paths.systemd_dir, install::CHECK_TIMER);
}

#[test]
fn verify_catches_a_broken_unit() {
    // The check above can fail: a unit with a bad value makes verify complain.
    let dir = tempfile::tempdir().unwrap();
    let paths = installed(dir.path());
    let svc = paths.systemd_dir.join(install::CHECK_SERVICE);
    let text = std::fs::read_to_string(&svc).unwrap();
    std::fs::write(&svc, text.replace("Type=oneshot", "Type=oneshott")).unwrap();
    let result = std::panic::catch_unwind(|| verify(&paths.systemd_dir, install::CHECK_SERVICE));
    assert!(result.is_err(), "verify accepted Type=oneshott");
}

#[test]
fn a_raw_uuid_needs_no_escaping_as_an_instance() {
    // What systemd-escape does to a UUID is only `-` → `\x2d`: a UUID holds nothing else
    // a unit name cannot carry, so the raw UUID is a valid instance (verified as a unit
    // by `rendered_units_pass_systemd_analyze_verify`) and no backslash reaches
    // SYSTEMD_WANTS, which systemd before the fix for its issue 16735 would unquote. It
    // must be read with %i: %I unescapes `-` to `/`, as systemd-escape --unescape shows.
    for uuid in [UUID_A, UUID_B] {
        let tool = |args: &[&str]| {
            let out = Command::new("systemd-escape")
                .args(args)
                .output()
                .expect("systemd-escape runs (Debian package `systemd`)");
            assert!(out.status.success(), "systemd-escape {args:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(
            tool(&["--template=extbackup@.service", "--", uuid]),
            format!("extbackup@{}.service", uuid.replace('-', "\\x2d"))
        );
        assert_eq!(tool(&["--unescape", "--", uuid]), uuid.replace('-', "/"));
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = installed(dir.path());
    let svc = std::fs::read_to_string(paths.systemd_dir.join(install::SERVICE_TEMPLATE)).unwrap();
    let exec = svc
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart line");
    assert!(exec.ends_with(" run --uuid %i"), "{exec}");
    assert!(exec.contains(&paths.binary.display().to_string()), "{exec}");
    // A drive that is not configured (exit 75, left untouched) must not fail the unit.
    assert!(
        svc.lines().any(|l| l == "SuccessExitStatus=75"),
        "exit 75 counts as success:\n{svc}"
    );
}

#[test]
fn the_rule_file_matches_any_luks_uuid_and_sorts_after_persistent_storage() {
    let dir = tempfile::tempdir().unwrap();
    let paths = installed(dir.path());
    let rule_path = paths.udev_dir.join(install::RULE_FILE);
    let name = rule_path.file_name().unwrap().to_str().unwrap();
    assert!(
        name > "60-persistent-storage.rules",
        "{name} must sort after 60-*"
    );
    let rule = std::fs::read_to_string(&rule_path).unwrap();
    let line = rule
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("SYSTEMD_WANTS"))
        .unwrap_or_else(|| panic!("no rule line:\n{rule}"));
    assert!(
        line.contains("ENV{SYSTEMD_WANTS}+=\"extbackup@$env{ID_FS_UUID}.service\""),
        "{line}"
    );
    assert_eq!(install::uninstall(&paths).unwrap().0.len(), 5);
    assert!(!rule_path.exists());
}

/// `extbackup install --root DIR` as a packager runs it, scored by systemd's own
/// `systemd-analyze security --offline=yes`: the run unit at most 5.0, the check unit at
/// most 2.5 (the guest's `vm_systemd_*` tests run the same units).
#[test]
fn installed_units_score_within_the_exposure_limits_and_the_led_slots_come_back_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "source = \"/srv\"\nstate_dir = \"/var/lib/extbackup\"\n[[drive]]\nname = \"a\"\n\
             uuid = \"{UUID_A}\"\nkey_file = \"/etc/extbackup/keys/a.key\"\n"
        ),
    )
    .unwrap();
    let root = dir.path().join("stage");
    let out = Command::new(env!("CARGO_BIN_EXE_extbackup"))
        .arg("--config")
        .arg(&cfg)
        .args(["install", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The binary under target/ is copied to the stable path, which the units name.
    assert!(root.join("usr/local/sbin/extbackup").is_file(), "{stdout}");
    let sysd = root.join("etc/systemd/system");
    let svc = std::fs::read_to_string(sysd.join(install::SERVICE_TEMPLATE)).unwrap();
    assert!(
        svc.contains("ExecStart=/usr/local/sbin/extbackup --config "),
        "{svc}"
    );
    // Without the package, the LED's slots folder (default) comes back at boot through
    // install's own tmpfiles.d entry; systemd-tmpfiles accepts it.
    let tmpfiles = root.join("etc/tmpfiles.d").join(install::TMPFILES_FILE);
    let entry = std::fs::read_to_string(&tmpfiles).unwrap_or_default();
    assert!(
        entry.contains("\nd /run/blinkstick/slots 0755 root root -\n"),
        "{}: {entry}",
        tmpfiles.display()
    );
    // systemd-tmpfiles reads it and makes the folders (here below a scratch root).
    let boot = dir.path().join("boot-root");
    std::fs::create_dir_all(boot.join("run")).unwrap();
    let o = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", boot.display()))
        .arg(&tmpfiles)
        .output()
        .expect("systemd-tmpfiles runs (Debian package `systemd`, cargo xtask deps)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let made = std::fs::metadata(boot.join("run/blinkstick/slots")).expect("slots made");
    assert!(made.is_dir());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&made.permissions()) & 0o7777,
        0o755
    );
    std::fs::copy(
        sysd.join(install::SERVICE_TEMPLATE),
        sysd.join(format!("extbackup@{UUID_A}.service")),
    )
    .unwrap();
    for (unit, limit) in [
        (format!("extbackup@{UUID_A}.service"), 5.0),
        (install::CHECK_SERVICE.to_string(), 2.5),
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--root={}", root.display()))
            .arg(&unit)
            .output()
            .expect("systemd-analyze runs (Debian package `systemd`, cargo xtask deps)");
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no score for {unit}: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        eprintln!("{unit}: exposure {score}");
        assert!(score <= limit, "{unit} scores {score} > {limit}:\n{text}");
    }
}

#[test]
fn install_refuses_a_binary_in_a_build_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "source = \"/srv\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_extbackup"))
        .arg("--config")
        .arg(&cfg)
        .args(["install", "--root"])
        .arg(dir.path().join("stage"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_extbackup"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // The test binary is in the build folder, and may be in a temporary folder too (a
    // checkout under /tmp): either is refused, naming the stable path.
    assert!(
        (err.contains("build folder") || err.contains("temporary folder"))
            && err.contains("/usr/local/sbin/extbackup"),
        "{err}"
    );
    assert!(!dir.path().join("stage").exists(), "nothing written");
}
