//! The configuration's tables: a drive, a named source, the source lock, the syncer,
//! `[quiet]`, `[monitor]`, `[hooks]`, `[crypt]` and `[policy]`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// One backup drive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    /// Its name in logs, mail and status.
    pub name: DriveName,
    /// The UUID of its LUKS header.
    pub uuid: Uuid,
    /// The key file that unlocks it (mode 0400 or 0600, owned by root).
    pub key_file: PathBuf,
    /// Where to mount it; `mount_root/NAME` when absent.
    #[serde(default)]
    pub mount_point: Option<PathBuf>,
    /// This drive's own `history` setting (else the global one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<history::HistorySetting>,
}

/// One `[sources.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedSource {
    /// The tree to copy.
    pub path: PathBuf,
    /// What of it is not copied: see [`syncer::exclude`].
    #[serde(default)]
    pub exclude: ExcludeList,
    /// The lock other jobs hold while they write to this source: taken just before its
    /// copy, released after it.
    #[serde(default)]
    pub lock: Option<SourceLockConfig>,
}

/// A source as a run sees it, in either form of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Its name; `None` for the single top-level `source`.
    pub name: Option<SourceName>,
    /// The tree to copy.
    pub path: PathBuf,
    /// What of it is not copied.
    pub exclude: syncer::Excludes,
    /// Its own lock (named sources only; the single form has `[source_lock]`).
    pub lock: Option<SourceLockConfig>,
}

impl Source {
    /// `source "photos"`, or `the source` for the single form: for logs and errors.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("source {:?}", n.as_str()),
            None => "the source".into(),
        }
    }

    /// Where its copy lies under `base` (the data folder or a generation): `base/NAME`, or
    /// `base` itself for the single form.
    pub fn copy_in(&self, base: &Path) -> PathBuf {
        match &self.name {
            Some(n) => base.join(n.as_str()),
            None => base.to_path_buf(),
        }
    }
}

/// The source lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceLockConfig {
    /// The file to `flock` (compatible with `flock(1)`).
    pub path: PathBuf,
    /// How long to wait for it, in seconds (at most a day: [`super::values::MAX_WAIT_SECS`]).
    #[serde(default = "default_lock_timeout", deserialize_with = "at_most_a_day")]
    pub timeout_secs: u64,
}

fn at_most_a_day<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use super::values::MAX_WAIT_SECS;
    let v = u64::deserialize(d)?;
    if v > MAX_WAIT_SECS {
        return Err(serde::de::Error::custom(format!(
            "{v} seconds is more than a day ({MAX_WAIT_SECS}): give at most {MAX_WAIT_SECS}"
        )));
    }
    Ok(v)
}

fn default_lock_timeout() -> u64 {
    3600
}

impl SourceLockConfig {
    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// The syncer (`kind` defaults to `rsync`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    tag = "kind",
    rename_all = "kebab-case",
    try_from = "RawSyncer"
)]
pub enum SyncerConfig {
    /// `rsync -aHAX --numeric-ids --delete-delay` plus `extra_args` (the first copy onto an
    /// empty target by `cp` when there are none: `syncer::first_copy`).
    Rsync {
        /// More rsync arguments (e.g. `["--exclude=/tmp"]`).
        #[serde(default)]
        extra_args: Vec<String>,
    },
    /// The user's own program: argv, with `EXTBACKUP_SOURCE`, `EXTBACKUP_TARGET`,
    /// `EXTBACKUP_DRIVE` in its environment.
    Command {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// rsync options `extra_args` may not hold: they change what rsync deletes (on the drive
/// or on the NAS), where it writes or reads, or which program it runs. The rest (excludes,
/// filters, `--bwlimit`, `--info`, `--one-file-system`...) is allowed.
pub const REFUSED_RSYNC_OPTIONS: &[&str] = &[
    "--remove-source-files",
    "--del",
    "--delete",
    "--ignore-errors",
    "--force",
    "--max-delete",
    "--link-dest",
    "--copy-dest",
    "--compare-dest",
    "--backup",
    "--backup-dir",
    "--suffix",
    "--temp-dir",
    "--partial-dir",
    "--files-from",
    "--write-batch",
    "--only-write-batch",
    "--read-batch",
    "--log-file",
    "--rsh",
    "--rsync-path",
    "--daemon",
    "--server",
    "--sender",
    "--config",
    "--password-file",
];

/// One `extra_args` element: a long option (`--name` or `--name=value`, the value in the
/// same element) that is not in [`REFUSED_RSYNC_OPTIONS`]. Short options and bare words
/// are refused: `-b`/`-T DIR`/`-e CMD` hide in clusters, and a bare word would be one more
/// source or the destination.
pub fn check_extra_arg(arg: &str) -> Result<(), String> {
    let Some(long) = arg.strip_prefix("--").filter(|l| !l.is_empty()) else {
        return Err(format!(
            "syncer: extra_args element {arg:?}: write rsync options in their long form, \
             each with its value in the same element (e.g. \"--exclude=/tmp\")"
        ));
    };
    let name = format!("--{}", long.split('=').next().unwrap_or(long));
    // The --delete-* and --del* variants are all the same kind of change.
    let refused = REFUSED_RSYNC_OPTIONS
        .iter()
        .any(|r| name == *r || ((*r == "--delete" || *r == "--del") && name.starts_with("--del")));
    if refused {
        return Err(format!(
            "syncer: extra_args {arg:?} is refused: it changes what rsync deletes or where \
             it writes (extbackup itself runs rsync with --delete-delay into the drive's \
             data folder and keeps generations with its own --link-dest)"
        ));
    }
    Ok(())
}

/// The `[syncer]` table as written: `kind` may be left out (rsync).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyncer {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    extra_args: Option<Vec<String>>,
    #[serde(default)]
    command: Option<Vec<String>>,
}

impl TryFrom<RawSyncer> for SyncerConfig {
    type Error = String;
    fn try_from(r: RawSyncer) -> Result<Self, String> {
        match r.kind.as_deref().unwrap_or("rsync") {
            "rsync" => match r.command {
                Some(_) => Err("syncer: `command` goes with kind = \"command\", not rsync".into()),
                None => {
                    let extra_args = r.extra_args.unwrap_or_default();
                    extra_args.iter().try_for_each(|a| check_extra_arg(a))?;
                    Ok(Self::Rsync { extra_args })
                }
            },
            "command" => match (r.command, r.extra_args) {
                (_, Some(_)) => {
                    Err("syncer: `extra_args` goes with kind = \"rsync\", not command".into())
                }
                (None, None) => Err("syncer: kind = \"command\" needs `command`".into()),
                (Some(command), None) => Ok(Self::Command { command }),
            },
            other => Err(format!(
                "syncer: unknown kind {other:?}: use \"rsync\" (the default) or \"command\""
            )),
        }
    }
}

impl Default for SyncerConfig {
    fn default() -> Self {
        Self::Rsync { extra_args: vec![] }
    }
}

fn yes() -> bool {
    true
}

/// A quiet NAS while the copy runs: its CPU and I/O priority and a bandwidth limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietConfig {
    /// The copy's nice value, -20 (first) ..= 19 (last); unchanged when absent.
    #[serde(default)]
    pub nice: Option<Nice>,
    /// The copy's I/O class: `idle` or `best-effort`; unchanged when absent.
    #[serde(default)]
    pub io_class: Option<IoClassName>,
    /// With `best-effort`: 0 (first) ..= 7 (last); default 4.
    #[serde(default)]
    pub io_priority: Option<IoLevel>,
    /// rsync's `--bwlimit` in KiB/s (at least 1); no limit when absent.
    #[serde(default)]
    pub bwlimit_kib: Option<Positive>,
}

/// I/O scheduling classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoClassName {
    /// Only when nobody else uses the disks.
    Idle,
    /// The normal class, at `io_priority`.
    BestEffort,
}

/// Monitoring: pings to a healthchecks-style URL and a node-exporter textfile. Neither ever
/// fails or delays a backup.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// `https://hc-ping.com/KEY` (or with `{drive}` for one check per drive): `/start` when
    /// a run begins, the URL itself on success, `/fail` with the log's tail on failure.
    #[serde(default)]
    pub ping_url: Option<PingUrl>,
    /// The most a ping may take, and the most the end of a run waits for its pings.
    #[serde(default = "default_ping_timeout")]
    pub timeout_secs: Seconds,
    /// A Prometheus node-exporter textfile (`*.prom`), rewritten after every run.
    #[serde(default)]
    pub textfile: Option<PathBuf>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            ping_url: None,
            timeout_secs: default_ping_timeout(),
            textfile: None,
        }
    }
}

fn default_ping_timeout() -> Seconds {
    Seconds(10)
}

/// The hooks: commands run before the copy (after the source lock is taken) and after the
/// run (success or failure).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Run in order before the copy; the first failure stops the run (red, mail).
    #[serde(default)]
    pub before: Vec<HookConfig>,
    /// Run in order after the run, whatever its outcome; failures are reported, never
    /// hide the backup's outcome.
    #[serde(default)]
    pub after: Vec<HookConfig>,
}

/// One hook.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Its name in logs and mail.
    pub name: HookName,
    /// Program (an absolute path) and arguments; no shell unless you name one.
    pub command: HookCommand,
    /// How long it may run before it (and its process group) is killed.
    #[serde(default = "default_hook_timeout")]
    pub timeout_secs: Seconds,
}

fn default_hook_timeout() -> Seconds {
    Seconds(600)
}

/// The LUKS backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptConfig {
    /// `libcryptsetup` (real LUKS2) or `loopback-test` (no encryption; tests and the demo
    /// on kernels without dm-crypt, also needs env `EXTBACKUP_ALLOW_LOOPBACK_CRYPT=1`).
    #[serde(default)]
    pub backend: CryptBackend,
}

/// LUKS backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CryptBackend {
    /// Real LUKS2 through libcryptsetup.
    #[default]
    Libcryptsetup,
    /// No encryption, loop devices only; refuses unless enabled by env too.
    LoopbackTest,
}

/// Safety rules.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Refuse a sync that would delete more than this share of the drive's files.
    #[serde(default = "default_delete_share")]
    pub max_delete_fraction: Fraction,
    /// Refuse unless the source is a mount point (an unmounted source looks empty).
    #[serde(default = "yes")]
    pub require_source_mount_point: bool,
    /// `extbackup check` mails a reminder naming each drive whose last good backup is
    /// older than this.
    #[serde(default = "default_reminder")]
    pub reminder_age_days: u32,
    /// Check the free space on the drive before copying.
    #[serde(default = "yes")]
    pub check_free_space: bool,
    /// Show "attention" when a drive that is not configured is plugged in.
    #[serde(default)]
    pub attention_on_unknown_drive: bool,
    /// Every Nth plug-in of a drive, compare a random 10% of the files by content after the
    /// sync (`extbackup verify --sample 10`); 0 = never.
    #[serde(default)]
    pub verify_every: u32,
    /// Every plug-in of a drive, after the sync, re-read a rotating 1/N of the drive's files
    /// and check them against the drive's manifests (`extbackup scrub`), so every file is
    /// re-read every N plug-ins; 0 = never, at most [`MAX_SCRUB_SHARE`].
    #[serde(default, deserialize_with = "scrub_share")]
    pub scrub_share: u32,
}

/// The largest `scrub_share`: a share smaller than a thousandth re-reads a file less than
/// once in a thousand plug-ins, which protects nothing.
pub const MAX_SCRUB_SHARE: u32 = 1000;

fn scrub_share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v > MAX_SCRUB_SHARE {
        return Err(serde::de::Error::custom(format!(
            "scrub_share = {v}: give 0 (off) or 1 to {MAX_SCRUB_SHARE} (every file re-read every N plug-ins)"
        )));
    }
    Ok(v)
}

fn default_delete_share() -> Fraction {
    Fraction(0.5)
}

fn default_reminder() -> u32 {
    35
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_delete_fraction: default_delete_share(),
            require_source_mount_point: true,
            reminder_age_days: default_reminder(),
            check_free_space: true,
            attention_on_unknown_drive: false,
            verify_every: 0,
            scrub_share: 0,
        }
    }
}
