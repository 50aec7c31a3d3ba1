//! The checks across keys that come after parsing (paths absolute and apart, sources,
//! drives, the tables of other crates), and where in the text a problem is.

use serde::Deserialize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

impl Config {
    /// The checks across keys; an error says where in the file it points.
    pub(super) fn validate(&self) -> Result<(), (At, String)> {
        self.check_paths()?;
        self.check_sources()?;
        self.check_no_source_is_root()?;
        self.check_drives()?;
        self.check_sources_apart()?;
        self.check_tables()
    }

    /// Every path absolute and free of control characters.
    pub(super) fn check_paths(&self) -> Result<(), (At, String)> {
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
    pub(super) fn check_sources(&self) -> Result<(), (At, String)> {
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

    pub(super) fn check_named_source(
        &self,
        n: &SourceName,
        src: &NamedSource,
    ) -> Result<(), (At, String)> {
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

    /// No source is the whole system (`/`): it holds what a run writes (see
    /// [`check_sources_apart`](Self::check_sources_apart)) and what no backup wants.
    pub(super) fn check_no_source_is_root(&self) -> Result<(), (At, String)> {
        for s in self.sources() {
            if resolve(&s.path) == Path::new("/") {
                return Err((
                    at_source(&s),
                    format!(
                        "{} is / (the whole system): it holds the state directory, the mail \
                         spool, the drives' mount root and /proc, /sys and /dev; name the \
                         folders to back up (e.g. /srv, /home), one [sources.NAME] table each",
                        s.label()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// No source contains or lies inside the folders a run writes: the state directory
    /// (records, the run lock, the loopback store), the mail spool and the mount root (where
    /// the drives are mounted; a drive's own mount point is [`check_drives`](Self::check_drives)'s).
    /// A run would copy its own records and spool while writing them, or the drive onto itself.
    pub(super) fn check_sources_apart(&self) -> Result<(), (At, String)> {
        let spool = self
            .mail
            .as_ref()
            .and_then(|m| m.spool_dir.clone())
            .unwrap_or_else(|| self.state_dir.join("spool"));
        let spool_at = if self.mail.as_ref().is_some_and(|m| m.spool_dir.is_some()) {
            Some(At::Table("mail"))
        } else {
            None
        };
        let state_at = (self.state_dir != default_state_dir()).then_some(At::Key("state_dir"));
        let root_at = (self.mount_root != default_mount_root()).then_some(At::MountRoot);
        let own: [(Option<At>, &str, &Path); 3] = [
            (state_at, "state_dir", &self.state_dir),
            (spool_at, "the mail spool", &spool),
            (root_at, "mount_root", &self.mount_root),
        ];
        for s in self.sources() {
            for (at, what, p) in &own {
                if overlaps(p, &s.path) {
                    let inside = resolve(p).starts_with(resolve(&s.path));
                    return Err((
                        at.clone().unwrap_or_else(|| at_source(&s)),
                        format!(
                            "{what} {} is {} {} {}: a run writes there while it copies; keep \
                             them apart",
                            p.display(),
                            if inside { "inside" } else { "around" },
                            s.label(),
                            s.path.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Drive names and UUIDs unique, no mount point overlapping a source.
    pub(super) fn check_drives(&self) -> Result<(), (At, String)> {
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
    pub(super) fn check_tables(&self) -> Result<(), (At, String)> {
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

    /// Every path the file names, with its place and its name in messages.
    pub(super) fn paths(&self) -> Vec<(At, String, PathBuf)> {
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
}

/// Where a problem with source `s`'s path points.
fn at_source(s: &Source) -> At {
    match &s.name {
        Some(n) => At::NamedSource(n.as_str().to_string(), "path"),
        None => At::Source,
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
#[derive(Clone)]
pub(super) enum At {
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
    pub(super) fn locate(&self, text: &str) -> Option<(usize, usize)> {
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

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A program the configuration names: a regular file with an execute bit.
fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` on `PATH` (a name with a `/` as it is).
fn on_path(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return executable(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

impl Config {
    /// What the file names that must exist on this machine, besides the key files
    /// ([`check_key_files`](Self::check_key_files)): the sources (folders), the folders of
    /// the source locks, the SMTP password file, the sendmail program, the hook programs
    /// and the syncer's command (executable). One line per problem; empty when all exist.
    /// `extbackup config check` refuses a file with any.
    pub fn missing_named_paths(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for s in self.sources() {
            if !s.path.is_dir() {
                missing.push(format!(
                    "{}: {} is not a folder on this machine",
                    s.label(),
                    s.path.display()
                ));
            }
        }
        let locks = self.sources().into_iter().filter_map(|s| s.lock);
        for l in self.source_lock.iter().cloned().chain(locks) {
            if let Some(dir) = l.path.parent().filter(|d| !d.is_dir()) {
                missing.push(format!(
                    "source lock {}: its folder {} does not exist",
                    l.path.display(),
                    dir.display()
                ));
            }
        }
        if let Some(m) = &self.mail {
            match &m.transport {
                notifier::TransportTable::Smtp {
                    password_file: Some(p),
                    ..
                } if !p.is_file() => missing.push(format!(
                    "[mail] password_file {} does not exist: write the SMTP password \
                     into it (mode 0400), or remove password_file and username",
                    p.display()
                )),
                notifier::TransportTable::Sendmail { program } => {
                    let name = program.clone().unwrap_or_else(|| "sendmail".into());
                    if on_path(&name).is_none() {
                        missing.push(format!(
                            "[mail] the sendmail program {} is not there (install an MTA \
                             such as exim4 or postfix, or use an SMTP transport)",
                            name.display()
                        ));
                    }
                }
                _ => {}
            }
        }
        let hooks = self.hooks.before.iter().chain(&self.hooks.after);
        for h in hooks {
            let program = Path::new(&h.command.argv()[0]);
            if !executable(program) {
                missing.push(format!(
                    "hook {:?}: its program {} is not an executable file",
                    h.name.as_str(),
                    program.display()
                ));
            }
        }
        if let SyncerConfig::Command { command } = &self.syncer {
            if let Some(p) = command.first().filter(|p| on_path(Path::new(p)).is_none()) {
                missing.push(format!(
                    "[syncer] command: the program {p} is not an executable file"
                ));
            }
        }
        missing
    }
}
