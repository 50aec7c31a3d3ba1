//! The `extbackup` command (thin: the work is in the library).
//!
//! Exit codes: 0 done; 75 the drive is not ours, skipped; 1 failure; 2 usage or
//! configuration error.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use extbackup::config::{self, Config};
use extbackup::logcapture::LogCapture;
use extbackup::pipeline::{Pipeline, RunOptions, RunOutcome, Target};
use extbackup::{backends, prepare, state, status};

/// Exit code: the drive is not a configured one; skipped (borgmatic's "soft failure").
const EXIT_NOT_OURS: u8 = 75;
/// Exit code: a usage or configuration error.
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "extbackup",
    version,
    about = "Off-site backups onto rotating LUKS USB drives, with a status LED",
    long_about = "Plug in a prepared backup drive; extbackup identifies it (configured UUID, \
matching LUKS header and a key file that opens it), unlocks it, checks and mounts the \
filesystem, copies the source onto it under the source lock, records the run, unmounts and \
closes it. The LED shows working, then green (safe to remove) or red (a mail says why).\n\n\
Start with `extbackup prepare /dev/sdX --name offsite-a`, then `extbackup install` so that \
plugging the drive in starts `extbackup run`.",
    after_help = "Exit codes: 0 done; 75 not a configured drive, skipped; 1 failure; 2 usage or configuration error.\n\
Configuration: see docs/configuration.md. Operations (LED states, mail): docs/operations.md."
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = config::DEFAULT_PATH, value_name = "FILE")]
    config: PathBuf,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log output (warnings and errors only).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Back up onto one drive now (what the udev rule starts on plug-in).
    #[command(
        long_about = "Runs the pipeline for one drive: identify, run lock, unlock, fsck, mount, \
source lock, free-space check, sync, record, unmount, close. On a failure everything done so \
far is undone in reverse, the LED turns red and one mail names the failed step.\n\n\
A drive that is not configured is left untouched and the exit code is 75."
    )]
    Run(RunArgs),
    /// Wait for configured drives and back each up as it appears (systems without systemd).
    Watch,
    /// Erase a new disk and make it a backup drive (LUKS2, key file, ext4, config entry).
    #[command(
        long_about = "Prepares a new backup drive in one go, after a confirmation naming the \
device: optional GPT with one partition (--partition), LUKS2 with a new random 4096-byte key \
file stored 0400 in the keys folder, the LUKS header backup beside it, ext4 with a label, and \
a [[drive]] table appended to the configuration file (your comments are kept).\n\n\
A mounted device, or one with mounted partitions, is refused."
    )]
    Prepare(PrepareArgs),
    /// Install (or print, or remove) the udev rule, the systemd unit and the check timer.
    Install(InstallArgs),
    /// Remove what `install` wrote (the same as `install --uninstall`).
    Uninstall,
    /// Show the last success, its age and the last failure of every drive.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mail a reminder when any drive's last good backup is too old (run by a timer).
    Check {
        /// The limit in days; `policy.reminder_age_days` from the configuration by default.
        #[arg(long, value_name = "DAYS")]
        max_age: Option<u32>,
    },
    /// Report a backup unit that failed without reporting itself (run by
    /// extbackup-failed@UUID.service through OnFailure=): red LED, mail, stale mapping closed.
    #[command(hide = true)]
    NotifyFailure {
        /// The drive's LUKS UUID (the unit's instance).
        #[arg(long, value_name = "UUID")]
        uuid: String,
        /// The unit that failed.
        #[arg(long, value_name = "UNIT")]
        unit: Option<String>,
    },
    /// Configuration file commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate the configuration (and key file permissions) and say what it contains.
    Check,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// The drive's LUKS UUID (as in /dev/disk/by-uuid; what the udev rule passes).
    #[arg(long, value_name = "UUID")]
    uuid: Option<String>,
    /// The drive's block device (its LUKS partition).
    #[arg(long, value_name = "PATH")]
    device: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Sync even when the guard refuses (e.g. more deletions than policy.max_delete_fraction).
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct PrepareArgs {
    /// The disk to erase, e.g. /dev/sdX.
    device: PathBuf,
    /// The drive's name (letters, digits, `-`, `_`), e.g. offsite-a.
    #[arg(long)]
    name: String,
    /// Make a GPT with one partition and put LUKS on it (otherwise LUKS on the whole device).
    #[arg(long)]
    partition: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Where the key file and the LUKS header backup go.
    #[arg(long, default_value = prepare::DEFAULT_KEYS_DIR, value_name = "DIR")]
    keys_dir: PathBuf,
    /// Mount the drive here during runs instead of MOUNT_ROOT/NAME.
    #[arg(long, value_name = "DIR")]
    mount_point: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct InstallArgs {
    /// Print the files instead of writing them.
    #[arg(long, conflicts_with = "uninstall")]
    print: bool,
    /// Remove the installed files.
    #[arg(long)]
    uninstall: bool,
    /// Write everything below this staging folder instead of / (packagers, tests); runs
    /// no udevadm or systemctl.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The binary the units run. Default: this binary, or a copy of it at
    /// /usr/local/sbin/extbackup when it lies in a build or temporary folder.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let capture = LogCapture::default();
    init_logging(&cli, &capture);
    match dispatch(&cli, &capture) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.downcast_ref::<UsageError>().map_or(1, |_| EXIT_USAGE);
            error_line(&format!("extbackup: error: {e:#}"));
            ExitCode::from(code)
        }
    }
}

/// Marks an error as a usage or configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn init_logging(cli: &Cli, capture: &LogCapture) {
    let level = if cli.quiet {
        LevelFilter::WARN
    } else {
        match cli.verbose {
            0 => LevelFilter::INFO,
            1 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        }
    };
    let journal = extbackup::journal::stderr_is_journal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    let fmt = if journal {
        // Under systemd: one line per event, its priority as an sd-daemon `<N>` prefix,
        // so `journalctl -p err` finds the failures.
        fmt.event_format(extbackup::journal::SdPrefix)
            .with_filter(level)
            .boxed()
    } else {
        fmt.with_filter(level).boxed()
    };
    let sub = tracing_subscriber::registry()
        .with(fmt)
        .with(capture.layer());
    let _ = tracing::subscriber::set_global_default(sub);
}

/// An error line on stderr (with the journal's error priority under systemd).
fn error_line(msg: &str) {
    eprintln!("{}{msg}", extbackup::journal::prefix(3));
}

fn load(cli: &Cli) -> Result<Config> {
    Config::load(&cli.config).map_err(|e| UsageError(extbackup::chain(&e)).into())
}

fn dispatch(cli: &Cli, capture: &LogCapture) -> Result<u8> {
    match &cli.command {
        Command::Run(a) => {
            let cfg = load(cli)?;
            let target = match (&a.target.uuid, &a.target.device) {
                (Some(u), _) => Target::Uuid(u.clone()),
                (None, Some(d)) => Target::Device(d.clone()),
                (None, None) => bail!(UsageError("give --uuid or --device".into())),
            };
            run(&cfg, &target, a.force, capture)
        }
        Command::Watch => watch(cli, capture),
        Command::Prepare(a) => prepare_cmd(cli, a),
        Command::Install(a) => install(cli, a),
        Command::Uninstall => install(
            cli,
            &InstallArgs {
                print: false,
                uninstall: true,
                root: None,
                binary: None,
            },
        ),
        Command::Status { json } => {
            let cfg = load(cli)?;
            let s = status::status(&cfg, state::now())
                .with_context(|| format!("reading {}", cfg.state_dir.display()))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", s.render());
            }
            Ok(0)
        }
        Command::Check { max_age } => {
            let cfg = load(cli)?;
            let days = max_age.unwrap_or(cfg.policy.reminder_age_days);
            let s = status::status(&cfg, state::now())
                .with_context(|| format!("reading {}", cfg.state_dir.display()))?;
            match s.reminder(&cfg, u64::from(days) * 86_400) {
                None => {
                    for d in &s.drives {
                        println!("ok: {}", status::Status::age_line(d));
                    }
                    println!("every drive is within {days} days");
                }
                Some(ev) => {
                    for line in ev.details.iter().take_while(|l| l.starts_with("drive ")) {
                        tracing::warn!("{line}, over the {days}-day limit");
                    }
                    match backends::notifier(&cfg)? {
                        Some(n) => {
                            let _ = n.flush_spool();
                            n.notify(&ev).context("sending the reminder mail")?;
                            println!("reminder mail sent");
                        }
                        None => {
                            // No mail: the log above and the LED are the reminder; the
                            // timer's unit must not fail every day for it.
                            tracing::warn!(
                                "no [mail] configured: showing the attention colour instead of \
                                 mailing a reminder"
                            );
                            let mut ind = backends::indicator(&cfg);
                            if let Err(e) = ind.show(indicator::State::Attention) {
                                tracing::warn!("indicator: {}", extbackup::chain(&e));
                            }
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::NotifyFailure { uuid, unit } => notify_failure(cli, uuid, unit.as_deref()),
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let cfg = load(cli)?;
            cfg.check_key_files()
                .map_err(|e| UsageError(extbackup::chain(&e)))?;
            println!("{}: valid", cli.config.display());
            print!("{}", cfg.summary());
            Ok(0)
        }
    }
}

fn run(cfg: &Config, target: &Target, force: bool, capture: &LogCapture) -> Result<u8> {
    // The mail's log tail is this run's (watch runs several in one process).
    capture.clear();
    let mut b = backends::build(cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    install_stop_handler()?;
    // Waits for the run lock and the source lock end on SIGTERM too, not only the steps.
    b.host = Box::new(
        extbackup::host::SystemHost::new(state::StateDir::new(&cfg.state_dir).run_lock_path())
            .with_cancel(&STOP),
    );
    let opts = RunOptions {
        force,
        cancel: Some(&STOP),
        ..RunOptions::default()
    };
    let mut p = Pipeline::new(cfg, b, capture.clone(), opts);
    let mut bar = ProgressBar::new();
    if std::io::stderr().is_terminal() {
        p = p.on_progress(move |pr| bar.draw(pr));
    }
    let device = match target {
        Target::Uuid(u) => PathBuf::from("/dev/disk/by-uuid").join(u),
        Target::Device(d) => d.clone(),
    };
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_for_pull(device, finished.clone());
    let outcome = p.run(target);
    finished.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    Ok(match outcome {
        RunOutcome::Done(_) => 0,
        RunOutcome::NotOurs(_) => EXIT_NOT_OURS,
        RunOutcome::Failed { drive, step, error } => {
            error_line(&format!(
                "extbackup: {drive}: FAILED at {step}: {}",
                error.chain().join(": ")
            ));
            1
        }
    })
}

/// Watches the drive's device node while a run goes on. When it disappears (the drive was
/// pulled), the cause is logged at error priority and the run's child processes (rsync,
/// fsck) get SIGTERM, so the step fails now instead of when rsync gives up on a dead disk
/// (minutes); the pipeline then undoes what it did (unmount, close) and reports the step.
fn watch_for_pull(
    device: PathBuf,
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let mut seen = false;
        while !finished.load(Ordering::Relaxed) {
            let present = device.exists();
            if seen && !present {
                tracing::error!(
                    "the drive {} disappeared during the run (pulled?): stopping the copy",
                    device.display()
                );
                for pid in descendants(std::process::id()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                return;
            }
            seen |= present;
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    })
}

/// The processes below `pid` (children, grandchildren...), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        if let Some(ppid) = stat
            .get(close + 2..)
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok())
        {
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

struct ProgressBar {
    last: Option<u32>,
}

impl ProgressBar {
    fn new() -> Self {
        Self { last: None }
    }
    fn draw(&mut self, p: sync::Progress) {
        let Some(f) = p.fraction else { return };
        let pct = (f.clamp(0.0, 1.0) * 100.0) as u32;
        if self.last == Some(pct) {
            return;
        }
        self.last = Some(pct);
        let filled = (pct / 4) as usize;
        let mut e = std::io::stderr();
        let _ = write!(
            e,
            "\r[{}{}] {pct:3}% {}",
            "=".repeat(filled),
            " ".repeat(25 - filled),
            extbackup::pipeline::human(p.bytes)
        );
        if pct == 100 {
            let _ = writeln!(e);
        }
    }
}

fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(line.trim() == "yes")
}

fn prepare_cmd(cli: &Cli, a: &PrepareArgs) -> Result<u8> {
    // The crypt backend comes from the configuration when it exists.
    let cfg_text = std::fs::read_to_string(&cli.config).ok();
    let crypt_backend = match &cfg_text {
        Some(t) => {
            Config::parse(t)
                .map_err(|e| {
                    UsageError(format!(
                        "{}: {}",
                        cli.config.display(),
                        extbackup::chain(&e)
                    ))
                })?
                .crypt
                .backend
        }
        None => config::CryptBackend::default(),
    };
    prepare::check_device(&a.device).map_err(|e| UsageError(extbackup::chain(&e)))?;
    if !a.yes {
        let what = prepare::describe_device(&a.device);
        if !std::io::stdin().is_terminal() {
            bail!(UsageError(format!(
                "refusing to erase {what} without confirmation: run on a terminal or pass --yes"
            )));
        }
        if !confirm(&format!(
            "This ERASES everything on {what} and makes it backup drive {:?}. Type `yes` to go on:",
            a.name
        ))? {
            eprintln!("extbackup: nothing done");
            return Ok(1);
        }
    }
    let mut crypt_cfg = Config::parse("source = \"/\"").expect("minimal config parses");
    crypt_cfg.crypt.backend = crypt_backend;
    if let Some(t) = &cfg_text {
        if let Ok(c) = Config::parse(t) {
            crypt_cfg = c;
        }
    }
    let crypt = backends::crypt(&crypt_cfg).map_err(|e| UsageError(extbackup::chain(&e)))?;
    let p = prepare::prepare(
        crypt.as_ref(),
        &prepare::PrepareOptions {
            device: a.device.clone(),
            name: a.name.clone(),
            partition: a.partition,
            keys_dir: a.keys_dir.clone(),
            config_path: cli.config.clone(),
            mount_point: a.mount_point.clone(),
        },
    )
    .with_context(|| format!("preparing {}", a.device.display()))?;
    println!(
        "prepared {} as backup drive {}:\n  LUKS UUID {}\n  key file {}\n  LUKS header backup {} (keep a copy off this machine too)\n  LUKS label {}, filesystem label {}\n  added to {}",
        p.luks_device.display(),
        a.name,
        p.uuid,
        p.key_file.display(),
        p.header_backup.display(),
        p.label,
        a.name.chars().take(16).collect::<String>(),
        cli.config.display()
    );
    if cfg_text.is_none() {
        println!(
            "{} is new: set `source = ...` in it before the first run",
            cli.config.display()
        );
    }
    println!("next: {}", prepare_next_step(cli, a));
    Ok(0)
}

/// What to do after `prepare`: with the rule installed, nothing but plugging in (the rule
/// matches every LUKS drive; `run` decides from the configuration), unless the drive's own
/// mount point is one the installed unit may not write.
fn prepare_next_step(cli: &Cli, a: &PrepareArgs) -> String {
    use extbackup::install;
    let rule = std::path::Path::new("/etc/udev/rules.d").join(install::RULE_FILE);
    let unit = std::path::Path::new("/etc/systemd/system").join(install::SERVICE_TEMPLATE);
    if !rule.exists() {
        return format!(
            "run `extbackup --config {} install` so that plugging the drive in starts the \
             backup (or `extbackup run --device DEVICE` now)",
            cli.config.display()
        );
    }
    let unit_text = std::fs::read_to_string(&unit).unwrap_or_default();
    if let Some(mp) = &a.mount_point {
        let covered = unit_text.lines().any(|l| {
            l.strip_prefix("ReadWritePaths=-")
                .is_some_and(|p| mp.starts_with(p.trim_matches('"')))
        });
        if !covered {
            return format!(
                "run `extbackup --config {} install` again: the backup unit may not write \
                 the new mount point {} yet",
                cli.config.display(),
                mp.display()
            );
        }
    }
    "unplug the drive and plug it in again: the installed rule starts the backup by itself \
     (no new `install` needed)"
        .into()
}

fn install(cli: &Cli, a: &InstallArgs) -> Result<u8> {
    use extbackup::install;
    let config_path = std::path::absolute(&cli.config)
        .with_context(|| format!("resolving {}", cli.config.display()))?;
    let exe = std::env::current_exe().context("finding the extbackup binary")?;
    let stage = |p: &std::path::Path| match &a.root {
        Some(r) => install::under(r, p),
        None => p.to_path_buf(),
    };
    // The binary the units run: a stable path, never a build or temporary folder.
    let (binary, copy_from) = match &a.binary {
        Some(b) => {
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
            let copy = (b != exe)
                .then(|| exe.clone())
                .filter(|_| !stage(&b).exists());
            (b, copy)
        }
        None => match install::transient_location(&exe) {
            Some(_) => (PathBuf::from(install::STABLE_BINARY), Some(exe.clone())),
            None => (exe.clone(), None),
        },
    };
    let mut paths = install::InstallPaths {
        binary: binary.clone(),
        config: config_path,
        ..install::InstallPaths::default()
    };
    if a.uninstall {
        let mut removed = Vec::new();
        let notes = if let Some(root) = &a.root {
            for p in paths.files_under(root) {
                if std::fs::remove_file(&p).is_ok() {
                    removed.push(p);
                }
            }
            Vec::new()
        } else {
            let (r, mut notes) = install::uninstall(&paths)?;
            removed = r;
            notes.extend(install::reload(false));
            notes
        };
        for p in &removed {
            println!("removed {}", p.display());
        }
        for n in &notes {
            println!("{n}");
        }
        return Ok(0);
    }
    let cfg = load(cli)?;
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
    if let Some(dir) = cfg.source_lock.as_ref().and_then(|l| l.path.parent()) {
        writable.push(dir.to_path_buf());
    }
    writable.dedup();
    paths.writable = writable;
    let drives: Vec<(&str, &str)> = cfg
        .drives
        .iter()
        .map(|d| (d.name.as_str(), d.uuid.as_str()))
        .collect();
    let files = install::render(&drives, &paths).map_err(|e| UsageError(extbackup::chain(&e)))?;
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
    install::write(&staged)?;
    for (p, _) in &staged {
        println!("wrote {}", p.display());
    }
    if a.root.is_some() {
        println!(
            "staged below {}: nothing reloaded. On the target: `udevadm control --reload`, \
             `systemctl daemon-reload`, `systemctl enable --now {}`",
            a.root
                .as_deref()
                .unwrap_or(std::path::Path::new("/"))
                .display(),
            install::CHECK_TIMER
        );
        return Ok(0);
    }
    for n in install::reload(true) {
        println!("{n}");
    }
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
    Ok(0)
}

/// Copies the running binary to `to` atomically, mode 0755.
fn copy_binary(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
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

/// `notify-failure`: the unit `unit` of drive `uuid` failed. A run that failed by itself
/// (exit 1) has already turned the LED red and mailed; anything else (killed, crashed,
/// exit 2, timeout) gets the red LED and a mail here, and a mapping it left open is closed.
fn notify_failure(cli: &Cli, uuid: &str, unit: Option<&str>) -> Result<u8> {
    let unit = unit
        .map(str::to_string)
        .unwrap_or_else(|| format!("extbackup@{uuid}.service"));
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (result, code, status) = (
        env("MONITOR_SERVICE_RESULT"),
        env("MONITOR_EXIT_CODE"),
        env("MONITOR_EXIT_STATUS"),
    );
    if code.as_deref() == Some("exited") && status.as_deref() == Some("1") {
        tracing::info!("{unit} failed and reported it itself (exit 1): nothing to add");
        return Ok(0);
    }
    let how = match (&result, &code, &status) {
        (Some(r), Some(c), Some(s)) => format!("result {r}, {c} {s}"),
        (Some(r), _, _) => format!("result {r}"),
        _ => "this systemd does not say how (MONITOR_* unset)".into(),
    };
    tracing::error!("{unit} failed ({how}): reporting it");
    let mut details = vec![format!("See `journalctl -u {unit}`.")];
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            // A configuration error (exit 2) must still reach the user: report with the
            // file's [indicator] and [mail] alone when they are sound.
            let why = format!("{e:#}");
            tracing::error!("{why}");
            details.insert(0, format!("The configuration is broken: {why}"));
            salvage_config(&cli.config).ok_or(e).context(
                "nothing to report with: the configuration's [indicator] and [mail] are unusable too",
            )?
        }
    };
    let name = cfg
        .drive_by_uuid(uuid)
        .map(|d| d.name.to_string())
        .unwrap_or_else(|| uuid.to_string());
    let mut ind = backends::indicator(&cfg);
    if let Err(e) = ind.show(indicator::State::Failure) {
        tracing::warn!("indicator: {}", extbackup::chain(&e));
    }
    // A killed run leaves its mapping open (its mount went with its namespace).
    if cfg.drive_by_uuid(uuid).is_some() {
        let mapping = extbackup::pipeline::mapping_name(&name);
        if let Ok(crypt) = backends::crypt(&cfg) {
            if crypt
                .status(&mapping)
                .is_ok_and(|s| s != crypt::MappingStatus::Inactive)
            {
                match crypt.lock(&mapping, crypt::LockMode::Deferred) {
                    Ok(_) => tracing::info!("closed {mapping}, left open by the failed run"),
                    Err(e) => tracing::warn!("closing {mapping}: {}", extbackup::chain(&e)),
                }
            }
        }
    }
    let log_tail = std::process::Command::new("journalctl")
        .args(["--no-pager", "-o", "short-iso", "-n", "30", "-u", &unit])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ev = notify::Event {
        drive: name,
        host: cfg.host_name(),
        outcome: notify::Outcome::Failure,
        failed_step: Some("unit".into()),
        error_chain: vec![format!(
            "{unit} failed ({how}) without reporting it: killed, crashed or a configuration error"
        )],
        log_tail,
        duration: std::time::Duration::ZERO,
        files: 0,
        bytes: 0,
        details,
    };
    match backends::notifier(&cfg)? {
        Some(n) => {
            let _ = n.flush_spool();
            n.notify(&ev).context("sending the failure mail")?;
            tracing::info!("failure mail sent");
        }
        None => tracing::warn!("no [mail] configured: the red LED is the only report"),
    }
    Ok(0)
}

/// From a configuration that does not load (invalid paths, a bad drive entry...), a
/// minimal one with only its `host`, `state_dir`, `[indicator]` and `[mail]`, when those
/// parse and validate on their own.
fn salvage_config(path: &std::path::Path) -> Option<Config> {
    let text = std::fs::read_to_string(path).ok()?;
    let full: toml::Table = toml::from_str(&text).ok()?;
    let mut t = toml::Table::new();
    t.insert("source".into(), toml::Value::String("/".into()));
    for key in ["host", "state_dir", "indicator", "mail"] {
        if let Some(v) = full.get(key) {
            t.insert(key.into(), v.clone());
        }
    }
    Config::parse(&toml::to_string(&t).ok()?).ok()
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// SIGTERM (systemd stopping the unit) and SIGINT set [`STOP`]: the run stops before its
/// next step and undoes what it did. When this process leads its process group (as under
/// systemd or a shell), a helper thread also passes SIGTERM on to the group once, so that
/// a running rsync (or sync command) ends now instead of at the final SIGKILL.
fn install_stop_handler() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        let act = SigAction::new(
            SigHandler::Handler(on_stop_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for sig in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            if let Err(e) = unsafe { sigaction(sig, &act) } {
                result = Err(anyhow::Error::from(e).context("installing the signal handler"));
                return;
            }
        }
        let leader = nix::unistd::getpgrp() == nix::unistd::getpid();
        if leader {
            std::thread::spawn(|| loop {
                if STOP.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!("stopping: passing SIGTERM on to the sync");
                    let _ = nix::sys::signal::killpg(nix::unistd::getpgrp(), Signal::SIGTERM);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            });
        }
    });
    result
}

fn watch(cli: &Cli, capture: &LogCapture) -> Result<u8> {
    let cfg = load(cli)?;
    if cfg.drives.is_empty() {
        bail!(UsageError(
            "no drives configured: add one with `extbackup prepare`".into()
        ));
    }
    install_stop_handler()?;
    let uuids: Vec<String> = cfg.drives.iter().map(|d| d.uuid.to_string()).collect();
    tracing::info!(
        "watching for {} configured drive(s); SIGTERM or Ctrl-C stops",
        uuids.len()
    );
    extbackup::watch::Watcher::new(&uuids).run(&STOP, |found| {
        tracing::info!(
            "drive {} {} at {}",
            found.uuid,
            if found.at_start {
                "present"
            } else {
                "plugged in"
            },
            found.devnode.display()
        );
        // Re-read the configuration for each drive: it may have changed since the start.
        let cfg = match Config::load(&cli.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{}", extbackup::chain(&e));
                return;
            }
        };
        match run(&cfg, &Target::Device(found.devnode.clone()), false, capture) {
            Ok(code) => tracing::info!("run for {} ended with exit code {code}", found.uuid),
            Err(e) => tracing::error!("run for {}: {e:#}", found.uuid),
        }
    })?;
    tracing::info!("watch stopped");
    Ok(0)
}
