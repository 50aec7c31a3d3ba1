//! Child processes of the syncers (started tied to our life by
//! [`oskit::process::tie_to_parent`]): their start failures explained, their stderr logged.

use crate::{ErrorKind, SyncError};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::thread::JoinHandle;

/// How many lines of stderr an error message keeps.
pub(crate) const TAIL_LINES: usize = 15;

pub(crate) fn spawn_error(program: &Path, e: std::io::Error) -> SyncError {
    if e.kind() == std::io::ErrorKind::NotFound {
        let hint = if program.file_name() == Some(OsStr::new("rsync")) {
            ": install it with `apt-get install rsync`"
        } else {
            ": check the configured path"
        };
        SyncError::new(
            ErrorKind::NotFound,
            format!("{} was not found{hint}", program.display()),
        )
        .with_source(e)
    } else {
        SyncError::new(
            ErrorKind::NotFound,
            format!(
                "{} could not be started: check that it is executable",
                program.display()
            ),
        )
        .with_source(e)
    }
}

/// How many lines of a child's stderr the log gets one by one; the rest are counted, and
/// the count logged at the end (a failure repeated for every file must not flood the log).
pub(crate) const LOGGED_LINES: usize = 50;

/// Reads the child's stderr on a thread: the first [`LOGGED_LINES`] lines go to the log,
/// then one line counting the others; the last [`TAIL_LINES`] are returned.
pub(crate) fn collect_stderr(child: &mut Child, who: &'static str) -> JoinHandle<Vec<String>> {
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let mut r = BufReader::new(stderr);
        let mut line = Vec::new();
        let mut logged = 0usize;
        while let Ok(n) = r.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            line.clear();
            if text.is_empty() {
                continue;
            }
            if logged < LOGGED_LINES {
                tracing::warn!("{who}: {text}");
            }
            logged += 1;
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
        if logged > LOGGED_LINES {
            tracing::warn!(
                "{who}: {} more line(s) of error output not logged one by one (the last {} \
                 are in the error)",
                logged - LOGGED_LINES,
                TAIL_LINES
            );
        }
        tail.into()
    })
}
