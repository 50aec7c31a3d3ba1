//! `CommandSyncer`: the user's own sync script.

use crate::child::{collect_stderr, spawn_error};
use crate::{ErrorKind, Progress, SyncError, SyncOptions, SyncReport, Syncer};
use oskit::process::tie_to_parent;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs the user's own program (like the seed's `phobos-backup-monthly`) after the guard,
/// with `EXTBACKUP_SOURCE`, `EXTBACKUP_TARGET` and `EXTBACKUP_DRIVE` in its environment
/// (and `EXTBACKUP_PREVIOUS`, the previous generation, when building a new one).
///
/// Its stdout goes to the log (info), its stderr too (warnings). A non-zero exit is
/// [`ErrorKind::Other`] with the exit status and the tail of stderr; death by a signal
/// is [`ErrorKind::Interrupted`]. Progress is reported only at the start (unknown) and at
/// the end (1.0); the report holds the duration only.
#[derive(Clone, Debug)]
pub struct CommandSyncer {
    program: PathBuf,
    args: Vec<OsString>,
}

impl CommandSyncer {
    /// The program to run, without arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: vec![],
        }
    }

    /// Arguments to pass to the program.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

impl Syncer for CommandSyncer {
    fn mirror(
        &self,
        source: &Path,
        target: &Path,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SyncReport, SyncError> {
        if !opts.exclude.is_empty() {
            return Err(SyncError::new(
                ErrorKind::Other,
                "exclude patterns go with the rsync syncer: a sync command chooses what it \
                 copies itself",
            ));
        }
        let start = Instant::now();
        progress(Progress {
            bytes: 0,
            fraction: None,
        });
        tracing::info!("running {}", self.program.display());
        let mut cmd = Command::new(&self.program);
        tie_to_parent(&mut cmd);
        if let Some(prev) = &opts.link_dest {
            // A new generation: the script may hard-link unchanged files from it.
            cmd.env("EXTBACKUP_PREVIOUS", prev);
        }
        let mut child = cmd
            .args(&self.args)
            .env("EXTBACKUP_SOURCE", source)
            .env("EXTBACKUP_TARGET", target)
            .env("EXTBACKUP_DRIVE", &opts.drive)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(&self.program, e))?;
        let stderr = collect_stderr(&mut child, "sync command");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            tracing::info!(
                "sync command: {}",
                String::from_utf8_lossy(&line).trim_end()
            );
            line.clear();
        }
        let status = child.wait().map_err(|e| {
            SyncError::new(ErrorKind::Other, "waiting for the sync command").with_source(e)
        })?;
        let tail = stderr.join().unwrap_or_default();
        let tail = if tail.is_empty() {
            "(no error output)".to_string()
        } else {
            tail.join("\n")
        };
        if let Some(sig) = status.signal() {
            return Err(SyncError::new(
                ErrorKind::Interrupted,
                format!(
                    "the sync command {} was killed by signal {sig}; its stderr ended with:\n{tail}",
                    self.program.display()
                ),
            ));
        }
        if !status.success() {
            return Err(SyncError::new(
                ErrorKind::Other,
                format!(
                    "the sync command {} failed ({status}); its stderr ended with:\n{tail}",
                    self.program.display()
                ),
            ));
        }
        progress(Progress {
            bytes: 0,
            fraction: Some(1.0),
        });
        Ok(SyncReport {
            duration: start.elapsed(),
            ..SyncReport::default()
        })
    }

    fn describe(&self) -> String {
        format!("command {}", self.program.display())
    }
}
