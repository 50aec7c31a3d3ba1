//! `MailNotifier`: lettre over SMTP, sendmail or `.eml` files, with a spool folder.

use crate::{render_body, ErrorKind, Event, Notifier, NotifyError};
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{FileTransport, Message, SendmailTransport, SmtpTransport, Transport};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Sends each event as a plain-text mail; failed deliveries are spooled.
///
/// The spool holds formatted messages (`<time>-<pid>-<n>.eml`); `flush_spool` sends them
/// with an envelope built from the current `from`/`to`, oldest first, removing each file
/// only once the transport accepted it.
///
/// `Debug` shows the configuration, which holds the password file's path, never the password.
#[derive(Debug)]
pub struct MailNotifier {
    config: MailConfig,
    from: Mailbox,
    to: Vec<Mailbox>,
}

fn invalid(msg: impl Into<String>) -> NotifyError {
    NotifyError::new(ErrorKind::InvalidConfig, msg)
}

fn is_local_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h == "::1" || h.starts_with("127.")
}

impl MailNotifier {
    /// Checks the configuration (addresses parse, at least one recipient, unencrypted SMTP
    /// only to this machine); the password file is read later, at each send.
    pub fn new(config: MailConfig) -> Result<Self, NotifyError> {
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

    /// The configuration this notifier was built from.
    pub fn config(&self) -> &MailConfig {
        &self.config
    }

    /// Builds the message for `event` (headers From, To, Subject, Date, Message-ID).
    pub fn message(&self, event: &Event) -> Result<Message, NotifyError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(event.subject())
            .date_now()
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            b = b.to(t.clone());
        }
        b.body(render_body(event))
            .map_err(|e| invalid("building the notification mail").with_source(e))
    }

    fn envelope(&self) -> Result<Envelope, NotifyError> {
        Envelope::new(
            Some(self.from.email.clone()),
            self.to.iter().map(|m| m.email.clone()).collect(),
        )
        .map_err(|e| invalid("building the mail envelope").with_source(e))
    }

    /// Hands a formatted message to the configured transport.
    fn deliver(&self, raw: &[u8]) -> Result<(), NotifyError> {
        let envelope = self.envelope()?;
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
                        let params = TlsParameters::new(host.clone()).map_err(|e| {
                            invalid(format!("setting up TLS for {host}")).with_source(e)
                        })?;
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
                    let password = read_password(file)?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                builder
                    .build()
                    .send_raw(&envelope, raw)
                    .map(|_| ())
                    .map_err(|e| fail(Box::new(e)))
            }
            MailTransport::Sendmail { program } => {
                SendmailTransport::new_with_command(program.as_os_str())
                    .send_raw(&envelope, raw)
                    .map_err(|e| fail(Box::new(e)))
            }
            MailTransport::File { dir } => FileTransport::new(dir)
                .send_raw(&envelope, raw)
                .map(|_| ())
                .map_err(|e| fail(Box::new(e))),
        }
    }

    /// Writes `raw` into the spool folder atomically (temp file, fsync, rename).
    fn spool(&self, raw: &[u8]) -> std::io::Result<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = &self.config.spool_dir;
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
        let tmp = dir.join(format!(".{name}.tmp"));
        let path = dir.join(format!("{name}.eml"));
        let mut f = fs::File::create(&tmp)?;
        let written = f.write_all(raw).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &path)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// The spooled messages, oldest first.
    pub fn spooled(&self) -> Result<Vec<PathBuf>, NotifyError> {
        let dir = &self.config.spool_dir;
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
        let raw = self.message(event)?.formatted();
        let err = match self.deliver(&raw) {
            Ok(()) => {
                tracing::info!(subject = %event.subject(), via = %self.describe(), "mail sent");
                return Ok(());
            }
            Err(e) => e,
        };
        match self.spool(&raw) {
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
                    self.config.spool_dir.display()
                ),
            )
            .with_source(io)),
        }
    }

    fn flush_spool(&self) -> Result<usize, NotifyError> {
        let files = self.spooled()?;
        let total = files.len();
        let mut sent = 0;
        for path in files {
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
            if let Err(e) = self.deliver(&raw) {
                return Err(NotifyError::new(
                    ErrorKind::Spooled,
                    format!(
                        "sent {sent} of {total} spooled mails; the rest stay in {} \
                         for the next run",
                        self.config.spool_dir.display()
                    ),
                )
                .with_source(e));
            }
            fs::remove_file(&path).map_err(|e| {
                invalid(format!(
                    "removing the delivered spooled mail {} (it would be sent again)",
                    path.display()
                ))
                .with_source(e)
            })?;
            sent += 1;
        }
        if sent > 0 {
            tracing::info!("sent {sent} spooled mails");
        }
        Ok(sent)
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
    fn unencrypted_smtp_only_to_localhost() {
        for h in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            MailNotifier::new(config(smtp(h, Security::None))).expect(h);
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
