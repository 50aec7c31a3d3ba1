//! `extbackup install`: the udev rule, the systemd template unit and the check timer.
//!
//! Plugging in a configured drive makes udev tag its LUKS partition for systemd with
//! `SYSTEMD_WANTS=extbackup@<escaped uuid>.service`; systemd starts that oneshot
//! instance, which runs `extbackup run --uuid <uuid>`. A daily timer runs
//! `extbackup check` (stale-backup alerts). [`render`] only builds the file contents,
//! [`write()`] puts them in place, [`reload`] tells udevd and systemd, and [`uninstall`]
//! removes them again.
//!
//! The instance in the unit name is the `systemd-escape`d UUID (`0b1c\x2daaaa`), so the
//! unit reads it back with `%I` (which unescapes it) and the command line gets the plain
//! UUID. (A raw UUID would also be a valid instance, but then `%I` would turn its dashes
//! into slashes; escaping is the form `systemd-escape --template` and the docs use.)
//!
//! ```
//! use extbackup::install::{render, InstallPaths};
//! let files = render(
//!     &[("offsite-a", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")],
//!     &InstallPaths::default(),
//! )
//! .unwrap();
//! let (path, rule) = &files[0];
//! assert!(path.ends_with("90-extbackup.rules"));
//! assert!(rule.contains(r#"ENV{SYSTEMD_WANTS}+="extbackup@0b1c2d3e\x2d4f50"#));
//! ```

use crate::escape;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The udev rule file: after `60-persistent-storage.rules`, which sets `ID_FS_*`.
pub const RULE_FILE: &str = "90-extbackup.rules";
/// The systemd template unit started per plugged-in drive.
pub const SERVICE_TEMPLATE: &str = "extbackup@.service";
/// The unit behind the daily check.
pub const CHECK_SERVICE: &str = "extbackup-check.service";
/// The timer of the daily check.
pub const CHECK_TIMER: &str = "extbackup-check.timer";

/// Where the files go and what they point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallPaths {
    /// Directory of the udev rule (`/etc/udev/rules.d`).
    pub udev_dir: PathBuf,
    /// Directory of the systemd units (`/etc/systemd/system`).
    pub systemd_dir: PathBuf,
    /// The extbackup binary the units run (absolute).
    pub binary: PathBuf,
    /// The configuration file passed with `--config` (absolute).
    pub config: PathBuf,
}

impl Default for InstallPaths {
    fn default() -> Self {
        InstallPaths {
            udev_dir: "/etc/udev/rules.d".into(),
            systemd_dir: "/etc/systemd/system".into(),
            binary: "/usr/local/bin/extbackup".into(),
            config: "/etc/extbackup/config.toml".into(),
        }
    }
}

impl InstallPaths {
    /// The four files `render` writes and `uninstall` removes.
    pub fn files(&self) -> [PathBuf; 4] {
        [
            self.udev_dir.join(RULE_FILE),
            self.systemd_dir.join(SERVICE_TEMPLATE),
            self.systemd_dir.join(CHECK_SERVICE),
            self.systemd_dir.join(CHECK_TIMER),
        ]
    }
}

/// What went wrong installing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallErrorKind {
    /// The configuration cannot be turned into rules (bad UUID, relative path, no drives).
    InvalidConfig,
    /// Writing or removing a file failed.
    Io,
}

/// An installation error: what failed, with the cause as the source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InstallError {
    kind: InstallErrorKind,
    message: String,
    #[source]
    source: Option<io::Error>,
}

impl InstallError {
    fn config(message: String) -> Self {
        InstallError {
            kind: InstallErrorKind::InvalidConfig,
            message,
            source: None,
        }
    }
    fn io(message: String, source: io::Error) -> Self {
        InstallError {
            kind: InstallErrorKind::Io,
            message,
            source: Some(source),
        }
    }
    /// The broad kind of failure.
    pub fn kind(&self) -> InstallErrorKind {
        self.kind
    }
}

/// A LUKS UUID as blkid prints it: hex digits and dashes only (so it cannot break the
/// quoting of a udev rule or a unit file).
fn check_uuid(name: &str, uuid: &str) -> Result<(), InstallError> {
    let ok = !uuid.is_empty()
        && uuid.len() <= 64
        && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(InstallError::config(format!(
            "drive {name:?}: {uuid:?} is not a LUKS UUID (hex digits and dashes, as \
             `cryptsetup luksUUID <device>` prints it): fix the drive's uuid in the config"
        )))
    }
}

/// A name for a comment line: one line, printable.
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Quotes one argument of an `ExecStart=` line: `%` doubled (specifiers), and double
/// quotes with `\` escapes when it holds anything but plain path characters.
fn exec_arg(path: &Path) -> Result<String, InstallError> {
    let s = path.to_str().ok_or_else(|| {
        InstallError::config(format!(
            "{} is not UTF-8: systemd units need UTF-8 paths",
            path.display()
        ))
    })?;
    if !path.is_absolute() {
        return Err(InstallError::config(format!(
            "{s:?} is not an absolute path: systemd runs units from /, give the full path"
        )));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(InstallError::config(format!(
            "{s:?} holds a control character: rename it"
        )));
    }
    let s = s.replace('%', "%%");
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:%@,".contains(c));
    Ok(if plain {
        s
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    })
}

fn render_rule(drives: &[(&str, &str)]) -> String {
    let mut r = String::new();
    r.push_str(
        "# Written by `extbackup install`; `extbackup uninstall` removes it. Do not edit:\n\
         # change the drives in the extbackup config and run `extbackup install` again.\n\
         #\n\
         # Named 90-* so it runs after 60-persistent-storage.rules, which sets ID_FS_TYPE and\n\
         # ID_FS_UUID (an earlier file would see them empty). It only asks systemd to start\n\
         # a unit: udev's RUN+= may neither mount nor run for long.\n\
         #\n\
         # Only ACTION==\"add\": systemd starts a listed unit that is not running on every\n\
         # uevent that carries SYSTEMD_WANTS, and udev sends \"change\" whenever a writer\n\
         # closes the device, so matching \"change\" would start the backup again and again.\n",
    );
    for (name, uuid) in drives {
        let unit = escape::instance_unit("extbackup", "service", uuid);
        let _ = writeln!(r, "\n# drive {}", comment_safe(name));
        let _ = writeln!(
            r,
            "ACTION==\"add\", SUBSYSTEM==\"block\", ENV{{ID_FS_TYPE}}==\"crypto_LUKS\", \
             ENV{{ID_FS_UUID}}==\"{uuid}\", TAG+=\"systemd\", ENV{{SYSTEMD_WANTS}}+=\"{unit}\""
        );
    }
    r
}

fn render_service(bin: &str, config: &str) -> String {
    format!(
        "\
# Written by `extbackup install`; `extbackup uninstall` removes it.
# One instance per plugged-in drive, started by 90-extbackup.rules. The instance is the
# systemd-escape'd LUKS UUID; %I unescapes it back to the UUID.
[Unit]
Description=extbackup: back up onto the drive with LUKS UUID %I
Documentation=https://example.invalid/extbackup
# After the network where it is up anyway (mail); not Wants=, a backup never waits for it.
After=local-fs.target network-online.target

[Service]
Type=oneshot
ExecStart={bin} --config {config} run --uuid %I
# 75: the drive is not (or no longer) configured; it was left untouched. Not a failure.
SuccessExitStatus=75
# A first mirror onto an empty drive can take many hours: never time out; extbackup
# watches its own rsync and unplugging the drive ends the run.
TimeoutStartSec=infinity
# On stop (shutdown, systemctl stop) rsync and extbackup get SIGTERM together; extbackup
# then unmounts and closes the volume before the final SIGKILL.
KillMode=mixed
TimeoutStopSec=5min
# No Nice=/IOSchedulingClass= here: extbackup sets the [quiet] table's priority on the copy
# itself (unlock, fsck and mount stay prompt; the unit does not depend on the config).

# Sandboxing, chosen to keep what a backup needs:
# - PrivateTmp: a private /tmp; extbackup keeps nothing there that others need.
PrivateTmp=yes
# - ProtectHome=read-only: /home is backed up (read), never written.
ProtectHome=read-only
# - ProtectSystem=full: /usr, /boot and /etc read-only. Not \"strict\": the drive is
#   mounted under /mnt or /media and state is written to /var/lib/extbackup.
ProtectSystem=full
# - NoNewPrivileges: extbackup already runs as root and needs no setuid helper.
NoNewPrivileges=yes
# - Kernel logs, tunables and control groups are never written by a backup.
ProtectKernelLogs=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
# - Sockets: UNIX (journal, sendmail), INET/INET6 (SMTP), NETLINK (udev, device-mapper
#   events), ALG (libcryptsetup's keyslot crypto goes through the kernel crypto API).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_ALG
# Deliberately absent:
# - PrivateDevices: it hides /dev/mapper/control and the drive itself; cryptsetup fails.
# - ProtectKernelModules: opening the volume may need the kernel to load dm-crypt.
# - RestrictSUIDSGID: rsync -a must copy setuid/setgid files as they are.
# - PrivateMounts/ProtectSystem=strict: mounts must happen on the real /mnt.
# - CapabilityBoundingSet: mounting, device-mapper, mlock and rsync's owner/xattr
#   copies together need most of root's capabilities.
",
    )
}

fn render_check_service(bin: &str, config: &str) -> String {
    format!(
        "\
# Written by `extbackup install`; `extbackup uninstall` removes it.
# Run daily by extbackup-check.timer: mails when the last good backup is too old.
[Unit]
Description=extbackup: check the age of the last off-site backup
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={bin} --config {config} check
PrivateTmp=yes
ProtectHome=read-only
ProtectSystem=full
NoNewPrivileges=yes
"
    )
}

fn render_check_timer() -> String {
    "\
# Written by `extbackup install`; `extbackup uninstall` removes it.
[Unit]
Description=extbackup: daily check of the age of the last off-site backup

[Timer]
OnCalendar=daily
# Catch up after the machine was off at the planned time.
Persistent=true
RandomizedDelaySec=1h

[Install]
WantedBy=timers.target
"
    .to_string()
}

/// Renders the udev rule, the template unit, the check service and its timer for
/// `drives` (name, LUKS UUID), in the order of [`InstallPaths::files`].
pub fn render(
    drives: &[(&str, &str)],
    paths: &InstallPaths,
) -> Result<Vec<(PathBuf, String)>, InstallError> {
    if drives.is_empty() {
        return Err(InstallError::config(
            "no drives configured: add a [[drive]] with its LUKS uuid to the config, then \
             install again"
                .into(),
        ));
    }
    for (name, uuid) in drives {
        check_uuid(name, uuid)?;
    }
    let bin = exec_arg(&paths.binary)?;
    let config = exec_arg(&paths.config)?;
    let [rule, service, check, timer] = paths.files();
    Ok(vec![
        (rule, render_rule(drives)),
        (service, render_service(&bin, &config)),
        (check, render_check_service(&bin, &config)),
        (timer, render_check_timer()),
    ])
}

/// Writes each file atomically (a temporary file renamed over it), mode 0644, creating
/// missing directories.
pub fn write(files: &[(PathBuf, String)]) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    for (path, content) in files {
        let fail = |what: &str, e| InstallError::io(format!("{what} {}", path.display()), e);
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| fail("creating the directory of", e))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.extbackup-tmp"));
        std::fs::write(&tmp, content).map_err(|e| fail("writing", e))?;
        let done = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail("writing", e));
        }
    }
    Ok(())
}

/// Removes the installed files; returns those that existed (missing files are fine) and
/// notes. When systemd is PID 1 the check timer is first disabled and stopped (its
/// `timers.target.wants` link would otherwise dangle). Call [`reload`] afterwards.
pub fn uninstall(paths: &InstallPaths) -> Result<(Vec<PathBuf>, Notes), InstallError> {
    let mut notes = Notes::new();
    let timer = paths.systemd_dir.join(CHECK_TIMER);
    if timer.exists() && Path::new("/run/systemd/system").is_dir() {
        notes.push(run_tool(&["systemctl", "disable", "--now", CHECK_TIMER]));
    }
    let mut removed = Vec::new();
    for path in paths.files() {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(InstallError::io(format!("removing {}", path.display()), e)),
        }
    }
    Ok((removed, notes))
}

/// Runs a tool, describing the outcome in one line.
fn run_tool(argv: &[&str]) -> String {
    match Command::new(argv[0]).args(&argv[1..]).output() {
        Ok(o) if o.status.success() => format!("ran `{}`", argv.join(" ")),
        Ok(o) => format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("could not run `{}`: {e}", argv.join(" ")),
    }
}

/// What [`reload`] did, one line each, for the user.
pub type Notes = Vec<String>;

/// After [`write()`] or [`uninstall`]: `udevadm control --reload` when udevd runs, and
/// `systemctl daemon-reload` (plus enabling or disabling the check timer) when systemd
/// is PID 1. Skipped steps are noted, never errors: the files are in place either way.
pub fn reload(installed: bool) -> Notes {
    let mut notes = Notes::new();
    let run = run_tool;
    if Path::new("/run/udev/control").exists() {
        notes.push(run(&["udevadm", "control", "--reload"]));
    } else {
        notes.push(
            "udevd is not running: skipped `udevadm control --reload` (it reads the rule \
             when it starts)"
                .into(),
        );
    }
    if Path::new("/run/systemd/system").is_dir() {
        notes.push(run(&["systemctl", "daemon-reload"]));
        if installed {
            notes.push(run(&["systemctl", "enable", "--now", CHECK_TIMER]));
        }
    } else {
        notes.push(format!(
            "systemd is not PID 1: skipped `systemctl daemon-reload`{}",
            if installed {
                format!(" and `systemctl enable --now {CHECK_TIMER}`; use `extbackup watch`")
            } else {
                String::new()
            }
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
    const B: &str = "11111111-2222-3333-4444-555555555555";

    #[test]
    fn rule_names_every_drive_with_its_escaped_unit() {
        let files = render(&[("a", A), ("b", B)], &InstallPaths::default()).unwrap();
        let rule = &files[0].1;
        for uuid in [A, B] {
            let line = rule
                .lines()
                .find(|l| l.contains(&format!("ENV{{ID_FS_UUID}}==\"{uuid}\"")))
                .unwrap_or_else(|| panic!("no rule line for {uuid}:\n{rule}"));
            for must in [
                "ACTION==\"add\"",
                "SUBSYSTEM==\"block\"",
                "ENV{ID_FS_TYPE}==\"crypto_LUKS\"",
                "TAG+=\"systemd\"",
            ] {
                assert!(line.contains(must), "{must} missing in {line}");
            }
            let unit = format!("extbackup@{}.service", escape::escape(uuid));
            assert!(line.contains(&format!("ENV{{SYSTEMD_WANTS}}+=\"{unit}\"")));
        }
    }

    #[test]
    fn service_runs_the_binary_with_the_unescaped_instance() {
        let paths = InstallPaths {
            binary: "/opt/ext backup/bin%1".into(),
            ..InstallPaths::default()
        };
        let files = render(&[("a", A)], &paths).unwrap();
        let svc = &files[1].1;
        assert!(svc.contains("Type=oneshot"));
        assert!(svc.contains("TimeoutStartSec=infinity"));
        assert!(svc.contains(
            "ExecStart=\"/opt/ext backup/bin%%1\" --config /etc/extbackup/config.toml run --uuid %I\n"
        ));
        assert!(!svc.lines().any(|l| l.starts_with("PrivateDevices=")));
        assert!(files[3].1.contains("OnCalendar=daily"));
        assert!(files[2].1.contains(" check\n"));
    }

    #[test]
    fn rejects_what_would_break_quoting() {
        let e = render(&[("x", "abc\"def")], &InstallPaths::default()).unwrap_err();
        assert_eq!(e.kind(), InstallErrorKind::InvalidConfig);
        let e = render(&[], &InstallPaths::default()).unwrap_err();
        assert_eq!(e.kind(), InstallErrorKind::InvalidConfig);
        let rel = InstallPaths {
            binary: "extbackup".into(),
            ..InstallPaths::default()
        };
        assert!(render(&[("x", A)], &rel).is_err());
    }

    #[test]
    fn write_then_uninstall() {
        let dir = tempfile::tempdir().unwrap();
        let paths = InstallPaths {
            udev_dir: dir.path().join("udev"),
            systemd_dir: dir.path().join("systemd"),
            ..InstallPaths::default()
        };
        let files = render(&[("a", A)], &paths).unwrap();
        write(&files).unwrap();
        for (p, c) in &files {
            assert_eq!(&std::fs::read_to_string(p).unwrap(), c);
        }
        assert_eq!(uninstall(&paths).unwrap().0.len(), 4);
        assert!(files.iter().all(|(p, _)| !p.exists()));
        assert!(uninstall(&paths).unwrap().0.is_empty());
    }
}
