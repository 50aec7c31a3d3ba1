//! `extbackup watch`: wait for configured drives and back each up as it appears.

use anyhow::{bail, Result};

use extbackup::config::Config;
use extbackup::run::logcapture::LogCapture;
use extbackup::run::pipeline::Target;

use crate::commands::util::{install_stop_handler, load, UsageError, STOP};
use crate::commands::Cli;

pub(crate) fn exec(cli: &Cli, capture: &LogCapture) -> Result<u8> {
    let cfg = load(cli)?;
    if cfg.drives.is_empty() {
        bail!(UsageError(
            "no drives configured: add one with `extbackup prepare`".into()
        ));
    }
    install_stop_handler()?;
    // A run killed before it could tell its end is told now (when no run holds the lock).
    extbackup::run::backends::report_interrupted_if_idle(&cfg);
    let uuids: Vec<String> = cfg.drives.iter().map(|d| d.uuid.to_string()).collect();
    tracing::info!(
        "watching for {} configured drive(s); SIGTERM or Ctrl-C stops",
        uuids.len()
    );
    extbackup::system::watch::Watcher::new(&uuids).run(&STOP, |found| {
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
        match super::run::run(
            &cfg,
            &Target::Device(found.devnode.clone()),
            Some(&found.uuid),
            (false, false),
            capture,
        ) {
            Ok(code) => tracing::info!("run for {} ended with exit code {code}", found.uuid),
            Err(e) => tracing::error!("run for {}: {e:#}", found.uuid),
        }
    })?;
    tracing::info!("watch stopped");
    Ok(0)
}
