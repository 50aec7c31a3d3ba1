//! `extbackup notify-failure` (hidden): report a backup unit that failed without reporting itself.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;

use extbackup::config::Config;
use extbackup::run::backends;

use crate::commands::util::load;
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The drive's LUKS UUID (the unit's instance).
    #[arg(long, value_name = "UUID")]
    uuid: String,
    /// The unit that failed.
    #[arg(long, value_name = "UNIT")]
    unit: Option<String>,
}

/// `notify-failure`: the unit `unit` of drive `uuid` failed. A run that failed by itself
/// (exit 1) has already turned the LED red and mailed; anything else (killed, crashed,
/// exit 2, timeout) gets the red LED and a mail here, and a mapping it left open is closed.
pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let (uuid, unit) = (a.uuid.as_str(), a.unit.as_deref());
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
    if cfg.drive_by_uuid(uuid).is_some() {
        close_left_mapping(&cfg, &extbackup::drive::layout::mapping_name(&name));
    }
    let log_tail = journal_tail(&unit);
    let ev = notifier::Event {
        drive: name,
        host: cfg.host_name(),
        outcome: notifier::Outcome::Failure,
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

/// Closes `mapping` when a killed run left it open (its mount went with its namespace).
pub(crate) fn close_left_mapping(cfg: &Config, mapping: &str) {
    let Ok(crypt) = backends::crypt(cfg) else {
        return;
    };
    if crypt
        .status(mapping)
        .is_ok_and(|s| s != crypt::MappingStatus::Inactive)
    {
        match crypt.lock(mapping, crypt::LockMode::Deferred) {
            Ok(_) => tracing::info!("closed {mapping}, left open by the failed run"),
            Err(e) => tracing::warn!("closing {mapping}: {}", extbackup::chain(&e)),
        }
    }
}

/// The last lines `unit` logged, for the mail (empty when the journal cannot be read).
pub(crate) fn journal_tail(unit: &str) -> String {
    oskit::process::tie_to_parent(&mut std::process::Command::new("journalctl"))
        .args(["--no-pager", "-o", "short-iso", "-n", "30", "-u", unit])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// From a configuration that does not load (invalid paths, a bad drive entry...), a
/// minimal one with only its `host`, `state_dir`, `[indicator]` and `[mail]`, when those
/// parse and validate on their own.
pub(crate) fn salvage_config(path: &std::path::Path) -> Option<Config> {
    let text = extbackup::config::read_file(path).ok()?;
    let full: toml::Table = toml::from_str(&text).ok()?;
    let mut t = toml::Table::new();
    t.insert(
        "source".into(),
        toml::Value::String(extbackup::config::NO_SOURCE.into()),
    );
    for key in ["host", "state_dir", "indicator", "mail"] {
        if let Some(v) = full.get(key) {
            t.insert(key.into(), v.clone());
        }
    }
    Config::parse(&toml::to_string(&t).ok()?).ok()
}
