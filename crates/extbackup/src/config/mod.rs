//! The configuration file (`/etc/extbackup/config.toml`): what the drives are, what to
//! copy, how to show and tell. Unknown keys and bad values are errors that name the line
//! and column (serde's `deny_unknown_fields` plus toml's spans); checks across keys (two
//! drives with one UUID, a key file others can read) come after parsing.
//!
//! Every key is described in `docs/configuration.md`.

mod check;
pub mod history;
mod summary;
mod tables;
mod values;

pub use check::check_key_file;
use check::line_col;
pub use tables::*;
pub use values::*;

use serde::Deserialize;
use std::path::{Path, PathBuf};

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

/// The source of a configuration made up for commands that copy nothing
/// ([`Config::without_source`]): a path that does not exist.
pub const NO_SOURCE: &str = "/nonexistent/extbackup-no-source";

/// The most a configuration file may hold (a real one is a few KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a configuration file's text: a regular file only (not a device such as
/// `/dev/zero`, a FIFO or a folder; opened without blocking) of at most
/// [`MAX_FILE_BYTES`], in UTF-8. Every reader of the file goes through here.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = vec![];
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} KiB: not a configuration",
                MAX_FILE_BYTES / 1024
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn default_state_dir() -> PathBuf {
    "/var/lib/extbackup".into()
}

fn default_mount_root() -> PathBuf {
    "/run/extbackup".into()
}

impl Config {
    /// Reads and checks the file at `path`. The key files are checked by
    /// [`check_key_files`](Self::check_key_files) (`extbackup config check`) and, for the
    /// drive at hand, when a run identifies it: one drive's missing key file does not stop
    /// another drive's backup.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_file(path).map_err(|e| ConfigError {
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

    /// The configuration of a command that copies nothing when there is no file to read
    /// (a NAS that is gone, `prepare` before the first drive) or only parts of one to
    /// salvage: every default, and as its source [`NO_SOURCE`], a path that does not exist
    /// (never `/`, which the checks refuse).
    pub fn without_source() -> Config {
        Config::parse(&format!("source = {NO_SOURCE:?}")).expect("the defaults parse")
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
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn extra_args_that_change_deletions_or_destinations_are_refused() {
        let with = |arg: &str| {
            Config::parse(&format!(
                "source = \"/srv\"\n[syncer]\nextra_args = [{arg:?}]\n"
            ))
        };
        for bad in [
            "--remove-source-files",
            "--delete-before",
            "--delete-excluded",
            "--delete-missing-args",
            "--del",
            "--link-dest=/srv/other",
            "--compare-dest=/x",
            "--backup-dir=/srv/old",
            "--temp-dir=/srv",
            "--files-from=/etc/list",
            "--rsync-path=evil",
            "--ignore-errors",
            "-b",
            "-aT",
            "/srv/another-source",
            "--",
        ] {
            let e = with(bad).unwrap_err();
            assert!(e.to_string().contains("extra_args"), "{bad}: {e}");
        }
        for good in [
            "--bwlimit=1M",
            "--exclude=/tmp",
            "--one-file-system",
            "--info=progress2",
        ] {
            with(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn scrub_share_is_off_by_default_and_refused_past_its_limit_with_its_line() {
        let c = Config::parse("source = \"/srv\"\n").unwrap();
        assert_eq!(c.policy.scrub_share, 0);
        let c = Config::parse("source = \"/srv\"\n[policy]\nscrub_share = 1000\n").unwrap();
        assert_eq!(c.policy.scrub_share, 1000);
        let e = Config::parse("source = \"/srv\"\n[policy]\nscrub_share = 1001\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("scrub_share = 1001"),
            "{e}"
        );
        assert!(Config::parse("source = \"/srv\"\n[policy]\nscrub_share = -1\n").is_err());
    }

    #[test]
    fn absurd_timeouts_are_refused_with_their_line() {
        let huge = "source = \"/srv\"\n[source_lock]\npath = \"/run/l\"\ntimeout_secs = 9223372036854775807\n";
        let e = Config::parse(huge).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("more than a day"), "{e}");
        let day = "source = \"/srv\"\n[source_lock]\npath = \"/run/l\"\ntimeout_secs = 86400\n";
        Config::parse(day).unwrap();
        let e = Config::parse("source = \"/srv\"\n[monitor]\ntimeout_secs = 86401\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than a day"), "{e}");
    }

    #[test]
    fn only_a_regular_file_of_sane_size_is_read_as_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        // A device that never ends, a FIFO nobody writes (would block an ordinary open),
        // a folder: refused at once, as not regular files.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for p in [Path::new("/dev/zero"), fifo.as_path(), dir.path()] {
            let e = read_file(p).unwrap_err();
            assert!(
                e.to_string().contains("not a regular file"),
                "{}: {e}",
                p.display()
            );
            let e = Config::load(p).unwrap_err();
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        }
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(read_file(&big)
            .unwrap_err()
            .to_string()
            .contains("larger than"));
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "source = \"/srv\"\n").unwrap();
        assert_eq!(read_file(&ok).unwrap(), "source = \"/srv\"\n");
    }

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

    /// Issue 18 D: `source = "/"`, and as a class, a source that contains (or lies inside)
    /// a folder the run writes: the state directory, the mail spool, the mount root.
    #[test]
    fn a_source_holding_the_state_dir_the_spool_or_the_mount_root_is_refused() {
        let drive = "\n[[drive]]\nname = \"a\"\nuuid = \"0B1C2D3E-aaaa-4bbb-8ccc-0123456789ab\"\nkey_file = \"/k/a.key\"\n";
        let cases: Vec<(String, &str, &str)> = vec![
            ("source = \"/\"\n".into(), "line 1, column 10", "is / (the whole system)"),
            ("source = \"/srv/../\"\n".into(), "line 1, column 10", "is / (the whole system)"),
            ("[sources.all]\npath = \"/\"\n".into(), "line 2, column 8", "source \"all\" is / (the whole system)"),
            // the default state_dir /var/lib/extbackup: the source's place
            ("source = \"/var\"\n".into(), "line 1, column 10", "state_dir /var/lib/extbackup is inside the source /var"),
            ("source = \"/var/lib/extbackup/x\"\n".into(), "line 1, column 10", "is around the source"),
            ("state_dir = \"/srv/data/.state\"\nsource = \"/srv/data\"\n".into(), "line 1, column 13", "state_dir /srv/data/.state is inside the source"),
            ("source = \"/srv/data\"\n[mail]\nto = [\"a@b.c\"]\nspool_dir = \"/srv/data/spool\"\ntransport = { kind = \"sendmail\" }\n".into(), "line 2, column 1", "the mail spool /srv/data/spool is inside the source"),
            // the mount root, with no drive yet (prepare adds them later) and with one
            ("mount_root = \"/srv/data/mnt\"\nsource = \"/srv/data\"\n".into(), "line 1, column 14", "mount_root /srv/data/mnt is inside the source"),
            ("source = \"/run\"\n".into(), "line 1, column 10", "mount_root /run/extbackup is inside the source"),
            ("[sources.a]\npath = \"/srv/a\"\n[sources.b]\npath = \"/var/lib\"\n".into(), "line 4, column 8", "inside source \"b\""),
        ];
        let mut wrong = vec![];
        for (text, place, needle) in &cases {
            for (t, with_drive) in [(text.clone(), false), (format!("{text}{drive}"), true)] {
                match Config::parse(&t) {
                    Ok(_) => wrong.push(format!("accepted: {t}")),
                    Err(e) => {
                        let e = e.to_string();
                        // With a drive, its mount point inside the source is named first
                        // (at mount_root's line, when the file sets it).
                        let by_drive = with_drive
                            && needle.starts_with("mount_root")
                            && e.contains("its mount point")
                            && e.contains("overlaps");
                        if !by_drive && (!e.contains(place) || !e.contains(needle)) {
                            wrong.push(format!("{needle} (want {place}): {e}"));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // Beside them is fine; so is the configuration of commands that copy nothing.
        Config::parse("source = \"/srv/data\"\nstate_dir = \"/srv/data-state\"\n").unwrap();
        assert_eq!(
            Config::without_source().source.as_deref(),
            Some(Path::new(NO_SOURCE))
        );
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
