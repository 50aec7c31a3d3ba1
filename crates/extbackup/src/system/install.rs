//! `extbackup install`: the udev rule, the systemd template unit and the check timer.
//!
//! Plugging in any LUKS device whose UUID has the canonical form makes udev tag it for
//! systemd with `SYSTEMD_WANTS=extbackup@<uuid>.service`; systemd starts that oneshot
//! instance, which runs `extbackup run --uuid <uuid>`. Whether the drive is ours is decided
//! then, from the configuration as it is at plug-in time: a drive prepared after `install`
//! needs no second `install`, and a foreign LUKS device ends the unit with exit 75 (a
//! success, nothing touched). A unit that fails anyway (killed, crashed, configuration
//! error) starts `extbackup-failed@<uuid>.service` through `OnFailure=`, which turns the
//! LED red and mails (`extbackup notify-failure`). A daily timer runs `extbackup check`
//! (stale-backup alerts). [`render`] only builds the file contents, [`write()`] puts them
//! in place, [`reload`] tells udevd and systemd, and [`uninstall`] removes them again.
//!
//! The Debian package ships the four units in `/usr/lib/systemd/system` (rendered with
//! [`InstallPaths::packaged`] set). `install` then writes only the udev rule and, for each
//! unit, a drop-in ([`DROPIN`]) with the folders this configuration writes beyond the
//! packaged defaults ([`render_dropins`]): the packaged units stay the ones that run.
//!
//! Folders a unit writes are of two kinds: its own (the state folder, the mount root),
//! which systemd creates as `StateDirectory=`/`RuntimeDirectory=`, and shared ones (the
//! folder of a source lock such as `/run/lock`), which are only made writable
//! (`ReadWritePaths=`): systemd sets the mode and owner of a folder it manages, and a shared
//! system folder must keep its own (`/run/lock` is `1777`).
//!
//! The instance in the unit name is the **raw** UUID (`0b1c-aaaa`), read with `%i`. A UUID
//! holds only hex digits and `-`, both valid in a unit name, so it needs no escaping; and
//! an escaped instance (`0b1c\x2daaaa`) would carry backslashes through `SYSTEMD_WANTS`,
//! which systemd from v233 until the fix for its issue 16735 (PR 35869, 2025) unquoted,
//! starting `extbackup@0b1cx2daaaa.service`. `%I` is not used: it would turn `-` into `/`.
//!
//! ```
//! use extbackup::system::install::{render, InstallPaths};
//! let files = render(
//!     &[("offsite-a", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")],
//!     &InstallPaths::default(),
//! )
//! .unwrap();
//! let (path, rule) = &files[0];
//! assert!(path.ends_with("90-extbackup.rules"));
//! assert!(rule.contains(r#"ENV{SYSTEMD_WANTS}+="extbackup@$env{ID_FS_UUID}.service""#));
//! ```

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The udev rule file: after `60-persistent-storage.rules`, which sets `ID_FS_*`.
pub const RULE_FILE: &str = "90-extbackup.rules";
/// The systemd template unit started per plugged-in drive.
pub const SERVICE_TEMPLATE: &str = "extbackup@.service";
/// The template unit `OnFailure=` starts when a run unit fails (crash, kill, exit 2).
pub const FAILURE_TEMPLATE: &str = "extbackup-failed@.service";
/// The tmpfiles.d entry a source-built `install` writes (in `/etc/tmpfiles.d`), as the
/// package ships its own in `/usr/lib/tmpfiles.d`: the LED's slots folder below `/run`
/// comes back at every boot.
pub const TMPFILES_FILE: &str = "extbackup.conf";
/// The name of the drop-in `install` writes next to packaged units
/// (`/etc/systemd/system/UNIT.d/50-extbackup-install.conf`).
pub const DROPIN: &str = "50-extbackup-install.conf";
/// The unit behind the daily check.
pub const CHECK_SERVICE: &str = "extbackup-check.service";
/// The timer of the daily check.
pub const CHECK_TIMER: &str = "extbackup-check.timer";
/// The packaged binary (the Debian package's `/usr/bin/extbackup`).
pub const PACKAGED_BINARY: &str = "/usr/bin/extbackup";
/// Where the Debian package puts the units.
pub const PACKAGED_UNIT_DIR: &str = "/usr/lib/systemd/system";
/// Folders of the system that others use too: never managed by a unit (systemd would
/// chmod and chown them), only made writable.
const SHARED_SYSTEM_DIRS: &[&str] = &[
    "/run",
    "/run/lock",
    "/run/user",
    "/run/media",
    "/run/mount",
    "/run/shm",
    "/run/systemd",
    "/run/udev",
    "/run/dbus",
    "/var/lib",
    "/var/lib/systemd",
];
/// The LED's slots folder, shared with the `blinkstick` command and other jobs
/// (`blinkstick::slots::DEFAULT_DIR`), when `[indicator]` names none: the units may write
/// it, never own it. The package's tmpfiles.d entry creates it at boot.
pub const DEFAULT_SLOTS_DIR: &str = "/run/blinkstick/slots";
/// Where `install` puts the binary when the running one lies in a build or temporary
/// folder.
pub const STABLE_BINARY: &str = "/usr/local/sbin/extbackup";

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
    /// extbackup's own folders the units write: the state folder, the mount root, any
    /// drive's own mount point, the mail spool. Below `/run` or `/var/lib` systemd creates
    /// them (`RuntimeDirectory=`/`StateDirectory=`), elsewhere `ReadWritePaths=`.
    /// Everything else is read-only to the units.
    pub writable: Vec<PathBuf>,
    /// Folders the units write but do not own (the folder of a source lock, e.g.
    /// `/run/lock`): only `ReadWritePaths=`, never managed, so their mode stays.
    pub shared: Vec<PathBuf>,
    /// Render the units as the Debian package ships them (their comments say so).
    pub packaged: bool,
    /// Directory of the tmpfiles.d entry (`/etc/tmpfiles.d`).
    pub tmpfiles_dir: PathBuf,
    /// Folders below `/run` the units write and nobody else makes (the LED's slots, when
    /// `[indicator]` leaves them at the default): [`render`] writes a tmpfiles.d entry
    /// that makes them, and their parents below `/run`, at boot. Never a system folder of
    /// `SHARED_SYSTEM_DIRS` (tmpfiles would change its mode).
    pub boot_dirs: Vec<PathBuf>,
}

impl Default for InstallPaths {
    fn default() -> Self {
        InstallPaths {
            udev_dir: "/etc/udev/rules.d".into(),
            systemd_dir: "/etc/systemd/system".into(),
            binary: STABLE_BINARY.into(),
            config: "/etc/extbackup/config.toml".into(),
            // The configuration's defaults: state_dir and mount_root.
            writable: vec!["/var/lib/extbackup".into(), "/run/extbackup".into()],
            shared: Vec::new(),
            packaged: false,
            tmpfiles_dir: "/etc/tmpfiles.d".into(),
            boot_dirs: Vec::new(),
        }
    }
}

impl InstallPaths {
    /// The five files `render` writes.
    pub fn files(&self) -> [PathBuf; 5] {
        [
            self.udev_dir.join(RULE_FILE),
            self.systemd_dir.join(SERVICE_TEMPLATE),
            self.systemd_dir.join(FAILURE_TEMPLATE),
            self.systemd_dir.join(CHECK_SERVICE),
            self.systemd_dir.join(CHECK_TIMER),
        ]
    }

    /// The drop-ins `render_dropins` writes beside the packaged run, failure and check
    /// units.
    pub fn dropins(&self) -> [PathBuf; 3] {
        [SERVICE_TEMPLATE, FAILURE_TEMPLATE, CHECK_SERVICE]
            .map(|u| self.systemd_dir.join(format!("{u}.d")).join(DROPIN))
    }

    /// The tmpfiles.d entry [`render`] writes when there are [`boot_dirs`](Self::boot_dirs).
    pub fn tmpfiles(&self) -> PathBuf {
        self.tmpfiles_dir.join(TMPFILES_FILE)
    }

    /// Everything either form of `install` writes, which `uninstall` removes.
    pub fn all_files(&self) -> Vec<PathBuf> {
        self.files()
            .into_iter()
            .chain(self.dropins())
            .chain([self.tmpfiles()])
            .collect()
    }

    /// The same paths below a staging root `root` (`--root DIR`, for packagers and tests):
    /// where the files are written, while their contents keep naming the final paths.
    pub fn files_under(&self, root: &Path) -> Vec<PathBuf> {
        self.all_files().iter().map(|p| under(root, p)).collect()
    }
}

/// `path` below `root` (`/etc/x` under `/stage` is `/stage/etc/x`).
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Why `path` is no place for the binary the units run: it lies in a temporary folder or
/// in a build folder (a cargo `target/`, marked by its `CACHEDIR.TAG`), which go away
/// (`cargo clean`, a reboot). `None` when it looks stable.
pub fn transient_location(path: &Path) -> Option<String> {
    for tmp in ["/tmp", "/var/tmp", "/dev/shm", "/run"] {
        if path.starts_with(tmp) {
            return Some(format!(
                "{} is in the temporary folder {tmp}",
                path.display()
            ));
        }
    }
    let tmp = std::env::temp_dir();
    if tmp != Path::new("/") && path.starts_with(&tmp) {
        return Some(format!(
            "{} is in the temporary folder {}",
            path.display(),
            tmp.display()
        ));
    }
    for dir in path.ancestors().skip(1) {
        if dir.join("CACHEDIR.TAG").is_file() {
            return Some(format!(
                "{} is in the build folder {} (`cargo clean` removes it)",
                path.display(),
                dir.display()
            ));
        }
        if dir.file_name().is_some_and(|n| n == "target")
            && path.components().any(|c| {
                let c = c.as_os_str();
                c == "debug" || c == "release"
            })
        {
            return Some(format!(
                "{} is in the build folder {}",
                path.display(),
                dir.display()
            ));
        }
    }
    None
}

/// An installation error (the orchestrator's one error, [`crate::Failure`]): a
/// configuration that cannot be turned into rules (bad UUID, relative path), or a file
/// that could not be written or removed, with the cause as the source.
pub type InstallError = crate::Failure;

/// A LUKS UUID as blkid prints it: hex digits and dashes only (so it cannot break the
/// quoting of a udev rule or a unit file).
fn check_uuid(name: &str, uuid: &str) -> Result<(), InstallError> {
    let ok = !uuid.is_empty()
        && uuid.len() <= 64
        && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(InstallError::new(format!(
            "drive {name:?}: {uuid:?} is not a LUKS UUID (hex digits and dashes, as \
             `cryptsetup luksUUID <device>` prints it): fix the drive's uuid in the config"
        )))
    }
}

/// Whether `uuid` has the canonical 8-4-4-4-12 form that [`uuid_glob`] matches.
pub fn is_canonical_uuid(uuid: &str) -> bool {
    let groups: Vec<&str> = uuid.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A udev glob matching exactly the canonical UUIDs (hex digits in 8-4-4-4-12 groups):
/// the rule hands `ID_FS_UUID` to systemd only when it is one, so a crafted LUKS header
/// cannot put a space (a second unit) or a backslash into `SYSTEMD_WANTS`.
pub fn uuid_glob() -> String {
    [8, 4, 4, 4, 12]
        .iter()
        .map(|n| "[0-9a-fA-F]".repeat(*n))
        .collect::<Vec<_>>()
        .join("-")
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
        InstallError::new(format!(
            "{} is not UTF-8: systemd units need UTF-8 paths",
            path.display()
        ))
    })?;
    if !path.is_absolute() {
        return Err(InstallError::new(format!(
            "{s:?} is not an absolute path: systemd runs units from /, give the full path"
        )));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(InstallError::new(format!(
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
        "# Written by `extbackup install`; `extbackup uninstall` removes it. Do not edit.\n\
         #\n\
         # Named 90-* so it runs after 60-persistent-storage.rules, which sets ID_FS_TYPE and\n\
         # ID_FS_UUID (an earlier file would see them empty). It only asks systemd to start\n\
         # a unit: udev's RUN+= may neither mount nor run for long.\n\
         #\n\
         # Every LUKS device with a canonical UUID starts extbackup@UUID.service: whether the\n\
         # drive is ours is decided by `extbackup run` from the configuration at plug-in\n\
         # time (a foreign one exits 75, untouched, not a failure), so a drive prepared\n\
         # after `install` works without installing again. The instance is the raw UUID\n\
         # (hex digits and '-'): no backslash, which systemd before the fix for its issue\n\
         # 16735 would drop from SYSTEMD_WANTS.\n\
         #\n\
         # Only ACTION==\"add\": systemd starts a listed unit that is not running on every\n\
         # uevent that carries SYSTEMD_WANTS, and udev sends \"change\" whenever a writer\n\
         # closes the device, so matching \"change\" would start the backup again and again.\n",
    );
    let _ = writeln!(
        r,
        "ACTION==\"add\", SUBSYSTEM==\"block\", ENV{{ID_FS_TYPE}}==\"crypto_LUKS\", \
         ENV{{ID_FS_UUID}}==\"{}\", TAG+=\"systemd\", \
         ENV{{SYSTEMD_WANTS}}+=\"extbackup@$env{{ID_FS_UUID}}.service\"",
        uuid_glob()
    );
    for (name, uuid) in drives.iter().filter(|(_, u)| !is_canonical_uuid(u)) {
        let _ = writeln!(
            r,
            "\n# drive {} (its UUID is not in the canonical form above)",
            comment_safe(name)
        );
        let _ = writeln!(
            r,
            "ACTION==\"add\", SUBSYSTEM==\"block\", ENV{{ID_FS_TYPE}}==\"crypto_LUKS\", \
             ENV{{ID_FS_UUID}}==\"{uuid}\", TAG+=\"systemd\", \
             ENV{{SYSTEMD_WANTS}}+=\"extbackup@{uuid}.service\""
        );
    }
    r
}

/// The writable folders of the units: extbackup's own below `/run` or `/var/lib` as
/// `RuntimeDirectory=`/`StateDirectory=` (systemd creates them before it sets up the
/// read-only view, so a first run on a fresh boot finds them), the rest, and every shared
/// folder, as `ReadWritePaths=` (the `-` prefix: a folder that does not exist yet is no
/// error). A shared system folder ([`SHARED_SYSTEM_DIRS`]) is never managed, even when
/// configured as one of extbackup's own.
fn rw_paths(own: &[PathBuf], shared: &[PathBuf]) -> Result<String, InstallError> {
    let mut out = String::new();
    let own = own.iter().map(|p| (p, true));
    for (p, owned) in own.chain(shared.iter().map(|p| (p, false))) {
        let q = exec_arg(p)?;
        let system = SHARED_SYSTEM_DIRS
            .iter()
            .any(|d| Path::new(d) == p.components().collect::<PathBuf>());
        let managed = [
            ("/run/", "RuntimeDirectory"),
            ("/var/lib/", "StateDirectory"),
        ]
        .into_iter()
        .find_map(|(root, key)| Some((key, q.strip_prefix(root)?)))
        .filter(|(_, rel)| owned && !system && !rel.is_empty() && !rel.starts_with('"'));
        match managed {
            Some((key, rel)) => {
                let _ = writeln!(out, "{key}={rel}");
                if key == "RuntimeDirectory" {
                    // Two drives may run at once; neither removes the other's mount point.
                    let _ = writeln!(out, "RuntimeDirectoryPreserve=yes");
                }
            }
            None => {
                let line = format!("ReadWritePaths=-{q}");
                if !out.lines().any(|l| l == line) {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    Ok(out)
}

/// The sandbox both the run and the failure unit share; see the comments in the file.
const RUN_SANDBOX: &str = "\
# Sandboxing (checked: `systemd-analyze security extbackup@UUID.service`), keeping what a
# backup needs: root's files to read, the drive to unlock, fsck and mount, the LED, mail.
# - The file system is read-only but for the folders named above (StateDirectory=,
#   RuntimeDirectory=, ReadWritePaths=: the state folder, the mount root, a source lock's
#   folder); /home is read (backed up), never written.
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
# - The drive's mount lives in this unit's own mount namespace: nothing else sees the
#   open backup, and it goes away with the unit even after a crash.
PrivateMounts=yes
# - Devices: block devices (the drive, its dm-crypt mapping), device-mapper's control
#   node, the BlinkStick (hidraw, or raw USB for the libusb transport).
DevicePolicy=closed
DeviceAllow=block-sd rw
DeviceAllow=block-device-mapper rw
DeviceAllow=block-loop rw
DeviceAllow=block-blkext rw
DeviceAllow=block-virtblk rw
DeviceAllow=/dev/mapper/control rw
DeviceAllow=char-hidraw rw
DeviceAllow=char-usb_device rw
# - Capabilities: mount (SYS_ADMIN), read everything (DAC_*), keep owners, modes and
#   capabilities of copied files (CHOWN, FOWNER, FSETID, SETFCAP, MKNOD), lock the key in
#   memory (IPC_LOCK), fsck on a full disk (SYS_RESOURCE), put the priority back after a
#   copy run with the [quiet] table's nice value (SYS_NICE: lowering it needs it).
CapabilityBoundingSet=CAP_SYS_ADMIN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_CHOWN CAP_FOWNER CAP_FSETID CAP_SETFCAP CAP_MKNOD CAP_IPC_LOCK CAP_SYS_RESOURCE CAP_SYS_NICE
NoNewPrivileges=yes
ProtectKernelLogs=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service @mount
# The run confines its own writes with Landlock and touches the drive through openat2; a
# first copy's files are hashed for the manifest as the copy closes them (fanotify).
SystemCallFilter=openat2 landlock_create_ruleset landlock_add_rule landlock_restrict_self
SystemCallFilter=fanotify_init fanotify_mark
SystemCallFilter=~@clock @cpu-emulation @debug @module @obsolete @raw-io @reboot @swap
# - Sockets: UNIX (journal, sendmail), INET/INET6 (SMTP), NETLINK (udev, device-mapper
#   events), ALG (libcryptsetup's keyslot crypto goes through the kernel crypto API).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_ALG
UMask=0077
# Deliberately absent:
# - PrivateDevices: it hides /dev/mapper/control and the drive itself; cryptsetup fails.
# - ProtectKernelModules: opening the volume may need the kernel to load dm-crypt.
# - RestrictSUIDSGID: rsync -a must copy setuid/setgid files as they are.
# - PrivateNetwork: the mail goes out over the network.
";

/// The first comment line of a unit: who wrote it and how it goes away.
fn header(packaged: bool) -> &'static str {
    if packaged {
        "# Shipped by the extbackup package (`dpkg -L extbackup`); removing the package removes it.\n\
         # `extbackup install` adds a drop-in (/etc/systemd/system/UNIT.d/50-extbackup-install.conf)\n\
         # with the folders your configuration writes. Change it with `systemctl edit`, not here.\n"
    } else {
        "# Written by `extbackup install`; `extbackup uninstall` removes it.\n"
    }
}

fn render_service(head: &str, bin: &str, config: &str, rw: &str) -> String {
    format!(
        "\
{head}# One instance per plugged-in LUKS drive, started by 90-extbackup.rules. The instance is
# the raw LUKS UUID (hex digits and '-', nothing to escape), read with %i.
[Unit]
Description=extbackup: back up onto the drive with LUKS UUID %i
Documentation=man:extbackup-run(1) man:extbackup(1)
# After the network where it is up anyway (mail); not Wants=, a backup never waits for it.
After=local-fs.target network-online.target
# A crash, a kill or a configuration error (exit 2) left no red LED and no mail: this
# unit reports it. (A failure the run handled itself, exit 1, was reported already.)
OnFailure=extbackup-failed@%i.service

[Service]
Type=oneshot
ExecStart={bin} --config {config} run --uuid %i
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
{rw}{RUN_SANDBOX}"
    )
}

fn render_failure_service(head: &str, bin: &str, config: &str, rw: &str) -> String {
    format!(
        "\
{head}# Started by OnFailure= of extbackup@UUID.service when that unit failed: red LED and a
# mail naming the unit's result (killed, crashed, exit 2...), unless the run reported the
# failure itself (exit 1). It also closes a mapping the dead run left open.
[Unit]
Description=extbackup: report the failed backup unit of the drive with LUKS UUID %i
Documentation=man:extbackup(1)

[Service]
Type=oneshot
ExecStart={bin} --config {config} notify-failure --uuid %i --unit extbackup@%i.service
TimeoutStartSec=2min
{rw}{RUN_SANDBOX}"
    )
}

fn render_check_service(head: &str, bin: &str, config: &str, rw: &str) -> String {
    format!(
        "\
{head}# Run daily by extbackup-check.timer: mails when a drive's last good backup is too old.
[Unit]
Description=extbackup: check the age of each drive's last backup
Documentation=man:extbackup-check(1) man:extbackup(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={bin} --config {config} check
# Sandboxing (checked: `systemd-analyze security extbackup-check.service`): it reads the
# state, writes the mail spool, talks SMTP and sets the LED (hidraw or raw USB). It runs
# as root only to own those files and the LED's device node; it needs no capability.
{rw}ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
PrivateIPC=yes
DevicePolicy=closed
DeviceAllow=char-hidraw rw
DeviceAllow=char-usb_device rw
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
ProtectKernelLogs=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictRealtime=yes
RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077
"
    )
}

fn render_check_timer(head: &str) -> String {
    format!(
        "\
{head}[Unit]
Description=extbackup: daily check of the age of each drive's last backup

[Timer]
OnCalendar=daily
# Catch up after the machine was off at the planned time.
Persistent=true
RandomizedDelaySec=1h

[Install]
WantedBy=timers.target
"
    )
}

/// The tmpfiles.d entry for `boot_dirs`: each folder and its parents below `/run`,
/// `0755 root root` as the package's own entry. `None` when there is nothing to make.
fn render_tmpfiles(boot_dirs: &[PathBuf]) -> Result<Option<String>, InstallError> {
    let mut dirs: Vec<&Path> = Vec::new();
    for d in boot_dirs {
        if !d.starts_with("/run") || d.components().any(|c| c.as_os_str() == "..") {
            return Err(InstallError::new(format!(
                "{} is not a folder below /run: tmpfiles.d makes only those",
                d.display()
            )));
        }
        let chain: Vec<&Path> = d
            .ancestors()
            .take_while(|a| *a != Path::new("/run"))
            .collect();
        for a in chain.into_iter().rev() {
            if SHARED_SYSTEM_DIRS.iter().any(|s| Path::new(s) == a) {
                return Err(InstallError::new(format!(
                    "{} is a system folder: tmpfiles.d would change its mode",
                    a.display()
                )));
            }
            if !dirs.contains(&a) {
                dirs.push(a);
            }
        }
    }
    if dirs.is_empty() {
        return Ok(None);
    }
    let mut text = String::from(
        "# Written by `extbackup install`; `extbackup uninstall` removes it.\n\
         # Folders the units write below /run, made at every boot (the Debian package ships\n\
         # the same in /usr/lib/tmpfiles.d/extbackup.conf).\n",
    );
    for d in dirs {
        let d = exec_arg(d)?;
        let _ = writeln!(text, "d {d} 0755 root root -");
    }
    Ok(Some(text))
}

/// Renders the udev rule, the template unit, the failure unit, the check service and its
/// timer for `drives` (name, LUKS UUID), in the order of [`InstallPaths::files`], then
/// the tmpfiles.d entry when there are [`InstallPaths::boot_dirs`].
pub fn render(
    drives: &[(&str, &str)],
    paths: &InstallPaths,
) -> Result<Vec<(PathBuf, String)>, InstallError> {
    for (name, uuid) in drives {
        check_uuid(name, uuid)?;
    }
    let bin = exec_arg(&paths.binary)?;
    let config = exec_arg(&paths.config)?;
    let rw = rw_paths(&paths.writable, &paths.shared)?;
    let head = header(paths.packaged);
    let [rule, service, failed, check, timer] = paths.files();
    let mut files = vec![
        (rule, render_rule(drives)),
        (service, render_service(head, &bin, &config, &rw)),
        (failed, render_failure_service(head, &bin, &config, &rw)),
        (check, render_check_service(head, &bin, &config, &rw)),
        (timer, render_check_timer(head)),
    ];
    if let Some(t) = render_tmpfiles(&paths.boot_dirs)? {
        files.push((paths.tmpfiles(), t));
    }
    Ok(files)
}

/// For a system with the packaged units: the udev rule and one drop-in per service (in
/// the order of [`InstallPaths::dropins`]) with the folders this configuration writes
/// beyond what the packaged units already allow (`packaged_writable`, their defaults).
/// The packaged units run `paths.binary` with `paths.config`; [`render`] is for anything
/// else.
pub fn render_dropins(
    drives: &[(&str, &str)],
    paths: &InstallPaths,
    packaged_writable: &[PathBuf],
) -> Result<Vec<(PathBuf, String)>, InstallError> {
    for (name, uuid) in drives {
        check_uuid(name, uuid)?;
    }
    let own: Vec<PathBuf> = paths
        .writable
        .iter()
        .filter(|p| !packaged_writable.contains(p))
        .cloned()
        .collect();
    let rw = rw_paths(&own, &paths.shared)?;
    let none = if rw.is_empty() { ": none" } else { "" };
    let text = format!(
        "# Written by `extbackup install`; `extbackup uninstall` removes it.\n\
         # The folders {} has the units write beyond the packaged unit's own{none}.\n\
         [Service]\n{rw}",
        paths.config.display()
    );
    let mut files = vec![(paths.files()[0].clone(), render_rule(drives))];
    files.extend(paths.dropins().into_iter().map(|p| (p, text.clone())));
    Ok(files)
}

/// Writes each file atomically ([`oskit::write_atomic`]), mode 0644, creating missing
/// directories.
pub fn write(files: &[(PathBuf, String)]) -> Result<(), InstallError> {
    for (path, content) in files {
        let fail = |what: &str, e| InstallError::with(format!("{what} {}", path.display()), e);
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| fail("creating the directory of", e))?;
        oskit::write_atomic(path, content.as_bytes(), Some(0o644))
            .map_err(|e| fail("writing", e))?;
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
    for path in paths.all_files() {
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if path.ends_with(DROPIN) {
                    // The UNIT.d folder, when nothing else (the admin's own drop-ins) is left.
                    let _ = std::fs::remove_dir(path.parent().unwrap_or(Path::new("/")));
                }
                removed.push(path)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(InstallError::with(
                    format!("removing {}", path.display()),
                    e,
                ))
            }
        }
    }
    Ok((removed, notes))
}

/// Runs a tool, describing the outcome in one line.
fn run_tool(argv: &[&str]) -> String {
    match oskit::process::tie_to_parent(&mut Command::new(argv[0]))
        .args(&argv[1..])
        .output()
    {
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

    #[test]
    fn rule_starts_the_raw_uuid_instance_for_every_canonical_luks_uuid() {
        let files = render(&[("a", A), ("odd", "abcd-ef")], &InstallPaths::default()).unwrap();
        let rule = &files[0].1;
        let line = rule
            .lines()
            .find(|l| l.contains("$env{ID_FS_UUID}"))
            .unwrap_or_else(|| panic!("no generic line:\n{rule}"));
        for must in [
            "ACTION==\"add\"",
            "SUBSYSTEM==\"block\"",
            "ENV{ID_FS_TYPE}==\"crypto_LUKS\"",
            "TAG+=\"systemd\"",
            "ENV{SYSTEMD_WANTS}+=\"extbackup@$env{ID_FS_UUID}.service\"",
        ] {
            assert!(line.contains(must), "{must} missing in {line}");
        }
        assert!(line.contains(&format!("ENV{{ID_FS_UUID}}==\"{}\"", uuid_glob())));
        assert!(!rule.contains('\\'), "no backslash anywhere:\n{rule}");
        // A configured UUID outside the canonical form gets a line of its own.
        assert!(rule.contains("ENV{SYSTEMD_WANTS}+=\"extbackup@abcd-ef.service\""));
        assert!(!rule.contains(&format!("extbackup@{A}.service")));
        // And none at all still installs (drives prepared later are picked up).
        assert!(render(&[], &InstallPaths::default()).is_ok());
    }

    #[test]
    fn canonical_uuids_are_recognised() {
        assert!(is_canonical_uuid(A));
        assert!(!is_canonical_uuid("abcd-ef"));
        assert!(!is_canonical_uuid("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0-"));
        assert!(!is_canonical_uuid("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9fz"));
        assert_eq!(uuid_glob().matches("[0-9a-fA-F]").count(), 32);
    }

    #[test]
    fn service_runs_the_binary_with_the_raw_instance() {
        let paths = InstallPaths {
            binary: "/opt/ext backup/bin%1".into(),
            ..InstallPaths::default()
        };
        let files = render(&[("a", A)], &paths).unwrap();
        let svc = &files[1].1;
        assert!(svc.contains("Type=oneshot"));
        assert!(svc.contains("TimeoutStartSec=infinity"));
        assert!(svc.contains(
            "ExecStart=\"/opt/ext backup/bin%%1\" --config /etc/extbackup/config.toml run --uuid %i\n"
        ));
        assert!(svc.contains("OnFailure=extbackup-failed@%i.service\n"));
        assert!(svc.contains("StateDirectory=extbackup\n"), "{svc}");
        assert!(svc.contains("RuntimeDirectory=extbackup\n"), "{svc}");
        assert!(!svc.contains("%I"));
        assert!(!svc.lines().any(|l| l.starts_with("PrivateDevices=")));
        assert!(files[2].1.contains(" notify-failure --uuid %i "));
        assert!(files[4].1.contains("OnCalendar=daily"));
        assert!(files[3].1.contains(" check\n"));
    }

    #[test]
    fn a_shared_folder_is_made_writable_never_managed() {
        let paths = InstallPaths {
            writable: vec!["/var/lib/extbackup".into(), "/run/lock".into()],
            shared: vec!["/run/lock".into(), "/srv/locks".into()],
            ..InstallPaths::default()
        };
        let svc = &render(&[], &paths).unwrap()[1].1;
        assert!(svc.contains("StateDirectory=extbackup\n"), "{svc}");
        assert!(
            !svc.lines().any(|l| l.starts_with("RuntimeDirectory")),
            "/run/lock is not the unit's: {svc}"
        );
        assert_eq!(
            svc.matches("ReadWritePaths=-/run/lock\n").count(),
            1,
            "{svc}"
        );
        assert!(svc.contains("ReadWritePaths=-/srv/locks\n"), "{svc}");
        assert!(
            svc.contains("CAP_SYS_NICE"),
            "the priority comes back: {svc}"
        );
    }

    #[test]
    fn packaged_units_say_so_and_drop_ins_add_only_the_extra_folders() {
        let packaged = InstallPaths {
            binary: PACKAGED_BINARY.into(),
            packaged: true,
            ..InstallPaths::default()
        };
        for (path, text) in &render(&[], &packaged).unwrap()[1..] {
            assert!(
                text.starts_with("# Shipped by the extbackup package"),
                "{path:?}"
            );
            assert!(!text.contains("extbackup uninstall"), "{text}");
            assert!(!text.contains("man:extbackup(8)"), "{text}");
        }
        let mine = InstallPaths {
            writable: vec![
                "/var/lib/extbackup".into(),
                "/run/extbackup".into(),
                "/mnt/b".into(),
            ],
            shared: vec!["/run/lock".into()],
            ..packaged.clone()
        };
        let files = render_dropins(&[("a", A)], &mine, &packaged.writable).unwrap();
        assert_eq!(files.len(), 4);
        assert!(files[0].0.ends_with(RULE_FILE));
        for (path, text) in &files[1..] {
            assert!(path.ends_with(DROPIN), "{path:?}");
            assert!(
                text.contains("[Service]\nReadWritePaths=-/mnt/b\nReadWritePaths=-/run/lock\n"),
                "{text}"
            );
            assert!(!text.lines().any(|l| l.contains("Directory=")), "{text}");
        }
        let plain = render_dropins(&[], &packaged, &packaged.writable).unwrap();
        assert!(plain[1].1.contains(": none."), "{}", plain[1].1);
    }

    #[test]
    fn build_and_temporary_folders_are_not_stable() {
        assert!(transient_location(Path::new("/tmp/x/extbackup")).is_some());
        assert!(transient_location(Path::new("/home/u/src/target/debug/extbackup")).is_some());
        assert!(transient_location(Path::new("/usr/local/sbin/extbackup")).is_none());
        let dir = tempfile::tempdir_in("/var/lib").or_else(|_| tempfile::tempdir());
        if let Ok(dir) = dir {
            std::fs::write(dir.path().join("CACHEDIR.TAG"), "Signature").unwrap();
            let why = transient_location(&dir.path().join("x/extbackup")).unwrap();
            assert!(why.contains("folder"), "{why}");
        }
    }

    #[test]
    fn rejects_what_would_break_quoting() {
        let e = render(&[("x", "abc\"def")], &InstallPaths::default()).unwrap_err();
        assert!(e.to_string().contains("is not a LUKS UUID"), "{e}");
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
        assert_eq!(uninstall(&paths).unwrap().0.len(), 5);
        assert!(files.iter().all(|(p, _)| !p.exists()));
        assert!(uninstall(&paths).unwrap().0.is_empty());
    }

    #[test]
    fn a_source_install_makes_the_led_slots_at_boot_as_the_package_does() {
        let dir = tempfile::tempdir().unwrap();
        let paths = InstallPaths {
            udev_dir: dir.path().join("udev"),
            systemd_dir: dir.path().join("systemd"),
            tmpfiles_dir: dir.path().join("tmpfiles.d"),
            boot_dirs: vec![DEFAULT_SLOTS_DIR.into()],
            ..InstallPaths::default()
        };
        let files = render(&[("a", A)], &paths).unwrap();
        let (path, text) = files.last().unwrap();
        assert_eq!(path, &dir.path().join("tmpfiles.d/extbackup.conf"));
        // The same entries as the package's own tmpfiles.d file.
        let entries = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        };
        let packaged = include_str!("../../../../packaging/tmpfiles.conf");
        assert_eq!(entries(text), entries(packaged));
        assert_eq!(
            entries(text),
            [
                "d /run/blinkstick 0755 root root -",
                "d /run/blinkstick/slots 0755 root root -"
            ]
        );
        write(&files).unwrap();
        let removed = uninstall(&paths).unwrap().0;
        assert!(removed.contains(path), "{removed:?}");
        assert!(!path.exists());
        // Without boot folders (slots elsewhere, or the packaged form) no entry is written.
        let none = InstallPaths {
            boot_dirs: vec![],
            ..paths.clone()
        };
        assert_eq!(render(&[("a", A)], &none).unwrap().len(), 5);
        // A system folder is refused: tmpfiles would take over its mode (/run/lock 1777).
        for bad in ["/run/lock", "/var/lib/x", "/run/../etc"] {
            let p = InstallPaths {
                boot_dirs: vec![bad.into()],
                ..paths.clone()
            };
            assert!(render(&[("a", A)], &p).is_err(), "{bad}");
        }
    }
}
