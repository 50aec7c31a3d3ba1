//! The `extbackup` command (thin: the work is in the library, each subcommand in
//! `commands/`). This file only parses, sets up the log and dispatches.
//!
//! Exit codes: 0 done; 75 the drive is not ours, skipped; 1 failure; 2 usage or
//! configuration error.

mod commands;

use anyhow::Result;
use clap::Parser;
use std::process::ExitCode;

use commands::util::{error_line, init_logging, UsageError, EXIT_USAGE};
use commands::Cli;
use extbackup::run::logcapture::LogCapture;

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

fn dispatch(cli: &Cli, capture: &LogCapture) -> Result<u8> {
    use commands::*;
    match &cli.command {
        Command::Run(a) => run::exec(cli, a, capture),
        Command::Watch => watch::exec(cli, capture),
        Command::Prepare(a) => prepare::exec(cli, a),
        Command::Install(a) => install::exec(cli, a),
        Command::Uninstall => uninstall::exec(cli),
        Command::Status(a) => status::exec(cli, a),
        Command::Check(a) => check::exec(cli, a),
        Command::Ack(a) => ack::exec(cli, a),
        Command::NotifyFailure(a) => notify_failure::exec(cli, a),
        Command::Config { command } => config::exec(cli, command),
        Command::Recovery { command } => recovery::exec(cli, command),
        Command::Mount(a) => mount::exec(cli, a),
        Command::Unmount(a) => unmount::exec(cli, a),
        Command::Restore(a) => restore::exec(cli, a),
        Command::Verify(a) => verify::exec(cli, a),
        Command::History(a) => history::exec(cli, a),
        Command::Scrub(a) => scrub::exec(cli, a),
        Command::Versions(a) => versions::exec(cli, a),
        Command::GenerateAssets(a) => generate_assets::exec(a),
    }
}
