//! `extbackup::install` output checked by systemd's own tools.

use extbackup::escape;
use extbackup::install::{self, InstallPaths};
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
    // The template is verified through an instance, named as udev's SYSTEMD_WANTS does.
    let instance = escape::instance_unit("extbackup", "service", UUID_A);
    std::fs::copy(
        paths.systemd_dir.join(install::SERVICE_TEMPLATE),
        paths.systemd_dir.join(&instance),
    )
    .unwrap();
    verify(&paths.systemd_dir, &instance);
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
fn the_instance_unescapes_to_the_uuid_for_the_command_line() {
    // %I in ExecStart= is the unescaped instance: check with systemd-escape's own reverse.
    let instance = escape::escape(UUID_A);
    let out = Command::new("systemd-escape")
        .args(["--unescape", "--", &instance])
        .output()
        .expect("systemd-escape runs (Debian package `systemd`)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), UUID_A);
    let dir = tempfile::tempdir().unwrap();
    let paths = installed(dir.path());
    let svc = std::fs::read_to_string(paths.systemd_dir.join(install::SERVICE_TEMPLATE)).unwrap();
    let exec = svc
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart line");
    assert!(exec.ends_with(" run --uuid %I"), "{exec}");
    assert!(exec.contains(&paths.binary.display().to_string()), "{exec}");
    // A drive that is not configured (exit 75, left untouched) must not fail the unit.
    assert!(
        svc.lines().any(|l| l == "SuccessExitStatus=75"),
        "exit 75 counts as success:\n{svc}"
    );
}

#[test]
fn the_rule_file_names_each_drive_and_sorts_after_persistent_storage() {
    let dir = tempfile::tempdir().unwrap();
    let paths = installed(dir.path());
    let rule_path = paths.udev_dir.join(install::RULE_FILE);
    let name = rule_path.file_name().unwrap().to_str().unwrap();
    assert!(
        name > "60-persistent-storage.rules",
        "{name} must sort after 60-*"
    );
    let rule = std::fs::read_to_string(&rule_path).unwrap();
    for uuid in [UUID_A, UUID_B] {
        let unit = escape::instance_unit("extbackup", "service", uuid);
        let line = rule
            .lines()
            .find(|l| !l.starts_with('#') && l.contains(uuid))
            .unwrap_or_else(|| panic!("no rule for {uuid}"));
        assert!(
            line.contains(&format!("ENV{{SYSTEMD_WANTS}}+=\"{unit}\"")),
            "{line}"
        );
    }
    assert_eq!(install::uninstall(&paths).unwrap().0.len(), 4);
    assert!(!rule_path.exists());
}
