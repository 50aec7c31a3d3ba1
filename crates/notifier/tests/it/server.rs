//! Test helpers: a real SMTP server process and an `.eml` parser (Python's `email`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One message the server accepted.
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub auth: String,
    pub raw: Vec<u8>,
}

/// `smtp_server.py` running on 127.0.0.1:port; killed on drop.
pub struct SmtpServer {
    pub port: u16,
    child: Child,
    out: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts the server; panics with a clear message when it cannot (never passes silently).
    pub fn start(port: u16, auth: Option<(&str, &str)>) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/smtp_server.py");
        let out = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script).arg(port.to_string()).arg(out.path());
        if let Some((u, p)) = auth {
            cmd.args([u, p]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {PYTHON} for the SMTP test server: {e}; install python3-aiosmtpd (cargo xtask deps)")
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.trim() == "READY" => {}
            other => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!(
                    "the SMTP test server (python3-aiosmtpd) did not start on port {port} \
                     ({other:?}); install python3-aiosmtpd (cargo xtask deps). stderr:\n{err}"
                );
            }
        }
        Self { port, child, out }
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "msg"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| parse_received(&std::fs::read(f).unwrap()))
            .collect()
    }

    /// Waits (up to 30 s) until `n` messages arrived; panics otherwise.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < end,
                "only {} of {n} messages arrived",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_received(data: &[u8]) -> Received {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("server header block");
    let head = String::from_utf8_lossy(&data[..split]).into_owned();
    let mut fields = HashMap::new();
    for l in head.lines() {
        let (k, v) = l.split_once(": ").unwrap();
        fields.insert(k.to_string(), v.to_string());
    }
    Received {
        mail_from: fields["MAIL FROM"].clone(),
        rcpt_to: fields["RCPT TO"].split(' ').map(String::from).collect(),
        auth: fields["AUTH"].clone(),
        raw: data[split + 2..].to_vec(),
    }
}

/// A message parsed by Python's `email` package: unfolded, decoded headers and the
/// decoded text body.
pub struct Eml {
    headers: HashMap<String, String>,
    pub body: String,
}

impl Eml {
    /// The header's value, or "" when absent.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }
}

/// Parses a raw RFC 5322 message with Python's standard `email` parser.
pub fn parse_eml(raw: &[u8]) -> Eml {
    const PARSER: &str = r#"
import sys, email, email.policy
m = email.message_from_binary_file(sys.stdin.buffer, policy=email.policy.default)
if m.defects:
    sys.exit("defects: %r" % m.defects)
for k, v in m.items():
    print("%s\t%s" % (k.lower(), str(v).replace("\n", " ")))
print()
print(m.get_content(), end="")
"#;
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 for parsing the mail");
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the message does not parse: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(raw)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\n\n").expect("parser output");
    let headers = head
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    Eml {
        headers,
        body: body.to_string(),
    }
}
