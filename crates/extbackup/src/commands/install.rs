//! `extbackup install`: the udev rule, the systemd units and the check timer (or `--print`, `--uninstall`).

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

use extbackup::config::Config;

use crate::commands::util::{load, UsageError};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// Print the files instead of writing them.
    #[arg(long, conflicts_with = "uninstall")]
    pub(crate) print: bool,
    /// Remove the installed files.
    #[arg(long)]
    pub(crate) uninstall: bool,
    /// Write everything below this staging folder instead of / (packagers, tests); runs
    /// no udevadm or systemctl.
    #[arg(long, value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,
    /// The binary the units run. Default: this binary, or a copy of it at
    /// /usr/local/sbin/extbackup when it lies in a build or temporary folder.
    #[arg(long, value_name = "PATH")]
    pub(crate) binary: Option<PathBuf>,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    use extbackup::system::install;
    let config_path = std::path::absolute(&cli.config)
        .with_context(|| format!("resolving {}", cli.config.display()))?;
    let stage = |p: &std::path::Path| match &a.root {
        Some(r) => install::under(r, p),
        None => p.to_path_buf(),
    };
    let (binary, copy_from) = unit_binary(a, &stage)?;
    let mut paths = install::InstallPaths {
        binary: binary.clone(),
        config: config_path,
        ..install::InstallPaths::default()
    };
    if a.uninstall {
        return uninstall(a, &paths);
    }
    let cfg = load(cli)?;
    (paths.writable, paths.shared) = writable_dirs(&cfg);
    // The LED's slots below /run go at every reboot: a source-built install has them made
    // at boot by its own tmpfiles.d entry (the package ships one).
    paths.boot_dirs = paths
        .shared
        .iter()
        .filter(|d| **d == slots_dir(&cfg) && d.starts_with("/run"))
        .cloned()
        .collect();
    let drives: Vec<(&str, &str)> = cfg
        .drives
        .iter()
        .map(|d| (d.name.as_str(), d.uuid.as_str()))
        .collect();
    let packaged = packaged_units(&paths, &stage);
    let files = match &packaged {
        Some(defaults) => install::render_dropins(&drives, &paths, defaults),
        None => install::render(&drives, &paths),
    }
    .map_err(|e| UsageError(extbackup::chain(&e)))?;
    if a.print {
        for (p, text) in &files {
            println!("# {}\n{text}", p.display());
        }
        return Ok(0);
    }
    if let Some(from) = &copy_from {
        let to = stage(&binary);
        copy_binary(from, &to)?;
        println!(
            "copied {} to {} (the units run that copy; run `extbackup install` again after \
             rebuilding)",
            from.display(),
            to.display()
        );
    }
    let staged: Vec<(PathBuf, String)> = files.iter().map(|(p, t)| (stage(p), t.clone())).collect();
    if packaged.is_some() {
        // Units an earlier `install` wrote would hide the packaged ones.
        for p in &paths.files()[1..] {
            let p = stage(p);
            let ours = std::fs::read_to_string(&p)
                .is_ok_and(|t| t.starts_with("# Written by `extbackup install`"));
            if ours && std::fs::remove_file(&p).is_ok() {
                println!("removed {} (the packaged unit runs instead)", p.display());
            }
        }
    }
    install::write(&staged)?;
    if a.root.is_none() {
        // A shared folder that is missing now (the LED's slots before their first use)
        // would be left out of the sandbox: make it (the package's tmpfiles.d does at boot).
        for d in &paths.shared {
            if !d.exists() && std::fs::create_dir_all(d).is_ok() {
                println!("created {}", d.display());
            }
        }
    }
    for (p, _) in &staged {
        println!("wrote {}", p.display());
    }
    if let Some(root) = &a.root {
        println!(
            "staged below {}: nothing reloaded. On the target: `udevadm control --reload`, \
             `systemctl daemon-reload`, `systemctl enable --now {}`",
            root.display(),
            install::CHECK_TIMER
        );
        return Ok(0);
    }
    for n in install::reload(true) {
        println!("{n}");
    }
    print_next_steps(cli, &cfg);
    Ok(0)
}

/// When the Debian package's units are in place and run the same binary with the same
/// configuration as `paths`: the folders they already allow (so `install` adds drop-ins
/// instead of writing units of its own).
fn packaged_units(
    paths: &extbackup::system::install::InstallPaths,
    stage: &dyn Fn(&std::path::Path) -> PathBuf,
) -> Option<Vec<PathBuf>> {
    use extbackup::system::install;
    let unit = std::path::Path::new(install::PACKAGED_UNIT_DIR).join(install::SERVICE_TEMPLATE);
    let text = std::fs::read_to_string(stage(&unit)).ok()?;
    let exec = format!(
        "ExecStart={} --config {} run --uuid %i",
        paths.binary.display(),
        paths.config.display()
    );
    text.lines().any(|l| l == exec).then(|| {
        text.lines()
            .filter_map(|l| {
                let (key, rel) = l.split_once('=')?;
                let root = match key {
                    "StateDirectory" => "/var/lib",
                    "RuntimeDirectory" => "/run",
                    _ => return None,
                };
                Some(std::path::Path::new(root).join(rel))
            })
            .collect()
    })
}

/// The binary the units run, and where to copy it from when it must be copied first: a
/// stable path, never a build or temporary folder.
pub(crate) fn unit_binary(
    a: &Args,
    stage: &dyn Fn(&std::path::Path) -> PathBuf,
) -> Result<(PathBuf, Option<PathBuf>)> {
    use extbackup::system::install;
    let exe = std::env::current_exe().context("finding the extbackup binary")?;
    let Some(b) = &a.binary else {
        return Ok(match install::transient_location(&exe) {
            Some(_) => (PathBuf::from(install::STABLE_BINARY), Some(exe)),
            None => (exe, None),
        });
    };
    let b = std::path::absolute(b).with_context(|| format!("resolving {}", b.display()))?;
    if let Some(why) = install::transient_location(&b) {
        bail!(UsageError(format!(
            "{why}: the units would break when it goes. Install the binary at a \
             stable path (e.g. `install -m 0755 {} {}`) and pass that, or leave out \
             --binary to have it copied there",
            b.display(),
            install::STABLE_BINARY
        )));
    }
    let copy = (b != exe).then_some(exe).filter(|_| !stage(&b).exists());
    Ok((b, copy))
}

/// `install --uninstall`: removes what `install` wrote (below `--root`, only the files).
pub(crate) fn uninstall(a: &Args, paths: &extbackup::system::install::InstallPaths) -> Result<u8> {
    use extbackup::system::install;
    let (removed, notes) = match &a.root {
        Some(root) => {
            let files = paths.files_under(root).into_iter();
            let removed = files.filter(|p| std::fs::remove_file(p).is_ok()).collect();
            (removed, Vec::new())
        }
        None => {
            let (removed, mut notes) = install::uninstall(paths)?;
            notes.extend(install::reload(false));
            (removed, notes)
        }
    };
    for p in &removed {
        println!("removed {}", p.display());
    }
    for n in &notes {
        println!("{n}");
    }
    Ok(0)
}

/// The folders a run writes to, which the unit's sandbox must leave writable: extbackup's
/// own, and the shared folders of source locks (made writable, never managed).
pub(crate) fn writable_dirs(cfg: &Config) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut writable = vec![cfg.state_dir.clone(), cfg.mount_root.clone()];
    for d in &cfg.drives {
        let mp = cfg.mount_point(d);
        if !mp.starts_with(&cfg.mount_root) {
            writable.push(mp);
        }
    }
    if let Some(m) = cfg.mail.as_ref().and_then(|m| m.spool_dir.clone()) {
        writable.push(m);
    }
    writable.dedup();
    // The LED's slots, shared with other jobs and the `blinkstick` command.
    let slots = slots_dir(cfg);
    let mut shared: Vec<PathBuf> = vec![];
    if !writable.iter().any(|w| slots.starts_with(w)) {
        shared.push(slots);
    }
    let locks = cfg.sources().into_iter().filter_map(|s| s.lock);
    for l in cfg.source_lock.iter().cloned().chain(locks) {
        if let Some(dir) = l.path.parent() {
            if !writable.iter().chain(&shared).any(|w| w == dir) {
                shared.push(dir.to_path_buf());
            }
        }
    }
    (writable, shared)
}

/// The LED's slots folder: `[indicator] slots_dir`, else the default.
fn slots_dir(cfg: &Config) -> PathBuf {
    cfg.indicator
        .slots_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(extbackup::system::install::DEFAULT_SLOTS_DIR))
}

pub(crate) fn print_next_steps(cli: &Cli, cfg: &Config) {
    println!("\nnext steps:");
    if cfg.drives.is_empty() {
        println!(
            "  - prepare a drive: `extbackup prepare /dev/sdX --name offsite-a` (no second \
             `install` needed afterwards)"
        );
    } else {
        println!(
            "  - plug in a prepared drive: the backup starts by itself; follow it with \
             `journalctl -f -u 'extbackup@*'`"
        );
    }
    if cfg.mail.is_none() {
        println!(
            "  - add a [mail] section to {} to hear about failures and reminders",
            cli.config.display()
        );
    }
    println!("  - `extbackup status` shows each drive's last backup and which one is due next");
}

/// Copies the running binary to `to` atomically, mode 0755.
pub(crate) fn copy_binary(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = to.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".extbackup.install-tmp");
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, to))
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}
