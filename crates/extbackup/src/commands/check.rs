//! `extbackup check`: mail a reminder when a drive's last good backup is too old.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;

use extbackup::drive::status;
use extbackup::run::backends;

use crate::commands::util::load;
use crate::commands::Cli;

#[derive(ClapArgs, Debug)]
pub(crate) struct Args {
    /// The limit in days; `policy.reminder_age_days` from the configuration by default.
    #[arg(long, value_name = "DAYS")]
    max_age: Option<u32>,
}

pub(crate) fn exec(cli: &Cli, a: &Args) -> Result<u8> {
    let cfg = load(cli)?;
    let days = a.max_age.unwrap_or(cfg.policy.reminder_age_days);
    // The daily timer also tells a run killed before it could (when no run holds the lock).
    backends::report_interrupted_if_idle(&cfg);
    let s = status::status(&cfg, extbackup::fmt::now())
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
