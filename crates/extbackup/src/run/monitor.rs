//! Monitoring: pings to a healthchecks-style URL and a Prometheus node-exporter textfile.
//!
//! Neither ever fails or delays a backup: pings go from a background thread (the start
//! ping while the run goes on), each bounded by `timeout_secs`, and the end of a run waits
//! for what is left at most `timeout_secs` in all, after the drive is closed and the
//! outcome shown. The textfile is rewritten atomically from the state directory; a write
//! that fails is a warning.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Config, MonitorConfig};
use crate::drive::state::{RunRecord, RunResult, StateDir};

/// Most bytes of log sent with a failure ping (healthchecks.io keeps 100 kB).
const MAX_BODY: usize = 90_000;

/// What a ping says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingKind {
    /// The run began (`URL/start`).
    Start,
    /// The run succeeded (`URL`).
    Success,
    /// The run failed (`URL/fail`, the log's tail as body).
    Failure,
}

impl PingKind {
    fn suffix(self) -> &'static str {
        match self {
            PingKind::Start => "/start",
            PingKind::Success => "",
            PingKind::Failure => "/fail",
        }
    }
}

/// The pings of one run, sent in order by a background thread.
pub struct Pinger {
    url: String,
    timeout: Duration,
    tx: Option<mpsc::Sender<(PingKind, String)>>,
    worker: Option<JoinHandle<()>>,
}

impl Pinger {
    /// A pinger for `drive`, or `None` when no `ping_url` is configured.
    pub fn new(cfg: &MonitorConfig, drive: &str) -> Option<Self> {
        let url = cfg.ping_url.as_ref()?.for_drive(drive);
        let timeout = cfg.timeout_secs.get();
        let (tx, rx) = mpsc::channel::<(PingKind, String)>();
        let agent = agent(timeout);
        let base = url.clone();
        let worker = std::thread::Builder::new()
            .name("ping".into())
            .spawn(move || {
                for (kind, body) in rx {
                    let u = format!("{base}{}", kind.suffix());
                    match agent.post(&u).send_string(&body) {
                        Ok(r) => tracing::debug!("ping {u}: {}", r.status()),
                        Err(e) => tracing::warn!(
                            "monitoring ping {u} failed (the backup is not affected): {e}"
                        ),
                    }
                }
            })
            .ok()?;
        Some(Self {
            url,
            timeout,
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    /// Queues a ping; returns at once.
    pub fn send(&self, kind: PingKind, body: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((kind, body));
        }
    }

    /// Queues the last ping and waits for the queue to empty, at most `timeout_secs`; a
    /// ping still hanging then is left to its own timeout.
    pub fn finish(mut self, kind: PingKind, body: String) {
        self.send(kind, body);
        self.tx = None;
        let t0 = Instant::now();
        if let Some(w) = self.worker.take() {
            while !w.is_finished() && t0.elapsed() < self.timeout {
                std::thread::sleep(Duration::from_millis(10));
            }
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::warn!(
                    "monitoring: {} did not answer within {} s; not waiting for it",
                    self.url,
                    self.timeout.as_secs()
                );
            }
        }
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    let mut b = ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout(timeout)
        .user_agent(concat!("extbackup/", env!("CARGO_PKG_VERSION")));
    if let Ok(tls) = native_tls::TlsConnector::new() {
        b = b.tls_connector(std::sync::Arc::new(tls));
    }
    b.build()
}

/// The body of a failure ping: the log's tail, cut to what healthchecks keeps.
pub fn failure_body(log_tail: &str) -> String {
    if log_tail.len() <= MAX_BODY {
        return log_tail.to_string();
    }
    let mut start = log_tail.len() - MAX_BODY;
    while !log_tail.is_char_boundary(start) {
        start += 1;
    }
    log_tail[start..].to_string()
}

/// The node-exporter textfile for every configured drive, from the state directory, with
/// `this_run` (the run that just ended) taken as its drive's newest record even when the
/// state directory could not keep it: no outcome is missing from the textfile.
pub fn textfile(cfg: &Config, state: &StateDir, this_run: Option<&RunRecord>) -> String {
    let metrics: [(&str, &str); 7] = [
        (
            "extbackup_last_success_timestamp_seconds",
            "When the drive's last successful backup finished (Unix time).",
        ),
        (
            "extbackup_last_run_timestamp_seconds",
            "When the drive's last run finished (Unix time).",
        ),
        (
            "extbackup_last_run_success",
            "1 when the drive's last run succeeded, 0 when it failed.",
        ),
        (
            "extbackup_last_run_duration_seconds",
            "How long the drive's last run took.",
        ),
        (
            "extbackup_last_run_bytes_copied",
            "Bytes the drive's last run copied (0 for a failed run).",
        ),
        (
            "extbackup_last_scrub_timestamp_seconds",
            "When the drive's last scrub (against its manifests) finished (Unix time).",
        ),
        (
            "extbackup_last_scrub_faults",
            "Files the drive's last scrub found missing, changed or unreadable.",
        ),
    ];
    let mut rows: Vec<Vec<String>> = vec![vec![]; metrics.len()];
    for d in &cfg.drives {
        let name = d.name.as_str();
        let mut st = state.drive(name).ok();
        if let Some(r) = this_run.filter(|r| r.drive == name) {
            let st = st.get_or_insert_with(Default::default);
            let slot = match r.result {
                RunResult::Success => &mut st.last_success,
                RunResult::Failure => &mut st.last_failure,
            };
            if slot.as_ref().is_none_or(|old| old.finished <= r.finished) {
                *slot = Some(r.clone());
            }
        }
        let Some(st) = st else { continue };
        let last = match (&st.last_success, &st.last_failure) {
            (Some(s), Some(f)) if f.finished > s.finished => Some(f),
            (Some(s), _) => Some(s),
            (None, f) => f.as_ref(),
        };
        let label = format!("{{drive=\"{}\"}}", name);
        if let Some(s) = &st.last_success {
            rows[0].push(format!("{}{label} {}", metrics[0].0, s.finished));
        }
        if let Some(l) = last {
            let ok = u8::from(l.result == RunResult::Success);
            rows[1].push(format!("{}{label} {}", metrics[1].0, l.finished));
            rows[2].push(format!("{}{label} {ok}", metrics[2].0));
            rows[3].push(format!(
                "{}{label} {}",
                metrics[3].0,
                l.finished.saturating_sub(l.started)
            ));
            rows[4].push(format!("{}{label} {}", metrics[4].0, l.bytes_copied));
        }
        if let Some(sc) = crate::drive::scrub::last(&cfg.state_dir, name) {
            rows[5].push(format!("{}{label} {}", metrics[5].0, sc.finished));
            rows[6].push(format!("{}{label} {}", metrics[6].0, sc.faults.len()));
        }
    }
    let mut out = String::new();
    for ((name, help), rows) in metrics.iter().zip(rows) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}

/// Rewrites the textfile (when configured), with `this_run` as in [`textfile`]; a failure is
/// a warning, never the run's.
pub fn write_textfile(cfg: &Config, state: &StateDir, this_run: Option<&RunRecord>) {
    let Some(path) = &cfg.monitor.textfile else {
        return;
    };
    if let Err(e) = write_to(path, &textfile(cfg, state, this_run)) {
        tracing::warn!(
            "monitoring: writing the textfile {}: {e} (the backup is not affected)",
            path.display()
        );
    }
}

fn write_to(path: &Path, text: &str) -> std::io::Result<()> {
    oskit::write_atomic(path, text.as_bytes(), Some(0o644))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A local HTTP server recording `(method, path, body)`; `answer` false accepts
    /// connections and never answers.
    /// The requests a test server saw: `(method, path, body)`.
    pub(crate) type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

    pub(crate) fn server(answer: bool) -> (String, Seen) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(vec![]));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let mut held = vec![];
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                if !answer {
                    held.push(c);
                    continue;
                }
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let (m, p) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                s2.lock()
                    .unwrap()
                    .push((m, p, String::from_utf8(body).unwrap()));
                let mut c = c;
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                );
            }
        });
        (url, seen)
    }

    fn monitor(url: &str, timeout: u64) -> MonitorConfig {
        let text = format!(
            "source = \"/srv\"\n[monitor]\nping_url = \"{url}/check-{{drive}}/\"\ntimeout_secs = {timeout}\n"
        );
        Config::parse(&text).unwrap().monitor
    }

    #[test]
    fn start_then_success_or_failure_with_the_log_tail() {
        let (url, seen) = server(true);
        let p = Pinger::new(&monitor(&url, 5), "offsite-a").unwrap();
        p.send(PingKind::Start, String::new());
        p.finish(PingKind::Failure, failure_body("line 1\nline 2\n"));
        let p = Pinger::new(&monitor(&url, 5), "offsite-b").unwrap();
        p.finish(PingKind::Success, String::new());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (
                    "POST".into(),
                    "/check-offsite-a/start".into(),
                    String::new()
                ),
                (
                    "POST".into(),
                    "/check-offsite-a/fail".into(),
                    "line 1\nline 2\n".into()
                ),
                ("POST".into(), "/check-offsite-b".into(), String::new()),
            ]
        );
    }

    #[test]
    fn a_dead_endpoint_costs_at_most_the_deadline_and_a_closed_port_nothing() {
        let (url, seen) = server(false);
        let p = Pinger::new(&monitor(&url, 1), "a").unwrap();
        p.send(PingKind::Start, String::new());
        let t0 = Instant::now();
        p.finish(PingKind::Success, String::new());
        // The deadline bounds the wait (1 s), however many pings hang.
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(seen.lock().unwrap().is_empty());
        // Nothing listens: refused at once.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = Pinger::new(&monitor(&format!("http://127.0.0.1:{port}"), 5), "a").unwrap();
        let t0 = Instant::now();
        p.finish(PingKind::Failure, "x".into());
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn ping_urls_are_checked_with_line_and_column() {
        let e = Config::parse("source = \"/srv\"\n[monitor]\nping_url = \"hc-ping.com/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3, column 12"), "{e}");
        assert!(e.contains("bad ping URL"), "{e}");
        let e = Config::parse("source = \"/srv\"\n[monitor]\ntextfile = \"/var/lib/x.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column 1"), "{e}");
        assert!(e.contains(".prom"), "{e}");
    }

    #[test]
    fn failure_body_keeps_the_end() {
        let long = "é".repeat(MAX_BODY);
        let b = failure_body(&long);
        assert!(b.len() <= MAX_BODY && long.ends_with(&b));
    }
}
