//! `MailNotifier`: lettre over SMTP, sendmail or `.eml` files, with a spool folder.

use crate::{render_body, ErrorKind, Event, Notifier, NotifyError};
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::response::Category;
use lettre::{FileTransport, Message, SendmailTransport, SmtpTransport, Transport};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an SMTP conversation may stall before the delivery counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    StartTls,
    /// TLS from the first byte ("SMTPS"), usually port 465.
    Tls,
    /// No encryption: only allowed for a server on this machine (`localhost`, `127.x`, `::1`).
    None,
}

/// Where mail goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailTransport {
    /// An SMTP server (a relay or your provider's submission port).
    Smtp {
        /// Server name or address.
        host: String,
        /// Server port (587 for STARTTLS, 465 for TLS, 25 for a local MTA).
        port: u16,
        /// How the connection is protected.
        security: Security,
        /// Login name, if the server requires authentication.
        username: Option<String>,
        /// A file holding the password (first line; read at send time, never logged).
        password_file: Option<PathBuf>,
    },
    /// A local `sendmail`-compatible program (exim4, postfix, msmtp...).
    Sendmail {
        /// The program, e.g. `/usr/sbin/sendmail`.
        program: PathBuf,
    },
    /// Writes each message as `<id>.eml` into a folder (for demos and tests).
    File {
        /// The folder, which must exist.
        dir: PathBuf,
    },
}

/// Everything `MailNotifier` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailConfig {
    /// The sender, e.g. `extbackup <root@nas.example>`.
    pub from: String,
    /// The recipients (at least one).
    pub to: Vec<String>,
    /// Where mail goes.
    pub transport: MailTransport,
    /// Where undeliverable messages wait for the next run (created if missing).
    pub spool_dir: PathBuf,
}

/// How long all the mail work of one notifier (one run) may take, unless set otherwise
/// with [`MailNotifier::with_deadline`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Sends each event as a plain-text mail; failed deliveries are spooled.
///
/// Each message is written into the spool folder first (`<time>-<pid>-<n>.eml`) and removed
/// once the transport accepted it, so a delivery that fails, or does not finish in time,
/// stays for the next run. All mail work of one notifier (its `notify` and `flush_spool`
/// calls together) ends within its deadline (60 s by default): a slow or dead server never
/// holds a backup up; a delivery still going on then finishes in the background or is
/// retried later. `flush_spool` sends with an envelope built from the current `from`/`to`,
/// oldest first; a message the server refuses permanently (SMTP 5xx) is moved to
/// `rejected/` in the spool with the server's answer beside it, the rest are still sent,
/// and the next mail says so.
///
/// `Debug` shows the configuration, which holds the password file's path, never the password.
#[derive(Debug)]
pub struct MailNotifier {
    courier: Arc<Courier>,
    deadline: Duration,
    /// When the mail work of this notifier must end (set by its first delivery).
    budget_end: OnceLock<Instant>,
    /// Spool files whose delivery is going on (in a thread that may outlive a timeout).
    in_flight: Arc<Mutex<HashSet<PathBuf>>>,
}

/// What delivers: the checked configuration.
#[derive(Debug)]
struct Courier {
    config: MailConfig,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// How one delivery attempt ended.
enum Delivery {
    Sent,
    /// The server refused the message for good (SMTP 5xx): sending it again cannot help.
    Refused(NotifyError),
    /// Not now (connection refused, 4xx, a broken pipe...).
    Failed(NotifyError),
    /// The deadline passed first.
    TimedOut,
}

fn invalid(msg: impl Into<String>) -> NotifyError {
    NotifyError::new(ErrorKind::InvalidConfig, msg)
}

/// `localhost`, or an address in 127.0.0.0/8 or `::1`, compared as parsed addresses
/// (`127.example.com` is a name like any other).
fn is_local_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl MailConfig {
    /// Checks the configuration (addresses parse, at least one recipient, unencrypted SMTP
    /// only to this machine, authentication complete) without touching anything; the
    /// password file is read later, at each send. Configuration checks call this so that
    /// they refuse exactly what a run would.
    pub fn check(&self) -> Result<(), NotifyError> {
        Courier::new(self.clone()).map(|_| ())
    }
}

impl Courier {
    fn new(config: MailConfig) -> Result<Self, NotifyError> {
        let from: Mailbox = config.from.parse().map_err(|e| {
            invalid(format!(
                "the mail sender `{}` is not a valid address: write it as \
                 `name@example.org` or `Name <name@example.org>`",
                config.from
            ))
            .with_source(e)
        })?;
        if config.to.is_empty() {
            return Err(invalid(
                "no mail recipient is configured: add at least one address to `to`",
            ));
        }
        let to = config
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>().map_err(|e| {
                    invalid(format!("the mail recipient `{t}` is not a valid address"))
                        .with_source(e)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        match &config.transport {
            MailTransport::Smtp {
                host,
                security,
                username,
                password_file,
                ..
            } => {
                if *security == Security::None && !is_local_host(host) {
                    return Err(invalid(format!(
                        "unencrypted SMTP to `{host}` is refused: the password and the \
                         mail would cross the network in clear text; use security StartTls \
                         or Tls, or relay through an MTA on localhost"
                    )));
                }
                if username.is_some() != password_file.is_some() {
                    return Err(invalid(
                        "SMTP authentication needs both `username` and `password_file` \
                         (or neither)",
                    ));
                }
            }
            MailTransport::Sendmail { program } if program.as_os_str().is_empty() => {
                return Err(invalid("the sendmail program path is empty"));
            }
            _ => {}
        }
        Ok(Self { config, from, to })
    }

    fn envelope(&self) -> Result<Envelope, NotifyError> {
        Envelope::new(
            Some(self.from.email.clone()),
            self.to.iter().map(|m| m.email.clone()).collect(),
        )
        .map_err(|e| invalid("building the mail envelope").with_source(e))
    }

    fn describe(&self) -> String {
        match &self.config.transport {
            MailTransport::Smtp {
                host,
                port,
                security,
                ..
            } => {
                let scheme = match security {
                    Security::StartTls => "smtp+starttls",
                    Security::Tls => "smtps",
                    Security::None => "smtp",
                };
                format!("{scheme}://{host}:{port}")
            }
            MailTransport::Sendmail { program } => format!("sendmail {}", program.display()),
            MailTransport::File { dir } => format!("files in {}", dir.display()),
        }
    }

    /// Hands a formatted message to the configured transport (blocking).
    fn deliver(&self, raw: &[u8]) -> Delivery {
        let envelope = match self.envelope() {
            Ok(e) => e,
            Err(e) => return Delivery::Failed(e),
        };
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
            NotifyError::new(
                ErrorKind::Spooled,
                format!("delivering the mail via {}", self.describe()),
            )
            .with_source(e)
        };
        match &self.config.transport {
            MailTransport::Smtp {
                host,
                port,
                security,
                username,
                password_file,
            } => {
                let tls = match security {
                    Security::None => Tls::None,
                    s => {
                        let params = match TlsParameters::new(host.clone()) {
                            Ok(p) => p,
                            Err(e) => {
                                return Delivery::Failed(
                                    invalid(format!("setting up TLS for {host}")).with_source(e),
                                )
                            }
                        };
                        if *s == Security::Tls {
                            Tls::Wrapper(params)
                        } else {
                            Tls::Required(params)
                        }
                    }
                };
                let mut builder = SmtpTransport::builder_dangerous(host.as_str())
                    .port(*port)
                    .tls(tls)
                    .timeout(Some(SMTP_TIMEOUT));
                if let (Some(user), Some(file)) = (username, password_file) {
                    match read_password(file) {
                        Ok(password) => {
                            builder = builder.credentials(Credentials::new(user.clone(), password))
                        }
                        Err(e) => return Delivery::Failed(e),
                    }
                }
                match builder.build().send_raw(&envelope, raw) {
                    Ok(_) => Delivery::Sent,
                    Err(e) if e.is_permanent() && refuses_this_message(e.status()) => {
                        Delivery::Refused(fail(Box::new(e)))
                    }
                    Err(e) => Delivery::Failed(fail(Box::new(e))),
                }
            }
            MailTransport::Sendmail { program } => {
                match SendmailTransport::new_with_command(program.as_os_str())
                    .send_raw(&envelope, raw)
                {
                    Ok(()) => Delivery::Sent,
                    Err(e) => Delivery::Failed(fail(Box::new(e))),
                }
            }
            MailTransport::File { dir } => match FileTransport::new(dir).send_raw(&envelope, raw) {
                Ok(_) => Delivery::Sent,
                Err(e) => Delivery::Failed(fail(Box::new(e))),
            },
        }
    }
}

impl MailNotifier {
    /// Checks the configuration (see [`MailConfig::check`]).
    pub fn new(config: MailConfig) -> Result<Self, NotifyError> {
        Ok(Self {
            courier: Arc::new(Courier::new(config)?),
            deadline: DEFAULT_DEADLINE,
            budget_end: OnceLock::new(),
            in_flight: Arc::default(),
        })
    }

    /// Bounds all the mail work of this notifier (every `notify` and `flush_spool` call
    /// together) by `deadline` from its first delivery.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The configuration this notifier was built from.
    pub fn config(&self) -> &MailConfig {
        &self.courier.config
    }

    /// Builds the message for `event` (headers From, To, Subject, Date, Message-ID).
    pub fn message(&self, event: &Event) -> Result<Message, NotifyError> {
        let mut b = Message::builder()
            .from(self.courier.from.clone())
            .subject(event.subject())
            .date_now()
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        for t in &self.courier.to {
            b = b.to(t.clone());
        }
        b.body(render_body(event))
            .map_err(|e| invalid("building the notification mail").with_source(e))
    }

    fn spool_dir(&self) -> &Path {
        &self.courier.config.spool_dir
    }

    fn rejected_dir(&self) -> PathBuf {
        self.spool_dir().join("rejected")
    }

    /// Delivers `raw` on a thread and waits for it until the deadline. `spooled` is the
    /// message's spool file, removed by that thread once the transport accepted it (even
    /// after the wait gave up), and skipped by `flush_spool` meanwhile.
    fn deliver_in_time(&self, raw: Vec<u8>, spooled: Option<PathBuf>) -> Delivery {
        let end = *self
            .budget_end
            .get_or_init(|| Instant::now() + self.deadline);
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Delivery::TimedOut;
        }
        if let Some(p) = &spooled {
            self.in_flight.lock().unwrap().insert(p.clone());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let courier = Arc::clone(&self.courier);
        let in_flight = Arc::clone(&self.in_flight);
        std::thread::spawn(move || {
            let d = courier.deliver(&raw);
            if let Some(p) = spooled {
                if matches!(d, Delivery::Sent) {
                    if let Err(e) = fs::remove_file(&p) {
                        tracing::warn!(
                            "removing the delivered mail {} from the spool: {e}; it may be \
                             sent again",
                            p.display()
                        );
                    }
                }
                in_flight.lock().unwrap().remove(&p);
            }
            let _ = tx.send(d);
        });
        rx.recv_timeout(left).unwrap_or(Delivery::TimedOut)
    }

    /// Writes `raw` into the spool folder atomically ([`oskit::write_atomic`]; mode 0600:
    /// a mail holds the run's log).
    fn spool(&self, raw: &[u8]) -> std::io::Result<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = self.spool_dir();
        fs::create_dir_all(dir)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "{nanos:024}-{}-{:06}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(format!("{name}.eml"));
        oskit::write_atomic(&path, raw, Some(0o600))?;
        Ok(path)
    }

    /// Moves a message the server refused for good out of the spool, with the reason beside
    /// it (`rejected/NAME.eml`, `rejected/NAME.reason`).
    fn set_aside(&self, path: &Path, why: &NotifyError) -> std::io::Result<PathBuf> {
        let dir = self.rejected_dir();
        fs::create_dir_all(&dir)?;
        let name = path.file_name().unwrap_or_default();
        let to = dir.join(name);
        fs::rename(path, &to)?;
        fs::write(
            to.with_extension("reason"),
            format!("{}\n", backend_error::chain(why)),
        )?;
        tracing::error!(
            "the mail server refused the spooled mail {} for good ({}); moved to {}",
            name.to_string_lossy(),
            backend_error::chain(why),
            to.display()
        );
        Ok(to)
    }

    /// Lines for the next mail about messages set aside and not yet reported, with their
    /// note files (renamed `.reported` once that mail went out).
    fn unreported_rejections(&self) -> (Vec<String>, Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(self.rejected_dir()) else {
            return (vec![], vec![]);
        };
        let mut notes: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "reason"))
            .collect();
        notes.sort();
        let lines = notes
            .iter()
            .map(|n| {
                format!(
                    "An earlier mail was refused for good by the mail server and kept as {}: {}",
                    n.with_extension("eml").display(),
                    fs::read_to_string(n).unwrap_or_default().trim()
                )
            })
            .collect();
        (lines, notes)
    }

    /// The spooled messages, oldest first.
    pub fn spooled(&self) -> Result<Vec<PathBuf>, NotifyError> {
        let dir = self.spool_dir();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => {
                return Err(invalid(format!(
                    "reading the mail spool {}: check its permissions",
                    dir.display()
                ))
                .with_source(e))
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "eml")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }
}

/// Whether a permanent (5xx) SMTP answer is about the message rather than about our
/// settings or the server as a whole. 53x (authentication) is about the settings the owner
/// can fix and 52x ("this server takes no mail") about the server: sending again later may
/// work, so those stay spooled. Every other 5xx (55x mailbox or policy, 50x syntax such as
/// `500 Line too long`, 54x) is about this message: sending it again cannot help, so it is
/// set aside and the mails behind it still go.
fn refuses_this_message(code: Option<lettre::transport::smtp::response::Code>) -> bool {
    code.is_some_and(|c| !matches!(c.category, Category::Unspecified3 | Category::Connections))
}

fn read_password(file: &Path) -> Result<String, NotifyError> {
    let text = fs::read_to_string(file).map_err(|e| {
        NotifyError::new(
            ErrorKind::Spooled,
            format!(
                "reading the SMTP password file {}: check that it exists and is readable \
                 by the user extbackup runs as",
                file.display()
            ),
        )
        .with_source(e)
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

impl Notifier for MailNotifier {
    fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        let (told, notes) = self.unreported_rejections();
        let mut event = event.clone();
        event.details.extend(told);
        let raw = self.message(&event)?.formatted();
        let spooled = self.spool(&raw);
        let err = match self.deliver_in_time(raw, spooled.as_ref().ok().cloned()) {
            Delivery::Sent => {
                for n in notes {
                    let _ = fs::rename(&n, n.with_extension("reported"));
                }
                tracing::info!(subject = %event.subject(), via = %self.describe(), "mail sent");
                return Ok(());
            }
            Delivery::Refused(e) => {
                let kept = match &spooled {
                    Ok(p) => self
                        .set_aside(p, &e)
                        .map(|to| to.display().to_string())
                        .unwrap_or_else(|io| format!("nowhere ({io})")),
                    Err(_) => "nowhere".into(),
                };
                return Err(NotifyError::new(
                    ErrorKind::Lost,
                    format!(
                        "the mail server refused the mail for good; it is kept as {kept} \
                         (check the recipients and the server's rules)"
                    ),
                )
                .with_source(e));
            }
            Delivery::Failed(e) => e,
            Delivery::TimedOut => NotifyError::new(
                ErrorKind::Spooled,
                format!(
                    "delivering the mail via {} did not finish within {} s",
                    self.describe(),
                    self.deadline.as_secs()
                ),
            ),
        };
        match spooled {
            Ok(path) => {
                tracing::warn!("{err:#}; spooled to {} for the next run", path.display());
                Err(NotifyError::new(
                    ErrorKind::Spooled,
                    format!(
                        "the mail could not be delivered now; it was spooled to {} and \
                         will be sent on the next run",
                        path.display()
                    ),
                )
                .with_source(err))
            }
            Err(io) => Err(NotifyError::new(
                ErrorKind::Lost,
                format!(
                    "the mail could not be delivered ({}) nor spooled to {}: it is lost; \
                     check that the spool folder is writable",
                    backend_error::chain(&err),
                    self.spool_dir().display()
                ),
            )
            .with_source(io)),
        }
    }

    fn flush_spool(&self) -> Result<usize, NotifyError> {
        let files = self.spooled()?;
        let total = files.len();
        let (mut sent, mut refused) = (0, 0);
        for path in files {
            if self.in_flight.lock().unwrap().contains(&path) {
                continue;
            }
            let raw = match fs::read(&path) {
                Ok(r) => r,
                // Another run flushed it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(invalid(format!(
                        "reading the spooled mail {}: check its permissions",
                        path.display()
                    ))
                    .with_source(e))
                }
            };
            let stop = match self.deliver_in_time(raw, Some(path.clone())) {
                Delivery::Sent => {
                    sent += 1;
                    continue;
                }
                Delivery::Refused(e) => {
                    self.set_aside(&path, &e).map_err(|io| {
                        invalid(format!(
                            "moving the refused mail {} out of the spool",
                            path.display()
                        ))
                        .with_source(io)
                    })?;
                    refused += 1;
                    continue;
                }
                Delivery::Failed(e) => e,
                Delivery::TimedOut => NotifyError::new(
                    ErrorKind::Spooled,
                    format!(
                        "the mail time budget of {} s ran out",
                        self.deadline.as_secs()
                    ),
                ),
            };
            return Err(NotifyError::new(
                ErrorKind::Spooled,
                format!(
                    "sent {sent} of {total} spooled mails ({refused} refused for good and \
                     set aside); the rest stay in {} for the next run",
                    self.spool_dir().display()
                ),
            )
            .with_source(stop));
        }
        if sent > 0 || refused > 0 {
            tracing::info!(
                "sent {sent} spooled mails; {refused} refused for good, set aside in {}",
                self.rejected_dir().display()
            );
        }
        Ok(sent)
    }

    fn describe(&self) -> String {
        self.courier.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(transport: MailTransport) -> MailConfig {
        MailConfig {
            from: "extbackup <root@nas.example>".into(),
            to: vec!["owner@example.org".into()],
            transport,
            spool_dir: "/nonexistent/spool".into(),
        }
    }

    fn smtp(host: &str, security: Security) -> MailTransport {
        MailTransport::Smtp {
            host: host.into(),
            port: 25,
            security,
            username: None,
            password_file: None,
        }
    }

    #[test]
    fn which_permanent_answers_set_a_mail_aside() {
        use lettre::transport::smtp::response::{Code, Detail, Severity};
        let code = |category, detail| {
            Some(Code::new(
                Severity::PermanentNegativeCompletion,
                category,
                detail,
            ))
        };
        // 500 Line too long, 554 refused by policy, 550 no such mailbox, 541: this message.
        assert!(refuses_this_message(code(Category::Syntax, Detail::Zero)));
        assert!(refuses_this_message(code(
            Category::MailSystem,
            Detail::Four
        )));
        assert!(refuses_this_message(code(
            Category::MailSystem,
            Detail::Zero
        )));
        assert!(refuses_this_message(code(
            Category::Unspecified4,
            Detail::One
        )));
        // 535 authentication failed, 530 authentication required, 521 no mail here: settings.
        assert!(!refuses_this_message(code(
            Category::Unspecified3,
            Detail::Five
        )));
        assert!(!refuses_this_message(code(
            Category::Unspecified3,
            Detail::Zero
        )));
        assert!(!refuses_this_message(code(
            Category::Connections,
            Detail::One
        )));
        assert!(!refuses_this_message(None));
    }

    #[test]
    fn unencrypted_smtp_only_to_localhost() {
        for h in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            MailNotifier::new(config(smtp(h, Security::None))).expect(h);
        }
        // Names that only look local are names like any other.
        for h in ["127.example.com", "localhost.example.com", "::2"] {
            let e = MailNotifier::new(config(smtp(h, Security::None))).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{h}");
        }
        let e = MailNotifier::new(config(smtp("mail.example.org", Security::None))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("StartTls"), "{e}");
        MailNotifier::new(config(smtp("mail.example.org", Security::StartTls))).unwrap();
    }

    #[test]
    fn bad_addresses_and_no_recipient_are_invalid_config() {
        let mut c = config(smtp("localhost", Security::None));
        c.from = "not an address".into();
        let e = MailNotifier::new(c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("not an address"), "{e}");

        let mut c = config(smtp("localhost", Security::None));
        c.to.clear();
        assert_eq!(
            MailNotifier::new(c).unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );

        let mut c = config(smtp("localhost", Security::None));
        c.to.push("bad@@x".into());
        assert_eq!(
            MailNotifier::new(c).unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
    }

    #[test]
    fn username_without_password_file_is_invalid() {
        let c = config(MailTransport::Smtp {
            host: "localhost".into(),
            port: 25,
            security: Security::None,
            username: Some("u".into()),
            password_file: None,
        });
        assert_eq!(
            MailNotifier::new(c).unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
    }

    #[test]
    fn describe_names_the_transport() {
        let n = MailNotifier::new(config(MailTransport::Smtp {
            host: "mail.example.org".into(),
            port: 465,
            security: Security::Tls,
            username: None,
            password_file: None,
        }))
        .unwrap();
        assert_eq!(n.describe(), "smtps://mail.example.org:465");
    }
}
