//! The configuration file (`/etc/extbackup/config.toml`): what the drives are, what to
//! copy, how to show and tell. Unknown keys and bad values are errors that name the line
//! and column (serde's `deny_unknown_fields` plus toml's spans); checks across keys (two
//! drives with one UUID, a key file others can read) come after parsing.
//!
//! Every key is described in `docs/configuration.md`.

pub mod history;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration lives unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/extbackup/config.toml";

/// What went wrong with a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Io,
    /// The TOML is malformed, has an unknown key or a bad value (with line and column).
    Parse,
    /// The values are individually fine but do not fit together.
    Invalid,
    /// A key file may be read by others than its owner.
    InsecureKeyFile,
}

/// A configuration error: what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ConfigError {
    fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }
    /// The broad kind of problem.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

/// A drive name: letters, digits, `-` and `_`, 1..=32 characters; used in the mapping
/// name (`extbackup-NAME`), the mount point and the state file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DriveName(String);

impl DriveName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DriveName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s))
        } else {
            Err(format!(
                "bad drive name {s:?}: use 1 to 32 letters, digits, `-` or `_`"
            ))
        }
    }
}

impl From<DriveName> for String {
    fn from(n: DriveName) -> String {
        n.0
    }
}

impl fmt::Display for DriveName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A LUKS UUID, lower-case and hyphenated (8-4-4-4-12 hex digits), as in
/// `/dev/disk/by-uuid` and `cryptsetup luksUUID`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Uuid(String);

impl Uuid {
    /// The UUID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Uuid {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        // The hyphenated form only (`uuid` also takes braces, `urn:` and bare hex).
        let parsed = uuid::Uuid::try_parse(&s)
            .ok()
            .map(|u| u.hyphenated().to_string())
            .filter(|h| h.eq_ignore_ascii_case(&s));
        if let Some(lower) = parsed {
            Ok(Self(lower))
        } else {
            Err(format!(
                "bad UUID {s:?}: expected 8-4-4-4-12 hex digits, as `cryptsetup luksUUID DEVICE` prints"
            ))
        }
    }
}

impl From<Uuid> for String {
    fn from(u: Uuid) -> String {
        u.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A share 0.0..=1.0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Fraction(f64);

impl Fraction {
    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Fraction {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!("{v} is not a share between 0.0 and 1.0"))
        }
    }
}

impl From<Fraction> for f64 {
    fn from(f: Fraction) -> f64 {
        f.0
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The tree to copy onto the drives (the single-source form: copied into `data/`
    /// itself). Either this or `[sources.NAME]` tables.
    #[serde(default)]
    pub source: Option<PathBuf>,
    /// Named sources, each copied into its own folder `data/NAME/` on the drive, in name
    /// order.
    #[serde(default)]
    pub sources: std::collections::BTreeMap<SourceName, NamedSource>,
    /// Where runs are recorded and the run lock lives.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Drives without their own `mount_point` are mounted at `mount_root/NAME`.
    #[serde(default = "default_mount_root")]
    pub mount_root: PathBuf,
    /// The host name used in mail; the system's when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// The lock other jobs hold while they write to the source.
    #[serde(default)]
    pub source_lock: Option<SourceLockConfig>,
    /// How the copy is made.
    #[serde(default)]
    pub syncer: SyncerConfig,
    /// How the state is shown (the indicator crate's `[indicator]` table).
    #[serde(default)]
    pub indicator: indicator::IndicatorConfig,
    /// Who is told, and how (the notifier crate's `[mail]` table).
    #[serde(default)]
    pub mail: Option<notifier::MailTable>,
    /// Which LUKS backend unlocks the drives.
    #[serde(default)]
    pub crypt: CryptConfig,
    /// Safety rules.
    #[serde(default)]
    pub policy: Policy,
    /// Commands run before and after the copy (`[[hooks.before]]`, `[[hooks.after]]`).
    #[serde(default)]
    pub hooks: HooksConfig,
    /// Healthchecks-style pings and the Prometheus textfile.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// CPU and I/O priority and a bandwidth limit for the copy.
    #[serde(default)]
    pub quiet: QuietConfig,
    /// Dated generations on the drives (`history = false` for a plain mirror), with their
    /// retention: see [`crate::drive::history`].
    #[serde(default)]
    pub history: history::HistorySetting,
    /// The backup drives.
    #[serde(default, rename = "drive")]
    pub drives: Vec<DriveConfig>,
}

fn default_state_dir() -> PathBuf {
    "/var/lib/extbackup".into()
}
fn default_mount_root() -> PathBuf {
    "/run/extbackup".into()
}

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

/// A source's name: like a drive's name (letters, digits, `-`, `_`; 1 to 32); the name of
/// its folder on the drive.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SourceName(String);

impl SourceName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SourceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match DriveName::try_from(s) {
            Ok(n) => Ok(Self(n.0)),
            Err(e) => Err(e.replacen("drive name", "source name", 1)),
        }
    }
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

/// Checked exclude patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct ExcludeList(pub syncer::Excludes);

impl TryFrom<Vec<String>> for ExcludeList {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        syncer::Excludes::new(&v)
            .map(Self)
            .map_err(|e| format!("{e} (see docs/configuration.md, Exclude patterns)"))
    }
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
    /// How long to wait for it, in seconds.
    #[serde(default = "default_lock_timeout")]
    pub timeout_secs: u64,
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
                None => Ok(Self::Rsync {
                    extra_args: r.extra_args.unwrap_or_default(),
                }),
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

/// A nice value, -20..=19.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Nice(i32);

impl Nice {
    /// The value.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for Nice {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (-20..=19).contains(&v) {
            Ok(Self(v as i32))
        } else {
            Err(format!(
                "nice = {v}: give -20 (first) to 19 (last, the quietest)"
            ))
        }
    }
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

/// An I/O priority level, 0..=7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct IoLevel(u8);

impl IoLevel {
    /// The level.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u64> for IoLevel {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v <= 7 {
            Ok(Self(v as u8))
        } else {
            Err(format!("io_priority = {v}: give 0 (first) to 7 (last)"))
        }
    }
}

/// A whole number, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct Positive(u64);

impl Positive {
    /// The value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Positive {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v == 0 {
            Err("0: give at least 1 (or leave the key out)".into())
        } else {
            Ok(Self(v))
        }
    }
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

/// An `http://` or `https://` URL without a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PingUrl(String);

impl PingUrl {
    /// The URL for `drive` (`{drive}` replaced).
    pub fn for_drive(&self, drive: &str) -> String {
        self.0.replace("{drive}", drive)
    }
}

impl TryFrom<String> for PingUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') && !s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Ok(Self(s.trim_end_matches('/').to_string()))
            }
            _ => Err(format!(
                "bad ping URL {s:?}: give an http:// or https:// URL such as https://hc-ping.com/YOUR-UUID"
            )),
        }
    }
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

/// A hook's name: 1 to 64 printable characters.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HookName(String);

impl HookName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HookName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
            Err(format!(
                "bad hook name {s:?}: use 1 to 64 printable characters"
            ))
        } else {
            Ok(Self(s))
        }
    }
}

/// A hook's argv: not empty, the program an absolute path.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct HookCommand(Vec<String>);

impl HookCommand {
    /// Program and arguments.
    pub fn argv(&self) -> &[String] {
        &self.0
    }
}

impl TryFrom<Vec<String>> for HookCommand {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        match v.first() {
            None => Err("hook command is empty: give the program and its arguments".into()),
            Some(p) if !p.starts_with('/') => Err(format!(
                "hook program {p:?} is not an absolute path (runs under systemd have a bare PATH)"
            )),
            Some(_) => Ok(Self(v)),
        }
    }
}

/// A whole number of seconds, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct Seconds(u64);

impl Seconds {
    /// As a duration.
    pub fn get(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl TryFrom<u64> for Seconds {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v == 0 {
            Err("0 seconds: give at least 1".into())
        } else {
            Ok(Self(v))
        }
    }
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
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`. The key files are checked by
    /// [`check_key_files`](Self::check_key_files) (`extbackup config check`) and, for the
    /// drive at hand, when a run identifies it: one drive's missing key file does not stop
    /// another drive's backup.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            kind: ConfigErrorKind::Io,
            message: format!(
                "reading the configuration {}: create it (see docs/configuration.md) or pass --config",
                path.display()
            ),
            source: Some(Box::new(e)),
        })?;
        Self::parse(&text).map_err(|mut e| {
            e.message = format!("{}: {}", path.display(), e.message);
            e
        })
    }

    /// Parses and checks `text` (without looking at the key files).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let mut msg = String::from("invalid configuration");
            if let Some(span) = e.span() {
                let (line, col) = line_col(text, span.start);
                msg = format!("invalid configuration at line {line}, column {col}");
            }
            ConfigError::new(
                ConfigErrorKind::Parse,
                format!("{msg}: {}", e.message().trim_end()),
            )
        })?;
        cfg.validate().map_err(|(at, msg)| {
            let msg = match at.locate(text) {
                Some((line, col)) => {
                    format!("invalid configuration at line {line}, column {col}: {msg}")
                }
                None => msg,
            };
            ConfigError::new(ConfigErrorKind::Invalid, msg)
        })?;
        Ok(cfg)
    }

    /// The checks across keys; an error says where in the file it points.
    fn validate(&self) -> Result<(), (At, String)> {
        self.check_paths()?;
        self.check_sources()?;
        self.check_drives()?;
        self.check_tables()
    }

    /// Every path absolute and free of control characters.
    fn check_paths(&self) -> Result<(), (At, String)> {
        for (at, what, p) in self.paths() {
            if !p.is_absolute() {
                return Err((
                    at,
                    format!("{what} {} is not an absolute path", p.display()),
                ));
            }
            if p.as_os_str()
                .as_bytes()
                .iter()
                .any(|b| b.is_ascii_control())
            {
                return Err((
                    at,
                    format!(
                        "{what} {:?} holds a newline or another control character, which \
                         mount tables, systemd units and logs cannot carry: rename it",
                        p
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One form of sources, at least one source, no two overlapping, excludes only where
    /// the syncer honours them, no lock taken twice.
    fn check_sources(&self) -> Result<(), (At, String)> {
        let named = |n: &SourceName, key| At::NamedSource(n.as_str().to_string(), key);
        if self.source.is_some() && !self.sources.is_empty() {
            return Err((
                At::Source,
                "both `source` and [sources.NAME] tables: give one tree as `source`, or \
                 name each tree in its own [sources.NAME] table (then drop `source`)"
                    .into(),
            ));
        }
        if self.source.is_none() && self.sources.is_empty() {
            return Err((
                At::Start,
                "no source: give `source = \"/path\"` (one tree) or [sources.NAME] tables \
                 with `path = \"/path\"`"
                    .into(),
            ));
        }
        let all: Vec<_> = self.sources.iter().collect();
        for (i, (n, src)) in all.iter().enumerate() {
            if let Some((m, _)) = all[..i].iter().find(|(_, o)| overlaps(&src.path, &o.path)) {
                return Err((
                    named(n, "path"),
                    format!(
                        "sources {:?} and {:?} overlap ({} and {}): a tree would be copied \
                         twice; use excludes to leave the inner one out of the outer one, or \
                         name trees side by side",
                        m.as_str(),
                        n.as_str(),
                        all.iter()
                            .find(|(k, _)| k == m)
                            .expect("listed")
                            .1
                            .path
                            .display(),
                        src.path.display()
                    ),
                ));
            }
            self.check_named_source(n, src)?;
        }
        Ok(())
    }

    fn check_named_source(&self, n: &SourceName, src: &NamedSource) -> Result<(), (At, String)> {
        let at = |key| At::NamedSource(n.as_str().to_string(), key);
        if !src.exclude.0.is_empty() && matches!(self.syncer, SyncerConfig::Command { .. }) {
            return Err((
                at("exclude"),
                format!(
                    "source {:?}: exclude patterns go with the rsync syncer; a sync command \
                     chooses what it copies itself",
                    n.as_str()
                ),
            ));
        }
        if self.source_lock.is_some() {
            return Err((
                At::Table("source_lock"),
                "[source_lock] goes with the single `source`; with [sources.NAME] tables give \
                 each source its own `lock = { path = \"...\" }` (taken just before its copy)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Drive names and UUIDs unique, no mount point overlapping a source.
    fn check_drives(&self) -> Result<(), (At, String)> {
        let sources = self.sources();
        for (i, d) in self.drives.iter().enumerate() {
            for e in &self.drives[..i] {
                if e.name == d.name {
                    return Err((
                        At::Drive(i, "name"),
                        format!(
                            "two [[drive]] tables are named {:?}: give each drive its own name",
                            d.name.as_str()
                        ),
                    ));
                }
                if e.uuid == d.uuid {
                    return Err((
                        At::Drive(i, "uuid"),
                        format!(
                            "drives {:?} and {:?} have the same UUID {}",
                            e.name.as_str(),
                            d.name.as_str(),
                            d.uuid
                        ),
                    ));
                }
            }
            let mp = self.mount_point(d);
            let at = if d.mount_point.is_some() {
                At::Drive(i, "mount_point")
            } else {
                At::MountRoot
            };
            if let Some(src) = sources.iter().find(|s| overlaps(&mp, &s.path)) {
                return Err((
                    at,
                    format!(
                        "drive {:?}: its mount point {} overlaps {} {}: the copy would \
                         copy the drive into itself (or hide the source); mount it elsewhere",
                        d.name.as_str(),
                        mp.display(),
                        src.label(),
                        src.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The tables' own checks.
    fn check_tables(&self) -> Result<(), (At, String)> {
        if self.quiet.io_priority.is_some() && self.quiet.io_class != Some(IoClassName::BestEffort)
        {
            return Err((
                At::Table("quiet"),
                "[quiet] io_priority goes with io_class = \"best-effort\" (the idle class has no levels)".into(),
            ));
        }
        if let Some(t) = &self.monitor.textfile {
            if t.extension().is_none_or(|e| e != "prom") {
                return Err((
                    At::Table("monitor"),
                    format!(
                        "monitor.textfile {} does not end in .prom: node-exporter's textfile \
                         collector reads only *.prom files",
                        t.display()
                    ),
                ));
            }
        }
        if let SyncerConfig::Command { command } = &self.syncer {
            if command.is_empty() {
                return Err((
                    At::Table("syncer"),
                    "syncer: `command` is empty: give the program and its arguments".into(),
                ));
            }
        }
        // The crates' own checks of their tables: exactly what a run would refuse.
        if let Err(e) = self.indicator.check() {
            return Err((
                At::Table("indicator"),
                format!("[indicator] {}", crate::chain(&e)),
            ));
        }
        if let Some(m) = &self.mail {
            m.check()
                .map_err(|e| (At::Table("mail"), format!("[mail] {}", crate::chain(&e))))?;
        }
        Ok(())
    }

    /// The sources, in either form: the single `source` (with `[source_lock]` taken by the
    /// run's source-lock step), or the named ones in name order.
    pub fn sources(&self) -> Vec<Source> {
        if let Some(p) = &self.source {
            return vec![Source {
                name: None,
                path: p.clone(),
                exclude: syncer::Excludes::default(),
                lock: None,
            }];
        }
        self.sources
            .iter()
            .map(|(n, s)| Source {
                name: Some(n.clone()),
                path: s.path.clone(),
                exclude: s.exclude.0.clone(),
                lock: s.lock.clone(),
            })
            .collect()
    }

    /// Every path the file names, with its place and its name in messages.
    fn paths(&self) -> Vec<(At, String, PathBuf)> {
        let mut v = vec![
            (
                At::Key("state_dir"),
                "state_dir".into(),
                self.state_dir.clone(),
            ),
            (At::MountRoot, "mount_root".into(), self.mount_root.clone()),
        ];
        if let Some(p) = &self.source {
            v.push((At::Source, "source".to_string(), p.clone()));
        }
        for (n, src) in &self.sources {
            let at = |key| At::NamedSource(n.as_str().to_string(), key);
            v.push((
                at("path"),
                format!("sources.{}.path", n.as_str()),
                src.path.clone(),
            ));
            if let Some(l) = &src.lock {
                v.push((
                    at("lock"),
                    format!("sources.{}.lock.path", n.as_str()),
                    l.path.clone(),
                ));
            }
        }
        if let Some(l) = &self.source_lock {
            v.push((
                At::Table("source_lock"),
                "source_lock.path".into(),
                l.path.clone(),
            ));
        }
        if let Some(t) = &self.monitor.textfile {
            v.push((At::Table("monitor"), "monitor.textfile".into(), t.clone()));
        }
        if let Some(m) = &self.mail {
            if let Some(d) = &m.spool_dir {
                v.push((At::Table("mail"), "mail.spool_dir".into(), d.clone()));
            }
        }
        for (i, d) in self.drives.iter().enumerate() {
            let name = d.name.as_str();
            v.push((
                At::Drive(i, "key_file"),
                format!("drive {name:?}: key_file"),
                d.key_file.clone(),
            ));
            if let Some(mp) = &d.mount_point {
                v.push((
                    At::Drive(i, "mount_point"),
                    format!("drive {name:?}: its mount point"),
                    mp.clone(),
                ));
            }
        }
        v
    }

    /// The `[mail]` settings as the mail backend takes them (`None` without mail).
    pub fn notify_config(&self) -> Option<notifier::MailConfig> {
        let from = format!("extbackup <root@{}>", self.host_name());
        Some(
            self.mail
                .as_ref()?
                .resolve(&from, &self.state_dir.join("spool")),
        )
    }

    /// Refuses key files that others than the owner may read, or that are missing.
    pub fn check_key_files(&self) -> Result<(), ConfigError> {
        for d in &self.drives {
            check_key_file(&d.key_file).map_err(|e| ConfigError {
                message: format!("drive {:?}: {}", d.name.as_str(), e.message),
                ..e
            })?;
        }
        Ok(())
    }

    /// The drive with this LUKS UUID.
    pub fn drive_by_uuid(&self, uuid: &str) -> Option<&DriveConfig> {
        let uuid = uuid.to_ascii_lowercase();
        self.drives.iter().find(|d| d.uuid.as_str() == uuid)
    }

    /// The drive with this name.
    pub fn drive_by_name(&self, name: &str) -> Option<&DriveConfig> {
        self.drives.iter().find(|d| d.name.as_str() == name)
    }

    /// Where `drive` is mounted during a run.
    pub fn mount_point(&self, drive: &DriveConfig) -> PathBuf {
        drive
            .mount_point
            .clone()
            .unwrap_or_else(|| self.mount_root.join(drive.name.as_str()))
    }

    /// The retention of `drive`'s generations; `None` for a plain mirror.
    pub fn retention(&self, drive: &DriveConfig) -> Option<syncer::generations::Retention> {
        history::resolve(&self.history, drive.history.as_ref())
    }

    /// The host name for mail.
    pub fn host_name(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                // An unset kernel host name reads "(none)": not usable in an address.
                .filter(|h| {
                    !h.is_empty()
                        && h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                })
                .unwrap_or_else(|| "localhost".into())
        })
    }

    /// A human summary of what the configuration says (for `extbackup config check`).
    pub fn summary(&self) -> String {
        let mut lines = self.summary_sources();
        lines.push(format!("state dir: {}", self.state_dir.display()));
        lines.extend(self.summary_copy());
        lines.extend(self.summary_tell());
        lines.extend(self.summary_drives());
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn summary_sources(&self) -> Vec<String> {
        let lock = |l: &SourceLockConfig| {
            format!("{} (wait up to {} s)", l.path.display(), l.timeout_secs)
        };
        let mut v = vec![];
        if let Some(p) = &self.source {
            v.push(format!("source: {}", p.display()));
        }
        for (n, src) in &self.sources {
            let mut l = format!(
                "source {}: {} -> data/{}/",
                n.as_str(),
                src.path.display(),
                n.as_str()
            );
            if !src.exclude.0.is_empty() {
                let pats: Vec<_> = src.exclude.0.patterns().collect();
                l.push_str(&format!(", excluding {}", pats.join(" ")));
            }
            if let Some(k) = &src.lock {
                l.push_str(&format!(", lock {}", lock(k)));
            }
            v.push(l);
        }
        v.push(match &self.source_lock {
            Some(l) => format!("source lock: {}", lock(l)),
            None => "source lock: none".into(),
        });
        v
    }

    /// How the copy is made: priorities, monitoring, hooks, the syncer.
    fn summary_copy(&self) -> Vec<String> {
        let mut v = vec![];
        if let Some(n) = self.quiet.nice {
            v.push(format!("copy nice value: {}", n.get()));
        }
        if let Some(c) = self.quiet.io_class {
            let level = self
                .quiet
                .io_priority
                .map_or(String::new(), |l| format!(" {}", l.get()));
            v.push(format!("copy I/O class: {c:?}{level}"));
        }
        if let Some(b) = self.quiet.bwlimit_kib {
            v.push(format!("copy bandwidth limit: {} KiB/s", b.get()));
        }
        // The ping URL is a secret of sorts (anyone holding it can ping): not shown.
        if self.monitor.ping_url.is_some() {
            v.push(format!(
                "monitoring pings: on (timeout {} s)",
                self.monitor.timeout_secs.get().as_secs()
            ));
        }
        if let Some(t) = &self.monitor.textfile {
            v.push(format!("monitoring textfile: {}", t.display()));
        }
        for (phase, hooks) in [("before", &self.hooks.before), ("after", &self.hooks.after)] {
            for h in hooks {
                v.push(format!(
                    "{phase} hook {:?}: {:?} (timeout {} s)",
                    h.name.as_str(),
                    h.command.argv(),
                    h.timeout_secs.get().as_secs()
                ));
            }
        }
        v.push(match &self.syncer {
            SyncerConfig::Rsync { extra_args } if extra_args.is_empty() => "syncer: rsync".into(),
            SyncerConfig::Rsync { extra_args } => {
                format!("syncer: rsync, extra arguments {}", extra_args.join(" "))
            }
            SyncerConfig::Command { command } => format!("syncer: command {}", command.join(" ")),
        });
        v
    }

    /// How the state is shown and told, and the policy.
    fn summary_tell(&self) -> Vec<String> {
        let crypt = match self.crypt.backend {
            CryptBackend::Libcryptsetup => "libcryptsetup",
            CryptBackend::LoopbackTest => "loopback-test (NO ENCRYPTION: tests only)",
        };
        let mail = match &self.mail {
            None => "mail: none (failures are only logged)".into(),
            Some(m) => format!(
                "mail: to {} via {}",
                m.to.join(", "),
                match &m.transport {
                    notifier::TransportTable::Smtp { host, port, .. } =>
                        format!("smtp {host}:{port}"),
                    notifier::TransportTable::Sendmail { .. } => "sendmail".into(),
                    notifier::TransportTable::File { dir } => format!("files in {}", dir.display()),
                }
            ),
        };
        vec![
            format!("crypt backend: {crypt}"),
            format!("indicator: {:?}", self.indicator.backend).to_lowercase(),
            mail,
            format!(
                "policy: delete at most {:.0}% of the drive's files, source must {}be a mount point, remind after {} days",
                self.policy.max_delete_fraction.get() * 100.0,
                if self.policy.require_source_mount_point { "" } else { "not necessarily " },
                self.policy.reminder_age_days
            ),
        ]
    }

    fn summary_drives(&self) -> Vec<String> {
        if self.drives.is_empty() {
            return vec![
                "drives: none (add one with `extbackup prepare DEVICE --name NAME`)".into(),
            ];
        }
        self.drives
            .iter()
            .map(|d| {
                format!(
                    "drive {}: UUID {}, key file {}, mounted at {}; {}",
                    d.name,
                    d.uuid,
                    d.key_file.display(),
                    self.mount_point(d).display(),
                    history::describe(self.retention(d))
                )
            })
            .collect()
    }
}

/// `path` as the kernel will reach it: symbolic links resolved as far as the path exists,
/// `.` and `..` folded in the part that does not exist yet.
fn resolve(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => {
                out.push(n);
                if let Ok(real) = std::fs::canonicalize(&out) {
                    out = real;
                }
            }
        }
    }
    out
}

/// A mount point inside the source (or above it), however the paths are written.
fn overlaps(mount_point: &Path, source: &Path) -> bool {
    let (m, s) = (resolve(mount_point), resolve(source));
    m.starts_with(&s) || s.starts_with(&m)
}

/// Refuses a key file that is missing, not a regular file, or readable by group or others.
pub fn check_key_file(path: &Path) -> Result<(), ConfigError> {
    let md = std::fs::metadata(path).map_err(|e| ConfigError {
        kind: ConfigErrorKind::Io,
        message: format!("key file {}: cannot read it", path.display()),
        source: Some(Box::new(e)),
    })?;
    if !md.is_file() {
        return Err(ConfigError::new(
            ConfigErrorKind::Invalid,
            format!("key file {} is not a regular file", path.display()),
        ));
    }
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::new(
            ConfigErrorKind::InsecureKeyFile,
            format!(
                "key file {} has mode {mode:04o}: others may read it; run `chmod 0400 {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Where a check across keys points: the key's place in the file.
enum At {
    /// `source`.
    Source,
    /// `mount_root` (the file's start when it is not set).
    MountRoot,
    /// Another top-level key.
    Key(&'static str),
    /// A key of the n-th `[[drive]]`.
    Drive(usize, &'static str),
    /// A top-level table.
    Table(&'static str),
    /// The start of the file (what is missing has no place).
    Start,
    /// A key of the `[sources.NAME]` table.
    NamedSource(String, &'static str),
}

type SpannedValue = toml::Spanned<toml::Value>;

/// The places of the keys the checks point at (other keys ignored).
#[derive(Deserialize)]
struct Places {
    source: Option<SpannedValue>,
    mount_root: Option<SpannedValue>,
    state_dir: Option<SpannedValue>,
    source_lock: Option<SpannedValue>,
    sources: Option<
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, SpannedValue>>,
    >,
    #[serde(default, rename = "drive")]
    drives: Vec<std::collections::HashMap<String, SpannedValue>>,
    syncer: Option<SpannedValue>,
    indicator: Option<SpannedValue>,
    mail: Option<SpannedValue>,
    monitor: Option<SpannedValue>,
    quiet: Option<SpannedValue>,
}

impl At {
    /// Line and column (from 1) of the place in `text`, when it can be found.
    fn locate(&self, text: &str) -> Option<(usize, usize)> {
        let p: Places = toml::from_str(text).ok()?;
        let v = match self {
            At::Source => p.source?,
            At::MountRoot => p.mount_root?,
            At::Key("state_dir") => p.state_dir?,
            At::Key(_) => return None,
            At::Table("source_lock") => p.source_lock?,
            At::Drive(i, key) => p.drives.into_iter().nth(*i)?.remove(*key)?,
            At::Table("syncer") => p.syncer?,
            At::Table("indicator") => p.indicator?,
            At::Table("mail") => p.mail?,
            At::Table("monitor") => p.monitor?,
            At::Table("quiet") => p.quiet?,
            At::Table(_) => return None,
            At::Start => return Some((1, 1)),
            At::NamedSource(n, key) => p.sources?.remove(n)?.remove(*key)?,
        };
        Some(line_col(text, v.span().start))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The text of a `[[drive]]` table to append to a configuration file.
pub fn drive_table(d: &DriveConfig) -> String {
    let mut s = format!(
        "\n[[drive]]\nname = {}\nuuid = {}\nkey_file = {}\n",
        toml_str(d.name.as_str()),
        toml_str(d.uuid.as_str()),
        toml_str(&d.key_file.to_string_lossy()),
    );
    if let Some(mp) = &d.mount_point {
        s.push_str(&format!(
            "mount_point = {}\n",
            toml_str(&mp.to_string_lossy())
        ));
    }
    s
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
source = "/srv/backup"

[[drive]]
name = "offsite-a"
uuid = "0B1C2D3E-aaaa-4bbb-8ccc-0123456789ab"
key_file = "/etc/extbackup/keys/offsite-a.key"
"#;

    const NAMED: &str = r#"
[sources.photos]
path = "/srv/photos"
exclude = ["*.tmp", "/cache/", "**/node_modules/"]
lock = { path = "/run/lock/photos.lock", timeout_secs = 60 }

[sources.docs]
path = "/home/docs"

[[drive]]
name = "offsite-a"
uuid = "0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab"
key_file = "/k/a.key"
"#;

    #[test]
    fn named_sources_are_read_in_name_order_with_their_excludes_and_locks() {
        let c = Config::parse(NAMED).unwrap();
        let s = c.sources();
        let names: Vec<_> = s
            .iter()
            .map(|s| s.name.as_ref().unwrap().as_str())
            .collect();
        assert_eq!(names, ["docs", "photos"]);
        assert_eq!(s[1].path, Path::new("/srv/photos"));
        assert_eq!(
            s[1].exclude.patterns().collect::<Vec<_>>(),
            ["*.tmp", "/cache/", "**/node_modules/"]
        );
        assert!(s[1].exclude.excludes(Path::new("a/b.tmp"), false));
        assert_eq!(
            s[1].lock.as_ref().unwrap().timeout(),
            Duration::from_secs(60)
        );
        assert!(s[0].exclude.is_empty() && s[0].lock.is_none());
        assert_eq!(
            s[1].copy_in(Path::new("/m/data")),
            Path::new("/m/data/photos")
        );
        assert_eq!(s[1].label(), "source \"photos\"");
        let summary = c.summary();
        assert!(
            summary.contains(
                "source photos: /srv/photos -> data/photos/, excluding *.tmp /cache/ \
                 **/node_modules/, lock /run/lock/photos.lock (wait up to 60 s)"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("source docs: /home/docs -> data/docs/\n"),
            "{summary}"
        );
        // The single form: one source, copied into the data folder itself.
        let one = Config::parse(MIN).unwrap().sources();
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].name.as_ref(), one[0].path.as_path()),
            (None, Path::new("/srv/backup"))
        );
        assert_eq!(one[0].copy_in(Path::new("/m/data")), Path::new("/m/data"));
    }

    #[test]
    fn source_errors_name_line_and_column() {
        let with = |extra: &str| format!("{extra}{NAMED}");
        let cases = [
            (with("source = \"/srv/backup\"\n"), "line 1, column 10", "both `source` and [sources.NAME]"),
            (NAMED.replace("/home/docs", "/srv/photos/docs"), "line 3, column 8", "overlap"),
            (NAMED.replace("/home/docs", "home/docs"), "line 8, column 8", "not an absolute path"),
            (NAMED.replace("\"*.tmp\"", "\"+ *.tmp\""), "line 4, column 11", "filter-rule prefixes"),
            (NAMED.replace("\"/cache/\"", "\"ca[che\""), "line 4, column 11", "without its `]`"),
            (NAMED.replace("[sources.docs]", "[sources.\"my docs\"]"), "line 7, column 10", "bad source name"),
            (NAMED.replace("path = \"/home/docs\"", "path = \"/home/docs\"\nexclud = []"), "line 9, column 1", "unknown field"),
            (NAMED.replace("/run/lock/photos.lock", "photos.lock"), "line 5, column 8", "lock.path photos.lock is not an absolute"),
            (format!("{NAMED}mount_point = \"/home/docs/mnt\"\n"), "line 14, column 15", "overlaps source \"docs\""),
            (format!("{NAMED}[source_lock]\npath = \"/l\"\n"), "line 14, column 1", "[source_lock] goes with the single"),
            (
                format!("{NAMED}[syncer]\nkind = \"command\"\ncommand = [\"/x\"]\n"),
                "line 4, column 11",
                "exclude patterns go with the rsync syncer",
            ),
            (NAMED.replace("[sources.photos]\npath = \"/srv/photos\"\nexclude = [\"*.tmp\", \"/cache/\", \"**/node_modules/\"]\nlock = { path = \"/run/lock/photos.lock\", timeout_secs = 60 }\n", "").replace("[sources.docs]\npath = \"/home/docs\"\n", ""), "line 1, column 1", "no source"),
        ];
        let mut wrong = vec![];
        for (text, place, needle) in cases {
            let e = Config::parse(&text).unwrap_err().to_string();
            if !e.contains(place) || !e.contains(needle) {
                wrong.push(format!("{needle} (want {place}): {e}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn hooks_are_read_and_their_errors_name_line_and_column() {
        let ok = format!(
            "{MIN}[[hooks.before]]\nname = \"dump\"\ncommand = [\"/usr/bin/dump\", \"-a\"]\n[[hooks.after]]\nname = \"x\"\ncommand = [\"/bin/true\"]\ntimeout_secs = 5\n"
        );
        let c = Config::parse(&ok).unwrap();
        assert_eq!(c.hooks.before[0].command.argv(), ["/usr/bin/dump", "-a"]);
        assert_eq!(
            c.hooks.before[0].timeout_secs.get(),
            Duration::from_secs(600)
        );
        assert_eq!(c.hooks.after[0].timeout_secs.get(), Duration::from_secs(5));
        for (bad, line, col, needle) in [
            (
                "[[hooks.before]]\nname = \"d\"\ncommand = []\n",
                10,
                11,
                "empty",
            ),
            (
                "[[hooks.before]]\nname = \"d\"\ncommand = [\"dump\"]\n",
                10,
                11,
                "absolute",
            ),
            (
                "[[hooks.after]]\nname = \"d\"\ncommand = [\"/x\"]\ntimeout_secs = 0\n",
                11,
                16,
                "at least 1",
            ),
            (
                "[[hooks.after]]\nname = \"d\"\ncommand = [\"/x\"]\ntimeout = 5\n",
                11,
                1,
                "unknown field",
            ),
        ] {
            let e = Config::parse(&format!("{MIN}{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("line {line}, column {col}")), "{e}");
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults_and_lowercases_uuid() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.state_dir, Path::new("/var/lib/extbackup"));
        assert_eq!(
            c.drives[0].uuid.as_str(),
            "0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab"
        );
        assert!(c
            .drive_by_uuid("0B1C2D3E-AAAA-4BBB-8CCC-0123456789AB")
            .is_some());
        assert_eq!(
            c.mount_point(&c.drives[0]),
            Path::new("/run/extbackup/offsite-a")
        );
        assert_eq!(c.indicator.backend, indicator::BackendKind::Blinkstick);
        assert!(c.policy.require_source_mount_point);
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = format!("colour = \"red\"\n{MIN}");
        let e = Config::parse(&text).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Parse);
        let m = e.to_string();
        assert!(m.contains("line 1, column 1"), "{m}");
        assert!(m.contains("colour"), "{m}");
    }

    #[test]
    fn a_uuid_is_the_hyphenated_form_only_and_lower_case() {
        let ok = Uuid::try_from("0B1C2D3E-aaaa-4bbb-8ccc-0123456789AB".to_string()).unwrap();
        assert_eq!(ok.as_str(), "0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab");
        for bad in [
            "0b1c2d3eaaaa4bbb8ccc0123456789ab",
            "{0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab}",
            "urn:uuid:0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab",
            "0b1c2d3e-aaaa-4bbb-8ccc-0123456789a",
            "0b1c2d3e-aaaa-4bbb-8ccc-0123456789ag",
        ] {
            assert!(Uuid::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_name_their_place() {
        let text = MIN.replace("0B1C2D3E-aaaa", "nope");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("line 6, column 8"), "{e}");
        assert!(e.contains("bad UUID"), "{e}");

        let text = format!("{MIN}\n[indicator]\nbackend = \"consol\"\n");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("line 10"), "{e}");

        let text =
            format!("{MIN}\n[indicator]\nlimit = 150\n[indicator.colors]\nworking = \"blurple\"\n");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("blurple"), "{e}");

        let text = format!("{MIN}\n[policy]\nmax_delete_fraction = 2.0\n");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("line 10"), "{e}");
    }

    #[test]
    fn duplicate_uuid_is_refused() {
        let text = format!(
            "{MIN}\n[[drive]]\nname = \"b\"\nuuid = \"0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab\"\nkey_file = \"/k\"\n"
        );
        let e = Config::parse(&text).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Invalid);
        assert!(e.to_string().contains("same UUID"));
    }

    #[test]
    fn checks_across_keys_name_line_and_column() {
        let second = |uuid: &str, key: &str| {
            format!("{MIN}\n[[drive]]\nname = \"b\"\nuuid = \"{uuid}\"\nkey_file = \"{key}\"\n")
        };
        let e = Config::parse(&second("0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab", "/k")).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Invalid);
        let m = e.to_string();
        assert!(m.contains("at line 11, column 8"), "the second uuid: {m}");
        assert!(m.contains("same UUID"), "{m}");

        let m = Config::parse(&second(
            "1b1c2d3e-aaaa-4bbb-8ccc-0123456789ab",
            "keys/b.key",
        ))
        .unwrap_err()
        .to_string();
        assert!(m.contains("at line 12, column 12"), "b's key_file: {m}");
        assert!(m.contains("not an absolute path"), "{m}");

        let m = Config::parse(&MIN.replace("\"/srv/backup\"", "\"srv/backup\""))
            .unwrap_err()
            .to_string();
        assert!(m.contains("at line 2, column 10"), "source: {m}");

        let m = Config::parse(&format!(
            "{MIN}\n[mail]\nto = []\ntransport = {{ kind = \"sendmail\" }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(m.contains("at line 9, column 1"), "[mail]: {m}");
        assert!(m.contains("no mail recipient"), "{m}");
    }

    #[test]
    fn a_mount_point_inside_the_source_or_relative_is_refused() {
        let text = format!("{MIN}mount_point = \"/srv/backup/offsite\"\n");
        let m = Config::parse(&text).unwrap_err().to_string();
        assert!(m.contains("overlaps the source"), "{m}");
        assert!(m.contains("at line 8, column 15"), "{m}");

        let text = MIN.replace(
            "source = ",
            "mount_root = \"/srv/backup/drives\"\nsource = ",
        );
        let m = Config::parse(&text).unwrap_err().to_string();
        assert!(m.contains("overlaps the source"), "{m}");
        assert!(m.contains("at line 2, column 14"), "{m}");

        let text = format!("{MIN}mount_point = \"mnt/offsite\"\n");
        let m = Config::parse(&text).unwrap_err().to_string();
        assert!(m.contains("not an absolute path"), "{m}");

        // Beside the source is fine (`/srv/backup-drives` is not inside `/srv/backup`).
        let text = format!("{MIN}mount_point = \"/srv/backup-drives/a\"\n");
        Config::parse(&text).unwrap();
    }

    #[test]
    fn a_mount_point_reaching_into_the_source_through_dots_or_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("link")).unwrap();
        for mp in [
            format!("{d}/mnt/../data/inner"),
            format!("{d}/link/inner"),
            format!("{d}/./data/x/../inner"),
        ] {
            let text = MIN.replace("/srv/backup", &format!("{d}/data"))
                + &format!("mount_point = {mp:?}\n");
            let m = Config::parse(&text).unwrap_err().to_string();
            assert!(m.contains("overlaps the source"), "{mp}: {m}");
            assert!(m.contains("at line 8, column 15"), "{mp}: {m}");
        }
        // The link's own folder beside the source is fine.
        let text = MIN.replace("/srv/backup", &format!("{d}/data"))
            + &format!("mount_point = \"{d}/mnt/../drives/a\"\n");
        Config::parse(&text).unwrap();
    }

    #[test]
    fn what_a_run_would_refuse_the_parse_refuses_too() {
        let bad = [
            (
                "[mail]\nto = [\"root@localhost\"]\ntransport = { kind = \"smtp\", host = \"mail.example.org\", security = \"none\" }\n",
                "unencrypted SMTP",
            ),
            (
                "[mail]\nto = [\"root@localhost\"]\ntransport = { kind = \"smtp\", host = \"127.example.com\", security = \"none\" }\n",
                "unencrypted SMTP",
            ),
            (
                "[mail]\nto = [\"not an address\"]\ntransport = { kind = \"sendmail\" }\n",
                "not a valid address",
            ),
            ("state_dir = \"state\"\n", "state_dir state is not an absolute path"),
            (
                "[source_lock]\npath = \"backup.lock\"\n",
                "source_lock.path backup.lock is not an absolute path",
            ),
        ];
        for (extra, want) in bad {
            // Top-level keys before the tables, tables after the drive.
            let text = if extra.starts_with('[') {
                format!("{MIN}{extra}")
            } else {
                format!("{extra}{MIN}")
            };
            let m = Config::parse(&text).unwrap_err().to_string();
            assert!(m.contains(want), "{extra}: {m}");
            assert!(m.contains("at line "), "{extra}: {m}");
        }
        let text = MIN.replace("/srv/backup", "/srv/back\\nup");
        let m = Config::parse(&text).unwrap_err().to_string();
        assert!(m.contains("newline"), "{m}");
        // `kind` defaults to rsync, as the docs say.
        let c =
            Config::parse(&format!("{MIN}[syncer]\nextra_args = [\"--bwlimit=1M\"]\n")).unwrap();
        assert_eq!(
            c.syncer,
            SyncerConfig::Rsync {
                extra_args: vec!["--bwlimit=1M".into()]
            }
        );
        let c = Config::parse(&format!("{MIN}[syncer]\n")).unwrap();
        assert_eq!(c.syncer, SyncerConfig::default());
        let m = Config::parse(&format!("{MIN}[syncer]\nkind = \"rsnc\"\n"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("unknown kind") && m.contains("line 8"), "{m}");
    }

    #[test]
    fn syncer_and_mail_tables_parse() {
        let text = format!(
            "{MIN}\n[syncer]\nkind = \"command\"\ncommand = [\"/bin/true\"]\n\n[mail]\nto = [\"root@localhost\"]\ntransport = {{ kind = \"file\", dir = \"/tmp/m\" }}\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(
            c.syncer,
            SyncerConfig::Command {
                command: vec!["/bin/true".into()]
            }
        );
        let m = c.mail.unwrap();
        assert!(m.on_success);
        assert_eq!(
            m.transport,
            notifier::TransportTable::File {
                dir: "/tmp/m".into()
            }
        );
    }

    #[test]
    fn readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, b"secret").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_key_file(&key).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::InsecureKeyFile);
        assert!(e.to_string().contains("chmod 0400"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        check_key_file(&key).unwrap();
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("an example") + "```toml\n".len();
        let len = doc[start..].find("\n```").unwrap();
        let c = Config::parse(&doc[start..start + len]).unwrap();
        assert_eq!(c.drives.len(), 2);
        assert_eq!(c.indicator.limit, 10);
        assert!(matches!(
            c.mail.unwrap().transport,
            notifier::TransportTable::Smtp { port: 587, .. }
        ));
    }

    #[test]
    fn the_documented_sources_example_parses() {
        let doc = include_str!("../../../../docs/configuration.md");
        let section = &doc[doc.find("## `[sources.NAME]`").expect("the section")..];
        let start = section.find("```toml\n").expect("an example") + "```toml\n".len();
        let len = section[start..].find("\n```").unwrap();
        let c = Config::parse(&section[start..start + len]).unwrap();
        let names: Vec<_> = c.sources().into_iter().map(|s| s.name.unwrap()).collect();
        assert_eq!(
            names.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["home", "photos"]
        );
    }

    #[test]
    fn appended_drive_table_parses_back() {
        let d = DriveConfig {
            name: DriveName::try_from("new-1".to_string()).unwrap(),
            uuid: Uuid::try_from("11111111-2222-4333-8444-555555555555".to_string()).unwrap(),
            key_file: "/etc/extbackup/keys/new \"1\".key".into(),
            mount_point: None,
            history: None,
        };
        let text = format!("# my comment\n{MIN}{}", drive_table(&d));
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.drives[1], d);
        assert!(text.starts_with("# my comment"));
    }
}
