//! Hooks: the user's commands before the copy (dump a database, take a snapshot) and after
//! the run (success or failure), each with a timeout, its output in the log, and the drive
//! in its environment.
//!
//! A hook runs in its own process group, stdin from `/dev/null`; on its timeout (or a stop
//! signal) the whole group gets SIGTERM, then SIGKILL two seconds later.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::HookConfig;

/// Lines of a hook's output kept for its error message.
const TAIL_LINES: usize = 10;

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the copy.
    Before,
    /// After the run.
    After,
}

impl Phase {
    /// `before` / `after`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::After => "after",
        }
    }
}

/// Why a hook failed: a message that names the hook, with its output's last lines.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HookError {
    message: String,
}

/// Runs `hook` with `env` (plus `EXTBACKUP_HOOK` and `EXTBACKUP_PHASE`) added to the
/// environment; its output lines go to the log. `cancel` (a stop signal) ends it early.
pub fn run(
    hook: &HookConfig,
    phase: Phase,
    env: &[(&str, String)],
    cancel: Option<&AtomicBool>,
) -> Result<(), HookError> {
    let name = hook.name.as_str();
    let argv = hook.command.argv();
    let fail = |what: String| HookError {
        message: format!("{} hook {name:?}: {what}", phase.name()),
    };
    tracing::info!("{} hook {name:?}: running {:?}", phase.name(), argv);
    let mut child = oskit::process::tie_to_parent(&mut Command::new(&argv[0]))
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("EXTBACKUP_HOOK", name)
        .env("EXTBACKUP_PHASE", phase.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("{} could not be started: {e}", argv[0])))?;
    let output = Output::follow(&mut child, name);
    let t0 = Instant::now();
    let ended = wait(&mut child, hook.timeout_secs.get(), cancel)
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    let tail = output.tail();
    let with_tail = |what: String| {
        if tail.is_empty() {
            fail(what)
        } else {
            fail(format!("{what}; its last output: {}", tail.join(" / ")))
        }
    };
    match ended {
        Ok(st) if st.success() => {
            tracing::info!(
                "{} hook {name:?}: done in {:.1} s",
                phase.name(),
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Ok(st) => Err(with_tail(match st.code() {
            Some(c) => format!("exited with status {c}"),
            None => format!("was killed ({st})"),
        })),
        Err(why) => Err(with_tail(why)),
    }
}

/// A hook's output, followed line by line into the log; its last lines kept.
struct Output {
    tail: Arc<Mutex<VecDeque<String>>>,
    done: mpsc::Receiver<()>,
    readers: usize,
}

impl Output {
    fn follow(child: &mut Child, name: &str) -> Self {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, done) = mpsc::channel();
        let out = child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>);
        let err = child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>);
        let readers = usize::from(out.is_some()) + usize::from(err.is_some());
        for stream in [out, err].into_iter().flatten() {
            let (tail, tx, name) = (tail.clone(), tx.clone(), name.to_owned());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                    let line = String::from_utf8_lossy(&line).trim_end().to_string();
                    tracing::info!("hook {name:?}: {line}");
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
                let _ = tx.send(());
            });
        }
        Self {
            tail,
            done,
            readers,
        }
    }

    /// The last lines, once the readers are done (a process the hook left behind holding
    /// its output does not keep us waiting more than a second).
    fn tail(self) -> Vec<String> {
        for _ in 0..self.readers {
            if self.done.recv_timeout(Duration::from_secs(1)).is_err() {
                break;
            }
        }
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().cloned().collect()
    }
}

/// Waits for `child` (a process group leader) to exit; on `timeout` or `cancel`, its group
/// gets SIGTERM, then SIGKILL two seconds later, and the reason is the `Err` inside.
fn wait(
    child: &mut Child,
    timeout: Duration,
    cancel: Option<&AtomicBool>,
) -> std::io::Result<Result<ExitStatus, String>> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Ok(st));
        }
        let stop = cancel.is_some_and(|c| c.load(Ordering::Relaxed));
        if stop || t0.elapsed() >= timeout {
            let pgid = child.id();
            let _ = oskit::signal_group(pgid, false);
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = oskit::signal_group(pgid, true);
            let _ = child.wait();
            return Ok(Err(if stop {
                "stopped by a signal".to_string()
            } else {
                format!("timed out after {} s and was killed", timeout.as_secs())
            }));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn hook(cmd: &str, timeout: u64) -> HookConfig {
        let text = format!(
            "source = \"/srv\"\n[[hooks.before]]\nname = \"h\"\ncommand = [\"/bin/sh\", \"-c\", {}]\ntimeout_secs = {timeout}\n",
            toml::Value::String(cmd.into())
        );
        Config::parse(&text).unwrap().hooks.before.remove(0)
    }

    #[test]
    fn a_hook_sees_the_drive_in_its_environment() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("env");
        let h = hook(
            &format!(
                "echo \"$EXTBACKUP_DRIVE $EXTBACKUP_UUID $EXTBACKUP_HOOK $EXTBACKUP_PHASE\" > {}",
                out.display()
            ),
            5,
        );
        run(
            &h,
            Phase::Before,
            &[
                ("EXTBACKUP_DRIVE", "a".into()),
                ("EXTBACKUP_UUID", "u".into()),
            ],
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "a u h before\n");
    }

    #[test]
    fn a_failing_hook_is_named_with_its_status_and_output() {
        let e = run(
            &hook("echo dump failed >&2; exit 3", 5),
            Phase::Before,
            &[],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("before hook \"h\""), "{e}");
        assert!(e.contains("status 3"), "{e}");
        assert!(e.contains("dump failed"), "{e}");
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let t0 = Instant::now();
        // A child that ignores nothing, and a grandchild holding the output pipe.
        let e = run(
            &hook(
                &format!("sleep 60 & echo $! > {}; wait", pidfile.display()),
                1,
            ),
            Phase::After,
            &[],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timed out after 1 s"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        // The grandchild is gone (or a zombie left for init to reap).
        let gone = || !{
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .is_ok_and(|s| !(s.contains(") Z ") || s.contains(") X ")))
        };
        let t1 = Instant::now();
        while !gone() && t1.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        assert!(gone(), "the hook's sleep survived: {stat:?}");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let text =
            "source = \"/srv\"\n[[hooks.after]]\nname = \"x\"\ncommand = [\"/nonexistent/prog\"]\n";
        let h = Config::parse(text).unwrap().hooks.after.remove(0);
        let e = run(&h, Phase::After, &[], None).unwrap_err().to_string();
        assert!(e.contains("after hook \"x\""), "{e}");
        assert!(e.contains("/nonexistent/prog"), "{e}");
    }
}
