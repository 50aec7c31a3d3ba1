//! `extbackup run`: back up onto one drive now (what the udev rule starts on plug-in).

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use std::io::IsTerminal;
use std::path::PathBuf;

use extbackup::config::Config;
use extbackup::drive::browse;
use extbackup::run::backends;
use extbackup::run::logcapture::LogCapture;
use extbackup::run::pipeline::{Pipeline, RunOptions, RunOutcome, Target};
use extbackup::run::progress::JsonEvents;

use crate::commands::util::{
    error_line, install_stop_handler, load, UsageError, EXIT_NOT_OURS, STOP,
};
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct TargetArgs {
    /// The drive's LUKS UUID (as in /dev/disk/by-uuid; what the udev rule passes).
    #[arg(long, value_name = "UUID")]
    uuid: Option<String>,
    /// The drive's block device (its LUKS partition).
    #[arg(long, value_name = "PATH")]
    device: Option<PathBuf>,
}

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    target: TargetArgs,
    /// Sync even when the guard refuses (e.g. more deletions than policy.max_delete_fraction).
    #[arg(long)]
    force: bool,
    /// Machine-readable progress: one JSON object per line on stdout (steps, copy
    /// progress, the result).
    #[arg(long)]
    json: bool,
}

pub(crate) fn exec(cli: &Cli, a: &Args, capture: &LogCapture) -> Result<u8> {
    let cfg = load(cli)?;
    let target = match (&a.target.uuid, &a.target.device) {
        (Some(u), _) => Target::Uuid(u.clone()),
        (None, Some(d)) => Target::Device(d.clone()),
        (None, None) => bail!(UsageError("give --uuid or --device".into())),
    };
    run(
        &cfg,
        &target,
        a.target.uuid.as_deref(),
        (a.force, a.json),
        capture,
    )
}

pub(crate) fn run(
    cfg: &Config,
    target: &Target,
    uuid: Option<&str>,
    (force, json): (bool, bool),
    capture: &LogCapture,
) -> Result<u8> {
    // The mail's log tail is this run's (watch runs several in one process).
    capture.clear();
    // the run's slot on a shared LED: the drive's name (a drive not known by its UUID
    // here, e.g. `--device`, shares the slot `extbackup`)
    let job = uuid
        .and_then(|u| cfg.drive_by_uuid(u))
        .map_or_else(|| "extbackup".to_owned(), |d| d.name.to_string());
    let mut b = match backends::build_for_job(cfg, &job, Some(&STOP)) {
        Ok(b) => b,
        Err(e) => {
            // The configuration is valid; what it names is not usable (a state_dir that
            // is a file...): a failed run, told like any other (LED, mail, ping).
            let drive = match target {
                Target::Uuid(u) => cfg
                    .drive_by_uuid(u)
                    .map_or_else(|| u.clone(), |d| d.name.to_string()),
                Target::Device(d) => d.display().to_string(),
            };
            let outcome = backends::report_unbuilt(cfg, &job, &drive, e, capture);
            return Ok(exit_code(&outcome, json));
        }
    };
    if json {
        if let Some(i) = backends::console_on_stderr(cfg) {
            b.indicator = i;
        }
    }
    if let Some(why) = browse::refuse_run(cfg, b.crypt.as_ref(), target) {
        eprintln!("extbackup: {why}");
        return Ok(EXIT_NOT_OURS);
    }
    install_stop_handler()?;
    let opts = RunOptions {
        force,
        cancel: Some(&STOP),
        ..RunOptions::default()
    };
    let mut p = Pipeline::new(cfg, b, capture.clone(), opts);
    let json = json
        .then(|| std::sync::Arc::new(std::sync::Mutex::new(JsonEvents::new(std::io::stdout()))));
    if let Some(j) = &json {
        let (j1, j2) = (j.clone(), j.clone());
        p = p
            .on_progress(move |pr| j1.lock().unwrap().progress(pr))
            .on_step(move |s| j2.lock().unwrap().step(s));
    } else if std::io::stderr().is_terminal() {
        let mut bar = extbackup::run::progress::TerminalProgress::default();
        p = p.on_progress(move |pr| bar.update(pr));
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
    drop(p);
    extbackup::run::progress::finish_terminal();
    if let Some(j) = &json {
        j.lock().unwrap().emit(json_result(&outcome));
    }
    Ok(exit_code(&outcome, false))
}

/// The exit code of a run's outcome (its error line on stderr), after the `--json`
/// result when `json`.
fn exit_code(outcome: &RunOutcome, json: bool) -> u8 {
    if json {
        JsonEvents::new(std::io::stdout()).emit(json_result(outcome));
    }
    match outcome {
        RunOutcome::Done(_) => 0,
        RunOutcome::NotOurs(_) => EXIT_NOT_OURS,
        RunOutcome::Failed { drive, step, error } => {
            error_line(&format!(
                "extbackup: {drive}: FAILED at {step}: {}",
                error.chain().join(": ")
            ));
            1
        }
    }
}

/// The `--json` event that ends a run.
pub(crate) fn json_result(outcome: &RunOutcome) -> serde_json::Value {
    match outcome {
        RunOutcome::Done(r) => serde_json::json!({
            "event": "result", "result": "success", "files_copied": r.files_copied,
            "bytes_copied": r.bytes_copied, "files_deleted": r.files_deleted,
        }),
        RunOutcome::NotOurs(why) => {
            serde_json::json!({"event": "result", "result": "not-ours", "reason": why})
        }
        RunOutcome::Failed { drive, step, error } => serde_json::json!({
            "event": "result", "result": "failure", "drive": drive, "step": step.name(),
            "error": error.chain(),
        }),
    }
}

/// Watches the drive's device node while a run goes on. When it disappears (the drive was
/// pulled), the cause is logged at error priority and the run's child processes (rsync,
/// fsck) get SIGTERM, so the step fails now instead of when rsync gives up on a dead disk
/// (minutes); the pipeline then undoes what it did (unmount, close) and reports the step.
pub(crate) fn watch_for_pull(
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
                oskit::terminate_descendants();
                return;
            }
            seen |= present;
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    })
}
